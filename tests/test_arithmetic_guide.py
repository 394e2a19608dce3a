"""Dumoulin & Visin, *A guide to convolution arithmetic for deep learning* (2016): relationships
1-15 and the worked example of each, as tests of ``convcli explain`` (the output shape and the
size formula filled in) and of ``--by-hand`` (the numbers against PyTorch on a random matrix of
the example's size). The table of docs/explain.md ("The convolution arithmetic guide") is
checked against the list below, so every command it shows is run here.

The paper states the transposed relationships (8-14) through the convolution they transpose,
(i, k, s, p), and the equivalent direct convolution of the transposed input i' (the output of
that convolution): the input stretched by s - 1 zeros, padded by p' = k - p - 1 (and a more at
the bottom/right), stride 1, o' = s(i' - 1) + a + k - 2p. In PyTorch's terms that is
``conv_transpose2d(stride=s, padding=p, output_padding=a)`` on the i' x i' input.
"""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import run

from convcli import explain

GUIDE_PAGE = Path(__file__).resolve().parents[1] / "docs" / "explain.md"


@dataclass(frozen=True)
class Relationship:
    number: int
    covers: str
    formula: str  # the paper's, as docs/explain.md writes it
    size: int  # the example's input: i, or i' for the transposed relationships
    kernel: int
    stride: int
    padding: int
    output: int  # the example's output size in the paper
    step: str  # the step that reproduces it
    arithmetic: str  # convcli's size formula for it, filled in by hand
    dilation: int = 1
    output_padding: int = 0

    def paper(self) -> int:
        """The paper's formula evaluated on the example (i, k, s, p, d; transposed: i', a)."""
        i, k, s, p, d, a = (
            self.size,
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
            self.output_padding,
        )
        formulas = {
            1: lambda: (i - k) + 1,
            2: lambda: (i - k) + 2 * p + 1,
            3: lambda: i,  # k = 2n + 1, p = n
            4: lambda: i + (k - 1),  # p = k - 1
            5: lambda: (i - k) // s + 1,
            6: lambda: (i + 2 * p - k) // s + 1,
            7: lambda: (i - k) // s + 1,
            8: lambda: i + (k - 1),
            9: lambda: i + (k - 1) - 2 * p,
            10: lambda: i,
            11: lambda: i - (k - 1),
            12: lambda: s * (i - 1) + k,
            13: lambda: s * (i - 1) + k - 2 * p,
            14: lambda: s * (i - 1) + a + k - 2 * p,
            15: lambda: (i + 2 * p - k - (k - 1) * (d - 1)) // s + 1,
        }
        return formulas[self.number]()

    @property
    def kind(self) -> str:
        return self.step.split()[0]

    @property
    def command(self) -> str:
        return f'convcli explain --input {self.size}x{self.size} "{self.step}"'


GUIDE = [
    Relationship(
        1,
        "no zero padding, unit strides",
        "o = (i - k) + 1",
        4,
        3,
        1,
        0,
        2,
        "conv 1 k3 valid",
        "floor((4 + 0 + 0 - 3) / 1) + 1 = 2",
    ),
    Relationship(
        2,
        "zero padding, unit strides",
        "o = (i - k) + 2p + 1",
        5,
        4,
        1,
        2,
        6,
        "conv 1 k4 p2",
        "floor((5 + 2 + 2 - 4) / 1) + 1 = 6",
    ),
    Relationship(
        3,
        "half (same) padding: k = 2n + 1, p = n",
        "o = i",
        5,
        3,
        1,
        1,
        5,
        "conv 1 k3 p1",
        "floor((5 + 1 + 1 - 3) / 1) + 1 = 5",
    ),
    Relationship(
        4,
        "full padding: p = k - 1",
        "o = i + (k - 1)",
        5,
        3,
        1,
        2,
        7,
        "conv 1 k3 p2",
        "floor((5 + 2 + 2 - 3) / 1) + 1 = 7",
    ),
    Relationship(
        5,
        "no zero padding, non-unit strides",
        "o = floor((i - k) / s) + 1",
        5,
        3,
        2,
        0,
        2,
        "conv 1 k3 s2 valid",
        "floor((5 + 0 + 0 - 3) / 2) + 1 = 2",
    ),
    Relationship(
        6,
        "zero padding, non-unit strides",
        "o = floor((i + 2p - k) / s) + 1",
        5,
        3,
        2,
        1,
        3,
        "conv 1 k3 s2 p1",
        "floor((5 + 1 + 1 - 3) / 2) + 1 = 3",
    ),
    Relationship(
        7,
        "pooling (no padding)",
        "o = floor((i - k) / s) + 1",
        5,
        3,
        1,
        0,
        3,
        "maxpool k3 s1",
        "floor((5 + 0 + 0 - 3) / 1) + 1 = 3",
    ),
    Relationship(
        8,
        "transposed of 1 (i = 4, k = 3): p' = k - 1",
        "o' = i' + (k - 1)",
        2,
        3,
        1,
        0,
        4,
        "transposed 1 k3 valid",
        "(2 - 1)*1 - 2*0 + 1*(3 - 1) + 0 + 1 = 4",
    ),
    Relationship(
        9,
        "transposed of 2 (i = 5, k = 4, p = 2): p' = k - p - 1",
        "o' = i' + (k - 1) - 2p",
        6,
        4,
        1,
        2,
        5,
        "transposed 1 k4 p2",
        "(6 - 1)*1 - 2*2 + 1*(4 - 1) + 0 + 1 = 5",
    ),
    Relationship(
        10,
        "transposed of 3 (half padding): p' = p",
        "o' = i'",
        5,
        3,
        1,
        1,
        5,
        "transposed 1 k3 p1",
        "(5 - 1)*1 - 2*1 + 1*(3 - 1) + 0 + 1 = 5",
    ),
    Relationship(
        11,
        "transposed of 4 (full padding): p' = 0",
        "o' = i' - (k - 1)",
        7,
        3,
        1,
        2,
        5,
        "transposed 1 k3 p2",
        "(7 - 1)*1 - 2*2 + 1*(3 - 1) + 0 + 1 = 5",
    ),
    Relationship(
        12,
        "transposed of 5 (i - k a multiple of s): s - 1 zeros between inputs, p' = k - 1",
        "o' = s(i' - 1) + k",
        2,
        3,
        2,
        0,
        5,
        "transposed 1 k3 s2 valid",
        "(2 - 1)*2 - 2*0 + 1*(3 - 1) + 0 + 1 = 5",
    ),
    Relationship(
        13,
        "transposed of 6 (i + 2p - k a multiple of s): p' = k - p - 1",
        "o' = s(i' - 1) + k - 2p",
        3,
        3,
        2,
        1,
        5,
        "transposed 1 k3 s2 p1",
        "(3 - 1)*2 - 2*1 + 1*(3 - 1) + 0 + 1 = 5",
    ),
    Relationship(
        14,
        "transposed, any i (i = 6, k = 3, s = 2, p = 1): a = (i + 2p - k) mod s, the output "
        "padding",
        "o' = s(i' - 1) + a + k - 2p",
        3,
        3,
        2,
        1,
        6,
        "transposed 1 k3 s2 p1 op1",
        "(3 - 1)*2 - 2*1 + 1*(3 - 1) + 1 + 1 = 6",
        output_padding=1,
    ),
    Relationship(
        15,
        "dilation d (effective kernel k + (k - 1)(d - 1))",
        "o = floor((i + 2p - k - (k - 1)(d - 1)) / s) + 1",
        7,
        3,
        1,
        0,
        3,
        "conv 1 k3 d2 valid",
        "floor((7 + 0 + 0 - 2*(3 - 1) - 1) / 1) + 1 = 3",
        dilation=2,
    ),
]
NUMBERS = [relationship.number for relationship in GUIDE]


def test_the_guide_is_whole():
    assert NUMBERS == list(range(1, 16))


@pytest.mark.parametrize("relationship", GUIDE, ids=NUMBERS)
def test_the_paper_formula_gives_its_example(relationship):
    assert relationship.paper() == relationship.output


@pytest.mark.parametrize("relationship", GUIDE, ids=NUMBERS)
def test_explain_traces_the_example(relationship):
    row = explain.trace(
        (relationship.size, relationship.size, 1), [explain.parse_step(relationship.step)]
    ).rows[0]
    assert row.output[:2] == (relationship.output, relationship.output)
    assert row.arithmetic == (relationship.arithmetic,)


@pytest.mark.parametrize("relationship", GUIDE, ids=NUMBERS)
def test_the_readme_command_prints_the_shape_and_the_formula(relationship):
    args = shlex.split(relationship.command)[2:]
    result = run("explain", *args)
    assert result.exit_code == 0, result.output
    step = result.stdout.splitlines()[2].split("\t")
    assert step[1:4] == [
        relationship.step,
        f"{relationship.output}x{relationship.output}x1",
        relationship.arithmetic,
    ]


def test_the_docs_table_lists_every_relationship():
    text = GUIDE_PAGE.read_text(encoding="utf-8")
    section = text[text.index("## The convolution arithmetic guide") :]
    section = section[: section.index("\n#", 1)] if "\n#" in section[1:] else section
    rows = [line.split(" | ") for line in section.splitlines() if re.match(r"\| [0-9]+ \|", line)]
    table = [
        (int(row[0].strip("| ")), row[1], row[2].strip("`"), row[3].strip("`"), row[4].strip(" |"))
        for row in rows
    ]
    assert table == [(r.number, r.covers, r.formula, r.command, str(r.output)) for r in GUIDE]


def _torch_reference(relationship, x, w):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    x, w = torch.tensor(x)[None, None], torch.tensor(w)[None, None]
    s, p, d = relationship.stride, relationship.padding, relationship.dilation
    if relationship.kind == "maxpool":
        return functional.max_pool2d(x, relationship.kernel, s, p)[0, 0].numpy()
    if relationship.kind == "transposed":
        return functional.conv_transpose2d(
            x, w, stride=s, padding=p, output_padding=relationship.output_padding, dilation=d
        )[0, 0].numpy()
    return functional.conv2d(x, w, stride=s, padding=p, dilation=d)[0, 0].numpy()


def _last_grid(text: str, size: int) -> np.ndarray:
    """The numbers of the last ``output (NxN):`` grid of a by-hand text."""
    lines = text[text.rindex(f"output ({size}x{size}):") :].splitlines()[1 : size + 1]
    return np.array([[float(v) for v in line.split()] for line in lines])


@pytest.mark.parametrize("relationship", GUIDE, ids=NUMBERS)
def test_by_hand_numbers_equal_torch(relationship, tmp_path):
    rng = np.random.default_rng(relationship.number)
    i, k = relationship.size, relationship.kernel
    x = rng.integers(-5, 6, (i, i)).astype(np.float64)
    w = rng.integers(-3, 4, (k, k)).astype(np.float64)
    np.save(tmp_path / "m.npy", x)
    np.save(tmp_path / "k.npy", w)
    args = [
        "--by-hand",
        "--matrix",
        tmp_path / "m.npy",
        "--stride",
        relationship.stride,
        "--padding",
        relationship.padding,
        "--cell",
        "0,0",
    ]
    if relationship.kind == "maxpool":
        args += ["--pool", "max", "--size", k]
    else:
        args += ["-k", tmp_path / "k.npy", "--dilation", relationship.dilation]
    if relationship.kind == "transposed":
        args += ["--transpose", "--output-padding", relationship.output_padding]
    result = run("explain", *args)
    assert result.exit_code == 0, result.output
    assert f"output size: {relationship.arithmetic}\n" in result.stdout
    got = _last_grid(result.stdout, relationship.output)
    np.testing.assert_array_equal(got, _torch_reference(relationship, x, w))


@pytest.mark.parametrize(
    "relationship", [r for r in GUIDE if r.kind == "transposed"], ids=lambda r: str(r.number)
)
def test_transposed_equals_the_papers_direct_convolution(relationship):
    # the stretched input i~' = s(i' - 1) + 1, padded by p' = k - p - 1 (plus a at the
    # bottom/right), convolved at stride 1 with the kernel rotated: the by-hand view (b)
    i, k, s, p, a = (
        relationship.size,
        relationship.kernel,
        relationship.stride,
        relationship.padding,
        relationship.output_padding,
    )
    rng = np.random.default_rng(relationship.number)
    x, w = rng.integers(-5, 6, (i, i)).tolist(), rng.integers(-3, 4, (k, k)).tolist()
    up = explain.by_hand_transposed(x, w, stride=(s, s), padding=(p,) * 4, output_padding=(a, a))
    direct = up.direct()
    assert len(direct.image) == s * (i - 1) + 1
    assert direct.pads == (k - p - 1, k - p - 1 + a, k - p - 1, k - p - 1 + a)
    assert direct.output() == up.output()
    text = explain.render_transposed(up, [(0, 0)])
    assert f"padded by d*(k - 1) - p: 1*({k} - 1) - {p} = {k - p - 1}" in text
