"""The library's parameters as the command line's flags: the one place a message that names
``groups`` becomes one that names ``--groups``.

The library's errors list the parameters their message names (``ConvcliError.names``); each is
written here as the flag that sets it: ``--`` and the name with dashes, unless ``FLAGS`` says
otherwise.

>>> from convcli.errors import OutputError
>>> in_flags(OutputError("out_dir 'a.png' is a file, not a directory", names=("out_dir",)))
"--out-dir 'a.png' is a file, not a directory"
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convcli.batch.report import Record

#: Parameters whose flag is not ``--`` and their name with dashes.
FLAGS = {"output": "-o", "template": "--name template"}


def flag(parameter: str) -> str:
    """The flag that sets ``parameter``.

    >>> flag("skip_existing"), flag("template")
    ('--skip-existing', '--name template')
    """
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def message_in_flags(message: str, names: Sequence[str]) -> str:
    """``message`` with the parameters of ``names`` written as flags: each name, in order, at
    its next occurrence as a whole word (a name listed twice is replaced twice).

    >>> message_in_flags("overwrite or skip_existing", ("overwrite", "skip_existing"))
    '--overwrite or --skip-existing'
    >>> message_in_flags("groups 2 needs groups", ("groups",))
    '--groups 2 needs groups'
    """
    parts, at = [], 0
    for name in names:
        found = re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])").search(message, at)
        if found is not None:
            parts.append(message[at : found.start()] + flag(name))
            at = found.end()
    return "".join(parts) + message[at:]


def in_flags(error: BaseException) -> str:
    """The message of ``error`` as the command line says it."""
    return message_in_flags(str(error), getattr(error, "names", ()))


def record_in_flags(record: Record) -> Record:
    """A batch's record with its error as the command line says it."""
    if not record.error_names:
        return record
    return replace(record, error=message_in_flags(record.error, record.error_names))
