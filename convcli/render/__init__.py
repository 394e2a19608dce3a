"""Feature maps to pictures: value mapping and colormaps (``mapping``), montages, statistics."""
