"""deviceagentd: the local brain of a site's devices, on one small gateway."""

__version__ = "0.1.0"
