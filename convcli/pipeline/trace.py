"""A pipeline's shape trace, as ``convcli explain`` shows it, from an input shape."""

from __future__ import annotations

from dataclasses import replace

from convcli.errors import ConvcliError, ParameterError, ShapeError
from convcli.pipeline.schema import Pipeline
from convcli.pipeline.step import ACTIVATIONS, Step


def trace(pipeline: Pipeline, shape: tuple[int, int, int], source: str = ""):
    """The ``explain.Trace`` of ``pipeline`` from an (H, W, C) input, using the real kernels.

    Each step becomes ``explain`` steps (``step_from_dict``); a step that cannot run on the
    shape it gets (channels that do not fit) ends the trace with an error row.

    >>> from convcli.pipeline.schema import parse_pipeline
    >>> t = trace(parse_pipeline(["gray", {"op": "conv", "kernel": ["sobel_x", "sobel_y"]}, "relu",
    ...                           {"op": "pool", "size": 2}]), (32, 32, 3))
    >>> [(row.text, row.output) for row in t.rows]     # doctest: +NORMALIZE_WHITESPACE
    [('gray: channels 1', (32, 32, 1)), ('conv: conv 2 k3 same nobias', (32, 32, 2)),
     ('relu: relu', (32, 32, 2)), ('pool: maxpool k2 s2 valid', (16, 16, 2))]
    """
    from convcli.explain.language import step_from_dict, step_text
    from convcli.explain.trace import Row
    from convcli.explain.trace import trace as trace_steps

    steps, pooled = [], {}
    result = trace_steps(shape, [], source)
    for step in pipeline.steps:
        current = result.output
        try:
            spec = _explain_spec(step, current, pooled)
        except ConvcliError as exc:
            error = Row(
                number=step.number,
                label=str(step.number),
                text=step.name or step.op,
                kind="channels",
                input=current,
                error=str(exc),
            )
            return replace(result, rows=result.rows + (error,))
        traced = step_from_dict(spec, step.number)
        steps.append(replace(traced, text=f"{step.name or step.op}: {step_text(traced)}"))
        if step.op in ("conv", "transposed") and step.params["combine"]:  # one map per kernel's map
            maps = spec["filters"] // len(step.params["kernel"])
            combined = step_from_dict({"op": "channels", "filters": maps}, step.number)
            steps.append(
                replace(combined, text=f"{step.name or step.op}: combine {step.params['combine']}")
            )
        result = trace_steps(shape, steps, source)
        if result.error:
            return result
        if step.op == "pool" and step.name:
            pooled[step.name] = (current[:2], step)
    return result


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
