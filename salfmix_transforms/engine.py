"""The training engine that ``train_timm.py`` and ``train_seg.py`` share (issue 20, item 1).

A script describes what differs in a :class:`Task` (its parser additions, data sets, model, loss, training
step, validation metric and its direction); the engine owns the rest, once for both:

* the command line common to both (:func:`add_run_flags`) and the flags a ``--resume`` / ``--evaluate``
  takes from the checkpoint (:func:`parse_args`): the flags not given are the checkpoint's; another
  ``--method``, ``--opt`` or ``--saliency-source`` than the checkpoint's is refused with one line; a
  checkpoint that has done ``--epochs`` already leaves nothing to train (exit code 0); a missing or corrupt
  ``last.pth.tar`` falls back to the newest intact ``checkpoint-N`` (``checkpoints``); a resume on another
  training set is refused (``fingerprint``); with the same number of processes and loader workers a resumed
  epoch is the uninterrupted run's, bit for bit;
* the run record (:class:`Run`), the run folder and its atomic saver (``checkpoints.open_run_folder``), the
  checkpoints' train state (:class:`TrainState`);
* timm's ``create_optimizer_v2`` / ``create_scheduler_v2`` (the same schedule flags for both, ``decay_*``
  included; a changed ``--epochs``, ``--lr``, ... on resume rebuilds the schedule), ``resume_checkpoint``;
* the distributed glue: ``init_distributed_device``, the DDP wrap, ``distribute_bn``, rank-0 outputs, every
  rank's RNG states, :class:`~salfmix_transforms.distributed.DataOrder`;
* the training step (:func:`train_epoch`: the batch transform, ``--saliency-source cached``, AMP, the EMA)
  and the validation batches (:func:`validation_batches`) around the task's loss and metrics;
* the epoch loop (:func:`train`), ``summary.csv`` (timm's ``update_summary``), ``results.json``, checkpoints
  ranked by the task's metric (lower-is-better or higher-is-better), ``--evaluate`` (:func:`evaluate`);
* :func:`main`'s error handling: a :class:`~salfmix_transforms.cli.UsageError` (bad flags, data, checkpoint)
  is one line and exit code 2, Ctrl-C one line and 130, a checkpoint that cannot be written one line and 2.

Only the scripts and the training modules (``cli``, ``checkpoints``, ``distributed``, ``flags``,
``fingerprint``, ``saliency_sources``) sit around it: nothing else in the package imports the engine, and the
engine imports no script.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import saliency_sources
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
    all_reduce_sum,
    broadcast_from_primary,
    gather_rng_states,
    set_rng_state,
)
from .fingerprint import FINGERPRINT_KEY
from .flags import (
    augmentation_dests,
    disable_mixing,
    flag_name,
    method_name,
    parse_augmentation_flags,
    unused_tuning_flags,
    uses_grid,
    uses_saliency,
)
from .saliency import SaliencyPassError, plain_module

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
    "train_epoch",
    "validation_batches",
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

# Flags of the machine a run is on: a --resume does not take them from the checkpoint (there is no --no-amp,
# and a GPU run may go on on a CPU), but says when they differ from it.
PRECISION_FLAGS = ("amp", "amp_dtype", "channels_last", "torchcompile")

# What of the optimizer's param groups comes from the flags (create_optimizer_v2's arguments besides the lr,
# which is the schedule's): put back after a resume loads the checkpoint's optimizer state.
OPTIMIZER_FLAGS = ("weight_decay", "momentum")


# The defaults of the engine's flags that both scripts share (a script's DEFAULTS add or override).
RUN_DEFAULTS: dict[str, Any] = dict(
    momentum=0.9,
    weight_decay=1e-4,
    sched="cosine",
    decay_milestones=[90, 180, 270],  # timm's default (used with --sched multistep)
    decay_epochs=90.0,
    decay_rate=0.1,
    warmup_epochs=0,
    warmup_lr=1e-5,
    min_lr=0.0,
    smoothing=0.0,
    device="cuda" if torch.cuda.is_available() else "cpu",
    threads=0,
    seed=42,
    log_interval=50,
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
        """The tuning flags given that the method does not read (``flags.unused_tuning_flags``); the saliency
        flags that the saliency source leaves unused get their own warning
        (``saliency_sources.unused_saliency_flags``)."""
        return unused_tuning_flags(args)

    # --- data and model ---
    def dataset_name(self, args: argparse.Namespace) -> str:
        return str(args.dataset)

    def datasets(self, run: Run) -> tuple[Any, Any, Any]:
        """``(train set, validation set, classes)``: the class names, or their number."""
        raise NotImplementedError

    def per_file_state(self, args: argparse.Namespace, ckpt: dict[str, Any]) -> str | None:
        """What of the checkpoint belongs to the training files by name (``check_resume_data``)."""
        return saliency_sources.per_file_state(args, ckpt)

    def create_model(self, run: Run) -> torch.nn.Module:
        """A new model for ``run.num_classes``, on ``run.device`` (``--channels-last``: in that format)."""
        raise NotImplementedError

    def build(self, run: Run) -> None:
        """The model (``run.model``), the batch transform, the loss, what else the step needs; may replace
        ``run.train_ds``. Called after the data sets, before the loaders."""
        raise NotImplementedError

    def finish_model(self, run: Run, ckpt: dict[str, Any] | None) -> None:
        """After the resumed weights and saliency cache are loaded, before the DDP wrap (an EMA)."""

    # --- training ---
    def train_one_epoch(self, run: Run, epoch: int) -> dict[str, float]:
        """``{"loss", "epoch_time", "aug_time"}`` (the loss averaged over every rank's samples; see
        :func:`train_epoch`)."""
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


@dataclass(eq=False)
class TrainState:
    """What ``CheckpointSaver`` stores besides the optimizer: timm's task checkpoint hook (duck-typed).

    ``state_dict`` (the model), ``state_dict_ema`` and ``train_state``: scheduler state, every rank's RNG
    states (captured at the end of the epoch, so a resumed run draws what the uninterrupted run would have),
    the update counter, the method, the training and augmentation seconds so far (so that a resumed run's
    ``results.json`` reports the whole run), and a saliency cache when there is one.
    """

    task: str
    model: torch.nn.Module
    model_ema: Any = None
    lr_scheduler: Any = None
    rng_states: list[dict[str, Any]] = field(default_factory=list)
    num_updates: int = 0
    method: str = ""
    train_time_s: float = 0.0
    aug_time_s: float = 0.0
    saliency_cache: Any = None
    data_fingerprint: dict[str, Any] | None = None  # fingerprint.dataset_fingerprint

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
    (keys: ``epochs``, ``batch_size``, ``opt``, ``lr``, ``workers``, ``checkpoint_hist`` and any of
    :data:`RUN_DEFAULTS`, which fill those not given; a path flag not there defaults to ``""``)."""
    defaults = {**RUN_DEFAULTS, **defaults}

    def add(group: Any, *names: str, help: str, **kwargs: Any) -> None:
        dest = names[-1].lstrip("-").replace("-", "_")
        group.add_argument(*names, default=defaults.get(dest, ""), help=help, **kwargs)

    g = parser.add_argument_group("optimisation")
    add(g, "-b", "--batch-size", type=positive_int, help="batch per rank")
    add(
        g,
        "--epochs",
        type=positive_int,
        help="epochs to train in all (with --resume: the total; a new length rebuilds the lr schedule, a "
        "checkpoint that has done them all changes nothing)",
    )
    add(g, "--opt", help="timm optimizer (momentum = SGD, sgd = Nesterov SGD)")
    add(g, "--lr", type=positive_float, help="learning rate")
    add(g, "--momentum", type=probability, help="SGD momentum")
    add(g, "--weight-decay", type=non_negative_float, help="weight decay")
    add(g, "--sched", help="timm scheduler: cosine, step, multistep, ..., none")
    add(g, "--decay-milestones", type=non_negative_int, nargs="+", help="epochs of the lr decays (multistep)")
    add(g, "--decay-epochs", type=positive_float, help="epoch interval of lr decay (step)")
    add(g, "--decay-rate", type=non_negative_float, help="lr decay factor")
    add(g, "--warmup-epochs", type=non_negative_int, help="lr warm-up epochs")
    add(g, "--warmup-lr", type=non_negative_float, help="lr at the start of warm-up")
    add(g, "--min-lr", type=non_negative_float, help="lower lr bound (cosine)")
    add(g, "--smoothing", type=probability, help="label smoothing")

    g = parser.add_argument_group("runtime")
    add(g, "--device", help="cpu, cuda, cuda:1")
    add(g, "-j", "--workers", type=non_negative_int, help="data loader processes per rank")
    add(
        g,
        "--threads",
        type=non_negative_int,
        help="torch CPU threads per process (0: PyTorch's default, one per core or OMP_NUM_THREADS)",
    )
    add(g, "--seed", type=int, help="random seed (rank is added)")
    add(
        g,
        "--output",
        help=f"output root (default {output_root}); with --evaluate: the folder (or .json file) of metrics",
    )
    add(g, "--experiment", help="run folder name (default: date-model-method)")
    add(
        g,
        "--resume",
        help="checkpoint or run folder to continue (last.pth.tar; when it is missing or corrupt, the newest "
        "intact checkpoint-N): the flags not given are the checkpoint's; another --method, --opt or "
        "--saliency-source is refused; --epochs is the total",
    )
    add(
        g,
        "--evaluate",
        metavar="CKPT",
        help="score checkpoint CKPT on --val-split, no training: the model, classes, data and batch size "
        "come from the checkpoint unless given; the metrics are printed on one line and written as JSON "
        "next to CKPT (<name>-eval-<split>.json) or to --output (a folder or a .json file), never to the "
        "run's results.json; next to CKPT or in a folder, never over an earlier evaluation of other data "
        "(that one is kept, the new file is numbered -2, -3, ...)",
    )
    add(g, "--checkpoint-hist", type=positive_int, help="ranked checkpoints to keep")
    add(g, "--log-interval", type=positive_int, help="batches between log lines")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    g = parser.add_argument_group("precision and compilation")
    g.add_argument(
        "--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 + GradScaler on CUDA)"
    )
    g.add_argument(
        "--amp-dtype", default=None, choices=("float16", "bfloat16"), help="override the AMP dtype"
    )
    g.add_argument(
        "--channels-last",
        action="store_true",
        help="channels_last memory format for the model and the images",
    )
    g.add_argument(
        "--torchcompile", nargs="?", const="inductor", default=None, help="torch.compile backend (inductor)"
    )


@dataclass
class Evaluation:
    """What ``--evaluate`` scores: the checkpoint file, its metadata, weights, ``"model"`` or ``"ema"``."""

    path: str
    ckpt: dict[str, Any]
    state_dict: dict[str, Any]
    weights: str


def _checked(load: Callable[..., tuple], *args: Any) -> tuple:
    """``load(*args)`` (``checkpoints.load_resume_checkpoint`` / ``load_evaluation_checkpoint``) but its last
    item, the note (a fallback, missing EMA weights), which is logged; its error raised as one line.

    Raises:
        CheckpointError: no such checkpoint, unreadable, corrupt, or of the other script.
    """
    try:
        *loaded, note = load(*args)
    except ValueError as e:  # CorruptCheckpointError included
        raise CheckpointError(one_line(e)) from e
    if note and int(os.environ.get("RANK", "0")) == 0:
        _logger.warning("warning: %s", note)
    return tuple(loaded)


def load_resume(task: Task, path: str) -> tuple[str, dict[str, Any]]:
    """The checkpoint that ``--resume path`` means (``checkpoints.load_resume_checkpoint``: a run folder, a
    damaged ``last.pth.tar``; a fallback is logged) and its metadata (raises :class:`CheckpointError`)."""
    from .checkpoints import load_resume_checkpoint

    return _checked(load_resume_checkpoint, path, task.name)


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
        CheckpointError: another method, optimizer or saliency source, or a weight decay switched on or off.
        NothingToTrain: the checkpoint has done ``--epochs``.
    """
    saved_args = ckpt.get("args")
    _refuse(path, "method", _trained_method(ckpt), method_name(args))
    _refuse(path, "opt", getattr(saved_args, "opt", None), args.opt)
    if hasattr(args, "saliency_source") and uses_saliency(args):
        _refuse(
            path, "saliency-source", getattr(saved_args, "saliency_source", "exact"), args.saliency_source
        )
    saved_decay = getattr(saved_args, "weight_decay", None)
    if saved_decay is not None and (saved_decay == 0) != (args.weight_decay == 0):
        # timm's create_optimizer_v2 gives biases and norms a group of their own only for a weight decay > 0:
        # the checkpoint's optimizer state has another number of groups than this one.
        raise CheckpointError(
            f"checkpoint {path!r} was trained with --weight-decay {saved_decay:g}, and --weight-decay "
            f"{args.weight_decay:g} changes the optimizer's parameter groups (weight decay on or off); "
            "resume with a weight decay that is 0 exactly when the checkpoint's is, or start a new run"
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
    from .checkpoints import load_evaluation_checkpoint, saved_flags

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
        ema = bool(getattr(first, "model_ema", False))
        evaluation = Evaluation(*_checked(load_evaluation_checkpoint, first.evaluate, task.name, ema))
        path, saved = evaluation.path, saved_flags(evaluation.ckpt, task.evaluate_flags)
    else:
        saved = {}
    defaults.update({k: list(v) if isinstance(v, tuple) else v for k, v in saved.items()})
    args = parse_augmentation_flags(parser, argv, defaults)
    task.finish_args(args)
    if getattr(args, "amp_dtype", None) is not None:
        args.amp = True  # --amp-dtype alone asks for mixed precision
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


class SpanClock:
    """The seconds spent in marked spans of a loop, measured without making the loop wait for the device.

    On CUDA each :meth:`span` records a pair of CUDA events (the device's own clock between the two points of
    its queue); :meth:`seconds` sums them once, after the caller has synchronised the device at the end of
    the epoch. Elsewhere the host clock (CPU operations run synchronously). Choice: the device time of the
    span rather than the host's wall time, so that the epoch keeps the host running ahead of the device; the
    two agree when the span's kernels follow each other without gaps.
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.on_cuda = device, device.type == "cuda"
        self.host_seconds = 0.0
        self.events: list[tuple[Any, Any]] = []

    @contextlib.contextmanager
    def span(self) -> Iterator[None]:
        if not self.on_cuda:
            start = time.perf_counter()
            yield
            self.host_seconds += time.perf_counter() - start
            return
        stream = torch.cuda.current_stream(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        yield
        end.record(stream)
        self.events.append((start, end))

    def seconds(self) -> float:
        """The total of every span so far (on CUDA: after ``torch.cuda.synchronize``)."""
        return self.host_seconds + sum(start.elapsed_time(end) for start, end in self.events) / 1000.0


def show_progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and is_primary(args) and sys.stdout.isatty()


def _single_process_defaults(args: argparse.Namespace) -> None:
    """What ``init_distributed_device`` sets, for a run without a process group."""
    for name, value in (("distributed", False), ("world_size", 1), ("rank", 0), ("local_rank", 0)):
        if not hasattr(args, name):
            setattr(args, name, value)


def _set_threads(args: argparse.Namespace) -> None:
    cpus = os.cpu_count() or 1
    if args.threads > cpus:
        raise UsageError(f"--threads {args.threads} is more than the {cpus} CPUs of this machine")
    if args.threads:
        torch.set_num_threads(args.threads)


def _run_with_data(task: Task, args: argparse.Namespace, device: torch.device) -> tuple[Run, dict[str, Any]]:
    """A :class:`Run` on ``device`` with its data sets, their classes checked against ``--num-classes``, and
    the training set's fingerprint."""
    from .fingerprint import dataset_fingerprint

    run = Run(args=args, task=task, device=device, amp_dtype=resolve_amp(args, device))
    run.train_ds, run.val_ds, classes = task.datasets(run)
    run.dataset = task.dataset_name(args)
    data_classes = classes if isinstance(classes, int) else len(classes)
    run.classes = None if isinstance(classes, int) else list(classes)
    run.num_classes = args.num_classes or data_classes
    if run.num_classes < data_classes:
        raise UsageError(
            f"--num-classes {run.num_classes} is smaller than the data set's {data_classes} classes"
        )
    return run, dataset_fingerprint(run.train_ds, run.dataset)


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


def _flag_changes(saved_args: Any, args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The flags ``names`` that differ from the checkpoint's, as ``--epochs 10 -> 20`` (a flag the checkpoint
    does not have is left out; one it saved as ``None`` counts; one path spelled two ways does not)."""
    saved = vars(saved_args) if isinstance(saved_args, argparse.Namespace) else dict(saved_args or {})
    changes = []
    for name in names:
        if name not in saved:
            continue
        old, new = saved[name], getattr(args, name)
        if isinstance(old, tuple):
            old = list(old)
        if old != new and not _same_path(old, new):
            changes.append(f"{flag_name(name)} {old} -> {new}")
    return changes


def _same_path(old: Any, new: Any) -> bool:
    """Whether two flag values are one existing file or folder (``./data/`` and ``/abs/data``)."""
    if not (isinstance(old, str) and isinstance(new, str) and os.path.exists(old) and os.path.exists(new)):
        return False
    return os.path.samefile(old, new)


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
    run.data_order = DataOrder(args.seed, args.rank)  # paired seeds: every method sees the same batches
    run.train_loader = torch.utils.data.DataLoader(
        run.train_ds,
        batch_size=args.batch_size,
        shuffle=run.train_sampler is None,
        sampler=run.train_sampler,
        drop_last=True,
        generator=run.data_order.generator,
        num_workers=args.workers,
        pin_memory=run.device.type == "cuda",
    )
    run.val_loader = _val_loader(run, val_sampler)


def _val_loader(run: Run, sampler: Any = None) -> torch.utils.data.DataLoader:
    """The validation loader: in order, batches of ``-b`` times the task's ``val_batch_factor``."""
    return torch.utils.data.DataLoader(
        run.val_ds,
        batch_size=run.task.val_batch_factor * run.args.batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=run.args.workers,
        pin_memory=run.device.type == "cuda",
    )


def _resume(run: Run, ckpt: dict[str, Any]) -> list[Any] | Any:
    """Load the ``--resume`` checkpoint into model, optimizer, schedule and timers; returns its RNG states."""
    from timm.models import resume_checkpoint

    args, state = run.args, run.state
    # The optimizer's hyper-parameters of the flags (OPTIMIZER_FLAGS): the checkpoint's state dict brings its
    # own along with the momentum buffers (and state that some optimizers keep in the groups, Lookahead's
    # step counter), so these are put back after the load.
    given = [{k: g[k] for k in OPTIMIZER_FLAGS if k in g} for g in run.optimizer.param_groups]
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
    for group, values in zip(run.optimizer.param_groups, given):
        group.update(values)
    run.start_epoch = int(start_epoch or 0)
    train_state = ckpt.get("train_state") or {}
    if run.lr_scheduler is not None and train_state.get("scheduler"):
        changed = _flag_changes(ckpt.get("args"), args, SCHEDULE_FLAGS)
        if not changed:
            run.lr_scheduler.load_state_dict(dict(train_state["scheduler"]))
        elif is_primary(args):
            _logger.info("lr schedule rebuilt from the flags (%s)", ", ".join(changed))
    others = [name for name in (*run.task.run_flags, *PRECISION_FLAGS) if name not in SCHEDULE_FLAGS]
    changed = _flag_changes(ckpt.get("args"), args, others)
    if changed and is_primary(args):
        _logger.warning(
            "resumed with flags that differ from the checkpoint's (%s): the run goes on as another one than "
            "the uninterrupted run",
            ", ".join(changed),
        )
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
    _single_process_defaults(args)
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
    for warning in saliency_sources.unused_saliency_flags(args) if is_primary(args) else ():
        _logger.warning("warning: %s", warning)
    random_seed(args.seed, args.rank)
    run, fingerprint = _run_with_data(task, args, device)
    if ckpt is not None:
        message = check_resume_data(
            args.resume, ckpt, fingerprint, per_file_state=task.per_file_state(args, ckpt)
        )
        if message and is_primary(args):
            _logger.warning(message)
    if run.amp_dtype == torch.float16:  # fp16 autocast (CUDA) needs a loss scaler; bf16 does not
        from timm.utils import NativeScaler

        run.loss_scaler = NativeScaler(device=device.type)
    task.build(run)
    run.num_params = sum(p.numel() for p in run.model.parameters())
    _loaders(task, run)
    run.optimizer, run.lr_scheduler, run.num_epochs = build_optimizer_and_scheduler(
        args, run.model, len(run.train_loader)
    )
    run.state = TrainState(task.name, run.model, lr_scheduler=run.lr_scheduler, method=method_name(args))
    run.state.data_fingerprint = fingerprint
    rng = _resume(run, ckpt) if ckpt is not None else None
    if ckpt is not None and run.saliency_cache is not None:
        saliency_sources.restore_saliency_cache(run.saliency_cache, ckpt.get("train_state") or {}, args)
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


def _data_record(run: Run) -> dict[str, Any]:
    """The model and the data of ``run``, as ``results.json`` and an ``--evaluate`` record report them."""
    data_dir = run.args.data_dir
    return {
        "model": run.args.model,
        "num_classes": run.num_classes,
        "dataset": run.dataset,
        "data_dir": None if data_dir is None else os.path.abspath(data_dir),
    }


def place_model(run: Run, model: torch.nn.Module) -> torch.nn.Module:
    """``model`` on the run's device, in channels_last with ``--channels-last``: what a task's
    ``create_model`` returns."""
    model = model.to(run.device)
    if getattr(run.args, "channels_last", False):
        model = model.to(memory_format=torch.channels_last)
    return model


def _to_device(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the run's device; the images channels_last with ``--channels-last``."""
    x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
    if getattr(run.args, "channels_last", False):
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def train_epoch(
    run: Run,
    epoch: int,
    loss_of: Callable[[Run, Any, torch.Tensor], torch.Tensor],
    baseline_targets: Callable[[Run, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """One pass over this rank's shard of the training set: what a script's ``train_one_epoch`` runs.

    Each batch goes on the device, through ``run.transform`` (``--saliency-source cached``: the samples are
    ``(image, target, index, coords)``, the cached maps are read before and the step's input-gradient map is
    written back after; without a transform, ``baseline_targets(run, target)`` when given, also timed as
    augmentation), and ``loss_of(run, model output, target)`` (the script's loss, under AMP's
    autocast); then the optimizer step (through ``run.loss_scaler`` when there is one), the EMA and the lr of
    the next update. Returns the loss averaged over every rank's samples, the epoch's and the augmentation's
    seconds.

    Nothing in a step waits for the device (issue 22): the loss sum stays on the device, the augmentation is
    timed with :class:`SpanClock`, and the loss is checked where the loop reads it anyway (a log line or the
    progress bar, in a single process) and at the end of the epoch (over every rank, so that all of them stop
    together). Choice: a NaN or infinite loss is found at the next check rather than at its own step (timm's
    ``train.py`` does not check at all); the steps in between only change the weights in memory, and the run
    stops before the epoch's checkpoint.

    Raises:
        FloatingPointError: a NaN or infinite loss, naming the epoch and the batches since the last check.
    """
    from tqdm import tqdm

    args, device, model, cache = run.args, run.device, run.model, run.saliency_cache
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen, checked, batch_idx, aug_clock, epoch_start = 0, 0, -1, SpanClock(device), time.perf_counter()
    bar = tqdm(
        run.train_loader,
        desc=f"epoch {epoch} [{epoch + 1}/{run.num_epochs}]",
        disable=not show_progress(args),
        leave=False,
        dynamic_ncols=True,
        file=sys.stdout,
    )
    for batch_idx, batch in enumerate(bar):
        x, y = _to_device(run, batch[0], batch[1])
        if run.transform is not None or baseline_targets is not None:
            with aug_clock.span():
                if cache is not None:
                    index, cells = batch[2].to(device), cache.locate(batch[3].to(device))  # read and written
                    maps = saliency_sources.cached_saliency(run, cache, x, y, index, cells, epoch)
                    x, y = run.transform(x, y, saliency=maps)
                    x.requires_grad_(True)  # the step's backward gives the input gradient too: eq. (2)
                elif run.transform is not None:
                    x, y = run.transform(x, y, model=model)
                else:
                    y = baseline_targets(run, y)
        with autocast(run):
            loss = loss_of(run, model(x), y)
        _step(run, loss)
        if cache is not None:
            with aug_clock.span():
                saliency_sources.write_cached_saliency(run, index, cells, x, epoch)
        loss_sum += loss.detach().double() * x.shape[0]
        seen += x.shape[0]
        show = not bar.disable and batch_idx % 10 == 0
        log = bar.disable and is_primary(args) and (batch_idx + 1) % args.log_interval == 0
        if (show or log) and not args.distributed:
            _check_finite(float(loss_sum), epoch, checked, batch_idx, len(bar))
            checked = batch_idx + 1
        if show:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        elif log:
            _logger.info("  epoch %d batch [%d/%d] loss %.4f", epoch, batch_idx + 1, len(bar), loss.item())
    bar.close()
    sync(device)
    total_loss, total_seen = all_reduce_sum([float(loss_sum), float(seen)], device, args.distributed)
    _check_finite(total_loss, epoch, checked, batch_idx, len(bar))
    return {
        "loss": total_loss / max(1.0, total_seen),
        "epoch_time": time.perf_counter() - epoch_start,
        "aug_time": aug_clock.seconds(),
    }


def _check_finite(loss_sum: float, epoch: int, first: int, last: int, total: int) -> None:
    """Raises FloatingPointError when the sum of the losses of batches ``first``..``last`` (0-based; those
    before ``first`` were checked already) is NaN or infinite. The message counts the batches from 1 out of
    ``total``, as the log lines do."""
    if not math.isfinite(loss_sum):
        where = (
            f"batch [{last + 1}/{total}]" if last <= first else f"batches [{first + 1}-{last + 1}/{total}]"
        )
        raise FloatingPointError(f"a loss is not finite (their sum is {loss_sum}) at epoch {epoch}, {where}")


def _step(run: Run, loss: torch.Tensor) -> None:
    """The optimizer step of ``loss`` (through AMP's loss scaler when there is one), the EMA, the next lr."""
    run.optimizer.zero_grad(set_to_none=True)
    if run.loss_scaler is not None:
        run.loss_scaler(loss, run.optimizer, parameters=run.model.parameters())
    else:
        loss.backward()
        run.optimizer.step()
    run.state.num_updates += 1
    if run.model_ema is not None:
        run.model_ema.update(run.model, step=run.state.num_updates)
    if run.lr_scheduler is not None:
        run.lr_scheduler.step_update(num_updates=run.state.num_updates)


def validation_batches(run: Run, model: torch.nn.Module) -> Iterator[tuple[Any, torch.Tensor]]:
    """``(model output, target)`` of every validation batch of this rank, the model in eval mode, its
    forward under AMP's autocast: what a task's ``validate`` sums (under ``torch.no_grad``)."""
    model.eval()
    for x, y in run.val_loader:
        x, y = _to_device(run, x, y)
        with autocast(run):
            output = model(x)
        yield output, y


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
        last = task.validate(run, plain_module(run.model, keep_compiled=True), epoch)
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
        **_data_record(run),
        "method": method_name(args),
        "transform": repr(run.transform),
        "saliency_source": args.saliency_source if uses_saliency(args) else None,
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
    metrics as JSON (next to it, or to ``--output``; but for a file ``--output`` names, one that holds another
    evaluation is kept and the new one numbered: ``checkpoints.free_evaluation_path``) and log them on one
    line. Returns what was written.

    Raises:
        UsageError: a checkpoint that does not fit the model, an unwritable metrics file.
        DatasetError: the data cannot be read, or is of other classes than the checkpoint's.
    """
    from .checkpoints import evaluation_path, free_evaluation_path, write_json
    from .fingerprint import check_evaluation_data

    path, ckpt = evaluation.path, evaluation.ckpt
    device = check_device(args.device)
    out_path = evaluation_path(path, args.output, args.val_split, evaluation.weights)
    _single_process_defaults(args)
    _set_threads(args)
    run, fingerprint = _run_with_data(task, args, device)
    check_evaluation_data(path, ckpt, fingerprint)
    model = task.create_model(run)
    try:
        model.load_state_dict(evaluation.state_dict)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path!r} does not fit {args.model} with {run.num_classes} classes: {one_line(e)}"
        ) from e
    run.val_loader = _val_loader(run)
    metrics = task.validate(run, model, int(ckpt["epoch"]))
    shown = f"loss {metrics['loss']:.4f}  {task.show_metrics(metrics)}"
    record = {
        "checkpoint": os.path.abspath(path),
        "epoch": int(ckpt["epoch"]),
        "weights": evaluation.weights,
        **_data_record(run),
        **task.evaluation_record(run),
        "split": args.val_split,
        "val_size": len(run.val_ds),
        "metrics": metrics,
    }
    writable_folder(os.path.dirname(out_path), "the folder of the metrics")
    if not args.output.lower().endswith(".json"):  # a file named by --output is written as asked
        out_path = free_evaluation_path(out_path, record)
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
            f"{one_line(e)}: training diverged (a lower --lr?); the checkpoints of the completed epochs "
            f"are in {folder}",
        )
    except SaliencyPassError as e:  # e.g. -b 1 at a low --saliency-scale: the completed epochs are saved
        return report_error(
            prog,
            f"{one_line(e)}; with this script: --saliency-mode eval, a larger -b or --saliency-scale "
            f"(checkpoints of the completed epochs in {folder})",
        )
    except DatasetError as e:  # an image or mask read during training: the completed epochs are saved
        return report_error(prog, f"{one_line(e)} (checkpoints of the completed epochs in {folder})")
    return 0
