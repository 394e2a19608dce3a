"""The layer vocabulary: value parsing for sizes, paddings and modes (``values``)."""
