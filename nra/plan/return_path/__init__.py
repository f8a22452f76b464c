"""The return path: how replies to traffic that came in through a BGP peer go back out.

One strategy per mode: `rules` (one multipath table, a rule per LB prefix) and `conntrack`
(connections marked by the router they came through, one table per router).
"""
