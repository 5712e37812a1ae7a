"""The common frame of the package's batch transforms (timm ``Mixup``-style call).

Every transform is called as ``x, target = transform(x, target, model=..., saliency=..., generator=...)``
and leaves ``x`` unchanged, unless a single-image transform was built with ``inplace=True`` (then ``x`` is
overwritten and returned, as timm's ``Mixup`` does). This base class does the parts they share: argument
checks, choice of random generator (call argument over constructor argument over PyTorch's global RNG), the
warm-up epochs of Algorithm 2 (:class:`EpochCounter`), and the soft-target output (``num_classes`` /
``label_smoothing``).

Targets are told apart by their shape: class indices (B,) or soft targets (B, K) for classification, a class
mask (B, H, W) (integer, ``ignore_index`` for unlabelled pixels) or soft dense targets (B, K, H, W) for
semantic segmentation. A dense target goes through the very pixel operation of the image
(:meth:`BatchTransform._pixel_step`, :meth:`~salfmix_transforms.mixing.MixMethod.apply_target`), so
each output pixel's label is the label of the pixel it came from.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from types import FrameType

import torch
import torch.nn.modules.module

from ._validation import (
    IGNORE_INDEX,
    check_generator,
    check_ignore_index,
    check_images,
    check_non_negative_int,
    check_num_classes,
    check_optional_positive_int,
    check_probability,
    check_target,
)
from .targets import infer_num_classes, smooth_checked_targets

__all__ = ["BatchTransform", "EpochCounter", "all_own", "constructor_parameters", "user_stacklevel"]


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TORCH_MODULE = os.path.abspath(torch.nn.modules.module.__file__)


def _internal_frame(frame: FrameType) -> bool:
    """A frame of this package, or of ``nn.Module``'s call machinery (``Module._wrapped_call_impl``,
    ``Module._call_impl``), which lies between the user's ``task(x, y)`` and ``SalfMixTask.forward``."""
    filename = os.path.abspath(frame.f_code.co_filename)
    return filename.startswith(_PACKAGE) or filename == _TORCH_MODULE


def user_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` made by the function that calls this one: the first frame
    outside this package and outside ``nn.Module``'s call machinery, so that the warning points at the
    user's line (and Python's once-per-line filter keys on it), also when the call went through
    ``SalfMixTask`` (``task(x, y)``)."""
    frame = inspect.currentframe()
    frame = frame.f_back if frame is not None else None  # the function that warns: stacklevel 1
    level = 1
    while frame is not None and _internal_frame(frame):
        frame = frame.f_back
        level += 1
    return level


def _same_tensor_type(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``out`` as the tensor subclass of ``like`` (a ``tv_tensors.Image`` in, a ``tv_tensors.Image`` out);
    plain tensors pass through untouched (no copy, no host synchronisation)."""
    kind = type(like)
    if kind is torch.Tensor or type(out) is kind:
        return out
    from torchvision import tv_tensors

    if isinstance(like, tv_tensors.TVTensor):
        return tv_tensors.wrap(out, like=like)
    return out


def all_own(x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The provenance of an unchanged batch: every pixel is the sample's own (built only when asked; the
    closure keeps the shape and device, not the batch)."""
    batch, _, height, width = x.shape
    device = x.device
    return lambda: torch.ones(batch, height, width, dtype=torch.float32, device=device)


# Constructor arguments that ``repr`` leaves out: objects without a useful ``repr`` (the network, an RNG).
_HIDDEN_ARGUMENTS = ("model", "generator")


def constructor_parameters(cls: type) -> dict[str, object]:
    """The constructor arguments of ``cls`` in signature order, with their defaults.

    A class whose ``__init__`` takes ``**kwargs`` forwards them to its base: the base's keyword-only
    arguments are then the class's too (a base's positional ones are filled in by the class itself).
    """
    params: dict[str, object] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        forwards = False
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif p.kind is not inspect.Parameter.VAR_POSITIONAL and (
                klass is cls or p.kind is inspect.Parameter.KEYWORD_ONLY
            ):
                params.setdefault(p.name, p.default)
        if not forwards:
            break
    return params


def _same_value(value: object, default: object) -> bool:
    numbers = (int, float)
    if type(value) is not type(default) and not (type(value) in numbers and type(default) in numbers):
        return False
    try:
        return bool(value == default)
    except (RuntimeError, TypeError, ValueError):  # a value whose comparison is not a bool: print it
        return False


class EpochCounter:
    """The training epoch a transform is in, for the warm-up of Algorithm 2 (no SalfMix in epoch 0).

    Two ways to drive it, which combine:

    * :meth:`set_epoch` at the start of every epoch (0-based), as PyTorch's ``DistributedSampler``;
    * ``steps_per_epoch``: every call of the transform is one step, so the epoch is
      ``start + steps // steps_per_epoch``, where ``start`` is the last :meth:`set_epoch` (0 without one) and
      ``steps`` counts the calls since then. This is what makes the warm-up work in a loop that never calls
      :meth:`set_epoch`, such as timm's ``train.py``, whose only call site is ``mixup_fn(input, target)``.

    Choice: ``steps_per_epoch`` counts calls, i.e. loader batches (``len(loader)``), micro-batches of a
    gradient accumulation included.

    Args:
        warmup_epochs: number of epochs at the start of training during which the warm-up holds.
        steps_per_epoch: calls per epoch, or ``None`` to count epochs with :meth:`set_epoch` only.
    """

    def __init__(self, warmup_epochs: int = 0, steps_per_epoch: int | None = None) -> None:
        self.warmup_epochs = check_non_negative_int(warmup_epochs, "warmup_epochs")
        self.steps_per_epoch = check_optional_positive_int(steps_per_epoch, "steps_per_epoch")
        self.start_epoch = 0
        self.steps = 0
        self.epoch_was_set = False
        # Something besides the warm-up reads the epoch (SalfMixTask's mixup_off_epoch), so that
        # steps_per_epoch matters even without a warm-up.
        self.epoch_read_elsewhere = False

    @property
    def epoch(self) -> int:
        if self.steps_per_epoch is None:
            return self.start_epoch
        return self.start_epoch + self.steps // self.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` (0-based) now: the step count restarts from 0."""
        self.start_epoch = check_non_negative_int(epoch, "epoch")
        self.steps = 0
        self.epoch_was_set = True

    def step(self) -> None:
        """Count one call of the transform."""
        self.steps += 1

    @property
    def in_warmup(self) -> bool:
        return self.epoch < self.warmup_epochs

    @property
    def warmup_never_ends(self) -> bool:
        """A warm-up that nothing can end: no ``steps_per_epoch`` and :meth:`set_epoch` never called."""
        return self.warmup_epochs > 0 and self.steps_per_epoch is None and not self.epoch_was_set

    @property
    def steps_unused(self) -> bool:
        """A ``steps_per_epoch`` that can never matter: no warm-up to end, and nothing else reads the epoch
        (:attr:`epoch_read_elsewhere`)."""
        return self.steps_per_epoch is not None and self.warmup_epochs == 0 and not self.epoch_read_elsewhere


class BatchTransform:
    """Base class: subclasses implement :meth:`_apply`.

    Args:
        num_classes: when given, targets come back as soft targets (B, num_classes) with ``label_smoothing``
            applied (timm's formula); when ``None``, single-image methods return the target as they got it.
        label_smoothing: smoothing ``s`` of the soft targets, in [0, 1].
        warmup_epochs: number of epochs at the start of training during which the transform is the identity
            (Algorithm 2 skips SalfMix in the first epoch, whose saliency is that of an untrained network);
            see :class:`EpochCounter`. 0 here; the SalfMix family (SalfMix, RandomSelfMix, SaliencyCutout,
            HybridMix) defaults to 1, as ``methods.build`` and ``train_timm.py``. Without :meth:`set_epoch`
            or ``steps_per_epoch`` the warm-up never ends, and the first call warns.
        steps_per_epoch: calls per epoch (``len(loader)``), so that the warm-up ends without
            :meth:`set_epoch`; see :class:`EpochCounter`. With ``warmup_epochs=0`` it has no effect and the
            first call warns (unless ``SalfMixTask(mixup_off_epoch=...)`` reads the epoch it counts).
        generator: default ``torch.Generator`` for every random choice (a call's ``generator=`` wins).
        ignore_index: the class index of unlabelled pixels in class masks (B, H, W) (default 255, PASCAL VOC's
            and Cityscapes'; CamVid's is 11): cut-out pixels get it, soft dense targets get all-zero pixels
            for it. It must not be a class of ``num_classes`` when a class mask is given (a call checks).
    """

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        warmup_epochs: int = 0,
        steps_per_epoch: int | None = None,
        generator: torch.Generator | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.ignore_index = check_ignore_index(ignore_index)
        self.label_smoothing = check_probability(label_smoothing, "label_smoothing")
        self.counter = EpochCounter(warmup_epochs, steps_per_epoch)
        self.generator = check_generator(generator)
        self._warned: set[str] = set()
        # Provenance (for SaliencyCache): every call records the parameters it drew (a closure over the
        # boxes, ``lam``, the patch plan: never the images), and :attr:`provenance` builds from them, when
        # read, the (B, H, W) float32 share of each output pixel that is the sample's own pixel at that
        # place (0 where a patch, a box or a fill went, lam for a blend, 1 elsewhere).
        self._provenance: torch.Tensor | Callable[[], torch.Tensor] | None = None

    @property
    def track_provenance(self) -> bool:
        """Deprecated: the provenance is always recorded (as the drawn parameters, built when read)."""
        return True

    @track_provenance.setter
    def track_provenance(self, value: bool) -> None:
        warnings.warn(
            "track_provenance is deprecated and has no effect: every call records the parameters it drew and "
            "`provenance` is built from them when read",
            DeprecationWarning,
            stacklevel=2,
        )

    @property
    def provenance(self) -> torch.Tensor | None:
        """The last call's (B, H, W) float32 share of each output pixel that is the sample's own pixel at
        that place, built from the parameters that call drew (``None`` before the first call)."""
        if callable(self._provenance):
            self._provenance = self._provenance()
        return self._provenance

    @provenance.setter
    def provenance(self, own: torch.Tensor | Callable[[], torch.Tensor] | None) -> None:
        """Record the call's provenance: a tensor, or a callable over the drawn parameters (built on read)."""
        self._provenance = own

    def provenance_builder(self) -> Callable[[], torch.Tensor] | None:
        """The last call's provenance as a zero-argument callable (built when called), for a composing
        transform that combines it with its own (no tensor is built unless someone reads it)."""
        own = self._provenance
        if own is None or callable(own):
            return own
        return lambda: own

    # -- warm-up (Algorithm 2) --------------------------------------------------------------------------

    @property
    def warmup_epochs(self) -> int:
        return self.counter.warmup_epochs

    @property
    def steps_per_epoch(self) -> int | None:
        return self.counter.steps_per_epoch

    @property
    def epoch(self) -> int:
        """The epoch (0-based) of the next call: see :class:`EpochCounter`."""
        return self.counter.epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the starting epoch (0-based); the transform is the identity while ``epoch < warmup_epochs``."""
        self.counter.set_epoch(epoch)

    @property
    def in_warmup(self) -> bool:
        return self.counter.in_warmup

    @property
    def epoch_counter(self) -> EpochCounter:
        """The :class:`EpochCounter` behind :attr:`epoch` (a composing transform's: its SalfMix's)."""
        return self.counter

    def warn_once(self, key: str, message: str) -> None:
        """``warnings.warn(message)`` the first time ``key`` is met by this transform, then never again.

        The warning names the transform's class and points at the caller's line, the first frame outside
        this package.
        """
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"{type(self).__name__}: {message}", UserWarning, stacklevel=user_stacklevel())

    # -- call -------------------------------------------------------------------------------------------

    def _resolve_generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        """The call's generator wins over the constructor's (``None`` for both: PyTorch's global RNG)."""
        return self.generator if check_generator(generator) is None else generator

    def _check_call(self, x: object, target: object) -> tuple[torch.Tensor, torch.Tensor]:
        x = check_images(x)
        size = (x.shape[2], x.shape[3])
        target = check_target(
            target, x.shape[0], self.num_classes, image_size=size, ignore_index=self.ignore_index
        )
        return x, target

    def _soft_targets(self, target: torch.Tensor) -> torch.Tensor:
        """Soft targets (B, K) (dense: (B, K, H, W)) of a target checked by :meth:`_check_call`; ``K`` is
        ``num_classes`` or, when that is ``None``, the width of the soft targets given (class indices and
        class masks then need ``num_classes``)."""
        num_classes = infer_num_classes(target, self.num_classes)
        return smooth_checked_targets(target, num_classes, self.label_smoothing, self.ignore_index)

    @property
    def keeps_class_masks(self) -> bool:
        """Whether, with ``num_classes=None``, a class mask (B, H, W) comes back a class mask: always for a
        label-preserving transform (its pixels are moved or cut, never blended); two-image transforms say
        whether their methods blend (:func:`~salfmix_transforms.mixing.returns_class_masks`)."""
        return True

    def _output_target(self, target: torch.Tensor) -> torch.Tensor:
        """The target of a label-preserving transform: soft when ``num_classes`` is set, else unchanged (a
        class mask stays a class mask)."""
        if self.num_classes is None:
            return target
        return self._soft_targets(target)

    def _pixel_step(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        pixels: Callable[[torch.Tensor, float | int, bool], torch.Tensor],
        own: Callable[[], torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The result of a label-preserving step whose pixel operation (a patch copy, a box fill) is
        ``pixels(planes, fill, inplace)``: ``x`` through it (the transform's ``fill``, 0 without one; ``x``
        itself overwritten with ``inplace=True``), the label unchanged, and the provenance ``own`` recorded.

        A dense target goes through the very same operation, never in place (the caller's target is never
        written): as planes (B, 1, H, W) for a class mask, whose dropped pixels get ``ignore_index``, or
        (B, K, H, W) for soft dense targets, whose dropped pixels get 0 (an all-zero, ignored pixel).
        """
        out = pixels(x, getattr(self, "fill", 0.0), getattr(self, "inplace", False))
        if target.dim() == 3:
            target = pixels(target.unsqueeze(1), self.ignore_index, False).squeeze(1)
        elif target.dim() == 4:
            target = pixels(target, 0.0, False)
        self.provenance = own
        return out, self._output_target(target)

    def __call__(
        self,
        x: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor],
        target: torch.Tensor | None = None,
        *,
        model: torch.nn.Module | None = None,
        saliency: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor]:
        """``x, target = transform(x, target)`` (timm's call), or torchvision v2 ``MixUp``'s packed
        ``transform((x, target))``, which returns the structure it got (a tuple or a list).

        A ``torchvision.tv_tensors.Image`` batch comes back as a ``tv_tensors.Image``.
        """
        packed = target is None and isinstance(x, (tuple, list))
        if packed:
            if len(x) != 2:
                raise TypeError(
                    "target is missing: call as transform(x, target) or transform((x, target)), got one "
                    f"{type(x).__name__} of {len(x)} items"
                )
            container, (x, target) = type(x), x
        elif target is None:
            raise TypeError(
                "target is missing: call as transform(x, target) or transform((x, target)), got one "
                f"{type(x).__name__}"
            )
        images = x
        x, target = self._check_call(x, target)
        out, target = self.call_checked(x, target, model=model, saliency=saliency, generator=generator)
        out = _same_tensor_type(out, images)
        return [out, target] if packed and container is list else (out, target)

    def call_checked(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        *,
        model: torch.nn.Module | None = None,
        saliency: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The call, for a composing transform that has already checked ``x`` and ``target`` (once per
        batch: the value checks of a target cost a reduction over it, a device-side assert off the CPU)."""
        generator = self._resolve_generator(generator)
        in_warmup = self.in_warmup  # the epoch of this call, before the step is counted
        self.counter.step()
        self._check_can_run(in_warmup, model, saliency)
        self._provenance = None
        if in_warmup:
            return self._apply_warmup(x, target, generator)
        return self._apply(x, target, model=model, saliency=saliency, generator=generator)

    def _apply_warmup(
        self, x: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A call during the warm-up epochs: the identity (a composing transform runs its other steps)."""
        self.provenance = all_own(x)
        return self._identity(x), self._output_target(target)

    def _identity(self, x: torch.Tensor) -> torch.Tensor:
        """The batch unchanged: ``x`` itself for an ``inplace=True`` transform, else a copy (the documented
        "new tensor", in the same memory format)."""
        return x if getattr(self, "inplace", False) else x.clone()

    # What a call does during the warm-up, for the warning that nothing ends it.
    _in_warmup_only = "the transform stays the identity"

    def _check_can_run(
        self, in_warmup: bool, model: torch.nn.Module | None, saliency: torch.Tensor | None
    ) -> None:
        """Warn (once) when the transform is configured to do something that it will never do."""
        if in_warmup and self.counter.warmup_never_ends:
            self.warn_once(
                "warmup",
                f"warmup_epochs={self.warmup_epochs}, but nothing ends the warm-up: {self._in_warmup_only}. "
                "Call set_epoch(epoch) at the start of every epoch, or pass steps_per_epoch=len(loader) to "
                "the constructor.",
            )
        if self.counter.steps_unused:
            self.warn_once(
                "steps_per_epoch",
                f"steps_per_epoch={self.steps_per_epoch} has no effect with warmup_epochs=0: it counts the "
                "epochs that end the warm-up (or that SalfMixTask's mixup_off_epoch reads). Drop it, or give "
                "warmup_epochs >= 1 for the warm-up of Algorithm 2.",
            )

    def _warn_if_no_map(self, model: torch.nn.Module | None, saliency: torch.Tensor | None) -> None:
        """During the warm-up of a transform that needs a saliency map: warn (once) when neither the
        constructor nor the call gave ``model=`` (nor the call ``saliency=``), as the first call after the
        warm-up will fail."""
        if model is None and getattr(self, "model", None) is None and saliency is None:
            self.warn_once(
                "model",
                "no model: neither the constructor nor this call got model= (or saliency=), so the first "
                "call after the warm-up will fail. Pass model=... to the constructor (timm's train.py: "
                "next to Mixup's arguments).",
            )

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
        """The constructor call that rebuilds this transform: its arguments (read back from the attributes
        of the same names) that differ from their defaults, in signature order; ``model`` and ``generator``
        are left out (``eval(repr(t))`` rebuilds ``t`` without them)."""
        fields = []
        for name, default in constructor_parameters(type(self)).items():
            if name in _HIDDEN_ARGUMENTS or not hasattr(self, name):
                continue
            value = getattr(self, name)
            if default is not inspect.Parameter.empty and _same_value(value, default):
                continue
            fields.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(fields)})"
