"""Kernels: the built-in catalogue (``catalogue``), generators, and loading by name or file
(``library``)."""
