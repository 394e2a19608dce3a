"""Errors speak of parameters; the CLI writes them as its flags (issue 19).

The library's messages name ``groups``, ``out_dir``, ``skip_existing``: what a Python caller
passes. ``convcli.cli.flags`` is the one place that turns them into ``--groups``, for errors
raised in this process and for those a batch's worker processes send back.
"""

import pickle
import subprocess
import sys

import numpy as np
import pytest
from conftest import refused, run

from convcli import engine, limits
from convcli.batch import RunOptions, make_executor
from convcli.batch.plan import check_outputs, plan_outputs
from convcli.cli.flags import in_flags, message_in_flags
from convcli.errors import ConvcliError, OutputError, ParameterError, ShapeError
from convcli.explain.field import unit_field
from convcli.explain.language import parse_steps
from convcli.explain.trace import trace
from convcli.io import images
from convcli.io.images import OutputSettings


def raised(call) -> ConvcliError:
    with pytest.raises(ConvcliError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(
    "call, message, names",
    [
        (
            lambda tmp: engine.conv2d(np.ones((3, 4, 4), np.float32), np.ones((3, 3)), groups=3),
            "groups applies to 4-D kernels; a 2-D kernel already filters each channel on its own",
            ("groups",),
        ),
        (
            lambda tmp: engine.conv2d(
                np.ones((3, 4, 4), np.float32), np.ones((3, 3, 3), np.float32), groups=3
            ),
            "groups applies to 4-D kernels; a 3-D kernel sums over all channels",
            ("groups",),
        ),
        (
            lambda tmp: engine.luma(np.ones((2, 4, 4), np.float32)),
            "gray needs 1 or 3 channels, the input has 2",
            ("gray",),
        ),
        (
            lambda tmp: unit_field(trace((8, 8, 1), parse_steps(["conv 1 k3 s2 p1"])), (4, 0)),
            "field 4,0 is outside the last step's 4x4 output (rows 0..3, columns 0..3)",
            ("field",),
        ),
        (
            lambda tmp: make_executor(RunOptions(executor="nowhere")),
            "executor 'nowhere' is not one of local, dask",
            ("executor",),
        ),
        (
            lambda tmp: plan_outputs([str(tmp / "a.png")], out_dir=str(tmp), template="{x}"),
            "template '{x}' is not valid",
            ("template",),
        ),
        (
            lambda tmp: plan_outputs(
                [str(tmp / "a.png")], out_dir=str(tmp), template="{stem:>250}{stem:>250}.png"
            ),
            "more than the 255 a file name may have",
            ("template",),
        ),
        (
            lambda tmp: check_outputs(
                [(str(tmp / "in.png"), str(tmp / "a.png"))], out_dir=str(tmp)
            ),
            "; use overwrite to replace or skip_existing to keep",
            ("overwrite", "skip_existing"),
        ),
    ],
)
def test_library_errors_name_parameters_not_flags(tmp_path, call, message, names):
    (tmp_path / "a.png").write_bytes(b"")
    error = raised(lambda: call(tmp_path))
    assert message in str(error)
    assert "--" not in str(error)
    assert error.names == names


def test_the_names_survive_pickling_to_and_from_workers():
    for error in (
        ParameterError("groups applies", names=("groups",)),
        OutputError("out_dir 'x' is a file", names=("out_dir",)),
        ShapeError("no names"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), copy.names) == (type(error), str(error), error.names)


def test_the_cli_writes_each_named_parameter_as_its_flag():
    error = OutputError(
        "output 'a' exists (and 1 more); use overwrite to replace or skip_existing to keep",
        names=("overwrite", "skip_existing"),
    )
    assert in_flags(error) == (
        "output 'a' exists (and 1 more); use --overwrite to replace or --skip-existing to keep"
    )
    # a name is replaced where the message names it, in order, as a whole word only
    assert message_in_flags("map none: the map is raw; map", ("map", "map")) == (
        "--map none: the --map is raw; map"
    )
    assert message_in_flags("map none: the map is raw", ("map",)) == "--map none: the map is raw"
    assert message_in_flags("colormap and map", ("map",)) == "colormap and --map"
    assert message_in_flags("template 'x' is not valid", ("template",)) == (
        "--name template 'x' is not valid"
    )
    assert in_flags(ParameterError("groups 4 must divide the input channels")) == (
        "groups 4 must divide the input channels"
    )


def test_the_cli_says_the_flags_in_one_process(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((6, 6, 3), np.float32))
    refused(
        run("conv", tmp_path / "x.npy", "-k", "box", "--groups", "3", "-o", tmp_path / "o.npy"),
        1,
        "Error: --groups applies to 4-D kernels; a 2-D kernel already filters each channel",
    )
    refused(
        run("conv", tmp_path / "x.npy", "-k", "box", "--out-dir", tmp_path / "x.npy"),
        1,
        f"Error: --out-dir {str(tmp_path / 'x.npy')!r} is a file, not a directory",
    )


def test_a_batch_says_the_flags_its_workers_send_back(tmp_path):
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.ones((6, 6, 3), np.float32))
    proc = subprocess.run(
        [sys.executable, "-m", "convcli", "conv", "a.npy", "b.npy", "-k", "box"]
        + ["--groups", "3", "--out-dir", "out", "--jobs", "2", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    said = "--groups applies to 4-D kernels; a 2-D kernel already filters each channel on its own"
    assert sorted(proc.stderr.splitlines()[:2]) == [f"Error: {n}.npy: {said}" for n in "ab"]
    assert proc.stdout.count(f'"error": "{said}"') == 2


@pytest.mark.parametrize(
    "call, library, cli",
    [
        (
            lambda: OutputSettings(split=True, montage=True),
            "split and montage exclude each other",
            "--split and --montage exclude each other",
        ),
        (
            lambda: OutputSettings(map="clip", scale=2.0),
            "scale and offset apply to map offset, not map clip",
            "--scale and --offset apply to --map offset, not --map clip",
        ),
        (
            lambda: OutputSettings(legend=True, map="none"),
            "legend shows the range map puts into pixels; map none keeps raw values",
            "--legend shows the range --map puts into pixels; --map none keeps raw values",
        ),
        (
            lambda: images.check_output_format("o.npy", OutputSettings(colormap="gray")),
            "colormap writes images, not .npy (.npy takes split or channels_first)",
            "--colormap writes images, not .npy (.npy takes --split or --channels-first)",
        ),
        (
            lambda: images.check_output_format("-", OutputSettings(split=True), "png"),
            "split writes one file per map; output - (stdout) takes one",
            "--split writes one file per map; -o - (stdout) takes one",
        ),
        (
            lambda: images.check_output_format("-"),
            "output - (stdout) needs format, one of ",
            "-o - (stdout) needs --format, one of ",
        ),
        (
            lambda: limits.check_layout(limits.MAX_LAYOUT_MAPS + 1, "montage"),
            "feature maps are more montage tiles than the limit of",
            "feature maps are more --montage tiles than the limit of",
        ),
        (
            lambda: limits.check_layout(limits.MAX_LAYOUT_MAPS + 1, "split"),
            "; write them as one .npy (output maps.npy)",
            "more --split files than the limit of "
            f"{limits.MAX_LAYOUT_MAPS:,}; write them as one .npy (-o maps.npy)",
        ),
    ],
)
def test_output_errors_name_parameters_and_the_cli_says_its_flags(call, library, cli):
    error = raised(call)
    assert library in str(error) and "--" not in str(error)
    assert cli in in_flags(error)
