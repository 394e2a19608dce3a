"""A pipeline's shape trace, as ``convcli explain`` shows it, from an input shape."""

from __future__ import annotations

from dataclasses import replace

from convcli.errors import ConvcliError, ParameterError, ShapeError
from convcli.layers import rules
from convcli.pipeline.schema import Pipeline
from convcli.pipeline.step import ACTIVATIONS, JOINS, Step


def trace(pipeline: Pipeline, shape: tuple[int, int, int], source: str = ""):
    """The ``explain.Trace`` of ``pipeline`` from an (H, W, C) input, using the real kernels.

    Each step becomes ``explain`` steps (``step_from_dict``); a step that cannot run on the
    shape it gets (channels that do not fit, joined maps that differ) ends the trace with an
    error row. A step's receptive field is along the path to it; where branches join
    (``add``, ``concat``), along the branch whose field is the largest.

    >>> from convcli.pipeline.schema import parse_pipeline
    >>> t = trace(parse_pipeline(["gray", {"op": "conv", "kernel": ["sobel_x", "sobel_y"]}, "relu",
    ...                           {"op": "pool", "size": 2}]), (32, 32, 3))
    >>> [(row.text, row.output) for row in t.rows]     # doctest: +NORMALIZE_WHITESPACE
    [('gray: channels 1', (32, 32, 1)), ('conv: conv 2 k3 same nobias', (32, 32, 2)),
     ('relu: relu', (32, 32, 2)), ('pool: maxpool k2 s2 valid', (16, 16, 2))]
    >>> block = parse_pipeline([{"op": "conv", "kernel": "box:size=5", "name": "blur"},
    ...                         {"op": "concat", "inputs": ["image", "blur"]}])
    >>> [(row.output, row.receptive_field[0].size) for row in trace(block, (8, 8, 1)).rows]
    [((8, 8, 1), 5), ((8, 8, 2), 5)]
    """
    from convcli.explain.language import step_from_dict, step_text
    from convcli.explain.trace import Row
    from convcli.explain.trace import trace as trace_steps

    start = trace_steps(shape, [], source)
    # per step number (0: the input): the explain steps along its path, and its trace
    paths, traces = {0: []}, {0: start}
    rows, pooled, sources = [], {}, pipeline.reads()
    for step in pipeline.steps:
        reads = sources[step.number]
        try:
            if step.op in JOINS:
                joined = [(pipeline.source_name(n), traces[n].output) for n in reads]
                spec = {"op": "channels", "filters": rules.joined_shapes(step.op, joined)[2]}
                base = max(reads, key=lambda n: _field_size(traces[n]))
            else:
                base = reads[0]
                spec = _explain_spec(step, traces[base].output, pooled)
        except ConvcliError as exc:
            error = Row(
                number=step.number,
                label=str(step.number),
                text=step.name or step.op,
                kind="channels",
                input=traces[reads[0]].output,
                error=str(exc),
            )
            return replace(start, rows=tuple(rows) + (error,), windows=traces[reads[0]].windows)
        traced = step_from_dict(spec, step.number)
        path = paths[base] + [replace(traced, text=f"{step.name or step.op}: {step_text(traced)}")]
        if step.op in ("conv", "transposed") and step.params["combine"]:  # one map per kernel's map
            maps = spec["filters"] // len(step.params["kernel"])
            combined = step_from_dict({"op": "channels", "filters": maps}, step.number)
            path.append(
                replace(combined, text=f"{step.name or step.op}: combine {step.params['combine']}")
            )
        result = trace_steps(shape, path, source)
        rows.extend(result.rows[len(paths[base]) :])
        if result.error:
            return replace(result, rows=tuple(rows))
        paths[step.number], traces[step.number] = path, result
        if step.op == "pool" and step.name:
            pooled[step.name] = (traces[base].output[:2], step)
    return replace(traces[pipeline.steps[-1].number], rows=tuple(rows))


def _field_size(result) -> int:
    """The area of the receptive field at the end of a trace (1 for the input)."""
    fields = [row.receptive_field for row in result.rows if row.receptive_field]
    return fields[-1][0].size * fields[-1][1].size if fields else 1


def _explain_spec(step: Step, shape: tuple[int, int, int], pooled: dict) -> dict:
    """The ``explain.step_from_dict`` mapping of one step, given the (H, W, C) it receives."""
    p, channels = step.params, shape[2]
    from convcli import engine, geometry

    if step.op in ("conv", "transposed"):
        transposed = step.op == "transposed"
        layout = engine.as_transposed_weight if transposed else engine.as_conv_weight
        layers = [layout(k.weights, channels, p["groups"], copy=False) for k in p["kernel"]]
        shapes = {(w.shape[2:], g) for w, g in layers}
        if len(shapes) > 1:
            raise ParameterError(
                "explain traces stacked kernels of one size and channel layout; these "
                "differ (trace each kernel on its own)"
            )
        filters = sum(w.shape[1] * g if transposed else w.shape[0] for w, g in layers)
        spec = {
            "op": step.op,
            "filters": filters,
            "kernel": list(layers[0][0].shape[2:]),
            "groups": layers[0][1],
            "stride": list(p["stride"]),
            "padding": _padding_value(p["padding"]),
            "dilation": list(p["dilation"]),
            "bias": p["bias"] is not None,
        }
        if transposed:
            spec["output_padding"] = list(p["output_padding"])
        else:
            spec["pad_mode"] = p["pad_mode"]
        return spec
    if step.op == "pool":
        spec = {
            "op": f"{p['mode']}pool",
            "kernel": list(p["size"]),
            "stride": list(p["stride"] or p["size"]),
            "padding": _padding_value(p["padding"]),
            "ceil_mode": p["ceil_mode"],
        }
        if p["mode"] == "max":
            spec["dilation"] = list(p["dilation"])
        return spec
    if step.op == "global_pool":
        return {"op": f"global{p['mode']}pool"}
    if step.op == "unpool":
        in_hw, pool = pooled[p["indices"]]
        window = pool.params
        stride = window["stride"] or window["size"]
        pads = geometry.resolve_padding(
            window["padding"], in_hw, window["size"], stride, window["dilation"]
        )
        return {
            "op": "unpool",
            "kernel": list(window["size"]),
            "stride": list(stride),
            "padding": [pads[0], pads[2]],
            "output_size": list(in_hw),
        }
    if step.op in ACTIVATIONS:
        return {"op": ACTIVATIONS[step.op]}
    if step.op == "normalise":
        return {"op": "normalise"}
    if step.op == "batchnorm":
        return {"op": "batchnorm"}
    if step.op == "mul":
        return {"op": "channels", "filters": channels}
    if step.op == "stats":  # reports; the maps go on as they are
        return {"op": "channels", "filters": channels}
    if step.op == "gray":
        if channels not in (1, 3):
            raise ShapeError(f"gray needs 1 or 3 channels, the input has {channels}")
        return {"op": "channels", "filters": 1}
    if max(p["channels"]) >= channels:
        raise ShapeError(
            f"channel {max(p['channels'])} does not exist: the input has {channels} "
            f"(0 to {channels - 1})"
        )
    return {"op": "channels", "filters": len(p["channels"])}


def _padding_value(padding):
    return padding if isinstance(padding, str) else list(padding)
