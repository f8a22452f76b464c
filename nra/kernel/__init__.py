"""The kernel side: one component per kernel object behind one façade (adapter.py)."""
