"""HybridMix (Choi et al., Sensors 2021, Algorithm 2, Table 2): SalfMix, then a two-image mix.

Algorithm 2 trains with, for every batch after the warm-up epoch:

* line 10: the saliency maps of the (un-mixed) batch, from the model being trained and the original labels;
* line 11: SalfMix on every image of the batch (Algorithm 1), labels unchanged;
* line 12: a two-image mix (Mixup, CutMix or SaliencyMix; here also ResizeMix) of the self-mixed batch,
  with the mixed labels.

During the warm-up epochs (Algorithm 2 skips SalfMix in the first epoch, when the model's saliency is still
meaningless) only the two-image mix runs. :class:`HybridMix` mirrors ``timm.data.Mixup``'s constructor and
call, so it drops into a timm training script in place of ``Mixup``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._base import BatchTransform, all_own
from ._validation import (
    IGNORE_INDEX,
    check_bool,
    check_grid,
    check_minmax,
    check_mode,
    check_model,
    check_multi_label,
    check_optional_alpha,
    check_probability,
    check_ratio,
    check_saliency_mode,
    check_scope,
)
from .mixing import MixMethod, TwoImageMix, same_format, switch_methods
from .salfmix import SalfMix
from .targets import infer_num_classes, is_dense_target

__all__ = ["HybridMix"]


class HybridMix(BatchTransform):
    """SalfMix on the whole batch, then a two-image mix chosen like timm's ``Mixup`` (Algorithm 2).

    Call as ``x, target = hybrid(x, target, model=model)`` (or give ``model=`` to the constructor and call
    ``hybrid(x, target)``, timm's call); the target comes back as soft targets (B, num_classes). The warm-up
    of Algorithm 2 (no SalfMix in the first ``warmup_epochs`` epochs; the two-image mix runs) is HybridMix's
    own epoch counter: call :meth:`set_epoch` at the start of every epoch, or give
    ``steps_per_epoch=len(loader)``.

    Composition: HybridMix holds its two steps, ``salfmix`` (a :class:`~salfmix_transforms.salfmix.SalfMix`
    without a warm-up of its own; the model is passed per call) and ``mix`` (the two-image frame
    :class:`~salfmix_transforms.mixing.TwoImageMix` with the enabled methods, ``None`` when there is none),
    and calls their public steps; it forwards nothing to them.

    Order (Algorithm 2, lines 10-12): SalfMix is applied to every image of the batch first, with the saliency
    of the model on the *un-mixed* batch and the original labels (or the maps given as ``saliency=``), so both
    images of every pair are self-mixed; then each sample is mixed with its flipped partner
    (``B - 1 - i``) by the two-image method, with timm's ``mode``, ``prob`` and ``label_smoothing``.

    Choice of the two-image method, per batch ('batch') or per pair / sample ('pair', 'elem'), among the
    enabled ones (``mixup_alpha > 0``, ``cutmix_alpha > 0`` or ``cutmix_minmax``, ``saliencymix_alpha > 0``,
    ``resizemix_scope``): as timm, Mixup is chosen with probability ``1 - switch_prob`` and a box method with
    ``switch_prob`` when Mixup and a box method are both enabled
    (:func:`~salfmix_transforms.mixing.switch_weights`); ``partners`` adds any other
    :class:`~salfmix_transforms.mixing.MixMethod` (e.g. FMix's) to that switch, sharing ``switch_prob``
    with the box methods.

    ``saliency=`` at call time is SalfMix's map (instead of the model's gradient saliency); SaliencyMix
    computes its own static saliency on the self-mixed batch, the images it actually mixes.

    Dense targets (semantic segmentation: a class mask (B, H, W) or soft dense targets (B, K, H, W)) go
    through both steps with the image: SalfMix copies the labels of ``P_m`` over ``P_l`` (Algorithm 1, line
    6), then the two-image mix pastes or blends them
    (:meth:`~salfmix_transforms.mixing.TwoImageMix.apply_target`); the result is soft dense targets
    (B, num_classes, H, W). The saliency is then that of the per-pixel cross-entropy (eq. (2)-(3),
    :func:`~salfmix_transforms.saliency.gradient_saliency`).

    With SalfMix off (``salfmix_prob=0``, or during the warm-up) the result is exactly the plain two-image
    method's (:class:`~salfmix_transforms.mixing.Mixup`, ...) for the same generator state; with
    ``mixup_enabled = False`` (timm's switch for ``--mixup-off-epoch``) only SalfMix runs.

    Args (timm ``Mixup``'s names, positions and defaults first):
        mixup_alpha: Mixup's Beta parameter; Mixup is enabled if > 0.
        cutmix_alpha: CutMix's Beta parameter; CutMix is enabled if > 0.
        cutmix_minmax: timm's CutMix box side ratios ``(low, high)``; enables CutMix with alpha 1 (as timm).
        prob: probability of the two-image mix per batch / pair / sample.
        switch_prob: probability of a box method instead of Mixup when both are enabled.
        mode: ``'batch'``, ``'pair'`` or ``'elem'``.
        correct_lam: correct ``lam`` to the clipped box area (CutMix, SaliencyMix).
        label_smoothing: smoothing of the one-hot rows before mixing.
        num_classes: number of classes of the soft targets.
        multi_label: timm's switch for multi-label targets; only ``False`` (the default) is supported.
        saliencymix_alpha: SaliencyMix's Beta parameter; SaliencyMix is enabled if > 0.
        resizemix_scope: ``None`` (ResizeMix off) or ResizeMix's scale range ``(low, high)``.
        partners: further two-image methods (:class:`~salfmix_transforms.mixing.MixMethod` objects).
        salfmix_prob: probability that SalfMix transforms a sample; 0 turns SalfMix off.
        salfmix_grid, salfmix_ratio, salfmix_pool, saliency_mode, saliency_scale: SalfMix's ``grid`` (n),
            ``ratio`` (r), ``pool``, ``saliency_mode`` and ``saliency_scale``
            (:class:`~salfmix_transforms.salfmix.SalfMix`).
        warmup_epochs: epochs without SalfMix at the start; the default, 1, is Algorithm 2's (as
            ``methods.build("hybridmix-v3")`` and :class:`~salfmix_transforms.salfmix.SalfMix`), 0 turns
            it off. The two-image mix runs in every epoch.
        steps_per_epoch: calls per epoch (``len(loader)``), so that the warm-up ends without
            :meth:`set_epoch` (:class:`~salfmix_transforms._base.EpochCounter`).
        model: the network being trained, used for SalfMix's saliency when a call passes none.
        generator: default ``torch.Generator`` for every random choice (a call's ``generator=`` wins).
        ignore_index: the class index of unlabelled pixels in class masks (B, H, W)
            (:class:`~salfmix_transforms._base.BatchTransform`).

    Raises:
        ValueError: at construction if neither SalfMix nor any two-image method is enabled; at call time if
            SalfMix is active and there is no model (constructor or call) and no ``saliency=``.
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
        *,
        saliencymix_alpha: float = 0.0,
        resizemix_scope: tuple[float, float] | None = None,
        partners: Sequence[MixMethod] = (),
        salfmix_prob: float = 1.0,
        salfmix_grid: int = 4,
        salfmix_ratio: float = 0.3,
        salfmix_pool: bool = True,
        saliency_mode: str = "train",
        saliency_scale: float = 1.0,
        warmup_epochs: int = 1,
        steps_per_epoch: int | None = None,
        model: torch.nn.Module | None = None,
        generator: torch.Generator | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        check_multi_label(multi_label)
        # The warm-up is HybridMix's own (its counter): during it only the two-image step runs.
        super().__init__(
            num_classes=num_classes,
            label_smoothing=label_smoothing,
            warmup_epochs=warmup_epochs,
            steps_per_epoch=steps_per_epoch,
            generator=generator,
            ignore_index=ignore_index,
        )
        self.mixup_alpha = check_optional_alpha(mixup_alpha, "mixup_alpha")
        self.cutmix_minmax = check_minmax(cutmix_minmax, "cutmix_minmax")
        # as timm: minmax forces CutMix on with alpha 1
        self.cutmix_alpha = 1.0 if self.cutmix_minmax else check_optional_alpha(cutmix_alpha, "cutmix_alpha")
        self.saliencymix_alpha = check_optional_alpha(saliencymix_alpha, "saliencymix_alpha")
        self.resizemix_scope = (
            None if resizemix_scope is None else check_scope(resizemix_scope, "resizemix_scope")
        )
        self.partners = tuple(partners)
        if not all(isinstance(p, MixMethod) for p in self.partners):
            raise TypeError(f"partners must be MixMethod objects (e.g. FMixMethod(1.0)), got {partners!r}")
        self.prob = check_probability(prob, "prob")
        self.switch_prob = check_probability(switch_prob, "switch_prob")
        self.mode = check_mode(mode)
        self.correct_lam = check_bool(correct_lam, "correct_lam")
        self.salfmix_prob = check_probability(salfmix_prob, "salfmix_prob")
        # Checked here, so that an error names HybridMix's argument, not SalfMix's.
        self.salfmix_grid = check_grid(salfmix_grid, "salfmix_grid")
        self.salfmix_ratio = check_ratio(salfmix_ratio, "salfmix_ratio")
        self.salfmix_pool = check_bool(salfmix_pool, "salfmix_pool")
        self.saliency_mode = check_saliency_mode(saliency_mode)
        self.saliency_scale = check_ratio(saliency_scale, "saliency_scale")
        self.model = check_model(model)
        self.mixup_enabled = True  # timm's switch: False turns the two-image mix off (SalfMix stays)
        # The two steps: SalfMix (no warm-up of its own: HybridMix's decides; the model is given per call)
        # and the two-image frame (None when no two-image method is enabled).
        self.salfmix = SalfMix(
            self.salfmix_grid,
            self.salfmix_ratio,
            self.salfmix_prob,
            pool=self.salfmix_pool,
            saliency_mode=self.saliency_mode,
            saliency_scale=self.saliency_scale,
            num_classes=self.num_classes,  # checked against the model's logits; dense targets come back soft
            warmup_epochs=0,
            ignore_index=self.ignore_index,
        )
        methods, weights = switch_methods(
            self.mixup_alpha,
            self.cutmix_alpha,
            self.cutmix_minmax,
            self.correct_lam,
            self.switch_prob,
            saliencymix_alpha=self.saliencymix_alpha,
            resizemix_scope=self.resizemix_scope,
            extra=self.partners,
        )
        if not methods and self.salfmix_prob == 0:
            raise ValueError(
                "HybridMix has nothing to do: set salfmix_prob > 0 or enable a two-image method "
                "(mixup_alpha, cutmix_alpha, cutmix_minmax, saliencymix_alpha, resizemix_scope or partners)"
            )
        self.mix = (
            TwoImageMix(
                methods,
                weights,
                prob=self.prob,
                mode=self.mode,
                label_smoothing=self.label_smoothing,
                num_classes=self.num_classes,
                ignore_index=self.ignore_index,
            )
            if methods
            else None
        )

    # -- presets of Table 2 -----------------------------------------------------------------------------

    @classmethod
    def _preset(cls, method: dict[str, Any], kwargs: dict[str, Any]) -> HybridMix:
        params: dict[str, Any] = {
            "mixup_alpha": 0.0,
            "cutmix_alpha": 0.0,
            "saliencymix_alpha": 0.0,
            "resizemix_scope": None,
            "label_smoothing": 0.0,
        }
        params.update(method)
        params.update(kwargs)
        return cls(**params)

    @classmethod
    def v1(cls, **kwargs: Any) -> HybridMix:
        """HybridMix v1 of Table 2: SalfMix + Mixup (alpha 1).

        Choice: no label smoothing (the paper trains with plain cross-entropy on the mixed labels) and
        SalfMix's defaults (n = 4, r = 0.3, pooling, warm-up of one epoch); ``kwargs`` override anything,
        e.g. ``num_classes``. timm's ``mixup_args`` drop in: ``HybridMix.v1(**mixup_args, model=model)``
        keeps the v1 partner (Mixup, alpha ``mixup_alpha`` when timm's is > 0) and takes the rest.
        """
        return cls._preset({"mixup_alpha": 1.0}, cls._timm_args("mixup_alpha", kwargs))

    @classmethod
    def v2(cls, **kwargs: Any) -> HybridMix:
        """HybridMix v2 of Table 2: SalfMix + SaliencyMix (alpha 1); same choices as :meth:`v1`."""
        return cls._preset({"saliencymix_alpha": 1.0}, cls._timm_args("saliencymix_alpha", kwargs))

    @classmethod
    def v3(cls, **kwargs: Any) -> HybridMix:
        """HybridMix v3 of Table 2: SalfMix + CutMix (alpha 1); same choices as :meth:`v1`."""
        return cls._preset({"cutmix_alpha": 1.0}, cls._timm_args("cutmix_alpha", kwargs))

    @staticmethod
    def _timm_args(partner: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with the other methods' alphas dropped, so that a version keeps its one partner.

        timm's ``mixup_args`` always hold ``mixup_alpha``, ``cutmix_alpha`` and ``cutmix_minmax``; a preset
        keeps only its own partner's (when > 0: a 0 from timm's defaults means "unset" here). Choice: an
        explicit other alpha > 0 is an error rather than a silent mix of two versions.
        """
        kwargs = dict(kwargs)
        for name in ("mixup_alpha", "cutmix_alpha", "saliencymix_alpha"):
            value = kwargs.get(name)
            if value is None or name == partner:
                if name == partner and not value:
                    kwargs.pop(name, None)
                continue
            if value:
                raise ValueError(
                    f"{name}={value} asks for another partner than this HybridMix version's "
                    f"({partner}); use HybridMix(...) with both alphas to switch between them"
                )
            kwargs.pop(name)
        if partner != "cutmix_alpha" and kwargs.get("cutmix_minmax") is not None:
            raise ValueError("cutmix_minmax asks for CutMix: use HybridMix.v3 (or HybridMix(...))")
        if partner != "cutmix_alpha":
            kwargs.pop("cutmix_minmax", None)
        return kwargs

    # -- state ----------------------------------------------------------------------------------------------

    @property
    def salfmix_active(self) -> bool:
        """Whether SalfMix runs on the next call: ``salfmix_prob > 0`` and past the warm-up epochs."""
        return self.salfmix_prob > 0 and not self.in_warmup

    @property
    def two_image_active(self) -> bool:
        """Whether a two-image mix runs on the next call (some method enabled and ``mixup_enabled``)."""
        return self.mixup_enabled and self.mix is not None

    # -- call -------------------------------------------------------------------------------------------

    def _check_can_run(
        self, in_warmup: bool, model: torch.nn.Module | None, saliency: torch.Tensor | None
    ) -> None:
        if self.salfmix_prob == 0:
            return  # the warm-up only holds SalfMix back: without SalfMix it changes nothing
        super()._check_can_run(in_warmup, model, saliency)
        if in_warmup and model is None and self.model is None and saliency is None:
            self.warn_once(
                "model",
                "no model: neither the constructor nor this call got model= (or saliency=), so the first "
                "call after the warm-up will fail. Pass model=... to the constructor (timm's train.py: "
                "next to Mixup's arguments).",
            )

    def _apply_warmup(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        *,
        model: torch.nn.Module | None,
        saliency: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Algorithm 2 skips SalfMix in the warm-up epochs; the two-image mix runs in every epoch.
        return self._steps(x, target, None, None, generator, salfmix=False)

    def _apply(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        *,
        model: torch.nn.Module | None,
        saliency: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._steps(x, target, model, saliency, generator, salfmix=self.salfmix_prob > 0)

    def _steps(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        model: torch.nn.Module | None,
        saliency: torch.Tensor | None,
        generator: torch.Generator | None,
        *,
        salfmix: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dense = is_dense_target(target)
        if dense:
            infer_num_classes(target, self.num_classes)  # a class mask needs num_classes: fail before SalfMix
        soft = None if dense else self._soft_targets(target)
        mixed, moved = x, target
        model = model if model is not None else self.model
        if salfmix and model is None and saliency is None:
            raise ValueError(
                "model must be given: HybridMix applies SalfMix (salfmix_prob="
                f"{self.salfmix_prob}, past warmup_epochs={self.warmup_epochs}), whose "
                "saliency comes from the model being trained; pass model=... to the constructor or the call "
                "(or saliency= maps of shape (B, H, W)), or set salfmix_prob=0"
            )
        own = all_own(x)
        if salfmix:
            # Algorithm 2, lines 10-11: saliency of the un-mixed batch with the original labels, SalfMix.
            mixed, moved = self.salfmix.call_checked(
                x, target, model=model, saliency=saliency, generator=generator
            )
            own = self.salfmix.provenance_builder() or own
        if dense:
            soft = self._soft_targets(moved)  # the labels of P_m moved with its pixels (Algorithm 1, line 6)
        if self.two_image_active:
            # Algorithm 2, line 12: the two-image mix of the self-mixed batch.
            out, mixed_target, mix_own = self.mix.mix(mixed, soft, generator=generator)
            # A pixel is the sample's own only if both steps left it in place: the shares multiply.
            self._record_provenance(lambda: mix_own() * own())
            return out, mixed_target
        self._record_provenance(own)
        if mixed is x:
            mixed = x.clone()
        return same_format(mixed, x), soft
