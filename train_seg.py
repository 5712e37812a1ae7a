#!/usr/bin/env python3
"""Train a semantic segmentation model with a SalfMix / HybridMix batch transform (issue 15).

Built from timm's parts (``create_optimizer_v2``, ``create_scheduler_v2``, ``resume_checkpoint``,
``update_summary``, ``random_seed``, ``init_distributed_device``, ``distribute_bn``) and the package's
(``AtomicCheckpointSaver``, ``salfmix_transforms.segmentation``); flags that timm's ``train.py`` also has keep
its names::

    python train_seg.py                                           # synthetic scenes, tinyseg, under a minute
    python train_seg.py --dataset camvid --method hybridmix-v3 --epochs 50
    python train_seg.py --dataset camvid --salfmix --hybrid cutmix --cutmix 0.5 --salfmix-grid 8
    python train_seg.py --dataset folder --data-dir DATA --model lraspp_mobilenet_v3_large
    python train_seg.py --resume output/train_seg/<run>               # continue a run
    python train_seg.py --evaluate output/train_seg/<run>/model_best.pth.tar   # score a checkpoint
    torchrun --nproc_per_node 2 train_seg.py --dataset camvid         # data parallel

The augmentation flags are ``train_timm.py``'s (``salfmix_transforms.flags``: ``--method NAME`` for a row of
the paper's tables, or ``--salfmix``, ``--salfmix-grid/ratio/prob/warmup-epochs``, ``--hybrid``, ``--mixup``,
``--cutmix``, ``--cutout``, ...; SalfMix when none is given), and so is the batch transform they build, here
for class masks with ``ignore_index`` 255 and the model for saliency. It returns soft dense targets
(B, K, H, W), trained with ``-(target * logits.log_softmax(1)).sum() / target.sum()``; the baseline trains
with cross-entropy and ``ignore_index``. Each epoch adds a row to ``summary.csv`` (train loss, eval loss,
mIoU, pixel accuracy, lr, epoch and augmentation seconds); ``results.json`` has the best mIoU and its epoch
(0-based); checkpoints are ranked by mIoU.

Where SalfMix's saliency comes from: ``--saliency-source exact|cached|lowres`` with ``--saliency-scale`` and
``--saliency-refresh K``, as in ``train_timm.py`` and by the same code (``saliency_sources``).
``cached`` reads each scene's map from a ``SaliencyCache`` aligned with this visit's crop and flip (the
training samples are ``(image, mask, index, coords)``: ``segmentation.with_source_coordinates`` moves each
pixel's source coordinates with the mask), and writes back the map of the dense loss's own input gradient
(no extra saliency pass); ``lowres`` runs the exact pass on the batch down-scaled by ``--saliency-scale``.
Checkpoints keep the cache, a resume restores it, and another ``--saliency-source`` on resume is refused.

``--resume`` (a checkpoint or a run folder) takes the run's flags (data, loader workers, model,
augmentation, optimizer, schedule, seed) from the checkpoint unless given, restores the model, optimizer, lr
schedule, every rank's RNG state and the best checkpoint so far (resuming an older ``checkpoint-N`` makes
``model_best`` that of the epochs kept), and refuses another ``--model`` or augmentation. With the same
number of processes and loader workers a resumed epoch is the uninterrupted run's, bit for bit. A resume on
another training set (other classes or number of image/mask pairs: ``salfmix_transforms.fingerprint``) is
refused; other file names are a warning. ``--evaluate CKPT`` scores a checkpoint on ``--val-split`` (default
``val``) with the run's flags from the checkpoint, as train_timm.py's, and trains nothing.

Data parallel (``torchrun``; gloo on CPU, NCCL on GPUs): ``-b`` is the batch per process; the training set is
sharded by torch's ``DistributedSampler``, the validation set by ``ShardSampler`` (no padding) and the
confusion matrices are summed over the processes, so the mIoU counts every validation pixel once. BatchNorm
statistics are averaged after each epoch; the SalfMix saliency pass steps around the DDP wrapper; rank 0
writes the run folder, and a folder it cannot write stops every rank.

A user error (flags, data found bad at start or during training, a validation set without labelled pixels,
a checkpoint that does not fit, one of ``train_timm.py`` or with non-finite weights, an unwritable run folder,
a full disk) is one line on stderr and exit code 2; Ctrl-C is one line saying where to resume, exit code 130.
``last``, ``checkpoint-N`` and ``model_best`` are separate copies (``salfmix_transforms.checkpoints``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from salfmix_transforms import engine, saliency_sources
from salfmix_transforms.cli import OneLineArgumentParser, UsageError, positive_int
from salfmix_transforms.distributed import all_reduce_sum
from salfmix_transforms.flags import (
    add_augmentation_flags,
    build_batch_transform,
    method_name,
    unused_tuning_flags,
    uses_grid,
    uses_saliency,
)

_logger = logging.getLogger("train_seg")
IGNORE_INDEX = 255
_CAMVID_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "data", "camvid")

# The engine's flags (salfmix_transforms.engine.add_run_flags) with this script's defaults.
DEFAULTS: dict[str, Any] = {
    **engine.RUN_DEFAULTS, "epochs": 8, "batch_size": 16, "opt": "adamw", "lr": 3e-3, "workers": 0,
    "checkpoint_hist": 3,
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The flags: data and model, the augmentation flags of ``train_timm.py`` (``salfmix_transforms.flags``:
    ``--method``, ``--salfmix-*``, ``--hybrid``, ``--mixup``, ...) and the engine's (optimisation, schedule,
    runtime: ``engine.add_run_flags``)."""
    from salfmix_transforms.segmentation import MODELS

    p = OneLineArgumentParser(prog=TASK.prog, description=__doc__.split("\n")[0])
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        choices=("synthetic", "camvid", "folder"),
        default=None,
        help="synthetic scenes (default without --data-dir), CamVid, or a <split>/images|masks folder "
        "(default with --data-dir)",
    )
    d.add_argument("--data-dir", default=None, help="data folder (camvid default: ../shared/data/camvid)")
    d.add_argument("--num-classes", type=positive_int, default=None, help="for a folder without classes.txt")
    d.add_argument("--limit-train", type=positive_int, default=None, help="use the first N training images")
    d.add_argument(
        "--val-split",
        default="val",
        help="the split scored every epoch (and by --evaluate): a folder data set's <split>/images|masks; "
        "synthetic: val or train",
    )
    d.add_argument("--limit-val", type=positive_int, default=None, help="use the first N validation images")
    p.add_argument_group("model").add_argument("--model", choices=MODELS, default="tinyseg")
    add_augmentation_flags(p, grid_help="pooling grid n (Algorithm 1; 4 for CamVid's 128x168 crops)")
    saliency_sources.add_saliency_source_flags(p)
    engine.add_run_flags(p, DEFAULTS, os.path.join(".", "output", "train_seg"))
    return p


def build_datasets(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    from salfmix_transforms.segmentation import SegmentationFolder, SyntheticShapes

    if args.dataset == "synthetic":
        kw = dict(seed=0)
        train = SyntheticShapes("train", limit=args.limit_train, **kw)
        val = SyntheticShapes(args.val_split, train=False, limit=args.limit_val, **kw)
        return train, val, train.classes
    kw = dict(num_classes=args.num_classes, ignore_index=IGNORE_INDEX)
    train = SegmentationFolder(args.data_dir, "train", limit=args.limit_train, **kw)
    val = SegmentationFolder(args.data_dir, args.val_split, train=False, limit=args.limit_val, **kw)
    return train, val, train.classes


def build_transform(args: argparse.Namespace, num_classes: int, model: torch.nn.Module) -> Any:
    """The batch transform of the augmentation flags (``flags.build_batch_transform``) for class masks with
    ``ignore_index`` 255, given the model for saliency; ``None`` for the baseline."""
    return build_batch_transform(args, num_classes, ignore_index=IGNORE_INDEX, model=model)


# --- training -------------------------------------------------------------------------------------------


def dense_soft_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with soft dense targets (B, K, H, W), normalised by the labelled mass."""
    return -(target * logits.float().log_softmax(1)).sum() / target.sum().clamp(min=1)


def train_one_epoch(run: engine.Run, epoch: int) -> dict[str, float]:
    """One pass over this rank's shard; the loss is averaged over every rank's images."""
    from tqdm import tqdm

    from salfmix_transforms.segmentation import logits_of

    args, model, device, transform = run.args, run.model, run.device, run.transform
    cache = run.saliency_cache  # --saliency-source cached: samples are (image, mask, index, coords)
    model.train()
    loss_sum, seen, aug_time = 0.0, 0, 0.0
    start = time.perf_counter()
    show = engine.show_progress(args)
    bar = tqdm(run.train_loader, desc=f"epoch {epoch}", disable=not show, leave=False)
    for i, batch in enumerate(bar):
        x, y = batch[0].to(device), batch[1].to(device)
        if transform is not None:
            t0 = time.perf_counter()
            if cache is not None:
                index, coords = batch[2].to(device), batch[3].to(device)
                maps = saliency_sources.cached_saliency(
                    run, cache, x, y, index, coords, epoch, ignore_index=IGNORE_INDEX
                )
                x, y = transform(x, y, saliency=maps)
                x.requires_grad_(True)  # the step's backward gives the input gradient too: eq. (2)
            else:
                x, y = transform(x, y, model=model)
            engine.sync(device)
            aug_time += time.perf_counter() - t0
        logits = logits_of(model(x))
        if transform is None:
            loss = F.cross_entropy(
                logits.float(), y, ignore_index=IGNORE_INDEX, label_smoothing=args.smoothing
            )
        else:
            loss = dense_soft_loss(logits, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, batch {i}")
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        if cache is not None:
            t0 = time.perf_counter()
            saliency_sources.write_cached_saliency(run, index, coords, x, epoch)
            aug_time += time.perf_counter() - t0
        run.state.num_updates += 1
        if run.lr_scheduler is not None:
            run.lr_scheduler.step_update(num_updates=run.state.num_updates)
        loss_sum += loss.item() * x.shape[0]
        seen += x.shape[0]
        if show and i % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        elif not show and engine.is_primary(args) and (i + 1) % args.log_interval == 0:
            _logger.info("  epoch %d batch %d/%d loss %.4f", epoch, i + 1, len(bar), loss.item())
    bar.close()
    loss_sum, seen = all_reduce_sum([loss_sum, seen], device, args.distributed)
    return {"loss": loss_sum / max(seen, 1), "epoch_time": time.perf_counter() - start, "aug_time": aug_time}


@torch.no_grad()
def validate(run: engine.Run, model: torch.nn.Module, epoch: int) -> dict[str, float]:
    """Cross-entropy (mean over labelled pixels), mIoU and pixel accuracy (in [0, 1]) over the val set.

    Each rank evaluates its shard (:class:`~salfmix_transforms.distributed.ShardSampler`: every image once)
    and the confusion matrices and loss sums are added over the ranks before the metrics are computed.
    """
    from salfmix_transforms.data import DatasetError
    from salfmix_transforms.segmentation import confusion_matrix, logits_of, segmentation_metrics

    args, device, k = run.args, run.device, run.num_classes
    model.eval()
    cm = torch.zeros(k, k, dtype=torch.long, device=device)
    loss_sum, labelled = 0.0, 0
    for x, y in run.val_loader:
        x, y = x.to(device), y.to(device)
        logits = logits_of(model(x)).float()
        loss_sum += float(F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum"))
        labelled += int((y != IGNORE_INDEX).sum())
        cm += confusion_matrix(logits.argmax(1), y, k, IGNORE_INDEX)
    cm = all_reduce_sum(cm, device, args.distributed)
    loss_sum, labelled = all_reduce_sum([loss_sum, labelled], device, args.distributed)
    if labelled == 0:
        raise DatasetError(
            f"the validation set has no labelled pixel (every mask pixel is the ignore index {IGNORE_INDEX} "
            "or a class named Unlabelled/void): mIoU and pixel accuracy are undefined"
        )
    if not math.isfinite(loss_sum):
        raise FloatingPointError(f"eval loss is {loss_sum / labelled} after epoch {epoch}")
    metrics = segmentation_metrics(cm.cpu())
    return {"loss": loss_sum / labelled, "miou": metrics["miou"], "pixel_acc": metrics["pixel_acc"]}


# --- what the engine asks of this script ----------------------------------------------------------------


class SegmentationTask(engine.Task):
    """Semantic segmentation: masks with ``ignore_index`` 255, checkpoints ranked by mIoU (higher is
    better); a resume or an evaluation takes the data, loader, model, augmentation, optimizer and schedule
    flags of the checkpoint unless given."""

    prog = "train_seg.py"
    name = "segmentation"  # the checkpoints' "task" (checkpoints.TASK_SCRIPTS): train_timm.py's are refused
    output_root = os.path.join(".", "output", "train_seg")
    metric, higher_is_better, metric_label, metric_scale = "miou", True, "mIoU", 100.0
    final_metrics = ("miou", "pixel_acc")
    # --workers too: loader workers draw crops and flips from their own seeds, one process from the main RNG.
    run_flags = (
        "dataset", "data_dir", "num_classes", "limit_train", "val_split", "limit_val", "model",
        *saliency_sources.RUN_FLAGS, *engine.RUN_FLAGS,
    )  # fmt: skip
    evaluate_flags = run_flags

    def build_parser(self) -> argparse.ArgumentParser:
        return build_parser()

    def finish_args(self, args: argparse.Namespace) -> None:
        if args.dataset is None:
            args.dataset = "synthetic" if args.data_dir is None else "folder"
        if args.dataset == "synthetic" and args.data_dir is not None:
            raise UsageError("--data-dir goes with --dataset camvid or folder, not synthetic")
        if args.dataset == "camvid" and args.data_dir is None:
            args.data_dir = os.path.normpath(_CAMVID_DEFAULT)
        if args.dataset == "folder" and args.data_dir is None:
            raise UsageError("--dataset folder needs --data-dir")
        if not 0 < args.salfmix_ratio < 1:
            raise UsageError(f"--salfmix-ratio must be in (0, 1), got {args.salfmix_ratio}")

    def unused_flags(self, args: argparse.Namespace) -> list[str]:
        return unused_tuning_flags(args) + saliency_sources.unused_saliency_flags(args)

    def datasets(self, run: engine.Run) -> tuple[Any, Any, list[str]]:
        return build_datasets(run.args)

    def per_file_state(self, args: argparse.Namespace, ckpt: dict[str, Any]) -> str | None:
        return saliency_sources.per_file_state(args, ckpt)

    def create_model(self, run: engine.Run) -> torch.nn.Module:
        from salfmix_transforms.segmentation import build_model

        return build_model(run.args.model, run.num_classes)

    def build(self, run: engine.Run) -> None:
        from salfmix_transforms._validation import check_grid
        from salfmix_transforms.segmentation import with_source_coordinates

        args = run.args
        height, width = run.extra["crop"] = run.train_ds.crop_size
        if uses_grid(args):
            try:
                check_grid(args.salfmix_grid, "grid", height, width)
            except (ValueError, TypeError) as e:
                raise UsageError(
                    f"--salfmix-grid {args.salfmix_grid} does not fit {height}x{width} crops (need 1 <= n <= "
                    f"{min(height, width)})"
                ) from e
        saliency_sources.check_saliency_source(args)
        run.model = self.create_model(run).to(run.device)
        run.transform = build_transform(args, run.num_classes, run.model)
        # --saliency-source cached: the crops and flips move each pixel's source coordinates with the mask.
        saliency_sources.start_cached_source(run, with_source_coordinates)

    def finish_model(self, run: engine.Run, ckpt: dict[str, Any] | None) -> None:
        if ckpt is not None and run.saliency_cache is not None:
            train_state = ckpt.get("train_state") or {}
            saliency_sources.restore_saliency_cache(run.saliency_cache, train_state, run.args)

    def train_one_epoch(self, run: engine.Run, epoch: int) -> dict[str, float]:
        return train_one_epoch(run, epoch)

    def validate(self, run: engine.Run, model: torch.nn.Module, epoch: int) -> dict[str, float]:
        return validate(run, model, epoch)

    def show_metrics(self, metrics: dict[str, float]) -> str:
        return f"mIoU {100 * metrics['miou']:.2f}%  pixel acc {100 * metrics['pixel_acc']:.2f}%"

    def describe(self, run: engine.Run) -> str:
        return (
            f"model {run.args.model} ({run.num_params / 1e6:.2f} M parameters), {run.num_classes} classes, "
            f"{run.dataset} data: {len(run.train_ds)} train (crops {run.extra['crop'][0]}x"
            f"{run.extra['crop'][1]}) / {len(run.val_ds)} val, method {method_name(run.args)}: "
            f"{run.transform!r}"
        )

    def results(self, run: engine.Run) -> dict[str, Any]:
        return {
            "classes": run.classes,
            "crop_size": list(run.extra["crop"]),
            "train_size": len(run.train_ds),
            "val_size": len(run.val_ds),
            "saliency_source": run.args.saliency_source if uses_saliency(run.args) else None,
            "best_checkpoint": os.path.abspath(os.path.join(run.output_dir, "model_best.pth.tar")),
        }

    def evaluation_record(self, run: engine.Run) -> dict[str, Any]:
        return {"classes": run.classes}


TASK = SegmentationTask()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags (``engine.parse_args``); with ``--resume`` or ``--evaluate``, those of the task's
    ``run_flags`` not given come from the checkpoint (a checkpoint of an earlier version, which saved
    ``--method`` alone, gets that method's flags).

    Raises:
        UsageError: a flag is unknown or malformed, or the checkpoint cannot be resumed or evaluated.
    """
    return engine.parse_args(TASK, argv)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Train as the flags say; 0 on success, 2 (one line on stderr) on bad input, 130 on Ctrl-C."""
    return engine.main(TASK, argv)


if __name__ == "__main__":
    sys.exit(main())
