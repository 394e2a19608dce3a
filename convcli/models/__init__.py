"""Trained models: weights read from model files (``convcli.models.weights``).

This module stays light (standard library only): ``--help``, ``kernels`` and ``conv``'s option
parsing recognise a ``FILE:TENSOR`` spec with it before anything heavy is imported.

>>> split_model_spec("models/tiny_edges.safetensors:conv1.weight")
('models/tiny_edges.safetensors', 'conv1.weight')
>>> split_model_spec("sobel:dir=y") is None, is_model_file("net.ONNX")
(True, True)
"""

from __future__ import annotations

import re

#: The suffixes of the model files whose tensors serve as kernels and biases.
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".onnx", ".keras", ".h5", ".npz")

# FILE:TENSOR: the first model suffix followed by a colon ends the path; the rest names a tensor
_SUFFIX = "|".join(re.escape(suffix) for suffix in MODEL_SUFFIXES)
_MODEL_SPEC = re.compile(rf"(.*?(?:{_SUFFIX})):(.*)\Z", re.IGNORECASE | re.DOTALL)


def split_model_spec(text: str) -> tuple[str, str] | None:
    """``(path, tensor name)`` when ``text`` is ``FILE:TENSOR`` with a model file, else None."""
    match = _MODEL_SPEC.match(str(text).strip())
    return (match[1], match[2].strip()) if match else None


def is_model_file(text: str) -> bool:
    """Whether ``text`` names a model file (by its suffix) without a tensor."""
    return str(text).strip().lower().endswith(MODEL_SUFFIXES)
