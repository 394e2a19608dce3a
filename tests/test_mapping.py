"""convcli.render.mapping: value modes, rounding, signed-map detection, colormaps (hand-checked
values)."""

import numpy as np
import pytest

from convcli.errors import ParameterError
from convcli.render import mapping

# One row of raw values chosen so every mode gives exact integers by hand (no halves).
RAW = np.array([[[-100, -64, -2, 0], [2, 6, 300, 410]]], dtype=np.float32)
EXPECTED_8BIT = {
    "clip": [[0, 0, 0, 0], [2, 6, 255, 255]],
    "abs": [[100, 64, 2, 0], [2, 6, 255, 255]],
    "minmax": [[0, 18, 49, 50], [51, 53, 200, 255]],  # (x + 100) / 510 * 255
    "offset": [[28, 64, 126, 128], [130, 134, 255, 255]],  # x + 128
    "auto": [[0, 0, 0, 0], [2, 6, 255, 255]],  # not flagged signed: clip
}


@pytest.mark.parametrize("mode", list(EXPECTED_8BIT))
def test_each_mode_by_hand(mode):
    pixels = mapping.to_integers(mapping.map_values(RAW, mode, 255.0), 8)
    assert pixels.dtype == np.uint8
    assert pixels[0].tolist() == EXPECTED_8BIT[mode]


def test_offset_with_scale_and_offset():
    values = mapping.map_values(RAW, "offset", 255.0, scale=0.5, offset=100)
    assert mapping.to_integers(values, 8)[0].tolist() == [[50, 68, 99, 100], [101, 103, 250, 255]]


def test_auto_offsets_only_signed_maps():
    maps = np.stack([RAW[0], RAW[0]])
    out = mapping.to_integers(mapping.map_values(maps, "auto", 255.0, signed=[True, False]), 8)
    assert out[0].tolist() == EXPECTED_8BIT["offset"]
    assert out[1].tolist() == EXPECTED_8BIT["clip"]
    with pytest.raises(ParameterError, match="signed flags"):
        mapping.map_values(maps, "auto", 255.0, signed=[True])


def test_sixteen_bit_mid_level_and_no_wrap():
    values = mapping.map_values(np.array([[[-70000.0, -1.0, 0.0, 70000.0]]]), "offset", 65535.0)
    assert mapping.to_integers(values, 16).tolist() == [[[0, 32767, 32768, 65535]]]
    assert mapping.to_integers(np.array([-1.0, 65535.4, 70000.0]), 16).tolist() == [0, 65535, 65535]


def test_nothing_wraps_in_8_bit():
    # SciPy's ndimage turns uint8 -63 into 193; convcli clips.
    assert mapping.to_integers(
        np.array([-63.0, -1.0, 255.6, 256.0, 1e9, -np.inf, np.inf]), 8
    ).tolist() == [0, 0, 255, 255, 255, 0, 255]


def test_rounding_is_half_to_even():
    assert mapping.to_integers(np.array([0.5, 1.5, 2.5, 3.5, 127.5, 128.5]), 8).tolist() == [
        0,
        2,
        2,
        4,
        128,
        128,
    ]


def test_minmax_per_map_joint_and_constant():
    maps = np.array([[[0.0, 10.0]], [[0.0, 20.0]], [[7.0, 7.0]]])
    per_map = mapping.map_values(maps, "minmax", 255.0)
    assert per_map[:, 0].tolist() == [[0, 255], [0, 255], [0, 0]]  # a constant map becomes 0
    joint = mapping.map_values(maps, "minmax", 255.0, joint=True)
    assert joint[:, 0].tolist() == [[0, 127.5], [0, 255], [89.25, 89.25]]


def test_minmax_ignores_nan_and_inf():
    maps = np.array([[[np.nan, 0.0, 4.0, np.inf]]])
    out = mapping.map_values(maps, "minmax", 255.0)
    assert out[0, 0, 1:3].tolist() == [0.0, 255.0] and out[0, 0, 3] == 255.0
    assert mapping.to_integers(out, 8)[0, 0, 0] == 0


def test_symmetric_minmax_keeps_zero_in_the_middle():
    out = mapping.map_values(np.array([[[-10.0, 0.0, 5.0]]]), "minmax", 1.0, symmetric=True)
    assert out[0, 0].tolist() == [0.0, 0.5, 0.75]
    assert mapping.map_values(np.zeros((1, 1, 2)), "minmax", 1.0, symmetric=True)[
        0, 0
    ].tolist() == [0.5, 0.5]


def test_none_keeps_values_and_float_white():
    out = mapping.map_values(RAW, "none", 1.0)
    assert np.array_equal(out, RAW)
    np.testing.assert_allclose(
        mapping.map_values(RAW / 100, "clip", 1.0)[0, 1], [0.02, 0.06, 1, 1], rtol=1e-6
    )


def test_unknown_mode():
    with pytest.raises(ParameterError, match="map mode 'wrap'"):
        mapping.map_values(RAW, "wrap", 255.0)


def test_mid_levels():
    assert (mapping.mid_level(255.0), mapping.mid_level(65535.0), mapping.mid_level(1.0)) == (
        128.0,
        32768.0,
        0.5,
    )


def test_signed_maps_for_kernel_shapes():
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
    bank = np.stack([sobel, laplacian, np.full((3, 3), 1 / 9, np.float32)])[:, None]
    assert mapping.signed_maps(bank).tolist() == [True, True, False]
    assert mapping.signed_maps(bank, shift=[0, 1, 0]).tolist() == [True, False, False]
    # A 3-input kernel summing to 0 only over all inputs is signed.
    mixed = np.stack([np.ones((3, 3)), -np.ones((3, 3)), np.zeros((3, 3))])[None]
    assert mapping.signed_maps(mixed).tolist() == [True]
    # float rounding in weights is tolerated
    assert mapping.signed_maps((sobel + 1e-9)[None, None]).tolist() == [True]


def test_signed_maps_transposed_layout():
    weight = np.ones((4, 3, 2, 2))  # (C_in, C_out/groups, kh, kw), groups=2 -> 6 output maps
    weight[0, 1] = -1  # group 0, output 1: inputs 0 (-1) and 1 (+1) cancel
    assert mapping.signed_maps(weight, 2, transposed=True).tolist() == [
        False,
        True,
        False,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize(
    "name, first, last",
    [
        ("gray", (0, 0, 0), (255, 255, 255)),
        ("viridis", (68, 1, 84), (253, 231, 37)),
        ("magma", (0, 0, 4), (252, 253, 191)),
        ("coolwarm", (59, 76, 192), (180, 4, 38)),
    ],
)
def test_colormap_endpoints(name, first, last):
    coloured = mapping.apply_colormap(np.array([[0.0, 255.0]]), 255.0, name)
    assert coloured.shape == (3, 1, 2)
    assert mapping.to_integers(coloured[:, 0, 0], 8).tolist() == list(first)
    assert mapping.to_integers(coloured[:, 0, 1], 8).tolist() == list(last)


def test_colormap_tables():
    for name in mapping.COLORMAPS:
        table = mapping.colormap_table(name)
        assert table.shape == (256, 3) and table.min() >= 0 and table.max() <= 1
        assert not table.flags.writeable
    # matplotlib's viridis at 128 is (0.127568, 0.566949, 0.550556)
    assert np.rint(mapping.colormap_table("viridis")[128] * 255).tolist() == [33, 145, 140]
    centre = mapping.colormap_table("coolwarm")[127:129].mean(axis=0)
    assert np.allclose(centre, 0.8654, atol=0.005)  # Moreland's grey midpoint
    with pytest.raises(ParameterError, match="jet"):
        mapping.colormap_table("jet")


def test_colormap_interpolates_and_handles_nan():
    coloured = mapping.apply_colormap(np.array([[127.5, np.nan]]), 255.0, "gray")
    assert coloured[:, 0, 0].tolist() == [127.5] * 3
    assert coloured[:, 0, 1].tolist() == [0.0] * 3
