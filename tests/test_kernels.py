"""The kernel library: every built-in, parameters, file formats, origins, user folders, facts."""

import textwrap

import numpy as np
import pytest
from PIL import Image, ImageFilter

from convcli import engine
from convcli.errors import KernelError
from convcli.kernels.catalogue import catalogue
from convcli.kernels.facts import kernel_facts
from convcli.kernels.formats import centre_origin
from convcli.kernels.library import inline_kernel, resolve_kernel
from convcli.kernels.search import ENV_VAR, library_dir

# Every built-in at its default parameters: (shape, sum of weights / scale).
BUILTINS = {
    "box": ((3, 3), 1),
    "compass": ((3, 3), 0),
    "dog": ((11, 11), 0),
    "emboss": ((3, 3), 0),
    "gaussian": ((7, 7), 1),
    "identity": ((3, 3), 1),
    "kirsch": ((3, 3), 0),
    "laplacian": ((3, 3), 0),
    "log": ((9, 9), 0),
    "motion_blur": ((1, 9), 1),
    "outline": ((3, 3), 0),
    "prewitt": ((3, 3), 0),
    "rgb_sobel": ((2, 3, 3, 3), 0),
    "scharr": ((3, 3), 0),
    "sharpen": ((3, 3), 1),
    "sobel": ((3, 3), 0),
    "sobel_x": ((3, 3), 0),
    "sobel_y": ((3, 3), 0),
    "unsharp": ((7, 7), 1),
    "vertical_edge": ((3, 3), 0),
}
DIRECTIONS = {
    "e": (1, 0),
    "ne": (1, 1),
    "n": (0, 1),
    "nw": (-1, 1),  # (right, up)
    "w": (-1, 0),
    "sw": (-1, -1),
    "s": (0, -1),
    "se": (1, -1),
}


def correlate(image, spec, **options):
    """``spec`` applied to a 2-D image as ``convcli conv`` does (scale, then offset)."""
    kernel = resolve_kernel(spec)
    maps = engine.conv2d(
        np.asarray(image, np.float32)[None], kernel.weights / kernel.scale, **options
    )
    return maps[0] + kernel.offset


def step(direction, size=7):
    """0, and 1 on the side of a straight edge through the centre that ``direction`` points to.

    Cells on the edge line are 0.5, so a diagonal edge is not mistaken for a horizontal one.
    """
    right, up = DIRECTIONS[direction]
    rows, cols = np.mgrid[:size, :size] - size // 2
    return np.clip(cols * right - rows * up + 0.5, 0, 1).astype(np.float32)


def impulse(size=9):
    image = np.zeros((size, size), np.float32)
    image[size // 2, size // 2] = 1
    return image


def test_library_holds_exactly_the_documented_kernels():
    assert sorted(p.stem for p in library_dir().glob("*")) == sorted(BUILTINS)


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads_with_documented_shape_and_sum(name):
    kernel = resolve_kernel(name)
    shape, total = BUILTINS[name]
    assert (
        kernel.name == name and kernel.weights.shape == shape and kernel.weights.dtype == np.float32
    )
    assert kernel.weights.sum() / kernel.scale == pytest.approx(total, abs=1e-6)
    assert kernel.description and kernel.source and kernel.location.startswith("built-in ")


@pytest.mark.parametrize("name", ["sobel", "prewitt", "scharr", "laplacian", "kirsch", "compass"])
def test_every_choice_is_a_3x3_zero_sum_kernel(name):
    (choice,) = resolve_kernel(name).declared
    for value in choice.choices:
        weights = resolve_kernel(f"{name}:{choice.name}={value}").weights
        assert weights.shape == (3, 3) and weights.sum() == 0


def test_identity_returns_the_image():
    image = np.random.default_rng(0).random((6, 5))
    np.testing.assert_allclose(correlate(image, "identity"), image, atol=1e-6)


@pytest.mark.parametrize(
    "spec",
    [
        "box:size=4",
        "gaussian:sigma=1.5",
        "sharpen",
        "unsharp:amount=2",
        "motion_blur:length=5,angle=30",
    ],
)
def test_kernels_summing_to_one_keep_flat_areas(spec):
    out = correlate(np.full((21, 21), 7.0), spec, padding="valid")
    np.testing.assert_allclose(out, 7.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["sobel", "prewitt", "scharr"])
def test_derivatives_are_positive_where_brightness_increases(name):
    assert correlate(step("e"), f"{name}:dir=x", padding="valid")[2, 2] > 0
    assert correlate(step("w"), f"{name}:dir=x", padding="valid")[2, 2] < 0
    assert correlate(step("s"), f"{name}:dir=y", padding="valid")[2, 2] > 0
    assert correlate(step("s"), f"{name}:dir=x", padding="valid")[2, 2] == 0
    assert correlate(step("e"), f"{name}:dir=y", padding="valid")[2, 2] == 0


def test_sobel_aliases_and_the_seed_kernel():
    assert np.array_equal(resolve_kernel("sobel_x").weights, resolve_kernel("sobel:dir=x").weights)
    assert np.array_equal(resolve_kernel("sobel_y").weights, resolve_kernel("sobel:dir=y").weights)
    assert correlate(step("e"), "sobel_x", padding="valid")[2, 2] == 4
    assert correlate(step("e"), "vertical_edge", padding="valid")[2, 2] == -3  # the seeds' sign


@pytest.mark.parametrize("name", ["kirsch", "compass"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_compass_kernel_for_a_direction_responds_most_to_that_edge(name, direction):
    image = step(direction)
    responses = {d: correlate(image, f"{name}:dir={d}", padding="valid")[2, 2] for d in DIRECTIONS}
    assert responses[direction] > 0
    assert max(responses, key=responses.get) == direction


@pytest.mark.parametrize("neighbours", [4, 8])
def test_laplacian_is_zero_on_ramps_and_negative_on_a_bright_dot(neighbours):
    ramp = np.add.outer(np.arange(7.0), 2 * np.arange(7.0))
    assert (
        np.abs(correlate(ramp, f"laplacian:neighbours={neighbours}", padding="valid")).max() < 1e-4
    )
    assert correlate(impulse(), f"laplacian:neighbours={neighbours}")[4, 4] == -neighbours
    outline, laplacian_8 = resolve_kernel("outline"), resolve_kernel("laplacian:neighbours=8")
    assert np.array_equal(outline.weights, -laplacian_8.weights)


def test_log_and_dog_have_opposite_signs_on_a_bright_blob():
    blob = 100 * resolve_kernel("gaussian:sigma=1.4,size=21").weights
    assert correlate(blob, "log")[10, 10] < 0 < correlate(blob, "dog")[10, 10]
    flat = np.full((25, 25), 3.0)
    for spec in ("log", "dog"):
        assert np.abs(correlate(flat, spec, padding="valid")).max() < 1e-5


def test_log_is_radially_symmetric_with_its_minimum_at_the_centre():
    weights = resolve_kernel("log:sigma=1").weights
    assert weights.shape == (7, 7) and weights[3, 3] == weights.min()
    np.testing.assert_allclose(weights, weights.T)
    np.testing.assert_allclose(weights, weights[::-1])


def test_correlating_an_impulse_returns_the_kernel_rotated():
    for spec in ("gaussian:sigma=0.8", "motion_blur:length=5,angle=30", "kirsch:dir=ne", "emboss"):
        kernel = resolve_kernel(spec)
        k = kernel.weights.shape[0] // 2, kernel.weights.shape[1] // 2
        out = correlate(impulse(), spec) - kernel.offset
        window = out[4 - k[0] : 5 + k[0], 4 - k[1] : 5 + k[1]]
        np.testing.assert_allclose(window, kernel.weights[::-1, ::-1], atol=1e-7)


def test_unsharp_is_identity_plus_amount_times_detail():
    blur = resolve_kernel("gaussian:sigma=1.5").weights.astype(float)
    sharp = resolve_kernel("unsharp:sigma=1.5,amount=0.5").weights
    assert blur.shape == (11, 11)  # 2 * int(3 * 1.5 + 0.5) + 1
    identity = np.zeros_like(blur)
    identity[5, 5] = 1
    np.testing.assert_allclose(sharp, identity + 0.5 * (identity - blur), atol=1e-7)


def test_motion_blur_lines():
    np.testing.assert_allclose(resolve_kernel("motion_blur:length=5").weights, [[0.2] * 5])
    assert resolve_kernel("motion_blur:length=5,angle=90").weights.shape == (5, 1)
    diagonal = resolve_kernel("motion_blur:length=5,angle=45").weights
    assert (
        diagonal.shape == (5, 5) and diagonal[0, 4] > 0 == diagonal[0, 0]
    )  # lower left to upper right
    np.testing.assert_allclose(diagonal, diagonal[::-1, ::-1].T, atol=1e-7)


def test_rgb_sobel_takes_the_sobel_of_the_channel_mean():
    rng = np.random.default_rng(3)
    rgb = rng.random((3, 8, 9)).astype(np.float32)
    kernel = resolve_kernel("rgb_sobel")
    maps = engine.conv2d(rgb, kernel.weights / kernel.scale)
    mean = rgb.mean(axis=0)
    np.testing.assert_allclose(maps[0], correlate(mean, "sobel:dir=x"), atol=1e-5)
    np.testing.assert_allclose(maps[1], correlate(mean, "sobel:dir=y"), atol=1e-5)


@pytest.mark.parametrize(
    "spec, pillow", [("emboss", ImageFilter.EMBOSS), ("outline", ImageFilter.FIND_EDGES)]
)
def test_pillow_filters_match_on_the_interior(spec, pillow):
    pixels = np.random.default_rng(5).integers(0, 256, (12, 14), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(pixels).filter(pillow))[1:-1, 1:-1]
    ours = np.clip(np.rint(correlate(pixels, spec, padding="valid")), 0, 255)
    assert np.array_equal(ours, expected)


GAUSSIAN_SIZES = [(0.5, 3), (0.5, 5), (1.0, 7), (1.4, 9), (2.0, 13), (2.0, 5)]


@pytest.mark.parametrize("sigma, size", GAUSSIAN_SIZES)
def test_gaussian_equals_opencv_outer_product(sigma, size):
    cv2 = pytest.importorskip("cv2")
    line = cv2.getGaussianKernel(size, sigma, ktype=cv2.CV_64F)[:, 0]
    np.testing.assert_allclose(
        resolve_kernel(f"gaussian:sigma={sigma},size={size}").weights,
        np.outer(line, line),
        atol=1e-7,
    )


@pytest.mark.parametrize("sigma", [0.3, 0.5, 0.8, 1.0, 1.4, 2.0, 3.3])
def test_default_gaussian_equals_scipy_truncate_3(sigma):
    ndimage = pytest.importorskip("scipy.ndimage")
    weights = resolve_kernel(f"gaussian:sigma={sigma}").weights
    response = ndimage.gaussian_filter(
        impulse(41).astype(float), sigma, truncate=3.0, mode="constant"
    )
    radius = weights.shape[0] // 2
    assert not response[: 20 - radius].any() and response[20 - radius].any()
    window = slice(20 - radius, 21 + radius)
    np.testing.assert_allclose(response[window, window], weights, atol=1e-7)


def test_derivatives_equal_opencv_and_scipy_on_the_interior():
    cv2 = pytest.importorskip("cv2")
    ndimage = pytest.importorskip("scipy.ndimage")
    image = np.random.default_rng(7).random((10, 12)).astype(np.float32)
    inner = (slice(1, -1), slice(1, -1))
    pairs = [
        ("sobel:dir=x", cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)),
        ("sobel:dir=y", cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)),
        ("scharr:dir=x", cv2.Scharr(image, cv2.CV_32F, 1, 0)),
        ("scharr:dir=y", cv2.Scharr(image, cv2.CV_32F, 0, 1)),
        ("prewitt:dir=x", ndimage.prewitt(image, axis=1)),
        ("prewitt:dir=y", ndimage.prewitt(image, axis=0)),
        ("laplacian", ndimage.laplace(image)),
    ]
    for spec, expected in pairs:
        np.testing.assert_allclose(
            correlate(image, spec)[inner], expected[inner], atol=1e-5, err_msg=spec
        )


def test_parameters():
    assert resolve_kernel("gaussian:sigma=2").weights.shape == (13, 13)
    assert resolve_kernel("gaussian: sigma = 2 , size = 5").weights.shape == (5, 5)
    assert resolve_kernel("box:size=4").weights.shape == (4, 4)
    kernel = resolve_kernel("dog:sigma1=2,sigma2=1")
    assert kernel.parameters == {"sigma1": 2.0, "sigma2": 1.0, "size": None}
    assert kernel.weights.shape == (13, 13)
    assert [p.name for p in resolve_kernel("sobel_y").declared] == []  # the alias fixes dir


def write(path, text):
    path.write_text(textwrap.dedent(text).lstrip())
    return str(path)


def grid_text(weights):
    return "\n".join(" ".join(repr(float(v)) for v in row) for row in weights)


@pytest.mark.parametrize(
    "spec",
    [
        "sobel",
        "gaussian:sigma=0.7",
        "kirsch:dir=ne",
        "unsharp",
        "motion_blur:length=4,angle=30",
        "box:size=2",
    ],
)
def test_every_file_format_round_trips_to_the_same_weights(spec, tmp_path):
    weights = resolve_kernel(spec).weights
    height, width = weights.shape
    np.save(tmp_path / "k.npy", weights)
    yaml_grid = textwrap.indent(grid_text(weights), "  ")
    (tmp_path / "k.yaml").write_text(f"name: k\nweights: |\n{yaml_grid}\n")
    (tmp_path / "k.mat").write_text(f"{width} {height}\n{grid_text(weights)}\n")
    inline = f"{width}x{height}: " + ",".join(repr(float(v)) for v in weights.ravel())
    for other in (tmp_path / "k.npy", tmp_path / "k.yaml", tmp_path / "k.mat", inline):
        found = resolve_kernel(str(other))
        assert np.array_equal(found.weights, weights), other
        assert (found.scale, found.offset) == (1.0, 0.0)


@pytest.mark.parametrize(
    "layout, shape",
    [
        ("[c_in, kh, kw]", (3, 2, 3)),
        ("[c_out, kh, kw]", (3, 1, 2, 3)),
        ("[c_out, c_in, kh, kw]", (2, 3, 2, 3)),
    ],
)
def test_multichannel_yaml_round_trips_with_its_layout(layout, shape, tmp_path):
    weights = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) - 7
    nested = weights.reshape(-1, *shape[-2:]) if len(shape) == 3 or shape[1] == 1 else weights

    def to_yaml(value, depth):
        if value.ndim == 2:
            return "|\n" + textwrap.indent(grid_text(value), "  " * (depth + 1))
        return "".join(f"\n{'  ' * depth}- " + to_yaml(v, depth + 1) for v in value)

    write(tmp_path / "bank.yaml", f"layout: {layout}\nweights:{to_yaml(nested, 1)}\n")
    np.save(tmp_path / "bank.npy", weights)
    assert np.array_equal(resolve_kernel(str(tmp_path / "bank.yaml")).weights, weights)
    assert np.array_equal(resolve_kernel(str(tmp_path / "bank.npy")).weights, weights)


def test_mat_header_scale_offset_and_separators(tmp_path):
    path = write(
        tmp_path / "edge.mat",
        """
        3 3 8 128
        -1,-1,-1
        -1\t8\t-1
        "-1" -1 -1
    """,
    )
    kernel = resolve_kernel(path)
    assert (kernel.scale, kernel.offset, float(kernel.weights.sum())) == (8.0, 128.0, 0.0)
    assert kernel.weights[1].tolist() == [-1, 8, -1]
    kernel = resolve_kernel(write(tmp_path / "plain.mat", "2 1\n1 2\n"))
    assert (kernel.scale, kernel.offset, kernel.weights.tolist()) == (1.0, 0.0, [[1.0, 2.0]])


def test_yaml_scale_and_offset(tmp_path):
    kernel = resolve_kernel(
        write(tmp_path / "k.yaml", "weights: |\n  1 2 1\nscale: sum\noffset: 5\n")
    )
    assert (kernel.scale, kernel.offset) == (4.0, 5.0)
    zero_sum = resolve_kernel(write(tmp_path / "z.yaml", "weights: |\n  -1 0 1\nscale: sum\n"))
    assert zero_sum.scale == 1.0  # a zero-sum kernel is never divided by its ~0 sum
    assert resolve_kernel(write(tmp_path / "s.yaml", "weights: '2'\nscale: 16\n")).scale == 16.0


def test_inline_kernels_imagemagick_syntax():
    sharpen = inline_kernel("3: 0,-1,0 -1,5,-1 0,-1,0").weights
    assert np.array_equal(sharpen, resolve_kernel("sharpen").weights)
    assert inline_kernel("3x1: 1, 2 ,3").weights.tolist() == [[1, 2, 3]]
    assert inline_kernel("3x2: 1 - 3 nan 5 6").weights.tolist() == [[1, 0, 3], [0, 5, 6]]
    assert inline_kernel("3x1+1+0: 1 2 3").weights.tolist() == [[1, 2, 3]]  # the centre: unchanged
    assert inline_kernel("2x2+0+0: 1 2 3 4").weights.shape == (
        2,
        2,
    )  # (k-1)//2 is convcli's centre too
    assert inline_kernel("3x1+2+0: 1 2 3").weights.tolist() == [[1, 2, 3, 0, 0]]


ORIGINS = [
    ("3x1+0+0: 1 2 3", (0, 0)),
    ("3x1+2+0: 1 2 3", (0, 2)),
    ("2x2+1+1: 1 2 3 4", (1, 1)),
    ("4x3+0+2: 1 2 3 4 5 6 7 8 9 10 11 12", (2, 0)),
]


@pytest.mark.parametrize("text, origin", ORIGINS)
def test_a_non_centre_origin_gives_imagemagicks_result(text, origin):
    """ImageMagick: out[r, c] = sum k[i, j] * x[r + i - origin_row, c + j - origin_col]."""
    kernel = inline_kernel(text)
    width, height = (int(v) for v in text.split("+")[0].split("x"))
    k = np.array([float(v) for v in text.split(":")[1].split()]).reshape(height, width)
    x = np.random.default_rng(2).random((6, 7))
    padded = np.pad(x, 5)
    expected = np.zeros_like(x)
    for r, c in np.ndindex(x.shape):
        for i, j in np.ndindex(k.shape):
            expected[r, c] += k[i, j] * padded[5 + r + i - origin[0], 5 + c + j - origin[1]]
    ours = engine.conv2d(x[None].astype(np.float32), kernel.weights)[0]
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_centre_origin_pads_minimally():
    ones = np.ones((1, 4))
    assert centre_origin(ones, (0, 1)).shape == (1, 4)
    assert centre_origin(ones, (0, 2)).tolist() == [[1, 1, 1, 1, 0]]
    assert centre_origin(ones, (0, 0)).tolist() == [[0, 0, 1, 1, 1, 1]]


def test_user_folders_search_order_and_locations(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, value in ((first, 1), (second, 2)):
        folder.mkdir()
        write(folder / "sobel.yaml", f"name: sobel\nweights: '{value}'\n")
    np.save(second / "bank.npy", np.ones((2, 3), np.float32))
    write(second / "edge.mat", "2 1 2 0\n1 -1\n")
    monkeypatch.setenv(ENV_VAR, f"{tmp_path / 'missing'}:{second}")
    assert resolve_kernel("sobel").weights.tolist() == [[2]]
    assert resolve_kernel("sobel").location.startswith(f"{ENV_VAR} {second}")
    found = resolve_kernel("sobel", [str(first)])
    assert found.weights.tolist() == [[1]]
    assert found.location == (
        f"--kernel-path {first / 'sobel.yaml'}, overriding {ENV_VAR} {second / 'sobel.yaml'}"
    )
    assert resolve_kernel("bank").weights.shape == (2, 3) and resolve_kernel("edge").scale == 2.0
    assert resolve_kernel("sobel_x").weights.shape == (3, 3)  # a built-in alias stays in its folder
    listed = {e.name: e for e in catalogue([str(first)])}
    assert {"bank", "edge", "sobel", "gaussian"} <= set(listed)
    assert listed["sobel"].location.startswith("--kernel-path")
    assert listed["gaussian"].location.startswith("built-in")
    with pytest.raises(KernelError, match="did you mean 'bank'"):
        resolve_kernel("bnak")
    with pytest.raises(KernelError, match="kernel folder .* does not exist"):
        resolve_kernel("sobel", [str(tmp_path / "nowhere")])


def test_catalogue_reports_a_broken_user_kernel_without_failing(tmp_path):
    write(tmp_path / "broken.yaml", "weights: |\n  1 2\n  3\n")
    entries = {e.name: e for e in catalogue([str(tmp_path)])}
    assert entries["broken"].shape == [] and "same number of values" in entries["broken"].error
    assert entries["gaussian"].shape == [7, 7] and not entries["gaussian"].error


def test_facts():
    sobel = kernel_facts(resolve_kernel("sobel:dir=y").weights)
    assert sobel["zero_sum"] and sobel["separable"] and sobel["factors"] == ([-1, 0, 1], [1, 2, 1])
    gauss = kernel_facts(resolve_kernel("gaussian:sigma=1,size=5").weights)
    assert (
        gauss["separable"]
        and not gauss["zero_sum"]
        and sum(gauss["factors"][0]) == pytest.approx(1)
    )
    assert np.allclose(
        kernel_facts(resolve_kernel("box:size=3").weights)["factors"], 1 / 3, atol=1e-6
    )
    assert not kernel_facts(resolve_kernel("laplacian").weights)["separable"]
    assert not kernel_facts(resolve_kernel("motion_blur:length=5,angle=45").weights)["separable"]
    bank = kernel_facts(resolve_kernel("rgb_sobel").weights)
    assert bank["separable"] and bank["zero_sum"] and bank["factors"] is None
