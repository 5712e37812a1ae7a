"""FMix (Harris et al., "FMix: Enhancing Mixed Sample Data Augmentation", 2020) on the two-image frame.

The partner's pixels go where a binary mask of low-frequency Fourier noise is 0:

1. complex Gaussian noise in the frequency domain, each frequency ``f`` scaled by ``1 / f ** decay_power``
   (``f`` clamped below at ``1 / max(H, W)``, as the reference code);
2. the inverse real FFT gives a grey map of ``H x W``;
3. ``lam ~ Beta(alpha, alpha)``; the ``round(lam * H * W)`` highest pixels of the map become 1, the others 0
   (ties go to the first in row-major order); with ``max_soft > 0`` the pixels ranked within
   ``max_soft * H * W`` of that threshold get a linear ramp from 1 to 0 instead (the reference code's
   ``binarise_mask``; ``max_soft`` is clamped to ``min(lam, 1 - lam)``);
4. ``x_i <- mask * x_i + (1 - mask) * x_j``; the label weight of ``x_i`` is the mask mean.

Choice: the reference code picks ``ceil`` or ``floor`` of ``lam * H * W`` at random; here it is
``round`` (the mask mean is ``lam`` within half a pixel). The masks are drawn on the host (as the other
methods' parameters, no host synchronisation) and copied to the images' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ._validation import check_alpha, check_number, check_probability
from .boxes import compute_dtype, sample_beta
from .mixing import Layout, MixMethod, TwoImageMix

__all__ = ["FMix", "FMixMethod", "fourier_masks"]


def fourier_masks(
    lam: torch.Tensor,
    height: int,
    width: int,
    decay_power: float = 3.0,
    max_soft: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FMix masks (S, H, W) float32 for the weights ``lam`` (S,): low-frequency noise, thresholded so that
    the top ``round(lam * H * W)`` pixels are 1 (see the module docstring for ``max_soft``)."""
    device = lam.device
    slots = lam.shape[0]
    fy = torch.fft.fftfreq(height, dtype=torch.float64, device=device).view(-1, 1)
    fx = torch.fft.rfftfreq(width, dtype=torch.float64, device=device).view(1, -1)
    freqs = (fy**2 + fx**2).sqrt().clamp_min(1.0 / max(height, width))
    scale = freqs.pow(-decay_power)
    noise = torch.randn((slots, *freqs.shape, 2), generator=generator, dtype=torch.float64, device=device)
    spectrum = torch.complex(noise[..., 0], noise[..., 1]) * scale
    grey = torch.fft.irfft2(spectrum, s=(height, width)).reshape(slots, -1)
    pixels = height * width
    order = grey.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(pixels, device=device).expand(slots, -1))
    lam = lam.to(torch.float64)
    num = (lam * pixels).round()
    soft = torch.minimum(torch.full_like(lam, float(max_soft)), torch.minimum(lam, 1.0 - lam))
    soft = (soft * pixels).floor()
    low, high = (num - soft).view(-1, 1), (num + soft).view(-1, 1)
    ramp = 1.0 - (ranks - low) / (high - low - 1).clamp_min(1.0)  # linspace(1, 0, high - low)
    mask = torch.where(ranks < low, 1.0, torch.where(ranks >= high, 0.0, ramp))
    return mask.view(slots, height, width).to(torch.float32)


@dataclass(frozen=True)
class FMixMethod(MixMethod):
    """FMix's step: a Fourier-noise mask per slot; the region is the mask (B, 1, H, W) of the kept image."""

    alpha: float = 1.0
    decay_power: float = 3.0
    max_soft: float = 0.0
    # blends (MixMethod's default): the target follows the mask by a blend, soft at the edges with max_soft

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_alpha(self.alpha, "alpha"))
        object.__setattr__(self, "decay_power", check_number(self.decay_power, "decay_power", low=0.0))
        object.__setattr__(self, "max_soft", check_probability(self.max_soft, "max_soft"))

    def sample(
        self, slots: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        lam = sample_beta(self.alpha, slots, generator, device)
        return fourier_masks(lam, height, width, self.decay_power, self.max_soft, generator)

    def apply(
        self, x: torch.Tensor, params: torch.Tensor, layout: Layout, saliency: torch.Tensor | None
    ) -> tuple[torch.Tensor, float | torch.Tensor, torch.Tensor]:
        slot = layout.expand(torch.arange(params.shape[0], device=params.device), 0)
        host_mask = params.index_select(0, slot).unsqueeze(1)  # (B, 1, H, W) on the host
        lam = host_mask.to(torch.float64).mean(dim=(1, 2, 3))
        mask = host_mask.to(x.device, non_blocking=True)
        out = _blend(mask, x, x.flip(0))
        return out, (float(lam[0]) if layout.shared else lam.to(x.device, non_blocking=True)), mask

    def apply_target(
        self, target: torch.Tensor, lam: float | torch.Tensor, region: torch.Tensor, layout: Layout
    ) -> torch.Tensor:
        """Per-pixel soft dense targets: ``mask * y_i + (1 - mask) * y_j`` (one-hot where the mask is
        binary)."""
        return _blend(region, target, target.flip(0))

    def own_share(
        self, lam: Any, region: torch.Tensor, batch: int, height: int, width: int, device: torch.device
    ) -> torch.Tensor:
        return region[:, 0].to(torch.float32)


def _blend(mask: torch.Tensor, kept: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """``mask * kept + (1 - mask) * partner``, with the values copied where the mask is 0 or 1 (exact for
    every value, infinities included)."""
    dtype = compute_dtype(kept.dtype) if kept.is_floating_point() else torch.float32
    m = mask.to(dtype)
    mixed = (kept.to(dtype) * m + partner.to(dtype) * (1 - m)).to(kept.dtype)
    return torch.where(mask == 1, kept, torch.where(mask == 0, partner, mixed))


class FMix(TwoImageMix):
    """FMix (Harris et al., 2020): the partner's pixels where a low-frequency Fourier mask is 0.

    See :mod:`salfmix_transforms.fmix`; dense targets and the provenance are the mask's too.

    Args:
        alpha: Beta parameter of ``lam``, > 0.
        decay_power: the spectrum's decay ``delta`` (``1 / f ** delta``), >= 0; larger is smoother.
        max_soft: softening of the mask's boundary, in [0, 1]; 0: a binary mask.
        prob, mode and the other keyword arguments: see :class:`~salfmix_transforms.mixing.TwoImageMix`.
    """

    def __init__(
        self, alpha: float = 1.0, *, decay_power: float = 3.0, max_soft: float = 0.0, **kwargs: object
    ) -> None:
        method = FMixMethod(alpha, decay_power, max_soft)
        super().__init__([method], **kwargs)
        self.alpha, self.decay_power, self.max_soft = method.alpha, method.decay_power, method.max_soft
