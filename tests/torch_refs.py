"""Tiny PyTorch reference models (open_clip, transformers) for the converter tests.

Only tests import this. `import open_clip` imports torchvision, which cannot load beside the
CPU torch wheel here; when the real import fails, `import_open_clip` puts permissive stand-ins
for the few torchvision names open_clip reads at import time (its image transforms and a
ResNet batch norm, neither used by the models built here) into `sys.modules` while open_clip
imports, and takes them out again (transformers would otherwise take them for torchvision).
"""

from __future__ import annotations

import importlib
import math
import sys
import types

import numpy as np
import torch


class _AnyMeta(type):
    def __getattr__(cls, name):
        return cls


class _Any(metaclass=_AnyMeta):
    """Stands for any torchvision class or enum; never called by the models under test."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is stubbed in these tests")


_STUBS = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops"]
_STUBS.append("torchvision.ops.misc")


def _stub_torchvision() -> None:
    names = _STUBS
    for name in names:
        module = types.ModuleType(name)
        module.__getattr__ = lambda attr: _Any
        sys.modules[name] = module
    for name in names[1:]:
        parent, child = name.rsplit(".", 1)
        setattr(sys.modules[parent], child, sys.modules[name])


def import_open_clip():
    """`open_clip`, with torchvision stubbed only if the real one does not import."""
    # transformers looks for torchvision when it is first imported: let it see the real state.
    importlib.import_module("transformers")
    try:
        import torchvision  # noqa: F401

        return importlib.import_module("open_clip")
    except Exception:  # missing, or a wheel built against CUDA libraries absent here
        pass
    for name in [key for key in sys.modules if key == "torchvision" or key.startswith("torchvision.")]:
        del sys.modules[name]
    _stub_torchvision()
    try:
        return importlib.import_module("open_clip")
    finally:
        for name in _STUBS:
            sys.modules.pop(name, None)


@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (LayerNorm scales near 1, weights ~ fan-in⁻½, biases and
    embeddings non-zero), so that no weight is zero or identity by accident; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in module.named_parameters():
        noise = torch.randn(param.shape, generator=generator)
        if param.ndim == 0 or param.numel() == 1:  # logit scale / bias
            value = torch.full(param.shape, math.log(12.5) if "scale" in name else -3.7) + 0.1 * noise
        elif param.ndim == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight"):
            value = 1.0 + 0.2 * noise
        elif param.ndim == 1:
            value = 0.2 * noise
        else:
            value = noise * (param.numel() / param.shape[0]) ** -0.5
        param.copy_(value)
    return module.eval()


def images(batch: int, size: int, seed: int = 1) -> tuple[torch.Tensor, np.ndarray]:
    """Random pixels as the torch models take them (NCHW) and as the NNX models do (NHWC)."""
    pixels = torch.randn((batch, 3, size, size), generator=torch.Generator().manual_seed(seed))
    return pixels, pixels.numpy().transpose(0, 2, 3, 1)


def clip_tokens(batch: int, length: int, vocab: int, seed: int = 2) -> np.ndarray:
    """CLIP-style rows: start token `vocab − 2`, random words, end token `vocab − 1` (the
    largest id), zeros after; one row fills the whole context."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((batch, length), np.int64)
    for row in range(batch):
        end = length - 1 if row == 0 else int(rng.integers(1, length - 1))
        tokens[row, 0] = vocab - 2
        tokens[row, 1:end] = rng.integers(1, vocab - 2, end - 1)
        tokens[row, end] = vocab - 1
    return tokens


def eos_tokens(batch: int, length: int, vocab: int, eos_id: int, seed: int = 3) -> np.ndarray:
    """Rows with words on both sides of `eos_id` (the first `eos_id` ends the text) and ids
    larger than it, so that pooling at the first `eos_id` and at the largest id differ."""
    rng = np.random.default_rng(seed)
    words = np.array([i for i in range(vocab) if i != eos_id])
    tokens = rng.choice(words, (batch, length))
    for row in range(batch):
        tokens[row, int(rng.integers(1, length))] = eos_id
        tokens[row, -1] = eos_id
    tokens[:, 0] = vocab - 1
    return tokens.astype(np.int64)


def unit(features: torch.Tensor) -> np.ndarray:
    features = features.detach().float()
    return (features / features.norm(dim=-1, keepdim=True)).numpy()
