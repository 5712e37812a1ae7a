#!/usr/bin/env python3
"""timm-style image classification training with SalfMix / HybridMix (Choi et al., Sensors 2021).

Built from timm's parts (``create_model``, ``create_dataset``, ``create_optimizer_v2``,
``create_scheduler_v2``, ``SoftTargetCrossEntropy``, ``CheckpointSaver``, ``ModelEmaV3``, ``NativeScaler``,
``update_summary``, ``init_distributed_device``, ``random_seed``); flags that timm's ``train.py`` also has
keep its names and meaning. The batch transform of the package runs on the training device, after the batch
has been moved there: ``x, y = transform(x, y, model=model)``; every transform gets ``num_classes``, so
targets are always soft and the loss is ``SoftTargetCrossEntropy``.

Examples::

    python train_timm.py                                   # SalfMix, embedded digits, small PreActResNet-18
    python train_timm.py --method baseline                 # the same without augmentation
    python train_timm.py --data-dir /work/shared/data/cifar10-5k --val-split test --method hybridmix-v3
    python train_timm.py --preset cifar --dataset cifar100 --data-dir ~/data --method salfmix   # paper setup
    torchrun --nproc_per_node 2 train_timm.py --method salfmix              # DDP (gloo on CPU)
    python train_timm.py --resume output/train/<run>/last.pth.tar            # continue a run
    python train_timm.py --evaluate output/train/<run>/model_best.pth.tar    # score a checkpoint

Outputs (rank 0 only) in ``--output/--experiment``: ``summary.csv`` (one row per epoch: train loss, epoch
time, augmentation time, eval loss, top-1/top-5 error, lr), ``last.pth.tar`` and ranked checkpoints, and
``results.json`` (best top-1 error and its epoch). Checkpoints are replaced atomically (timm's
``CheckpointSaver`` with ``os.replace`` after an fsync, see ``salfmix_transforms.checkpoints``) and listed
with their sha256 in ``checksums.sha256``; ``last``, ``checkpoint-N`` and ``model_best`` are separate copies.
Bad input (missing data, unknown model or method, a grid that does not fit the images, a checkpoint of another
model or of ``train_seg.py``, one with non-finite weights, a diverging loss, a full disk) ends with one line
on stderr and exit code 2; Ctrl-C with one line saying where to resume and exit code 130.

Resume: ``--resume`` takes a checkpoint or a run folder; a missing, unreadable or corrupt ``last.pth.tar``
falls back to the newest intact ``checkpoint-N`` (the log says which), any other corrupt file is refused. The
run continues with the checkpoint's ``--method`` and ``--opt`` (others are refused) up to ``--epochs`` in all;
a checkpoint that has done that many changes nothing (exit code 0, results.json kept). A changed ``--epochs``
(or ``--lr``, ``--sched``, ...) rebuilds the lr schedule for the new flags: a 10-epoch cosine resumed with
``--epochs 20`` continues on the 20-epoch cosine from epoch 10. The best epoch, its metric and
``model_best.pth.tar`` follow the resumed checkpoint, in its own folder (resuming an older ``checkpoint-N``)
as in a new ``--experiment``. Checkpoints hold a fingerprint of the training set
(``salfmix_transforms.fingerprint``): a resume on other classes or another number of files is refused, one
on other file names too with ``--saliency-source cached``, a warning otherwise.

Evaluate only: ``--evaluate CKPT`` scores a checkpoint (``--model-ema``: its EMA weights) on ``--val-split``
with the model, classes, data and batch size of its flags (unless given), prints the metrics on one line and
writes them as JSON next to it (``<name>-eval-<split>.json``) or to ``--output``; nothing is trained.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    DEFAULT_METHOD,
    METHOD_FLAGS,
    add_augmentation_flags,
    build_batch_transform,
    disable_mixing,
    flag_name,
    method_name,
    parse_augmentation_flags,
    unused_tuning_flags,
    uses_grid,
    uses_saliency,
)

__all__ = [
    "DEFAULTS",
    "DEFAULT_METHOD",
    "METHOD_FLAGS",
    "PRESETS",
    "UsageError",
    "build_batch_transform",
    "build_parser",
    "main",
    "parse_args",
]

_logger = logging.getLogger("train_timm")
PROG = "train_timm.py"
TASK = "classification"  # the checkpoints' "task" (checkpoints.TASK_SCRIPTS): train_seg.py's are refused

# What `python train_timm.py` without flags does: a run that finishes in a few minutes on a laptop CPU.
DEFAULTS: dict[str, Any] = dict(
    model="preactresnet18",
    width=0.25,  # preactresnet* only; other timm models get --width only when it is given
    epochs=10,
    batch_size=64,
    opt="momentum",  # timm's name for SGD with classical (non-Nesterov) momentum, as the paper
    lr=0.05,
    momentum=0.9,
    weight_decay=1e-4,
    sched="cosine",
    decay_milestones=[90, 180, 270],  # timm's default (used with --sched multistep)
    decay_rate=0.1,
)


# Paper setup (Choi et al. 2021, Section 5.1): PreActResNet, SGD lr 0.05 momentum 0.9 wd 1e-4, 300 epochs,
# lr x0.1 at epochs 150 and 225 on CIFAR and at 75, 150 and 225 on Tiny-ImageNet, batch 64 (CIFAR) / 128
# (Tiny-ImageNet), SalfMix grid 4 / 8, r = 0.3.
# timm's multistep scheduler applies milestone m from 0-based epoch m - 1 (its historical convention), so
# every paper epoch is stored plus one: milestones 151 / 226 give what PyTorch's MultiStepLR([150, 225])
# gives: 150 epochs at 0.05, 75 at 0.005, 75 at 0.0005 (0-based epochs 0-149, 150-224, 225-299).
def _timm_milestones(paper_epochs: tuple[int, ...]) -> list[int]:
    return [epoch + 1 for epoch in paper_epochs]


# The paper's training setup (Section 5.1), shared by both presets; they differ in batch size, grid and
# learning-rate milestones only.
_PAPER_SETUP: dict[str, Any] = dict(
    model="preactresnet18",
    width=1.0,
    opt="momentum",
    lr=0.05,
    momentum=0.9,
    weight_decay=1e-4,
    epochs=300,
    sched="multistep",
    decay_rate=0.1,
    salfmix_ratio=0.3,
)
PRESETS: dict[str, dict[str, Any]] = {
    "cifar": {
        **_PAPER_SETUP,
        "batch_size": 64,
        "salfmix_grid": 4,
        "decay_milestones": _timm_milestones((150, 225)),
    },
    "tinyimagenet": {
        **_PAPER_SETUP,
        "batch_size": 128,
        "salfmix_grid": 8,
        "decay_milestones": _timm_milestones((75, 150, 225)),
    },
}

# Where SalfMix's saliency comes from (--saliency-source); exact is the paper's.
SALIENCY_SOURCES = ("exact", "cached", "lowres")

_PREACT_MODELS = ("preactresnet18", "preactresnet50", "preactresnet101")


class CheckpointError(UsageError):
    """A checkpoint that cannot be resumed (missing, unreadable, or of another model)."""


class _NothingToTrain(Exception):
    """``--resume`` of a checkpoint that has done ``--epochs`` already: ``main`` says so and returns 0."""


# --- command line -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The parser, with :data:`DEFAULTS` (``--preset`` and ``--method`` change defaults, see parse_args)."""
    p = OneLineArgumentParser(
        prog=PROG,
        description="timm-style training with SalfMix / HybridMix batch transforms (Choi et al. 2021).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=None, help="data set directory (none: the embedded digits data set)")
    g.add_argument(
        "--dataset",
        default=None,
        help="digits | folder | cifar10 | cifar100 | tinyimagenet (timm aliases such as torch/cifar10 work); "
        "default: guessed from --data-dir",
    )
    g.add_argument("--train-split", default="train", help="training split (sub-folder for folder data sets)")
    g.add_argument(
        "--val-split", default="validation", help="validation split (val/valid/test... are searched)"
    )
    g.add_argument(
        "--num-classes", type=positive_int, default=None, help="classifier size (default: data set's)"
    )
    g.add_argument("--img-size", type=positive_int, default=None, help="image side (default: data set's)")
    g.add_argument("-j", "--workers", type=non_negative_int, default=2, help="data loader processes per rank")

    g = p.add_argument_group("model")
    g.add_argument(
        "--model", default=DEFAULTS["model"], help="timm model name (preactresnet18/50/101 included)"
    )
    g.add_argument(
        "--width",
        type=positive_float,
        default=None,
        help=f"width multiplier of preactresnet* (default {DEFAULTS['width']}; --preset: 1.0)",
    )
    g.add_argument("--drop", type=probability, default=0.0, help="dropout before the classifier")
    g.add_argument("--model-ema", action="store_true", help="keep an EMA of the weights (timm ModelEmaV3)")
    g.add_argument("--model-ema-decay", type=probability, default=0.9998, help="EMA decay")

    g = p.add_argument_group("optimisation")
    g.add_argument(
        "-b", "--batch-size", type=positive_int, default=DEFAULTS["batch_size"], help="batch per rank"
    )
    g.add_argument(
        "--epochs",
        type=positive_int,
        default=DEFAULTS["epochs"],
        help="epochs to train in all (with --resume: the total; a new length rebuilds the lr schedule, a "
        "checkpoint that has done them all changes nothing)",
    )
    g.add_argument(
        "--opt", default=DEFAULTS["opt"], help="timm optimizer (momentum = SGD, sgd = Nesterov SGD)"
    )
    g.add_argument("--lr", type=positive_float, default=DEFAULTS["lr"], help="learning rate")
    g.add_argument("--momentum", type=probability, default=DEFAULTS["momentum"], help="SGD momentum")
    g.add_argument(
        "--weight-decay", type=non_negative_float, default=DEFAULTS["weight_decay"], help="weight decay"
    )
    g.add_argument(
        "--sched", default=DEFAULTS["sched"], help="timm scheduler: cosine, step, multistep, ..., none"
    )
    g.add_argument(
        "--decay-milestones",
        type=non_negative_int,
        nargs="+",
        default=DEFAULTS["decay_milestones"],
        help="epochs of the lr decays (multistep)",
    )
    g.add_argument(
        "--decay-epochs", type=positive_float, default=90.0, help="epoch interval of lr decay (step)"
    )
    g.add_argument(
        "--decay-rate", type=non_negative_float, default=DEFAULTS["decay_rate"], help="lr decay factor"
    )
    g.add_argument("--warmup-epochs", type=non_negative_int, default=0, help="lr warm-up epochs")
    g.add_argument("--warmup-lr", type=non_negative_float, default=1e-5, help="lr at the start of warm-up")
    g.add_argument("--min-lr", type=non_negative_float, default=0.0, help="lower lr bound (cosine)")
    g.add_argument("--smoothing", type=probability, default=0.0, help="label smoothing")

    add_augmentation_flags(p, grid_help="pooling grid n (paper: 4 CIFAR, 8 Tiny)")

    g = p.add_argument_group("where the saliency comes from, paper presets")
    g.add_argument(
        "--saliency-source",
        default="exact",
        choices=SALIENCY_SOURCES,
        help="exact: the paper's extra saliency pass per step; cached: maps from the training step's own "
        "input gradient, one epoch late (SaliencyCache); lowres: the exact pass on the batch down-scaled "
        "by --saliency-scale",
    )
    g.add_argument(
        "--saliency-scale", type=probability, default=0.5, help="down-scaling of --saliency-source lowres"
    )
    g.add_argument(
        "--saliency-refresh",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="--saliency-source cached: maps older than K epochs get the exact pass (0: every written map)",
    )
    g.add_argument("--preset", default=None, choices=tuple(PRESETS), help="the paper's hyper-parameters")

    g = p.add_argument_group("runtime")
    g.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1"
    )
    g.add_argument(
        "--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 + GradScaler on CUDA)"
    )
    g.add_argument(
        "--amp-dtype", default=None, choices=("float16", "bfloat16"), help="override the AMP dtype"
    )
    g.add_argument(
        "--threads",
        type=non_negative_int,
        default=0,
        help="torch CPU threads per process (0: PyTorch's default, one per core or OMP_NUM_THREADS)",
    )
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    g.add_argument(
        "--torchcompile", nargs="?", const="inductor", default=None, help="torch.compile backend (inductor)"
    )
    g.add_argument("--seed", type=int, default=42, help="random seed (rank is added)")
    g.add_argument(
        "--output",
        default="",
        help="output root (default ./output/train); with --evaluate: the folder (or .json file) of the "
        "metrics",
    )
    g.add_argument("--experiment", default="", help="run folder name (default: date-model-method)")
    g.add_argument(
        "--resume",
        default="",
        help="checkpoint or run folder to continue (last.pth.tar; when it is missing or corrupt, the newest "
        "intact checkpoint-N); same --method and --opt, --epochs in all",
    )
    g.add_argument(
        "--evaluate",
        default="",
        metavar="CKPT",
        help="score checkpoint CKPT (with --model-ema its EMA weights) on --val-split, no training: the "
        "model, classes, data and batch size come from the checkpoint unless given; the metrics are printed "
        "on one line and written as JSON next to CKPT (<name>-eval-<split>.json) or to --output (a folder or "
        "a .json file), never to the run's results.json",
    )
    g.add_argument("--checkpoint-hist", type=positive_int, default=10, help="ranked checkpoints to keep")
    g.add_argument("--log-interval", type=positive_int, default=50, help="batches between log lines")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; ``--preset`` then ``--method`` set defaults that explicit flags override.

    Raises:
        UsageError: a flag is unknown or malformed.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    preset = parser.parse_args(argv).preset
    args = parse_augmentation_flags(parser, argv, PRESETS[preset] if preset else None)
    if args.width is None and args.model in _PREACT_MODELS:
        args.width = DEFAULTS["width"]
    if args.amp_dtype is not None and not args.amp:
        args.amp = True
    return args


def unused_flags(args: argparse.Namespace) -> list[str]:
    """The tuning flags given that nothing reads: the augmentation's (``flags.unused_tuning_flags``),
    ``--saliency-scale`` without ``--saliency-source lowres`` and ``--model-ema-decay`` without
    ``--model-ema``."""
    unused = unused_tuning_flags(args)
    if "saliency_scale" in args.given_flags and args.saliency_source != "lowres":
        unused.append("--saliency-scale")
    if "model_ema_decay" in args.given_flags and not args.model_ema:
        unused.append("--model-ema-decay")
    return unused


def check_saliency_source(args: argparse.Namespace) -> None:
    """``--saliency-source`` other than exact needs a method that takes the saliency.

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


class _TrainState:
    """What ``CheckpointSaver`` stores besides the optimizer: timm's task checkpoint hook (duck-typed).

    ``state_dict`` (the model), ``state_dict_ema`` and ``train_state``: scheduler state, every rank's RNG
    states (captured at the end of the epoch, so a resumed run draws what the uninterrupted run would have),
    the update counter, and the training and augmentation seconds so far (so that a resumed run's
    ``results.json`` reports the whole run, not only its last invocation).
    """

    def __init__(self, model: torch.nn.Module, model_ema: Any, lr_scheduler: Any) -> None:
        self.model = model
        self.model_ema = model_ema
        self.lr_scheduler = lr_scheduler
        self.rng_states: list[dict[str, Any]] = []
        self.num_updates = 0
        self.method = ""
        self.train_time_s = 0.0
        self.aug_time_s = 0.0
        self.saliency_cache: Any = None  # --saliency-source cached: saved with the checkpoints
        self.data_fingerprint: dict[str, Any] | None = (
            None  # fingerprint.dataset_fingerprint of the train set
        )

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn: Any = None) -> dict[str, Any]:
        from timm.utils import get_state_dict, unwrap_model

        unwrap_fn = unwrap_fn or unwrap_model
        if ema:
            return (
                {}
                if self.model_ema is None
                else {"state_dict_ema": get_state_dict(self.model_ema, unwrap_fn)}
            )
        return {
            "task": TASK,
            FINGERPRINT_KEY: self.data_fingerprint,
            "state_dict": get_state_dict(self.model, unwrap_fn),
            "train_state": {
                "scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
                "rng": self.rng_states,
                "num_updates": self.num_updates,
                "method": self.method,
                "train_time_s": self.train_time_s,
                "aug_time_s": self.aug_time_s,
                "saliency_cache": None if self.saliency_cache is None else self.saliency_cache.state_dict(),
            },
        }


# --- setup --------------------------------------------------------------------------------------------


@dataclass
class _Run:
    args: argparse.Namespace
    device: torch.device
    model: torch.nn.Module  # possibly DDP / compiled
    model_ema: Any
    train_loader: Any
    val_loader: Any
    train_sampler: Any
    data_order: DataOrder
    transform: Any
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    loss_scaler: Any
    amp_dtype: torch.dtype | None
    num_classes: int
    img_size: int
    num_epochs: int
    start_epoch: int
    output_dir: str
    saver: Any
    state: _TrainState
    num_params: int
    saliency_cache: Any = None  # --saliency-source cached
    extra: dict[str, Any] = field(default_factory=dict)


def _is_primary(args: argparse.Namespace) -> bool:
    return getattr(args, "rank", 0) == 0


def _resolve_amp(args: argparse.Namespace, device: torch.device) -> torch.dtype | None:
    if not args.amp:
        return None
    if args.amp_dtype is not None:
        dtype = getattr(torch, args.amp_dtype)
    else:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    if device.type == "cpu" and dtype == torch.float16:
        raise UsageError("--amp-dtype float16 needs CUDA; CPU autocast uses bfloat16")
    return dtype


def _create_model(args: argparse.Namespace, num_classes: int) -> torch.nn.Module:
    import timm

    import salfmix_transforms.models  # noqa: F401  (registers preactresnet18/50/101)

    if not timm.is_model(args.model):
        raise UsageError(
            f"unknown model {args.model!r} (see timm.list_models(); preactresnet18/50/101 are added)"
        )
    kwargs: dict[str, Any] = dict(num_classes=num_classes, drop_rate=args.drop)
    if args.width is not None:
        kwargs["width"] = args.width
    try:
        return timm.create_model(args.model, pretrained=False, **kwargs)
    except TypeError as e:
        if "width" in str(e):
            raise UsageError(f"model {args.model!r} takes no --width (only preactresnet* do)") from e
        raise


def _output_dir(args: argparse.Namespace) -> str:
    """The run folder, created (a resumed run without --output / --experiment continues in its own).

    Raises:
        UsageError: the folder cannot be created (a file in the way, no permission, ...).
    """
    from timm.utils import get_outdir

    if args.resume and not args.output and not args.experiment:
        return writable_folder(os.path.dirname(os.path.abspath(args.resume)))  # the run's own folder
    root = args.output or os.path.join(".", "output", "train")
    name = args.experiment or "-".join(
        [datetime.datetime.now().strftime("%Y%m%d-%H%M%S"), args.model, method_name(args)]
    )
    if args.resume and os.path.isdir(os.path.join(root, name)):
        return writable_folder(os.path.join(root, name))
    try:
        return writable_folder(get_outdir(root, name, inc=True))
    except OSError as e:
        raise UsageError(f"cannot create the run folder in --output {root!r}: {one_line(e)}") from e


def _load_resume_metadata(args: argparse.Namespace) -> dict[str, Any]:
    """The metadata of the checkpoint that ``--resume`` means (``checkpoints.load_resume_checkpoint``: a run
    folder, a damaged ``last.pth.tar``; a fallback is logged); ``args.resume`` becomes its path. The
    checkpoint must fit the flags.

    Raises:
        CheckpointError: no such checkpoint, unreadable, corrupt, or of another model, width or method.
    """
    from salfmix_transforms.checkpoints import load_resume_checkpoint

    try:
        args.resume, ckpt, note = load_resume_checkpoint(args.resume, task=TASK)
    except ValueError as e:  # CorruptCheckpointError included
        raise CheckpointError(one_line(e)) from e
    if note and _is_primary(args):
        _logger.warning("warning: %s", note)
    _check_model(args.resume, ckpt, args)
    _check_resume_flags(args.resume, ckpt, args)
    return ckpt


def _check_model(path: str, ckpt: dict[str, Any], args: argparse.Namespace) -> None:
    """Refuse checkpoint ``path`` (metadata ``ckpt``) of another ``--model`` or ``--width``.

    Raises:
        CheckpointError: naming the checkpoint and its model or width.
    """
    arch = ckpt.get("arch")
    if arch and arch != args.model:
        raise CheckpointError(f"checkpoint {path!r} is of model {arch!r}, not --model {args.model!r}")
    saved_width = getattr(ckpt.get("args"), "width", None)
    if saved_width is not None and args.width is not None and float(saved_width) != float(args.width):
        raise CheckpointError(f"checkpoint {path!r} has --width {saved_width}, not {args.width}")


def _check_resume_data(args: argparse.Namespace, ckpt: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    """The resumed run trains on the checkpoint's data set (``fingerprint.check_resume_data``): other
    classes or another number of images are refused, other file names too when the checkpoint holds a
    saliency cache (its maps belong to other images), a warning otherwise.

    Raises:
        DataChangedError: naming the checkpoint and what differs.
    """
    from salfmix_transforms.fingerprint import check_resume_data

    cached = args.saliency_source == "cached" and (ckpt.get("train_state") or {}).get("saliency_cache")
    per_file = "its cached saliency maps (--saliency-source cached)" if cached else None
    message = check_resume_data(args.resume, ckpt, fingerprint, per_file_state=per_file)
    if message and _is_primary(args):
        _logger.warning(message)


def _check_resume_flags(path: str, ckpt: dict[str, Any], args: argparse.Namespace) -> None:
    """A resumed run continues with the checkpoint's --method, --opt and --saliency-source (another one would
    be another experiment under the old run's name) up to --epochs in all. A checkpoint that has done --epochs
    already leaves nothing to train: the run folder is kept as it is (results.json included), exit code 0,
    so that re-running a finished command is harmless."""
    saved_args = ckpt.get("args")
    saved_method = (ckpt.get("train_state") or {}).get("method") or getattr(saved_args, "method", None)
    saved_source = getattr(saved_args, "saliency_source", "exact") if uses_saliency(args) else None
    for flag, saved, given in (
        ("method", saved_method, method_name(args)),
        ("opt", getattr(saved_args, "opt", None), args.opt),
        ("saliency-source", saved_source, args.saliency_source),
    ):
        if saved and saved != given:
            raise CheckpointError(
                f"checkpoint {path!r} was trained with --{flag} {saved}, not --{flag} {given}; resume with "
                f"--{flag} {saved}, or start a new run"
            )
    done = int(ckpt["epoch"]) + 1
    if args.epochs <= done:
        raise _NothingToTrain(
            f"nothing to train: checkpoint {path!r} has done {done} epoch(s) and --epochs {args.epochs} is "
            f"the total; its run folder is kept as it is (pass --epochs > {done} to train more)"
        )


# Flags that define the lr schedule: a resumed run with any of them changed gets a schedule rebuilt from them.
_SCHEDULE_FLAGS = (
    "sched",
    "epochs",
    "lr",
    "min_lr",
    "warmup_epochs",
    "warmup_lr",
    "decay_epochs",
    "decay_milestones",
    "decay_rate",
)


def _schedule_changes(saved_args: Any, args: argparse.Namespace) -> list[str]:
    """The lr-schedule flags that differ from the checkpoint's, as ``--epochs 10 -> 20``."""
    changes = []
    for name in _SCHEDULE_FLAGS:
        old, new = getattr(saved_args, name, None), getattr(args, name)
        if old is not None and (list(old) if isinstance(old, (list, tuple)) else old) != new:
            changes.append(f"{flag_name(name)} {old} -> {new}")
    return changes


def build_optimizer_and_scheduler(
    args: argparse.Namespace, model: torch.nn.Module, updates_per_epoch: int
) -> tuple[torch.optim.Optimizer, Any, int]:
    """timm's ``create_optimizer_v2`` and ``create_scheduler_v2`` from the flags: (optimizer, scheduler or
    ``None``, number of epochs including any cool-down). The scheduler steps once per epoch."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    optimizer = create_optimizer_v2(
        model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum
    )
    lr_scheduler, num_epochs = create_scheduler_v2(
        optimizer,
        sched="none" if args.sched in ("none", "") else args.sched,
        num_epochs=args.epochs,
        decay_epochs=args.decay_epochs,
        decay_milestones=args.decay_milestones,
        decay_rate=args.decay_rate,
        min_lr=args.min_lr,
        warmup_lr=args.warmup_lr,
        warmup_epochs=args.warmup_epochs,
        updates_per_epoch=updates_per_epoch,
    )
    return optimizer, lr_scheduler, num_epochs


def _check_device(name: str) -> None:
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"--device {name!r} is not a device: {one_line(e)}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} asked for, but CUDA is not available")


def _check_input_size(model: torch.nn.Module, name: str, img_size: int, device: torch.device) -> None:
    """One forward pass of a blank image, so that a model that cannot take the data's image size (a ViT made
    for 224x224, a network that pools small images to nothing) fails now, not after the first epoch."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, img_size, img_size, device=device))
    except Exception as e:  # AssertionError (timm's ViTs), RuntimeError (pooling below 1x1), ...
        raise UsageError(
            f"model {name!r} cannot take the data's {img_size}x{img_size} images ({one_line(e)}); "
            "pass an --img-size it takes, or another --model"
        ) from e
    finally:
        model.train(training)


def _saver(
    args: argparse.Namespace,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    model_ema: Any,
    loss_scaler: Any,
    state: _TrainState,
    resume_ckpt: dict[str, Any] | None,
) -> tuple[str, Any]:
    """The run folder (created, checked writable) and timm's checkpoint saver made atomic, with the resumed
    run's best restored; ``args.json`` written. Primary process only.

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
            resume_ckpt,
            model=model,
            optimizer=optimizer,
            model_ema=model_ema,
            amp_scaler=loss_scaler,
            decreasing=True,  # the metric is the top-1 error
            max_history=args.checkpoint_hist,
            task=state,
        )
    except OSError as e:
        raise UsageError(f"cannot write to the run folder {output_dir!r}: {one_line(e)}") from e
    return output_dir, saver


def _setup(args: argparse.Namespace) -> _Run:
    from timm.models import load_checkpoint, resume_checkpoint
    from timm.utils import ModelEmaV3, NativeScaler, init_distributed_device, random_seed

    from salfmix_transforms._validation import check_grid
    from salfmix_transforms.data import build_datasets, canonical_name, with_source_coordinates
    from salfmix_transforms.fingerprint import dataset_fingerprint
    from salfmix_transforms.saliency_cache import SaliencyCache

    _check_device(args.device)
    cpus = os.cpu_count() or 1
    if args.threads > cpus:
        raise UsageError(f"--threads {args.threads} is more than the {cpus} CPUs of this machine")
    device = init_distributed_device(args)
    # The checkpoint first: one of another script, model or method is refused before the data is read.
    resume_ckpt = _load_resume_metadata(args) if args.resume else None
    unused = unused_flags(args)
    if unused and _is_primary(args):
        _logger.warning(
            "warning: %s given, but the %s run does not use %s (ignored)%s",
            ", ".join(unused),
            method_name(args),
            "it" if len(unused) == 1 else "them",
            "; --model-ema-decay needs --model-ema" if "--model-ema-decay" in unused else "",
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    random_seed(args.seed, args.rank)
    amp_dtype = _resolve_amp(args, device)

    train_ds, val_ds, data_classes, img_size = build_datasets(
        args.dataset,
        args.data_dir,
        train_split=args.train_split,
        val_split=args.val_split,
        img_size=args.img_size,
    )
    fingerprint = dataset_fingerprint(train_ds, canonical_name(args.dataset, args.data_dir))
    if resume_ckpt is not None:
        _check_resume_data(args, resume_ckpt, fingerprint)
    num_classes = args.num_classes or data_classes
    if num_classes < data_classes:
        raise UsageError(f"--num-classes {num_classes} is smaller than the data set's {data_classes} classes")
    if uses_grid(args):
        try:
            check_grid(args.salfmix_grid, "grid", img_size, img_size)
        except ValueError as e:
            raise UsageError(
                f"--salfmix-grid {args.salfmix_grid} does not fit {img_size}x{img_size} images "
                f"(the pooling grid needs n <= {img_size}; paper: 4 at 32x32, 8 at 64x64)"
            ) from e
    check_saliency_source(args)
    transform = build_batch_transform(args, num_classes)
    saliency_cache = None
    if args.saliency_source == "cached":
        # Samples carry their index and source coordinates; the cache holds one map per training image.
        train_ds = with_source_coordinates(train_ds)
        saliency_cache = SaliencyCache(len(train_ds), device=device)
        transform.track_provenance = True

    model = _create_model(args, num_classes)
    num_params = sum(p.numel() for p in model.parameters())
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    _check_input_size(model, args.model, img_size, device)

    loss_scaler = NativeScaler(device=device.type) if amp_dtype == torch.float16 else None

    # Data loaders (torch's: timm's create_loader applies ImageNet-style transforms; ours are CIFAR-style).
    train_sampler = None
    val_sampler = None
    if args.distributed:
        train_sampler = torch.utils.data.DistributedSampler(
            train_ds, shuffle=True, seed=args.seed, drop_last=True
        )
        val_sampler = ShardSampler(len(val_ds), args.rank, args.world_size)
    per_rank = len(train_ds) // args.world_size
    if per_rank < args.batch_size:
        raise UsageError(
            f"--batch-size {args.batch_size} is larger than the {per_rank} training images per process"
        )
    # Workers are restarted every epoch (not persistent) and seeded from the main RNG, which checkpoints
    # restore: a resumed run draws the same crops, flips and orders as an uninterrupted one.
    loader_kw = dict(num_workers=args.workers, pin_memory=device.type == "cuda")
    data_order = DataOrder(args.seed, args.rank)  # paired seeds: every method sees the same batches
    train_loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=args.batch_size,
        shuffle=train_sampler is None,
        sampler=train_sampler,
        drop_last=True,
        generator=data_order.generator,
        **loader_kw,
    )
    val_loader = torch.utils.data.DataLoader(
        val_ds, batch_size=2 * args.batch_size, shuffle=False, sampler=val_sampler, **loader_kw
    )

    optimizer, lr_scheduler, num_epochs = build_optimizer_and_scheduler(args, model, len(train_loader))

    start_epoch = 0
    num_updates = 0
    train_time_so_far = aug_time_so_far = 0.0  # seconds of the epochs before start_epoch
    rng_states: list[dict[str, Any]] = []
    if resume_ckpt is not None:
        try:
            start_epoch = resume_checkpoint(
                model, args.resume, optimizer=optimizer, loss_scaler=loss_scaler, log_info=_is_primary(args)
            )
        except (RuntimeError, KeyError, ValueError) as e:  # state dict of another shape / optimizer
            raise CheckpointError(f"checkpoint {args.resume!r} does not fit this model: {one_line(e)}") from e
        train_state = resume_ckpt.get("train_state") or {}
        if lr_scheduler is not None and train_state.get("scheduler"):
            changed = _schedule_changes(resume_ckpt.get("args"), args)
            if not changed:
                lr_scheduler.load_state_dict(dict(train_state["scheduler"]))
            elif _is_primary(args):
                _logger.info("lr schedule rebuilt from the flags (%s)", ", ".join(changed))
        num_updates = int(train_state.get("num_updates", 0))
        # Checkpoints written before these were saved have no totals: their earlier epochs count 0 s.
        train_time_so_far = float(train_state.get("train_time_s", 0.0))
        aug_time_so_far = float(train_state.get("aug_time_s", 0.0))
        rng_states = list(train_state.get("rng") or [])
        start_epoch = int(start_epoch or 0)
        if saliency_cache is not None:
            _restore_saliency_cache(saliency_cache, train_state, args)

    model_ema = None
    if args.model_ema:
        model_ema = ModelEmaV3(model, decay=args.model_ema_decay)
        if resume_ckpt is not None:
            if "state_dict_ema" not in resume_ckpt:
                raise CheckpointError(f"checkpoint {args.resume!r} has no EMA weights; drop --model-ema")
            load_checkpoint(model_ema.module, args.resume, use_ema=True)

    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if args.torchcompile:
        try:
            model = torch.compile(model, backend=args.torchcompile)
        except Exception as e:  # torch's InvalidBackend, ...: raised here, before any file is written
            raise UsageError(f"--torchcompile {args.torchcompile}: {one_line(e)}") from e

    if lr_scheduler is not None and start_epoch > 0:
        lr_scheduler.step(start_epoch)

    output_dir = ""
    saver = None
    state = _TrainState(model, model_ema, lr_scheduler)
    state.num_updates = num_updates
    state.method = method_name(args)
    state.train_time_s, state.aug_time_s = train_time_so_far, aug_time_so_far
    state.saliency_cache = saliency_cache
    state.data_fingerprint = fingerprint
    error = None
    if _is_primary(args):
        try:
            output_dir, saver = _saver(args, model, optimizer, model_ema, loss_scaler, state, resume_ckpt)
        except UsageError as e:
            error = str(e)
    # Every rank stops with rank 0's error (no rank trains on into a collective the stopped one never joins).
    output_dir, error = broadcast_from_primary([output_dir, error], args.distributed)
    if error is not None:
        raise UsageError(error)
    if rng_states:
        if len(rng_states) == args.world_size:
            set_rng_state(rng_states[args.rank])
        else:
            _logger.warning("checkpoint RNG states are for %d processes; re-seeding", len(rng_states))
            random_seed(args.seed + start_epoch, args.rank)

    return _Run(
        args=args,
        device=device,
        model=model,
        model_ema=model_ema,
        train_loader=train_loader,
        val_loader=val_loader,
        train_sampler=train_sampler,
        data_order=data_order,
        transform=transform,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        loss_scaler=loss_scaler,
        amp_dtype=amp_dtype,
        num_classes=num_classes,
        img_size=img_size,
        num_epochs=num_epochs,
        start_epoch=start_epoch,
        output_dir=output_dir,
        saver=saver,
        state=state,
        num_params=num_params,
        saliency_cache=saliency_cache,
        extra=dict(
            train_size=len(train_ds),
            val_size=len(val_ds),
            dataset=canonical_name(args.dataset, args.data_dir),
        ),
    )


def _restore_saliency_cache(cache: Any, train_state: dict[str, Any], args: argparse.Namespace) -> None:
    """The cache of a resumed ``--saliency-source cached`` run; rebuilt in one epoch when absent."""
    saved = train_state.get("saliency_cache")
    if saved is None:
        if _is_primary(args):
            _logger.warning("warning: the checkpoint has no saliency cache; it is rebuilt in the next epoch")
        return
    try:
        cache.load_state_dict(saved)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {args.resume!r}: {one_line(e)}") from e


# --- training -----------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(run: _Run) -> contextlib.AbstractContextManager:
    if run.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=run.device.type, dtype=run.amp_dtype)


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and _is_primary(args) and sys.stdout.isatty()


def train_one_epoch(run: _Run, epoch: int, transform: Any, loss_fn: torch.nn.Module) -> dict[str, float]:
    from tqdm import tqdm

    from salfmix_transforms.saliency import saliency_from_gradient
    from salfmix_transforms.targets import to_soft_targets

    args, device, model = run.args, run.device, run.model
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    aug_time = 0.0
    epoch_start = time.perf_counter()
    num_batches = len(run.train_loader)
    bar = tqdm(
        run.train_loader,
        total=num_batches,
        desc=f"epoch {epoch} [{epoch + 1}/{run.num_epochs}]",
        disable=not _show_progress(args),
        leave=False,
        dynamic_ncols=True,
        file=sys.stdout,
    )
    cache = run.saliency_cache
    for batch_idx, batch in enumerate(bar):
        x = batch[0].to(device, non_blocking=True)
        y = batch[1].to(device, non_blocking=True)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

        _sync(device)
        t0 = time.perf_counter()
        if cache is not None:  # --saliency-source cached: samples are (image, target, index, coords)
            index, coords = batch[2].to(device), batch[3].to(device)
            maps = _cached_saliency(run, cache, x, y, index, coords, epoch)
            x, y = transform(x, y, saliency=maps)
            x.requires_grad_(True)  # the step's backward gives the input gradient too: eq. (2)
        elif transform is not None:
            x, y = transform(x, y, model=model)
        else:
            y = to_soft_targets(y, run.num_classes, args.smoothing)
        _sync(device)
        aug_time += time.perf_counter() - t0

        with _autocast(run):
            output = model(x)
            loss = loss_fn(output, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, batch {batch_idx}")
        run.optimizer.zero_grad(set_to_none=True)
        if run.loss_scaler is not None:
            run.loss_scaler(loss, run.optimizer, parameters=model.parameters())
        else:
            loss.backward()
            run.optimizer.step()
        if cache is not None:
            t0 = time.perf_counter()
            own = transform.provenance
            cache.write(
                index, coords, saliency_from_gradient(x.grad), epoch, own, distributed=args.distributed
            )
            aug_time += time.perf_counter() - t0
        run.state.num_updates += 1
        if run.model_ema is not None:
            run.model_ema.update(model, step=run.state.num_updates)
        if run.lr_scheduler is not None:
            run.lr_scheduler.step_update(num_updates=run.state.num_updates)

        loss_sum += loss.detach().double() * x.shape[0]
        seen += x.shape[0]
        if bar.disable:
            if _is_primary(args) and (batch_idx + 1) % args.log_interval == 0:
                _logger.info(
                    "  epoch %d batch [%d/%d] loss %.4f", epoch, batch_idx + 1, num_batches, loss.item()
                )
        elif batch_idx % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    _sync(device)
    total_loss, total_seen = all_reduce_sum([float(loss_sum), float(seen)], device, args.distributed)
    return {
        "loss": total_loss / max(1.0, total_seen),
        "epoch_time": time.perf_counter() - epoch_start,
        "aug_time": aug_time,
    }


def _cached_saliency(
    run: _Run,
    cache: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    index: torch.Tensor,
    coords: torch.Tensor,
    epoch: int,
) -> torch.Tensor:
    """The cached maps aligned with this batch's views (a never-written sample reads a constant map:
    random cells); with ``--saliency-refresh K``, maps older than K epochs are replaced by the exact pass."""
    from salfmix_transforms.saliency import gradient_saliency

    maps = cache.read(index, coords)
    if run.args.saliency_refresh is None or _salfmix_in_warmup(run.transform):
        return maps
    stale = cache.stale(index, epoch, run.args.saliency_refresh)
    if bool(stale.any()):
        mode = run.args.saliency_mode or "train"
        maps[stale] = gradient_saliency(run.model, x[stale], y[stale], mode=mode)
    return maps


def _salfmix_in_warmup(transform: Any) -> bool:
    """Whether the SalfMix step of ``transform`` (HybridMix's, or the transform itself) skips this call."""
    salfmix = getattr(transform, "salfmix", transform)
    return bool(salfmix.in_warmup)


@torch.no_grad()
def validate(run: _Run, model: torch.nn.Module) -> dict[str, float]:
    """Loss and top-1 / top-5 error (in %) over the whole validation set (summed over ranks)."""
    from timm.utils import accuracy

    args, device = run.args, run.device
    model.eval()
    k5 = min(5, run.num_classes)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct@1, correct@5, count
    for x, y in run.val_loader:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(run):
            output = model(x)
        output = output.float()
        acc1, acc5 = accuracy(output, y, topk=(1, k5))
        n = x.shape[0]
        sums += torch.stack(
            [
                F.cross_entropy(output, y, reduction="sum").double(),
                acc1.double() * n / 100,
                acc5.double() * n / 100,
                torch.tensor(float(n), dtype=torch.float64, device=device),
            ]
        )
    loss, c1, c5, count = all_reduce_sum(sums.tolist(), device, args.distributed)
    count = max(count, 1.0)
    return {"loss": loss / count, "top1_err": 100.0 * (1 - c1 / count), "top5_err": 100.0 * (1 - c5 / count)}


def _warn_if_warmup_covers_the_run(run: _Run) -> None:
    """Say so when the SalfMix-family warm-up (Algorithm 2) covers every epoch of the run: SalfMix would
    never run, yet the run is named after it."""
    transform = getattr(run.transform, "salfmix", run.transform)
    warmup = getattr(transform, "warmup_epochs", 0)
    if uses_grid(run.args) and warmup >= run.num_epochs and _is_primary(run.args):
        _logger.warning(
            "warning: the warm-up covers all %d epoch(s): SalfMix never runs (--salfmix-warmup-epochs %d; "
            "pass --epochs > %d or --salfmix-warmup-epochs 0)",
            run.num_epochs,
            warmup,
            warmup,
        )


def _train(run: _Run) -> dict[str, Any]:
    from timm.loss import SoftTargetCrossEntropy
    from timm.utils import distribute_bn, trim_summary, update_summary

    args = run.args
    primary = _is_primary(args)
    loss_fn = SoftTargetCrossEntropy().to(run.device)
    summary_path = os.path.join(run.output_dir, "summary.csv") if primary else ""
    _warn_if_warmup_covers_the_run(run)
    if primary:
        trim_summary(summary_path, run.start_epoch)
        _logger.info(
            "model %s (%.2f M parameters, width %s), %d classes, %dx%d images, %d train / %d val, "
            "augmentation %s: %r, device %s%s, %d CPU threads, output %s",
            args.model,
            run.num_params / 1e6,
            args.width,
            run.num_classes,
            run.img_size,
            run.img_size,
            run.extra["train_size"],
            run.extra["val_size"],
            method_name(args),
            run.transform,
            run.device,
            f" x{args.world_size} (DDP)" if args.distributed else "",
            torch.get_num_threads(),
            run.output_dir,
        )
    transform = run.transform
    last_eval: dict[str, float] = {}
    best_metric, best_epoch = (None, None)
    if run.saver is not None and run.saver.best_metric is not None:
        best_metric, best_epoch = run.saver.best_metric, run.saver.best_epoch
    for epoch in range(run.start_epoch, run.num_epochs):
        run.data_order.set_epoch(epoch)
        if run.train_sampler is not None:
            run.train_sampler.set_epoch(epoch)
        if transform is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
            transform = disable_mixing(transform)
        if transform is not None:
            transform.set_epoch(epoch)
        train_metrics = train_one_epoch(run, epoch, transform, loss_fn)
        if args.distributed:
            distribute_bn(run.model, args.world_size, reduce=True)
        eval_metrics = validate(run, without_ddp(run.model))
        if run.model_ema is not None:
            ema_metrics = validate(run, run.model_ema.module)
            eval_metrics.update({f"ema_{k}": v for k, v in ema_metrics.items()})
        lrs = [group["lr"] for group in run.optimizer.param_groups]
        lr = sum(lrs) / len(lrs)
        if run.lr_scheduler is not None:
            run.lr_scheduler.step(epoch + 1, eval_metrics["top1_err"])
        run.state.train_time_s += train_metrics["epoch_time"]
        run.state.aug_time_s += train_metrics["aug_time"]
        last_eval = eval_metrics
        run.state.rng_states = gather_rng_states(args.world_size, args.distributed)  # collective: every rank
        if primary:
            update_summary(epoch, train_metrics, eval_metrics, summary_path, lr=lr)
            best_metric, best_epoch = run.saver.save_checkpoint(epoch, metric=eval_metrics["top1_err"])
            _logger.info(
                "epoch %d [%d/%d]  train loss %.4f  eval loss %.4f  top-1 err %.2f%%  top-5 err %.2f%%  "
                "lr %.5f  time %.1fs (augmentation %.1fs)",
                epoch,
                epoch + 1,
                run.num_epochs,
                train_metrics["loss"],
                eval_metrics["loss"],
                eval_metrics["top1_err"],
                eval_metrics["top5_err"],
                lr,
                train_metrics["epoch_time"],
                train_metrics["aug_time"],
            )
    results = {
        "model": args.model,
        "width": args.width,
        "method": method_name(args),
        "saliency_source": args.saliency_source if uses_saliency(args) else None,
        "transform": repr(run.transform),
        "dataset": run.extra["dataset"],
        "data_dir": None if args.data_dir is None else os.path.abspath(args.data_dir),
        "num_classes": run.num_classes,
        "img_size": run.img_size,
        "num_params": run.num_params,
        "epochs": run.num_epochs,
        "start_epoch": run.start_epoch,
        "world_size": args.world_size,
        "best_top1_err": best_metric,
        "best_epoch": best_epoch,
        "final_top1_err": last_eval.get("top1_err"),
        "final_top5_err": last_eval.get("top5_err"),
        "train_time_s": run.state.train_time_s,  # whole run, resumed parts included
        "aug_time_s": run.state.aug_time_s,
        "output_dir": os.path.abspath(run.output_dir),
    }
    if primary:
        with open(os.path.join(run.output_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        _logger.info(
            "best top-1 error %s at epoch %s; results.json, summary.csv and checkpoints in %s",
            "n/a" if best_metric is None else f"{best_metric:.2f}%",
            best_epoch,
            os.path.abspath(run.output_dir),
        )
    return results


# --- evaluate only (--evaluate) -----------------------------------------------------------------------

# What --evaluate takes from the checkpoint's flags unless given: the model, its classes, the data and the
# loader (batch and workers: the run's own validation pass, batch for batch).
_EVALUATE_FLAGS = (
    "model",
    "width",
    "num_classes",
    "dataset",
    "data_dir",
    "train_split",
    "val_split",
    "img_size",
    "batch_size",
    "workers",
)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Score checkpoint ``args.evaluate`` on the validation split, as the training run's ``validate`` did
    (with ``--model-ema`` its EMA weights, when it has them); write the metrics as JSON (next to it, or to
    ``--output``) and log them on one line. Returns what was written.

    Raises:
        UsageError: bad flags, a checkpoint that cannot be read, is corrupt, of ``train_seg.py`` or does not
            fit the model; an unwritable metrics file.
        DatasetError: the data cannot be read, or is of other classes than the checkpoint's.
    """
    from types import SimpleNamespace

    from salfmix_transforms.checkpoints import (
        evaluation_path,
        load_evaluation_checkpoint,
        saved_flags,
        write_json,
    )
    from salfmix_transforms.data import build_datasets, canonical_name
    from salfmix_transforms.fingerprint import check_evaluation_data, dataset_fingerprint

    if args.resume:
        raise UsageError("--evaluate scores a checkpoint, --resume trains on: give one of them")
    _check_device(args.device)
    try:
        path, ckpt, state_dict, weights, note = load_evaluation_checkpoint(
            args.evaluate, TASK, args.model_ema
        )
    except ValueError as e:  # CorruptCheckpointError included
        raise CheckpointError(one_line(e)) from e
    if note:
        _logger.warning("warning: %s", note)
    for name, value in saved_flags(ckpt, _EVALUATE_FLAGS).items():
        if name not in args.given_flags:
            setattr(args, name, list(value) if isinstance(value, tuple) else value)
    _check_model(path, ckpt, args)
    out_path = evaluation_path(path, args.output, args.val_split, weights)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp_dtype = _resolve_amp(args, device)
    train_ds, val_ds, data_classes, img_size = build_datasets(
        args.dataset,
        args.data_dir,
        train_split=args.train_split,
        val_split=args.val_split,
        img_size=args.img_size,
    )
    dataset = canonical_name(args.dataset, args.data_dir)
    check_evaluation_data(path, ckpt, dataset_fingerprint(train_ds, dataset))
    num_classes = args.num_classes or data_classes
    model = _create_model(args, num_classes)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path!r} does not fit {args.model} with {num_classes} classes: {one_line(e)}"
        ) from e
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(
        val_ds,
        batch_size=2 * args.batch_size,
        shuffle=False,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
    )
    run = SimpleNamespace(
        args=args, device=device, val_loader=loader, num_classes=num_classes, amp_dtype=amp_dtype
    )
    metrics = validate(run, model)
    shown = (
        f"loss {metrics['loss']:.4f}  top-1 err {metrics['top1_err']:.2f}%  "
        f"top-5 err {metrics['top5_err']:.2f}%"
    )
    record = {
        "checkpoint": os.path.abspath(path),
        "epoch": int(ckpt["epoch"]),
        "weights": weights,
        "model": args.model,
        "width": args.width,
        "num_classes": num_classes,
        "dataset": dataset,
        "data_dir": None if args.data_dir is None else os.path.abspath(args.data_dir),
        "split": args.val_split,
        "val_size": len(val_ds),
        "img_size": img_size,
        "metrics": metrics,
    }
    writable_folder(os.path.dirname(out_path), "the folder of the metrics")
    try:
        write_json(out_path, record)
    except OSError as e:
        raise UsageError(f"cannot write {out_path!r}: {one_line(e)} (the metrics: {shown})") from e
    _logger.info(
        "evaluated %s (epoch %d, %s weights) on %s split %r (%d images): %s; metrics in %s",
        path,
        record["epoch"],
        weights,
        dataset,
        args.val_split,
        len(val_ds),
        shown,
        out_path,
    )
    return record


# --- entry point --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Train as the flags say; 0 on success, 2 (one line on stderr) on bad input."""
    try:
        args = parse_args(argv)
    except UsageError as e:
        return report_error(PROG, e)
    except KeyboardInterrupt:
        return report_interrupt(PROG, None)
    args.distributed, args.world_size, args.rank, args.local_rank = False, 1, 0, 0
    try:
        with logging_to_stdout(primary=int(os.environ.get("RANK", "0")) == 0):
            if args.evaluate:
                return _evaluate_and_report(args)
            return _setup_and_train(args)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _evaluate_and_report(args: argparse.Namespace) -> int:
    """:func:`evaluate`; 0, or 2 with one line on stderr."""
    from salfmix_transforms.data import DatasetError

    try:
        evaluate(args)
    except (UsageError, DatasetError, ValueError) as e:
        return report_error(PROG, e)
    except KeyboardInterrupt:
        return report_interrupt(PROG, None, "no metrics written")
    return 0


def _setup_and_train(args: argparse.Namespace) -> int:
    from salfmix_transforms.checkpoints import resumable_checkpoint
    from salfmix_transforms.data import DatasetError

    try:
        run = _setup(args)
    except _NothingToTrain as e:
        _logger.warning("warning: %s", e)
        return 0
    except (UsageError, DatasetError, ValueError) as e:
        return report_error(PROG, e)
    except KeyboardInterrupt:  # Ctrl-C: one line, where to resume (the checkpoint being resumed, if any)
        return report_interrupt(PROG, resumable_checkpoint("", args.resume))
    try:
        _train(run)
    except KeyboardInterrupt:
        return report_interrupt(PROG, resumable_checkpoint(run.output_dir, args.resume))
    except OSError as e:  # no space left, a file-size limit: the checkpoints saved before are intact
        return report_write_error(PROG, e, resumable_checkpoint(run.output_dir, args.resume))
    except FloatingPointError as e:  # a NaN / inf loss: the completed epochs are checkpointed already
        return report_error(
            PROG,
            f"{one_line(e)}: training diverged (a lower --lr?); the checkpoints of the completed epochs "
            f"are in {os.path.abspath(run.output_dir) if run.output_dir else 'the run folder'}",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
