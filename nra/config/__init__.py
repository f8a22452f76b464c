"""Configuration to intent, pure: MetalLB's configuration (a YAML text or Kubernetes objects)
loaded within bounds and turned into an `Intent` with a `Problem` for each bad entry.

Owns: the bounded YAML loader, the edit reloader, address and selector parsing, MetalLB's
model. Imports nothing of nra outside this package; every other package may import it.
"""
