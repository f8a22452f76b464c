"""The kernel side: one netlink layer (socket, codec) and one component per kernel object
(rules, routes, neighbours, addresses, learned routes, nftables), behind one façade
(adapter.py) that speaks the `Kernel` protocol (protocol.py) and reads what the return path
declares (`model.KernelReads`), with no mode of its own; also the kernel's vocabulary that
the planner speaks (model, operations, the nft table as data, the mark layout) and the host
files nra writes (iproute2's table names).

May import `nra.config` (address types) only.
"""
