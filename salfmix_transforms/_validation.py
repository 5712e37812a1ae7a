"""Argument checks shared by every transform.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, wrong value) with a
message that names the argument and says what was expected, so a user sees at once what to fix.
"""

from __future__ import annotations

import numbers

import torch

__all__ = [
    "check_bool",
    "check_generator",
    "check_grid",
    "check_images",
    "check_non_negative",
    "check_probability",
    "check_ratio",
    "check_saliency",
    "check_target",
    "check_writable",
]


def check_images(x: object, name: str = "x") -> torch.Tensor:
    """A batch of images: a floating-point tensor of shape (B, C, H, W) with B >= 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-D tensor (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one image (B >= 1), got shape {tuple(x.shape)}")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name} must have H >= 1 and W >= 1, got shape {tuple(x.shape)}")
    return x


def check_target(
    target: object, batch_size: int, num_classes: int | None = None, name: str = "target"
) -> torch.Tensor:
    """Class indices of shape (B,) (integer dtype) or soft targets of shape (B, K) (floating dtype).

    With ``num_classes`` given, indices must lie in [0, num_classes) and soft targets need K == num_classes.
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of class indices (B,) or soft targets (B, K), "
            f"got {type(target).__name__}"
        )
    if target.dim() == 1:
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(
                f"{name} of shape (B,) must hold integer class indices, got dtype {target.dtype} "
                "(pass soft targets as a (B, num_classes) float tensor)"
            )
        if target.shape[0] != batch_size:
            raise ValueError(f"{name} has {target.shape[0]} labels for a batch of {batch_size} images")
        if num_classes is not None and target.numel() > 0:
            low, high = torch.stack(torch.aminmax(target)).tolist()  # one host sync, not two
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"{name} holds class indices in [{low}, {high}], outside [0, {num_classes - 1}] "
                    f"for num_classes={num_classes}"
                )
        return target
    if target.dim() == 2:
        if not target.is_floating_point():
            raise TypeError(f"{name} of shape (B, K) must be floating-point soft targets, got {target.dtype}")
        if target.shape[0] != batch_size:
            raise ValueError(f"{name} has {target.shape[0]} rows for a batch of {batch_size} images")
        if num_classes is not None and target.shape[1] != num_classes:
            raise ValueError(f"{name} has {target.shape[1]} columns, expected num_classes={num_classes}")
        return target
    raise ValueError(
        f"{name} must be class indices (B,) or soft targets (B, K), got shape {tuple(target.shape)}"
    )


def check_saliency(saliency: object, images: torch.Tensor, name: str = "saliency") -> torch.Tensor:
    """A saliency map of shape (B, H, W) matching the images (B, C, H, W)."""
    if not isinstance(saliency, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, H, W), got {type(saliency).__name__}")
    expected = (images.shape[0], images.shape[2], images.shape[3])
    if tuple(saliency.shape) != expected:
        raise ValueError(f"{name} must have shape (B, H, W) = {expected}, got {tuple(saliency.shape)}")
    if not (saliency.is_floating_point() or saliency.dtype in (torch.uint8, torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a real-valued tensor, got dtype {saliency.dtype}")
    return saliency


def _check_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def check_probability(value: object, name: str) -> float:
    """A probability in [0, 1]."""
    value = _check_real(value, name)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def check_ratio(value: object, name: str = "ratio") -> float:
    """A patch-side ratio r in (0, 1] (the paper's r, Algorithm 1)."""
    value = _check_real(value, name)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value}")
    return value


def check_bool(value: object, name: str) -> bool:
    """A real ``bool`` (not merely truthy: ``inplace=1`` or ``pool="no"`` is refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_writable(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """A batch that ``inplace=True`` may overwrite: one that autograd does not track."""
    if x.requires_grad:
        raise ValueError(
            f"inplace=True cannot overwrite {name}, which requires grad; pass {name}.detach() or use "
            "inplace=False"
        )
    return x


def check_non_negative(value: object, name: str) -> float:
    """A real number >= 0 (Beta-distribution alphas, for example)."""
    value = _check_real(value, name)
    if value < 0.0 or value != value:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_grid(grid: object, name: str = "grid", height: int | None = None, width: int | None = None) -> int:
    """The pooling grid n (Algorithm 1): an integer >= 1, and n <= min(H, W) once the image size is known."""
    if isinstance(grid, bool) or not isinstance(grid, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(grid).__name__}")
    grid = int(grid)
    if grid < 1:
        raise ValueError(f"{name} must be >= 1, got {grid}")
    if height is not None and width is not None and grid > min(height, width):
        raise ValueError(
            f"{name}={grid} does not fit a {height}x{width} image: the pooling kernel H//{name} "
            f"would be 0 (need {name} <= min(H, W) = {min(height, width)})"
        )
    return grid


def check_generator(generator: object, name: str = "generator") -> torch.Generator | None:
    """``None`` or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    return generator
