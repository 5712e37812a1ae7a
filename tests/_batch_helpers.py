"""Small batch and model builders shared by the transform tests (``test_bad_input.py``, ``test_hybrid.py``,
``test_mixing.py`` and the conformance tests): random images, one-hot targets, images whose pixels say which
sample they come from, and a tiny classifier for the gradient-saliency pass.
"""

from __future__ import annotations

import torch
from torch import nn


def images(
    batch: int,
    channels: int,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> torch.Tensor:
    """Uniform images in [0, 1) of ``dtype``, all values distinct across samples with high probability.

    Drawn in float32 from a fresh generator seeded with ``seed``, then cast: the same ``seed`` gives the same
    images in every dtype (up to rounding).
    """
    x = torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))
    return x.to(dtype)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Float32 one-hot rows (B, ``num_classes``) of integer ``labels`` (B,)."""
    return torch.nn.functional.one_hot(labels, num_classes).float()


def labelled_batch(batch: int, height: int, width: int, channels: int = 3) -> torch.Tensor:
    """Float32 images, sample i the constant i + 1: every output pixel says which sample it came from."""
    values = torch.arange(1, batch + 1, dtype=torch.float32).view(batch, 1, 1, 1)
    return values.expand(batch, channels, height, width).contiguous()


def tiny_classifier(
    num_classes: int,
    *,
    image_size: int | None = None,
    batchnorm: bool = False,
    seed: int | None = 0,
) -> nn.Module:
    """A small CNN of 3-channel images: ``Conv2d(3, 4, 3, padding=1)`` [-> ``BatchNorm2d(4)``], ReLU, head.

    Args:
        num_classes: the number of logits.
        image_size: ``None``: the head is a global average pool and ``Linear(4, num_classes)`` (any image
            size); an int S: ``Flatten`` and ``Linear(4 * S * S, num_classes)`` (S x S images only).
        batchnorm: a ``BatchNorm2d`` after the convolution (batch statistics in train mode).
        seed: ``torch.manual_seed(seed)`` before the layers are built, for the same weights on every call;
            ``None`` leaves the global generator alone (the weights are drawn from it as it is).
    """
    if seed is not None:
        torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, 4, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(4))
    layers.append(nn.ReLU())
    if image_size is None:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes)]
    else:
        layers += [nn.Flatten(), nn.Linear(4 * image_size * image_size, num_classes)]
    return nn.Sequential(*layers)
