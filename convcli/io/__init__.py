"""Files in and out: images (``images``, ``png``, ``claims``), ``.npy``, headers (``probe``),
atomic writes, paths, streams, safe YAML."""
