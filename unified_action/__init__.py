"""unified-action: one action-conditioned video world model across embodiments, via one action vocabulary."""

__version__ = "0.1.0"
