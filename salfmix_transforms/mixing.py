"""Two-image mixing baselines (the methods HybridMix combines with SalfMix, Table 2), with timm's semantics.

* :class:`Mixup` (Zhang et al., ICLR 2018): ``x = lam * x_i + (1 - lam) * x_j``, ``lam ~ Beta(a, a)``.
* :class:`CutMix` (Yun et al., ICCV 2019): a box of side ``sqrt(1 - lam)`` of the image's, at a uniform
  centre, is cut from ``x_j`` and pasted into ``x_i`` (timm's ``rand_bbox`` / ``rand_bbox_minmax``).
* :class:`SaliencyMix` (Uddin et al., ICLR 2021): the CutMix box, centred on the peak of the *source*
  image's fine-grained static saliency (:func:`~salfmix_transforms.static_saliency.fine_grained_saliency`).
* :class:`ResizeMix` (Qin et al., 2020): the whole source image, resized to ``tau`` of the sides
  (``tau ~ U(scope)``), is pasted at a uniform position.

Conventions shared with ``timm.data.Mixup`` (so a timm training loop sees the same numbers):

* the partner of sample ``i`` is sample ``B - 1 - i`` (the batch flipped);
* ``lam`` is the weight of the *kept* image ``x_i``; the target is ``lam * y_i + (1 - lam) * y_j`` built from
  label-smoothed one-hot rows (:func:`~salfmix_transforms.targets.to_soft_targets`,
  :func:`~salfmix_transforms.targets.mix_targets`); for the box methods ``lam`` becomes
  ``1 - box area / (H * W)`` with ``correct_lam`` (timm's ``cutmix_bbox_and_lam``);
* ``mode='batch'``: one set of parameters (one ``lam``, one box) for the whole batch, applied with
  probability ``prob``; ``'elem'``: parameters and the ``prob`` draw per sample; ``'pair'``: per pair,
  i.e. ``B // 2`` draws concatenated with their flip, so samples ``i`` and ``B - 1 - i`` swap the same
  region (the mix is symmetric within a pair).

Choices beyond timm (which asserts an even batch and loops over the samples):

* odd batch sizes are allowed: the middle sample ``B // 2`` is its own partner, so it is returned unchanged
  with its (smoothed) one-hot label, in every mode; a batch of one image is returned unchanged likewise;
* everything is vectorized: per-sample boxes are one small boolean mask (B, 1, H, W) applied with a single
  ``torch.where`` (a batch-wide box is a sliced copy), per-sample ResizeMix scales are one gather-based
  bilinear resize, and the frame writes each result into one output tensor (few full-size temporaries);
* targets are always soft (B, K); ``K`` is ``num_classes`` or, when that is ``None``, the width of the soft
  targets given (class indices then need ``num_classes``).

The random draws are small module-level functions (:func:`sample_beta`, :func:`sample_box_centres`,
:func:`minmax_box`, :func:`sample_resize_boxes`) and the geometry is deterministic given them
(:func:`cutmix_box`, :func:`box_lambda`), so tests can pin them and compare with timm's helpers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ._base import BatchTransform
from ._random import beta, rand, randint_between
from ._validation import check_non_negative, check_probability, check_saliency
from .patches import box_mask
from .static_saliency import fine_grained_saliency
from .targets import infer_num_classes, mix_targets

__all__ = [
    "MODES",
    "CutMix",
    "Mixup",
    "ResizeMix",
    "SaliencyMix",
    "TwoImageMix",
    "box_lambda",
    "check_minmax",
    "check_mode",
    "check_scope",
    "cutmix_box",
    "infer_num_classes",
    "minmax_box",
    "mix_pairs",
    "resize_from_boxes",
    "saliency_peaks",
    "sample_beta",
    "sample_box_centres",
    "sample_resize_boxes",
]

MODES = ("batch", "pair", "elem")

# Elements per chunk of the temporary in :func:`_mix_with_partner` (256 KiB of float32: stays in cache).
_CHUNK_ELEMENTS = 1 << 16


# -- argument checks ------------------------------------------------------------------------------------


def check_mode(mode: object, name: str = "mode") -> str:
    """One of ``'batch'``, ``'pair'``, ``'elem'`` (timm's ``Mixup`` modes)."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{name} must be one of {MODES}, got {mode!r}")
    return mode


def check_alpha(alpha: object, name: str = "alpha") -> float:
    """A Beta-distribution parameter > 0 (a standalone method with ``alpha = 0`` would never mix)."""
    alpha = check_non_negative(alpha, name)
    if alpha == 0.0 or math.isinf(alpha):
        raise ValueError(f"{name} must be > 0 and finite, got {alpha}")
    return alpha


def _check_interval(value: object, name: str, low_open: bool) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    low, high = value
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
            raise TypeError(f"{name} must hold two real numbers, got {value!r}")
    low, high = float(low), float(high)
    low_ok = low > 0.0 if low_open else low >= 0.0
    if not (low_ok and low <= high <= 1.0):
        interval = "0 < low <= high <= 1" if low_open else "0 <= low < high <= 1"
        raise ValueError(f"{name} must satisfy {interval}, got {value!r}")
    return low, high


def check_minmax(minmax: object, name: str = "cutmix_minmax") -> tuple[float, float] | None:
    """``None`` or timm's ``cutmix_minmax``: box side ratios ``(low, high)`` with ``0 <= low < high <= 1``."""
    if minmax is None:
        return None
    low, high = _check_interval(minmax, name, low_open=False)
    if low >= high:
        raise ValueError(f"{name} must satisfy 0 <= low < high <= 1, got {minmax!r}")
    return low, high


def check_scope(scope: object, name: str = "scope") -> tuple[float, float]:
    """ResizeMix's scale range ``(low, high)`` with ``0 < low <= high <= 1``."""
    return _check_interval(scope, name, low_open=True)


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
    top = randint_between(zeros, height - cut_h, generator)
    left = randint_between(zeros, width - cut_w, generator)
    return top, top + cut_h, left, left + cut_w


def sample_resize_boxes(
    height: int,
    width: int,
    tau: torch.Tensor,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ResizeMix boxes ``(top, bottom, left, right)`` for scales ``tau`` (count,).

    The pasted image is ``max(1, floor(tau * H)) x max(1, floor(tau * W))`` pixels (Qin et al.: the source
    is resized to ``tau`` of the target's sides), at a corner drawn uniformly among the positions where it
    lies entirely inside the image (rows first). Choice: at least one pixel; ``floor`` like CutMix's ``int``.
    """
    tau = tau.to(torch.float64)
    box_h = (tau * height).floor().long().clamp(1, height)
    box_w = (tau * width).floor().long().clamp(1, width)
    zeros = torch.zeros_like(box_h)
    top = randint_between(zeros, height - box_h, generator)
    left = randint_between(zeros, width - box_w, generator)
    return top, top + box_h, left, left + box_w


# -- deterministic geometry ------------------------------------------------------------------------------


def cutmix_box(
    height: int, width: int, lam: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CutMix box ``(top, bottom, left, right)`` for ``lam`` and centre ``(cy, cx)``, clipped.

    timm's ``rand_bbox`` given its centre: ``cut_h = int(H * sqrt(1 - lam))``, ``top = cy - cut_h // 2``,
    ``bottom = cy + (cut_h + 1) // 2`` (so the box is exactly ``cut_h`` rows before clipping), likewise for
    the columns; all corners clipped to ``[0, H]`` / ``[0, W]``. Computed in float64 like timm's batch mode.
    """
    ratio = torch.sqrt((1.0 - lam.to(torch.float64)).clamp(min=0.0))
    cut_h = (height * ratio).floor().long()
    cut_w = (width * ratio).floor().long()
    cy, cx = cy.long(), cx.long()
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


def _opmath(dtype: torch.dtype) -> torch.dtype:
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
    dtype = _opmath(source.dtype)
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


# -- the shared frame ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """How per-slot parameters map to the samples: 1 slot ('batch'), B // 2 ('pair') or B ('elem')."""

    mode: str
    batch: int

    @property
    def slots(self) -> int:
        return {"batch": 1, "pair": self.batch // 2, "elem": self.batch}[self.mode]

    @property
    def shared(self) -> bool:
        return self.mode == "batch"

    def expand(self, values: torch.Tensor, fill: float | bool | int = 0) -> torch.Tensor:
        """Slot values (slots,) to sample values (B,); the odd middle of 'pair' gets ``fill``."""
        if self.mode == "batch":
            return values.expand(self.batch).clone()
        if self.mode == "pair":
            middle = values.new_full((self.batch % 2,), fill)
            return torch.cat((values, middle, values.flip(0)))
        return values


def _same_format(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``out`` in the memory format of ``like`` (channels_last in, channels_last out)."""
    if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out.contiguous()


def _paste(
    x: torch.Tensor,
    source: torch.Tensor | None,
    box: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    uniform: bool,
) -> torch.Tensor:
    """A new tensor: ``x`` with ``source`` copied into each sample's box ``[top, bottom) x [left, right)``.

    ``source=None`` stands for the flipped partner batch ``x.flip(0)``, built only where needed (a flip is a
    full copy in PyTorch).

    Only the samples that the caller marks active are used (:func:`mix_pairs` puts ``x`` back into the
    others), so no per-sample ``active`` mask is applied here. Both paths copy values, no arithmetic, so
    they are exact for every value (NaN and infinities included):

    * ``uniform`` (one box for the whole batch): a clone of ``x`` with the box region assigned from
      ``source`` (with ``source=None``, the box of ``x`` flipped: only the box region is read);
    * per-sample boxes: one ``torch.where`` with a (B, 1, H, W) mask (:func:`~.patches.box_mask`)
      broadcast over the channels, written into the flipped partner batch itself (with ``source=None``) so
      that the flip is the only full-size allocation.
    """
    top, bottom, left, right = box
    height, width = x.shape[2], x.shape[3]
    if uniform:
        top, bottom, left, right = (int(v) for v in torch.stack([c[0] for c in box]).tolist())
        out = x.clone()
        if top < bottom and left < right:
            region = x if source is None else source
            region = region[:, :, top:bottom, left:right]
            out[:, :, top:bottom, left:right] = region.flip(0) if source is None else region
        return out
    mask = box_mask(top, left, bottom, right, height, width)
    if source is not None:
        return torch.where(mask, source, x)
    partner = x.flip(0)
    return torch.where(mask, partner, x, out=partner)  # element-wise, so writing over an input is safe


def _mix_with_partner(
    x: torch.Tensor, weight_x: float | torch.Tensor, weight_partner: float | torch.Tensor
) -> torch.Tensor:
    """``x * weight_x + x.flip(0) * weight_partner`` as a new tensor, bit-identical to that expression.

    The same roundings in the same order (two products, then their sum; IEEE addition is commutative), so
    the values equal the plain expression (and timm's ``x.mul_(lam).add_(x_flip.mul_(1 - lam))``) bit for
    bit. The weights are Python floats or per-sample (B, 1, 1, 1) tensors of ``x``'s dtype. Faster: the
    output is the only full-size allocation; the partner product is computed in chunks of samples that stay
    in cache, each read from a flipped slice of ``x`` (``torch.flip`` copies, so the whole flipped batch is
    never built).
    """
    out = x * weight_x
    per_sample = isinstance(weight_partner, torch.Tensor)
    batch = x.shape[0]
    step = max(1, _CHUNK_ELEMENTS // max(1, x[0].numel()))
    for start in range(0, batch, step):
        stop = min(start + step, batch)
        partner = x[batch - stop : batch - start].flip(0)  # == x.flip(0)[start:stop]
        weight = weight_partner[start:stop] if per_sample else weight_partner
        out[start:stop].add_(partner * weight)
    return out


def _lam_out(lam: torch.Tensor, layout: _Layout) -> float | torch.Tensor:
    """The batch's single ``lam`` as a Python float in 'batch' mode (timm's arithmetic), else the tensor."""
    return float(lam[0]) if layout.shared else lam


def mix_pairs(
    x: torch.Tensor,
    soft: torch.Tensor,
    methods: Sequence[TwoImageMix],
    weights: Sequence[float],
    mode: str,
    prob: float,
    generator: torch.Generator | None,
    saliency: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix every sample with its flipped partner by one of ``methods``; the frame of every two-image mix.

    Per slot (1, B // 2 or B, see ``mode``): ``applied = U < prob``; a method is chosen with probabilities
    ``weights`` (timm: ``U < switch_prob`` picks CutMix over Mixup); each method draws its parameters
    (``lam`` or ResizeMix's ``tau``). The slots are expanded to the samples, each method mixes the samples
    that chose it (``torch.where``), and the targets become ``lam * y_i + (1 - lam) * y_j``. Samples that are
    not applied, and the middle one of an odd batch, are returned unchanged with their own soft label.
    """
    batch = x.shape[0]
    if batch < 2:
        return x.clone(), soft
    layout = _Layout(mode, batch)
    device = x.device
    slots = layout.slots
    applied = rand((slots,), generator, device) < prob
    if len(methods) > 1:
        cumulative = torch.tensor(list(weights), dtype=torch.float64, device=device).cumsum(0)
        cumulative = cumulative / cumulative[-1]
        u = rand((slots,), generator, device).to(torch.float64)
        choice = (u.view(-1, 1) >= cumulative[:-1].view(1, -1)).sum(dim=1)
    else:
        choice = torch.zeros(slots, dtype=torch.long, device=device)
    active = layout.expand(applied, False)
    if batch % 2 == 1:
        active[batch // 2] = False
    chosen = layout.expand(choice, -1)

    # Each ``_mix`` returns a new tensor whose active samples hold its mix (the other samples are
    # unspecified). The first one becomes the output; later methods and the unmixed samples are copied in
    # per sample (boolean indexing copies values, so the result equals the former ``torch.where`` chain).
    if layout.shared:
        if not bool(applied[0]):
            return _same_format(x.clone(), x), soft
        method = methods[int(choice[0])]
        out, lam = method._mix(x, method._draw(1, generator, device), active, layout, generator, saliency)
    else:
        out, lam = None, torch.ones(batch, dtype=torch.float64, device=device)
        for index, method in enumerate(methods):
            active_here = active & (chosen == index)
            param = method._draw(slots, generator, device)
            if len(methods) > 1 and not bool(active_here.any()):
                continue
            mixed, lam_here = method._mix(x, param, active_here, layout, generator, saliency)
            if out is None:
                out = mixed
            else:
                out[active_here] = mixed[active_here]
            lam = torch.where(active_here, lam_here, lam)
        if out is None:
            out = x.clone()

    mixed_target = mix_targets(soft, soft.flip(0), lam)
    if layout.shared and batch % 2 == 0:
        return _same_format(out, x), mixed_target
    keep = ~active
    out[keep] = x[keep]
    mixed_target = torch.where(keep.view(-1, 1), soft, mixed_target)
    return _same_format(out, x), mixed_target


class TwoImageMix(BatchTransform):
    """Base of the two-image methods: timm ``Mixup``'s frame (pairing, modes, ``prob``, soft targets).

    Subclasses implement ``_draw`` (the per-slot random parameter: ``lam`` or ``tau``) and ``_mix`` (the
    pixels and the label weight ``lam`` of the kept image). Call as ``x, target = mix(x, target)``; the
    result target is always soft (B, K).

    Args:
        prob: probability of mixing, per batch ('batch') or per pair / sample.
        mode: ``'batch'``, ``'pair'`` or ``'elem'`` (see the module docstring).
        label_smoothing: smoothing of the one-hot rows before mixing (timm's ``mixup_target``).
        num_classes: number of classes K; needed for class-index targets, inferred from soft targets.
        warmup_epochs, generator: see :class:`~salfmix_transforms._base.BatchTransform`.
    """

    def __init__(
        self,
        *,
        prob: float = 1.0,
        mode: str = "batch",
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
        warmup_epochs: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            label_smoothing=label_smoothing,
            warmup_epochs=warmup_epochs,
            generator=generator,
        )
        self.prob = check_probability(prob, "prob")
        self.mode = check_mode(mode)

    def _output_target(self, target: torch.Tensor) -> torch.Tensor:
        # Two-image methods always return soft targets, also during warm-up.
        return self._soft_targets(target)

    def _apply(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        *,
        model: torch.nn.Module | None,
        saliency: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        soft = self._soft_targets(target)
        return mix_pairs(x, soft, [self], [1.0], self.mode, self.prob, generator, saliency)

    def _draw(self, count: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def _mix(
        self,
        x: torch.Tensor,
        param: torch.Tensor,
        active: torch.Tensor,
        layout: _Layout,
        generator: torch.Generator | None,
        saliency: torch.Tensor | None,
    ) -> tuple[torch.Tensor, float | torch.Tensor]:
        raise NotImplementedError


class Mixup(TwoImageMix):
    """Mixup (Zhang et al., ICLR 2018): ``x_i <- lam * x_i + (1 - lam) * x_j``, ``lam ~ Beta(alpha, alpha)``.

    timm's ``Mixup`` with ``cutmix_alpha=0``: the label weight of the kept image is exactly ``lam``. In
    'batch' mode the arithmetic is timm's (``x * lam + x_flip * (1 - lam)`` with a Python float); per sample
    it runs in float32 (float64 for float64 input) and the result is cast back to the input's dtype.

    Args:
        alpha: Beta parameter, > 0.
        prob, mode, label_smoothing, num_classes, warmup_epochs, generator: see :class:`TwoImageMix`.
    """

    def __init__(self, alpha: float = 1.0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.alpha = check_alpha(alpha)

    def _draw(self, count: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        return sample_beta(self.alpha, count, generator, device)

    def _mix(
        self,
        x: torch.Tensor,
        param: torch.Tensor,
        active: torch.Tensor,
        layout: _Layout,
        generator: torch.Generator | None,
        saliency: torch.Tensor | None,
    ) -> tuple[torch.Tensor, float | torch.Tensor]:
        lam = layout.expand(param, 1.0)
        if layout.shared:
            value = float(lam[0])
            return _mix_with_partner(x, value, 1.0 - value), value
        dtype = _opmath(x.dtype)
        weight = lam.to(dtype).view(-1, 1, 1, 1)
        if x.dtype != dtype:
            out = x.to(dtype) * weight + x.flip(0).to(dtype) * (1.0 - weight)
            return out.to(x.dtype), lam
        return _mix_with_partner(x, weight, 1.0 - weight), lam


class _BoxMix(TwoImageMix):
    """Shared parts of CutMix and SaliencyMix: Beta ``lam``, a box from ``lam``, ``correct_lam``."""

    def __init__(self, alpha: float = 1.0, *, correct_lam: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.alpha = check_alpha(alpha)
        if not isinstance(correct_lam, bool):
            raise TypeError(f"correct_lam must be a bool, got {type(correct_lam).__name__}")
        self.correct_lam = correct_lam

    def _draw(self, count: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        return sample_beta(self.alpha, count, generator, device)

    def _corrects_lam(self) -> bool:
        return self.correct_lam

    def _boxes(
        self,
        x: torch.Tensor,
        lam: torch.Tensor,
        layout: _Layout,
        generator: torch.Generator | None,
        saliency: torch.Tensor | None,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], bool]:
        """Per-sample boxes (B,) and whether they (and so ``lam``) are the same for the whole batch."""
        raise NotImplementedError

    def _mix(
        self,
        x: torch.Tensor,
        param: torch.Tensor,
        active: torch.Tensor,
        layout: _Layout,
        generator: torch.Generator | None,
        saliency: torch.Tensor | None,
    ) -> tuple[torch.Tensor, float | torch.Tensor]:
        box, uniform = self._boxes(x, param, layout, generator, saliency)
        out = _paste(x, None, box, uniform)
        if self._corrects_lam():
            lam = box_lambda(*box, x.shape[2], x.shape[3])
        else:
            lam = layout.expand(param, 1.0)
        return out, (float(lam[0]) if uniform else lam)


class CutMix(_BoxMix):
    """CutMix (Yun et al., ICCV 2019) with timm's box: the box of ``x_j`` is pasted into ``x_i``.

    The box (:func:`cutmix_box`) has sides ``int(H * sqrt(1 - lam))`` x ``int(W * sqrt(1 - lam))`` around a
    uniform centre (:func:`sample_box_centres`) and is clipped to the image; with ``minmax`` it comes from
    timm's ``rand_bbox_minmax`` instead (:func:`minmax_box`). With ``correct_lam`` (forced with ``minmax``,
    as in timm) ``lam = 1 - box area / (H * W)``, so the label weight of the pasted image is exactly its area
    fraction.

    Args:
        alpha: Beta parameter, > 0 (timm forces it to 1 with ``minmax``; so do we).
        minmax: timm's ``cutmix_minmax`` ``(low, high)``, box side ratios; ``None`` for the ``lam`` box.
        correct_lam: correct ``lam`` to the clipped box area.
        prob, mode, label_smoothing, num_classes, warmup_epochs, generator: see :class:`TwoImageMix`.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        minmax: tuple[float, float] | None = None,
        correct_lam: bool = True,
        **kwargs: object,
    ) -> None:
        super().__init__(alpha, correct_lam=correct_lam, **kwargs)
        self.minmax = check_minmax(minmax, "minmax")
        if self.minmax is not None:
            self.alpha = 1.0

    def _corrects_lam(self) -> bool:
        return self.correct_lam or self.minmax is not None

    def _boxes(
        self,
        x: torch.Tensor,
        lam: torch.Tensor,
        layout: _Layout,
        generator: torch.Generator | None,
        saliency: torch.Tensor | None,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], bool]:
        height, width = x.shape[2], x.shape[3]
        if self.minmax is not None:
            box = minmax_box(height, width, self.minmax, lam.shape[0], generator, x.device)
        else:
            cy, cx = sample_box_centres(height, width, lam.shape[0], generator, x.device)
            box = cutmix_box(height, width, lam, cy, cx)
        return tuple(layout.expand(corner) for corner in box), layout.shared


class SaliencyMix(_BoxMix):
    """SaliencyMix (Uddin et al., ICLR 2021): the CutMix box centred on the source image's saliency peak.

    The box has CutMix's size for ``lam ~ Beta(alpha, alpha)`` (:func:`cutmix_box`) and is centred on the
    maximum (:func:`saliency_peaks`) of the fine-grained static saliency
    (:func:`~salfmix_transforms.static_saliency.fine_grained_saliency`) of the *source* image ``x_j`` (the
    flipped partner), then clipped; ``lam`` is corrected to the box area with ``correct_lam`` (the reference
    code always does).

    Choices:

    * ``per_sample=True`` (default): every sample's box is centred on its own source's peak, even in 'batch'
      mode (one ``lam``, several boxes, so the corrected ``lam`` differs per sample). ``per_sample=False``
      is the reference code's behaviour: one saliency map, that of the first sample's source ``x[B - 1]``,
      centres the box of every sample;
    * in 'pair' mode the two samples of a pair share ``lam`` but each box sits on its own source's peak;
    * the box spans ``[c - cut // 2, c + (cut + 1) // 2)`` like CutMix (the reference code uses
      ``[c - cut // 2, c + cut // 2)``);
    * ties in the map go to the first maximum in row-major order (``np.argmax``, as the reference code).

    ``saliency=`` at call time may hold precomputed static maps (B, H, W) of ``x``; the source's map of
    sample ``i`` is then ``saliency[B - 1 - i]``.

    Args:
        alpha: Beta parameter, > 0.
        per_sample: one box per sample (True) or the reference code's single map (False).
        correct_lam: correct ``lam`` to the clipped box area.
        prob, mode, label_smoothing, num_classes, warmup_epochs, generator: see :class:`TwoImageMix`.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        per_sample: bool = True,
        correct_lam: bool = True,
        **kwargs: object,
    ) -> None:
        super().__init__(alpha, correct_lam=correct_lam, **kwargs)
        if not isinstance(per_sample, bool):
            raise TypeError(f"per_sample must be a bool, got {type(per_sample).__name__}")
        self.per_sample = per_sample

    def _boxes(
        self,
        x: torch.Tensor,
        lam: torch.Tensor,
        layout: _Layout,
        generator: torch.Generator | None,
        saliency: torch.Tensor | None,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], bool]:
        height, width = x.shape[2], x.shape[3]
        batch = x.shape[0]
        if saliency is not None:
            saliency = check_saliency(saliency, x).to(x.device)
        if self.per_sample:
            maps = saliency if saliency is not None else fine_grained_saliency(x)
            py, px = saliency_peaks(maps.flip(0))
        else:
            maps = saliency[-1:] if saliency is not None else fine_grained_saliency(x[-1:])
            py, px = (coord.expand(batch) for coord in saliency_peaks(maps))
        box = cutmix_box(height, width, layout.expand(lam, 1.0), py, px)
        return box, layout.shared and not self.per_sample


class ResizeMix(TwoImageMix):
    """ResizeMix (Qin et al., "ResizeMix: Mixing Data with Preserved Object Information and True Labels").

    The whole source image ``x_j`` is resized to ``tau`` of the sides, ``tau ~ U(scope)``, and pasted into
    ``x_i`` at a uniform position where it fits (:func:`sample_resize_boxes`); the label weight of the pasted
    image is its pixel area ``h * w / (H * W)`` exactly (so ``lam = 1 - h * w / (H * W)``; no ``correct_lam``
    is needed). The resize is ``F.interpolate(..., mode=interpolation, align_corners=False)`` computed for
    all samples at once (:func:`resize_from_boxes`).

    Args:
        scope: ``(low, high)`` of the uniform scale ``tau``, ``0 < low <= high <= 1`` (paper: (0.1, 0.8)).
        interpolation: ``'bilinear'`` (default) or ``'nearest'``.
        prob, mode, label_smoothing, num_classes, warmup_epochs, generator: see :class:`TwoImageMix`.
    """

    def __init__(
        self,
        scope: tuple[float, float] = (0.1, 0.8),
        *,
        interpolation: str = "bilinear",
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.scope = check_scope(scope)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        self.interpolation = interpolation

    def _draw(self, count: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        low, high = self.scope
        return low + (high - low) * rand((count,), generator, device).to(torch.float64)

    def _mix(
        self,
        x: torch.Tensor,
        param: torch.Tensor,
        active: torch.Tensor,
        layout: _Layout,
        generator: torch.Generator | None,
        saliency: torch.Tensor | None,
    ) -> tuple[torch.Tensor, float | torch.Tensor]:
        box = tuple(layout.expand(c) for c in sample_resize_boxes(x.shape[2], x.shape[3], param, generator))
        resized = resize_from_boxes(x.flip(0), *box, mode=self.interpolation)
        out = _paste(x, resized, box, layout.shared)
        return out, _lam_out(box_lambda(*box, x.shape[2], x.shape[3]), layout)
