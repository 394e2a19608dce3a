"""Reading YAML from strangers: kernel files now, pipeline files later.

``load_yaml_safely`` accepts plain data only (mappings, lists, strings, numbers, booleans,
null) and refuses, each with one line naming the file and the line:

- any language-specific tag (``!!python/object``...): PyYAML's safe loader constructs none;
- files over ``limits.MAX_TEXT_BYTES`` (1 MB), and text that is not UTF-8;
- nesting deeper than ``MAX_DEPTH`` and more than ``MAX_NODES`` values once aliases are
  expanded (the "billion laughs": nine aliases of nine aliases of ... a few bytes that expand
  to 10^9 values), and an alias to a collection that contains it (a recursive structure).
  These are counted on the parser's events, before any Python object is built, so a hostile
  document is refused at once and the C parser's recursive composer (which crashes on a deep
  enough document) never sees it. Where libyaml refuses a document by a limit of its own
  (newer releases stop at 1,000 levels while scanning ahead), the events are walked again with
  PyYAML's pure-Python parser, so the limits and the messages are convcli's whatever PyYAML
  and libyaml are installed;
- a key given twice in one mapping (YAML forbids it; PyYAML would keep the last silently).

``check_keys`` reports an unknown key with the field it was found in and a close known name.

A file's document is kept in convcli's cache folder (``runtime.cache_dir``, ``yaml/``), with
the file's path and its whole text: a file read again with the same text is not parsed again,
so a command on a built-in kernel or a pipeline file does not import PyYAML (about 10 ms of a
150 ms command). Only documents that JSON holds exactly are kept (plain data whose mapping
keys are strings), and a cache that cannot be read or written is skipped: the cache changes
how long a read takes, never what it gives.

>>> import tempfile, os
>>> with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
...     _ = f.write("a: &x [1, 2]\\nb: *x\\n")
>>> load_yaml_safely(f.name, "example")
{'a': [1, 2], 'b': [1, 2]}
>>> os.unlink(f.name)
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from convcli import limits
from convcli.errors import ConvcliError, InputError
from convcli.layers.values import closest
from convcli.runtime import cache_dir

#: Nesting depth allowed (a 4-D kernel written as lists of lists of grids is 3 deep; a
#: pipeline step with a list option about 5).
MAX_DEPTH = 32
#: Values (scalars and collections, aliases expanded) allowed in one document.
MAX_NODES = 100_000


def _loader_classes():
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StrictLoader(base):
        """The safe loader, refusing a key given twice in one mapping."""

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable: the base class explains it
                    break
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"the key {limits.shorten(key)!r} is given twice",
                        key_node.start_mark,
                    )
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node):
            self._check_digits(node)
            return super().construct_yaml_int(node)

        def construct_yaml_float(self, node):
            self._check_digits(node)
            return super().construct_yaml_float(node)

        @staticmethod
        def _check_digits(node):
            """Python's int() refuses 4,300 digits with a ValueError: count them first."""
            try:
                limits.check_digits(node.value, "the number")
            except ConvcliError as exc:
                raise yaml.constructor.ConstructorError(
                    None, None, str(exc), node.start_mark
                ) from None

    StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
    StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)
    return yaml, base, StrictLoader


def load_yaml_safely(
    path: str, what: str, error: type = InputError, max_bytes: int = limits.MAX_TEXT_BYTES
) -> Any:
    """The data of the YAML file ``path`` (one document), refused as the module says.

    ``what`` names the file in messages (``"kernel 'box' (kernels/box.yaml)"``); ``error`` is
    the ``ConvcliError`` class to raise (``KernelError`` for kernels).
    """
    return parse_yaml_safely(read_text_limited(path, what, error, max_bytes), what, error, path)


def parse_yaml_safely(text: str, what: str, error: type = InputError, path: str = "") -> Any:
    """``load_yaml_safely`` for text already read (and size-checked) by the caller from
    ``path`` (given: the document is cached, as the module says)."""
    cache = cache_file(path) if path else ""
    if cache:
        found = _cached(cache, path, text)
        if found is not None:
            return found[0]
    document = _parse(text, what, error)
    if cache:
        _remember(cache, path, text, document)
    return document


def cache_file(path: str) -> str:
    """Where the document of the YAML file ``path`` is cached (one file per path).

    >>> import os
    >>> os.path.basename(cache_file("/data/kernels/box.yaml"))
    '4c7a2c21.json'
    """
    where = os.path.abspath(path)
    return os.path.join(cache_dir(), "yaml", f"{zlib.crc32(where.encode()):08x}.json")


def _cached(cache: str, path: str, text: str) -> tuple[Any] | None:
    """``(document,)`` if ``cache`` holds one for ``path`` with exactly ``text``, else None."""
    import json

    try:
        with open(cache, encoding="utf-8") as handle:
            kept = json.load(handle)
        if kept["path"] == os.path.abspath(path) and kept["text"] == text:
            return (kept["document"],)
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        pass  # no cache yet, or one that cannot be read: parse the text
    return None


def _remember(cache: str, path: str, text: str, document: Any) -> None:
    """Keep ``document`` if JSON gives it back exactly (``==`` after a round trip: JSON keeps
    int, float and bool apart, and turns other keys than strings into strings)."""
    import json

    from convcli.io.atomic import write_cache

    try:
        kept = json.dumps({"path": os.path.abspath(path), "text": text, "document": document})
        if json.loads(kept)["document"] != document:  # int keys, NaN: parsed every time
            return
    except (TypeError, ValueError, RecursionError):
        return
    write_cache(cache, kept)


def _parse(text: str, what: str, error: type) -> Any:
    """The document of ``text``, refused as the module says."""
    yaml, base, strict = _loader_classes()
    try:
        _check_events(text, yaml, base, what, error)
        return yaml.load(text, Loader=strict)
    except ConvcliError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        problem = limits.shorten(problem, 200)
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
            raise error(
                f"{what}: {at}unsafe or unknown YAML tag ({problem}); YAML is read with a "
                "safe loader: plain data only (mappings, lists, strings, numbers)"
            ) from None
        if isinstance(exc, yaml.constructor.ConstructorError):  # a duplicate or unhashable key
            raise error(f"{what}: {at}{problem}") from None
        raise error(f"{what}: not valid YAML ({at}{problem})") from None
    except RecursionError:  # the pure-Python loader, if the depth check were ever bypassed
        raise error(f"{what}: nested too deeply") from None


def read_text_limited(
    path: str, what: str, error: type = InputError, max_bytes: int = limits.MAX_TEXT_BYTES
) -> str:
    """The UTF-8 text of ``path`` (a BOM is dropped), refused beyond ``max_bytes``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{what}: cannot read the file ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise error(
            f"{what}: the file is over the {max_bytes:,}-byte limit of text files "
            f"(put large kernels in a .npy file)"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what}: not UTF-8 text (byte {exc.start})") from None


def _check_events(text: str, yaml, loader: type, what: str, error: type) -> None:
    """``_walk_events`` on ``loader``'s parser; if that parser refuses the document, on the
    pure-Python one, whose only limits are ours (a document both refuse is a syntax error)."""
    try:
        _walk_events(yaml.parse(text, Loader=loader), yaml, what, error)
    except yaml.YAMLError:
        if loader is yaml.SafeLoader:
            raise
        _walk_events(yaml.parse(text, Loader=yaml.SafeLoader), yaml, what, error)
        raise


def _walk_events(events: Iterable, yaml, what: str, error: type) -> None:
    """Walk the parser's events: depth, expanded size and recursive aliases, before building.

    Each open collection is a stack entry [anchor, values so far]; a closed anchored one
    records its expanded size, which every alias to it adds again.
    """
    stack: list[list] = []
    sizes: dict[str, int] = {}
    total = 0
    for event in events:
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(stack) >= MAX_DEPTH:
                raise error(
                    f"{what}: line {event.start_mark.line + 1}: nested more than "
                    f"{MAX_DEPTH} levels deep"
                )
            stack.append([event.anchor, 1])
            continue
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, size = stack.pop()
            if anchor is not None:
                sizes[anchor] = size
            added = size
        elif isinstance(event, yaml.ScalarEvent):
            added = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                raise error(
                    f"{what}: line {event.start_mark.line + 1}: the alias "
                    f"*{limits.shorten(event.anchor)} refers to a collection that contains "
                    f"it (or to no anchor)"
                )
            added = sizes[event.anchor]
        else:
            continue
        if stack:
            stack[-1][1] += added
        else:
            total += added
        if total + sum(entry[1] for entry in stack) > MAX_NODES:
            raise error(
                f"{what}: line {event.start_mark.line + 1}: more than {MAX_NODES:,} values "
                f"once aliases are expanded (a 'billion laughs' document?)"
            )


def check_keys(
    mapping: Mapping, known: Iterable[str], where: str, error: type = InputError
) -> None:
    """Refuse keys of ``mapping`` not in ``known``, naming the field and a close known name.

    >>> check_keys({"wieghts": 1}, ("name", "weights"), "kernel file 'k.yaml'")
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.errors.InputError: kernel file 'k.yaml': unknown key 'wieghts'
    (did you mean 'weights'? known: name, weights)
    """
    known = list(known)
    unknown = sorted(str(key) for key in mapping if str(key) not in known)
    if unknown:
        near = closest(unknown[0], known)
        hint = f"did you mean {near!r}? " if near else ""
        raise error(
            f"{where}: unknown key {limits.shorten(unknown[0])!r} ({hint}known: {', '.join(known)})"
        )
