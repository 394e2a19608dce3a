"""The one exception family of convcli.

Every error a user can cause is a ``ConvcliError`` whose message names the parameter or file,
the value and what is allowed. The CLI catches them in one place and prints one line.
"""


class ConvcliError(Exception):
    """Base class: a problem with the user's input; the CLI exits 1 with one line."""

    exit_code = 1


class ParameterError(ConvcliError):
    """An option value that is malformed or out of range (stride 0, unknown pad mode)."""


class FieldError(ParameterError):
    """A bad value of one named parameter. ``str()`` names it first (``stride must be at least 1,
    got 0``: options, ``explain``); ``detail`` is the rest, for a front-end whose prefix already
    names it (``stride: must be at least 1, got 0`` in a pipeline file). ``words`` replaces
    ``str()`` where the message does not start with the parameter."""

    def __init__(self, parameter: str, detail: str, words: str = ""):
        super().__init__(words or f"{parameter} {detail}")
        self.parameter, self.detail = parameter, detail

    def __reduce__(self):
        # rebuilt from its parts, not from ``args`` (a batch's worker process sends it back)
        return FieldError, (self.parameter, self.detail, str(self))


class ShapeError(ConvcliError):
    """Shapes that do not fit together (kernel larger than the padded input, channel counts)."""


class KernelError(ConvcliError):
    """A kernel that cannot be found or read, or whose weights are invalid."""


class InputError(ConvcliError):
    """An input file that is missing, unreadable, corrupt or of an unsupported kind."""


class LimitError(ConvcliError):
    """An input or an operation beyond a limit: pixels, memory, kernel size, YAML size or depth."""


class OutputError(ConvcliError):
    """An output path that cannot be written safely (missing directory, equal to an input)."""
