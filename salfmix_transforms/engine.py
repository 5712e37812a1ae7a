"""The training engine that ``train_timm.py`` and ``train_seg.py`` share (issue 20, item 1).

A script describes what differs in a :class:`Task` (its parser additions, data sets, model, loss, training
step, validation metric and its direction); the engine owns the rest, once for both:

* the command line common to both (:func:`add_run_flags`) and the flags a ``--resume`` / ``--evaluate``
  takes from the checkpoint (:func:`parse_args`): the flags not given are the checkpoint's; another
  ``--method``, ``--opt`` or ``--saliency-source`` than the checkpoint's is refused with one line; a
  checkpoint that has done ``--epochs`` already leaves nothing to train (exit code 0);
* the run record (:class:`Run`), the run folder and its atomic saver (``checkpoints.open_run_folder``), the
  checkpoints' train state (:class:`TrainState`);
* timm's ``create_optimizer_v2`` / ``create_scheduler_v2`` (the same schedule flags for both, ``decay_*``
  included; a changed ``--epochs``, ``--lr``, ... on resume rebuilds the schedule), ``resume_checkpoint``;
* the distributed glue: ``init_distributed_device``, the DDP wrap, ``distribute_bn``, rank-0 outputs, every
  rank's RNG states, :class:`~salfmix_transforms.distributed.DataOrder`;
* the epoch loop (:func:`train`), ``summary.csv`` (timm's ``update_summary``), ``results.json``, checkpoints
  ranked by the task's metric (lower-is-better or higher-is-better), ``--evaluate`` (:func:`evaluate`);
* :func:`main`'s error handling: a :class:`~salfmix_transforms.cli.UsageError` (bad flags, data, checkpoint)
  is one line and exit code 2, Ctrl-C one line and 130, a checkpoint that cannot be written one line and 2.

Only the scripts and the training modules (``cli``, ``checkpoints``, ``distributed``, ``flags``,
``fingerprint``) sit around it: nothing else in the package imports the engine, and the engine imports no
script.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .cli import (
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
from .distributed import (
    DataOrder,
    ShardSampler,
    broadcast_from_primary,
    gather_rng_states,
    set_rng_state,
    without_ddp,
)
from .fingerprint import FINGERPRINT_KEY
from .flags import (
    augmentation_dests,
    disable_mixing,
    flag_name,
    method_name,
    parse_augmentation_flags,
    uses_grid,
    uses_saliency,
)

__all__ = [
    "RUN_DEFAULTS",
    "SCHEDULE_FLAGS",
    "CheckpointError",
    "NothingToTrain",
    "Run",
    "Task",
    "TrainState",
    "add_run_flags",
    "evaluate",
    "main",
    "parse_args",
    "setup",
    "train",
]

_logger = logging.getLogger("salfmix_transforms.engine")


class CheckpointError(UsageError):
    """A checkpoint that cannot be resumed or evaluated (missing, unreadable, or of another model)."""


class NothingToTrain(Exception):
    """``--resume`` of a checkpoint that has done ``--epochs`` already: :func:`main` says so and returns 0."""


# Flags that define the lr schedule: a resumed run with any of them changed gets a schedule rebuilt from them.
SCHEDULE_FLAGS = (
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

# The engine's flags that a --resume takes from the checkpoint unless given (a task adds its own).
RUN_FLAGS = (
    *SCHEDULE_FLAGS,
    "batch_size",
    "opt",
    "momentum",
    "weight_decay",
    "smoothing",
    "seed",
    "workers",
    *augmentation_dests(),
)


# The defaults of the engine's flags that both scripts share (a script's DEFAULTS add or override).
RUN_DEFAULTS: dict[str, Any] = dict(
    momentum=0.9,
    weight_decay=1e-4,
    sched="cosine",
    decay_milestones=[90, 180, 270],  # timm's default (used with --sched multistep)
    decay_rate=0.1,
)


class Task:
    """What a training script adds to the engine; a script subclasses it and overrides what it needs.

    Class attributes: ``prog`` (the script's name in messages), ``name`` (the checkpoints' ``"task"``,
    ``checkpoints.TASK_SCRIPTS``), ``output_root`` (the default ``--output``), ``metric`` (the key of the
    validation metrics that ranks the checkpoints and steps a plateau schedule), ``higher_is_better`` (its
    direction), ``metric_label`` and ``metric_scale`` (how it is shown: ``scale * value`` in %),
    ``final_metrics`` (the validation keys that ``results.json`` reports as ``final_<key>``), ``run_flags``
    (the flags a ``--resume`` takes from the checkpoint) and ``evaluate_flags`` (those an ``--evaluate``
    takes), ``val_batch_factor`` (the validation batch is ``-b`` times this).
    """

    prog = "train.py"
    name = ""
    output_root = os.path.join(".", "output", "train")
    metric = "loss"
    higher_is_better = False
    metric_label = "loss"
    metric_scale = 1.0
    final_metrics: tuple[str, ...] = ()
    run_flags: tuple[str, ...] = RUN_FLAGS
    evaluate_flags: tuple[str, ...] = ()
    val_batch_factor = 1

    # --- command line ---
    def build_parser(self) -> argparse.ArgumentParser:
        raise NotImplementedError

    def parse_defaults(self, first: argparse.Namespace) -> dict[str, Any]:
        """Defaults that a first parse selects (a preset); the checkpoint's flags and ``argv`` win."""
        return {}

    def finish_args(self, args: argparse.Namespace) -> None:
        """Defaults that depend on other flags, and checks of the flags together (raises UsageError)."""

    def check_checkpoint(self, path: str, ckpt: dict[str, Any], args: argparse.Namespace) -> None:
        """Refuse a checkpoint of another model configuration (raises :class:`CheckpointError`)."""

    def unused_flags(self, args: argparse.Namespace) -> list[str]:
        from .flags import unused_tuning_flags

        return unused_tuning_flags(args)

    # --- data and model ---
    def dataset_name(self, args: argparse.Namespace) -> str:
        return str(args.dataset)

    def datasets(self, run: Run) -> tuple[Any, Any, Any]:
        """``(train set, validation set, classes)``: the class names, or their number."""
        raise NotImplementedError

    def per_file_state(self, args: argparse.Namespace, ckpt: dict[str, Any]) -> str | None:
        """What of the checkpoint belongs to the training files by name (``check_resume_data``)."""
        return None

    def create_model(self, run: Run) -> torch.nn.Module:
        raise NotImplementedError

    def build(self, run: Run) -> None:
        """The model (``run.model``, on ``run.device``), the batch transform, the loss, what else the step
        needs; may replace ``run.train_ds``. Called after the data sets, before the loaders."""
        raise NotImplementedError

    def finish_model(self, run: Run, ckpt: dict[str, Any] | None) -> None:
        """After the resumed weights are loaded, before the DDP wrap (an EMA, a cache's state)."""

    # --- training ---
    def train_one_epoch(self, run: Run, epoch: int) -> dict[str, float]:
        """``{"loss", "epoch_time", "aug_time"}`` (the loss averaged over every rank's samples)."""
        raise NotImplementedError

    def validate(self, run: Run, model: torch.nn.Module, epoch: int) -> dict[str, float]:
        """``{"loss", <metric>, ...}`` over the whole validation set (summed over ranks)."""
        raise NotImplementedError

    def show_metrics(self, metrics: dict[str, float]) -> str:
        return ""

    def describe(self, run: Run) -> str:
        """The first log line of a run: model, data, augmentation."""
        return ""

    def results(self, run: Run) -> dict[str, Any]:
        """What ``results.json`` holds besides the engine's keys."""
        return {}

    def evaluation_record(self, run: Run) -> dict[str, Any]:
        """What an ``--evaluate`` record holds besides the engine's keys."""
        return {}


@dataclass
class Run:
    """Everything a run holds, from :func:`setup` to the end of :func:`train` (one record, both scripts)."""

    args: argparse.Namespace
    task: Task = field(default_factory=Task)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    model: Any = None  # possibly DDP / compiled
    model_ema: Any = None
    transform: Any = None
    loss_fn: Any = None
    train_ds: Any = None
    val_ds: Any = None
    train_loader: Any = None
    val_loader: Any = None
    train_sampler: Any = None
    data_order: DataOrder | None = None
    optimizer: Any = None
    lr_scheduler: Any = None
    loss_scaler: Any = None
    amp_dtype: torch.dtype | None = None
    num_classes: int = 0
    classes: list[str] | None = None
    dataset: str = ""
    num_params: int = 0
    num_epochs: int = 0
    start_epoch: int = 0
    output_dir: str = ""
    saver: Any = None
    state: TrainState | None = None
    saliency_cache: Any = None  # --saliency-source cached
    extra: dict[str, Any] = field(default_factory=dict)


class TrainState:
    """What ``CheckpointSaver`` stores besides the optimizer: timm's task checkpoint hook (duck-typed).

    ``state_dict`` (the model), ``state_dict_ema`` and ``train_state``: scheduler state, every rank's RNG
    states (captured at the end of the epoch, so a resumed run draws what the uninterrupted run would have),
    the update counter, the method, the training and augmentation seconds so far (so that a resumed run's
    ``results.json`` reports the whole run), and a saliency cache when there is one.
    """

    def __init__(self, task: str, model: torch.nn.Module, model_ema: Any, lr_scheduler: Any) -> None:
        self.task = task
        self.model = model
        self.model_ema = model_ema
        self.lr_scheduler = lr_scheduler
        self.rng_states: list[dict[str, Any]] = []
        self.num_updates = 0
        self.method = ""
        self.train_time_s = 0.0
        self.aug_time_s = 0.0
        self.saliency_cache: Any = None
        self.data_fingerprint: dict[str, Any] | None = None  # fingerprint.dataset_fingerprint

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
            "task": self.task,
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


def is_primary(args: argparse.Namespace) -> bool:
    return getattr(args, "rank", 0) == 0


# --- command line ---------------------------------------------------------------------------------------


def add_run_flags(parser: argparse.ArgumentParser, defaults: dict[str, Any], output_root: str) -> None:
    """The flags of both scripts: optimisation, lr schedule and runtime, with the script's ``defaults``
    (keys: ``epochs``, ``batch_size``, ``opt``, ``lr``, ``momentum``, ``weight_decay``, ``sched``,
    ``decay_milestones``, ``decay_rate``, ``workers``, ``checkpoint_hist``; :data:`RUN_DEFAULTS` fill those
    not given)."""
    defaults = {**RUN_DEFAULTS, **defaults}
    g = parser.add_argument_group("optimisation")
    g.add_argument(
        "-b", "--batch-size", type=positive_int, default=defaults["batch_size"], help="batch per rank"
    )
    g.add_argument(
        "--epochs",
        type=positive_int,
        default=defaults["epochs"],
        help="epochs to train in all (with --resume: the total; a new length rebuilds the lr schedule, a "
        "checkpoint that has done them all changes nothing)",
    )
    g.add_argument(
        "--opt", default=defaults["opt"], help="timm optimizer (momentum = SGD, sgd = Nesterov SGD)"
    )
    g.add_argument("--lr", type=positive_float, default=defaults["lr"], help="learning rate")
    g.add_argument("--momentum", type=probability, default=defaults["momentum"], help="SGD momentum")
    g.add_argument(
        "--weight-decay", type=non_negative_float, default=defaults["weight_decay"], help="weight decay"
    )
    g.add_argument(
        "--sched", default=defaults["sched"], help="timm scheduler: cosine, step, multistep, ..., none"
    )
    g.add_argument(
        "--decay-milestones",
        type=non_negative_int,
        nargs="+",
        default=defaults["decay_milestones"],
        help="epochs of the lr decays (multistep)",
    )
    g.add_argument(
        "--decay-epochs", type=positive_float, default=90.0, help="epoch interval of lr decay (step)"
    )
    g.add_argument(
        "--decay-rate", type=non_negative_float, default=defaults["decay_rate"], help="lr decay factor"
    )
    g.add_argument("--warmup-epochs", type=non_negative_int, default=0, help="lr warm-up epochs")
    g.add_argument("--warmup-lr", type=non_negative_float, default=1e-5, help="lr at the start of warm-up")
    g.add_argument("--min-lr", type=non_negative_float, default=0.0, help="lower lr bound (cosine)")
    g.add_argument("--smoothing", type=probability, default=0.0, help="label smoothing")

    g = parser.add_argument_group("runtime")
    g.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1"
    )
    g.add_argument(
        "-j",
        "--workers",
        type=non_negative_int,
        default=defaults["workers"],
        help="data loader processes per rank",
    )
    g.add_argument(
        "--threads",
        type=non_negative_int,
        default=0,
        help="torch CPU threads per process (0: PyTorch's default, one per core or OMP_NUM_THREADS)",
    )
    g.add_argument("--seed", type=int, default=42, help="random seed (rank is added)")
    g.add_argument(
        "--output",
        default="",
        help=f"output root (default {output_root}); with --evaluate: the folder (or .json file) of metrics",
    )
    g.add_argument("--experiment", default="", help="run folder name (default: date-model-method)")
    g.add_argument(
        "--resume",
        default="",
        help="checkpoint or run folder to continue (last.pth.tar; when it is missing or corrupt, the newest "
        "intact checkpoint-N): the flags not given are the checkpoint's; another --method, --opt or "
        "--saliency-source is refused; --epochs is the total",
    )
    g.add_argument(
        "--evaluate",
        default="",
        metavar="CKPT",
        help="score checkpoint CKPT on --val-split, no training: the model, classes, data and batch size "
        "come from the checkpoint unless given; the metrics are printed on one line and written as JSON "
        "next to CKPT (<name>-eval-<split>.json) or to --output (a folder or a .json file), never to the "
        "run's results.json",
    )
    g.add_argument(
        "--checkpoint-hist",
        type=positive_int,
        default=defaults["checkpoint_hist"],
        help="ranked checkpoints to keep",
    )
    g.add_argument("--log-interval", type=positive_int, default=50, help="batches between log lines")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


@dataclass
class Evaluation:
    """What ``--evaluate`` scores: the checkpoint file, its metadata, weights, ``"model"`` or ``"ema"``."""

    path: str
    ckpt: dict[str, Any]
    state_dict: dict[str, Any]
    weights: str


def _note(note: str | None) -> None:
    if note and int(os.environ.get("RANK", "0")) == 0:
        _logger.warning("warning: %s", note)


def load_resume(task: Task, path: str) -> tuple[str, dict[str, Any]]:
    """The checkpoint that ``--resume path`` means (``checkpoints.load_resume_checkpoint``: a run folder, a
    damaged ``last.pth.tar``; a fallback is logged) and its metadata.

    Raises:
        CheckpointError: no such checkpoint, unreadable, corrupt, or of the other script.
    """
    from .checkpoints import load_resume_checkpoint

    try:
        path, ckpt, note = load_resume_checkpoint(path, task=task.name)
    except ValueError as e:  # CorruptCheckpointError included
        raise CheckpointError(one_line(e)) from e
    _note(note)
    return path, ckpt


def _load_evaluation(task: Task, path: str, ema: bool) -> Evaluation:
    from .checkpoints import load_evaluation_checkpoint

    try:
        path, ckpt, state_dict, weights, note = load_evaluation_checkpoint(path, task.name, ema)
    except ValueError as e:  # CorruptCheckpointError included
        raise CheckpointError(one_line(e)) from e
    _note(note)
    return Evaluation(path, ckpt, state_dict, weights)


def _trained_method(ckpt: dict[str, Any]) -> str | None:
    return (ckpt.get("train_state") or {}).get("method") or getattr(ckpt.get("args"), "method", None)


def _refuse(path: str, flag: str, saved: Any, given: Any) -> None:
    if saved and saved != given:
        raise CheckpointError(
            f"checkpoint {path!r} was trained with --{flag} {saved}, not --{flag} {given}; resume with "
            f"--{flag} {saved}, or start a new run"
        )


def check_resume_flags(path: str, ckpt: dict[str, Any], args: argparse.Namespace) -> None:
    """A resumed run continues with the checkpoint's --method, --opt and --saliency-source (another one would
    be another experiment under the old run's name) up to --epochs in all. A checkpoint that has done --epochs
    already leaves nothing to train: the run folder is kept as it is (results.json included), exit code 0,
    so that re-running a finished command is harmless.

    Raises:
        CheckpointError: another method, optimizer or saliency source.
        NothingToTrain: the checkpoint has done ``--epochs``.
    """
    saved_args = ckpt.get("args")
    _refuse(path, "method", _trained_method(ckpt), method_name(args))
    _refuse(path, "opt", getattr(saved_args, "opt", None), args.opt)
    if hasattr(args, "saliency_source") and uses_saliency(args):
        _refuse(
            path, "saliency-source", getattr(saved_args, "saliency_source", "exact"), args.saliency_source
        )
    done = int(ckpt["epoch"]) + 1
    if args.epochs <= done:
        raise NothingToTrain(
            f"nothing to train: checkpoint {path!r} has done {done} epoch(s) and --epochs {args.epochs} is "
            f"the total; its run folder is kept as it is (pass --epochs > {done} to train more)"
        )


def _check_arch(path: str, ckpt: dict[str, Any], args: argparse.Namespace) -> None:
    arch = ckpt.get("arch")
    if arch and arch != args.model:
        raise CheckpointError(f"checkpoint {path!r} is of model {arch!r}, not --model {args.model!r}")


def parse_args(
    task: Task, argv: Sequence[str] | None = None
) -> tuple[argparse.Namespace, dict[str, Any] | None, Evaluation | None]:
    """Parse ``argv`` for ``task``: ``(args, the --resume checkpoint's metadata or None, the --evaluate
    checkpoint or None)``. Defaults, weakest first: the parser's, ``--method``'s flags, the task's
    (``parse_defaults``: a preset), the checkpoint's flags (``task.run_flags`` on resume,
    ``task.evaluate_flags`` on evaluate); flags written in ``argv`` win.

    Raises:
        UsageError: a flag is unknown or malformed, or the checkpoint cannot be resumed or evaluated
            (:class:`CheckpointError`).
        NothingToTrain: the resumed checkpoint has done ``--epochs``.
    """
    from .checkpoints import saved_flags

    parser = task.build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    first = parser.parse_args(argv)
    if first.evaluate and first.resume:
        raise UsageError("--evaluate scores a checkpoint, --resume trains on: give one of them")
    defaults = dict(task.parse_defaults(first))
    ckpt = evaluation = None
    if first.resume:
        path, ckpt = load_resume(task, first.resume)
        if first.method is not None:  # named as given, before the checkpoint's flags join it
            _refuse(path, "method", _trained_method(ckpt), first.method)
        saved = saved_flags(ckpt, task.run_flags)
    elif first.evaluate:
        evaluation = _load_evaluation(task, first.evaluate, bool(getattr(first, "model_ema", False)))
        path, saved = evaluation.path, saved_flags(evaluation.ckpt, task.evaluate_flags)
    else:
        saved = {}
    defaults.update({k: list(v) if isinstance(v, tuple) else v for k, v in saved.items()})
    args = parse_augmentation_flags(parser, argv, defaults)
    task.finish_args(args)
    if ckpt is not None:
        args.resume = path
        _check_arch(path, ckpt, args)
        task.check_checkpoint(path, ckpt, args)
        check_resume_flags(path, ckpt, args)
    elif evaluation is not None:
        args.evaluate = path
        _check_arch(path, evaluation.ckpt, args)
        task.check_checkpoint(path, evaluation.ckpt, args)
    return args, ckpt, evaluation


# --- setup ----------------------------------------------------------------------------------------------


def check_device(name: str) -> torch.device:
    """``--device``, checked (a malformed name, CUDA asked for where there is none: :class:`UsageError`)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"--device {name!r} is not a device: {one_line(e)}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} asked for, but CUDA is not available")
    return device


def resolve_amp(args: argparse.Namespace, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` / ``--amp-dtype`` (``None``: full precision)."""
    if not getattr(args, "amp", False):
        return None
    if args.amp_dtype is not None:
        dtype = getattr(torch, args.amp_dtype)
    else:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    if device.type == "cpu" and dtype == torch.float16:
        raise UsageError("--amp-dtype float16 needs CUDA; CPU autocast uses bfloat16")
    return dtype


def autocast(run: Run) -> contextlib.AbstractContextManager:
    if run.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=run.device.type, dtype=run.amp_dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def show_progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and is_primary(args) and sys.stdout.isatty()


def _set_threads(args: argparse.Namespace) -> None:
    cpus = os.cpu_count() or 1
    if args.threads > cpus:
        raise UsageError(f"--threads {args.threads} is more than the {cpus} CPUs of this machine")
    if args.threads:
        torch.set_num_threads(args.threads)


def _load_data(task: Task, run: Run) -> Any:
    """The data sets into ``run``, their classes checked against ``--num-classes``; returns the training
    set's fingerprint."""
    from .fingerprint import dataset_fingerprint

    run.train_ds, run.val_ds, classes = task.datasets(run)
    run.dataset = task.dataset_name(run.args)
    data_classes = classes if isinstance(classes, int) else len(classes)
    run.classes = None if isinstance(classes, int) else list(classes)
    run.num_classes = run.args.num_classes or data_classes
    if run.num_classes < data_classes:
        raise UsageError(
            f"--num-classes {run.num_classes} is smaller than the data set's {data_classes} classes"
        )
    return dataset_fingerprint(run.train_ds, run.dataset)


def build_optimizer_and_scheduler(
    args: argparse.Namespace, model: torch.nn.Module, updates_per_epoch: int
) -> tuple[torch.optim.Optimizer, Any, int]:
    """timm's ``create_optimizer_v2`` and ``create_scheduler_v2`` from the flags: (optimizer, scheduler or
    ``None``, number of epochs including any cool-down). The scheduler steps once per epoch."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    try:
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
    except (AssertionError, ValueError, KeyError) as e:
        raise UsageError(f"--opt {args.opt} / --sched {args.sched}: {one_line(e)}") from e
    return optimizer, lr_scheduler, num_epochs


def _schedule_changes(saved_args: Any, args: argparse.Namespace) -> list[str]:
    """The lr-schedule flags that differ from the checkpoint's, as ``--epochs 10 -> 20``."""
    changes = []
    for name in SCHEDULE_FLAGS:
        old, new = getattr(saved_args, name, None), getattr(args, name)
        if old is not None and (list(old) if isinstance(old, (list, tuple)) else old) != new:
            changes.append(f"{flag_name(name)} {old} -> {new}")
    return changes


def _loaders(task: Task, run: Run) -> None:
    """The train loader (shuffled; under DDP timm's usual ``DistributedSampler`` with ``drop_last``), the val
    loader (under DDP a :class:`ShardSampler`: no padding, every sample counted once), the train sampler.
    Workers are restarted every epoch (not persistent) and seeded from the main RNG, which checkpoints
    restore: a resumed run draws the same crops, flips and orders as an uninterrupted one."""
    args = run.args
    per_rank = len(run.train_ds) // args.world_size
    if per_rank < args.batch_size:
        raise UsageError(
            f"--batch-size {args.batch_size} is larger than the {per_rank} training images per process"
        )
    val_sampler = None
    if args.distributed:
        run.train_sampler = torch.utils.data.DistributedSampler(
            run.train_ds, shuffle=True, seed=args.seed, drop_last=True
        )
        val_sampler = ShardSampler(len(run.val_ds), args.rank, args.world_size)
    loader_kw = dict(num_workers=args.workers, pin_memory=run.device.type == "cuda")
    run.data_order = DataOrder(args.seed, args.rank)  # paired seeds: every method sees the same batches
    run.train_loader = torch.utils.data.DataLoader(
        run.train_ds,
        batch_size=args.batch_size,
        shuffle=run.train_sampler is None,
        sampler=run.train_sampler,
        drop_last=True,
        generator=run.data_order.generator,
        **loader_kw,
    )
    run.val_loader = torch.utils.data.DataLoader(
        run.val_ds,
        batch_size=task.val_batch_factor * args.batch_size,
        shuffle=False,
        sampler=val_sampler,
        **loader_kw,
    )


def _resume(run: Run, ckpt: dict[str, Any]) -> list[Any] | Any:
    """Load the ``--resume`` checkpoint into model, optimizer, schedule and timers; returns its RNG states."""
    from timm.models import resume_checkpoint

    args, state = run.args, run.state
    try:
        start_epoch = resume_checkpoint(
            run.model,
            args.resume,
            optimizer=run.optimizer,
            loss_scaler=run.loss_scaler,
            log_info=is_primary(args),
        )
    except (RuntimeError, KeyError, ValueError) as e:  # state dict of another shape / optimizer
        raise CheckpointError(f"checkpoint {args.resume!r} does not fit this model: {one_line(e)}") from e
    run.start_epoch = int(start_epoch or 0)
    train_state = ckpt.get("train_state") or {}
    if run.lr_scheduler is not None and train_state.get("scheduler"):
        changed = _schedule_changes(ckpt.get("args"), args)
        if not changed:
            run.lr_scheduler.load_state_dict(dict(train_state["scheduler"]))
        elif is_primary(args):
            _logger.info("lr schedule rebuilt from the flags (%s)", ", ".join(changed))
    state.num_updates = int(train_state.get("num_updates", run.start_epoch * len(run.train_loader)))
    # Checkpoints written before these were saved have no totals: their earlier epochs count 0 s.
    state.train_time_s = float(train_state.get("train_time_s", 0.0))
    state.aug_time_s = float(train_state.get("aug_time_s", 0.0))
    return train_state.get("rng")


def _restore_rng(args: argparse.Namespace, rng: Any, start_epoch: int) -> None:
    from timm.utils import random_seed

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


def output_dir(task: Task, args: argparse.Namespace) -> str:
    """The run folder, created and checked writable (a resumed run without --output / --experiment
    continues in its own; a new run's existing folder gets a suffix, as timm's ``get_outdir``).

    Raises:
        UsageError: the folder cannot be created (a file in the way, no permission, ...).
    """
    from timm.utils import get_outdir

    if args.resume and not args.output and not args.experiment:
        return writable_folder(os.path.dirname(os.path.abspath(args.resume)))  # the run's own folder
    root = args.output or task.output_root
    name = args.experiment or "-".join(
        [datetime.datetime.now().strftime("%Y%m%d-%H%M%S"), args.model, method_name(args)]
    )
    if args.resume and os.path.isdir(os.path.join(root, name)):
        return writable_folder(os.path.join(root, name))
    try:
        return writable_folder(get_outdir(root, name, inc=True))
    except OSError as e:
        raise UsageError(f"cannot create the run folder in --output {root!r}: {one_line(e)}") from e


def _open_saver(task: Task, run: Run, ckpt: dict[str, Any] | None) -> None:
    """The run folder and its atomic checkpoint saver (``checkpoints.open_run_folder``: the resumed run's best
    restored, ``args.json`` written) on the primary process; under DDP every rank learns the run folder, or
    the error that stops the run (so that no rank trains on into a collective the stopped one never joins)."""
    from .checkpoints import open_run_folder

    args, folder, error = run.args, "", None
    if is_primary(args):
        try:
            folder = output_dir(task, args)
            try:
                run.saver = open_run_folder(
                    folder,
                    plain_flags(args),
                    args.resume,
                    ckpt,
                    model=run.model,
                    optimizer=run.optimizer,
                    model_ema=run.model_ema,
                    amp_scaler=run.loss_scaler,
                    decreasing=not task.higher_is_better,
                    max_history=args.checkpoint_hist,
                    task=run.state,
                )
            except OSError as e:
                raise UsageError(f"cannot write to the run folder {folder!r}: {one_line(e)}") from e
        except UsageError as e:
            error = str(e)
    run.output_dir, error = broadcast_from_primary([folder, error], args.distributed)
    if error is not None:
        raise UsageError(error)


def setup(task: Task, args: argparse.Namespace, ckpt: dict[str, Any] | None = None) -> Run:
    """Device and process group, data, model, transform, loaders, optimizer, schedule, resume, DDP, saver.

    ``ckpt``: the ``--resume`` checkpoint's metadata (:func:`parse_args`); loaded again when not given.
    """
    from timm.utils import init_distributed_device, random_seed

    from .fingerprint import check_resume_data

    check_device(args.device)
    for name, value in (("distributed", False), ("world_size", 1), ("rank", 0), ("local_rank", 0)):
        if not hasattr(args, name):
            setattr(args, name, value)
    _set_threads(args)
    device = init_distributed_device(args)
    if args.resume and ckpt is None:
        args.resume, ckpt = load_resume(task, args.resume)
    unused = task.unused_flags(args)
    if unused and is_primary(args):
        _logger.warning(
            "warning: %s given, but the %s run does not use %s (ignored)%s",
            ", ".join(unused),
            method_name(args),
            "it" if len(unused) == 1 else "them",
            "; --model-ema-decay needs --model-ema" if "--model-ema-decay" in unused else "",
        )
    random_seed(args.seed, args.rank)
    run = Run(args=args, task=task, device=device, amp_dtype=resolve_amp(args, device))
    fingerprint = _load_data(task, run)
    if ckpt is not None:
        message = check_resume_data(
            args.resume, ckpt, fingerprint, per_file_state=task.per_file_state(args, ckpt)
        )
        if message and is_primary(args):
            _logger.warning(message)
    task.build(run)
    run.num_params = sum(p.numel() for p in run.model.parameters())
    _loaders(task, run)
    run.optimizer, run.lr_scheduler, run.num_epochs = build_optimizer_and_scheduler(
        args, run.model, len(run.train_loader)
    )
    run.state = TrainState(task.name, run.model, None, run.lr_scheduler)
    run.state.method, run.state.data_fingerprint = method_name(args), fingerprint
    rng = _resume(run, ckpt) if ckpt is not None else None
    task.finish_model(run, ckpt)
    run.state.model_ema, run.state.saliency_cache = run.model_ema, run.saliency_cache
    if args.distributed:
        run.model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if getattr(args, "torchcompile", None):
        try:
            run.model = torch.compile(run.model, backend=args.torchcompile)
        except Exception as e:  # torch's InvalidBackend, ...: raised here, before any file is written
            raise UsageError(f"--torchcompile {args.torchcompile}: {one_line(e)}") from e
    if run.lr_scheduler is not None and run.start_epoch > 0:
        run.lr_scheduler.step(run.start_epoch)
    _open_saver(task, run, ckpt)
    _restore_rng(args, rng, run.start_epoch)
    return run


# --- training -------------------------------------------------------------------------------------------


def _warn_if_warmup_covers_the_run(run: Run) -> None:
    """Say so when the SalfMix-family warm-up (Algorithm 2) covers every epoch of the run: SalfMix would
    never run, yet the run is named after it."""
    transform = getattr(run.transform, "salfmix", run.transform)
    warmup = getattr(transform, "warmup_epochs", 0)
    if uses_grid(run.args) and warmup >= run.num_epochs and is_primary(run.args):
        _logger.warning(
            "warning: the warm-up covers all %d epoch(s): SalfMix never runs (--salfmix-warmup-epochs %d; "
            "pass --epochs > %d or --salfmix-warmup-epochs 0)",
            run.num_epochs,
            warmup,
            warmup,
        )


def _percent(task: Task, value: float | None) -> str:
    return "n/a" if value is None else f"{task.metric_scale * value:.2f}%"


def train(run: Run) -> dict[str, Any]:
    """Train and evaluate every epoch; the primary process writes ``summary.csv``, the checkpoints (ranked by
    the task's metric) and ``results.json``. Returns the results (on every rank)."""
    from timm.utils import distribute_bn, trim_summary, update_summary

    args, task, state = run.args, run.task, run.state
    primary = is_primary(args)
    summary_path = os.path.join(run.output_dir, "summary.csv")
    _warn_if_warmup_covers_the_run(run)
    if primary:
        trim_summary(summary_path, run.start_epoch)
        _logger.info(
            "%s, device %s%s, %d CPU threads, output %s",
            task.describe(run),
            run.device,
            f" x{args.world_size} (DDP)" if args.distributed else "",
            torch.get_num_threads(),
            os.path.abspath(run.output_dir),
        )
    last: dict[str, float] = {}
    for epoch in range(run.start_epoch, run.num_epochs):
        run.data_order.set_epoch(epoch)
        if run.train_sampler is not None:
            run.train_sampler.set_epoch(epoch)
        if run.transform is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
            run.transform = disable_mixing(run.transform)
        if run.transform is not None:
            run.transform.set_epoch(epoch)
        train_metrics = task.train_one_epoch(run, epoch)
        if args.distributed:
            distribute_bn(run.model, args.world_size, reduce=True)
        last = task.validate(run, without_ddp(run.model), epoch)
        if run.model_ema is not None:
            ema_metrics = task.validate(run, run.model_ema.module, epoch)
            last.update({f"ema_{k}": v for k, v in ema_metrics.items()})
        lrs = [group["lr"] for group in run.optimizer.param_groups]
        lr = sum(lrs) / len(lrs)
        if run.lr_scheduler is not None:
            run.lr_scheduler.step(epoch + 1, last[task.metric])
        state.train_time_s += train_metrics["epoch_time"]
        state.aug_time_s += train_metrics["aug_time"]
        state.rng_states = gather_rng_states(args.world_size, args.distributed)  # collective: every rank
        if not primary:
            continue
        update_summary(epoch, train_metrics, last, summary_path, lr=lr)
        run.saver.save_checkpoint(epoch, metric=last[task.metric])
        _logger.info(
            "epoch %d [%d/%d]  train loss %.4f  eval loss %.4f  %s  lr %.5f  time %.1fs (augmentation %.1fs)",
            epoch,
            epoch + 1,
            run.num_epochs,
            train_metrics["loss"],
            last["loss"],
            task.show_metrics(last),
            lr,
            train_metrics["epoch_time"],
            train_metrics["aug_time"],
        )
    best = None if run.saver is None else run.saver.best_metric
    results = {
        "model": args.model,
        "method": method_name(args),
        "transform": repr(run.transform),
        "dataset": run.dataset,
        "data_dir": None if args.data_dir is None else os.path.abspath(args.data_dir),
        "num_classes": run.num_classes,
        **task.results(run),
        "epochs": run.num_epochs,
        "start_epoch": run.start_epoch,
        "world_size": args.world_size,
        f"best_{task.metric}": best,
        "best_epoch": None if run.saver is None else run.saver.best_epoch,
        **{f"final_{key}": last.get(key) for key in task.final_metrics},
        "train_time_s": state.train_time_s,  # whole run, resumed parts included
        "aug_time_s": state.aug_time_s,
        "output_dir": os.path.abspath(run.output_dir),
    }
    if primary:
        with open(os.path.join(run.output_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        _logger.info(
            "best %s %s at epoch %s; results.json, summary.csv and checkpoints in %s",
            task.metric_label,
            _percent(task, best),
            results["best_epoch"],
            results["output_dir"],
        )
    return results


# --- evaluate only (--evaluate) -------------------------------------------------------------------------


def evaluate(task: Task, args: argparse.Namespace, evaluation: Evaluation) -> dict[str, Any]:
    """Score checkpoint ``evaluation`` on ``--val-split`` as the training run's ``validate`` did; write the
    metrics as JSON (next to it, or to ``--output``) and log them on one line. Returns what was written.

    Raises:
        UsageError: a checkpoint that does not fit the model, an unwritable metrics file.
        DatasetError: the data cannot be read, or is of other classes than the checkpoint's.
    """
    from .checkpoints import evaluation_path, write_json
    from .fingerprint import check_evaluation_data

    path, ckpt = evaluation.path, evaluation.ckpt
    device = check_device(args.device)
    out_path = evaluation_path(path, args.output, args.val_split, evaluation.weights)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Run(args=args, task=task, device=device, amp_dtype=resolve_amp(args, device))
    check_evaluation_data(path, ckpt, _load_data(task, run))
    model = task.create_model(run)
    try:
        model.load_state_dict(evaluation.state_dict)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path!r} does not fit {args.model} with {run.num_classes} classes: {one_line(e)}"
        ) from e
    model.to(device)
    if getattr(args, "channels_last", False):
        model.to(memory_format=torch.channels_last)
    run.val_loader = torch.utils.data.DataLoader(
        run.val_ds,
        batch_size=task.val_batch_factor * args.batch_size,
        shuffle=False,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
    )
    metrics = task.validate(run, model, int(ckpt["epoch"]))
    shown = f"loss {metrics['loss']:.4f}  {task.show_metrics(metrics)}"
    record = {
        "checkpoint": os.path.abspath(path),
        "epoch": int(ckpt["epoch"]),
        "weights": evaluation.weights,
        "model": args.model,
        "num_classes": run.num_classes,
        **task.evaluation_record(run),
        "dataset": run.dataset,
        "data_dir": None if args.data_dir is None else os.path.abspath(args.data_dir),
        "split": args.val_split,
        "val_size": len(run.val_ds),
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
        evaluation.weights,
        run.dataset,
        args.val_split,
        len(run.val_ds),
        shown,
        out_path,
    )
    return record


# --- entry point ----------------------------------------------------------------------------------------


def main(task: Task, argv: Sequence[str] | None = None) -> int:
    """Train (or ``--evaluate``) as the flags say: 0 on success (a resume with nothing left to train
    included), 2 with one line on stderr on bad input or a file the run cannot write, 130 with one line on
    Ctrl-C."""
    try:
        with logging_to_stdout(primary=int(os.environ.get("RANK", "0")) == 0):
            return _parse_setup_and_train(task, argv)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _parse_setup_and_train(task: Task, argv: Sequence[str] | None) -> int:
    from .checkpoints import resumable_checkpoint
    from .data import DatasetError

    prog, args = task.prog, None
    try:
        args, ckpt, evaluation = parse_args(task, argv)
        args.distributed, args.world_size, args.rank, args.local_rank = False, 1, 0, 0
        if evaluation is not None:
            evaluate(task, args, evaluation)
            return 0
        run = setup(task, args, ckpt)
    except NothingToTrain as e:
        _logger.warning("warning: %s", e)
        return 0
    except (UsageError, DatasetError, ValueError, TypeError, FloatingPointError) as e:
        return report_error(prog, e)
    except KeyboardInterrupt:  # Ctrl-C: one line, where to resume (the checkpoint being resumed, if any)
        if args is not None and args.evaluate:
            return report_interrupt(prog, None, "no metrics written")
        return report_interrupt(prog, resumable_checkpoint("", args.resume if args is not None else ""))
    folder = os.path.abspath(run.output_dir) if run.output_dir else "the run folder"
    try:
        train(run)
    except KeyboardInterrupt:
        return report_interrupt(prog, resumable_checkpoint(run.output_dir, args.resume))
    except OSError as e:  # no space left, a file-size limit: the checkpoints saved before are intact
        return report_write_error(prog, e, resumable_checkpoint(run.output_dir, args.resume))
    except FloatingPointError as e:  # a NaN / inf loss: the completed epochs are checkpointed already
        return report_error(
            prog,
            f"{one_line(e)}: training diverged (a lower --lr?); the checkpoints of the completed epochs are "
            "in "
            f"{folder}",
        )
    except DatasetError as e:  # an image or mask read during training: the completed epochs are saved
        return report_error(prog, f"{one_line(e)} (checkpoints of the completed epochs in {folder})")
    return 0
