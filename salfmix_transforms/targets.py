"""Soft targets: one-hot encoding with label smoothing, and the label mix of two-image methods.

Every transform in the package builds its targets here. The formulas follow ``timm.data.mixup`` so that a
timm training loop (``SoftTargetCrossEntropy``) sees the same numbers:

* smoothing ``s`` over ``K`` classes: off value ``s / K``, on value ``1 - s + s / K`` (rows sum to 1);
* mixing two images with weight ``lam`` on the first: ``lam * y_a + (1 - lam) * y_b`` (Zhang et al., Mixup).
"""

from __future__ import annotations

import torch

from ._validation import check_target

__all__ = ["infer_num_classes", "mix_targets", "one_hot", "smooth_checked_targets", "to_soft_targets"]


def one_hot(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class indices (B,) to smoothed one-hot rows (B, num_classes), float32 on the target's device."""
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    out = torch.full((target.shape[0], num_classes), off_value, device=target.device, dtype=torch.float32)
    return out.scatter_(1, target.long().view(-1, 1), on_value)


def to_soft_targets(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class indices or soft targets to soft targets (B, num_classes) with label smoothing applied.

    Soft targets that are already given are smoothed with the same formula as one-hot rows
    (``y * (1 - s) + s / K``), so a row that sums to 1 still sums to 1.
    """
    target = check_target(target, target.shape[0] if target.dim() else 0, num_classes)
    return smooth_checked_targets(target, num_classes, smoothing)


def smooth_checked_targets(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """:func:`to_soft_targets` for a target that the caller has already checked against ``num_classes``.

    The transforms check their target once per call (``BatchTransform._check_call``); checking it again
    here would cost another host synchronisation on CUDA (the index range check reads the min and max).
    """
    if target.dim() == 1:
        return one_hot(target, num_classes, smoothing)
    return target.float() * (1.0 - smoothing) + smoothing / num_classes


def mix_targets(target_a: torch.Tensor, target_b: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """``lam * target_a + (1 - lam) * target_b`` for soft targets (B, K).

    ``lam`` is a float (one weight for the batch) or a tensor of B weights (one per sample); it is the weight
    of ``target_a``, the image that is pasted *into* (timm's convention: lambda is the kept fraction).
    """
    if isinstance(lam, torch.Tensor):
        lam = lam.to(device=target_a.device, dtype=target_a.dtype).reshape(-1, 1)
    return target_a * lam + target_b * (1.0 - lam)


def infer_num_classes(target: torch.Tensor, num_classes: int | None) -> int:
    """``num_classes``, or the width K of soft targets (B, K); class indices need ``num_classes``."""
    if num_classes is not None:
        return num_classes
    if target.dim() == 2:
        return target.shape[1]
    raise ValueError(
        "num_classes must be given to turn class indices of shape (B,) into soft targets "
        "(or pass soft targets of shape (B, num_classes))"
    )
