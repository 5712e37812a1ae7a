#!/usr/bin/env python3
"""How much each augmentation changes what a trained network sees in its training images.

A regulariser can only teach a network that has memorised its training set if the augmented images are
harder than the clean ones. This script measures that directly: it loads a network trained by
``train_timm.py`` (a run folder of the accuracy benchmark), applies each method's batch transform, built
exactly as ``train_timm.py --method M`` builds it, to the training images (the evaluation transform: no
crop, no flip), and reports the network's cross-entropy against the method's (soft) targets and its top-1
error against their largest class, beside the share of pixels each method changed. The saliency methods
take their gradient saliency from the same network, as they do in training.

Two-image methods (``--methods cutmix hybridmix-v3 ...``) also get the *share gap*: for every sample that
mixes two classes a and b with label weights lam_a >= lam_b, the network's split between them,
p_a / (p_a + p_b), against lam_a. Probed with a network that knows every clean training image (the
baseline's), it says how far the label's split is from what the mixed pixels show that network; a method
whose label follows its pixels less gets a larger gap.

Examples::

    python benchmarks/perturbation.py --run benchmarks/results/runs/cpu-mini/cpu-mini-baseline-s0-f421f514f2
    python benchmarks/perturbation.py --run <run> --methods cutmix hybridmix-v3   # two-image methods
    python benchmarks/perturbation.py --quick     # random network on the embedded digits (smoke run)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import timm
import torch

from salfmix_transforms import methods
from salfmix_transforms.targets import one_hot

# What --quick probes: an untrained network as ``python train_timm.py`` builds it, on the embedded digits.
QUICK_RUN = dict(
    model="preactresnet18",
    width=0.25,
    drop=0.0,
    dataset="digits",
    data_dir=None,
    train_split="train",
    salfmix_grid=4,
    salfmix_ratio=0.3,
    mixup_mode="batch",
)

METHODS = ("baseline", "cutout", "cutout-sal", "salfmix-nosal", "salfmix")
TWO_IMAGE_METHODS = ("mixup", "cutmix", "saliencymix", "hybridmix-v1", "hybridmix-v2", "hybridmix-v3")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a train_timm.py output folder (args.json + checkpoint)")
    parser.add_argument("--checkpoint", default="model_best.pth.tar", help="checkpoint file in --run")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=METHODS + TWO_IMAGE_METHODS,
        metavar="METHOD",
        help=f"default: the single-image methods; also {', '.join(TWO_IMAGE_METHODS)}",
    )
    parser.add_argument(
        "--mixup-mode",
        choices=("batch", "pair", "elem"),
        default=None,
        help="two-image methods' mode (default: the run's); 'elem' draws lam per image, so a probe over few "
        "batches is not at the mercy of a few batch-wide draws",
    )
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
    run_args = argparse.Namespace(**QUICK_RUN)
    if args.quick:
        return run_args, "untrained preactresnet18 (width 0.25), embedded digits (--quick)"
    for key, value in json.loads((args.run / "args.json").read_text()).items():
        setattr(run_args, key, value)
    return run_args, f"{args.run.name}/{args.checkpoint}"


def build_transform(method: str, run_args: argparse.Namespace, num_classes: int) -> Any:
    """The registry's transform of ``method`` (what ``train_timm.py --method method`` trains with) with the
    run's grid, ratio and mixup mode, past its warm-up epoch (``None`` for the baseline)."""
    spec = methods.spec(method)
    overrides: dict[str, Any] = {"label_smoothing": getattr(run_args, "smoothing", 0.0)}
    if spec.self_mixing:
        prefix = "salfmix_" if spec.two_image else ""
        overrides.update({f"{prefix}grid": run_args.salfmix_grid, f"{prefix}ratio": run_args.salfmix_ratio})
    if spec.two_image:
        overrides["mode"] = run_args.mixup_mode
    if method == "baseline":
        return None
    if method == "cutout":
        overrides["mask_ratio"] = getattr(run_args, "cutout_ratio", 0.5)
    transform = methods.build(method, num_classes, **overrides)
    if transform is not None:
        transform.set_epoch(1)
    return transform


def share_gap(log_probs: torch.Tensor, soft: torch.Tensor) -> tuple[float, float, int]:
    """Over the two-class samples: the sum of |p_a / (p_a + p_b) - lam_a|, the number of samples where the
    network agrees with the label on the larger class (p_a > p_b), and the number of samples.

    a and b are the two classes with the largest label weights, lam_a >= lam_b > 0 (ties count as agreed);
    samples whose label has one class (unmixed, or both images of the pair from the same class) are left out.
    ``log_probs`` are the network's log-probabilities (B, num_classes).
    """
    weights, classes = soft.topk(2, dim=1)
    two = weights[:, 1] > 0
    p = log_probs.gather(1, classes).exp()
    split = p[:, 0] / p.sum(dim=1).clamp_min(torch.finfo(p.dtype).tiny)
    agree = (split > 0.5) | (weights[:, 0] == weights[:, 1])
    return (split - weights[:, 0]).abs()[two].sum().item(), agree[two].sum().item(), int(two.sum())


def probe(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    transforms: dict[str, Any],
    seed: int,
    max_batches: int | None,
) -> tuple[dict[str, dict[str, float]], int]:
    """Sums over the images of the network's cross-entropy against the method's soft targets, its errors
    against their largest class, the share of pixels changed and the share gap (:func:`share_gap`), per
    method; and the number of images. Every method sees the same batches and the same seed."""
    keys = ("loss", "wrong", "changed", "seconds", "gap", "agree", "pairs")
    totals = {m: dict.fromkeys(keys, 0.0) for m in transforms}
    count = 0
    for index, (x, y) in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        count += x.shape[0]
        for method, transform in transforms.items():
            torch.manual_seed(seed * 100_003 + index)
            start = time.perf_counter()
            # ``inplace`` transforms work on a copy; the baseline keeps the one-hot labels.
            x_aug, soft = (x, None) if transform is None else transform(x.clone(), y, model=model)
            totals[method]["seconds"] += time.perf_counter() - start
            with torch.no_grad():
                log_probs = model(x_aug).log_softmax(dim=1)
            if soft is None:
                soft = one_hot(y, log_probs.shape[1])
            gap, agree, pairs = share_gap(log_probs, soft)
            t = totals[method]
            t["loss"] += -(soft * log_probs).sum().item()
            t["wrong"] += (log_probs.argmax(dim=1) != soft.argmax(dim=1)).sum().item()
            t["changed"] += (x_aug != x).any(dim=1).float().mean(dim=(1, 2)).sum().item()
            t["gap"] += gap
            t["agree"] += agree
            t["pairs"] += pairs
    return totals, count


def format_table(totals: dict[str, dict[str, float]], count: int) -> str:
    """Means per image, the cross-entropy as a multiple of the clean images' (the baseline row), and over
    the two-class samples the mean share gap (percentage points) and the share of samples where the network
    agrees with the label on the larger class ("—" for single-image methods)."""
    clean_loss = totals["baseline"]["loss"] / count if "baseline" in totals else None
    lines = [
        "| method | train-image CE | CE / clean | top-1 err % | pixels changed % | share gap % "
        "| larger class agreed % | transform s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method, t in totals.items():
        loss = t["loss"] / count
        ratio = f"{loss / clean_loss:.2f}x" if clean_loss else "—"
        gap, agree = (
            (f"{100 * t['gap'] / t['pairs']:.1f}", f"{100 * t['agree'] / t['pairs']:.1f}")
            if t["pairs"]
            else ("—", "—")
        )
        lines.append(
            f"| `{method}` | {loss:.3f} | {ratio} | {100 * t['wrong'] / count:.2f} | "
            f"{100 * t['changed'] / count:.1f} | {gap} | {agree} | {t['seconds']:.1f} |"
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
    import salfmix_transforms.models  # noqa: F401  (registers preactresnet18/50/101 in timm)

    width = {} if run_args.width is None else {"width": run_args.width}
    model = timm.create_model(run_args.model, num_classes=num_classes, drop_rate=run_args.drop, **width)
    if not args.quick:
        load_checkpoint(model, str(args.run / args.checkpoint))
    model.eval()
    # Shuffled (with the seed) as in training: the folder is sorted by class, so unshuffled batches would
    # pair mostly images of one class and two-image methods would rarely mix two classes.
    loader = torch.utils.data.DataLoader(
        images,
        batch_size=16 if args.quick else args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    if args.mixup_mode:
        run_args.mixup_mode = args.mixup_mode
    transforms = {method: build_transform(method, run_args, num_classes) for method in args.methods}
    totals, count = probe(model, loader, transforms, args.seed, 2 if args.quick else args.max_batches)
    header = (
        f"Network: {source}; {count} training images, evaluation transform, seed {args.seed}, "
        f"two-image mode {run_args.mixup_mode!r}."
    )
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
