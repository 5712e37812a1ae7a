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
for class masks with ``ignore_index`` 255 and the model for saliency (:func:`build_transform`). A method
that only moves pixels (SalfMix, Cutout, CutMix, SaliencyMix, ResizeMix, HybridMix v2/v3) returns class
masks, trained like the baseline with cross-entropy, ``ignore_index`` and ``--smoothing``; one that blends
labels (Mixup, FMix, HybridMix v1) returns soft dense targets (B, K, H, W), trained with
``-(target * logits.log_softmax(1)).sum() / target.sum()``. Each epoch adds a row to ``summary.csv``
(train loss, eval loss, mIoU, pixel accuracy, lr, epoch and augmentation seconds); ``results.json`` has the
best mIoU and its epoch (0-based); checkpoints are ranked by mIoU.

Where SalfMix's saliency comes from: ``--saliency-source exact|cached|lowres``, as in ``train_timm.py`` and
by the same code (``saliency_sources``); with ``cached`` the training samples are ``(image, mask, index,
coords)``: ``segmentation.with_source_coordinates`` moves each pixel's source coordinates with the mask.

``--resume``, ``--evaluate CKPT`` (default ``--val-split val``), the run folder, data parallel runs
(``torchrun``; ``-b`` is the batch per process, the validation set is sharded without padding and the
confusion matrices are summed over the processes, so the mIoU counts every validation pixel once) and the
error handling (one line on stderr and exit code 2, Ctrl-C 130) are the engine's, shared with
``train_timm.py`` (``salfmix_transforms.engine``). A validation set without labelled pixels is refused.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

try:  # Ctrl-C while torch loads (a second or more): one line and exit code 130, as during the run
    import torch
    import torch.nn.functional as F

    from salfmix_transforms import engine, saliency_sources
    from salfmix_transforms.cli import OneLineArgumentParser, UsageError, positive_int
    from salfmix_transforms.distributed import all_reduce_sum
    from salfmix_transforms.flags import (
        add_augmentation_flags,
        build_batch_transform,
        check_grid_fits,
        method_name,
    )
except KeyboardInterrupt:
    if __name__ != "__main__":
        raise
    print(f"{os.path.basename(__file__)}: interrupted while starting: nothing was run", file=sys.stderr)
    raise SystemExit(130) from None  # salfmix_transforms.cli.EXIT_INTERRUPTED, not importable yet

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
    ``ignore_index`` 255, given the model for saliency; ``None`` for the baseline.

    A transform that only moves pixels (SalfMix, Cutout, CutMix, SaliencyMix, ResizeMix, HybridMix v2/v3:
    ``keeps_class_masks``) is built with ``num_classes=None`` and returns class masks, so that the loss is
    cross-entropy with ``--smoothing`` (:func:`segmentation_loss`): the same value as the soft dense loss of
    the smoothed one-hot targets, without building them (issue 22: ~20 ms of a 240 ms CamVid step on the
    CPU). One that blends labels (Mixup, FMix, HybridMix v1) returns soft dense targets (B, K, H, W).
    """
    common = dict(ignore_index=IGNORE_INDEX, model=model)
    masks_out = build_batch_transform(args, None, label_smoothing=0.0, **common)
    if masks_out is None or masks_out.keeps_class_masks:
        return masks_out
    return build_batch_transform(args, num_classes, **common)


# --- training -------------------------------------------------------------------------------------------


def dense_soft_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with soft dense targets (B, K, H, W), normalised by the labelled mass."""
    return -(target * logits.float().log_softmax(1)).sum() / target.sum().clamp(min=1)


def segmentation_loss(run: engine.Run, output: Any, target: torch.Tensor) -> torch.Tensor:
    """Class masks (the baseline's, and those of the transforms that only move pixels, see
    :func:`build_transform`) get cross-entropy with ``ignore_index`` (label-smoothed by ``--smoothing``);
    soft dense targets get :func:`dense_soft_loss`."""
    from salfmix_transforms.segmentation import logits_of

    logits = logits_of(output)
    if target.dim() == 3:
        # Summed, then divided by the labelled pixels (at least 1): a batch without any is 0, not NaN.
        total = F.cross_entropy(
            logits.float(),
            target,
            ignore_index=IGNORE_INDEX,
            label_smoothing=run.args.smoothing,
            reduction="sum",
        )
        return total / (target != IGNORE_INDEX).sum().clamp(min=1)
    return dense_soft_loss(logits, target)


def _targets(run: engine.Run) -> str:
    """What the loss trains on, and where ``--smoothing`` goes (a transform returning class masks shows
    ``label_smoothing=0``: the loss smooths them)."""
    if run.transform is None or run.transform.num_classes is None:
        return f"class masks, cross-entropy with --smoothing {run.args.smoothing:g}"
    return f"soft dense targets (label smoothing {run.transform.label_smoothing:g} in the transform)"


def train_one_epoch(run: engine.Run, epoch: int) -> dict[str, float]:
    """One pass over this rank's shard (``engine.train_epoch``) with :func:`segmentation_loss`."""
    return engine.train_epoch(run, epoch, segmentation_loss)


@torch.no_grad()
def validate(run: engine.Run, model: torch.nn.Module, epoch: int) -> dict[str, float]:
    """Cross-entropy (mean over labelled pixels), mIoU and pixel accuracy (in [0, 1]) over the val set.

    Each rank evaluates its shard (:class:`~salfmix_transforms.distributed.ShardSampler`: every image once)
    and the confusion matrices and loss sums are added over the ranks before the metrics are computed.
    """
    from salfmix_transforms.data import DatasetError
    from salfmix_transforms.segmentation import confusion_matrix, logits_of, segmentation_metrics

    device, k, distributed = run.device, run.num_classes, run.args.distributed
    cm = torch.zeros(k, k, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # on the device until the pass ends
    for output, y in engine.validation_batches(run, model):
        logits = logits_of(output).float()
        loss_sum += F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum").double()
        cm += confusion_matrix(logits.argmax(1), y, k, IGNORE_INDEX)
    cm = all_reduce_sum(cm, device, distributed)
    loss_sum, labelled = all_reduce_sum([float(loss_sum)], device, distributed)[0], int(cm.sum())
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

    def datasets(self, run: engine.Run) -> tuple[Any, Any, list[str]]:
        return build_datasets(run.args)

    def create_model(self, run: engine.Run) -> torch.nn.Module:
        from salfmix_transforms.segmentation import build_model

        return engine.place_model(run, build_model(run.args.model, run.num_classes))

    def build(self, run: engine.Run) -> None:
        from salfmix_transforms.segmentation import with_source_coordinates

        args = run.args
        height, width = run.extra["crop"] = run.train_ds.crop_size
        check_grid_fits(args, height, width, "crops")
        saliency_sources.check_saliency_source(args)
        run.model = self.create_model(run)
        run.transform = build_transform(args, run.num_classes, run.model)
        # --saliency-source cached: the crops and flips move each pixel's source coordinates with the mask.
        saliency_sources.start_cached_source(run, with_source_coordinates)

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
            f"{run.transform!r}, {_targets(run)}"
        )

    def results(self, run: engine.Run) -> dict[str, Any]:
        return {
            "classes": run.classes,
            "crop_size": list(run.extra["crop"]),
            "train_size": len(run.train_ds),
            "val_size": len(run.val_ds),
            "best_checkpoint": os.path.abspath(os.path.join(run.output_dir, "model_best.pth.tar")),
            "targets": _targets(run),
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
