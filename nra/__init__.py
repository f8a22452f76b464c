"""nra: the MetalLB node route agent."""

__version__ = "0.1.0"
