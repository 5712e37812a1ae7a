"""Argument checks shared by every transform.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, wrong value) with a
message that names the argument and says what was expected, so a user sees at once what to fix.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

__all__ = [
    "IGNORE_INDEX",
    "MODES",
    "SALIENCY_MODES",
    "check_alpha",
    "check_bool",
    "check_choice",
    "check_dense_target",
    "check_distributions",
    "check_generator",
    "check_grid",
    "check_ignore_index",
    "check_images",
    "check_index_range",
    "check_interval",
    "check_model",
    "check_multi_label",
    "check_non_negative_int",
    "check_num_classes",
    "check_number",
    "check_optional_positive_int",
    "check_positive_int",
    "check_probability",
    "check_ratio",
    "check_saliency",
    "check_target",
    "check_writable",
    "elements_may_share_memory",
]

#: timm ``Mixup``'s modes: one set of parameters per batch, per pair of samples, or per sample.
MODES = ("batch", "pair", "elem")
#: The model's mode during the saliency pass (:func:`~salfmix_transforms.saliency.gradient_saliency`).
SALIENCY_MODES = ("train", "eval")
#: The default ``ignore_index`` of class masks (B, H, W): the unlabelled pixels of PASCAL VOC, Cityscapes
#: and ADE20K. Choice: 255 rather than PyTorch's cross-entropy default -100, which a uint8 mask cannot hold.
IGNORE_INDEX = 255


# -- numbers and choices ----------------------------------------------------------------------------------


def check_number(
    value: object,
    name: str,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    finite: bool = False,
    optional: bool = False,
) -> float | int | None:
    """A real number (an ``int`` with ``integer``: Python or NumPy, never a bool) within the bounds.

    Args:
        value: the argument.
        name: its name, for the message.
        integer: ask for an integer (returned as ``int``, else as ``float``).
        low, high: the bounds (closed; ``None``: unbounded); NaN never passes a bound.
        low_open: ``value > low`` instead of ``>=``.
        finite: refuse NaN and infinities.
        optional: ``None`` passes (and is returned).
    """
    if optional and value is None:
        return None
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(
            f"{name} must be {'an int' if integer else 'a real number'}, got {type(value).__name__}"
        )
    value = int(value) if integer else float(value)
    above = low is None or (value > low if low_open else value >= low)
    if above and (high is None or value <= high) and (math.isfinite(value) or not finite):
        return value
    if high is not None and low is not None:
        expected = f"lie in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif high is not None:
        expected = f"be <= {high:g}"
    elif low is not None:
        expected = f"be {'>' if low_open else '>='} {low:g}{' and finite' if finite else ''}"
    else:
        expected = "be a finite real number"
    raise ValueError(f"{name} must {expected}{' or None' if optional else ''}, got {value}")


def check_probability(value: object, name: str) -> float:
    """A probability in [0, 1]."""
    return check_number(value, name, low=0.0, high=1.0)


def check_ratio(value: object, name: str = "ratio") -> float:
    """A patch-side ratio r in (0, 1] (the paper's r, Algorithm 1)."""
    return check_number(value, name, low=0.0, high=1.0, low_open=True)


def check_alpha(alpha: object, name: str = "alpha", *, zero_is_off: bool = False) -> float:
    """A Beta-distribution parameter: finite and > 0 (a standalone method with ``alpha = 0`` never mixes),
    or >= 0 with ``zero_is_off`` (a method that ``0`` switches off, timm's ``mixup_alpha``)."""
    return check_number(alpha, name, low=0.0, low_open=not zero_is_off, finite=True)


def check_non_negative_int(value: object, name: str) -> int:
    """An integer >= 0 (``warmup_epochs``, a 0-based epoch)."""
    return check_number(value, name, integer=True, low=0)


def check_positive_int(value: object, name: str) -> int:
    """An integer >= 1."""
    return check_number(value, name, integer=True, low=1)


def check_optional_positive_int(value: object, name: str) -> int | None:
    """``None`` or an integer >= 1 (``steps_per_epoch``, for example)."""
    return check_number(value, name, integer=True, low=1, optional=True)


def check_num_classes(value: object, name: str = "num_classes") -> int | None:
    """``None`` or the number of classes K >= 1 (Python or NumPy integer)."""
    return check_optional_positive_int(value, name)


def check_grid(grid: object, name: str = "grid", height: int | None = None, width: int | None = None) -> int:
    """The pooling grid n (Algorithm 1): an integer >= 1, and n <= min(H, W) once the image size is known."""
    grid = check_positive_int(grid, name)
    if height is not None and width is not None and grid > min(height, width):
        raise ValueError(
            f"{name}={grid} does not fit a {height}x{width} image: the pooling kernel H//{name} "
            f"would be 0 (need {name} <= min(H, W) = {min(height, width)})"
        )
    return grid


def check_interval(
    value: object, name: str, *, positive: bool = False, optional: bool = False
) -> tuple[float, float] | None:
    """A pair of side ratios ``(low, high)``: ``0 <= low < high <= 1`` (timm's ``cutmix_minmax``), or with
    ``positive`` ``0 < low <= high <= 1`` (ResizeMix's ``scope``); ``None`` passes with ``optional``."""
    if optional and value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    if any(isinstance(bound, bool) or not isinstance(bound, numbers.Real) for bound in value):
        raise TypeError(f"{name} must hold two real numbers, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not ((0.0 < low <= high if positive else 0.0 <= low < high) and high <= 1.0):
        interval = "0 < low <= high <= 1" if positive else "0 <= low < high <= 1"
        raise ValueError(f"{name} must satisfy {interval}, got {value!r}")
    return low, high


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (:data:`MODES`, :data:`SALIENCY_MODES`, an interpolation)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_bool(value: object, name: str) -> bool:
    """A real ``bool`` (not merely truthy: ``inplace=1`` or ``pool="no"`` is refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_multi_label(multi_label: object, name: str = "multi_label") -> bool:
    """timm ``Mixup``'s ``multi_label`` switch: accepted so that timm's arguments drop in, but only ``False``.

    Multi-label targets (rows that are not probability distributions, for a binary cross-entropy) are not
    supported: every transform of the package checks that soft targets are distributions.
    """
    if check_bool(multi_label, name):
        raise ValueError(
            f"{name}=True (timm's dense multi-label targets) is not supported: the package mixes "
            "single-label targets whose rows are probability distributions"
        )
    return False


def check_generator(generator: object, name: str = "generator") -> torch.Generator | None:
    """``None`` or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def check_model(model: object, name: str = "model") -> torch.nn.Module | None:
    """``None`` or the network whose saliency a transform uses (a ``torch.nn.Module``)."""
    if model is not None and not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module or None, got {type(model).__name__}")
    return model


# -- tensors ----------------------------------------------------------------------------------------------


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


def check_saliency(saliency: object, images: torch.Tensor, name: str = "saliency") -> torch.Tensor:
    """A saliency map of shape (B, H, W) matching the images (B, C, H, W)."""
    if not isinstance(saliency, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, H, W), got {type(saliency).__name__}")
    expected = (images.shape[0], images.shape[2], images.shape[3])
    if tuple(saliency.shape) != expected:
        raise ValueError(f"{name} must have shape (B, H, W) = {expected}, got {tuple(saliency.shape)}")
    if saliency.is_complex() or saliency.dtype == torch.bool:
        raise TypeError(
            f"{name} must hold real numbers (any integer or floating dtype), got {saliency.dtype}"
        )
    return saliency


def check_writable(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """A batch that ``inplace=True`` may overwrite: one that autograd does not track, that is not an
    inference tensor (outside ``torch.inference_mode()``), and whose elements have memory of their own."""
    if x.requires_grad:
        raise ValueError(
            f"inplace=True cannot overwrite {name}, which requires grad; pass {name}.detach() or use "
            "inplace=False"
        )
    if x.is_inference() and not torch.is_inference_mode_enabled():
        raise ValueError(
            f"inplace=True cannot overwrite {name}, an inference tensor (made under torch.inference_mode()), "
            f"outside inference mode; pass {name}.clone() or use inplace=False"
        )
    if elements_may_share_memory(x):
        raise ValueError(
            f"inplace=True cannot overwrite {name}: its elements share memory (e.g. an expand()ed batch, "
            f"strides {tuple(x.stride())}), so writing one sample would write others; pass {name}.clone() "
            "or use inplace=False"
        )
    return x


def elements_may_share_memory(x: torch.Tensor) -> bool:
    """Whether two elements of ``x`` may be the same memory (an ``expand``, ``as_strided`` overlap).

    Sorted by stride, the dimensions of size > 1 of a tensor without overlap each step over the whole
    extent of the previous ones (``stride[i + 1] >= stride[i] * size[i]``); a tensor that breaks the rule
    (a zero stride, for example) is reported, even if an exotic layout might still be free of overlap.
    """
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return False
    dims = sorted((stride, size) for stride, size in zip(x.stride(), x.shape) if size > 1)
    extent = 1
    for stride, size in dims:
        if stride < extent:
            return True
        extent = stride * size
    return False


# -- targets ----------------------------------------------------------------------------------------------


def check_target(
    target: object,
    batch_size: int,
    num_classes: int | None = None,
    name: str = "target",
    *,
    image_size: tuple[int, int] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Class indices of shape (B,) (integer dtype) or soft targets of shape (B, K) (floating dtype).

    With ``num_classes`` given, indices must lie in [0, num_classes) and soft targets need K == num_classes.
    With ``image_size = (H, W)`` given, dense targets of images of that size are accepted too: a class mask
    (B, H, W) or soft dense targets (B, K, H, W) (:func:`check_dense_target`). The shape tells them apart:
    (B,) and (B, K) are classification targets, (B, H, W) and (B, K, H, W) dense ones.
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of class indices (B,) or soft targets (B, K), "
            f"got {type(target).__name__}"
        )
    if target.dim() == 1:
        if not _is_integer(target):
            raise TypeError(
                f"{name} of shape (B,) must hold integer class indices, got dtype {target.dtype} "
                "(pass soft targets as a (B, num_classes) float tensor)"
            )
        _check_batch(target, batch_size, "labels", name)
        if num_classes is not None:
            _check_class_range(target, num_classes, name)
        return target
    if target.dim() == 2:
        if not target.is_floating_point():
            raise TypeError(f"{name} of shape (B, K) must be floating-point soft targets, got {target.dtype}")
        _check_batch(target, batch_size, "rows", name)
        _check_classes(target, num_classes, "columns", name)
        return check_distributions(target, name)
    if image_size is not None and target.dim() in (3, 4):
        return check_dense_target(target, batch_size, image_size, num_classes, ignore_index, name)
    dense = ", a class mask (B, H, W) or soft dense targets (B, K, H, W)" if image_size is not None else ""
    raise ValueError(
        f"{name} must be class indices (B,) or soft targets (B, K){dense}, got shape {tuple(target.shape)}"
    )


def check_dense_target(
    target: torch.Tensor,
    batch_size: int,
    image_size: tuple[int, int],
    num_classes: int | None = None,
    ignore_index: int = IGNORE_INDEX,
    name: str = "target",
) -> torch.Tensor:
    """A dense target of images (B, C, H, W) of size ``image_size = (H, W)``.

    * a class mask (B, H, W), integer dtype: every pixel a class index in [0, num_classes) or
      ``ignore_index`` (an unlabelled pixel), which the dtype must be able to hold
      (:func:`check_ignore_index`);
    * soft dense targets (B, K, H, W), floating dtype: every pixel a vector of K non-negative finite
      weights summing to at most 1. Choice: a pixel's sum is its weight in the loss, 1 for a labelled pixel
      and 0 (all-zero) for an ignored one; a mix may leave a pixel in between (Mixup with one ignored
      source pixel, :func:`~salfmix_transforms.targets.mix_targets`), so any sum in [0, 1] is accepted.
    """
    hard = target.dim() == 3
    if hard and not _is_integer(target):
        raise TypeError(
            f"{name} of shape (B, H, W) is a class mask and must hold integer class indices, got dtype "
            f"{target.dtype} (pass soft dense targets as a (B, K, H, W) float tensor)"
        )
    if not hard and not target.is_floating_point():
        raise TypeError(
            f"{name} of shape (B, K, H, W) must be floating-point soft dense targets, got {target.dtype} "
            "(pass class masks as a (B, H, W) integer tensor)"
        )
    _check_batch(target, batch_size, "masks", name)
    if tuple(target.shape[-2:]) != tuple(image_size):
        kind = "class mask (B, H, W)" if hard else "soft dense target (B, K, H, W)"
        raise ValueError(
            f"{name} is a {kind} of {target.shape[-2]}x{target.shape[-1]} pixels, but the images are "
            f"{image_size[0]}x{image_size[1]}: a dense target must have the image's H and W"
        )
    if not hard:
        _check_classes(target, num_classes, "class planes", name)
        return check_distributions(target, name, dense=True)
    check_ignore_index(ignore_index, num_classes, target.dtype)
    # Every labelled pixel a class index (>= 0 without num_classes); ignore_index pixels count as class 0.
    labelled = torch.where(target != ignore_index, target, torch.zeros((), dtype=target.dtype))
    _check_class_range(labelled, num_classes, name, f" (ignore_index={ignore_index} aside)")
    return target


def check_ignore_index(
    ignore_index: object, num_classes: int | None = None, dtype: torch.dtype | None = None
) -> int:
    """The class index of unlabelled pixels: an integer, not a class of ``num_classes`` (when given), and
    a value that a class mask of ``dtype`` (when given) can hold (Cutout writes it into the mask)."""
    ignore_index = check_number(ignore_index, "ignore_index", integer=True)
    if num_classes is not None and 0 <= ignore_index < num_classes:
        raise ValueError(
            f"ignore_index={ignore_index} is a class index for num_classes={num_classes}: pass an "
            f"ignore_index outside [0, {num_classes - 1}] (255, or -1 for int64 masks)"
        )
    if dtype is not None:
        info = torch.iinfo(dtype)
        if not info.min <= ignore_index <= info.max:
            raise ValueError(
                f"ignore_index={ignore_index} does not fit a {dtype} class mask (values in [{info.min}, "
                f"{info.max}]): pass an ignore_index that the mask can hold"
            )
    return ignore_index


def check_distributions(target: torch.Tensor, name: str = "target", *, dense: bool = False) -> torch.Tensor:
    """Soft targets (B, K) whose rows are probability distributions: finite, >= 0, summing to 1; with
    ``dense``, soft dense targets (B, K, H, W) whose pixels sum to at most 1 (1: labelled, 0: ignored; see
    :func:`check_dense_target`).

    On the CPU one read of the three checks, with a precise message; on other devices one device-side
    assert, no host synchronisation (:func:`_assert_on_device`). The sums are compared in float32 with a
    tolerance of 1e-3 (float16/bfloat16: 1e-2), which smoothed or mixed rows meet. Choice: multi-label
    targets (rows that do not sum to 1) are refused, since mixing them with lambda would not keep their
    meaning either.
    """
    if target.numel() == 0:
        return target
    values = target.float()
    tolerance = 1e-2 if target.element_size() < 4 else 1e-3
    sums = values.sum(dim=1)
    finite = torch.isfinite(values).all()
    negative = (values < 0).any()
    off = (sums > 1.0 + tolerance).any() if dense else ((sums - 1.0).abs() > tolerance).any()
    what = "pixels" if dense else "rows"
    if not _on_host(target):
        summing = "summing to at most 1" if dense else "summing to 1"
        _assert_on_device(
            finite & ~negative & ~off,
            f"{name} must hold probability distributions: finite, non-negative {what} {summing}",
        )
        return target
    finite, negative, off = torch.stack((finite, negative, off)).tolist()  # CPU: the precise messages
    if not finite:
        raise ValueError(f"{name} holds NaN or infinite soft targets; every entry must be finite")
    if negative:
        raise ValueError(f"{name} holds negative soft targets; {what} must be probability distributions")
    if off and dense:
        raise ValueError(
            f"{name} pixels must sum to 1 (a probability distribution) or 0 (an ignored pixel), got sums "
            f"up to {float(sums.max()):.4g}"
        )
    if off:
        low, high = torch.aminmax(sums)
        raise ValueError(
            f"{name} rows must sum to 1 (probability distributions), got sums in [{float(low):.4g}, "
            f"{float(high):.4g}]"
        )
    return target


def _is_integer(target: torch.Tensor) -> bool:
    return not (target.is_floating_point() or target.is_complex() or target.dtype == torch.bool)


def _check_batch(target: torch.Tensor, batch_size: int, items: str, name: str) -> None:
    if target.shape[0] != batch_size:
        raise ValueError(f"{name} has {target.shape[0]} {items} for a batch of {batch_size} images")


def _check_classes(target: torch.Tensor, num_classes: int | None, items: str, name: str) -> None:
    """The K of soft targets (B, K) or (B, K, H, W) against ``num_classes`` (when given)."""
    if num_classes is not None and target.shape[1] != num_classes:
        raise ValueError(f"{name} has {target.shape[1]} {items}, expected num_classes={num_classes}")


#: Devices whose value checks run on the device (``torch._assert_async``; ROCm is ``"cuda"`` too).
_ASYNC_ASSERT_DEVICES = ("cuda", "meta")


def _on_host(tensor: torch.Tensor) -> bool:
    """Whether a value check reads ``tensor`` on the host, with a precise message: a CPU tensor, which has
    no host/device split.

    CUDA and meta tensors get the device-side checks of :func:`_assert_on_device` instead, so that a
    transform call never waits for the device (issue 22). Choice: a device without a
    ``torch._assert_async`` kernel (MPS, XPU in torch 2.14) keeps the host read (a synchronisation there).
    """
    return tensor.device.type not in _ASYNC_ASSERT_DEVICES


def _assert_on_device(condition: torch.Tensor, message: str) -> None:
    """Check a 0-dim bool tensor without a host synchronisation (``torch._assert_async``).

    The check runs on the device, after the kernels before it: on CUDA a failure is a device-side assert
    (``RuntimeError: CUDA error: device-side assert triggered``, reported at a later synchronising call, and
    the CUDA context cannot be used afterwards), without ``message``, which only the CPU would print. Run
    the batch on the CPU (or ``CUDA_LAUNCH_BLOCKING=1``) to get the precise error of the CPU path.
    """
    torch._assert_async(condition, message)


def check_index_range(indices: torch.Tensor, size: int, name: str, what: str) -> None:
    """Every value of the integer tensor ``indices`` in [0, ``size``): ``what`` says what they index.

    On the host for a CPU tensor (a ``ValueError`` with the range found), on the device for CUDA and meta
    tensors (:func:`_assert_on_device`: no host synchronisation in a training step).
    """
    if indices.numel() == 0:
        return
    expected = f"{name} must lie in [0, {size - 1}] ({what})"
    if not _on_host(indices):
        low, high = torch.aminmax(indices)
        _assert_on_device((low >= 0) & (high < size), expected)
        return
    low, high = torch.stack(torch.aminmax(indices)).tolist()
    if low < 0 or high >= size:
        raise ValueError(f"{expected}, got [{low}, {high}]")


def _check_class_range(indices: torch.Tensor, num_classes: int | None, name: str, aside: str = "") -> None:
    """Every value of the integer tensor ``indices`` a class index: in [0, num_classes), or >= 0 without
    ``num_classes``. ``aside`` completes the message (the ``ignore_index`` a class mask leaves out)."""
    if indices.numel() == 0:
        return
    classes = f"[0, {num_classes - 1}] for num_classes={num_classes}" if num_classes else "[0, ...)"
    if not _on_host(indices):
        low, high = torch.aminmax(indices.long())
        ok = low >= 0 if num_classes is None else (low >= 0) & (high < num_classes)
        _assert_on_device(ok, f"{name} holds class indices outside {classes}{aside}")
        return
    low, high = torch.stack(torch.aminmax(indices)).tolist()  # CPU: the precise message, no device sync
    if low < 0 or (num_classes is not None and high >= num_classes):
        raise ValueError(f"{name} holds class indices in [{low}, {high}]{aside}, outside {classes}")
