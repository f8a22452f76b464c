"""What nra says about itself: logs, Prometheus metrics, the agent's status, the HTTP
server of /healthz, /readyz, /metrics and /status, and the `nra status` client.

May import `nra.config`, `nra.settings` and the plan's types; never the daemon (the daemon
hands it what to show).
"""
