"""Fine-grained static saliency (Montabone & Soto 2010), batched in torch: the map SaliencyMix uses.

SaliencyMix (Uddin et al., ICLR 2021) centres its box on the peak of OpenCV contrib's
``cv2.saliency.StaticSaliencyFineGrained`` map of the source image. That detector implements the
centre-surround intensity channel of S. Montabone and A. Soto, "Human detection using a mobile platform and
novel features derived from a visual saliency mechanism", Image and Vision Computing 28(3), 2010. The steps
(``modules/saliency/src/staticSaliencyFineGrained.cpp``, ``calcIntensityChannel``) are:

1. grayscale: ``cvtColor(BGR2GRAY)``, ``Y = 0.299 R + 0.587 G + 0.114 B``;
2. two 3x3 Gaussian blurs (``GaussianBlur(gray, gray, Size(3, 3), 0, 0)`` twice: kernel
   ``[1/4, 1/2, 1/4]`` in each direction, border ``BORDER_REFLECT_101``);
3. one integral image ``I`` of size (H+1, W+1);
4. for each neighbourhood ``n`` in ``(12, 24, 48, 28, 56, 112)`` and every pixel ``(y, x)``
   (``getMean``): the corners ``P1 = (y - n + 1, x - n + 1)`` and ``P2 = (y + n + 1, x + n + 1)`` are
   clipped to the integral image (``[0, H]`` x ``[0, W]``), the box sum ``S`` of rows ``[P1.y, P2.y)`` and
   columns ``[P1.x, P2.x)`` (which contains the pixel) is read from ``I``, and the surround mean excludes the
   centre pixel ``g``: ``m = (S - g) / (area - 1)``. Then ``on_n = max(g - m, 0)`` and
   ``off_n = max(m - g, 0)`` (``getIntensityScaled``);
5. ``mixScales``: ``on = sum_n on_n`` divided by its maximum over the image, likewise ``off``;
6. ``mixOnOff``: ``saliency = (on + off) / max(max(on), max(off))``.

:func:`fine_grained_saliency` does all of this for a whole batch at once on the input's device: the box sums
of every pixel come from the cumulative-sum integral image by gathering its rows and columns at the clipped
corners (four gathers per scale, no loop over pixels or images, no copy to the host).

Where float arithmetic differs from OpenCV's ``uint8`` pipeline (the result is OpenCV's map divided by 255,
up to these differences):

* OpenCV rounds the gray image and each blurred image to ``uint8`` (fixed-point ``BGR2GRAY`` weights
  4899/9617/1868 / 2**14, fixed-point blur); here everything stays in floating point;
* OpenCV truncates every ``on_n``/``off_n`` and both normalized maps to ``uint8`` (``(uchar)`` casts, i.e.
  ``floor``); here nothing is truncated;
* OpenCV's last step computes ``(uchar)(255 * (on + off) / max)``, which overflows (C++ undefined behaviour,
  a wrap-around modulo 256 in practice) where a pixel is both "on" at some scales and "off" at others and
  ``on + off > max``; here the value is kept, so the map lies in ``[0, 2]`` instead of wrapping;
* a constant image (all differences 0) makes OpenCV divide 0 by 0; here its map is all zeros;
* a 1x1 image has an empty surround (OpenCV divides by 0); here its surround mean is the pixel itself (0).

A property of the algorithm (OpenCV's too) worth knowing: ``on`` and ``off`` are each normalized to a maximum
of 1, so the map has (at least) two maxima of value 1 when no pixel is both "on" and "off": the most "on"
pixel (a bright blob) and the most "off" pixel (for a single bright blob on a plain background, a background
pixel near the blob, often towards the border where the clipped neighbourhood is small). An ``argmax`` then
picks the first of them in row-major order, which is what SaliencyMix's reference code does.

Because every difference is taken between a pixel and a mean of its neighbours and each map is normalized
by its maximum, the result does not change when the gray image is scaled by a positive factor or shifted:
images in ``[0, 1]``, ``[0, 255]`` or mean/std-normalized with one statistic for all channels give the same
map. Per-channel normalization changes the relative weight of the channels (a small effect; pass the
un-normalized images to match OpenCV closely).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validation import check_images

__all__ = ["NEIGHBOURHOODS", "fine_grained_saliency", "gaussian_blur_3x3", "rgb_to_gray"]

#: The six neighbourhood half-sizes of OpenCV's ``calcIntensityChannel`` (3*4, 3*4*2, 3*4*2*2, 7*4, ...).
NEIGHBOURHOODS: tuple[int, ...] = (12, 24, 48, 28, 56, 112)

# cvtColor(COLOR_BGR2GRAY) weights, written for RGB channel order (R, G, B).
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half and bfloat16 are too coarse for sums over 224 x 224 pixels: compute in float32 (float64 stays).
    return torch.float64 if dtype == torch.float64 else torch.float32


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) with C = 3 (RGB) or C = 1 to gray maps (B, H, W) in float32 (float64 stays).

    Choice: the channels are read as R, G, B (the package's convention), so the weights 0.299, 0.587, 0.114
    of ``BGR2GRAY`` go to channels 0, 1, 2: the gray image OpenCV computes for the same picture stored in
    its BGR order. (SaliencyMix's reference code hands RGB tensors to OpenCV, which then weights R by 0.114;
    we do not reproduce that.) A single channel is used as it is.
    """
    x = x.detach().to(_compute_dtype(x.dtype))
    if x.shape[1] == 1:
        return x[:, 0]
    if x.shape[1] != 3:
        raise ValueError(
            f"x must have 1 (gray) or 3 (RGB) channels for the fine-grained saliency, got {x.shape[1]}"
        )
    r, g, b = _GRAY_WEIGHTS
    return r * x[:, 0] + g * x[:, 1] + b * x[:, 2]


def _reflect101_shifts(gray: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous and next pixel of every pixel along ``dim`` (-2 or -1), with ``BORDER_REFLECT_101``.

    ``gfedcb|abcdefgh|gfedcba``: the neighbour of the first pixel before it is the second pixel (PyTorch's
    ``"reflect"`` padding). An axis of length 1 reflects onto itself (OpenCV's ``borderInterpolate`` gives
    index 0). Implemented with one reflect padding and two shifted views (no gather: ``index_select`` along
    the last dimension is slow on CPU).
    """
    if gray.shape[dim] == 1:
        return gray, gray
    height, width = gray.shape[-2:]
    pad = (0, 0, 1, 1) if dim == -2 else (1, 1, 0, 0)
    padded = F.pad(gray.reshape(-1, 1, height, width), pad, mode="reflect")
    padded = padded.view(*gray.shape[:-2], *padded.shape[-2:])
    return padded.narrow(dim, 0, gray.shape[dim]), padded.narrow(dim, 2, gray.shape[dim])


def gaussian_blur_3x3(gray: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``GaussianBlur(src, dst, Size(3, 3), 0, 0)`` on maps (B, H, W), in floating point.

    With ``sigma = 0`` and a 3-tap kernel OpenCV uses its fixed small kernel ``[1/4, 1/2, 1/4]`` (separable),
    with border ``BORDER_REFLECT_101``.
    """
    up, down = _reflect101_shifts(gray, -2)
    gray = 0.25 * up + 0.5 * gray + 0.25 * down
    left, right = _reflect101_shifts(gray, -1)
    return 0.25 * left + 0.5 * gray + 0.25 * right


def _integral_image(gray: torch.Tensor) -> torch.Tensor:
    """``I[b, y, x] = sum(gray[b, :y, :x])``, shape (B, H+1, W+1) (OpenCV's ``integral``)."""
    summed = gray.cumsum(dim=-2).cumsum(dim=-1)
    return F.pad(summed, (1, 0, 1, 0))


def _clipped_corners(
    size: int, neighbourhood: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``P1 = clip(i - n + 1, 0, size)`` and ``P2 = clip(i + n + 1, 0, size)`` for every pixel index ``i``."""
    index = torch.arange(size, device=device)
    return (index - neighbourhood + 1).clamp(0, size), (index + neighbourhood + 1).clamp(0, size)


def _corner_slices(size: int, neighbourhood: int, pad: int) -> tuple[slice | int, slice | int]:
    """Where the clipped corners ``P1``, ``P2`` of every pixel lie along one axis of the padded integral.

    The integral image is edge-replicated by ``pad`` entries before and after along the axis (see
    :func:`_padded_integral`), so the clipped index ``clip(i + k, 0, size)`` of pixel ``i`` is entry
    ``i + k + pad`` of the padded axis wherever that stays inside the padding: the ``size`` corners form one
    contiguous slice (a view, no gather). When the neighbourhood covers the whole axis (``n >= size``) every
    ``P1`` is 0 and every ``P2`` is ``size``: a single entry, broadcast.
    """
    if neighbourhood >= size:
        return pad, pad + size
    start = pad - neighbourhood + 1
    stop = pad + neighbourhood + 1
    return slice(start, start + size), slice(stop, stop + size)


def _axis_pad(size: int) -> int:
    """Padding that :func:`_corner_slices` needs: the largest neighbourhood smaller than the axis."""
    return max((n for n in NEIGHBOURHOODS if n < size), default=0)


def _padded_integral(integral: torch.Tensor) -> torch.Tensor:
    """The integral image (B, H+1, W+1) edge-replicated by :func:`_axis_pad` entries on every side."""
    pad_h = _axis_pad(integral.shape[-2] - 1)
    pad_w = _axis_pad(integral.shape[-1] - 1)
    if pad_h == 0 and pad_w == 0:
        return integral
    padded = F.pad(integral.unsqueeze(1), (pad_w, pad_w, pad_h, pad_h), mode="replicate")
    return padded.squeeze(1)


def _centre_surround(
    padded: torch.Tensor, gray: torch.Tensor, neighbourhood: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(on_n, off_n)`` (B, H, W) for one neighbourhood (OpenCV's ``getMean``, ``getIntensityScaled``).

    ``padded`` is :func:`_padded_integral` of the gray map: the four corner values of every pixel's clipped
    box are read as shifted views of it (no gather; ``index_select`` along the last dimension is slow on CPU).
    """
    height, width = gray.shape[-2:]
    top, bottom = _corner_slices(height, neighbourhood, _axis_pad(height))
    left, right = _corner_slices(width, neighbourhood, _axis_pad(width))

    def corner(rows: slice | int, cols: slice | int) -> torch.Tensor:
        # An int keeps its axis as length 1 (broadcast over the pixels); a slice selects ``size`` entries.
        rows = rows if isinstance(rows, slice) else slice(rows, rows + 1)
        cols = cols if isinstance(cols, slice) else slice(cols, cols + 1)
        return padded[:, rows, cols]

    box_sum = corner(bottom, right) + corner(top, left) - corner(bottom, left) - corner(top, right)
    box_sum = box_sum.expand_as(gray)
    top_index, bottom_index = _clipped_corners(height, neighbourhood, gray.device)
    left_index, right_index = _clipped_corners(width, neighbourhood, gray.device)
    surround = ((bottom_index - top_index).view(-1, 1) * (right_index - left_index).view(1, -1) - 1).to(
        gray.dtype
    )
    mean = torch.where(surround > 0, (box_sum - gray) / surround.clamp(min=1), gray)
    return (gray - mean).clamp(min=0), (mean - gray).clamp(min=0)


def _normalize_by_max(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map (B, H, W) by its maximum; an all-zero map stays zero."""
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp(min=torch.finfo(maps.dtype).tiny), 0.0)


def fine_grained_saliency(x: torch.Tensor) -> torch.Tensor:
    """Montabone & Soto fine-grained static saliency of a batch (B, C, H, W) -> (B, H, W).

    The algorithm of OpenCV contrib's ``StaticSaliencyFineGrained`` (steps 1-6 of the module docstring),
    vectorized over the batch and the pixels on ``x``'s device. ``C`` is 3 (RGB) or 1 (gray). The result is
    float32 (float64 for float64 input), in ``[0, 2]`` (OpenCV's ``uint8`` map / 255 where OpenCV does not
    overflow), and carries no gradient. See the module docstring for the differences from OpenCV's integer
    arithmetic.
    """
    x = check_images(x)
    gray = gaussian_blur_3x3(gaussian_blur_3x3(rgb_to_gray(x)))
    # Every quantity below is a difference between a pixel and a mean of pixels, so removing each image's
    # mean changes nothing but keeps the cumulative sums small (float32 accuracy on large images).
    gray = gray - gray.mean(dim=(-2, -1), keepdim=True)
    padded = _padded_integral(_integral_image(gray))
    on = torch.zeros_like(gray)
    off = torch.zeros_like(gray)
    for neighbourhood in NEIGHBOURHOODS:  # six scales (mixScales), not a loop over samples
        on_n, off_n = _centre_surround(padded, gray, neighbourhood)
        on += on_n
        off += off_n
    on, off = _normalize_by_max(on), _normalize_by_max(off)
    # mixOnOff: (on + off) / max(max(on), max(off)).
    peak = torch.maximum(on.amax(dim=(-2, -1), keepdim=True), off.amax(dim=(-2, -1), keepdim=True))
    return torch.where(peak > 0, (on + off) / peak.clamp(min=torch.finfo(on.dtype).tiny), 0.0)
