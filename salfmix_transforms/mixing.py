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
* targets are always soft (B, K), float32 (where that differs from timm: :class:`Mixup`); ``K`` is
  ``num_classes`` or, when that is ``None``, the width of the soft targets given (class indices then need
  ``num_classes``);
* dense targets (a class mask (B, H, W) or soft (B, K, H, W)) come back as soft dense targets
  (B, K, H, W) mixed with the image's own geometry (:meth:`MixMethod.apply_target`): the partner's box
  is pasted (one-hot pixels stay one-hot), ResizeMix's partner is resized with nearest interpolation, and
  Mixup blends every pixel, ``lam * y_i + (1 - lam) * y_j`` (an ignored pixel adds nothing, see
  :mod:`salfmix_transforms.targets` for the loss).

One frame, small methods: every method is a :class:`MixMethod` (its own parameters and steps) and
:class:`TwoImageMix` is the frame that composes them (:func:`mix_pairs`). A new method (e.g.
:mod:`salfmix_transforms.fmix`) is one :class:`MixMethod` and one small frame class. The random draws and
the box geometry are in :mod:`salfmix_transforms.boxes`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ._base import BatchTransform, all_own
from ._random import host_device, rand
from ._validation import (
    MODES,
    check_alpha,
    check_bool,
    check_choice,
    check_interval,
    check_multi_label,
    check_number,
    check_probability,
    check_saliency,
)
from .boxes import (
    box_lambda,
    box_mask,
    compute_dtype,
    cutmix_box,
    minmax_box,
    resize_from_boxes,
    saliency_peaks,
    sample_beta,
    sample_box_centres,
    sample_resize_boxes,
)
from .static_saliency import fine_grained_saliency
from .targets import is_dense_target, mix_targets

__all__ = [
    "MODES",
    "CutMix",
    "CutMixMethod",
    "Layout",
    "MixMethod",
    "MixParams",
    "Mixed",
    "Mixup",
    "MixupMethod",
    "ResizeMix",
    "ResizeMixMethod",
    "SaliencyMix",
    "SaliencyMixMethod",
    "TwoImageMix",
    "mix_pairs",
    "returns_class_masks",
    "same_format",
    "switch_methods",
    "switch_weights",
]

#: A per-sample box ``(top, bottom, left, right)``, four (B,) long tensors, half-open.
Box = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

# Elements per chunk of the temporary in :func:`_mix_with_partner` (256 KiB of float32: stays in cache).
_CHUNK_ELEMENTS = 1 << 16


# -- the shared frame ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
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


def same_format(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
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
      ``source`` (with ``source=None``, the box of ``x`` flipped: only the box region is read). The corners
      are read as Python ints, so they must be host tensors (drawn on the host, :func:`mix_pairs`): the
      corners of a box on the GPU would cost a host synchronisation;
    * per-sample boxes: one ``torch.where`` with a (B, 1, H, W) mask (:func:`~.boxes.box_mask`)
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
    if x.requires_grad and torch.is_grad_enabled():
        return torch.where(mask, partner, x)  # autograd does not record ``out=`` calls
    return torch.where(mask, partner, x, out=partner)  # element-wise, so writing over an input is safe


def _mix_with_partner(
    x: torch.Tensor, weight_x: float | torch.Tensor, weight_partner: float | torch.Tensor
) -> torch.Tensor:
    """``x * weight_x + x.flip(0) * weight_partner`` as a new tensor, bit-identical to that expression.

    The same roundings in the same order (two products, then their sum; IEEE addition is commutative), so
    the values equal the plain expression (and timm's ``x.mul_(lam).add_(x_flip.mul_(1 - lam))``) bit for
    bit. The weights are Python floats or per-sample (B, 1, 1, 1) tensors of ``x``'s dtype.
    """
    # The output is the only full-size allocation: the partner product is computed in chunks of samples that
    # stay in cache, each read from a flipped slice of x (torch.flip copies, so the whole flipped batch is
    # never built).
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


def _on(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``values`` (host draws) on ``device`` by a non-blocking copy (no copy when they are there already)."""
    return values.to(device, non_blocking=True)


def _rows(flags: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The indices of the true entries of host ``flags`` (B,), on ``device``: a boolean-mask index of the
    batch whose shape depends on host draws only (a mask on the device would need a host synchronisation)."""
    return _on(flags.nonzero().view(-1), device)


class Mixed(NamedTuple):
    """What :func:`mix_pairs` returns: the mixed images, their targets, and the provenance as a callable.

    Attributes:
        x: the mixed batch (a new tensor, in ``x``'s memory format).
        target: soft targets (B, K), or soft dense targets (B, K, H, W).
        provenance: builds, when called, the (B, H, W) float32 share of each output pixel that is the
            sample's own pixel at that place (from the drawn parameters: nothing is built unless called).
    """

    x: torch.Tensor
    target: torch.Tensor
    provenance: Callable[[], torch.Tensor]


def mix_pairs(
    x: torch.Tensor,
    soft: torch.Tensor,
    methods: Sequence[MixMethod],
    weights: Sequence[float],
    mode: str,
    prob: float,
    generator: torch.Generator | None,
    saliency: torch.Tensor | None = None,
) -> Mixed:
    """Mix every sample with its flipped partner by one of ``methods``; the frame of every two-image mix.

    Per slot (1, B // 2 or B, see ``mode``): ``applied = U < prob``; a method is chosen with probabilities
    ``weights`` (timm: ``U < switch_prob`` picks CutMix over Mixup); each method draws its parameters
    (:meth:`MixMethod.sample`). The slots are expanded to the samples, each method mixes the samples that
    chose it (:meth:`MixMethod.apply`, dense targets :meth:`MixMethod.apply_target`), and the targets become
    ``lam * y_i + (1 - lam) * y_j``; the other samples come back unchanged (see the module docstring).

    The provenance (:attr:`Mixed.provenance`) says how much of every output pixel is the sample's own pixel
    at that place (:meth:`MixMethod.own_share`: 0 inside a pasted box, ``lam`` for a blend, 1 elsewhere);
    :class:`~salfmix_transforms.saliency_cache.SaliencyCache` writes only that share of the gradient.

    No host synchronisation: every random number (``applied``, the method choice and each method's
    parameters) is drawn on the host (:func:`~salfmix_transforms._random.host_device`: the CPU, or the
    generator's device), as timm draws them with NumPy, so the branches on them read host memory; what
    the kernels need reaches the device by non-blocking copies (on the CPU nothing moves). A CUDA
    ``generator`` draws on the GPU, and these reads then wait for it.
    """
    batch, _, height, width = x.shape
    device = x.device
    # The provenance is built from these records only when read: (method, lam, region, rows or None).
    pieces: list[tuple[MixMethod, float | torch.Tensor, Any, torch.Tensor | None]] = []
    kept: list[torch.Tensor] = []

    def own() -> torch.Tensor:
        share = torch.ones(batch, height, width, dtype=torch.float32, device=device)
        for method, lam, region, rows in pieces:
            here = method.own_share(lam, region, batch, height, width, device)
            if rows is None:
                share.copy_(here)
            else:
                share.index_copy_(0, rows, here.index_select(0, rows))
        for rows in kept:
            share.index_fill_(0, rows, 1.0)
        return share

    if batch < 2:
        return Mixed(x.clone(), soft, own)
    layout = Layout(mode, batch)
    host = host_device(generator)
    slots = layout.slots
    applied = rand((slots,), generator, host) < prob
    if len(methods) > 1:
        cumulative = torch.tensor(list(weights), dtype=torch.float64, device=host).cumsum(0)
        cumulative = cumulative / cumulative[-1]
        u = rand((slots,), generator, host).to(torch.float64)
        choice = (u.view(-1, 1) >= cumulative[:-1].view(1, -1)).sum(dim=1)
    else:
        choice = torch.zeros(slots, dtype=torch.long, device=host)
    # ``active`` and ``chosen`` are host flags (B,): read them freely; ``_on`` / ``_rows`` for the kernels.
    active = layout.expand(applied, False)
    if batch % 2 == 1:
        active[batch // 2] = False
    chosen = layout.expand(choice, -1)

    # Each ``apply`` returns a new tensor whose active samples hold its mix (the other samples are
    # unspecified). The first one becomes the output; later methods and the unmixed samples are copied in
    # per sample (boolean indexing copies values, so the result equals the former ``torch.where`` chain).
    if layout.shared:
        if not bool(applied[0]):
            return Mixed(same_format(x.clone(), x), soft, own)
        method = methods[int(choice[0])]
        params = method.sample(1, height, width, generator, host)
        out, lam, region = method.apply(x, params, layout, saliency)
        dense = _dense_target(method, soft, lam, region, layout)
        pieces.append((method, lam, region, None))
    else:
        out, lam, dense = None, torch.ones(batch, dtype=torch.float64, device=device), None
        for index, method in enumerate(methods):
            flags = active & (chosen == index)
            params = method.sample(slots, height, width, generator, host)
            if len(methods) > 1 and not bool(flags.any()):
                continue
            mixed, lam_here, region = method.apply(x, params, layout, saliency)
            rows, active_here = _rows(flags, device), _on(flags, device)
            if out is None:
                out = mixed
            else:
                out.index_copy_(0, rows, mixed.index_select(0, rows))
            lam = torch.where(active_here, lam_here, lam)
            here = _dense_target(method, soft, lam_here, region, layout)
            dense = here if dense is None else torch.where(_per_sample(active_here, here), here, dense)
            pieces.append((method, lam_here, region, rows))
        if out is None:
            out = x.clone()

    if is_dense_target(soft):
        mixed_target = soft.clone() if dense is None else dense
    else:
        mixed_target = mix_targets(soft, soft.flip(0), lam)
    if layout.shared and batch % 2 == 0:
        return Mixed(same_format(out, x), mixed_target, own)
    keep = ~active
    rows = _rows(keep, device)
    out.index_copy_(0, rows, x.index_select(0, rows))
    kept.append(rows)
    mixed_target = torch.where(_per_sample(_on(keep, device), soft), soft, mixed_target)
    return Mixed(same_format(out, x), mixed_target, own)


def _per_sample(flags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) flags viewed to broadcast over the other dimensions of ``like`` ((B, 1) or (B, 1, 1, 1))."""
    return flags.view(-1, *[1] * (like.dim() - 1))


def _dense_target(
    method: MixMethod, soft: torch.Tensor, lam: float | torch.Tensor, region: Any, layout: Layout
) -> torch.Tensor | None:
    """The soft dense targets (B, K, H, W) of ``method``'s mix, or ``None`` for classification targets."""
    return method.apply_target(soft, lam, region, layout) if is_dense_target(soft) else None


@dataclass(frozen=True)
class MixParams:
    """The random parameters a box or blend method draws for one call, one entry per slot (see ``mode``).

    The frame passes a method's parameters from its :meth:`~MixMethod.sample` to its
    :meth:`~MixMethod.apply` untouched, so a method may draw any object (:class:`FMixMethod` draws masks).

    Attributes:
        lam: (slots,) float64 ``lam ~ Beta(alpha, alpha)`` (Mixup, CutMix, SaliencyMix), or ``None``.
        box: ``(top, bottom, left, right)`` (slots,) boxes drawn whole (CutMix, ResizeMix), or ``None``.
        scale: (slots,) float64 ResizeMix's side scale ``tau ~ U(scope)``, or ``None``.
    """

    lam: torch.Tensor | None = None
    box: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    scale: torch.Tensor | None = None


# -- the methods ------------------------------------------------------------------------------------------


class MixMethod:
    """One two-image method, as the frame (:func:`mix_pairs`, :class:`TwoImageMix`) composes it.

    A method is a small immutable object (its own parameters only: ``alpha``, a box rule, a scale range):
    the frame owns the pairing, ``mode``, ``prob``, the choice between methods and the targets. Four steps:

    * :meth:`sample`: the random parameters of ``slots`` slots, drawn on the host ``device``;
    * :meth:`apply`: the pixels of ``x`` mixed with the flipped partner ``x.flip(0)``, the label weight
      ``lam`` of the kept image (a Python float in 'batch' mode, else (B,)) and the *region*: ``None`` for
      a blend, a per-sample box ``(top, bottom, left, right)`` where the partner's pixels went, or any
      object the method's :meth:`apply_target` and :meth:`own_share` understand;
    * :meth:`apply_target`: the soft dense targets (B, K, H, W) of what :meth:`apply` did (for a method
      that does not blend, also class masks as planes (B, 1, H, W): see :func:`returns_class_masks`);
    * :meth:`own_share`: the (B, H, W) share of each pixel that is the sample's own (the provenance).

    ``blends``: whether a pixel of the result can hold two images' labels (Mixup, FMix), so that only soft
    targets can describe it. ``True`` unless a method says otherwise: one that only pastes pixels (the box
    methods) sets it to ``False``, and only then can it return class masks (:func:`returns_class_masks`).
    """

    blends = True

    def sample(
        self, slots: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
    ) -> Any:
        """Draw the parameters of ``slots`` slots for images of ``height x width``; by default
        ``lam ~ Beta(alpha, alpha)`` per slot (Mixup, SaliencyMix)."""
        return MixParams(sample_beta(self.alpha, slots, generator, device))

    def apply(
        self, x: torch.Tensor, params: Any, layout: Layout, saliency: torch.Tensor | None
    ) -> tuple[torch.Tensor, float | torch.Tensor, Any]:
        """Mix ``x`` with its flipped partner: a new tensor (only the samples the caller marks active are
        meaningful), the label weight ``lam`` of the kept image and the region (see the class)."""
        raise NotImplementedError

    def apply_target(
        self, target: torch.Tensor, lam: float | torch.Tensor, region: Any, layout: Layout
    ) -> torch.Tensor:
        """The soft dense targets (B, K, H, W) of what :meth:`apply` did, from its ``lam`` and region.

        A blend (region ``None``) mixes every pixel, ``lam * y_i + (1 - lam) * y_j``
        (:func:`~salfmix_transforms.targets.mix_targets`); a box method pastes the partner's target box
        where the partner's pixels went (values are copied: a one-hot pixel stays one-hot).
        """
        if region is None:
            return mix_targets(target, target.flip(0), lam)
        return _paste(target, None, region, False)

    def own_share(
        self,
        lam: float | torch.Tensor,
        region: Any,
        batch: int,
        height: int,
        width: int,
        device: torch.device,
    ) -> torch.Tensor:
        """(B, H, W) share of each pixel that is the sample's own: ``1 - box`` (a paste) or ``lam`` (a
        blend)."""
        if region is not None:
            top, bottom, left, right = region
            return (~box_mask(top, left, bottom, right, height, width)[:, 0]).float()
        if not isinstance(lam, torch.Tensor):  # a Python float is filled in (as_tensor would copy, blocking)
            return torch.full((batch, height, width), lam, dtype=torch.float32, device=device)
        return lam.to(torch.float32).reshape(-1, 1, 1).expand(batch, height, width)


@dataclass(frozen=True)
class MixupMethod(MixMethod):
    """Mixup's step: ``lam ~ Beta(alpha, alpha)``, ``x_i <- lam * x_i + (1 - lam) * x_j`` (timm's
    arithmetic in every dtype, see :class:`Mixup`)."""

    alpha: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_alpha(self.alpha, "alpha"))

    def apply(
        self, x: torch.Tensor, params: MixParams, layout: Layout, saliency: torch.Tensor | None
    ) -> tuple[torch.Tensor, float | torch.Tensor, None]:
        lam = layout.expand(params.lam, 1.0)
        if layout.shared:
            value = float(lam[0])  # a host draw (mix_pairs): no synchronisation
            return _mix_with_partner(x, value, 1.0 - value), value, None
        lam = _on(lam, x.device)
        # timm's per-sample arithmetic: lam is rounded to float32 (its NumPy float32 lam_batch), each
        # product is rounded to the input's dtype, then the sum (``x[i] * lam + x[j] * (1 - lam)``).
        weight = lam.to(torch.float32).view(-1, 1, 1, 1)
        dtype = compute_dtype(x.dtype)
        if x.dtype != dtype:
            out = (x.to(dtype) * weight).to(x.dtype)
            return out.add_((x.flip(0).to(dtype) * (1.0 - weight)).to(x.dtype)), lam, None
        return _mix_with_partner(x, weight.to(dtype), (1.0 - weight).to(dtype)), lam, None


class _BoxMethod(MixMethod):
    """Shared part of the box methods: paste the partner's box, ``lam`` from the box area with
    ``correct_lam`` (else the drawn ``lam``)."""

    correct_lam: bool
    blends = False  # pixels (and labels) are pasted, never blended

    def _boxes(
        self, x: torch.Tensor, params: MixParams, layout: Layout, saliency: torch.Tensor | None
    ) -> tuple[Box, bool]:
        """Per-sample boxes (B,) and whether they are one box for the whole batch known on the host (so
        ``lam`` too): then the paste is a sliced copy and ``lam`` a Python float, with no synchronisation.
        By default the boxes drawn whole by :meth:`sample` (``params.box``)."""
        return tuple(layout.expand(corner) for corner in params.box), layout.shared

    def _corrects_lam(self) -> bool:
        return self.correct_lam

    def _partner(self, x: torch.Tensor, box: Box) -> torch.Tensor | None:
        """What is pasted into the boxes (on ``x``'s device): ``None`` for the partner's own pixels."""
        return None

    def apply(
        self, x: torch.Tensor, params: MixParams, layout: Layout, saliency: torch.Tensor | None
    ) -> tuple[torch.Tensor, float | torch.Tensor, Box]:
        box, uniform = self._boxes(x, params, layout, saliency)
        on_device = tuple(_on(corner, x.device) for corner in box)
        used = box if uniform else on_device  # the host corners for the sliced copy, else the device's
        out = _paste(x, self._partner(x, on_device), used, uniform)
        if self._corrects_lam():
            lam = box_lambda(*used, x.shape[2], x.shape[3])
        else:
            lam = layout.expand(params.lam, 1.0)
        return out, (float(lam[0]) if uniform else _on(lam, x.device)), on_device


@dataclass(frozen=True)
class CutMixMethod(_BoxMethod):
    """CutMix's step: timm's box of side ``sqrt(1 - lam)`` at a uniform centre (or ``rand_bbox_minmax``
    with ``minmax``, which forces ``correct_lam`` as in timm), pasted from the partner."""

    alpha: float = 1.0
    minmax: tuple[float, float] | None = None
    correct_lam: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_alpha(self.alpha, "alpha"))
        object.__setattr__(self, "minmax", check_interval(self.minmax, "minmax", optional=True))
        object.__setattr__(self, "correct_lam", check_bool(self.correct_lam, "correct_lam"))

    def _corrects_lam(self) -> bool:
        return self.correct_lam or self.minmax is not None

    def sample(
        self, slots: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
    ) -> MixParams:
        lam = sample_beta(self.alpha, slots, generator, device)
        if self.minmax is not None:
            _check_minmax_fits(self.minmax, height, width)
            return MixParams(lam, box=minmax_box(height, width, self.minmax, slots, generator, device))
        centre = sample_box_centres(height, width, slots, generator, device)
        return MixParams(lam, box=cutmix_box(height, width, lam, *centre))


def _check_minmax_fits(minmax: tuple[float, float], height: int, width: int) -> None:
    """timm's ``rand_bbox_minmax`` draws the box sides from ``[int(S * low), int(S * high))``; on an image too
    small for that range to hold a side, timm's ``np.random.randint`` raises, and so do we (by name)."""
    low, high = minmax
    for side, size in (("height", height), ("width", width)):
        if int(size * low) >= int(size * high):
            raise ValueError(
                f"cutmix_minmax={minmax!r} leaves no box {side} on images of {height}x{width} "
                f"(int({size} * {low}) = {int(size * low)} >= int({size} * {high}) = {int(size * high)}; "
                "timm's rand_bbox_minmax raises too): widen cutmix_minmax or use larger images"
            )


@dataclass(frozen=True)
class SaliencyMixMethod(_BoxMethod):
    """SaliencyMix's step: the CutMix box centred on the source image's static saliency peak (see
    :class:`SaliencyMix`)."""

    alpha: float = 1.0
    per_sample: bool = True
    correct_lam: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_alpha(self.alpha, "alpha"))
        object.__setattr__(self, "per_sample", check_bool(self.per_sample, "per_sample"))
        object.__setattr__(self, "correct_lam", check_bool(self.correct_lam, "correct_lam"))

    def _boxes(
        self, x: torch.Tensor, params: MixParams, layout: Layout, saliency: torch.Tensor | None
    ) -> tuple[Box, bool]:
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
        box = cutmix_box(height, width, _on(layout.expand(params.lam, 1.0), x.device), py, px)
        # The peaks are on x's device. One box for the batch (per_sample=False) is a sliced copy on the CPU
        # only (no host/device split there); on a GPU reading its corners would wait for the device, so it
        # is pasted with a mask like per-sample boxes (``lam`` a tensor).
        return box, layout.shared and not self.per_sample and x.device.type == "cpu"


@dataclass(frozen=True)
class ResizeMixMethod(_BoxMethod):
    """ResizeMix's step: the whole partner resized to ``tau ~ U(scope)`` of the sides, pasted at a uniform
    position; ``lam = 1 - h * w / (H * W)`` exactly (see :class:`ResizeMix`)."""

    scope: tuple[float, float] = (0.1, 0.8)
    interpolation: str = "bilinear"
    correct_lam = True  # not a field: the label weight is always the pasted area's

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", check_interval(self.scope, "scope", positive=True))
        check_choice(self.interpolation, "interpolation", ("bilinear", "nearest"))

    def sample(
        self, slots: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
    ) -> MixParams:
        low, high = self.scope
        tau = low + (high - low) * rand((slots,), generator, device).to(torch.float64)
        return MixParams(scale=tau, box=sample_resize_boxes(height, width, tau, generator))

    def _partner(self, x: torch.Tensor, box: Box) -> torch.Tensor:
        return resize_from_boxes(x.flip(0), *box, mode=self.interpolation)

    def apply_target(
        self, target: torch.Tensor, lam: float | torch.Tensor, region: Box, layout: Layout
    ) -> torch.Tensor:
        """The partner's whole dense target resized into the box with nearest interpolation (labels are
        not blended at the edges, whatever ``interpolation`` the image used)."""
        source = target.flip(0)
        if source.is_floating_point():
            resized = resize_from_boxes(source, *region, mode="nearest")
        else:  # class masks: nearest interpolation copies values, exact in float32 for every class index
            resized = resize_from_boxes(source.float(), *region, mode="nearest").to(target.dtype)
        return _paste(target, resized, region, False)


def switch_weights(blend: bool, boxes: int, switch_prob: float) -> list[float]:
    """Probabilities of ``[Mixup] + other methods`` (timm: CutMix with ``switch_prob`` when both are on).

    Choice: several other methods (CutMix, SaliencyMix, ResizeMix, ...) share ``switch_prob`` equally;
    without Mixup they are equally likely.
    """
    if blend and boxes > 0:
        return [1.0 - switch_prob] + [switch_prob / boxes] * boxes
    return [1.0] * (int(blend) + boxes)


def switch_methods(
    mixup_alpha: float,
    cutmix_alpha: float,
    cutmix_minmax: tuple[float, float] | None,
    correct_lam: bool,
    switch_prob: float,
    *,
    saliencymix_alpha: float = 0.0,
    resizemix_scope: tuple[float, float] | None = None,
    extra: Sequence[MixMethod] = (),
) -> tuple[list[MixMethod], list[float]]:
    """timm ``Mixup``'s choice of method, as ``(methods, weights)`` for :func:`mix_pairs`.

    Mixup is on when ``mixup_alpha > 0``, CutMix when ``cutmix_alpha > 0`` or ``cutmix_minmax`` is given,
    SaliencyMix when ``saliencymix_alpha > 0``, ResizeMix when ``resizemix_scope`` is given, then the
    ``extra`` methods; weights from :func:`switch_weights`. The arguments are checked by the caller.
    """
    methods: list[MixMethod] = []
    if mixup_alpha > 0:
        methods.append(MixupMethod(mixup_alpha))
    if cutmix_alpha > 0 or cutmix_minmax is not None:
        methods.append(CutMixMethod(cutmix_alpha or 1.0, cutmix_minmax, correct_lam))
    if saliencymix_alpha > 0:
        methods.append(SaliencyMixMethod(saliencymix_alpha, correct_lam=correct_lam))
    if resizemix_scope is not None:
        methods.append(ResizeMixMethod(resizemix_scope))
    methods.extend(extra)
    return methods, switch_weights(mixup_alpha > 0, len(methods) - (mixup_alpha > 0), switch_prob)


# -- the frame --------------------------------------------------------------------------------------------


def returns_class_masks(
    transform: BatchTransform, methods: Sequence[MixMethod], target: torch.Tensor
) -> bool:
    """Whether a two-image ``transform`` returns ``target`` (checked) as class masks: it has
    ``num_classes=None`` and ``target`` is a class mask (B, H, W). Segmentation's loss is then plain
    cross-entropy with ``ignore_index`` (and its own ``label_smoothing``), which equals the soft dense loss of
    the one-hot targets and costs less (issue 22). Only methods that paste pixels can: ``methods`` must not
    blend (:attr:`MixMethod.blends`).

    Raises:
        ValueError: one of ``methods`` blends labels, or ``transform.label_smoothing > 0`` (a class mask has
            no room for smoothing).
    """
    if transform.num_classes is not None or target.dim() != 3:
        return False
    name = type(transform).__name__
    blending = sorted({type(method).__name__ for method in methods if method.blends})
    if blending:
        raise ValueError(
            f"{name}: num_classes=None returns class masks, which only methods that paste pixels can; "
            f"{', '.join(blending)} blends labels: give num_classes for soft dense targets (B, K, H, W)"
        )
    if transform.label_smoothing > 0:
        raise ValueError(
            f"{name}: label_smoothing={transform.label_smoothing} needs soft targets: give num_classes, or "
            "pass label_smoothing=0 and smooth in the loss (num_classes=None returns class masks)"
        )
    return True


class TwoImageMix(BatchTransform):
    """The frame of every two-image method: timm ``Mixup``'s pairing, modes, ``prob`` and soft targets.

    ``TwoImageMix(methods, weights)`` mixes every pair by one of ``methods`` (:class:`MixMethod` objects),
    chosen with probabilities ``weights`` (:func:`mix_pairs`). The named classes (:class:`Mixup`,
    :class:`CutMix`, :class:`SaliencyMix`, :class:`ResizeMix`, ...) are this frame with the method list
    their constructor arguments describe, and :class:`~salfmix_transforms.hybrid.HybridMix` composes it
    after SalfMix. Call as ``x, target = mix(x, target)``; the target comes back soft (B, K), or
    (B, K, H, W) for a dense one (see the module docstring).

    Args:
        methods: the methods a call chooses from (one or more :class:`MixMethod`).
        weights: their probabilities (normalised); ``None``: equally likely.
        prob: probability of mixing, per batch ('batch') or per pair / sample.
        mode: ``'batch'``, ``'pair'`` or ``'elem'`` (see the module docstring).
        label_smoothing, num_classes, warmup_epochs, steps_per_epoch, generator, ignore_index (keyword only):
            see :class:`~salfmix_transforms._base.BatchTransform`; ``label_smoothing`` smooths the one-hot
            rows before mixing (timm's ``mixup_target``). :class:`Mixup` and :class:`CutMix` default to
            timm's ``label_smoothing=0.1`` and ``num_classes=1000``, as they take timm's constructor.

    Attributes:
        mixup_enabled: timm's switch (``--mixup-off-epoch`` sets it to ``False``): when ``False`` the
            images come back unmixed (a copy) with their soft targets.
    """

    def __init__(
        self,
        methods: Sequence[MixMethod],
        weights: Sequence[float] | None = None,
        *,
        prob: float = 1.0,
        mode: str = "batch",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.methods, self.weights = _check_methods(methods, weights)
        self.prob = check_probability(prob, "prob")
        self.mode = check_choice(mode, "mode", MODES)
        self.mixup_enabled = True

    @property
    def keeps_class_masks(self) -> bool:
        """Whether ``num_classes=None`` returns class masks (B, H, W) for class masks: no method blends."""
        return not any(method.blends for method in self.methods)

    def _output_target(self, target: torch.Tensor) -> torch.Tensor:
        # Two-image methods return soft targets, also during warm-up (class masks: returns_class_masks).
        return target if returns_class_masks(self, self.methods, target) else self._soft_targets(target)

    def mix(
        self,
        x: torch.Tensor,
        soft: torch.Tensor,
        *,
        saliency: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Mixed:
        """The frame's step on checked images and soft targets, for a composing transform (the warm-up,
        the call count and ``mixup_enabled`` are the caller's): :func:`mix_pairs` with this frame's
        methods, weights, ``mode`` and ``prob``."""
        return mix_pairs(x, soft, self.methods, self.weights, self.mode, self.prob, generator, saliency)

    def _apply(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        *,
        model: torch.nn.Module | None,
        saliency: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.mixup_enabled:
            self.provenance = all_own(x)
            return same_format(x.clone(), x), self._output_target(target)
        if returns_class_masks(self, self.methods, target):  # mixed as planes (B, 1, H, W)
            out, planes, self.provenance = self.mix(
                x, target.unsqueeze(1), saliency=saliency, generator=generator
            )
            return out, planes.squeeze(1)
        out, mixed_target, self.provenance = self.mix(
            x, self._soft_targets(target), saliency=saliency, generator=generator
        )
        return out, mixed_target


def _check_methods(
    methods: Sequence[MixMethod], weights: Sequence[float] | None
) -> tuple[list[MixMethod], list[float]]:
    if isinstance(methods, MixMethod):
        methods = [methods]
    methods = list(methods)
    if not methods or not all(isinstance(m, MixMethod) for m in methods):
        raise TypeError(f"methods must be one or more MixMethod objects, got {methods!r}")
    if weights is None:
        return methods, [1.0] * len(methods)
    weights = [float(w) for w in weights]
    if len(weights) != len(methods) or any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be {len(methods)} non-negative numbers, not all 0; got {weights!r}")
    return methods, weights


class Mixup(TwoImageMix):
    """Mixup (Zhang et al., ICLR 2018): ``x_i <- lam * x_i + (1 - lam) * x_j``, ``lam ~ Beta(alpha, alpha)``.

    The constructor is ``timm.data.Mixup``'s (same keyword names, positions and defaults), so
    ``Mixup(**mixup_args)`` in timm's ``train.py`` is an exact drop-in. With ``cutmix_alpha = 0`` (the
    default) it is plain Mixup: the label weight of the kept image is exactly ``lam``. With
    ``cutmix_alpha > 0`` or ``cutmix_minmax`` it switches to :class:`CutMix` with probability
    ``switch_prob`` (only CutMix when ``mixup_alpha = 0``), drawing in timm's order. The pixel arithmetic is
    timm's in every dtype and mode (bit for bit, ``tests/test_timm_parity_dtypes.py``): in 'batch' mode
    ``x * lam + x_flip * (1 - lam)`` with a Python float; per sample ``lam`` rounded to float32 (timm's
    NumPy float32 ``lam_batch``), each product rounded to the input's dtype, then their sum.

    Targets, where this differs from timm: they are float32 with the per-sample ``lam`` in float32 whatever
    the images' dtype, i.e. exactly timm's targets for the same batch in float32. timm's ``_mix_pair`` /
    ``_mix_elem`` return ``torch.tensor(lam_batch, dtype=x.dtype)``, so in 'pair' / 'elem' mode its targets
    depend on the images' dtype: float64 targets for float64 images, and for float16 / bfloat16 images
    ``lam`` and ``1 - lam`` rounded to that dtype, so that a row sums to 1 only within 2**-12 (float16) or
    2**-9 (bfloat16). Why not: the package's soft targets are float32 probability rows (they sum to 1) in
    every mode and dtype, and the label weight should not depend on the precision the images are stored in.
    'batch' mode equals timm's targets in every dtype.

    Args:
        mixup_alpha: Beta parameter of Mixup; Mixup is on if > 0.
        cutmix_alpha: Beta parameter of CutMix; CutMix is on if > 0.
        cutmix_minmax: timm's CutMix box side ratios ``(low, high)``; turns CutMix on with alpha 1.
        prob: probability of mixing, per batch / pair / sample.
        switch_prob: probability of CutMix instead of Mixup when both are on.
        mode: ``'batch'``, ``'pair'`` or ``'elem'``.
        correct_lam: CutMix's ``lam`` corrected to the clipped box area.
        label_smoothing, num_classes: see :class:`TwoImageMix` (timm's defaults 0.1 and 1000).
        multi_label: timm's switch for multi-label targets; only ``False`` (the default) is supported.
        warmup_epochs, steps_per_epoch, generator, ignore_index: see :class:`TwoImageMix`.

    Raises:
        ValueError: neither Mixup nor CutMix is on, or an argument is out of range.
    """

    def __init__(
        self,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: tuple[float, float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        num_classes: int | None = 1000,
        multi_label: bool = False,
        **kwargs: object,
    ) -> None:
        check_multi_label(multi_label)
        cutmix_alpha = check_alpha(cutmix_alpha, "cutmix_alpha", zero_is_off=True)
        cutmix_minmax = check_interval(cutmix_minmax, "cutmix_minmax", optional=True)
        switch_prob = check_probability(switch_prob, "switch_prob")
        correct_lam = check_bool(correct_lam, "correct_lam")
        mixup_alpha = check_alpha(mixup_alpha, "mixup_alpha", zero_is_off=True)
        if mixup_alpha == 0 and cutmix_alpha == 0 and cutmix_minmax is None:
            raise ValueError(
                "mixup_alpha must be > 0, or turn CutMix on (cutmix_alpha > 0 or cutmix_minmax): with "
                "both off nothing is mixed"
            )
        methods, weights = switch_methods(mixup_alpha, cutmix_alpha, cutmix_minmax, correct_lam, switch_prob)
        super().__init__(
            methods,
            weights,
            prob=prob,
            mode=mode,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
            **kwargs,
        )
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.cutmix_minmax = cutmix_minmax
        self.switch_prob = switch_prob
        self.correct_lam = correct_lam


class CutMix(TwoImageMix):
    """CutMix (Yun et al., ICCV 2019) with timm's box: the box of ``x_j`` is pasted into ``x_i``.

    The box is timm's ``rand_bbox`` for ``lam`` (:func:`~salfmix_transforms.boxes.cutmix_box`), or with
    ``cutmix_minmax`` its ``rand_bbox_minmax`` (:func:`~salfmix_transforms.boxes.minmax_box`). With
    ``correct_lam`` (forced with ``cutmix_minmax``, as in timm) ``lam = 1 - box area / (H * W)``, so the
    label weight of the pasted image is exactly its area fraction.

    The constructor takes timm ``Mixup``'s keyword names, so ``CutMix(**mixup_args)`` works where timm's
    arguments ask for CutMix alone (``mixup_alpha=0``); ``switch_prob`` is accepted and has no effect (one
    method). Asking for Mixup too (``mixup_alpha > 0``) is an error: :class:`Mixup` takes the same
    arguments and switches between the two as timm does.

    Args:
        cutmix_alpha: Beta parameter, > 0 (timm forces it to 1 with ``cutmix_minmax``; so do we).
        mixup_alpha: must be 0 (timm's keyword, accepted so that timm's arguments drop in).
        cutmix_minmax, correct_lam, switch_prob, label_smoothing, num_classes, multi_label: as :class:`Mixup`.
        prob, mode and the other keyword arguments: see :class:`TwoImageMix`.
    """

    def __init__(
        self,
        cutmix_alpha: float = 1.0,
        *,
        cutmix_minmax: tuple[float, float] | None = None,
        correct_lam: bool = True,
        mixup_alpha: float = 0.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        num_classes: int | None = 1000,
        multi_label: bool = False,
        **kwargs: object,
    ) -> None:
        check_multi_label(multi_label)
        cutmix_minmax = check_interval(cutmix_minmax, "cutmix_minmax", optional=True)
        if cutmix_minmax is not None:
            cutmix_alpha = 1.0  # as timm: minmax forces CutMix on with alpha 1
        cutmix_alpha = check_alpha(cutmix_alpha, "cutmix_alpha")
        correct_lam = check_bool(correct_lam, "correct_lam")
        if check_number(mixup_alpha, "mixup_alpha", low=0.0) > 0:
            raise ValueError(
                f"mixup_alpha={mixup_alpha} asks for Mixup, which CutMix does not do: use "
                "Mixup(**mixup_args) (timm's switch between Mixup and CutMix) or HybridMix"
            )
        check_probability(switch_prob, "switch_prob")  # timm's argument: accepted, no effect (one method)
        method = CutMixMethod(cutmix_alpha, cutmix_minmax, correct_lam)
        super().__init__([method], label_smoothing=label_smoothing, num_classes=num_classes, **kwargs)
        self.cutmix_alpha = cutmix_alpha
        self.cutmix_minmax = cutmix_minmax
        self.correct_lam = correct_lam

    @property
    def alpha(self) -> float:
        """The Beta parameter (``cutmix_alpha``; the name SaliencyMix and the method objects use)."""
        return self.cutmix_alpha


class SaliencyMix(TwoImageMix):
    """SaliencyMix (Uddin et al., ICLR 2021): the CutMix box centred on the source image's saliency peak.

    The box has CutMix's size for ``lam ~ Beta(alpha, alpha)`` (:func:`~salfmix_transforms.boxes.cutmix_box`)
    and is centred on the maximum (:func:`~salfmix_transforms.boxes.saliency_peaks`) of the fine-grained
    static saliency (:func:`~salfmix_transforms.static_saliency.fine_grained_saliency`) of the *source*
    image ``x_j`` (the flipped partner), then clipped; ``lam`` is corrected to the box area with
    ``correct_lam`` (the reference code always does).

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
        prob, mode and the other keyword arguments: see :class:`TwoImageMix`.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        per_sample: bool = True,
        correct_lam: bool = True,
        **kwargs: object,
    ) -> None:
        method = SaliencyMixMethod(alpha, per_sample, correct_lam)
        super().__init__([method], **kwargs)
        self.alpha, self.per_sample, self.correct_lam = method.alpha, method.per_sample, method.correct_lam


class ResizeMix(TwoImageMix):
    """ResizeMix (Qin et al., "ResizeMix: Mixing Data with Preserved Object Information and True Labels").

    The whole source image ``x_j`` is resized to ``tau`` of the sides, ``tau ~ U(scope)``, and pasted into
    ``x_i`` at a uniform position where it fits (:func:`~salfmix_transforms.boxes.sample_resize_boxes`); the
    label weight of the pasted image is its pixel area ``h * w / (H * W)`` exactly (so
    ``lam = 1 - h * w / (H * W)``; no ``correct_lam`` is needed). The resize is
    ``F.interpolate(..., mode=interpolation, align_corners=False)`` computed for all samples at once
    (:func:`~salfmix_transforms.boxes.resize_from_boxes`).

    Args:
        scope: ``(low, high)`` of the uniform scale ``tau``, ``0 < low <= high <= 1`` (paper: (0.1, 0.8)).
        interpolation: ``'bilinear'`` (default) or ``'nearest'``.
        prob, mode and the other keyword arguments: see :class:`TwoImageMix`.
    """

    def __init__(
        self,
        scope: tuple[float, float] = (0.1, 0.8),
        *,
        interpolation: str = "bilinear",
        **kwargs: object,
    ) -> None:
        method = ResizeMixMethod(scope, interpolation)
        super().__init__([method], **kwargs)
        self.scope, self.interpolation = method.scope, method.interpolation
