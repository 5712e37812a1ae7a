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
    MODES,
    SALIENCY_MODES,
    check_alpha,
    check_bool,
    check_choice,
    check_grid,
    check_interval,
    check_model,
    check_multi_label,
    check_probability,
    check_ratio,
)
from .mixing import MixMethod, TwoImageMix, returns_class_masks, same_format, switch_methods
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
    and calls them in the order of Algorithm 2 (module docstring): SalfMix on every image, with the saliency
    of the *un-mixed* batch and the original labels (or the maps given as ``saliency=``), so both images of
    every pair are self-mixed; then the two-image mix with timm's pairing, ``mode``, ``prob`` and
    ``label_smoothing``. SaliencyMix computes its own static saliency on the self-mixed batch.

    The two-image method is chosen among the enabled ones as timm's ``Mixup`` chooses between Mixup and
    CutMix (:func:`~salfmix_transforms.mixing.switch_weights`): the box methods (CutMix, SaliencyMix,
    ResizeMix) and ``partners`` (any other :class:`~salfmix_transforms.mixing.MixMethod`, e.g. FMix's)
    share ``switch_prob``.

    Dense targets (semantic segmentation: a class mask (B, H, W) or soft dense targets (B, K, H, W)) go
    through both steps with the image (Algorithm 1, line 6, then
    :meth:`~salfmix_transforms.mixing.MixMethod.apply_target`) and come back as soft dense targets
    (B, num_classes, H, W); the saliency is then that of the per-pixel cross-entropy (eq. (2)-(3),
    :func:`~salfmix_transforms.saliency.gradient_saliency`).

    With SalfMix off (``salfmix_prob=0``, or during the warm-up) the result is exactly the plain two-image
    method's (:class:`~salfmix_transforms.mixing.Mixup`, ...) for the same generator state; with
    ``mixup_enabled = False`` (timm's switch for ``--mixup-off-epoch``) only SalfMix runs.

    Args:
        mixup_alpha, cutmix_alpha, cutmix_minmax, prob, switch_prob, mode, correct_lam, label_smoothing,
            num_classes, multi_label: timm ``Mixup``'s arguments (names, positions and defaults), as in
            :class:`~salfmix_transforms.mixing.Mixup`; ``switch_prob`` picks any box method over Mixup.
        saliencymix_alpha: SaliencyMix's Beta parameter; SaliencyMix is enabled if > 0.
        resizemix_scope: ``None`` (ResizeMix off) or ResizeMix's scale range ``(low, high)``.
        partners: further two-image methods (:class:`~salfmix_transforms.mixing.MixMethod` objects).
        salfmix_prob: probability that SalfMix transforms a sample; 0 turns SalfMix off.
        salfmix_grid, salfmix_ratio, salfmix_pool, saliency_mode, saliency_scale: SalfMix's ``grid`` (n),
            ``ratio`` (r), ``pool``, ``saliency_mode`` and ``saliency_scale``
            (:class:`~salfmix_transforms.salfmix.SalfMix`).
        warmup_epochs: epochs without SalfMix at the start (the SalfMix family's 1, Algorithm 2's; see
            :class:`~salfmix_transforms._base.BatchTransform`). The two-image mix runs in every epoch.
        model: the network being trained, used for SalfMix's saliency when a call passes none.
        steps_per_epoch, generator, ignore_index (keyword only): see
            :class:`~salfmix_transforms._base.BatchTransform`.

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
        model: torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        check_multi_label(multi_label)
        # The warm-up is HybridMix's own (its counter): during it only the two-image step runs.
        super().__init__(
            num_classes=num_classes, label_smoothing=label_smoothing, warmup_epochs=warmup_epochs, **kwargs
        )
        self.mixup_alpha = check_alpha(mixup_alpha, "mixup_alpha", zero_is_off=True)
        self.cutmix_minmax = check_interval(cutmix_minmax, "cutmix_minmax", optional=True)
        # as timm: minmax forces CutMix on with alpha 1
        cutmix_alpha = 1.0 if self.cutmix_minmax else cutmix_alpha
        self.cutmix_alpha = check_alpha(cutmix_alpha, "cutmix_alpha", zero_is_off=True)
        self.saliencymix_alpha = check_alpha(saliencymix_alpha, "saliencymix_alpha", zero_is_off=True)
        self.resizemix_scope = check_interval(
            resizemix_scope, "resizemix_scope", positive=True, optional=True
        )
        self.partners = tuple(partners)
        if not all(isinstance(p, MixMethod) for p in self.partners):
            raise TypeError(f"partners must be MixMethod objects (e.g. FMixMethod(1.0)), got {partners!r}")
        self.prob = check_probability(prob, "prob")
        self.switch_prob = check_probability(switch_prob, "switch_prob")
        self.mode = check_choice(mode, "mode", MODES)
        self.correct_lam = check_bool(correct_lam, "correct_lam")
        self.salfmix_prob = check_probability(salfmix_prob, "salfmix_prob")
        # Checked here, so that an error names HybridMix's argument, not SalfMix's.
        self.salfmix_grid = check_grid(salfmix_grid, "salfmix_grid")
        self.salfmix_ratio = check_ratio(salfmix_ratio, "salfmix_ratio")
        self.salfmix_pool = check_bool(salfmix_pool, "salfmix_pool")
        self.saliency_mode = check_choice(saliency_mode, "saliency_mode", SALIENCY_MODES)
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
    def v1(cls, **kwargs: Any) -> HybridMix:
        """HybridMix v1 of Table 2: SalfMix + Mixup (alpha 1).

        Choice: no label smoothing (the paper trains with plain cross-entropy on the mixed labels) and
        SalfMix's defaults (n = 4, r = 0.3, pooling, warm-up of one epoch); ``kwargs`` override anything,
        e.g. ``num_classes``. timm's ``mixup_args`` drop in: ``HybridMix.v1(**mixup_args, model=model)``
        keeps the v1 partner (Mixup, alpha ``mixup_alpha`` when timm's is > 0) and takes the rest.
        """
        return cls._version("mixup_alpha", kwargs)

    @classmethod
    def v2(cls, **kwargs: Any) -> HybridMix:
        """HybridMix v2 of Table 2: SalfMix + SaliencyMix (alpha 1); same choices as :meth:`v1`."""
        return cls._version("saliencymix_alpha", kwargs)

    @classmethod
    def v3(cls, **kwargs: Any) -> HybridMix:
        """HybridMix v3 of Table 2: SalfMix + CutMix (alpha 1); same choices as :meth:`v1`."""
        return cls._version("cutmix_alpha", kwargs)

    @classmethod
    def _version(cls, partner: str, kwargs: dict[str, Any]) -> HybridMix:
        """The version whose one partner is switched on by ``partner`` (alpha 1 unless ``kwargs`` give it).

        timm's ``mixup_args`` always hold ``mixup_alpha``, ``cutmix_alpha`` and ``cutmix_minmax``; a version
        keeps only its own partner's (when > 0: a 0 from timm's defaults means "unset" here). Choice: an
        explicit other alpha > 0 is an error rather than a silent mix of two versions.
        """
        kwargs = dict(kwargs)
        for name in ("mixup_alpha", "cutmix_alpha", "saliencymix_alpha"):
            value = kwargs.get(name)
            if value and name != partner:
                raise ValueError(
                    f"{name}={value} asks for another partner than this HybridMix version's "
                    f"({partner}); use HybridMix(...) with both alphas to switch between them"
                )
            if not value and (value is not None or name == partner):
                kwargs.pop(name, None)
        if partner != "cutmix_alpha" and kwargs.pop("cutmix_minmax", None) is not None:
            raise ValueError("cutmix_minmax asks for CutMix: use HybridMix.v3 (or HybridMix(...))")
        off = {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "saliencymix_alpha": 0.0, "resizemix_scope": None}
        return cls(**{**off, "label_smoothing": 0.0, partner: 1.0, **kwargs})

    # -- state ----------------------------------------------------------------------------------------------

    @property
    def salfmix_active(self) -> bool:
        """Whether SalfMix runs on the next call: ``salfmix_prob > 0`` and past the warm-up epochs."""
        return self.salfmix_prob > 0 and not self.in_warmup

    @property
    def keeps_class_masks(self) -> bool:
        """Whether ``num_classes=None`` returns class masks for class masks: the two-image methods (if any)
        paste."""
        return self.mix is None or self.mix.keeps_class_masks

    @property
    def two_image_active(self) -> bool:
        """Whether a two-image mix runs on the next call (some method enabled and ``mixup_enabled``)."""
        return self.mixup_enabled and self.mix is not None

    # -- call -------------------------------------------------------------------------------------------

    _in_warmup_only = "SalfMix never runs: only the two-image mix does"  # Algorithm 2's warm-up

    def _check_can_run(
        self, in_warmup: bool, model: torch.nn.Module | None, saliency: torch.Tensor | None
    ) -> None:
        if self.salfmix_prob == 0:
            return  # the warm-up only holds SalfMix back: without SalfMix it changes nothing
        super()._check_can_run(in_warmup, model, saliency)
        if in_warmup:
            self._warn_if_no_map(model, saliency)

    def _apply_warmup(
        self, x: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Algorithm 2 skips SalfMix in the warm-up epochs; the two-image mix runs in every epoch.
        return self._apply(x, target, model=None, saliency=None, generator=generator, salfmix=False)

    def _apply(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        *,
        model: torch.nn.Module | None,
        saliency: torch.Tensor | None,
        generator: torch.Generator | None,
        salfmix: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Algorithm 2, lines 10-12 (``salfmix=False``: line 12 only, the warm-up)."""
        salfmix = salfmix and self.salfmix_prob > 0
        dense = is_dense_target(target)
        methods = self.mix.methods if self.mix is not None else ()
        class_masks = returns_class_masks(self, methods, target)  # fails before SalfMix
        if dense and not class_masks:
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
        if dense:  # the labels of P_m moved with its pixels (Algorithm 1, line 6); class masks as planes
            soft = moved.unsqueeze(1) if class_masks else self._soft_targets(moved)
        if self.two_image_active:
            # Algorithm 2, line 12: the two-image mix of the self-mixed batch.
            out, mixed_target, mix_own = self.mix.mix(mixed, soft, generator=generator)
            # A pixel is the sample's own only if both steps left it in place: the shares multiply.
            self.provenance = lambda: mix_own() * own()
            return out, mixed_target.squeeze(1) if class_masks else mixed_target
        self.provenance = own
        if mixed is x:
            mixed = x.clone()
        return same_format(mixed, x), moved if class_masks else soft
