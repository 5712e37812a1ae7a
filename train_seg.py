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
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from salfmix_transforms.cli import (
    OneLineArgumentParser,
    UsageError,
    logging_to_stdout,
    non_negative_float,
    non_negative_int,
    one_line,
    plain_flags,
    positive_float,
    positive_int,
    probability,
    report_error,
    report_interrupt,
    report_write_error,
    writable_folder,
)
from salfmix_transforms.distributed import (
    DataOrder,
    ShardSampler,
    all_reduce_sum,
    broadcast_from_primary,
    gather_rng_states,
    set_rng_state,
    without_ddp,
)
from salfmix_transforms.fingerprint import FINGERPRINT_KEY
from salfmix_transforms.flags import (
    add_augmentation_flags,
    augmentation_dests,
    build_batch_transform,
    disable_mixing,
    method_name,
    parse_augmentation_flags,
    unused_tuning_flags,
    uses_grid,
)

_logger = logging.getLogger("train_seg")
PROG = "train_seg.py"
TASK = "segmentation"  # the checkpoints' "task" (checkpoints.TASK_SCRIPTS): train_timm.py's are refused
IGNORE_INDEX = 255
_CAMVID_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "data", "camvid")


def build_parser() -> argparse.ArgumentParser:
    """The flags: data, model, training and output, and the augmentation flags of ``train_timm.py``
    (``salfmix_transforms.flags``: ``--method``, ``--salfmix-*``, ``--hybrid``, ``--mixup``, ...)."""
    from salfmix_transforms.segmentation import MODELS

    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
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
    d.add_argument("--workers", "-j", type=non_negative_int, default=0, help="data loader processes")
    p.add_argument_group("model").add_argument("--model", choices=MODELS, default="tinyseg")
    add_augmentation_flags(p, grid_help="pooling grid n (Algorithm 1; 4 for CamVid's 128x168 crops)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int, default=8)
    t.add_argument("-b", "--batch-size", type=positive_int, default=16, help="batch per process")
    t.add_argument("--lr", type=positive_float, default=3e-3)
    t.add_argument("--opt", default="adamw", help="timm optimizer name (create_optimizer_v2)")
    t.add_argument("--weight-decay", type=non_negative_float, default=1e-4)
    t.add_argument("--momentum", type=probability, default=0.9)
    t.add_argument("--sched", default="cosine", help="timm scheduler name (create_scheduler_v2), or none")
    t.add_argument("--min-lr", type=non_negative_float, default=0.0)
    t.add_argument("--warmup-epochs", type=non_negative_int, default=0, help="lr warm-up epochs")
    t.add_argument("--warmup-lr", type=non_negative_float, default=1e-5)
    t.add_argument("--smoothing", type=probability, default=0.0, help="label smoothing (per pixel)")
    t.add_argument("--seed", type=int, default=42, help="random seed (rank is added)")
    t.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch's)")
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    o = p.add_argument_group("output")
    o.add_argument(
        "--output",
        default="",
        help="root folder of runs (default ./output/train_seg); with --evaluate: the folder (or .json file) "
        "of the metrics",
    )
    o.add_argument("--experiment", default="", help="run folder name (default: date, model and method)")
    o.add_argument("--resume", default="", help="checkpoint or run folder to continue")
    o.add_argument(
        "--evaluate",
        default="",
        metavar="CKPT",
        help="score checkpoint CKPT on --val-split, no training: the run's flags (data, model, classes, "
        "batch) come from the checkpoint unless given; the metrics are printed on one line and written as "
        "JSON next to CKPT (<name>-eval-<split>.json) or to --output (a folder or a .json file), never to "
        "the run's results.json",
    )
    o.add_argument("--checkpoint-hist", type=positive_int, default=3)
    o.add_argument("--no-progress", action="store_true", help="log every --log-interval batches, no bar")
    o.add_argument("--log-interval", type=positive_int, default=50)
    return p


# The flags that define a run: a resumed run takes the checkpoint's for those not given on the command line.
# --workers too: loader workers draw crops and flips from their own seeds, one process from the main RNG.
_RUN_FLAGS = (
    "dataset", "data_dir", "num_classes", "limit_train", "val_split", "limit_val", "workers", "model",
    "epochs", "batch_size", "lr", "opt", "weight_decay", "momentum", "sched", "min_lr", "warmup_epochs",
    "warmup_lr", "smoothing", "seed",
    *augmentation_dests(),
)  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags; with ``--resume`` or ``--evaluate``, those of :data:`_RUN_FLAGS` not given come from the
    checkpoint (a checkpoint of an earlier version, which saved ``--method`` alone, gets that method's flags).

    Raises:
        UsageError: a flag is unknown or malformed, or the checkpoint cannot be resumed or evaluated.
    """
    from salfmix_transforms.checkpoints import saved_flags

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    first = parser.parse_args(argv)
    if first.evaluate and first.resume:
        raise UsageError("--evaluate scores a checkpoint, --resume trains on: give one of them")
    ckpt, saved, evaluation = None, {}, None
    if first.resume:
        first.resume, ckpt = _load_resume(first.resume)
        if first.method is not None:  # named as given, before the checkpoint's flags join it
            _check_resume_method(first.resume, ckpt, first.method)
    elif first.evaluate:
        evaluation = _load_evaluation(first.evaluate)
        ckpt = evaluation[1]
    if ckpt is not None:
        saved = saved_flags(ckpt, _RUN_FLAGS)
    args = parse_augmentation_flags(parser, argv, saved)
    if evaluation is not None:
        args.evaluate, args._evaluation = evaluation[0], evaluation
        _check_resume_model(args.evaluate, ckpt, args.model)
    elif ckpt is not None:
        args.resume, args._resume_ckpt = first.resume, ckpt
        _check_resume_model(args.resume, ckpt, args.model)
        _check_resume_method(args.resume, ckpt, method_name(args))
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
    return args


def _load_resume(path: str) -> tuple[str, dict[str, Any]]:
    """The checkpoint that ``--resume path`` means (a file, or a run folder's newest intact checkpoint) and
    its metadata (``checkpoints.load_resume_checkpoint``)."""
    from salfmix_transforms.checkpoints import load_resume_checkpoint

    try:
        path, ckpt, note = load_resume_checkpoint(path, task=TASK)
    except ValueError as e:  # CorruptCheckpointError included
        raise UsageError(one_line(e)) from e
    if note:
        _logger.warning("warning: %s", note)
    return path, ckpt


def _load_evaluation(path: str) -> tuple[str, dict[str, Any], dict[str, Any], str]:
    """What ``--evaluate path`` scores (``checkpoints.load_evaluation_checkpoint``): the checkpoint file, its
    metadata, its model weights and ``"model"``."""
    from salfmix_transforms.checkpoints import load_evaluation_checkpoint

    try:
        path, ckpt, state_dict, weights, note = load_evaluation_checkpoint(path, TASK)
    except ValueError as e:  # CorruptCheckpointError included
        raise UsageError(one_line(e)) from e
    if note:
        _logger.warning("warning: %s", note)
    return path, ckpt, state_dict, weights


def _check_resume_model(path: str, ckpt: dict[str, Any], model: str) -> None:
    """Refuse a ``--model`` other than the checkpoint's."""
    if ckpt.get("arch") not in (None, model):
        raise UsageError(f"checkpoint {path!r} is of model {ckpt['arch']!r}, not --model {model}")


def _check_resume_method(path: str, ckpt: dict[str, Any], method: str) -> None:
    """Refuse an augmentation other than the checkpoint's (``method``: a ``--method`` name or
    ``flags.method_name``)."""
    trained = (ckpt.get("train_state") or {}).get("method")
    if trained is not None and trained != method:
        raise UsageError(f"checkpoint {path!r} was trained with --method {trained}, not {method}")


# --- setup ----------------------------------------------------------------------------------------------


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


def _output_dir(args: argparse.Namespace) -> str:
    """The run folder, created and checked writable (a resumed run without --output / --experiment
    continues in its own).

    Raises:
        UsageError: the folder cannot be created or written (a file in the way, no permission, ...).
    """
    if args.resume and not args.output and not args.experiment:
        path = os.path.dirname(os.path.abspath(args.resume))
    else:
        name = args.experiment or "-".join([time.strftime("%Y%m%d-%H%M%S"), args.model, method_name(args)])
        path = os.path.join(args.output or os.path.join("output", "train_seg"), name)
    return writable_folder(path)


class _TrainState:
    """What the checkpoints hold besides the optimizer (timm's ``task`` hook of ``CheckpointSaver``): the
    lr schedule, every rank's RNG states (captured at the end of the epoch, so a resumed run draws what the
    uninterrupted run would have drawn), the method, and the training and augmentation seconds so far."""

    def __init__(self, model: torch.nn.Module, scheduler: Any, method: str) -> None:
        self.model, self.scheduler, self.method = model, scheduler, method
        self.rng_states: list[dict[str, Any]] = []
        self.train_time_s = self.aug_time_s = 0.0
        self.data_fingerprint: dict[str, Any] | None = (
            None  # fingerprint.dataset_fingerprint of the train set
        )

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn: Any = None) -> dict[str, Any]:
        from timm.utils import get_state_dict, unwrap_model

        if ema:
            return {}
        return {
            "task": TASK,
            FINGERPRINT_KEY: self.data_fingerprint,
            "state_dict": get_state_dict(self.model, unwrap_fn or unwrap_model),
            "train_state": {
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "rng": self.rng_states,
                "method": self.method,
                "train_time_s": self.train_time_s,
                "aug_time_s": self.aug_time_s,
            },
        }


def _is_primary(args: argparse.Namespace) -> bool:
    return args.rank == 0


# --- training -------------------------------------------------------------------------------------------


def dense_soft_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with soft dense targets (B, K, H, W), normalised by the labelled mass."""
    return -(target * logits.float().log_softmax(1)).sum() / target.sum().clamp(min=1)


def train_one_epoch(run: dict[str, Any], epoch: int) -> dict[str, float]:
    """One pass over this rank's shard; the loss is averaged over every rank's images."""
    from tqdm import tqdm

    from salfmix_transforms.segmentation import logits_of

    args, model, device, transform = run["args"], run["model"], run["device"], run["transform"]
    model.train()
    loss_sum, seen, aug_time = 0.0, 0, 0.0
    start = time.perf_counter()
    show = not args.no_progress and sys.stdout.isatty() and _is_primary(args)
    bar = tqdm(run["train_loader"], desc=f"epoch {epoch}", disable=not show, leave=False)
    for i, (x, y) in enumerate(bar):
        x, y = x.to(device), y.to(device)
        if transform is not None:
            t0 = time.perf_counter()
            x, y = transform(x, y, model=model)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
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
        run["optimizer"].zero_grad(set_to_none=True)
        loss.backward()
        run["optimizer"].step()
        run["num_updates"] += 1
        if run["scheduler"] is not None:
            run["scheduler"].step_update(num_updates=run["num_updates"])
        loss_sum += loss.item() * x.shape[0]
        seen += x.shape[0]
        if show and i % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        elif not show and _is_primary(args) and (i + 1) % args.log_interval == 0:
            _logger.info("  epoch %d batch %d/%d loss %.4f", epoch, i + 1, len(bar), loss.item())
    bar.close()
    loss_sum, seen = all_reduce_sum([loss_sum, seen], device, args.distributed)
    return {"loss": loss_sum / max(seen, 1), "epoch_time": time.perf_counter() - start, "aug_time": aug_time}


@torch.no_grad()
def validate(run: dict[str, Any], epoch: int) -> dict[str, float]:
    """Cross-entropy (mean over labelled pixels), mIoU and pixel accuracy (in [0, 1]) over the val set.

    Each rank evaluates its shard (:class:`~salfmix_transforms.distributed.ShardSampler`: every image once)
    and the confusion matrices and loss sums are added over the ranks before the metrics are computed.
    """
    from salfmix_transforms.data import DatasetError
    from salfmix_transforms.segmentation import confusion_matrix, logits_of, segmentation_metrics

    args, device, k = run["args"], run["device"], run["num_classes"]
    model = without_ddp(run["model"])
    model.eval()
    cm = torch.zeros(k, k, dtype=torch.long, device=device)
    loss_sum, labelled = 0.0, 0
    for x, y in run["val_loader"]:
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


def _device(args: argparse.Namespace) -> torch.device:
    """Check ``--device``, then let timm set up the process group when started by ``torchrun`` (it sets
    ``args.distributed``, ``world_size``, ``rank`` and ``local_rank``)."""
    from timm.utils import init_distributed_device

    _checked_device(args)
    return init_distributed_device(args)


def _checked_device(args: argparse.Namespace) -> torch.device:
    """``--device``, checked (a malformed name, CUDA asked for where there is none: :class:`UsageError`)."""
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise UsageError(f"--device {args.device!r} is not a device: {one_line(e)}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device} asked for, but CUDA is not available")
    return device


def _check_data(args: argparse.Namespace, train_ds: Any) -> None:
    from salfmix_transforms._validation import check_grid

    height, width = train_ds.crop_size
    if uses_grid(args):
        try:
            check_grid(args.salfmix_grid, "grid", height, width)
        except (ValueError, TypeError) as e:
            raise UsageError(
                f"--salfmix-grid {args.salfmix_grid} does not fit {height}x{width} crops (need 1 <= n <= "
                f"{min(height, width)})"
            ) from e
    per_rank = len(train_ds) // args.world_size
    if per_rank < args.batch_size:
        raise UsageError(
            f"--batch-size {args.batch_size} is larger than the {per_rank} training images per process"
        )


def _loaders(args: argparse.Namespace, train_ds: Any, val_ds: Any, device: torch.device) -> tuple[Any, ...]:
    """The train loader (shuffled; under DDP timm's usual ``DistributedSampler`` with ``drop_last``), the
    val loader (under DDP a :class:`ShardSampler`: no padding, every image counted once) and the train
    sampler (``None`` in a single process)."""
    train_sampler = val_sampler = None
    if args.distributed:
        train_sampler = torch.utils.data.DistributedSampler(
            train_ds, shuffle=True, seed=args.seed, drop_last=True
        )
        val_sampler = ShardSampler(len(val_ds), args.rank, args.world_size)
    loader_kw = dict(num_workers=args.workers, pin_memory=device.type == "cuda")
    data_order = DataOrder(args.seed, args.rank)  # paired seeds: every method sees the same batches
    train_loader = torch.utils.data.DataLoader(
        train_ds,
        args.batch_size,
        shuffle=train_sampler is None,
        sampler=train_sampler,
        drop_last=True,
        generator=data_order.generator,
        **loader_kw,
    )
    val_loader = torch.utils.data.DataLoader(
        val_ds, args.batch_size, shuffle=False, sampler=val_sampler, **loader_kw
    )
    return train_loader, val_loader, train_sampler, data_order


def _optimizer_and_scheduler(args: argparse.Namespace, model: torch.nn.Module, updates: int) -> tuple:
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    try:
        optimizer = create_optimizer_v2(
            model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum
        )
        scheduler, num_epochs = create_scheduler_v2(
            optimizer,
            sched="none" if args.sched in ("none", "") else args.sched,
            num_epochs=args.epochs,
            min_lr=args.min_lr,
            warmup_lr=args.warmup_lr,
            warmup_epochs=args.warmup_epochs,
            updates_per_epoch=updates,
        )
    except (AssertionError, ValueError, KeyError) as e:
        raise UsageError(f"--opt {args.opt} / --sched {args.sched}: {one_line(e)}") from e
    return optimizer, scheduler, num_epochs


def _resume(
    args: argparse.Namespace, model: torch.nn.Module, optimizer: Any, state: _TrainState, num_epochs: int
) -> int:
    """Load the ``--resume`` checkpoint into the model, optimizer, schedule, timers and this rank's RNG;
    returns the first epoch to train."""
    from timm.models import resume_checkpoint
    from timm.utils import random_seed

    ckpt = args._resume_ckpt
    try:
        start_epoch = int(resume_checkpoint(model, args.resume, optimizer=optimizer, log_info=False) or 0)
    except (RuntimeError, KeyError, ValueError) as e:
        raise UsageError(f"checkpoint {args.resume!r} does not fit this model: {one_line(e)}") from e
    train_state = ckpt.get("train_state") or {}
    saved_args = vars(ckpt.get("args") or argparse.Namespace())
    changed = [k for k in _SCHEDULE_FLAGS if k in saved_args and saved_args[k] != getattr(args, k)]
    if state.scheduler is not None and train_state.get("scheduler") and not changed:
        state.scheduler.load_state_dict(dict(train_state["scheduler"]))
    elif changed and _is_primary(args):
        _logger.info("lr schedule rebuilt from the flags (%s changed)", ", ".join(changed))
    state.train_time_s = float(train_state.get("train_time_s", 0.0))
    state.aug_time_s = float(train_state.get("aug_time_s", 0.0))
    rng = train_state.get("rng")
    if isinstance(rng, torch.Tensor):  # checkpoints of earlier versions: the one process's torch state
        torch.set_rng_state(rng)
    elif rng and len(rng) == args.world_size:
        set_rng_state(rng[args.rank])
    elif rng:
        _logger.warning(
            "warning: the checkpoint's RNG states are of %d process(es), this run has %d: re-seeding",
            len(rng),
            args.world_size,
        )
        random_seed(args.seed + start_epoch, args.rank)
    if start_epoch >= num_epochs:
        raise _NothingToTrain(f"checkpoint {args.resume!r} has trained {start_epoch} epoch(s) already")
    if state.scheduler is not None:
        state.scheduler.step(start_epoch)
    return start_epoch


def _saver(args: argparse.Namespace, model: torch.nn.Module, optimizer: Any, state: _TrainState) -> tuple:
    """The run folder and its checkpoint saver, ranked by mIoU (``checkpoints.open_run_folder``: the resumed
    run's best restored, ``args.json`` written). Primary process only.

    Raises:
        UsageError: the run folder cannot be created or written.
    """
    from salfmix_transforms.checkpoints import open_run_folder

    output_dir = _output_dir(args)
    try:
        saver = open_run_folder(
            output_dir,
            plain_flags(args),
            args.resume,
            getattr(args, "_resume_ckpt", None),
            model=model,
            optimizer=optimizer,
            decreasing=False,  # the metric is the mIoU
            max_history=args.checkpoint_hist,
            task=state,
        )
    except OSError as e:
        raise UsageError(f"cannot write to the run folder {output_dir!r}: {one_line(e)}") from e
    return output_dir, saver


def _saver_on_primary(args: argparse.Namespace, model: torch.nn.Module, optimizer: Any, state: Any) -> tuple:
    """:func:`_saver` on the primary process; under DDP every rank learns the run folder, or the error
    that stops the run (so that no rank trains on into a collective that the stopped one never joins)."""
    output_dir, saver, error = "", None, None
    if _is_primary(args):
        try:
            output_dir, saver = _saver(args, model, optimizer, state)
        except UsageError as e:
            error = str(e)
    output_dir, error = broadcast_from_primary([output_dir, error], args.distributed)
    if error is not None:
        raise UsageError(error)
    return output_dir, saver


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Device and process group, data, model, batch transform, optimizer, schedule, resume, saver."""
    from timm.utils import random_seed

    from salfmix_transforms.fingerprint import check_resume_data, dataset_fingerprint
    from salfmix_transforms.segmentation import build_model

    device = _device(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    random_seed(args.seed, args.rank)
    train_ds, val_ds, classes = build_datasets(args)
    fingerprint = dataset_fingerprint(train_ds, args.dataset)
    if args.resume:
        message = check_resume_data(args.resume, args._resume_ckpt, fingerprint)
        if message and _is_primary(args):
            _logger.warning(message)
    num_classes = len(classes) if args.num_classes is None else args.num_classes
    if num_classes < len(classes):
        raise UsageError(f"--num-classes {num_classes} is smaller than the data set's {len(classes)} classes")
    _check_data(args, train_ds)

    model = build_model(args.model, num_classes).to(device)
    transform = build_transform(args, num_classes, model)
    train_loader, val_loader, train_sampler, data_order = _loaders(args, train_ds, val_ds, device)
    optimizer, scheduler, num_epochs = _optimizer_and_scheduler(args, model, len(train_loader))
    state = _TrainState(model, scheduler, method_name(args))
    state.data_fingerprint = fingerprint
    start_epoch = _resume(args, model, optimizer, state, num_epochs) if args.resume else 0
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    output_dir, saver = _saver_on_primary(args, model, optimizer, state)
    return dict(
        args=args, device=device, model=model, transform=transform, optimizer=optimizer, scheduler=scheduler,
        train_loader=train_loader, val_loader=val_loader, train_sampler=train_sampler, data_order=data_order,
        num_classes=num_classes, classes=classes, num_epochs=num_epochs, start_epoch=start_epoch,
        num_updates=start_epoch * len(train_loader), output_dir=output_dir, saver=saver, state=state,
        crop=train_ds.crop_size, sizes=(len(train_ds), len(val_ds)),
    )  # fmt: skip


# Flags that define the lr schedule: a resumed run with one of them changed gets a new schedule.
_SCHEDULE_FLAGS = ("epochs", "sched", "lr", "min_lr", "warmup_epochs", "warmup_lr")


class _NothingToTrain(Exception):
    """``--resume`` of a run that has done ``--epochs`` already."""


def _log_start(run: dict[str, Any]) -> None:
    args = run["args"]
    _logger.info(
        "model %s (%.2f M parameters), %d classes, %s data: %d train (crops %dx%d) / %d val, method %s: %r, "
        "device %s%s, %d threads, output %s",
        args.model, sum(p.numel() for p in run["model"].parameters()) / 1e6, run["num_classes"], args.dataset,
        run["sizes"][0], *run["crop"], run["sizes"][1], method_name(args), run["transform"], run["device"],
        f" x{args.world_size} (DDP)" if args.distributed else "", torch.get_num_threads(),
        os.path.abspath(run["output_dir"]),
    )  # fmt: skip
    unused = unused_tuning_flags(args)
    if unused:
        _logger.warning(
            "warning: %s given, but the %s run does not use %s (ignored)",
            ", ".join(unused), method_name(args), "it" if len(unused) == 1 else "them",
        )  # fmt: skip
    warmup = getattr(getattr(run["transform"], "salfmix", run["transform"]), "warmup_epochs", 0)
    if warmup >= run["num_epochs"]:
        _logger.warning("warning: the warm-up covers all %d epoch(s): SalfMix never runs", run["num_epochs"])


def train(run: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate every epoch; the primary process writes ``summary.csv``, the checkpoints and
    ``results.json``. Returns the results (on every rank)."""
    from timm.utils import distribute_bn, trim_summary, update_summary

    args, saver, state = run["args"], run["saver"], run["state"]
    primary = _is_primary(args)
    summary = os.path.join(run["output_dir"], "summary.csv")
    if primary:
        trim_summary(summary, run["start_epoch"])
        _log_start(run)
    last: dict[str, float] = {}
    for epoch in range(run["start_epoch"], run["num_epochs"]):
        run["data_order"].set_epoch(epoch)
        if run["train_sampler"] is not None:
            run["train_sampler"].set_epoch(epoch)
        if run["transform"] is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
            run["transform"] = disable_mixing(run["transform"])
        if run["transform"] is not None:
            run["transform"].set_epoch(epoch)
        train_metrics = train_one_epoch(run, epoch)
        if args.distributed:
            distribute_bn(run["model"], args.world_size, reduce=True)
        last = validate(run, epoch)
        lrs = [g["lr"] for g in run["optimizer"].param_groups]
        lr = sum(lrs) / len(lrs)
        if run["scheduler"] is not None:
            run["scheduler"].step(epoch + 1, last["miou"])
        state.train_time_s += train_metrics["epoch_time"]
        state.aug_time_s += train_metrics["aug_time"]
        state.rng_states = gather_rng_states(args.world_size, args.distributed)  # collective: every rank
        if not primary:
            continue
        update_summary(epoch, train_metrics, last, summary, lr=lr)
        saver.save_checkpoint(epoch, metric=last["miou"])
        _logger.info(
            "epoch %d [%d/%d]  train loss %.4f  eval loss %.4f  mIoU %.2f%%  pixel acc %.2f%%  lr %.5f  "
            "time %.1fs (augmentation %.1fs)",
            epoch, epoch + 1, run["num_epochs"], train_metrics["loss"], last["loss"], 100 * last["miou"],
            100 * last["pixel_acc"], lr, train_metrics["epoch_time"], train_metrics["aug_time"],
        )  # fmt: skip
    results = _results(run, last)
    if primary:
        with open(os.path.join(run["output_dir"], "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        _logger.info(
            "best mIoU %s at epoch %s; results.json, summary.csv and checkpoints in %s",
            "n/a" if results["best_miou"] is None else f"{100 * results['best_miou']:.2f}%",
            results["best_epoch"],
            results["output_dir"],
        )
    return results


def _results(run: dict[str, Any], last: dict[str, float]) -> dict[str, Any]:
    args, saver, state = run["args"], run["saver"], run["state"]
    return {
        "model": args.model,
        "method": method_name(args),
        "transform": repr(run["transform"]),
        "dataset": args.dataset,
        "data_dir": None if args.data_dir is None else os.path.abspath(args.data_dir),
        "classes": run["classes"],
        "num_classes": run["num_classes"],
        "crop_size": list(run["crop"]),
        "train_size": run["sizes"][0],
        "val_size": run["sizes"][1],
        "epochs": run["num_epochs"],
        "start_epoch": run["start_epoch"],
        "world_size": args.world_size,
        "best_miou": None if saver is None else saver.best_metric,
        "best_epoch": None if saver is None else saver.best_epoch,
        "final_miou": last.get("miou"),
        "final_pixel_acc": last.get("pixel_acc"),
        "train_time_s": state.train_time_s,
        "aug_time_s": state.aug_time_s,
        "output_dir": os.path.abspath(run["output_dir"]),
        "best_checkpoint": os.path.abspath(os.path.join(run["output_dir"], "model_best.pth.tar")),
    }


# --- evaluate only (--evaluate) -------------------------------------------------------------------------


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Score checkpoint ``args.evaluate`` on ``--val-split`` as the training run's :func:`validate` did (the
    run's flags come from the checkpoint, see :func:`parse_args`); write the metrics as JSON (next to it, or
    to ``--output``) and log them on one line. Returns what was written.

    Raises:
        UsageError: a checkpoint that does not fit the model, an unwritable metrics file.
        DatasetError: the data cannot be read, is of other classes than the checkpoint's, or has no labelled
            validation pixel.
        FloatingPointError: the loss is not finite.
    """
    from salfmix_transforms.checkpoints import evaluation_path, write_json
    from salfmix_transforms.fingerprint import check_evaluation_data, dataset_fingerprint
    from salfmix_transforms.segmentation import build_model

    path, ckpt, state_dict, weights = args._evaluation
    out_path = evaluation_path(path, args.output, args.val_split, weights)
    device = _checked_device(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_ds, val_ds, classes = build_datasets(args)
    check_evaluation_data(path, ckpt, dataset_fingerprint(train_ds, args.dataset))
    num_classes = len(classes) if args.num_classes is None else args.num_classes
    model = build_model(args.model, num_classes)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise UsageError(
            f"checkpoint {path!r} does not fit {args.model} with {num_classes} classes: {one_line(e)}"
        ) from e
    model.to(device)
    loader = torch.utils.data.DataLoader(
        val_ds, args.batch_size, shuffle=False, num_workers=args.workers, pin_memory=device.type == "cuda"
    )
    run = dict(args=args, device=device, num_classes=num_classes, model=model, val_loader=loader)
    metrics = validate(run, int(ckpt["epoch"]))
    shown = (
        f"loss {metrics['loss']:.4f}  mIoU {100 * metrics['miou']:.2f}%  "
        f"pixel acc {100 * metrics['pixel_acc']:.2f}%"
    )
    record = {
        "checkpoint": os.path.abspath(path),
        "epoch": int(ckpt["epoch"]),
        "weights": weights,
        "model": args.model,
        "num_classes": num_classes,
        "classes": classes,
        "dataset": args.dataset,
        "data_dir": None if args.data_dir is None else os.path.abspath(args.data_dir),
        "split": args.val_split,
        "val_size": len(val_ds),
        "metrics": metrics,
    }
    writable_folder(os.path.dirname(out_path), "the folder of the metrics")
    try:
        write_json(out_path, record)
    except OSError as e:
        raise UsageError(f"cannot write {out_path!r}: {one_line(e)} (the metrics: {shown})") from e
    _logger.info(
        "evaluated %s (epoch %d) on %s split %r (%d images): %s; metrics in %s",
        path, record["epoch"], args.dataset, args.val_split, len(val_ds), shown, out_path,
    )  # fmt: skip
    return record


# --- entry point ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Train as the flags say; 0 on success, 2 (one line on stderr) on bad input."""
    primary = int(os.environ.get("RANK", "0")) == 0
    try:
        with logging_to_stdout(primary):
            return _parse_setup_and_train(argv)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _parse_setup_and_train(argv: Sequence[str] | None) -> int:
    from salfmix_transforms.checkpoints import resumable_checkpoint
    from salfmix_transforms.data import DatasetError

    args = None
    try:
        args = parse_args(argv)
        args.distributed, args.world_size, args.rank, args.local_rank = False, 1, 0, 0
        if args.evaluate:
            evaluate(args)
            return 0
        run = setup(args)
    except _NothingToTrain as e:
        _logger.warning("warning: %s", e)
        return 0
    except (UsageError, DatasetError, ValueError, TypeError) as e:
        return report_error(PROG, e)
    except FloatingPointError as e:  # --evaluate: a non-finite loss
        return report_error(PROG, e)
    except KeyboardInterrupt:  # Ctrl-C: one line, where to resume (the checkpoint being resumed, if any)
        if args is not None and args.evaluate:
            return report_interrupt(PROG, None, "no metrics written")
        return report_interrupt(PROG, resumable_checkpoint("", args.resume if args is not None else ""))
    try:
        train(run)
    except KeyboardInterrupt:
        return report_interrupt(PROG, resumable_checkpoint(run["output_dir"], args.resume))
    except OSError as e:  # no space left, a file-size limit: the checkpoints saved before are intact
        return report_write_error(PROG, e, resumable_checkpoint(run["output_dir"], args.resume))
    except FloatingPointError as e:
        return report_error(
            PROG, f"{one_line(e)}: training diverged (a lower --lr?); checkpoints in {run['output_dir']}"
        )
    except DatasetError as e:  # an image or mask read during training: the completed epochs are saved
        done = f"checkpoints of the completed epochs in {run['output_dir']}"
        return report_error(PROG, f"{one_line(e)} ({done})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
