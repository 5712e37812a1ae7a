"""How close the cached and the low-resolution saliency come to the exact one, epoch by epoch (issue 14).

A short SalfMix training run whose saliency comes from a ``SaliencyCache`` (written from the training step's
own input gradient, read one visit later). After every epoch, on the same augmented views of held-out
training images (a fixed subset, views drawn once with a fixed seed), the cells SalfMix would pick (R_m, the
argmax, and R_l, the argmin, of the n x n pooled map, Algorithm 1 lines 1-2) are compared with those of the
exact map of the current network (eq. 2-3):

* ``cached``: the map the cache holds for the view (written during the epoch, by the networks of that epoch);
* ``lowres``: the exact pass on the view down-scaled by 0.5 (``saliency_scale=0.5``);
* ``previous epoch``: the exact map of the previous epoch's network, the reference for what one epoch of
  staleness costs.

For each, the table gives how often R_m (and R_l) is the same cell as the exact one, and how often it is
the same or a neighbouring cell (Chebyshev distance <= 1).

    python benchmarks/fidelity.py                      # cifar10-5k (../shared/data), 8 epochs
    python benchmarks/fidelity.py --quick              # embedded digits, 2 epochs, seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

import salfmix_transforms.models  # noqa: F401  (registers preactresnet18 in timm)
from salfmix_transforms import methods
from salfmix_transforms.patches import pool_saliency
from salfmix_transforms.saliency import gradient_saliency, lowres_gradient_saliency, saliency_from_gradient
from salfmix_transforms.saliency_cache import IndexedViews, SaliencyCache

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-5k"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=CIFAR, help="ImageFolder root with train/")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--width", type=float, default=0.25, help="PreActResNet-18 width")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--probe", type=int, default=512, help="held-out training images compared")
    parser.add_argument("--grid", type=int, default=4, help="SalfMix's n")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N (shuffled) images only")
    parser.add_argument(
        "--quick", action="store_true", help="embedded digits, 256 images, 2 epochs, 32 probes"
    )
    parser.add_argument("--out", type=Path, help="also write the markdown to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.probe, args.width, args.limit = 2, 32, 0.125, 256
    return args


class _Raw(Dataset):
    """(PIL or tensor image, label) without a transform, from an ImageFolder or the embedded digits."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.quick:
            from salfmix_transforms.data import build_datasets

            train, _, self.num_classes, _ = build_datasets("digits")
            self.images, self.labels = train.images, train.labels.tolist()
            self.mean, self.std = (0.0,) * 3, (1.0,) * 3  # digits are stored normalised already
        else:
            from torchvision.datasets import ImageFolder

            folder = ImageFolder(str(args.data_dir / "train"))
            self.images, self.labels = [p for p, _ in folder.samples], [t for _, t in folder.samples]
            self.num_classes = len(folder.classes)
            self.mean, self.std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[object, int]:
        image = self.images[index]
        if isinstance(image, str):
            from PIL import Image

            image = Image.open(image).convert("RGB")
        return image, self.labels[index]


def _pipeline(raw: _Raw) -> v2.Compose:
    """The CIFAR recipe: zero-padded random crop and a horizontal flip, then normalisation (image only)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomCrop(32, padding=4),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(raw.mean, raw.std),
        ]
    )


def _cells(maps: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) (B, 2) of R_m and R_l of the n x n pooled maps (first index on ties)."""
    size = maps.shape[-1] // grid
    pooled = pool_saliency(maps, size, size).flatten(1)
    to_cell = lambda i: torch.stack((i // grid, i % grid), dim=1)  # noqa: E731
    return to_cell(pooled.argmax(1)), to_cell(pooled.argmin(1))


def _agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Share of equal cells, share of equal-or-neighbouring cells (Chebyshev distance <= 1), in %."""
    distance = (a - b).abs().amax(dim=1)
    return 100.0 * float((distance == 0).float().mean()), 100.0 * float((distance <= 1).float().mean())


def _exact(model: torch.nn.Module, probe: list, scale: float = 1.0) -> torch.Tensor:
    maps = []
    for x, y, _, _ in probe:
        if scale == 1.0:
            maps.append(gradient_saliency(model, x, y))
        else:
            maps.append(lowres_gradient_saliency(model, x, y, scale))
    return torch.cat(maps)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.quick and not (args.data_dir / "train").is_dir():
        print(f"fidelity.py: no ImageFolder at {args.data_dir}/train (use --quick)", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    raw = _Raw(args)
    views = IndexedViews(raw, _pipeline(raw))
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(views), generator=generator)
    probe_ids = order[: args.probe].tolist()
    if args.limit is not None:
        views = torch.utils.data.Subset(views, order[: args.limit].tolist())  # the probe images among them
    torch.manual_seed(args.seed + 1)  # the probe views: drawn once, the same at every epoch
    probe = list(
        DataLoader(torch.utils.data.Subset(IndexedViews(raw, _pipeline(raw)), probe_ids), args.batch_size)
    )
    loader = DataLoader(views, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=generator)

    model = timm.create_model("preactresnet18", num_classes=raw.num_classes, width=args.width)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * len(loader))
    salfmix = methods.build("salfmix", raw.num_classes, grid=args.grid)
    cache = SaliencyCache(len(raw))  # indices are those of the whole set
    previous = None
    rows = []
    started = time.perf_counter()
    for epoch in range(args.epochs):
        salfmix.set_epoch(epoch)
        model.train()
        for x, y, index, coords in loader:
            x, target = salfmix(x, y, saliency=cache.read(index, coords))
            x.requires_grad_(True)
            loss = F.cross_entropy(model(x), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if torch.isfinite(loss):
                cache.write(index, coords, saliency_from_gradient(x.grad), epoch, salfmix.provenance)
            optimizer.step()
            scheduler.step()
        exact = _cells(_exact(model, probe), args.grid)
        cached = _cells(torch.cat([cache.read(i, c) for _, _, i, c in probe]), args.grid)
        lowres = _cells(_exact(model, probe, 0.5), args.grid)
        row = [epoch]
        for other in (cached, lowres, previous):
            for kind in (0, 1):  # R_m, R_l
                row += list(_agreement(other[kind], exact[kind])) if other is not None else [None, None]
        rows.append(row)
        previous = exact
        print(f"[fidelity] epoch {epoch} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    print(_markdown(args, rows, len(views), time.perf_counter() - started, out=args.out))
    return 0


def _markdown(args: argparse.Namespace, rows: list, size: int, seconds: float, out: Path | None) -> str:
    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    header = ["epoch"] + [
        f"{source} {cell_name} {kind}"
        for source in ("cached", "lowres", "prev. epoch")
        for cell_name in ("R_m", "R_l")
        for kind in ("=", "≈")
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
    ]
    lines += ["| " + " | ".join([str(r[0])] + [cell(v) for v in r[1:]]) + " |" for r in rows]
    data = "embedded digits" if args.quick else str(args.data_dir)
    text = "\n".join(
        [
            f"Fidelity of the saliency sources: {data} ({size} training images), PreActResNet-18 width "
            f"{args.width}, batch {args.batch_size}, {args.epochs} epochs of SalfMix with cached saliency "
            f"(epoch 0: warm-up), n = {args.grid}; {args.probe} held-out training views; {seconds:.0f} s. "
            "`=`: % of views whose cell equals the exact map's; `≈`: same or neighbouring cell.",
            "",
            *lines,
        ]
    )
    if out is not None:
        out.write_text(text + "\n")
    return text


if __name__ == "__main__":
    raise SystemExit(main())
