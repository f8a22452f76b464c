"""Configuration sources: the static file and Kubernetes (MetalLB's ConfigMap or its
metallb.io objects, FRR-K8s's session states), each publishing complete parsed
configurations through `base.Source`.

May import `nra.config`, `nra.settings` (the Kubernetes source is built from them) and
`nra.observe.metrics`.
"""
