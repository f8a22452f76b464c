"""The running agent: the daemon and the one-off modes, the trigger loop and its single
worker, one reconcile (read, plan, apply, hooks), the source's last good intent, echo and
contention detection, silent-peer re-resolution, host checks.

The top of the house: may import every other package; nothing imports it but `nra.cli`.
"""
