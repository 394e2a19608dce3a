"""The one exception family of convcli.

Every error a user can cause is a ``ConvcliError`` whose message names the parameter or file,
the value and what is allowed. The CLI catches them in one place and prints one line.

Messages speak of parameters as the library names them (``groups``); ``names`` lists the ones a
message names, so that a front-end can write them its own way (the CLI as its flags, ``--groups``:
``convcli.cli.flags``).

>>> error = ParameterError("groups applies to 4-D kernels", names=("groups",))
>>> str(error), error.names
('groups applies to 4-D kernels', ('groups',))
"""


class ConvcliError(Exception):
    """Base class: a problem with the user's input; the CLI exits 1 with one line.

    ``names``: the parameters the message names, in the order it first names each, written as
    the library calls them (a word of the message, ``out_dir``); empty for most errors.
    """

    exit_code = 1
    names: tuple[str, ...] = ()

    def __init__(self, *args, names: tuple[str, ...] = ()):
        super().__init__(*args)
        if names:  # kept in __dict__, which pickling carries to and from a batch's workers
            self.names = tuple(names)


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
