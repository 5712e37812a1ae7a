"""The common frame of the package's batch transforms (timm ``Mixup``-style call).

Every transform is called as ``x, target = transform(x, target, model=..., saliency=..., generator=...)``
and leaves ``x`` unchanged, unless a single-image transform was built with ``inplace=True`` (then ``x`` is
overwritten and returned, as timm's ``Mixup`` does). This base class does the parts they share: argument
checks, choice of random generator (call argument over constructor argument over PyTorch's global RNG), the
warm-up epochs of Algorithm 2 (``set_epoch``), and the soft-target output (``num_classes`` /
``label_smoothing``).
"""

from __future__ import annotations

import torch

from ._random import resolve_generator
from ._validation import check_generator, check_images, check_probability, check_target
from .targets import _to_soft_targets_unchecked, infer_num_classes

__all__ = ["BatchTransform"]


class BatchTransform:
    """Base class: subclasses implement :meth:`_apply`.

    Args:
        num_classes: when given, targets come back as soft targets (B, num_classes) with ``label_smoothing``
            applied (timm's formula); when ``None``, single-image methods return the target as they got it.
        label_smoothing: smoothing ``s`` of the soft targets, in [0, 1].
        warmup_epochs: number of epochs at the start of training during which the transform is the identity
            (Algorithm 2 skips SalfMix in the first epoch). Driven by :meth:`set_epoch`.
        generator: default ``torch.Generator`` for every random choice (a call's ``generator=`` wins).
    """

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        warmup_epochs: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
            raise TypeError(f"num_classes must be an int or None, got {type(num_classes).__name__}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int):
            raise TypeError(f"warmup_epochs must be an int, got {type(warmup_epochs).__name__}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.num_classes = num_classes
        self.label_smoothing = check_probability(label_smoothing, "label_smoothing")
        self.warmup_epochs = warmup_epochs
        self.generator = check_generator(generator)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the starting epoch (0-based); the transform is the identity while ``epoch < warmup_epochs``."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    @property
    def in_warmup(self) -> bool:
        return self.epoch < self.warmup_epochs

    def _resolve_generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        return resolve_generator(check_generator(generator), self.generator)

    def _check_call(self, x: object, target: object) -> tuple[torch.Tensor, torch.Tensor]:
        x = check_images(x)
        target = check_target(target, x.shape[0], self.num_classes)
        return x, target

    def _soft_targets(self, target: torch.Tensor) -> torch.Tensor:
        """Soft targets (B, K) of a target checked by :meth:`_check_call`; ``K`` is ``num_classes`` or, when
        that is ``None``, the width of the soft targets given (class indices then need ``num_classes``)."""
        num_classes = infer_num_classes(target, self.num_classes)
        return _to_soft_targets_unchecked(target, num_classes, self.label_smoothing)

    def _output_target(self, target: torch.Tensor) -> torch.Tensor:
        """The target of a label-preserving transform: soft when ``num_classes`` is set, else unchanged."""
        if self.num_classes is None:
            return target
        return self._soft_targets(target)

    def __call__(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        *,
        model: torch.nn.Module | None = None,
        saliency: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, target = self._check_call(x, target)
        generator = self._resolve_generator(generator)
        if self.in_warmup:
            return x, self._output_target(target)
        return self._apply(x, target, model=model, saliency=saliency, generator=generator)

    def _apply(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        *,
        model: torch.nn.Module | None,
        saliency: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={v!r}"
            for k, v in vars(self).items()
            if k not in ("generator", "epoch") and not k.startswith("_")
        )
        return f"{type(self).__name__}({fields})"
