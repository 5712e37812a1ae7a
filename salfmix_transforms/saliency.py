"""Gradient saliency of SalfMix (Choi et al., Sensors 2021, eq. (2)-(3)).

The saliency of an image is the gradient of the classification loss with respect to the input pixels,

* eq. (2): ``g = d CE(f(x), y) / d x``, a tensor of the image's shape (C, H, W);
* eq. (3): ``M = max_c |g_c|``, the largest absolute gradient over the colour channels, an (H, W) map.

For semantic segmentation (a dense target: a class mask (B, H, W) or soft dense targets (B, K, H, W)) the
loss of eq. (2) is the per-pixel cross-entropy summed over the pixels, ``ignore_index`` pixels left out, of
the model's dense logits (B, K, h, w) (a torchvision segmentation model's ``{"out": ...}`` too), brought to
the input size with bilinear interpolation as a segmentation loss does.

:func:`gradient_saliency` computes ``M`` for a whole batch with one forward and one backward pass, and leaves
the model exactly as it found it (:func:`preserved_model_state`): training flags, buffers (BatchNorm running
statistics), parameters and their ``.grad``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from ._validation import IGNORE_INDEX, check_images, check_target
from .targets import is_dense_target

__all__ = [
    "SaliencyPassError",
    "gradient_saliency",
    "lowres_gradient_saliency",
    "plain_module",
    "preserved_model_state",
    "saliency_from_gradient",
]

_MODES = ("train", "eval")


class SaliencyPassError(ValueError):
    """A saliency pass that the model cannot run on this batch, for a reason the caller can fix by its
    settings (BatchNorm in training mode with one value per channel: a batch of 1, or a low-resolution pass
    that leaves a 1x1 feature map). A ``ValueError``; the training scripts report it as one line."""


def _optimized_module_type() -> type | None:
    # ``torch.compile`` wraps a module in ``torch._dynamo.eval_frame.OptimizedModule``. Dynamo is a heavy
    # import that ``import torch`` does not do; if it is not loaded yet, no compiled module can exist.
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return getattr(eval_frame, "OptimizedModule", None)


def _wrapper_chain(model: nn.Module, through_compiled: bool = True) -> list[nn.Module]:
    """``model`` and the modules it wraps, outermost first: DDP / DataParallel ``.module`` and, with
    ``through_compiled``, compiled ``._orig_mod`` (a model that merely has a ``.module`` attribute is not
    unwrapped)."""
    optimized = _optimized_module_type() if through_compiled else None
    chain = [model]
    while True:
        module = chain[-1]
        if isinstance(module, (DistributedDataParallel, DataParallel)):
            chain.append(module.module)
        elif optimized is not None and isinstance(module, optimized):
            chain.append(module._orig_mod)
        else:
            return chain


def plain_module(model: nn.Module, keep_compiled: bool = False) -> nn.Module:
    """The module under every ``DistributedDataParallel`` and ``DataParallel`` wrapper and, unless
    ``keep_compiled``, every ``torch.compile`` wrapper: the plain module that owns the parameters, buffers and
    training flags. ``keep_compiled=True`` stops at the outermost compiled module (evaluation keeps its
    compiled forward; ranks see different numbers of validation batches, and DDP's forward would wait for the
    others)."""
    return _wrapper_chain(model, through_compiled=not keep_compiled)[-1]


def _forward_module(model: nn.Module) -> nn.Module:
    """The module to call for the saliency pass: the one just below the innermost DDP wrapper.

    Calling a ``DistributedDataParallel`` would broadcast buffers and arm the reducer for a backward that
    never comes (we only differentiate with respect to the input), so every DDP wrapper is stepped over. A
    compiled module below the last DDP is kept (its forward stays compiled); a compiled DDP
    (``torch.compile(DDP(m))``) cannot be called without DDP, so its inner module runs eagerly.
    """
    chain = _wrapper_chain(model)
    last_ddp = max((i for i, m in enumerate(chain) if isinstance(m, DistributedDataParallel)), default=-1)
    return chain[last_ddp + 1]


@contextlib.contextmanager
def preserved_model_state(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager that puts back every module's training flag and every buffer on exit.

    On entry it records, for ``model`` and every submodule, its own ``training`` flag (a mixed pattern such
    as ``model.train()`` with one frozen submodule in ``eval()`` comes back as it was) and a copy of every
    buffer, persistent or not (BatchNorm ``running_mean``, ``running_var``, ``num_batches_tracked``...). On
    exit, normal or by an exception, the flags are set back module by module (never through ``.train()``,
    which would overwrite the children's flags) and the buffers are copied back *in place*: the same tensor
    objects keep the same values, so a ``torch.compile``d model sees no new tensors and does not recompile
    (toggling ``track_running_stats`` instead would change what the compiled graph guards on). A buffer
    that the block replaced by a new tensor is put back as the original object.

    Wrappers are looked through: a ``DistributedDataParallel`` (``.module``) or a ``torch.compile``d module
    (``OptimizedModule``, ``._orig_mod``) is restored through the module it wraps.

    Parameters and their ``.grad`` are not recorded: the block must not change them (it costs a copy of the
    whole model otherwise). :func:`gradient_saliency` never does.

    Yields:
        the plain module that owns the state (wrappers removed).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    root = plain_module(model)
    flags = [(module, module.training) for module in root.modules()]
    saved_buffers: list[tuple[nn.Module, str, torch.Tensor | None, torch.Tensor | None]] = []
    copies: dict[int, torch.Tensor] = {}  # one copy per tensor, even if several modules share it
    with torch.no_grad():
        for module in root.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None and id(buffer) not in copies:
                    copies[id(buffer)] = buffer.clone()
                saved_buffers.append((module, name, buffer, None if buffer is None else copies[id(buffer)]))
    try:
        yield root
    finally:
        with torch.no_grad():
            for module, name, buffer, copy in saved_buffers:
                if module._buffers.get(name) is not buffer:
                    module._buffers[name] = buffer
                # An inference tensor cannot be written (nor changed) outside inference mode.
                if buffer is not None and not buffer.is_inference():
                    buffer.copy_(copy)
        for module, flag in flags:
            module.training = flag


def gradient_saliency(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    mode: str = "train",
    num_classes: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Saliency map of every image: the largest absolute input gradient over channels (eq. (2)-(3)).

    ``M[b] = max_c | d CE(f(x), y) / d x[b, c] |`` (eq. (2) for the gradient, eq. (3) for the channel max).

    Args:
        model: the classifier ``f`` returning logits (B, K), or for a dense target a segmentation model
            returning logits (B, K, h, w) or a dict with them under ``"out"`` (torchvision's segmentation
            models); logits smaller than the input are up-sampled to (H, W) (bilinear,
            ``align_corners=False``) before the loss. A ``DistributedDataParallel`` is unwrapped to
            its ``.module`` (no buffer broadcast, no gradient all-reduce, no reducer state), a
            ``torch.compile``d model is called as it is (compiled forward) and restored through
            ``._orig_mod``.
        x: images (B, C, H, W), floating point, any memory format (channels_last works).
        target: class indices (B,) (integer) or soft targets (B, K) (float, cross-entropy with
            probabilities, as timm's ``SoftTargetCrossEntropy``); dense: a class mask (B, H, W) (integer)
            or soft dense targets (B, K, H, W), whose per-pixel cross-entropy is summed over the pixels.
        mode: ``"train"`` (default) or ``"eval"``, the behaviour of the model during the pass, see below.
        num_classes: when given, the number of logits the model must return (the transform's
            ``num_classes``: a mismatch would give targets of the wrong width, or fail later in the loss).
        ignore_index: the unlabelled pixels of a class mask, which add nothing to the loss (so nothing to
            the gradient through their own logits).

    Returns:
        a float32 tensor (B, H, W), contiguous, on ``x``'s device, detached (no graph is kept alive).

    Loss. Choice: ``reduction="sum"``, so ``M[b]`` is the gradient of sample ``b``'s own loss term (the paper
    does not say; a mean would only scale every map by ``1/B``, which leaves the argmax/argmin cells that
    SalfMix picks unchanged, but makes the values depend on the batch size). The loss is computed in float32
    (``logits.float()``), so the pass also works under ``torch.autocast`` (fp16/bf16 on CUDA, bf16 on CPU);
    the map is returned in float32 whatever the dtype of ``x``.

    Only the input gradient is computed (``torch.autograd.grad`` with respect to a detached copy of ``x``,
    under ``torch.enable_grad()``, so it also works when called inside ``torch.no_grad()``): no parameter's
    ``.grad`` is created or changed. Calling it inside ``torch.inference_mode()`` is not possible (no
    autograd there) and raises ``RuntimeError``.

    Mode. Choice: ``mode="train"`` runs every module in training mode, i.e. BatchNorm normalises with the
    statistics of the batch and dropout is active, as in the training step that the saliency is computed
    for, so the map is the gradient of the very loss the step is about to see. In training mode BatchNorm
    couples the samples of the batch: ``M[b]`` then also depends on the other images (it is the gradient of
    the batch loss restricted to image ``b``). ``mode="eval"`` runs every module in eval mode (running
    statistics, no dropout): each map depends on its own image only and is deterministic, at the price of
    using statistics that lag behind the weights early in training. In both modes every module's own
    ``training`` flag and every buffer (BatchNorm running statistics, ``num_batches_tracked``) are put back
    afterwards (:func:`preserved_model_state`), so the saliency pass leaves no trace in the model. Note that
    active dropout in ``"train"`` mode draws from PyTorch's global RNG.

    Non-finite values. The gradient is returned as it is: a NaN/inf gradient (a diverging model, an fp16
    overflow) gives a NaN/inf map. Choice: no clean-up here; the SalfMix cell picker treats a non-finite or
    constant map by falling back to random cells.

    Models refused with a clear error: lazy modules that are not materialised yet (the pass would
    materialise them and draw from the global RNG: run one forward first), a float batch of another dtype
    than the model's parameters outside autocast, BatchNorm in ``mode="train"`` on a batch of one, and
    reentrant gradient checkpointing (``torch.autograd.grad`` cannot run through it). A forward that
    modifies its input in place gets a copy of the batch, so the caller's batch is never touched.

    Raises:
        TypeError: ``model`` or ``x`` of the wrong kind, or of another dtype than the model's parameters.
        ValueError: bad ``target`` / ``mode``, logits of the wrong shape (dense logits for a classification
            target and the reverse), lazy modules, BatchNorm on one sample in training mode.
        RuntimeError: inside ``torch.inference_mode()``, reentrant checkpointing, or an output that does not
            depend on ``x``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = check_images(x)
    size = (x.shape[2], x.shape[3])
    target = check_target(target, x.shape[0], image_size=size, ignore_index=ignore_index)
    if not isinstance(mode, str) or mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "gradient_saliency needs autograd and cannot run inside torch.inference_mode(); "
            "call it outside (torch.no_grad() is fine)"
        )

    forward_module = _forward_module(model)
    _check_model_for_saliency(plain_module(model), x)
    with preserved_model_state(model) as root, torch.enable_grad():
        root.train(mode == "train")
        # An inference tensor (made under inference_mode) cannot take part in autograd: copy it first.
        x_in = (x.clone() if x.is_inference() else x.detach()).requires_grad_(True)
        logits = _logits(_forward(forward_module, x_in, mode), target, size)
        if num_classes is not None and logits.shape[1] != num_classes:
            raise ValueError(
                f"the model returns {logits.shape[1]} logits per sample, but the transform has "
                f"num_classes={num_classes}: give the transform the model's number of classes"
            )
        # Width of soft targets, range of indices (an out-of-range index would be a CUDA device assert).
        check_target(target, x.shape[0], logits.shape[1], image_size=size, ignore_index=ignore_index)
        loss = _summed_cross_entropy(logits, target, ignore_index)
        del logits
        if not loss.requires_grad:
            raise RuntimeError("model output does not depend on x through autograd: no gradient saliency")
        try:
            (grad,) = torch.autograd.grad(loss, x_in, allow_unused=True)
        except RuntimeError as error:
            if "Checkpointing is not compatible" not in str(error):
                raise
            raise RuntimeError(
                "the model uses reentrant gradient checkpointing, which the saliency pass (an input-only "
                "torch.autograd.grad) cannot run through: checkpoint with use_reentrant=False (timm: "
                "timm.layers.set_reentrant_ckpt(False)), or pass saliency= maps"
            ) from None
        if grad is None:
            raise RuntimeError("model output does not depend on x through autograd: no gradient saliency")
    return saliency_from_gradient(grad)


def _logits(output: object, target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The model's logits for ``target``: (B, K) for a classification target; for a dense one (B, K, H, W),
    taken from a torchvision-style ``{"out": ...}`` dict and up-sampled to the input size ``(H, W)``."""
    if isinstance(output, Mapping) and "out" in output:
        output = output["out"]
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            "model must return a tensor of logits (B, K) (segmentation: (B, K, h, w) or a dict with them "
            f"under 'out'), got {type(output).__name__}"
        )
    batch = target.shape[0]
    if not is_dense_target(target):
        if output.dim() != 2 or output.shape[0] != batch:
            dense = " (dense logits need a dense target: a class mask (B, H, W))" if output.dim() == 4 else ""
            raise ValueError(
                f"model must return logits of shape (B, K) = ({batch}, K) for the classification target, "
                f"got {tuple(output.shape)}{dense}"
            )
        return output
    if output.dim() != 4 or output.shape[0] != batch:
        raise ValueError(
            f"target is dense ({tuple(target.shape)}), so the model must return segmentation logits "
            f"(B, K, h, w) with B = {batch}, got {tuple(output.shape)} (a classifier's logits are (B, K))"
        )
    if tuple(output.shape[2:]) != size:
        output = F.interpolate(output.float(), size=size, mode="bilinear", align_corners=False)
    return output


def _summed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Eq. (2)'s loss in float32, summed over samples (and pixels): indices, probabilities, or a class mask
    whose ``ignore_index`` pixels add nothing."""
    if target.dim() in (2, 4):
        return F.cross_entropy(logits.float(), target.to(logits.device, torch.float32), reduction="sum")
    labels = target.to(device=logits.device, dtype=torch.long)
    ignored = ignore_index if target.dim() == 3 else -100  # no class index is -100
    return F.cross_entropy(logits.float(), labels, ignore_index=ignored, reduction="sum")


def saliency_from_gradient(grad: torch.Tensor) -> torch.Tensor:
    """Eq. (3) on an input gradient (B, C, H, W): ``M = max_c |g|``, float32 (B, H, W), contiguous, detached.

    What :func:`gradient_saliency` returns for its own gradient, and what a training step that asked its
    backward for the input gradient (``x.grad``) gives the saliency cache (:mod:`.saliency_cache`).
    """
    return grad.detach().abs().amax(dim=1).to(torch.float32).contiguous()


def _check_model_for_saliency(root: nn.Module, x: torch.Tensor) -> None:
    """Refuse, before any forward, the models the pass cannot leave as it found them or cannot run."""
    from torch.nn.parameter import is_lazy

    lazy = [name for name, p in root.named_parameters() if is_lazy(p)]
    if lazy:
        raise ValueError(
            f"model has lazy (uninitialized) parameters ({', '.join(lazy[:3])}); the saliency pass would "
            "materialise them and draw from the global RNG: run one forward of the model first"
        )
    weight = next((p for p in root.parameters() if p.is_floating_point()), None)
    # A device without autocast (meta, for one) is never under it.
    autocast = torch.amp.is_autocast_available(x.device.type) and torch.is_autocast_enabled(x.device.type)
    if weight is not None and weight.dtype != x.dtype and not autocast:
        raise TypeError(
            f"dtype mismatch: x is {x.dtype} but the model's parameters are {weight.dtype}; cast one to the "
            "other, or call the transform under torch.autocast"
        )


def _forward(module: nn.Module, x_in: torch.Tensor, mode: str) -> torch.Tensor:
    """``module(x_in)``, with the two failures of a forward that a caller can fix turned into clear errors.

    A forward that writes into its input fails on the leaf ``x_in``: it runs again on a copy (the gradient
    flows back to ``x_in`` through it), so neither the leaf nor the caller's batch is changed. BatchNorm in
    training mode cannot normalise a batch of one sample.
    """
    try:
        try:
            return module(x_in)
        except RuntimeError as error:
            if "leaf Variable that requires grad" not in str(error):
                raise
        return module(x_in.clone())
    except ValueError as error:
        if "Expected more than 1 value per channel" not in str(error):
            raise
        raise SaliencyPassError(
            f"BatchNorm cannot normalise a batch of {x_in.shape[0]} sample(s) of {tuple(x_in.shape[2:])} "
            "pixels in training mode (one value per channel): the saliency pass needs saliency_mode='eval' "
            "(gradient_saliency(..., mode='eval')), a larger batch or a larger image"
        ) from None


def lowres_gradient_saliency(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    scale: float,
    *,
    mode: str = "train",
    num_classes: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """:func:`gradient_saliency` of ``x`` down-scaled by ``scale``, up-sampled back to (B, H, W).

    A cheaper exact pass (issue 14): at ``scale=0.5`` the network sees a quarter of the pixels, so the
    pass costs about a quarter of the FLOPs of the full one (for a convolutional network). Choice: the
    batch is resized with antialiased bilinear interpolation (what a data pipeline would do) and the map is
    brought back with nearest interpolation, so every pixel of a low-resolution cell gets its value; the
    ranking of SalfMix's pooled cells is what matters, and a cell of the n x n grid covers many pixels. A
    dense target is brought to the small size with nearest sampling (labels are not blended).
    """
    x = check_images(x)
    height, width = x.shape[2], x.shape[3]
    target = check_target(target, x.shape[0], image_size=(height, width), ignore_index=ignore_index)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    small = small.to(x.dtype).contiguous(memory_format=_memory_format(x))
    target = _nearest_dense_target(target, size)
    maps = gradient_saliency(
        model, small, target, mode=mode, num_classes=num_classes, ignore_index=ignore_index
    )
    return F.interpolate(maps[:, None], size=(height, width), mode="nearest")[:, 0].contiguous()


def _nearest_dense_target(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A dense target sampled at ``size`` (nearest: source pixel ``floor(i * H / h)``); others unchanged."""
    if not is_dense_target(target) or tuple(target.shape[-2:]) == size:
        return target
    height, width = target.shape[-2:]
    rows = torch.arange(size[0], device=target.device) * height // size[0]
    cols = torch.arange(size[1], device=target.device) * width // size[1]
    return target[..., rows.view(-1, 1), cols]


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
