"""Cutout (DeVries & Taylor, 2017) and the "Cutout with saliency" ablation of SalfMix (paper Table 9).

* :class:`Cutout`: a box centred at a uniformly random pixel, clipped at the borders, is filled with a
  constant. No model is needed.
* :class:`SaliencyCutout`: the least salient patch ``P_l`` of Algorithm 1 (placed exactly as SalfMix places
  it) is filled with a constant instead of receiving the most salient patch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import BatchTransform
from ._random import rand
from ._validation import check_bool, check_number, check_probability, check_ratio, check_writable
from .boxes import box_mask, centred_box, fill_boxes, sample_box_centres
from .patches import SelfMixPlan, fill_patches, patch_size
from .salfmix import SalfMix

__all__ = ["Cutout", "SaliencyCutout"]


class Cutout(BatchTransform):
    """Cutout: fill one box per image with ``fill`` (DeVries & Taylor, "Improved Regularization of
    Convolutional Neural Networks with Cutout", 2017); a baseline of the SalfMix paper.

    Per sample, with probability ``prob``: the box has ``ph = floor(H * mask_ratio)`` rows and
    ``pw = floor(W * mask_ratio)`` columns (at least one each), its centre ``(cy, cx)`` is a uniformly random
    pixel of the image, it covers rows ``[cy - ph // 2, cy - ph // 2 + ph)`` and the corresponding columns,
    and it is clipped at the image borders (so a box near a border is smaller). The label is unchanged; a
    dense target loses the box too: ``ignore_index`` in a class mask, all-zero (ignored) soft pixels.

    Choice: the size is a ratio of the image side, ``mask_ratio=0.5`` being the 16-pixel box of CIFAR
    (32x32); an odd side keeps all of its ``ph`` pixels (the reference code's ``+-length // 2`` would drop
    one).

    Args:
        mask_ratio: box side as a fraction of the image side, in (0, 1].
        prob: probability that a sample is cut out.
        fill: the value written into the box.
        inplace: ``True`` fills the boxes of ``x`` itself and returns it (torchvision's
            ``RandomErasing(inplace=True)``); ``x`` must not require grad.
        num_classes, label_smoothing, warmup_epochs, steps_per_epoch, generator (keyword only): see
            :class:`~salfmix_transforms._base.BatchTransform`.
    """

    def __init__(
        self,
        mask_ratio: float = 0.5,
        prob: float = 1.0,
        *,
        fill: float = 0.0,
        inplace: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.mask_ratio = check_ratio(mask_ratio, "mask_ratio")
        self.prob = check_probability(prob, "prob")
        self.fill = check_number(fill, "fill", finite=True)
        self.inplace = check_bool(inplace, "inplace")

    def boxes(
        self,
        batch: int,
        height: int,
        width: int,
        device: torch.device | str,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(top, left, bottom, right, applied)``, each (B,): clipped half-open boxes, ``prob`` draw."""
        device = torch.device(device)
        box_h, box_w = patch_size(height, width, self.mask_ratio)
        centre_y, centre_x = sample_box_centres(height, width, batch, generator, device)
        top, bottom, left, right = centred_box(centre_y, centre_x, box_h, box_w, height, width)
        applied = rand((batch,), generator, device) < self.prob
        return top, left, bottom, right, applied

    def _apply(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        *,
        model: torch.nn.Module | None,
        saliency: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = x.shape
        if self.inplace:
            check_writable(x)
        top, left, bottom, right, applied = self.boxes(batch, height, width, x.device, generator)

        def cut(planes: torch.Tensor, fill: float | int, inplace: bool) -> torch.Tensor:
            return fill_boxes(planes, top, left, bottom, right, fill, applied, inplace=inplace)

        def own() -> torch.Tensor:  # a skipped sample has an empty box
            cut_out = box_mask(top, left, torch.where(applied, bottom, top), right, height, width)
            return (~cut_out[:, 0]).float()

        return self._pixel_step(x, target, cut, own)


class SaliencyCutout(SalfMix):
    """Cutout with saliency (paper Table 9): fill the least salient patch ``P_l`` with ``fill``.

    ``R_l`` and ``P_l`` are chosen exactly as in SalfMix (Algorithm 1, lines 1-5: pooled saliency, argmin
    cell, patch of ``floor(H * r) x floor(W * r)`` placed at random around the cell); line 6 is replaced by
    dropping ``P_l``. Like :class:`~salfmix_transforms.salfmix.SalfMix` it needs ``model=`` or
    ``saliency=``. The label is unchanged; a dense target loses ``P_l`` as :class:`Cutout`'s box.

    Choice: the defaults (``grid=4``, ``ratio=0.3``) are SalfMix's, so that the ablation differs from SalfMix
    only in what is written into ``P_l``; ``P_m`` is still drawn (and ignored) so that the same generator
    state gives the same ``P_l`` as SalfMix.

    Args:
        fill: the value written into ``P_l``.
        warmup_epochs: SalfMix's warm-up, 1 (no Cutout of ``P_l`` in the first epoch); 0 turns it off.
        grid, ratio, prob and the keyword arguments (``pool``, ``saliency_mode``, ``inplace``, ``model``,
            ``num_classes``, ...): those of :class:`~salfmix_transforms.salfmix.SalfMix`.
    """

    def __init__(
        self,
        grid: int = 4,
        ratio: float = 0.3,
        prob: float = 1.0,
        *,
        fill: float = 0.0,
        warmup_epochs: int = 1,
        **kwargs: object,
    ) -> None:
        super().__init__(grid, ratio, prob, warmup_epochs=warmup_epochs, **kwargs)
        self.fill = check_number(fill, "fill", finite=True)

    def _line_6(self, plan: SelfMixPlan) -> Callable[[torch.Tensor, float | int, bool], torch.Tensor]:
        """``P_l`` filled with ``fill`` instead of receiving ``P_m``."""

        def drop(planes: torch.Tensor, fill: float | int, inplace: bool) -> torch.Tensor:
            top, left = plan.dst_top, plan.dst_left
            return fill_patches(
                planes, top, left, plan.patch_height, plan.patch_width, fill, plan.applied, inplace=inplace
            )

        return drop
