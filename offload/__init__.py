"""offload: put XDP programs on NICs in the best mode each supports, and measure them."""

__version__ = "0.1.0"
