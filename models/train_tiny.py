"""Train the shipped tiny edge finder: ``models/tiny_edges.safetensors`` and ``.onnx``.

A three-layer CNN, gray in, one map out::

    conv1 1->8 3x3, ReLU, conv2 8->8 3x3, ReLU, conv3 8->1 3x3   (padding 1: same size)

learns the Sobel gradient magnitude ``sqrt(gx^2 + gy^2) / 4`` of the gray image (values in
0..1 for a 0..1 image) from 32x32 patches of ``sample_images/``. The input scale that
convcli reads 8-bit images in, 0..255, is folded into ``conv1.weight`` (divided by 255) before
saving, so the saved layers take pixel values as convcli gives them::

    convcli conv sample_images/camera.png -k models/tiny_edges.safetensors:conv1.weight \\
        --bias models/tiny_edges.safetensors:conv1.bias --split --out-dir maps/

Run by hand from the repository's root (PyTorch, safetensors and onnx needed: the ``ref`` and
``models`` extras); seeded, about a minute on two cores::

    python models/train_tiny.py
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models"
SEED, STEPS, BATCH, PATCH = 0, 3000, 32, 32
# Sobel x as correlated (positive where brightness increases left to right); y is its transpose
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


class TinyEdges(nn.Module):
    """Three 3x3 convolutions, gray in, one edge-strength map out."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x):
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


def gray_images() -> list:
    """The sample images as (1, 1, H, W) gray tensors in 0..1 (luma of RGB, any bit depth)."""
    images = []
    for path in sorted((ROOT / "sample_images").glob("*.png")):
        with Image.open(path) as image:
            pixels = np.asarray(image).astype(np.float64)
            white = 65535.0 if pixels.max() > 255 else 255.0
        if pixels.ndim == 3:  # ITU-R 601 luma, as convcli --gray; alpha dropped
            pixels = pixels[..., :3] @ np.array([0.299, 0.587, 0.114])
        images.append(torch.tensor(pixels / white, dtype=torch.float32)[None, None])
    return images


def sobel_magnitude(gray: torch.Tensor) -> torch.Tensor:
    """``sqrt(gx^2 + gy^2) / 4`` with the edge replicated (no frame at the border)."""
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    kernels = torch.stack([SOBEL_X, SOBEL_X.T])[:, None]
    gradients = F.conv2d(padded, kernels)
    return gradients.pow(2).sum(dim=1, keepdim=True).sqrt() / 4


def patches(images, targets, generator) -> tuple:
    """A batch of random PATCH x PATCH crops of random images, and of their targets."""
    xs, ys = [], []
    for _ in range(BATCH):
        index = int(torch.randint(len(images), (1,), generator=generator))
        _, _, h, w = images[index].shape
        top = int(torch.randint(h - PATCH + 1, (1,), generator=generator))
        left = int(torch.randint(w - PATCH + 1, (1,), generator=generator))
        window = (..., slice(top, top + PATCH), slice(left, left + PATCH))
        xs.append(images[index][window])
        ys.append(targets[index][window])
    return torch.cat(xs), torch.cat(ys)


def train() -> TinyEdges:
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    generator = torch.Generator().manual_seed(SEED)
    images = gray_images()
    targets = [sobel_magnitude(image) for image in images]
    model = TinyEdges()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, STEPS)
    inner = (..., slice(3, -3), slice(3, -3))  # the zero border of the layers is not the target's
    for step in range(STEPS):
        x, y = patches(images, targets, generator)
        loss = F.mse_loss(model(x)[inner], y[inner])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 500 == 0 or step == STEPS - 1:
            print(f"step {step:5d}  mse {loss.item():.6f}")
    return model.eval()


def main() -> None:
    from safetensors.torch import save

    from convcli.io.atomic import atomic_write

    model = train()
    with torch.no_grad():
        model.conv1.weight /= 255.0  # take 0..255 pixel values, as convcli reads 8-bit images
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # one key: safetensors keeps metadata in a hash map, whose order would vary between runs
    metadata = {
        "about": "gray in (0..255), Sobel magnitude / 4 of the 0..1 image out; "
        "trained by models/train_tiny.py"
    }
    onnx_file = io.BytesIO()
    torch.onnx.export(
        model,
        torch.zeros(1, 1, 32, 32),
        onnx_file,
        dynamo=False,
        input_names=["gray"],
        output_names=["edges"],
        dynamic_axes={"gray": {2: "height", 3: "width"}, "edges": {2: "height", 3: "width"}},
    )
    atomic_write(str(OUT / "tiny_edges.safetensors"), lambda f: f.write(save(state, metadata)))
    atomic_write(str(OUT / "tiny_edges.onnx"), lambda f: f.write(onnx_file.getvalue()))
    print(f"wrote {OUT / 'tiny_edges.safetensors'} and {OUT / 'tiny_edges.onnx'}")


if __name__ == "__main__":
    main()
