"""``convcli run``: the steps of a pipeline file over every input."""

from __future__ import annotations

import os

import click

from convcli.cli.batch import ALPHA_OPTION, batch_options, run_files
from convcli.cli.kernels import kernel_path_option
from convcli.cli.options import command_line_output_values, input_options, output_options


@click.command()
@click.argument("pipeline_file", metavar="PIPELINE.yaml")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@kernel_path_option
@ALPHA_OPTION
@batch_options
@output_options
@input_options
def run(pipeline_file, inputs, kernel_path, alpha, batch, out, reading):
    """Run the steps of PIPELINE.yaml on every INPUT (files, folders, patterns, or - for stdin).

    \b
    convcli run examples/edges.yaml photo.png -o edges.png
    convcli run examples/cnn_block.yaml photos/ -r --out-dir maps --format npy

    The pipeline is checked, and its kernels found, before any image is read. Output options
    on the command line override the file's 'output' section.
    """
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
