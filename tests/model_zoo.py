"""Small models with random weights, written to every model format convcli reads.

The layers of four classic CNN building blocks, as PyTorch modules (eval mode, seeded):

- ``vgg``: a VGG-like chain, conv 3x3 -> ReLU -> conv 3x3 -> ReLU -> max pool;
- ``resnet``: a ResNet basic block, conv -> BatchNorm -> ReLU -> conv -> BatchNorm, the input
  added back (the residual Add), ReLU;
- ``mobilenet``: a depthwise-separable block, depthwise conv 3x3 (groups = channels) ->
  BatchNorm -> ReLU6 -> pointwise conv 1x1;
- ``unet``: a U-Net-like up step, ConvTranspose 2x2 stride 2, concatenated with a skip input,
  then a conv 3x3.

``write_torch_models(folder)`` saves each as ONNX (``torch.onnx.export(..., dynamo=False)``),
safetensors, a state dict ``.pt``, a nested checkpoint ``.ckpt`` (``{"state_dict": ...}``) and
``.npz``; ``write_keras_model(folder)`` saves a Keras model (Conv2D, DepthwiseConv2D,
Conv2DTranspose) as ``.keras`` and ``.h5``. The tests' session fixtures call them once in a tmp
folder. Torch and Keras are imported inside the functions (the ``ref`` extra).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Input channels and size of every model's example input (N, C, H, W).
INPUT_SHAPE = (1, 3, 12, 10)


@dataclass(frozen=True)
class SavedModel:
    """A model written to disk: the module (eval mode), one example input and its files."""

    module: object
    example: tuple
    files: dict  # format ("onnx", "safetensors", "pt", "ckpt", "npz") -> Path


def build_torch_models() -> dict:
    """The four PyTorch models by name, seeded, in eval mode with non-trivial BatchNorm stats."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class ResNetBlock(nn.Module):
        def __init__(self, channels: int):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + x)

    class UpStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(3, 4, 2, stride=2)
            self.conv = nn.Conv2d(4 + 3, 4, 3, padding=1)

        def forward(self, x, skip):
            return self.conv(torch.cat([self.up(x), skip], dim=1))

    channels = INPUT_SHAPE[1]
    models = {
        "vgg": nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ),
        "resnet": ResNetBlock(channels),
        "mobilenet": nn.Sequential(
            nn.Conv2d(channels, channels * 2, 3, padding=1, groups=channels),
            nn.BatchNorm2d(channels * 2),
            nn.ReLU6(),
            nn.Conv2d(channels * 2, 5, 1),
        ),
        "unet": UpStep(),
    }
    for module in models.values():
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):  # stats that change the result
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
                layer.weight.data.uniform_(0.5, 1.5)
                layer.bias.data.uniform_(-0.5, 0.5)
        module.eval()
    return models


def example_inputs(name: str) -> tuple:
    """The example input(s) of model ``name`` (the U-Net step also takes a skip at twice the
    size)."""
    import torch

    generator = torch.Generator().manual_seed(1)
    x = torch.rand(INPUT_SHAPE, generator=generator)
    if name == "unet":
        n, c, h, w = INPUT_SHAPE
        return (x, torch.rand((n, c, 2 * h, 2 * w), generator=generator))
    return (x,)


def write_torch_models(folder: Path) -> dict:
    """Every PyTorch model in every format, in ``folder``: name -> ``SavedModel``."""
    import torch
    from safetensors.torch import save_file

    saved = {}
    for name, module in build_torch_models().items():
        example = example_inputs(name)
        state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
        files = {
            kind: folder / f"{name}.{kind}" for kind in ("onnx", "safetensors", "pt", "ckpt", "npz")
        }
        with torch.no_grad():
            torch.onnx.export(module, example, str(files["onnx"]), dynamo=False)
        save_file(state, str(files["safetensors"]))
        torch.save(state, files["pt"])
        torch.save({"state_dict": state, "epoch": 3}, files["ckpt"])
        np.savez(files["npz"], **{k: v.numpy() for k, v in state.items()})
        saved[name] = SavedModel(module, example, files)
    return saved


def build_keras_model():
    """A Keras model (channels last, 12x10x3 in): Conv2D, DepthwiseConv2D (multiplier 2) and
    Conv2DTranspose (stride 2), with the layer names ``conv``, ``depthwise``, ``up``; the model
    is named ``zoo`` (legacy .h5 files hold ``model_weights/conv/zoo/conv/kernel``)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.utils.set_random_seed(0)
    _, c, h, w = INPUT_SHAPE
    model = keras.Sequential(
        [
            keras.Input((h, w, c)),
            keras.layers.Conv2D(
                4, 3, padding="same", name="conv", bias_initializer="random_normal"
            ),
            keras.layers.DepthwiseConv2D(
                3,
                depth_multiplier=2,
                padding="same",
                name="depthwise",
                bias_initializer="random_normal",
            ),
            keras.layers.Conv2DTranspose(
                3, 3, strides=2, padding="valid", name="up", bias_initializer="random_normal"
            ),
        ],
        name="zoo",
    )
    return model


def write_keras_model(folder: Path) -> tuple:
    """The Keras model saved as ``.keras`` and ``.h5``: ``(model, {"keras": path, "h5": path})``."""
    import warnings

    model = build_keras_model()
    files = {"keras": folder / "keras_model.keras", "h5": folder / "keras_model.h5"}
    model.save(files["keras"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "HDF5 is a legacy format"
        model.save(files["h5"])
    return model, files
