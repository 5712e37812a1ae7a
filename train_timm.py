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
``results.json`` (best top-1 error and its epoch). Bad input (missing data, unknown model or method, a grid
that does not fit the images, a checkpoint of another model or of ``train_seg.py``) ends with one line on
stderr and exit code 2. The run folder, ``--resume`` (the checkpoint's flags unless given, a longer
``--epochs`` rebuilds the lr schedule), ``--evaluate CKPT`` (``--model-ema``: its EMA weights) and the error
handling are the engine's, shared with ``train_seg.py`` (``salfmix_transforms.engine``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

try:  # Ctrl-C while torch loads (a second or more): one line and exit code 130, as during the run
    import torch
    import torch.nn.functional as F

    from salfmix_transforms import engine, saliency_sources
    from salfmix_transforms.cli import (
        OneLineArgumentParser,
        UsageError,
        one_line,
        positive_float,
        positive_int,
        probability,
    )
    from salfmix_transforms.distributed import all_reduce_sum
    from salfmix_transforms.engine import CheckpointError, build_optimizer_and_scheduler
    from salfmix_transforms.flags import (
        DEFAULT_METHOD,
        METHOD_FLAGS,
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

__all__ = [
    "DEFAULTS",
    "DEFAULT_METHOD",
    "METHOD_FLAGS",
    "PRESETS",
    "CheckpointError",
    "UsageError",
    "build_batch_transform",
    "build_optimizer_and_scheduler",
    "build_parser",
    "main",
    "parse_args",
]


# What `python train_timm.py` without flags does: a run that finishes in a few minutes on a laptop CPU.
DEFAULTS: dict[str, Any] = dict(
    model="preactresnet18",
    width=0.25,  # preactresnet* only; other timm models get --width only when it is given
    epochs=10,
    batch_size=64,
    opt="momentum",  # timm's name for SGD with classical (non-Nesterov) momentum, as the paper
    lr=0.05,
    workers=2,
    checkpoint_hist=10,
)
DEFAULTS = {**engine.RUN_DEFAULTS, **DEFAULTS}  # momentum 0.9, weight decay 1e-4, cosine, ...


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

# Where SalfMix's saliency comes from (--saliency-source): shared with train_seg.py (saliency_sources).
check_saliency_source = saliency_sources.check_saliency_source
_restore_saliency_cache = saliency_sources.restore_saliency_cache

_PREACT_MODELS = ("preactresnet18", "preactresnet50", "preactresnet101")


# --- command line -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The parser, with :data:`DEFAULTS` (``--preset`` and ``--method`` change defaults, see parse_args)."""
    p = OneLineArgumentParser(
        prog=TASK.prog,
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

    add_augmentation_flags(p, grid_help="pooling grid n (paper: 4 CIFAR, 8 Tiny)")

    g = saliency_sources.add_saliency_source_flags(p, "where the saliency comes from, paper presets")
    g.add_argument("--preset", default=None, choices=tuple(PRESETS), help="the paper's hyper-parameters")

    engine.add_run_flags(p, DEFAULTS, os.path.join(".", "output", "train"))
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (``engine.parse_args``); ``--preset`` then ``--method`` set defaults that explicit flags
    override; with ``--resume`` / ``--evaluate`` the flags not given are the checkpoint's.

    Raises:
        UsageError: a flag is unknown or malformed, or the checkpoint cannot be resumed or evaluated.
    """
    return engine.parse_args(TASK, argv)[0]


def unused_flags(args: argparse.Namespace) -> list[str]:
    """The tuning flags given that nothing reads (``ClassificationTask.unused_flags``)."""
    return TASK.unused_flags(args)


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


# --- training -----------------------------------------------------------------------------------------


def soft_targets(run: engine.Run, target: torch.Tensor) -> torch.Tensor:
    """The baseline's class indices as soft targets (label-smoothed by ``--smoothing``)."""
    from salfmix_transforms.targets import to_soft_targets

    return to_soft_targets(target, run.num_classes, run.args.smoothing)


def soft_target_loss(run: engine.Run, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``SoftTargetCrossEntropy`` of the batch (the targets are always soft)."""
    return run.loss_fn(output, target)


def train_one_epoch(run: engine.Run, epoch: int) -> dict[str, float]:
    """One pass over this rank's shard (``engine.train_epoch``): soft targets, :func:`soft_target_loss`."""
    return engine.train_epoch(run, epoch, soft_target_loss, baseline_targets=soft_targets)


@torch.no_grad()
def validate(run: engine.Run, model: torch.nn.Module) -> dict[str, float]:
    """Loss and top-1 / top-5 error (in %) over the whole validation set (summed over ranks)."""
    from timm.utils import accuracy

    k5 = min(5, run.num_classes)
    sums = torch.zeros(4, dtype=torch.float64, device=run.device)  # loss, correct@1, correct@5, count
    for output, y in engine.validation_batches(run, model):
        output = output.float()
        acc1, acc5 = accuracy(output, y, topk=(1, k5))
        n = y.shape[0]
        sums += torch.stack(
            [
                F.cross_entropy(output, y, reduction="sum").double(),
                acc1.double() * n / 100,
                acc5.double() * n / 100,
                torch.tensor(float(n), dtype=torch.float64, device=run.device),
            ]
        )
    loss, c1, c5, count = all_reduce_sum(sums.tolist(), run.device, run.args.distributed)
    count = max(count, 1.0)
    return {"loss": loss / count, "top1_err": 100.0 * (1 - c1 / count), "top5_err": 100.0 * (1 - c5 / count)}


class ClassificationTask(engine.Task):
    """Image classification: soft targets and ``SoftTargetCrossEntropy``, checkpoints ranked by the top-1
    error (lower is better), an optional EMA, AMP and the saliency sources of ``--saliency-source``."""

    prog = "train_timm.py"
    name = "classification"  # the checkpoints' "task" (checkpoints.TASK_SCRIPTS): train_seg.py's are refused
    output_root = os.path.join(".", "output", "train")
    metric, higher_is_better, metric_label, metric_scale = "top1_err", False, "top-1 error", 1.0
    final_metrics = ("top1_err", "top5_err")
    val_batch_factor = 2
    # What --evaluate takes from the checkpoint's flags unless given: the model, its classes, the data and
    # the loader (batch and workers: the run's own validation pass, batch for batch).
    evaluate_flags = (
        "model", "width", "num_classes", "dataset", "data_dir", "train_split", "val_split", "img_size",
        "batch_size", "workers",
    )  # fmt: skip
    run_flags = (
        *evaluate_flags, "drop", "model_ema", "model_ema_decay", *saliency_sources.RUN_FLAGS,
        *engine.RUN_FLAGS,
    )  # fmt: skip

    def build_parser(self) -> argparse.ArgumentParser:
        return build_parser()

    def parse_defaults(self, first: argparse.Namespace) -> dict[str, Any]:
        return dict(PRESETS[first.preset]) if first.preset else {}

    def finish_args(self, args: argparse.Namespace) -> None:
        if args.width is None and args.model in _PREACT_MODELS:
            args.width = DEFAULTS["width"]

    def check_checkpoint(self, path: str, ckpt: dict[str, Any], args: argparse.Namespace) -> None:
        saved_width = getattr(ckpt.get("args"), "width", None)
        if saved_width is not None and args.width is not None and float(saved_width) != float(args.width):
            raise CheckpointError(f"checkpoint {path!r} has --width {saved_width}, not {args.width}")

    def unused_flags(self, args: argparse.Namespace) -> list[str]:
        """The engine's (the augmentation's), and ``--model-ema-decay`` without ``--model-ema``."""
        ema_decay_unused = "model_ema_decay" in args.given_flags and not args.model_ema
        return super().unused_flags(args) + (["--model-ema-decay"] if ema_decay_unused else [])

    def dataset_name(self, args: argparse.Namespace) -> str:
        from salfmix_transforms.data import canonical_name

        return canonical_name(args.dataset, args.data_dir)

    def datasets(self, run: engine.Run) -> tuple[Any, Any, int]:
        from salfmix_transforms.data import build_datasets

        args = run.args
        train_ds, val_ds, data_classes, run.extra["img_size"] = build_datasets(
            args.dataset,
            args.data_dir,
            train_split=args.train_split,
            val_split=args.val_split,
            img_size=args.img_size,
        )
        return train_ds, val_ds, data_classes

    def create_model(self, run: engine.Run) -> torch.nn.Module:
        return engine.place_model(run, _create_model(run.args, run.num_classes))

    def build(self, run: engine.Run) -> None:
        from timm.loss import SoftTargetCrossEntropy

        from salfmix_transforms.data import with_source_coordinates

        args, img_size, device = run.args, run.extra["img_size"], run.device
        check_grid_fits(args, img_size, img_size)
        saliency_sources.check_saliency_source(args)
        run.transform = build_batch_transform(args, run.num_classes)
        # --saliency-source cached: samples carry their index and source coordinates; the cache holds one map
        # per training image.
        saliency_sources.start_cached_source(run, with_source_coordinates)
        run.model = self.create_model(run)
        _check_input_size(run.model, args.model, img_size, device)
        run.loss_fn = SoftTargetCrossEntropy().to(device)

    def finish_model(self, run: engine.Run, ckpt: dict[str, Any] | None) -> None:
        from timm.models import load_checkpoint
        from timm.utils import ModelEmaV3

        args = run.args
        if args.model_ema:
            run.model_ema = ModelEmaV3(run.model, decay=args.model_ema_decay)
            if ckpt is not None:
                if "state_dict_ema" not in ckpt:
                    raise CheckpointError(f"checkpoint {args.resume!r} has no EMA weights; drop --model-ema")
                load_checkpoint(run.model_ema.module, args.resume, use_ema=True)

    def train_one_epoch(self, run: engine.Run, epoch: int) -> dict[str, float]:
        return train_one_epoch(run, epoch)

    def validate(self, run: engine.Run, model: torch.nn.Module, epoch: int) -> dict[str, float]:
        return validate(run, model)

    def show_metrics(self, metrics: dict[str, float]) -> str:
        return f"top-1 err {metrics['top1_err']:.2f}%  top-5 err {metrics['top5_err']:.2f}%"

    def describe(self, run: engine.Run) -> str:
        args, size = run.args, run.extra["img_size"]
        return (
            f"model {args.model} ({run.num_params / 1e6:.2f} M parameters, width {args.width}), "
            f"{run.num_classes} classes, {size}x{size} images, {len(run.train_ds)} train / {len(run.val_ds)} "
            f"val, augmentation {method_name(args)}: {run.transform!r}"
        )

    def results(self, run: engine.Run) -> dict[str, Any]:
        args = run.args
        return {"width": args.width, "img_size": run.extra["img_size"], "num_params": run.num_params}

    def evaluation_record(self, run: engine.Run) -> dict[str, Any]:
        return {"width": run.args.width, "img_size": run.extra["img_size"]}


TASK = ClassificationTask()


def main(argv: Sequence[str] | None = None) -> int:
    """Train as the flags say; 0 on success, 2 (one line on stderr) on bad input, 130 on Ctrl-C."""
    return engine.main(TASK, argv)


if __name__ == "__main__":
    sys.exit(main())
