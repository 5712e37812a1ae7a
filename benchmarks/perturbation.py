#!/usr/bin/env python3
"""How much each single-image augmentation changes what a trained network sees in its training images.

A regulariser can only teach a network that has memorised its training set if the augmented images are
harder than the clean ones. This script measures that directly: it loads a network trained by
``train_timm.py`` (a run folder of the accuracy benchmark), applies each method's batch transform, built
exactly as ``train_timm.py --method M`` builds it, to the training images (the evaluation transform: no
crop, no flip), and reports the network's cross-entropy and top-1 error on the augmented images, beside the
share of pixels each method changed. The saliency methods take their gradient saliency from the same
network, as they do in training.

Examples::

    python benchmarks/perturbation.py --run benchmarks/results/runs/cpu-mini/cpu-mini-baseline-s0-f421f514f2
    python benchmarks/perturbation.py --quick     # random network on the embedded digits (smoke run)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_timm  # noqa: E402  (the training script builds the transforms and the model)

METHODS = ("baseline", "cutout", "cutout-sal", "salfmix-nosal", "salfmix")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a train_timm.py output folder (args.json + checkpoint)")
    parser.add_argument("--checkpoint", default="model_best.pth.tar", help="checkpoint file in --run")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-batches", type=int, default=None, help="stop after N batches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="untrained network on digits, 2 batches")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    if args.run is None and not args.quick:
        parser.error("--run is required (or --quick)")
    return args


def load_run_args(args: argparse.Namespace) -> tuple[argparse.Namespace, str]:
    """The training arguments of ``--run`` (``train_timm.py``'s defaults with ``--quick``) and a label."""
    run_args = train_timm.parse_args([])
    if args.quick:
        return run_args, "untrained preactresnet18 (width 0.25), embedded digits (--quick)"
    for key, value in json.loads((args.run / "args.json").read_text()).items():
        setattr(run_args, key, value)
    return run_args, f"{args.run.name}/{args.checkpoint}"


def build_transform(method: str, run_args: argparse.Namespace, num_classes: int) -> Any:
    """The batch transform of ``train_timm.py --method method`` with the run's grid and ratio, past its
    warm-up epoch (``None`` for the baseline)."""
    flags = ["--method", method]
    for flag in ("salfmix_grid", "salfmix_ratio"):
        flags += ["--" + flag.replace("_", "-"), str(getattr(run_args, flag))]
    transform = train_timm.build_batch_transform(train_timm.parse_args(flags), num_classes)
    if transform is not None:
        transform.set_epoch(1)
    return transform


def probe(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    transforms: dict[str, Any],
    seed: int,
    max_batches: int | None,
) -> tuple[dict[str, dict[str, float]], int]:
    """Sums over the images of the network's cross-entropy, its errors and the share of pixels changed,
    per method; and the number of images. Every method sees the same batches and the same seed."""
    totals = {m: {"loss": 0.0, "wrong": 0.0, "changed": 0.0, "seconds": 0.0} for m in transforms}
    count = 0
    for index, (x, y) in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        count += x.shape[0]
        for method, transform in transforms.items():
            torch.manual_seed(seed * 100_003 + index)
            start = time.perf_counter()
            # Single-image methods keep the label, so only the pixels are used (``inplace``: on a copy).
            x_aug = x if transform is None else transform(x.clone(), y, model=model)[0]
            totals[method]["seconds"] += time.perf_counter() - start
            with torch.no_grad():
                logits = model(x_aug)
            totals[method]["loss"] += F.cross_entropy(logits, y, reduction="sum").item()
            totals[method]["wrong"] += (logits.argmax(dim=1) != y).sum().item()
            totals[method]["changed"] += (x_aug != x).any(dim=1).float().mean(dim=(1, 2)).sum().item()
    return totals, count


def format_table(totals: dict[str, dict[str, float]], count: int) -> str:
    """Means per image, and the cross-entropy as a multiple of the clean images' (the baseline row)."""
    clean_loss = totals["baseline"]["loss"] / count if "baseline" in totals else None
    lines = [
        "| method | train-image CE | CE / clean | top-1 err % | pixels changed % | transform s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method, t in totals.items():
        loss = t["loss"] / count
        ratio = f"{loss / clean_loss:.2f}x" if clean_loss else "—"
        lines.append(
            f"| `{method}` | {loss:.3f} | {ratio} | {100 * t['wrong'] / count:.2f} | "
            f"{100 * t['changed'] / count:.1f} | {t['seconds']:.1f} |"
        )
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> tuple[str, str]:
    """The header line and the table for ``args``."""
    from timm.models import load_checkpoint

    from salfmix_transforms.data import build_datasets

    run_args, source = load_run_args(args)
    # Training images with the evaluation transform (val_split = the training split).
    _, images, num_classes, _ = build_datasets(
        run_args.dataset, run_args.data_dir, train_split=run_args.train_split, val_split=run_args.train_split
    )
    torch.manual_seed(args.seed)  # the untrained network of --quick
    model = train_timm._create_model(run_args, num_classes)
    if not args.quick:
        load_checkpoint(model, str(args.run / args.checkpoint))
    model.eval()
    loader = torch.utils.data.DataLoader(images, batch_size=16 if args.quick else args.batch_size)
    transforms = {method: build_transform(method, run_args, num_classes) for method in args.methods}
    totals, count = probe(model, loader, transforms, args.seed, 2 if args.quick else args.max_batches)
    header = f"Network: {source}; {count} training images, evaluation transform, seed {args.seed}."
    return header, format_table(totals, count)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    header, table = measure(args)
    text = f"{header}\n\n{table}\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
