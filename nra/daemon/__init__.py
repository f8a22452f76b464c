"""The running agent: the daemon and the one-off modes, the trigger loop and its single
worker, one reconcile (read, plan through the return path, apply, hooks), the wiring from
Settings to a reconcile (wiring.py: the one place that reads RETURN_PATH), the source's
last good intent, echo and contention detection, silent-peer re-resolution, host checks.

The top of the house: may import every other package; nothing imports it but `nra.cli`.
"""
