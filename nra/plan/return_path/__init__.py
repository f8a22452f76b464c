"""The return path: how replies to traffic that came in through a BGP peer leave through a
peer again. One protocol (`base.ReturnPath`: what to read, the plan, what to show), one
strategy per mode: `rules` (one multipath table, a rule per LB prefix) and `conntrack`
(connections marked by the router they came through, one table per router).

Owns: the strategies and what they share (`base`). Pure. May import `nra.config`, the
planner's primitives (`nra.plan.planner`), peer health's verdicts and the kernel's
vocabulary; never the reconciler, the settings or a kernel module that does I/O. The
planner imports none of it.
"""
