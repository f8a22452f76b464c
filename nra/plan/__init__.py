"""Intent + kernel state -> plan, pure: which peers answer, and the ordered operations that
bring the kernel to the intent, through the configured return path.

Owns: the planner's shared steps (planner.py: route choice, rule diff, nexthop equality,
order), peer health judgement (peer_health.py), the return-path strategies
(return_path/, built on the planner's steps; the planner knows none of them). May import
`nra.config` and the kernel's vocabulary (`nra.kernel.model`, `nra.kernel.operations`,
`nra.kernel.nft_table`, `nra.kernel.marks`); never a kernel module that does I/O, the
settings, nor the daemon.
"""
