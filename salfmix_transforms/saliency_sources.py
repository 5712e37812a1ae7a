"""Where SalfMix's saliency comes from (``--saliency-source``): one implementation for both training scripts.

* ``exact`` (the paper's): the transform runs its own saliency pass (one extra forward and input-only backward
  per step, eq. (2)-(3)).
* ``cached``: each sample's map is read from a :class:`~salfmix_transforms.saliency_cache.SaliencyCache`,
  aligned with this visit's augmented view through the source-coordinate maps that the data pipeline moves
  with the image; the training step's own backward gives the input gradient too (``x.requires_grad_(True)``),
  whose map (``saliency_from_gradient``) is written back weighted by the transform's provenance. The samples
  are ``(image, target, index, coords)``. ``--saliency-refresh K``: maps older than K epochs get the exact
  pass.
* ``lowres``: the exact pass on the batch down-scaled by ``--saliency-scale`` (``flags.build_batch_transform``
  passes it on as ``saliency_scale``).

The same for classification (the loss is soft-target cross-entropy) and segmentation (a dense loss): the
input gradient of the step's loss is the same kind of map. Checkpoints keep the cache
(``engine.TrainState``), a resume restores it (:func:`restore_saliency_cache`) and another
``--saliency-source`` on resume is refused (``engine.check_resume_flags``).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import torch

from .cli import UsageError, non_negative_int, one_line, probability
from .flags import method_name, uses_saliency

__all__ = [
    "RUN_FLAGS",
    "SALIENCY_SOURCES",
    "add_saliency_source_flags",
    "cached_saliency",
    "check_saliency_source",
    "per_file_state",
    "restore_saliency_cache",
    "salfmix_in_warmup",
    "start_cached_source",
    "unused_saliency_flags",
    "write_cached_saliency",
]

_logger = logging.getLogger("salfmix_transforms.saliency_sources")

#: The choices of ``--saliency-source``; exact is the paper's.
SALIENCY_SOURCES = ("exact", "cached", "lowres")
#: The flags a run keeps (a task's ``run_flags``: a resume takes them from the checkpoint unless given).
RUN_FLAGS = ("saliency_source", "saliency_scale", "saliency_refresh")


def add_saliency_source_flags(
    parser: argparse.ArgumentParser, title: str = "where the saliency comes from"
) -> Any:
    """``--saliency-source``, ``--saliency-scale``, ``--saliency-refresh`` in a group ``title`` (returned)."""
    g = parser.add_argument_group(title)
    g.add_argument(
        "--saliency-source",
        default="exact",
        choices=SALIENCY_SOURCES,
        help="exact: the paper's extra saliency pass per step; cached: maps from the training step's own "
        "input gradient, one epoch late (SaliencyCache); lowres: the exact pass on the batch down-scaled "
        "by --saliency-scale",
    )
    g.add_argument(
        "--saliency-scale",
        type=probability,
        default=0.5,
        help="down-scaling of --saliency-source lowres, in (0, 1] (default: 0.5)",
    )
    g.add_argument(
        "--saliency-refresh",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="--saliency-source cached: maps older than K epochs get the exact pass (0: every written map)",
    )
    return g


def unused_saliency_flags(args: argparse.Namespace) -> list[str]:
    """The warnings for saliency flags that the saliency source leaves unused: ``--saliency-scale`` without
    ``--saliency-source lowres``; ``--saliency-mode`` with ``cached`` and no ``--saliency-refresh`` (the maps
    come from the training step, no saliency pass runs)."""
    given, source = getattr(args, "given_flags", ()), args.saliency_source
    lines = []
    if "saliency_scale" in given and source != "lowres":
        lines.append(f"--saliency-scale given, but --saliency-source {source} does not use it (ignored)")
    if (
        getattr(args, "saliency_mode", None) is not None
        and source == "cached"
        and args.saliency_refresh is None
    ):
        lines.append(
            "--saliency-mode given, but --saliency-source cached without --saliency-refresh makes no "
            "saliency pass (ignored)"
        )
    return lines


def check_saliency_source(args: argparse.Namespace) -> None:
    """``--saliency-source`` other than exact needs a method that takes the saliency; ``--saliency-refresh``
    goes with ``cached``; ``lowres`` needs a scale in (0, 1].

    Raises:
        UsageError: with the flags to fix.
    """
    if args.saliency_source != "exact" and not uses_saliency(args):
        raise UsageError(
            f"--saliency-source {args.saliency_source} needs a method that takes the model's saliency "
            f"(salfmix, cutout-sal, hybridmix-v1/v2/v3), not {method_name(args)}"
        )
    if args.saliency_refresh is not None and args.saliency_source != "cached":
        raise UsageError("--saliency-refresh goes with --saliency-source cached")
    if args.saliency_source == "lowres" and not 0.0 < args.saliency_scale <= 1.0:
        raise UsageError(
            f"--saliency-scale must lie in (0, 1] for --saliency-source lowres, got {args.saliency_scale}"
        )


def per_file_state(args: argparse.Namespace, ckpt: dict[str, Any]) -> str | None:
    """What a resume on other file names would get wrong (``fingerprint.check_resume_data``): the cached
    maps of a ``--saliency-source cached`` checkpoint belong to the files they were written for."""
    cached = args.saliency_source == "cached" and (ckpt.get("train_state") or {}).get("saliency_cache")
    return "its cached saliency maps (--saliency-source cached)" if cached else None


def start_cached_source(run: Any, with_source_coordinates: Any) -> None:
    """For ``--saliency-source cached``: the training set yields ``(image, target, index, coords)``
    (``with_source_coordinates(run.train_ds)``) and ``run.saliency_cache`` holds one map per sample.
    Nothing for the other sources."""
    from .saliency_cache import SaliencyCache

    if run.args.saliency_source != "cached":
        return
    run.train_ds = with_source_coordinates(run.train_ds)
    run.saliency_cache = SaliencyCache(len(run.train_ds), device=run.device)


def restore_saliency_cache(cache: Any, train_state: dict[str, Any], args: argparse.Namespace) -> None:
    """The cache of a resumed ``--saliency-source cached`` run; rebuilt in one epoch when absent.

    Raises:
        CheckpointError: a damaged cache.
    """
    from .engine import CheckpointError, is_primary

    saved = train_state.get("saliency_cache")
    if saved is None:
        if is_primary(args):
            _logger.warning("warning: the checkpoint has no saliency cache; it is rebuilt in the next epoch")
        return
    try:
        cache.load_state_dict(saved)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {args.resume!r}: {one_line(e)}") from e


def salfmix_in_warmup(transform: Any) -> bool:
    """Whether the SalfMix step of ``transform`` (HybridMix's, or the transform itself) skips this call."""
    salfmix = getattr(transform, "salfmix", transform)
    return bool(getattr(salfmix, "in_warmup", False))


def cached_saliency(
    run: Any,
    cache: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    index: torch.Tensor,
    coords: Any,
    epoch: int,
    **saliency_kwargs: Any,
) -> torch.Tensor:
    """The cached maps aligned with this batch's views (``coords``: their source coordinates or, located
    once for the read and the write, ``cache.locate(coords)``; a never-written sample reads a constant map:
    random cells); with
    ``--saliency-refresh K``, maps older than K epochs are replaced by the exact pass
    (``gradient_saliency(run.model, ...)``, ``saliency_kwargs`` passed on: ``ignore_index=`` for masks) over
    the stale samples, or over the whole batch when only one is stale and the pass runs in training mode
    (BatchNorm cannot normalise one sample alone)."""
    from . import saliency

    maps = cache.read(index, coords)
    if run.args.saliency_refresh is None or salfmix_in_warmup(run.transform):
        return maps
    stale = cache.stale(index, epoch, run.args.saliency_refresh)
    count = int(stale.sum())  # the one host read of a step with --saliency-refresh
    if count == 0:
        return maps
    mode = run.args.saliency_mode or "train"
    if count > 1 or mode == "eval":
        maps[stale] = saliency.gradient_saliency(run.model, x[stale], y[stale], mode=mode, **saliency_kwargs)
    else:  # BatchNorm in training mode cannot normalise a single sample: its map from the whole batch's pass
        maps[stale] = saliency.gradient_saliency(run.model, x, y, mode=mode, **saliency_kwargs)[stale]
    return maps


def write_cached_saliency(run: Any, index: torch.Tensor, coords: Any, x: torch.Tensor, epoch: int) -> None:
    """After the step's backward: the map of ``x.grad`` (eq. (3)) written back to the cache (``coords`` as
    for :func:`cached_saliency`), weighted by the transform's provenance (pixels pasted or blended in from
    another sample count for less or nothing)."""
    from .saliency import saliency_from_gradient

    run.saliency_cache.write(
        index,
        coords,
        saliency_from_gradient(x.grad),
        epoch,
        run.transform.provenance,
        distributed=run.args.distributed,
    )
