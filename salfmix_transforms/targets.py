"""Soft targets: one-hot encoding with label smoothing, and the label mix of two-image methods.

Every transform in the package builds its targets here. The formulas follow ``timm.data.mixup`` so that a
timm training loop (``SoftTargetCrossEntropy``) sees the same numbers:

* smoothing ``s`` over ``K`` classes: off value ``s / K``, on value ``1 - s + s / K`` (rows sum to 1);
* mixing two images with weight ``lam`` on the first: ``lam * y_a + (1 - lam) * y_b`` (Zhang et al., Mixup).

Dense targets (semantic segmentation) get the same formulas per pixel: a class mask (B, H, W) becomes soft
dense targets (B, K, H, W) whose pixels are smoothed one-hot vectors, except the ``ignore_index`` pixels,
which become all-zero. Choice: a pixel's sum is its weight in the loss (1 labelled, 0 ignored, and for a
Mixup of a labelled and an ignored pixel the labelled source's share). A loss uses them as

``loss = -(target * logits.log_softmax(dim=1)).sum() / target.sum().clamp(min=1)``

i.e. the cross-entropy with probabilities summed over the pixels, divided by the labelled mass. For a Mixup
this is exactly ``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)`` with ``ignore_index`` (sum
reduction), the criterion of Mixup for segmentation, up to the normalisation.
"""

from __future__ import annotations

import torch

from ._validation import IGNORE_INDEX, check_target

__all__ = [
    "dense_one_hot",
    "infer_num_classes",
    "is_dense_target",
    "mix_targets",
    "one_hot",
    "smooth_checked_targets",
    "to_soft_targets",
]


def one_hot(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class indices (B,) to smoothed one-hot rows (B, num_classes), float32 on the target's device; class
    indices (B, H, W) likewise to one-hot pixels (B, num_classes, H, W)."""
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    shape = (target.shape[0], num_classes, *target.shape[1:])
    out = torch.full(shape, off_value, device=target.device, dtype=torch.float32)
    return out.scatter_(1, target.long().unsqueeze(1), on_value)


def dense_one_hot(
    mask: torch.Tensor, num_classes: int, smoothing: float = 0.0, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """A class mask (B, H, W) to smoothed one-hot pixels (B, num_classes, H, W), float32; the
    ``ignore_index`` pixels are all-zero (ignored by the loss of the module docstring)."""
    labelled = mask != ignore_index
    index = torch.where(labelled, mask, torch.zeros((), dtype=mask.dtype))
    return one_hot(index, num_classes, smoothing).mul_(labelled.unsqueeze(1))


def is_dense_target(target: torch.Tensor) -> bool:
    """Whether a checked target is dense: a class mask (B, H, W) or soft dense targets (B, K, H, W)."""
    return target.dim() >= 3


def to_soft_targets(
    target: torch.Tensor, num_classes: int, smoothing: float = 0.0, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Class indices or soft targets to soft targets (B, num_classes) with label smoothing applied.

    Soft targets that are already given are smoothed with the same formula as one-hot rows
    (``y * (1 - s) + s / K``), so a row that sums to 1 still sums to 1. Dense targets (a class mask
    (B, H, W) or soft dense targets (B, K, H, W)) give soft dense targets (B, num_classes, H, W), per pixel
    the same (see the module docstring for ``ignore_index``).
    """
    size = tuple(target.shape[-2:]) if target.dim() >= 3 else None
    batch = target.shape[0] if target.dim() else 0
    target = check_target(target, batch, num_classes, image_size=size, ignore_index=ignore_index)
    return smooth_checked_targets(target, num_classes, smoothing, ignore_index)


def smooth_checked_targets(
    target: torch.Tensor, num_classes: int, smoothing: float, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """:func:`to_soft_targets` for a target that the caller has already checked against ``num_classes``.

    The transforms check their target once per call (``BatchTransform._check_call``); checking it again
    here would cost another reduction over it (the index range check reads the min and max; on the CPU
    on the host, elsewhere as a device-side assert, :func:`~salfmix_transforms._validation.check_target`).
    A soft dense pixel keeps its sum (its loss weight): ``y * (1 - s) + s / K * sum(y)``.
    """
    if target.dim() == 1:
        return one_hot(target, num_classes, smoothing)
    if target.dim() == 3:
        return dense_one_hot(target, num_classes, smoothing, ignore_index)
    if target.dim() == 4:
        soft = target.float()
        return soft * (1.0 - smoothing) + soft.sum(dim=1, keepdim=True) * (smoothing / num_classes)
    return target.float() * (1.0 - smoothing) + smoothing / num_classes


def mix_targets(target_a: torch.Tensor, target_b: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """``lam * target_a + (1 - lam) * target_b`` for soft targets (B, K), or per pixel for (B, K, H, W).

    ``lam`` is a float (one weight for the batch) or a tensor of B weights (one per sample); it is the weight
    of ``target_a``, the image that is pasted *into* (timm's convention: lambda is the kept fraction). An
    ignored (all-zero) pixel of one target leaves the other's share only (see the module docstring).
    """
    if isinstance(lam, torch.Tensor):
        lam = lam.to(device=target_a.device, dtype=target_a.dtype).reshape(-1, *[1] * (target_a.dim() - 1))
    return target_a * lam + target_b * (1.0 - lam)


def infer_num_classes(target: torch.Tensor, num_classes: int | None) -> int:
    """``num_classes``, or the width K of soft targets (B, K) or (B, K, H, W); class indices (B,) and class
    masks (B, H, W) need ``num_classes``."""
    if num_classes is not None:
        return num_classes
    if target.dim() in (2, 4):
        return target.shape[1]
    raise ValueError(
        "num_classes must be given to turn class indices of shape (B,) or class masks (B, H, W) into soft "
        "targets (or pass soft targets of shape (B, num_classes) or (B, num_classes, H, W))"
    )
