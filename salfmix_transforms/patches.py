"""Geometry and pixel operations of self-mixing (SalfMix, Algorithm 1), vectorized over the batch.

Algorithm 1 of Choi et al. (Sensors 2021) line by line is in :class:`~salfmix_transforms.salfmix.SalfMix`'s
docstring: line 1 average-pools the saliency map ``M`` (B, H, W) into a grid whose every element stands for
one *cell* of the image (:func:`cell_size`, :func:`pool_saliency`); line 2 picks the most and least salient
cells ``R_m``, ``R_l`` (:func:`extreme_cells`); lines 3-5 size and place the patches ``P_m`` around ``R_m``
and ``P_l`` around ``R_l`` (:func:`patch_size`, :func:`patch_corners`); line 6 copies ``P_m`` over ``P_l``
(:func:`copy_patches`).

Every function works on whole batches with tensor arithmetic on the tensor's device (no Python loop over
the samples), and every random draw goes through :mod:`salfmix_transforms._random` so that a
``torch.Generator`` makes the result reproducible. The same helpers serve the two-image methods
(:mod:`salfmix_transforms.boxes`), the visualizer and the per-sample pipeline transforms.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from ._random import randint_from_uniform
from ._validation import check_grid, check_ratio
from .boxes import box_mask, fill_boxes

__all__ = [
    "SelfMixPlan",
    "cell_size",
    "copy_patches",
    "extreme_cells",
    "fill_patches",
    "pasted_window_free",
    "patch_corners",
    "patch_size",
    "pool_saliency",
]

_T = TypeVar("_T")

# Tolerance against binary floating-point rounding in floor(W * r): 0.29 * 100 is 28.999999999999996.
_FLOOR_EPS = 1e-9


def _per_shape_cache(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Cache a function that builds small constant tensors from shapes (``functools.lru_cache``, 16 entries).

    Under ``torch.compile`` the function is traced directly instead: its constants fold into the graph, and
    dynamo does not warn about tracing through an ``lru_cache`` wrapper.
    """
    cached = functools.lru_cache(maxsize=16)(fn)

    @functools.wraps(fn)
    def wrapper(*args: object) -> _T:
        return fn(*args) if torch.compiler.is_compiling() else cached(*args)

    return wrapper


def cell_size(height: int, width: int, grid: int) -> tuple[int, int]:
    """The pooling kernel (= stride) ``(H // n, W // n)`` of Algorithm 1, line 1.

    The pooled grid then has ``floor(H / kh)`` rows and ``floor(W / kw)`` columns (no padding); pixels past
    the last full cell belong to no cell but can still be covered by a patch.

    Choice: for non-square images the kernel is ``(H // n, W // n)`` (the paper only treats square images).

    Raises:
        ValueError: if ``grid > min(height, width)`` (the kernel would be 0).
    """
    grid = check_grid(grid, height=height, width=width)
    return height // grid, width // grid


def patch_size(height: int, width: int, ratio: float) -> tuple[int, int]:
    """The patch size ``(ph, pw) = (floor(H * r), floor(W * r))``; Algorithm 1, line 3 (``o = floor(W * r)``).

    Choice: for non-square images the patch height is ``floor(H * r)`` and its width ``floor(W * r)`` (square
    for square images); both are at least 1 pixel; the floor forgives a binary rounding error of 1e-9 (so
    ``r = 0.29`` on 100 pixels gives 29, not 28).
    """
    ratio = check_ratio(ratio)
    patch_height = min(height, max(1, math.floor(height * ratio + _FLOOR_EPS)))
    patch_width = min(width, max(1, math.floor(width * ratio + _FLOOR_EPS)))
    return patch_height, patch_width


def pool_saliency(saliency: torch.Tensor, cell_height: int, cell_width: int) -> torch.Tensor:
    """Average-pool a saliency map (B, H, W) into the cell grid (B, gh, gw), float32; Algorithm 1, line 1.

    Kernel = stride = ``(cell_height, cell_width)``, no padding, so ``gh = H // cell_height`` and
    ``gw = W // cell_width``. With a 1x1 kernel (the ``pool=False`` ablation) the result is the map itself
    (as float32). NaN and infinite values propagate into their cells; :func:`extreme_cells` deals with them.

    The block means are two sums, first over the rows of each cell (a reduction over a middle dimension,
    vectorised along the image rows), then over the columns, and one division: on CPU 1.3x-2x faster than
    ``F.avg_pool2d`` with the same kernel, equal to it up to float rounding.
    """
    if saliency.dim() != 3:
        raise ValueError(f"saliency must have shape (B, H, W), got {tuple(saliency.shape)}")
    saliency = saliency.detach().to(torch.float32)
    if cell_height == 1 and cell_width == 1:
        return saliency
    batch, height, width = saliency.shape
    grid_h, grid_w = height // cell_height, width // cell_width
    cropped = saliency[:, : grid_h * cell_height, : grid_w * cell_width]
    rows = cropped.unflatten(1, (grid_h, cell_height)).sum(dim=2)  # (B, gh, gw * kw)
    cells = rows.view(batch, grid_h, grid_w, cell_width).sum(dim=3)
    return cells.div_(cell_height * cell_width)


@_per_shape_cache
def _cell_table(grid_h: int, grid_w: int, device: torch.device) -> torch.Tensor:
    """``(row, col)`` (gh * gw, 2) of every flat cell index (cached per grid; never modified in place)."""
    index = torch.arange(grid_h * grid_w, device=device)
    return torch.stack((index // grid_w, index % grid_w), dim=1)


def extreme_cells(pooled: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``R_m`` and ``R_l`` of every pooled map (B, gh, gw) at once, as (B, 2, 2) long; Algorithm 1, line 2.

    ``cells[:, 0]`` is the ``(row, col)`` of the argmax cell ``R_m``, ``cells[:, 1]`` that of the argmin
    cell ``R_l``. ``noise`` (B, 2, gh * gw) holds the uniform tie-break scores (``noise[:, 0]`` for
    ``R_m``, ``noise[:, 1]`` for ``R_l``), so this function draws nothing itself.

    The rule (choice: the paper does not say): ties are broken uniformly at random among the tied cells (a
    plain ``argmax`` would always favour the top-left cell), and a constant map or a map with NaN/inf gets a
    uniformly random cell (never an error). The tied extreme cells, or every cell of a map with NaN/inf, are
    the candidates, and the candidate with the highest noise wins. The argmin is the argmax of the negated map
    (negation is exact, so the tied cells are the same); both are reduced in one pass over the stacked
    (B, 2, gh * gw) maps. A map holds a NaN or an infinity exactly when one of its two maxima is not
    finite (``amax`` returns NaN for a NaN; +inf or -inf in the map is +inf in one of the two signs), so
    only the (B, 2) maxima are checked.
    """
    batch, grid_h, grid_w = pooled.shape
    flat = pooled.reshape(batch, 1, grid_h * grid_w)
    signed = torch.cat((flat, -flat), dim=1)
    best = signed.amax(dim=2, keepdim=True)
    valid = torch.isfinite(best).all(dim=1, keepdim=True)
    candidates = (signed == best) | ~valid
    index = torch.where(candidates, noise, -1.0).argmax(dim=2)
    return _cell_table(grid_h, grid_w, pooled.device)[index]


@_per_shape_cache
def _placement_bounds(
    cell: tuple[int, int], patch: tuple[int, int], size: tuple[int, int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-axis (rows, cols) constants of :func:`patch_corners`, as (2,) long tensors (cached)."""

    def as_tensor(values: list[int]) -> torch.Tensor:
        # Built on the host, then a non-blocking copy: ``torch.tensor(..., device="cuda")`` would wait for it.
        return torch.tensor(values, dtype=torch.long).to(device, non_blocking=True)

    shrink = [min(0, c - p) for c, p in zip(cell, patch)]  # lo = cell_start + min(0, kh - ph)
    grow = [max(0, c - p) for c, p in zip(cell, patch)]  # hi = cell_start + max(0, kh - ph)
    last = [s - p for s, p in zip(size, patch)]  # the last top row (left column) inside the image
    return as_tensor(list(cell)), as_tensor(shrink), as_tensor(grow), as_tensor(last)


def patch_corners(
    cells: torch.Tensor,
    cell_height: int,
    cell_width: int,
    patch_height: int,
    patch_width: int,
    height: int,
    width: int,
    uniforms: torch.Tensor,
) -> torch.Tensor:
    """Top-left corners of patches placed around cells, from given uniforms; Algorithm 1, lines 4-5.

    ``cells`` (..., 2) are ``(row, col)`` grid cells (SalfMix passes (B, 2, 2): ``R_m`` and ``R_l`` from
    :func:`extreme_cells`) and ``uniforms`` (..., 2) float32 in [0, 1) one draw per coordinate. Returns
    the ``(top, left)`` corners (..., 2) (for SalfMix, ``corners[:, 0]`` is ``P_m``, ``corners[:, 1]`` is
    ``P_l``).

    A patch at least as large as the cell is placed uniformly among the positions where it contains the
    whole cell and lies inside the image. Choice: a patch smaller than the cell (``o < kh``) is placed
    uniformly *inside* the cell. Both cases are one closed range for the top row,
    ``lo = max(0, min(cell_top, cell_bottom - ph))``, ``hi = min(H - ph, max(cell_top, cell_bottom - ph))``
    (``cell_bottom`` exclusive), and likewise for the columns; all coordinates are computed in one pass.
    """
    cell, shrink, grow, last = _placement_bounds(
        (cell_height, cell_width), (patch_height, patch_width), (height, width), cells.device
    )
    start = cells * cell
    low = (start + shrink).clamp_(min=0)
    high = torch.minimum(start + grow, last)
    return randint_from_uniform(uniforms, low, high)


@dataclass(frozen=True)
class SelfMixPlan:
    """Everything Algorithm 1 decides for one batch, before any pixel is touched.

    Attributes:
        src_top, src_left: (B,) long, top-left corner of ``P_m`` (the patch that is copied).
        dst_top, dst_left: (B,) long, top-left corner of ``P_l`` (the patch that is overwritten).
        patch_height, patch_width: the patch size (same for the whole batch).
        max_cell, min_cell: (B, 2) long, ``(row, col)`` of ``R_m`` and ``R_l`` in the pooled grid.
        cell_height, cell_width: the pooling kernel, i.e. the size of one cell in pixels.
        applied: (B,) bool, whether the sample is transformed (``prob``).
    """

    src_top: torch.Tensor
    src_left: torch.Tensor
    dst_top: torch.Tensor
    dst_left: torch.Tensor
    patch_height: int
    patch_width: int
    max_cell: torch.Tensor
    min_cell: torch.Tensor
    cell_height: int
    cell_width: int
    applied: torch.Tensor


def _window_index(
    top: torch.Tensor, left: torch.Tensor, patch_height: int, patch_width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index grids (B,1,1), (B,ph,1), (B,1,pw) that address each sample's (ph, pw) window."""
    device = top.device
    batch_index = torch.arange(top.shape[0], device=device).view(-1, 1, 1)
    rows = (top.long().view(-1, 1) + torch.arange(patch_height, device=device)).unsqueeze(2)
    cols = (left.long().view(-1, 1) + torch.arange(patch_width, device=device)).unsqueeze(1)
    return batch_index, rows, cols


@_per_shape_cache
def _window_offsets(
    batch: int,
    channels: int,
    height: int,
    width: int,
    patch_height: int,
    patch_width: int,
    device: torch.device,
) -> torch.Tensor:
    """Flat offsets (B, C, ph, pw) of a window at the top-left corner of each (sample, channel) image.

    Adding ``top * W + left`` of a sample moves its windows; cached per shape (never modified in place).
    """
    plane = height * width
    sample = torch.arange(batch, device=device).view(-1, 1, 1, 1) * (channels * plane)
    channel = torch.arange(channels, device=device).view(1, -1, 1, 1) * plane
    rows = torch.arange(patch_height, device=device).view(1, 1, -1, 1) * width
    cols = torch.arange(patch_width, device=device).view(1, 1, 1, -1)
    return sample + channel + rows + cols


def copy_patches(
    x: torch.Tensor, plan: SelfMixPlan, *, inplace: bool = False, all_applied: bool = False
) -> torch.Tensor:
    """Copy ``P_m`` over ``P_l`` in every applied image; Algorithm 1, line 6.

    Returns a new tensor with the dtype, device and memory format of ``x``, or ``x`` itself, overwritten,
    with ``inplace=True`` (what timm's ``Mixup`` does; it saves one copy of the batch). The source window is
    read from the *original* image (all source windows are gathered before anything is written), so
    overlapping ``P_m`` and ``P_l`` are handled as if ``P_m`` had been cut out first. Samples with
    ``plan.applied`` false come back unchanged.

    Args:
        x: images (B, C, H, W) of any dtype and memory format (integer class masks viewed as
            (B, 1, H, W) too).
        plan: the decisions of Algorithm 1, lines 1-5 (:meth:`salfmix_transforms.SalfMix.plan`).
        inplace: overwrite ``x`` and return it.
        all_applied: a promise that ``plan.applied`` is all true (``prob=1``), which skips the redirection
            of skipped samples.

    Returns:
        the images with ``P_m`` copied over ``P_l``.
    """
    # A non-applied sample has its destination set to its own source, which writes the original pixels back
    # onto themselves: no data-dependent shapes, no host synchronisation. Each branch reads every source
    # window into a new tensor before it writes, so ``out`` may be ``x`` itself.
    batch, channels, height, width = x.shape
    out = x if inplace else x.clone()
    ph, pw = plan.patch_height, plan.patch_width
    if x.is_contiguous() and out.is_contiguous():
        # One index_select of the source windows and one index_copy_ into the destination windows on the
        # flat (B * C * H * W) views, with the window offsets cached per shape: on CPU about 2x faster than a
        # gather / scatter_ on the (B, C, H * W) view.
        # Flat origins top * W + left of P_m and P_l, stacked (2, B); then both index vectors in one add.
        origins = torch.stack((plan.src_top, plan.dst_top)).long() * width + torch.stack(
            (plan.src_left, plan.dst_left)
        )
        if not all_applied:
            origins[1] = torch.where(plan.applied.to(x.device), origins[1], origins[0])
        offsets = _window_offsets(batch, channels, height, width, ph, pw, x.device)
        index = offsets + origins.view(2, batch, 1, 1, 1)
        out.view(-1).index_copy_(0, index[1].view(-1), x.view(-1).index_select(0, index[0].view(-1)))
        return out
    applied = plan.applied.to(x.device)
    dst_top = torch.where(applied, plan.dst_top, plan.src_top)
    dst_left = torch.where(applied, plan.dst_left, plan.src_left)
    # Other layouts: the (ph, pw) windows by flat pixel indices row * W + col on the (B, C, H * W) view (one
    # gather, one scatter_); if H and W do not merge into one dimension (an exotic stride layout), an
    # index-put with (B, ph, pw) index grids.
    if height == 1 or out.stride(2) == out.stride(3) * width:

        def flat(top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:  # (B, C, ph * pw) pixel indices
            _, rows, cols = _window_index(top, left, ph, pw)
            return (rows * width + cols).view(batch, 1, ph * pw).expand(batch, channels, -1)

        flat_out = out.view(batch, channels, height * width)
        src = torch.gather(x.reshape(batch, channels, height * width), 2, flat(plan.src_top, plan.src_left))
        flat_out.scatter_(2, flat(dst_top, dst_left), src)
        return out
    batch_index, src_rows, src_cols = _window_index(plan.src_top, plan.src_left, ph, pw)
    _, dst_rows, dst_cols = _window_index(dst_top, dst_left, ph, pw)
    # Advanced indices split by the channel slice: the windows are laid out (B, ph, pw, C).
    out[batch_index, :, dst_rows, dst_cols] = x[batch_index, :, src_rows, src_cols]
    return out


def fill_patches(
    x: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    patch_height: int,
    patch_width: int,
    value: float,
    applied: torch.Tensor | None = None,
    *,
    inplace: bool = False,
) -> torch.Tensor:
    """Fill each applied sample's (ph, pw) window at ``(top, left)`` with ``value`` (SaliencyCutout).

    Returns a new tensor with the dtype, device and memory format of ``x`` (``x`` itself, filled, with
    ``inplace=True``); ``applied=None`` means every sample.
    """
    return fill_boxes(x, top, left, top + patch_height, left + patch_width, value, applied, inplace=inplace)


def pasted_window_free(plan: SelfMixPlan, height: int, width: int) -> torch.Tensor:
    """The provenance of a self-mix: (B, H, W) float32, 0 on ``P_l`` of every applied sample, else 1.

    ``P_l`` holds the pixels of ``P_m``: the sample's own content, but not at its own place, so a gradient
    read there must not be written back to ``P_l``'s coordinates (SaliencyCache).
    """
    bottom = torch.where(plan.applied, plan.dst_top + plan.patch_height, plan.dst_top)
    pasted = box_mask(plan.dst_top, plan.dst_left, bottom, plan.dst_left + plan.patch_width, height, width)
    return (~pasted[:, 0]).float()
