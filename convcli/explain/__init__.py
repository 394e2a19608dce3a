"""``convcli explain``: shape traces of CNN layer stacks, and small convolutions worked by hand.

Pure functions returning data; the command (``convcli/cli/explain.py``) renders it. The
modules: ``language`` (steps), ``trace`` (rows), ``byhand`` (worked examples), ``drawing``
(GIF frames), ``field`` (receptive fields on a picture), ``text`` (number formats); input
shapes are read by ``convcli.io.probe``.
Every size comes from ``convcli.geometry``; nothing here imports numba.

1. **The step language.** ``parse_step("conv 64 k7 s2 p3 nobias", 1)`` reads one layer;
   ``step_from_dict({"op": "conv", "filters": 64, "kernel": 7, ...}, 1)`` reads the same layer
   from a pipeline's mapping (both go through one validator). Grammar::

       step   := KIND token*
       token  := N (filters) | kN | kHxW (kernel / window) | sN (stride) | dN (dilation)
               | pN | pH,W | pT,B,L,R | valid | same | full (padding) | gN (groups)
               | mN (depth multiplier) | opN (output padding) | bias | nobias | ceil
               | zeros | reflect | replicate | circular | symmetric (pad mode)
               | field=value (filters, kernel, stride, padding, dilation, groups,
                              multiplier, output_padding, bias, ceil_mode, function,
                              output_size, pad_mode)

   ``channels N`` changes the channel count only (a pipeline's ``gray`` and ``select``);
   ``unpool`` takes ``output_size=H,W``, the size of the plane the indices point into.

2. **Traces.** ``trace(shape, steps)`` gives one ``Row`` per layer: output ``(H, W, C)``, the
   size formula filled in, parameters, multiply-adds and the receptive field so far.
3. **By hand.** ``by_hand_conv`` / ``by_hand_pool`` work a small matrix cell by cell;
   ``render_by_hand`` prints it; ``animation_frames`` draws it for a GIF.

>>> t = trace((224, 224, 3), parse_steps(["conv 64 k7 s2 p3 nobias", "maxpool k3 s2 p1"]))
>>> [(row.output, row.params, row.macs) for row in t.rows]      # the ResNet-50 stem
[((112, 112, 64), 9408, 118013952), ((56, 56, 64), 0, 0)]
>>> t.rows[0].arithmetic
('floor((224 + 3 + 3 - 7) / 2) + 1 = 112',)
>>> [(rf.size, rf.jump, rf.start) for rf, _ in (row.receptive_field for row in t.rows)]
[(7, 2, 0.0), (11, 4, 0.0)]
"""

import importlib
import sys
import types

from convcli.explain.language import (
    conv_step,
    parse_step,
    parse_steps,
    step_from_dict,
    step_text,
)
from convcli.explain.text import hw_text, number_text
from convcli.explain.trace import Row, Trace, trace
from convcli.geometry import shape_text
from convcli.layers.spec import Layer

#: Names imported from their module on first use: every command traces its layers (above),
#: only ``explain`` works by hand, draws or reads shapes.
_LAZY = {
    **dict.fromkeys(
        (
            "SEED_IMAGE",
            "Channels",
            "Scattered",
            "Worked",
            "by_hand_channels",
            "by_hand_conv",
            "by_hand_pool",
            "by_hand_transposed",
            "default_cells",
            "load_matrix",
            "load_planes",
            "one_plane",
            "parse_matrix",
            "parse_planes",
            "render_by_hand",
            "render_channels",
            "render_transposed",
        ),
        "convcli.explain.byhand",
    ),
    "animation_frames": "convcli.explain.drawing",
    "scatter_frames": "convcli.explain.drawing",
    "input_shape": "convcli.io.probe",
    "parse_shape": "convcli.io.probe",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'convcli.explain' has no attribute {name!r}")
    module = _LAZY[name]
    value = getattr(
        importlib.import_module(module if "." in module else f"{__name__}.{module}"), name
    )
    globals()[name] = value
    return value


#: The layer type the step language builds (``layers.spec.Layer``), under its old name.
Step = Layer

__all__ = [
    "SEED_IMAGE",
    "Channels",
    "Row",
    "Scattered",
    "Step",
    "Trace",
    "Worked",
    "animation_frames",
    "by_hand_channels",
    "by_hand_conv",
    "by_hand_pool",
    "by_hand_transposed",
    "conv_step",
    "default_cells",
    "hw_text",
    "input_shape",
    "load_matrix",
    "load_planes",
    "number_text",
    "one_plane",
    "parse_matrix",
    "parse_planes",
    "parse_shape",
    "parse_step",
    "parse_steps",
    "render_by_hand",
    "render_channels",
    "render_transposed",
    "scatter_frames",
    "shape_text",
    "step_from_dict",
    "step_text",
    "trace",
]


class _ExplainModule(types.ModuleType):
    """This package, callable as ``convcli.explain(input_shape, layers)``: the Python API's
    trace as data (``explain.data.explain``), under the name the package already holds."""

    def __call__(self, input_shape, layers=()):
        from convcli.explain.data import explain

        return explain(input_shape, layers)


sys.modules[__name__].__class__ = _ExplainModule
