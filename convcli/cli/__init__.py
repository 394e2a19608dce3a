"""The command line: Click commands (one module each) over the library; ``main`` is the entry."""
