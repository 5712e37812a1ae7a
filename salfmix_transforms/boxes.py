"""Boxes of the box methods (CutMix, SaliencyMix, ResizeMix, Cutout): random draws, geometry, masks.

The random draws are small module-level functions (:func:`sample_beta`, :func:`sample_box_centres`,
:func:`minmax_box`, :func:`sample_resize_boxes`) and the geometry is deterministic given them
(:func:`cutmix_box`, :func:`box_lambda`, :func:`saliency_peaks`), so tests can pin the draws and compare
with timm's helpers (``rand_bbox``, ``rand_bbox_minmax``, ``cutmix_bbox_and_lam``). A box is four (B,)
long tensors ``(top, bottom, left, right)``, half-open: rows ``[top, bottom)``, columns ``[left, right)``.
:func:`box_mask` turns boxes into boolean masks, :func:`fill_boxes` fills them (Cutout), and
:func:`resize_from_boxes` resizes whole images into them (ResizeMix).
"""

from __future__ import annotations

import torch

from ._random import beta, randint_between

__all__ = [
    "box_lambda",
    "box_mask",
    "centred_box",
    "compute_dtype",
    "cutmix_box",
    "fill_boxes",
    "minmax_box",
    "resize_from_boxes",
    "saliency_peaks",
    "sample_beta",
    "sample_box_centres",
    "sample_resize_boxes",
]


# -- random draws (module level, so that tests can pin them) ----------------------------------------------


def sample_beta(
    alpha: float, count: int, generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """``count`` draws of ``lam ~ Beta(alpha, alpha)`` as float64 (timm: ``np.random.beta``)."""
    return beta(alpha, count, generator, device)


def sample_box_centres(
    height: int, width: int, count: int, generator: torch.Generator | None, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform box centres ``(cy, cx)`` (count,) in ``[0, H) x [0, W)`` (timm's ``rand_bbox``, margin 0).

    The rows are drawn before the columns, as in timm.
    """
    zeros = torch.zeros(count, dtype=torch.long, device=device)
    cy = randint_between(zeros, zeros + (height - 1), generator)
    cx = randint_between(zeros, zeros + (width - 1), generator)
    return cy, cx


def minmax_box(
    height: int,
    width: int,
    minmax: tuple[float, float],
    count: int,
    generator: torch.Generator | None,
    device: torch.device | str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """timm's ``rand_bbox_minmax``: boxes ``(top, bottom, left, right)`` (count,) from side ratios.

    ``cut_h`` is uniform in ``[int(H * low), int(H * high))`` (NumPy's ``randint`` excludes the high end),
    likewise ``cut_w``; the corner is uniform among the positions inside the image. Choice: when that range
    is empty (``int(H * low) == int(H * high)`` on a small image; timm raises) the side is ``int(H * low)``.
    """
    zeros = torch.zeros(count, dtype=torch.long, device=device)

    def side_range(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = int(size * minmax[0]), int(size * minmax[1])
        return zeros + low, zeros + max(high - 1, low)

    cut_h = randint_between(*side_range(height), generator)
    cut_w = randint_between(*side_range(width), generator)
    return _place_boxes(cut_h, cut_w, height, width, generator)


def sample_resize_boxes(
    height: int,
    width: int,
    tau: torch.Tensor,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ResizeMix boxes ``(top, bottom, left, right)`` for scales ``tau`` (count,).

    The pasted image is ``max(1, floor(tau * H)) x max(1, floor(tau * W))`` pixels (Qin et al.: the source
    is resized to ``tau`` of the target's sides), at a corner drawn uniformly among the positions where it
    lies entirely inside the image (:func:`_place_boxes`). Choice: at least one pixel; ``floor`` like
    CutMix's ``int``.
    """
    tau = tau.to(torch.float64)
    box_h = (tau * height).floor().long().clamp(1, height)
    box_w = (tau * width).floor().long().clamp(1, width)
    return _place_boxes(box_h, box_w, height, width, generator)


def _place_boxes(
    box_h: torch.Tensor, box_w: torch.Tensor, height: int, width: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes ``(top, bottom, left, right)`` of ``box_h x box_w`` (count,) long, at corners drawn uniformly
    among the positions where they lie entirely inside the image (rows first, as timm)."""
    zeros = torch.zeros_like(box_h)
    top = randint_between(zeros, height - box_h, generator)
    left = randint_between(zeros, width - box_w, generator)
    return top, top + box_h, left, left + box_w


# -- deterministic geometry ------------------------------------------------------------------------------


def cutmix_box(
    height: int, width: int, lam: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CutMix box ``(top, bottom, left, right)`` for ``lam`` and centre ``(cy, cx)``, clipped.

    timm's ``rand_bbox`` given its centre: the :func:`centred_box` of ``cut_h = int(H * sqrt(1 - lam))``
    rows and ``cut_w = int(W * sqrt(1 - lam))`` columns. Computed in float64 like timm's batch mode.
    """
    ratio = torch.sqrt((1.0 - lam.to(torch.float64)).clamp(min=0.0))
    cut_h = (height * ratio).floor().long()
    cut_w = (width * ratio).floor().long()
    return centred_box(cy.long(), cx.long(), cut_h, cut_w, height, width)


def centred_box(
    cy: torch.Tensor,
    cx: torch.Tensor,
    cut_h: torch.Tensor | int,
    cut_w: torch.Tensor | int,
    height: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The box ``(top, bottom, left, right)`` of ``cut_h x cut_w`` pixels centred at ``(cy, cx)`` (CutMix,
    Cutout): ``top = cy - cut_h // 2``, ``bottom = cy + (cut_h + 1) // 2`` (exactly ``cut_h`` rows before
    clipping), likewise for the columns; all corners clipped to ``[0, H]`` / ``[0, W]``."""
    top = (cy - cut_h // 2).clamp(0, height)
    bottom = (cy + (cut_h + 1) // 2).clamp(0, height)
    left = (cx - cut_w // 2).clamp(0, width)
    right = (cx + (cut_w + 1) // 2).clamp(0, width)
    return top, bottom, left, right


def box_lambda(
    top: torch.Tensor, bottom: torch.Tensor, left: torch.Tensor, right: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """``1 - box area / (H * W)`` as float64: timm's ``correct_lam`` (the weight of the kept image)."""
    area = ((bottom - top).clamp(min=0) * (right - left).clamp(min=0)).to(torch.float64)
    return 1.0 - area / float(height * width)


def saliency_peaks(saliency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column (B,) of each map's maximum; the first one in row-major order on ties (``np.argmax``)."""
    flat = saliency.reshape(saliency.shape[0], -1)
    index = flat.argmax(dim=1)
    width = saliency.shape[-1]
    return index // width, index % width


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _source_coords(
    out_index: torch.Tensor,
    start: torch.Tensor,
    length: torch.Tensor,
    size: int,
    mode: str,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each sample (B, 1) and output pixel (1, N): source indices ``i0, i1`` and the weight of ``i1``.

    ``F.interpolate``'s formulas for a resize of ``size`` source pixels to ``length`` pixels
    (``align_corners=False``): bilinear ``src = (i + 0.5) * size / length - 0.5`` clamped at 0, nearest
    ``src = floor(i * size / length)``; ``i`` counts from the box's first pixel ``start``.
    """
    scale = size / length.clamp(min=1).to(dtype)
    local = (out_index - start).to(dtype)
    if mode == "nearest":
        i0 = (local * scale).floor().long().clamp(0, size - 1)
        return i0, i0, torch.zeros_like(local)
    src = ((local + 0.5) * scale - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(0, size - 1)
    i1 = (i0 + 1).clamp(max=size - 1)
    return i0, i1, src - i0.to(dtype)


def resize_from_boxes(
    source: torch.Tensor,
    top: torch.Tensor,
    bottom: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    mode: str = "bilinear",
) -> torch.Tensor:
    """A canvas (B, C, H, W) with each whole ``source[b]`` resized into ``[top, bottom) x [left, right)``.

    Per-sample box sizes in one vectorized pass (gathers along rows then columns, no loop over samples):
    inside each box the values equal ``F.interpolate(source[b:b+1], size=(bottom-top, right-left),
    mode=mode, align_corners=False)`` (``mode`` is ``'bilinear'`` or ``'nearest'``, no antialiasing) up to
    float rounding; outside the boxes the canvas holds edge values that the caller masks out. Arithmetic in
    float32 (float64 for float64 input); the result has ``source``'s dtype.
    """
    batch, channels, height, width = source.shape
    dtype = compute_dtype(source.dtype)
    data = source.to(dtype)
    rows = torch.arange(height, device=source.device).view(1, -1)
    cols = torch.arange(width, device=source.device).view(1, -1)
    r0, r1, wr = _source_coords(rows, top.view(-1, 1), (bottom - top).view(-1, 1), height, mode, dtype)
    c0, c1, wc = _source_coords(cols, left.view(-1, 1), (right - left).view(-1, 1), width, mode, dtype)

    def gather_rows(index: torch.Tensor) -> torch.Tensor:
        return data.gather(2, index.view(batch, 1, height, 1).expand(batch, channels, height, width))

    # ``g0 * (1 - w) + g1 * w`` computed in place on the fresh gathers: the same roundings in the same order
    # as the plain expression (so the same values), with two full-size temporaries instead of five.
    wr = wr.view(batch, 1, height, 1)
    by_rows = gather_rows(r0).mul_(1.0 - wr).add_(gather_rows(r1).mul_(wr))

    def gather_cols(index: torch.Tensor) -> torch.Tensor:
        return by_rows.gather(3, index.view(batch, 1, 1, width).expand(batch, channels, height, width))

    wc = wc.view(batch, 1, 1, width)
    out = gather_cols(c0).mul_(1.0 - wc).add_(gather_cols(c1).mul_(wc))
    return out.to(source.dtype)


# -- masks -----------------------------------------------------------------------------------------------


def fill_boxes(
    x: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    bottom: torch.Tensor,
    right: torch.Tensor,
    value: float,
    applied: torch.Tensor | None = None,
    *,
    inplace: bool = False,
) -> torch.Tensor:
    """Fill each applied sample's box ``[top, bottom) x [left, right)`` with ``value`` (Cutout).

    The boxes are (B,) tensors and may reach past the image (:func:`box_mask`). Returns a new tensor with
    the dtype, device and memory format of ``x`` (``x`` itself with ``inplace=True``); ``applied=None``
    means every sample.
    """
    if applied is not None:  # a non-applied sample gets an empty box
        bottom = torch.where(applied.to(top.device), bottom, top)
    mask = box_mask(top, left, bottom, right, x.shape[2], x.shape[3])
    out = x if inplace else x.clone()
    return out.masked_fill_(mask, value)


def box_mask(
    top: torch.Tensor | int,
    left: torch.Tensor | int,
    bottom: torch.Tensor | int,
    right: torch.Tensor | int,
    height: int,
    width: int,
) -> torch.Tensor:
    """Boolean masks (B, 1, H, W) of the per-sample half-open boxes ``[top, bottom) x [left, right)``.

    The corners are (B,) integer tensors (or Python ints, broadcast); boxes may be empty or reach past the
    image, only their part inside the image is marked. The mask is built on the device of the corners as
    the outer product of a row mask (B, H, 1) and a column mask (B, 1, W).
    """
    device = next((t.device for t in (top, left, bottom, right) if isinstance(t, torch.Tensor)), None)
    # A Python int is filled in on the device (``torch.as_tensor(int, device="cuda")`` is a blocking copy).
    top, left, bottom, right = (
        (
            torch.as_tensor(t, device=device)
            if isinstance(t, torch.Tensor)
            else torch.full((), t, device=device)
        ).reshape(-1, 1, 1)
        for t in (top, left, bottom, right)
    )
    rows = torch.arange(height, device=top.device).view(1, -1, 1)
    cols = torch.arange(width, device=top.device).view(1, 1, -1)
    in_rows = (rows >= top) & (rows < bottom)
    in_cols = (cols >= left) & (cols < right)
    if torch.compiler.is_compiling():
        # inductor fuses the plain ``&``, and its CPU code generator fails on the uint8 -> bool view below
        # (a C++ compile error in torch 2.14).
        return (in_rows & in_cols).unsqueeze(1)
    # A uint8 product viewed as bool (0 and 1 are valid bools): on CPU a broadcast bool ``&`` is a scalar
    # loop, about 3x slower.
    return (in_rows.to(torch.uint8) * in_cols.to(torch.uint8)).view(torch.bool).unsqueeze(1)
