"""``convcli run``: the steps of a pipeline file, or the layers of an ONNX model, over every
input."""

from __future__ import annotations

import dataclasses
import os

import click

from convcli.cli.batch import ALPHA_OPTION, batch_options, run_files
from convcli.cli.kernels import kernel_path_option
from convcli.cli.options import command_line_output_values, input_options, output_options

#: The options that apply to ``--model`` only.
MODEL_OPTIONS = ("until", "save", "mean", "std", "bgr", "export_pipeline")


@click.command()
@click.argument("arguments", nargs=-1, metavar="PIPELINE.yaml INPUT... | --model FILE INPUT...")
@click.option(
    "--model",
    metavar="FILE.onnx",
    help="Run the layers of this ONNX model instead of a pipeline file (docs/models.md).",
)
@click.option(
    "--until",
    metavar="NAME",
    help="With --model: run up to this node (a node or output name); default: the model's output.",
)
@click.option(
    "--save",
    metavar="NAME",
    multiple=True,
    help="With --model: write this layer's maps (repeat; default: the --until layer) to "
    "{stem}_{layer}.{ext} in --out-dir.",
)
@click.option(
    "--mean",
    metavar="M[,M...]",
    help="With --model: subtract from the image divided by its white level, per channel "
    "(torchvision's Normalize after ToTensor).",
)
@click.option("--std", metavar="S[,S...]", help="With --model: then divide by these, per channel.")
@click.option(
    "--rgb/--bgr",
    "rgb",
    default=True,
    help="With --model: the channel order the model takes (default: RGB).",
)
@click.option(
    "--export-pipeline",
    metavar="FILE.yaml",
    help="With --model: write the pipeline that runs the model up to --until (its weights "
    "named relative to the file); inputs are then optional.",
)
@kernel_path_option
@ALPHA_OPTION
@batch_options
@output_options
@input_options
def run(arguments, model, until, save, mean, std, rgb, export_pipeline, **options):
    """Run the steps of PIPELINE.yaml, or the layers of an ONNX model (--model), on every INPUT
    (files, folders, patterns, or - for stdin).

    \b
    convcli run examples/edges.yaml photo.png -o edges.png
    convcli run examples/cnn_block.yaml photos/ -r --out-dir maps --format npy
    convcli run --model net.onnx photo.png --until /layer1/Relu --out-dir maps --montage

    The pipeline (or the model's graph) is checked, and its kernels found, before any image is
    read. Output options on the command line override the file's 'output' section.
    """
    ctx = click.get_current_context()
    if model is None:
        values = (until, save, mean, std, not rgb, export_pipeline)
        given = [
            name for name, value in zip(MODEL_OPTIONS, values) if value not in (None, (), False)
        ]
        if given:
            raise click.UsageError(f"--{given[0].replace('_', '-')} applies with --model", ctx)
        if len(arguments) < 2:
            missing = "PIPELINE.yaml" if not arguments else "INPUT..."
            raise click.UsageError(f"Missing argument '{missing}'.", ctx)
        _run_pipeline(arguments[0], arguments[1:], **options)
        return
    if not arguments and export_pipeline is None:
        raise click.UsageError("Missing argument 'INPUT...'.", ctx)
    _run_model(ctx, model, arguments, until, save, mean, std, rgb, export_pipeline, **options)


def _run_pipeline(pipeline_file, inputs, kernel_path, alpha, batch, out, reading):
    from convcli.cli.options import usage_output_settings as output_settings
    from convcli.pipeline import Job, load_pipeline

    pipeline = load_pipeline(pipeline_file, kernel_path)
    settings = out
    if pipeline.output:
        given = command_line_output_values(click.get_current_context())
        settings = output_settings(**{**pipeline.output, **given})
    job = Job(pipeline, settings, alpha, batch.out_format, batch.overwrite, read=reading)
    stem = os.path.splitext(os.path.basename(pipeline_file))[0]
    run_files(inputs, job, batch, pipeline=stem)


def _run_model(ctx, model, inputs, until, save, mean, std, rgb, export_pipeline, **options) -> None:
    from convcli.layers.values import parse_floats
    from convcli.models.onnx_graph import read_graph
    from convcli.pipeline import parse_pipeline
    from convcli.pipeline.job import LayersJob

    values = {
        name: None if text is None else parse_floats(text, f"--{name}")
        for name, text in (("mean", mean), ("std", std))
    }
    if (values["mean"] is None) != (values["std"] is None):
        raise click.UsageError("--mean and --std go together", ctx)
    graph = read_graph(model)
    preprocessing = dict(mean=values["mean"], std=values["std"], bgr=not rgb)
    if export_pipeline is not None:
        overwrite = options["batch"].overwrite
        export_model_pipeline(graph, export_pipeline, until, preprocessing, overwrite)
    if not inputs:
        return
    document, saved = graph.document(until, save, **preprocessing)
    pipeline = parse_pipeline(document, model)
    number = {step.name: step.number for step in pipeline.steps}
    layers = tuple(dict.fromkeys((number[name], name) for name in saved))
    batch = options["batch"]
    if batch.out_dir is not None and batch.name_template is None:
        batch = dataclasses.replace(batch, name_template="{stem}_{layer}.{ext}")
    if batch.output is not None and len(layers) > 1 and batch.output == "-":
        raise click.UsageError("-o - writes one layer; --save names several", ctx)
    job = LayersJob(
        pipeline,
        options["out"],
        "drop" if options["alpha"] == "keep" else options["alpha"],
        batch.out_format,
        batch.overwrite,
        read=options["reading"],
        layers=layers,
        channels=graph.channels,
        model=model,
    )
    run_files(inputs, job, batch, layer="{layer}")


def export_model_pipeline(
    graph, path: str, until: str | None, preprocessing: dict, overwrite: bool = False
) -> None:
    """Write the pipeline that runs ``graph`` up to ``until`` as YAML to ``path`` (atomically),
    the model named relative to the file's folder, after checking that it reads back."""
    import yaml

    from convcli.io.atomic import atomic_write, check_target
    from convcli.pipeline import parse_pipeline

    folder = os.path.dirname(os.path.abspath(path))
    ref = os.path.relpath(os.path.abspath(graph.path), folder)
    document, _ = graph.document(until, (), model_ref=ref, **preprocessing)
    parse_pipeline(document, path, folder=folder)  # reads back as written
    document = {"description": f"{os.path.basename(graph.path)} up to {until or 'its output'}"} | (
        document
    )
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None)
    check_target(path, "--export-pipeline", overwrite)
    atomic_write(path, lambda f: f.write(text.encode()))
