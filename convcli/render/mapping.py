"""Value mapping: feature maps (any float range) to the range an output stores, and colormaps.

Pure numpy. Maps are ``(C, H, W)`` float arrays already in the output's units, whose white
level ``white`` is 255 (8-bit), 65535 (16-bit) or 1.0 (float); ``map_values`` brings them into
``[0, white]`` and ``to_integers`` rounds half to even and clips, so nothing ever wraps.

>>> maps = np.array([[[-63.0, 0.0, 100.0, 300.0]]])
>>> to_integers(map_values(maps, "clip", 255.0), 8).tolist()
[[[0, 0, 100, 255]]]
>>> to_integers(map_values(maps, "offset", 255.0), 8).tolist()     # 0 lands on mid-grey 128
[[[65, 128, 228, 255]]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from convcli.errors import ParameterError
from convcli.layers.values import not_one_of

#: ``--map`` modes. ``auto`` is ``offset`` for maps that are 0 on a flat input, else ``clip``.
MAP_MODES = ("auto", "clip", "abs", "minmax", "offset", "none")

# matplotlib's viridis and magma (CC0, van der Walt and Smith), 256 RGB entries rounded to 8 bits.
_VIRIDIS = """
44015444025645045745055946075a46085c460a5d460b5e470d60470e61471063471164471365481467481668481769
48186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677482878482979472a7a472c7a
472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83443b84433d84433e85423f85
4240864241864142874144874045884046883f47883f48893e49893e4a893e4c8a3d4d8a3d4e8a3c4f8a3c508b3b518b
3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d365c8d365d8d355e8d355f8d34608d34618d33628d
33638d32648e32658e31668e31678e31688e30698e306a8e2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e
2c728e2c738e2b748e2b758e2a768e2a778e2a788e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e
26828e26828e25838e25848e25858e24868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d
21918c20928c20928c20938c1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f88
1fa0881fa1881fa1871fa28720a38620a48621a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad81
28ae8029af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc74
3fbc7340bd7242be7144bf7046c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc863
5ec96260ca6063cb5f65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d
84d44b86d54989d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32
addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11cd2e21bd5e21a
d8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61ef6e620f8e621fbe723fde725
"""
_MAGMA = """
00000401000501010601010802010902020b02020d03030f03031204041405041606051806051a07061c08071e090720
0a08220b09240c09260d0a290e0b2b100b2d110c2f120d31130d34140e36150e38160f3b180f3d19103f1a10421c1044
1d11471e114920114b21114e22115024125325125527125829115a2a115c2c115f2d11612f1163311165331067341069
36106b38106c390f6e3b0f703d0f713f0f72400f74420f75440f764510774710784910784a10794c117a4e117b4f127b
51127c52137c54137d56147d57157e59157e5a167e5c167f5d177f5f187f601880621980641a80651a80671b80681c81
6a1c816b1d816d1d816e1e81701f81721f817320817521817621817822817922827b23827c23827e2482802582812581
8326818426818627818827818928818b29818c29818e2a81902a81912b81932b80942c80962c80982d80992d809b2e7f
9c2e7f9e2f7fa02f7fa1307ea3307ea5317ea6317da8327daa337dab337cad347cae347bb0357bb2357bb3367ab5367a
b73779b83779ba3878bc3978bd3977bf3a77c03a76c23b75c43c75c53c74c73d73c83e73ca3e72cc3f71cd4071cf4070
d0416fd2426fd3436ed5446dd6456cd8456cd9466bdb476adc4869de4968df4a68e04c67e24d66e34e65e44f64e55064
e75263e85362e95462ea5661eb5760ec5860ed5a5fee5b5eef5d5ef05f5ef1605df2625df2645cf3655cf4675cf4695c
f56b5cf66c5cf66e5cf7705cf7725cf8745cf8765cf9785df9795df97b5dfa7d5efa7f5efa815ffb835ffb8560fb8761
fc8961fc8a62fc8c63fc8e64fc9065fd9266fd9467fd9668fd9869fd9a6afd9b6bfe9d6cfe9f6dfea16efea36ffea571
fea772fea973feaa74feac76feae77feb078feb27afeb47bfeb67cfeb77efeb97ffebb81febd82febf84fec185fec287
fec488fec68afec88cfeca8dfecc8ffecd90fecf92fed194fed395fed597fed799fed89afdda9cfddc9efddea0fde0a1
fde2a3fde3a5fde5a7fde7a9fde9aafdebacfcecaefceeb0fcf0b2fcf2b4fcf4b6fcf6b8fcf7b9fcf9bbfcfbbdfcfdbf
"""
# Moreland's diverging cool-warm map (CoolWarmFloat33.csv, also matplotlib's "coolwarm"):
# 33 RGB control points at i/32, linearly interpolated as matplotlib does.
_COOLWARM = (
    (0.2298057, 0.298717966, 0.753683153),
    (0.26623388, 0.353094838, 0.801466763),
    (0.30386891, 0.406535296, 0.84495867),
    (0.342804478, 0.458757618, 0.883725899),
    (0.38301334, 0.50941904, 0.917387822),
    (0.424369608, 0.558148092, 0.945619588),
    (0.46666708, 0.604562568, 0.968154911),
    (0.509635204, 0.648280772, 0.98478814),
    (0.552953156, 0.688929332, 0.995375608),
    (0.596262162, 0.726149107, 0.999836203),
    (0.639176211, 0.759599947, 0.998151185),
    (0.681291281, 0.788964712, 0.990363227),
    (0.722193294, 0.813952739, 0.976574709),
    (0.761464949, 0.834302879, 0.956945269),
    (0.798691636, 0.849786142, 0.931688648),
    (0.833466556, 0.860207984, 0.901068838),
    (0.865395197, 0.86541021, 0.865395561),
    (0.897787179, 0.848937047, 0.820880546),
    (0.924127593, 0.827384882, 0.774508472),
    (0.944468518, 0.800927443, 0.726736146),
    (0.958852946, 0.769767752, 0.678007945),
    (0.96732803, 0.734132809, 0.628751763),
    (0.969954137, 0.694266682, 0.579375448),
    (0.966811177, 0.650421156, 0.530263762),
    (0.958003065, 0.602842431, 0.481775914),
    (0.943660866, 0.551750968, 0.434243684),
    (0.923944917, 0.49730856, 0.387970225),
    (0.89904617, 0.439559467, 0.343229596),
    (0.869186849, 0.378313092, 0.300267182),
    (0.834620542, 0.312874446, 0.259301199),
    (0.795631745, 0.24128379, 0.220525627),
    (0.752534934, 0.157246067, 0.184115123),
    (0.705673158, 0.01555616, 0.150232812),
)

#: ``--colormap`` names; diverging maps put 0 at their centre (see ``map_values``).
COLORMAPS = ("gray", "viridis", "magma", "coolwarm")
DIVERGING = ("coolwarm",)


@cache
def colormap_table(name: str) -> np.ndarray:
    """The 256 x 3 RGB table of a colormap, values in [0, 1].

    >>> colormap_table("gray")[[0, 255]].tolist()
    [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    >>> np.rint(colormap_table("viridis")[0] * 255).astype(int).tolist()
    [68, 1, 84]
    """
    if name == "gray":
        table = np.repeat(np.linspace(0.0, 1.0, 256)[:, None], 3, axis=1)
    elif name in ("viridis", "magma"):
        data = bytes.fromhex("".join((_VIRIDIS if name == "viridis" else _MAGMA).split()))
        table = np.frombuffer(data, dtype=np.uint8).reshape(256, 3) / 255.0
    elif name == "coolwarm":
        points = np.array(_COOLWARM)
        where = np.linspace(0.0, 1.0, len(points))
        table = np.stack(
            [np.interp(np.linspace(0, 1, 256), where, points[:, k]) for k in range(3)], 1
        )
    else:
        raise ParameterError(not_one_of("colormap", name, COLORMAPS))
    table.setflags(write=False)
    return table


def apply_colormap(values: np.ndarray, white: float, name: str) -> np.ndarray:
    """Colour maps ``values`` (any shape, e.g. (H, W) or (C, H, W)) in ``[0, white]``:
    returns ``(3, *values.shape)`` float32 in ``[0, white]``, one colour plane at a time.

    Position ``value / white`` is looked up in the 256-entry table with linear interpolation
    between entries; NaN takes the first entry.

    >>> apply_colormap(np.array([[0.0, 255.0]]), 255.0, "gray")[:, 0].tolist()
    [[0.0, 255.0], [0.0, 255.0], [0.0, 255.0]]
    """
    table = colormap_table(name)
    position = np.nan_to_num(np.clip(values / white, 0.0, 1.0), nan=0.0) * 255.0
    index = np.arange(256)
    colours = np.empty((3,) + np.shape(values), np.float32)
    for k in range(3):
        plane = np.interp(position, index, table[:, k])
        plane *= white
        colours[k] = plane
    return colours


def signed_maps(
    weight: np.ndarray,
    groups: int = 1,
    *,
    transposed: bool = False,
    shift: float | Sequence[float] = 0.0,
    tolerance: float = 1e-5,
) -> np.ndarray:
    """Which output maps of a convolution are signed: 0 on a flat input, edges going both ways.

    ``weight`` is 4-D as the layer holds it: ``(C_out, C_in/groups, kh, kw)``, or with
    ``transposed`` ``(C_in, C_out/groups, kh, kw)``. True where the weights feeding a map sum
    to 0 (relative to the sum of their absolute values) and no bias or offset (``shift``: one
    value or one per map) is added to it.

    >>> sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    >>> signed_maps(np.broadcast_to(sobel, (3, 1, 3, 3)), groups=3).tolist()
    [True, True, True]
    >>> signed_maps(sobel[None, None], shift=128).tolist()
    [False]
    >>> signed_maps(np.full((1, 1, 3, 3), 1 / 9)).tolist()
    [False]
    """
    weight = np.asarray(weight, dtype=np.float64)
    if transposed:  # regroup to one row per output map: (groups, C_out/groups, C_in/groups, kh*kw)
        c_in, per_group = weight.shape[:2]
        weight = weight.reshape(groups, c_in // groups, per_group, -1).transpose(0, 2, 1, 3)
    per_map = weight.reshape(
        -1, int(np.prod(weight.shape[-2:] if transposed else weight.shape[1:]))
    )
    zero = np.abs(per_map.sum(axis=1)) <= tolerance * np.abs(per_map).sum(axis=1)
    return zero & (np.broadcast_to(np.asarray(shift, dtype=np.float64), zero.shape) == 0)


def mid_level(white: float) -> float:
    """The grey that 0 maps to with ``--map offset``: 128 for 8-bit, 32768 for 16-bit, 0.5 for
    float.

    >>> mid_level(255.0), mid_level(65535.0), mid_level(1.0)
    (128.0, 32768.0, 0.5)
    """
    return float(np.ceil(white / 2)) if white > 1 else white / 2


@dataclass(frozen=True)
class MapRange:
    """What a ``--map`` mode made of each map: ``low`` became 0 and ``high`` became white
    (float64, one per map, in the units of the maps that were mapped); with ``absolute`` they
    are values of ``|y|`` (``abs``). Values between are linear; outside, clipped.

    >>> MapRange(np.array([-128.0]), np.array([127.0])).at(128 / 255).tolist()   # offset's mid-grey
    [0.0]
    """

    low: np.ndarray
    high: np.ndarray
    absolute: bool = False

    def at(self, fraction: float) -> np.ndarray:
        """The value of each map that the level ``fraction`` of white (0..1) stands for."""
        return self.low + (self.high - self.low) * fraction


def map_values(maps: np.ndarray, mode: str, white: float, **options) -> np.ndarray:
    """Bring ``maps`` (C, H, W), in output units, into ``[0, white]`` with a ``--map`` mode
    (``options``: the keywords of ``map_with_range``).

    With ``in_place`` a float32 ``maps`` is overwritten and returned (no full-size copies:
    a 4096x4096 RGB map is 200 MB).

    - ``clip``: clip to ``[0, white]``.
    - ``abs``: ``|y|``, clipped to ``white``.
    - ``minmax``: stretch each map's finite min..max (all maps' with ``joint``) to
      ``0..white``; a constant map becomes 0. With ``symmetric`` (diverging colormaps) the
      range is ``-m..m``, ``m = max |y|``, so 0 lands on the middle.
    - ``offset``: ``y * scale + offset`` (defaults 1 and ``mid_level(white)``), clipped.
    - ``auto``: ``offset`` (default scale and offset) for the maps flagged in ``signed`` (0 on
      a flat input), ``clip`` for the others.
    - ``none``: the values unchanged (float outputs only; the caller checks).

    >>> y = np.array([[[-2.0, 0.0, 2.0]], [[10.0, 20.0, 30.0]]])
    >>> map_values(y, "minmax", 255.0)[:, 0].tolist()
    [[0.0, 127.5, 255.0], [0.0, 127.5, 255.0]]
    >>> map_values(y, "minmax", 255.0, joint=True)[0, 0].tolist()
    [0.0, 15.9375, 31.875]
    >>> map_values(y, "auto", 255.0, signed=[True, False])[:, 0].tolist()
    [[126.0, 128.0, 130.0], [10.0, 20.0, 30.0]]
    """
    return map_with_range(maps, mode, white, **options)[0]


def map_with_range(
    maps: np.ndarray,
    mode: str,
    white: float,
    *,
    signed: Sequence[bool] | None = None,
    scale: float | None = None,
    offset: float | None = None,
    joint: bool = False,
    symmetric: bool = False,
    in_place: bool = False,
) -> tuple[np.ndarray, MapRange | None]:
    """``map_values``, and the ``MapRange`` it applied (None for ``none``): what ``--legend``
    prints.

    >>> y = np.array([[[-2.0, 0.0, 2.0]], [[10.0, 20.0, 30.0]]])
    >>> used = map_with_range(y, "minmax", 255.0)[1]
    >>> used.low.tolist(), used.high.tolist()
    ([-2.0, 10.0], [2.0, 30.0])
    >>> used = map_with_range(y, "auto", 255.0, signed=[True, False])[1]
    >>> used.low.tolist(), used.high.tolist()
    ([-128.0, 0.0], [127.0, 255.0])
    """
    if mode not in MAP_MODES:
        raise ParameterError(not_one_of("map mode", mode, MAP_MODES))
    maps = np.asarray(maps, dtype=np.float32)
    if mode == "none":
        return maps, None
    out = maps if in_place else maps.copy()
    count = len(out)
    low, high = np.zeros(count), np.full(count, float(white))
    if mode == "auto":
        flags = np.zeros(count, bool) if signed is None else np.asarray(signed, bool)
        if flags.shape != (count,):
            raise ParameterError(f"signed flags ({flags.size}) do not match the {count} maps")
        np.add(out, np.float32(mid_level(white)), out=out, where=flags[:, None, None])
        low -= np.where(flags, mid_level(white), 0.0)
        high -= np.where(flags, mid_level(white), 0.0)
    elif mode == "abs":
        np.abs(out, out=out)
    elif mode == "offset":
        gain = 1.0 if scale is None else scale
        shift = mid_level(white) if offset is None else offset
        out *= gain
        out += shift
        low, high = (low - shift) / gain, (high - shift) / gain
    elif mode == "minmax" and joint:
        low[:], high[:] = _stretch(out, white, symmetric)
    elif mode == "minmax":
        per_group = max(1, STRETCH_VALUES // max(1, out[0].size))
        for first in range(0, count, per_group):
            part = slice(first, first + per_group)
            low[part], high[part] = _stretch(out[part], white, symmetric, each=True)
    return np.clip(out, 0.0, white, out=out), MapRange(low, high, absolute=mode == "abs")


#: ``minmax`` stretches maps in groups of about this many values: one vectorised pass per
#: group (no Python loop over a million 1x1 maps), temporaries of a few megabytes.
STRETCH_VALUES = 1 << 20


def _stretch(
    values: np.ndarray, white: float, symmetric: bool, each: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Stretch ``values`` in place: finite min..max (or -m..m) to 0..white; with ``each``,
    every map of ``values`` (N, H, W) by its own range (one finite value: a constant map).
    Returns the range used (float64, one value per map with ``each``).

    >>> maps = np.array([[[1.0, 3.0]], [[5.0, 5.0]], [[-1.0, np.inf]]], np.float32)
    >>> low, high = _stretch(maps, 2.0, False, each=True); maps[:, 0].tolist(), low.tolist()
    ([[0.0, 2.0], [0.0, 0.0], [0.0, 0.0]], [1.0, 5.0, -1.0])
    """
    axes = tuple(range(1, values.ndim)) if each else None
    finite = np.isfinite(values)
    if symmetric:
        reach = np.max(np.abs(values), axis=axes, where=finite, initial=0.0, keepdims=each)
        low, high = -reach, reach
    else:
        low = np.min(values, axis=axes, where=finite, initial=np.inf, keepdims=each)
        high = np.max(values, axis=axes, where=finite, initial=-np.inf, keepdims=each)
        empty = low > high  # no finite value: as a constant map
        low, high = np.where(empty, 0.0, low), np.where(empty, 0.0, high)
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    flat = high == low
    gain = white / np.where(flat, 1.0, high - low)
    values -= low.astype(values.dtype)
    values *= gain.astype(values.dtype)
    if np.any(flat):
        values[...] = np.where(flat, white / 2 if symmetric else 0.0, values)
    return low.reshape(-1), high.reshape(-1)


def to_integers(values: np.ndarray, bits: int, in_place: bool = False) -> np.ndarray:
    """Round half to even, clip to ``0..2**bits - 1`` and cast; NaN becomes 0. Never wraps.

    >>> to_integers(np.array([-63.0, 0.5, 1.5, 2.5, 254.5, 256.0, np.nan]), 8).tolist()
    [0, 0, 2, 2, 254, 255, 0]
    """
    top = 255 if bits == 8 else 65535
    pixels = (
        np.asarray(values, dtype=np.float32) if in_place else np.array(values, dtype=np.float32)
    )
    np.rint(pixels, out=pixels)
    np.fmax(pixels, 0, out=pixels)  # fmax also turns NaN into 0, with no temporary masks
    np.fmin(pixels, top, out=pixels)
    return pixels.astype(np.uint8 if bits == 8 else np.uint16)
