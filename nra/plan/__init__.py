"""Intent + kernel state -> plan, pure: which peers answer, and the ordered operations that
bring the kernel to the intent, for each return-path mode.

Owns: the planner, peer health judgement, the return-path strategies. May import
`nra.config`, `nra.settings` and the kernel's vocabulary (`nra.kernel.model`,
`nra.kernel.operations`, `nra.kernel.nft_table`, `nra.kernel.marks`); never a kernel
adapter that does I/O, nor the daemon.
"""
