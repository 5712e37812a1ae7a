"""SalfMix / HybridMix inside timm's training task (``timm.task``): the batch transform runs in the task.

timm's ``train.py`` runs every training step as ``result = task(input, target)``, inside its AMP autocast,
after its data loader, its prefetcher (normalisation on the device, ``--reprob``) and the channels_last
conversion. :class:`SalfMixTask` is timm's ``ClassificationTask`` that applies one of the package's batch
transforms first, with the model being trained, so that one changed line of ``train.py`` turns a plain run
into a SalfMix / HybridMix run (``docs/timm.md``, route B)::

    task = SalfMixTask(HybridMix.v3(num_classes=args.num_classes, steps_per_epoch=len(loader_train)),
                       model=model, criterion=train_loss_fn, device=device, dtype=model_dtype,
                       mixup_off_epoch=args.mixup_off_epoch)  # timm's --mixup-off-epoch, else ignored

Unlike timm's ``mixup_fn`` (route A), which ``train.py`` calls only with ``--no-prefetcher``, the task works
with the prefetcher (timm's default), channels_last, ``--amp``, ``--torchcompile`` and distributed training.
Do not also give timm ``--mixup`` / ``--cutmix``: timm would then mix the batch before the task (in its
collate function) and the task's transform would mix it a second time (the task warns once when targets
arrive already soft).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._base import user_stacklevel
from ._validation import check_non_negative_int
from .saliency import plain_module
from .targets import smooth_checked_targets

try:  # timm's task API (timm >= 1.0.23); the rest of the package does not need it
    from timm.loss import (
        BinaryCrossEntropy,
        JsdCrossEntropy,
        LabelSmoothingCrossEntropy,
        SoftTargetCrossEntropy,
    )
    from timm.task import ClassificationTask
except ImportError as error:  # pragma: no cover - depends on the installed timm
    raise ImportError(
        "salfmix_transforms.timm_task needs timm's training tasks (timm.task.ClassificationTask, "
        "timm >= 1.0.23)"
    ) from error

__all__ = ["SalfMixTask", "SoftTargetCriterion", "soft_target_criterion", "trainable_model"]

_logger = logging.getLogger(__name__)


# The plain module under every DistributedDataParallel, DataParallel and compile wrapper: the module whose
# forward the saliency pass calls. Choice: the eager plain module, even when ``task.compile()`` compiled it:
# calling a DDP would arm its reducer and broadcast buffers for a backward that never comes, and calling the
# compiled module with an input that requires grad would compile a second graph (and, with
# ``mode="reduce-overhead"``, share CUDA graphs with the training step). The parameters are the same tensors,
# so the saliency is that of the model being trained. Unlike ``timm.utils.unwrap_model``, a model that merely
# has a ``.module`` attribute is not unwrapped.
trainable_model = plain_module


class SoftTargetCriterion(nn.Module):
    """A criterion that always gets soft targets (B, K), optionally label-smoothed first.

    Class indices (B,) become one-hot rows over the ``K = output.shape[-1]`` classes; then, when
    ``smoothing > 0``, every row becomes ``(1 - s) * t + s / K`` (timm's formula,
    :func:`~salfmix_transforms.targets.smooth_checked_targets`) before ``criterion(output, target)`` is
    called. With ``SoftTargetCrossEntropy`` this is exactly ``LabelSmoothingCrossEntropy(s)`` on class
    indices, and its natural extension to mixed targets: ``(1 - s) * CE(t) + s * mean_k(-log p_k)``.

    Args:
        criterion: the loss ``criterion(output, soft_target)``; it must accept soft targets (B, K).
        smoothing: ``s`` in [0, 1).
    """

    def __init__(self, criterion: nn.Module | Callable[..., torch.Tensor], smoothing: float = 0.0) -> None:
        super().__init__()
        if not callable(criterion):
            raise TypeError(f"criterion must be callable, got {type(criterion).__name__}")
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be a number in [0, 1), got {smoothing!r}")
        self.criterion = criterion
        self.smoothing = float(smoothing)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 1 or self.smoothing:
            target = smooth_checked_targets(target, output.shape[-1], self.smoothing)
        return self.criterion(output, target)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}"


def _criterion_smoothing(criterion: object) -> float:
    """The label smoothing a timm / PyTorch criterion applies itself (0 for unknown callables)."""
    if isinstance(criterion, LabelSmoothingCrossEntropy):
        return float(criterion.smoothing)
    if isinstance(criterion, BinaryCrossEntropy):
        return float(criterion.smoothing or 0.0)
    if isinstance(criterion, nn.CrossEntropyLoss):
        return float(criterion.label_smoothing)
    if isinstance(criterion, SoftTargetCriterion):
        return criterion.smoothing
    return 0.0


def soft_target_criterion(criterion: object, transform_smoothing: float = 0.0) -> SoftTargetCriterion:
    """timm's ``train_loss_fn`` made fit for the soft targets (B, K) of the package's transforms.

    * ``None``: ``SoftTargetCrossEntropy`` (what timm's ``train.py`` uses with Mixup / CutMix).
    * ``LabelSmoothingCrossEntropy(s)`` (timm's ``train_loss_fn`` with ``--smoothing s > 0`` and no
      ``--mixup`` / ``--cutmix``, so with timm's default flags): it takes class indices only. Choice: it is
      replaced by ``SoftTargetCrossEntropy`` on targets smoothed by ``s`` (:class:`SoftTargetCriterion`),
      which is the same loss on class indices and keeps the meaning of ``--smoothing`` on mixed targets.
    * ``BinaryCrossEntropy`` with ``smoothing > 0`` (``--bce-loss``): timm smooths class indices only, and
      dense targets pass unsmoothed; the targets are smoothed here instead, so ``--smoothing`` still holds.
    * anything else (``SoftTargetCrossEntropy``, ``nn.CrossEntropyLoss``, whose ``label_smoothing`` also
      applies to probabilities, a user callable) is kept; it must accept soft targets (B, K).

    Args:
        criterion: the criterion, or ``None``.
        transform_smoothing: the transform's own ``label_smoothing``.

    Raises:
        TypeError: ``JsdCrossEntropy`` (``--jsd-loss``): it needs the augmentation splits of the batch
            intact and class indices, and the transform mixes the batch.
        ValueError: the transform and the criterion would both smooth the labels.
    """
    if isinstance(criterion, SoftTargetCriterion):
        wrapped = criterion
    elif isinstance(criterion, JsdCrossEntropy):
        raise TypeError(
            "JsdCrossEntropy (--jsd-loss) needs the augmentation splits of the batch intact and class "
            "indices; SalfMixTask mixes the batch and feeds soft targets: drop --jsd-loss and --aug-splits"
        )
    elif criterion is None:
        wrapped = SoftTargetCriterion(SoftTargetCrossEntropy())
    elif isinstance(criterion, LabelSmoothingCrossEntropy):
        wrapped = SoftTargetCriterion(SoftTargetCrossEntropy(), float(criterion.smoothing))
    elif isinstance(criterion, BinaryCrossEntropy) and not getattr(criterion, "smooth_dense", False):
        wrapped = SoftTargetCriterion(criterion, float(criterion.smoothing or 0.0))
    else:
        wrapped = SoftTargetCriterion(criterion)
    inner_smoothing = max(wrapped.smoothing, _criterion_smoothing(wrapped.criterion))
    if transform_smoothing > 0 and inner_smoothing > 0:
        raise ValueError(
            f"the labels would be smoothed twice: by the transform (label_smoothing={transform_smoothing}) "
            f"and by the criterion (smoothing={inner_smoothing}, timm's --smoothing); set one of them to 0 "
            "(e.g. --smoothing 0, or leave the transform's label_smoothing at 0)"
        )
    return wrapped


class SalfMixTask(ClassificationTask):
    """timm's ``ClassificationTask`` that applies a batch transform (SalfMix, HybridMix, ...) first.

    ``task(input, target)`` runs, in training mode,
    ``input, target = transform(input, target, model=trainable_model(task.trainable_module))`` and then
    ``ClassificationTask.forward`` (the model's forward and the criterion), returning timm's dict
    ``{'loss': ..., 'output': ...}``. The model given to the transform is the plain module under any DDP /
    compile wrapper (:func:`trainable_model`), looked up at every call, so ``task.compile()`` and
    ``task.prepare_distributed()`` after construction are followed; the transform needs no ``model=`` of its
    own (a call's ``model=`` wins anyway).

    Warm-up (Algorithm 2: no SalfMix in the first epoch): the transform counts its own calls; give it
    ``steps_per_epoch=len(loader_train)`` (timm's ``train.py`` never calls ``set_epoch``), or call
    :meth:`set_epoch` at the start of every epoch. Only training calls count. The transform's epoch is saved
    in timm's checkpoints (``task_state``, :meth:`get_task_state`) and restored by ``--resume``, so a resumed
    run does not redo the warm-up; call :meth:`set_epoch` yourself after ``--start-epoch`` or when resuming
    from a checkpoint without it.

    Choices:

    * the transform runs only while the trainable module is in training mode: timm's ``train_one_epoch``
      calls ``trainable_module.train()`` and its ``validate`` calls ``.eval()`` on the same module (the
      eval model, never the task); ``task.eval()`` sets it too. In eval mode ``task(input, target)`` is
      ``ClassificationTask``'s forward on the unchanged batch (with soft targets for the criterion);
    * the transform runs under the caller's autocast (timm wraps ``task(...)`` in ``amp_autocast``): the
      saliency pass of :func:`~salfmix_transforms.saliency.gradient_saliency` computes its loss in float32 and
      is fine in float16 / bfloat16 (an underflowed or non-finite map only makes SalfMix pick random cells);
      ``autocast_transform=False`` runs the transform, and so the saliency pass, in full precision;
    * ``--mixup-off-epoch``: timm's ``train.py`` switches off only its own mixup (``mixup_fn`` or the
      prefetcher's), never the task's transform, so the task takes it itself:
      ``SalfMixTask(..., mixup_off_epoch=args.mixup_off_epoch)``. From the transform's epoch
      ``mixup_off_epoch`` on (counted as for the warm-up: ``steps_per_epoch`` or :meth:`set_epoch`, restored
      by ``--resume``) it sets ``transform.mixup_enabled = False``, as timm does to its ``mixup_fn`` and
      ``train_timm.py`` to its transforms: HybridMix keeps SalfMix, a plain ``Mixup`` / ``CutMix`` returns
      the batch unmixed. 0 (timm's default) never switches it off;
    * the criterion always gets soft targets (B, K) (:class:`SoftTargetCriterion`, which also turns class
      indices into one-hot rows in eval mode); ``LabelSmoothingCrossEntropy``, timm's ``train_loss_fn`` with
      the default ``--smoothing 0.1`` and no ``--mixup`` / ``--cutmix``, is replaced by the same loss on soft
      targets (:func:`soft_target_criterion`), so the one-line change of ``train.py`` works with timm's
      default flags.

    Args:
        transform: a batch transform called as ``transform(x, target, model=model)`` (any of the package's:
            :class:`~salfmix_transforms.hybrid.HybridMix`, :class:`~salfmix_transforms.salfmix.SalfMix`,
            :class:`~salfmix_transforms.mixing.CutMix`, ...), preferably with ``num_classes`` set.
        model: the model to train (timm's ``ClassificationTask`` argument).
        criterion: the training loss (timm's ``train_loss_fn``), adapted by :func:`soft_target_criterion`;
            ``None`` gives ``SoftTargetCrossEntropy``.
        criterion_kwargs: instead of ``criterion``, arguments of ``timm.loss.create_classification_loss``
            (timm 1.0.31 has it), whose result is adapted likewise.
        device, dtype, verbose: timm's ``TrainingTask`` arguments.
        autocast_transform: ``False`` runs the transform with autocast disabled.
        mixup_off_epoch: timm's ``--mixup-off-epoch`` (``args.mixup_off_epoch``): the epoch (0-based) from
            which the transform's two-image mix is off; 0 never (see above).

    Raises:
        TypeError: ``transform`` is not callable, the criterion cannot take soft targets
            (``JsdCrossEntropy``), or ``mixup_off_epoch`` is not an integer.
        ValueError: both ``criterion`` and ``criterion_kwargs`` are given, the labels would be smoothed
            twice (the transform's ``label_smoothing`` and the criterion's smoothing both > 0), or
            ``mixup_off_epoch`` is negative or is > 0 for a transform without a two-image mix (no
            ``mixup_enabled``, e.g. ``SalfMix``) or without an ``epoch``.
    """

    def __init__(
        self,
        transform: Callable[..., tuple[torch.Tensor, torch.Tensor]],
        model: nn.Module,
        criterion: nn.Module | Callable[..., torch.Tensor] | None = None,
        criterion_kwargs: dict[str, Any] | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        verbose: bool = True,
        *,
        autocast_transform: bool = True,
        mixup_off_epoch: int = 0,
    ) -> None:
        if not callable(transform):
            raise TypeError(
                "transform must be a batch transform called as transform(x, target, model=model), got "
                f"{type(transform).__name__}"
            )
        mixup_off_epoch = check_non_negative_int(mixup_off_epoch, "mixup_off_epoch")
        if mixup_off_epoch and not (hasattr(transform, "mixup_enabled") and hasattr(transform, "epoch")):
            raise ValueError(
                f"mixup_off_epoch={mixup_off_epoch} switches off a two-image mix, and the transform "
                f"{type(transform).__name__} has none (no mixup_enabled / epoch): drop mixup_off_epoch "
                "(timm's --mixup-off-epoch), or use a transform with a two-image mix (HybridMix, Mixup, "
                "CutMix, ...)"
            )
        if criterion_kwargs:
            if criterion is not None:
                raise ValueError(
                    "Pass either an explicit criterion or criterion_kwargs, not both: "
                    f"{sorted(criterion_kwargs)}"
                )
            from timm.loss import create_classification_loss

            criterion = create_classification_loss(**criterion_kwargs)
        criterion = soft_target_criterion(criterion, float(getattr(transform, "label_smoothing", 0.0) or 0.0))
        super().__init__(model=model, criterion=criterion, device=device, dtype=dtype, verbose=verbose)
        self.transform = transform
        self.autocast_transform = bool(autocast_transform)
        self.mixup_off_epoch = mixup_off_epoch
        counter = getattr(transform, "epoch_counter", None)
        if mixup_off_epoch and counter is not None:
            counter.epoch_read_elsewhere = True  # its steps_per_epoch matters now, warm-up or not
        self._warned_soft = False
        self._warned_epochs = False
        if self.verbose:
            _logger.info(f"{type(self).__name__}: transform={transform!r}")

    # -- the model of the saliency pass ------------------------------------------------------------------

    @property
    def saliency_model(self) -> nn.Module:
        """The plain module being trained (:func:`trainable_model` of ``trainable_module``)."""
        return trainable_model(self.trainable_module)

    @property
    def applies_transform(self) -> bool:
        """Whether the next call applies the transform: the trainable module is in training mode."""
        return self.saliency_model.training

    # -- warm-up ---------------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The transform's epoch (0-based) for its warm-up (``transform.epoch``)."""
        return int(self.transform.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Start the transform's ``epoch`` (0-based) now (``transform.set_epoch``): after a resume, or at the
        start of every epoch when the transform has no ``steps_per_epoch``."""
        self.transform.set_epoch(epoch)

    def get_task_state(self, module: nn.Module | None = None, ema: bool = False) -> dict[str, Any]:
        """timm's task-owned checkpoint state: the transform's epoch (``salfmix_epoch``), not for EMA."""
        base = getattr(super(), "get_task_state", None)  # timm >= 1.0.28
        state = dict(base(module=module, ema=ema) or {}) if base is not None else {}
        if not ema and hasattr(self.transform, "epoch"):
            state["salfmix_epoch"] = int(self.transform.epoch)
        return state

    def load_task_state(
        self,
        state: dict[str, Any] | None,
        strict: bool = True,
        module: nn.Module | None = None,
        ema: bool = False,
    ) -> None:
        """Restore the transform's epoch from :meth:`get_task_state` (``--resume``)."""
        base = getattr(super(), "load_task_state", None)  # timm >= 1.0.28
        if base is not None:
            base(state, strict=strict, module=module, ema=ema)
        epoch = (state or {}).get("salfmix_epoch")
        if not ema and epoch and hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(int(epoch))

    # -- forward ---------------------------------------------------------------------------------------

    def _switch_mixing_off(self) -> None:
        """``--mixup-off-epoch``: ``mixup_enabled = False`` from the transform's epoch ``mixup_off_epoch`` on
        (Python integers only: no host synchronisation)."""
        transform = self.transform
        if transform.mixup_enabled and int(transform.epoch) >= self.mixup_off_epoch:
            transform.mixup_enabled = False
        counter = getattr(transform, "epoch_counter", None)
        if (
            not self._warned_epochs
            and counter is not None
            and counter.steps_per_epoch is None
            and not counter.epoch_was_set
        ):
            self._warned_epochs = True
            warnings.warn(
                f"{type(self).__name__}: mixup_off_epoch={self.mixup_off_epoch}, but nothing counts the "
                f"epochs of the transform ({type(transform).__name__}), so its two-image mix is never "
                "switched off: give the transform steps_per_epoch=len(loader_train), or call "
                "task.set_epoch(epoch) at the start of every epoch",
                UserWarning,
                stacklevel=user_stacklevel(),
            )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Apply the transform (training mode only), then ``ClassificationTask.forward``.

        Returns:
            timm's dict: ``'loss'`` (the criterion on the transformed batch) and ``'output'`` (the logits).
        """
        model = self.saliency_model
        if model.training:
            if not self._warned_soft and target.dim() == 2 and target.is_floating_point():
                self._warned_soft = True
                warnings.warn(
                    f"{type(self).__name__}: the targets arrive as soft targets (B, K): was the batch "
                    "already mixed before the task (timm's --mixup / --cutmix)? The task's transform mixes "
                    "it again; drop those flags, the transform does the mixing",
                    UserWarning,
                    stacklevel=user_stacklevel(),  # the caller of task(...), past nn.Module's frames
                )
            if self.mixup_off_epoch:
                self._switch_mixing_off()
            if self.autocast_transform:
                input, target = self.transform(input, target, model=model)
            else:
                with torch.autocast(device_type=input.device.type, enabled=False):
                    input, target = self.transform(input, target, model=model)
        return super().forward(input, target)
