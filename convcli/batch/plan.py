"""A batch's plan: inputs expanded, each paired with its output, all checked before any work.

Everything that can be checked is checked before the first image is read: no two inputs may
map to one output, no output may be an input or escape ``--out-dir``, and existing outputs are
kept unless ``overwrite`` (or skipped with ``skip_existing``).

>>> plan_outputs(["a/x.png", "a/y.png"], out_dir="out", template="{stem}_edges.{ext}")
[('a/x.png', 'out/x_edges.png'), ('a/y.png', 'out/y_edges.png')]
"""

from __future__ import annotations

import glob
import os
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from convcli import limits
from convcli.errors import InputError, OutputError
from convcli.io.paths import STDIO, is_regular_file
from convcli.io.urls import is_url

#: Extensions a directory scan picks up (everything Pillow commonly reads, and .npy).
INPUT_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".webp",
    ".gif",
    ".npy",
    ".ppm",
    ".pgm",
    ".pbm",
)
#: Extensions convcli writes (``images.OUTPUT_FORMATS``, repeated so that planning needs no numpy).
OUTPUT_EXTENSIONS = ("npy", "png", "tif", "tiff", "jpg", "jpeg", "bmp", "webp")


@dataclass
class Source:
    """An input file and the folder its output keeps its relative path from."""

    path: str
    root: str


def expand_inputs(
    arguments: Sequence[str], recursive: bool = False, out_dir: str | None = None
) -> list[Source]:
    """Files, directories (their image files; ``recursive`` descends) and glob patterns, as
    paths or as URLs (``io.urls``).

    A directory scan or a pattern finds regular files only (a named pipe would block the
    batch, a device never end), and nothing inside ``out_dir`` when it lies below the folder
    scanned: a batch's own outputs are not its inputs when it is run again. A file named
    explicitly is kept whatever it is (reading it says what is wrong).

    >>> [s.path for s in expand_inputs(["-"])]
    ['-']
    """
    sources: list[Source] = []
    for argument in arguments:
        if argument == STDIO:
            sources.append(Source(STDIO, ""))
        elif is_url(argument):
            from convcli.io import urls

            found = urls.expand(argument, recursive, INPUT_EXTENSIONS, out_dir)
            sources.extend(Source(path, root) for path, root in found)
        elif os.path.isdir(argument):
            found = _scan(argument, recursive, out_dir)
            if not found:
                raise InputError(
                    f"directory {argument!r} has no image or .npy files"
                    + ("" if recursive else " (use --recursive to descend)")
                )
            sources.extend(Source(path, argument) for path in found)
        elif os.path.exists(argument) or not glob.has_magic(argument):
            sources.append(Source(argument, os.path.dirname(argument)))
        else:
            searched = _fixed_folder(argument)
            matches = sorted(
                p
                for p in glob.glob(argument, recursive=True)
                if is_regular_file(p) and not _output_below(p, out_dir, searched)
            )
            if not matches:
                raise InputError(f"pattern {argument!r} matches no files")
            sources.extend(Source(path, os.path.dirname(path)) for path in matches)
    return sources


def _scan(directory: str, recursive: bool, out_dir: str | None = None) -> list[str]:
    found = []
    for folder, subfolders, files in os.walk(directory):
        kept = (
            s
            for s in subfolders
            if not s.startswith(".")
            and not _output_below(os.path.join(folder, s), out_dir, directory)
        )
        subfolders[:] = sorted(kept) if recursive else []
        paths = (
            os.path.join(folder, f)
            for f in sorted(files)
            if f.lower().endswith(INPUT_EXTENSIONS) and not f.startswith(".")
        )
        found.extend(path for path in paths if is_regular_file(path))
    return found


def _output_below(path: str, out_dir: str | None, searched: str) -> bool:
    """Whether ``path`` is in ``out_dir`` and ``out_dir`` lies strictly below ``searched``.

    >>> _output_below("in/out/a.png", "in/out", "in"), _output_below("in/a.png", "in", "in")
    (True, False)
    """
    if out_dir is None:
        return False
    searched = searched or os.curdir
    return (
        os.path.realpath(out_dir) != os.path.realpath(searched)
        and _inside(out_dir, searched)
        and _inside(path, out_dir)
    )


def _fixed_folder(pattern: str) -> str:
    """The folder of a glob pattern before its first wildcard.

    >>> _fixed_folder("in/**/*.png"), _fixed_folder("*.png"), _fixed_folder("/*.png")
    ('in', '', '/')
    """
    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else "")


def output_name(source: str, template: str, ext: str | None = None, **fields: str) -> str:
    """Fill a ``--name`` template: ``{stem}``, ``{name}``, ``{ext}`` and the given fields.

    ``{ext}`` is ``ext`` if given, else the input's extension if convcli writes it, else png.

    >>> output_name("photos/cat.jpg", "{stem}_{kernel}.{ext}", kernel="sobel_x")
    'cat_sobel_x.jpg'
    >>> output_name("scans/page.gif", "{stem}.{ext}")
    'page.png'
    """
    name = os.path.basename(source)
    stem, dot_ext = os.path.splitext(name)
    own = dot_ext[1:].lower()
    values = dict(
        stem=stem, name=name, ext=ext or (own if own in OUTPUT_EXTENSIONS else "png"), **fields
    )
    try:
        check_template(template)
        filled = template.format(**values)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        known = ", ".join("{" + k + "}" for k in values)
        raise OutputError(
            f"template {limits.shorten(template)!r} is not valid "
            f"({limits.shorten(exc, 160)}); fields: {known}",
            names=("template",),
        ) from None
    limits.check_path_length(
        filled, f"template {limits.shorten(template)!r} gives", names=("template",)
    )
    return filled


def check_template(template: str) -> None:
    """Refuse, before filling it, a ``--name`` template that could not make a file name: a
    width or precision over ``limits.MAX_NAME_BYTES`` (``{stem:>2000000}`` would build two
    million characters), a field inside a format spec (``{name:{stem}}``: the width would
    come from a file name), and anything but a plain field name and a spec: attributes,
    indices and conversions (``{stem.__class__}``, ``{stem!r}``) are Python, not names.
    Raises ValueError, which ``output_name`` reports.

    >>> check_template("{stem:>8}_{kernel}.{ext}")
    >>> check_template("{stem:>2000000}.png")     # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: the width or precision 2000000 in '{stem:>2000000}' is more than a file name
    may hold (255 bytes)
    """
    for _, field_name, spec, conversion in string.Formatter().parse(template):
        if field_name is None:
            continue
        if conversion or not re.fullmatch(r"\w+", field_name):
            shown = field_name + (f"!{conversion}" if conversion else "")
            raise ValueError(
                f"{{{limits.shorten(shown, 30)}}} is not a field name (a field is "
                f"written {{stem}}, with an optional format such as {{stem:>8}})"
            )
        if not spec:
            continue
        if "{" in spec:
            raise ValueError(f"a field inside the format spec of {{{limits.shorten(field_name)}}}")
        for digits in re.findall(r"[0-9]+", spec):
            if len(digits.lstrip("0")) > 3 or int(digits) > limits.MAX_NAME_BYTES:
                raise ValueError(
                    f"the width or precision {limits.shorten(digits, 12)} in "
                    f"{limits.shorten('{' + field_name + ':' + spec + '}', 30)!r} is "
                    f"more than a file name may hold ({limits.MAX_NAME_BYTES} bytes)"
                )


def plan_outputs(
    sources: Sequence,
    output: str | None = None,
    out_dir: str | None = None,
    template: str = "{stem}.{ext}",
    ext: str | None = None,
    **fields: str,
) -> list[tuple[str, str]]:
    """Pair each input with its output path; raise before any work if the plan is unsafe.

    Real paths (symbolic links resolved) are found once per folder (``RealPaths``).
    """
    realpath = RealPaths()
    sources = [s if isinstance(s, Source) else Source(s, os.path.dirname(s)) for s in sources]
    if output is not None and out_dir is not None:
        raise OutputError("give either -o/--output or --out-dir, not both")
    if output is not None:
        if len(sources) != 1:
            raise OutputError(f"{len(sources)} inputs need --out-dir DIR, not -o (one output file)")
        pairs = [(sources[0].path, output)]
    elif out_dir is not None:
        pairs = []
        real_out_dir = realpath(out_dir)
        for source in sources:
            name = output_name(source.path, template, ext, **fields)
            if is_url(out_dir):
                from convcli.io.urls import join

                target = join(out_dir, _folder_below_root(source), name)
                escapes = target is None
            else:
                target = os.path.normpath(os.path.join(out_dir, _folder_below_root(source), name))
                escapes = os.path.commonpath([realpath(target), real_out_dir]) != real_out_dir
            if escapes:
                shown = target or f"{out_dir}/{_folder_below_root(source)}/{name}"
                raise OutputError(
                    f"output {shown!r} for {source.path!r} escapes --out-dir {out_dir!r}"
                )
            pairs.append((source.path, target))
    else:
        raise OutputError("give -o/--output FILE or --out-dir DIR")
    _check_plan(pairs, realpath)
    return pairs


def _folder_below_root(source: Source) -> str:
    """The folder of ``source`` relative to its root, which its output keeps below --out-dir.

    A bare file name has no folder part (``os.path.dirname`` is ``''``): it is the current one.

    >>> _folder_below_root(Source("a.png", "")), _folder_below_root(Source("in/b/c.png", "in"))
    ('.', 'b')
    """
    if source.path == STDIO:
        return os.curdir
    return os.path.relpath(os.path.dirname(source.path) or os.curdir, source.root or os.curdir)


class RealPaths:
    """``os.path.realpath`` of many files, each folder resolved once: a file's real path is
    its folder's joined with its name, unless the name itself is a symbolic link. A URL is
    its own.

    >>> realpath = RealPaths()
    >>> realpath("/usr/../usr/x.png") == os.path.realpath("/usr/x.png")
    True
    """

    def __init__(self):
        self.folders: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        if is_url(path):  # a URL names itself
            return path
        folder, name = os.path.split(path)
        if name in ("", os.curdir, os.pardir):
            return os.path.realpath(path)
        real = self.folders.get(folder)
        if real is None:
            real = self.folders[folder] = os.path.realpath(folder or os.curdir)
        joined = os.path.join(real, name)
        return os.path.realpath(joined) if os.path.islink(joined) else joined


def _inside(path: str, directory: str) -> bool:
    directory = os.path.realpath(directory)
    return os.path.commonpath([os.path.realpath(path), directory]) == directory


def _check_plan(pairs: list[tuple[str, str]], realpath: Callable[[str], str]) -> None:
    seen: dict[str, str] = {}
    inputs = {realpath(i): i for i, _ in pairs if i != STDIO}
    for source, target in pairs:
        if target == STDIO:
            continue
        key = realpath(target)
        if key in seen:
            raise OutputError(
                f"inputs {seen[key]!r} and {source!r} would both be written to {target!r}"
            )
        if key in inputs:
            raise OutputError(
                f"output {target!r} is the input {inputs[key]!r}; convcli never overwrites an input"
            )
        seen[key] = source


def check_outputs(
    pairs: Sequence[tuple[str, str]],
    settings=None,
    *,
    out_dir: str | None = None,
    out_format: str | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    extra_outputs: Sequence[str] = (),
    extra_inputs: Sequence[str] = (),
    written: Callable[[str], Sequence[str]] = lambda target: [target],
) -> set:
    """Check every output before any work; return the outputs to skip (``skip_existing``).

    ``settings`` are the ``images.OutputSettings``; ``out_dir`` the folder the outputs go to
    (made when written); ``out_format`` the format of ``-o -``; ``extra_outputs`` more files
    the job writes (``pool --indices``), checked like outputs; ``extra_inputs`` more files it
    reads (``unpool --indices``), which no output may write over; ``written(target)`` the files
    a planned target stands for (one per saved layer for ``run --model``). An existing output is
    an error
    unless ``overwrite`` or ``skip_existing``; the message names the first and counts the
    others.
    """
    from convcli.io import images
    from convcli.io.atomic import check_folder, check_target, folder_of, taken
    from convcli.pipeline import output_files

    if (
        out_dir is not None
        and not is_url(out_dir)
        and os.path.exists(out_dir)
        and not os.path.isdir(out_dir)
    ):
        raise OutputError(f"out_dir {out_dir!r} is a file, not a directory", names=("out_dir",))
    if out_dir is not None:
        check_folder(out_dir)
    for source, target in pairs:
        if target != STDIO:
            check_target(target)
        if out_dir is not None and (is_url(target) or not os.path.isdir(folder_of(target))):
            images.check_output_format(target, settings)  # a folder in --out-dir: made when written
        else:
            images.check_output_path(target, [source, *extra_inputs], settings, out_format)
    for path in extra_outputs:
        check_target(path)
    existing = []
    for _, target in pairs:
        if target == STDIO:
            continue
        made = [[taken(f) for f in output_files(path, settings)] for path in written(target)]
        if any(map(any, made)):
            if skip_existing and not all(map(any, made)):
                raise OutputError(
                    f"output {target!r} is there for some layers, not all; skip_existing keeps "
                    f"only complete outputs (use overwrite to make them again)",
                    names=("skip_existing", "overwrite"),
                )
            existing.append(target)
    extra_existing = [path for path in extra_outputs if taken(path)]
    if skip_existing and extra_outputs:  # one input, whose outputs are kept all or none
        present = existing + extra_existing
        missing = [t for _, t in pairs if t not in existing] + sorted(
            set(extra_outputs) - set(extra_existing)
        )
        if present and missing:
            raise OutputError(
                f"output {present[0]!r} exists but {missing[0]!r} does not; "
                f"skip_existing keeps only complete outputs (use overwrite to "
                f"make them again)",
                names=("skip_existing", "overwrite"),
            )
    existing += extra_existing
    if existing and not (overwrite or skip_existing):
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(
            f"output {existing[0]!r} exists{more}; use overwrite to replace or "
            f"skip_existing to keep",
            names=("overwrite", "skip_existing"),
        )
    return set(existing) if skip_existing else set()


def slug(specs: Sequence[str]) -> str:
    """``{kernel}`` for ``--name``: the kernels as file-name-safe text, joined by ``+``.

    >>> slug(["sobel_x", "box:size=5", "weights/bank.npy"])
    'sobel_x+box_size=5+bank'
    """
    parts = []
    for spec in specs:
        if re.search(r"\.(ya?ml|npy|mat)$", spec, re.I):
            spec = os.path.splitext(os.path.basename(spec))[0]
        parts.append(re.sub(r"[^\w.=-]+", "_", spec).strip("_") or "kernel")
    return "+".join(parts)
