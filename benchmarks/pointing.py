"""Does the saliency point at the object? SalfMix's cells against the object boxes of ``tin20`` (issue 23).

For every trained network given (a ``train_timm.py`` run folder), on the validation images that have an object
box (``val_boxes.tsv`` of ``../shared/data/tin20``: file, wnid, x0, y0, x1, y1, inclusive pixels), the
saliency map of the true class is computed (eq. 2-3: ``M = max_c |dCE(f(x), y)/dx|``, the pass SalfMix
makes, BatchNorm in training mode as in ``SalfMix(saliency_mode="train")``), average-pooled to SalfMix's
n x n grid (Algorithm 1, line 1), and its argmax cell R_m and argmin cell R_l (line 2) are compared with the
box:

* ``R_m on box``: % of images whose R_m has its centre inside the box (the copied patch P_m ⊇ R_m then
  shows the object);
* ``R_l off box``: % of images whose R_l has its centre outside the box (the pasted-over patch P_l ⊇ R_l
  then hides background, not the object);
* ``chance``: the same rates for a cell drawn uniformly at random, i.e. the share of the grid's cell
  centres inside the box (mean over the images); the box's pixel share of the image is given too.

Each network is scored with two maps: ``exact``, the map itself, and ``cached form``, the same map stored
the way ``SaliencyCache`` stores it (16 x 16 cells, bfloat16) and read back. The cache itself cannot be
scored on these images: it holds maps of training images only, and only validation images have boxes. The
cached form isolates what the cache's resolution and precision cost; what one epoch of staleness costs is
measured by ``fidelity.py``.

    python benchmarks/pointing.py --runs benchmarks/results/runs/tin20/*/   # every tin20 run (minutes)
    python benchmarks/pointing.py --runs RUN --out pointing.md --limit 200
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

import salfmix_transforms.models  # noqa: F401  (registers preactresnet18 in timm)
from salfmix_transforms import methods
from salfmix_transforms.data import build_datasets
from salfmix_transforms.patches import pool_saliency
from salfmix_transforms.saliency import gradient_saliency
from salfmix_transforms.saliency_cache import SaliencyCache, source_coordinates

ROOT = Path(__file__).resolve().parents[1]
TIN20 = ROOT.parent / "shared" / "data" / "tin20"


@dataclass(frozen=True)
class Pointing:
    """Rates in % over the scored images (see the module docstring)."""

    images: int
    max_on_box: float
    min_off_box: float
    chance_on_box: float
    box_share: float


def read_boxes(path: Path) -> dict[str, tuple[int, int, int, int]]:
    """``file name -> (x0, y0, x1, y1)`` (inclusive pixels) from a ``val_boxes.tsv``."""
    boxes = {}
    with path.open() as f:
        for row in csv.reader(f, delimiter="\t"):
            if row:
                boxes[row[0]] = tuple(int(v) for v in row[2:6])
    return boxes


def cell_centres_in_boxes(boxes: torch.Tensor, size: int, grid: int) -> torch.Tensor:
    """(B, n, n) bool: whether the centre of each cell of the n x n grid lies in the image's box.

    ``boxes``: (B, 4) ``x0, y0, x1, y1`` inclusive pixels; cells are ``size // grid`` pixels (the pooling of
    :func:`~salfmix_transforms.patches.pool_saliency`, kernel = stride).
    """
    cell = size // grid
    centre = torch.arange(grid, dtype=torch.float64) * cell + (cell - 1) / 2
    x0, y0, x1, y1 = (boxes[:, i].double().view(-1, 1) for i in range(4))
    rows = (centre >= y0) & (centre <= y1)  # (B, n)
    cols = (centre >= x0) & (centre <= x1)
    return rows[:, :, None] & cols[:, None, :]


def pointing(maps: torch.Tensor, boxes: torch.Tensor, grid: int) -> Pointing:
    """How often R_m (argmax cell) lies on the box and R_l (argmin cell) off it, for maps (B, H, W)."""
    size = maps.shape[-1]
    pooled = pool_saliency(maps, size // grid, size // grid).flatten(1)
    inside = cell_centres_in_boxes(boxes, size, grid).flatten(1)
    rows = torch.arange(maps.shape[0])
    max_on = inside[rows, pooled.argmax(1)].double().mean()
    min_off = (~inside[rows, pooled.argmin(1)]).double().mean()
    width = (boxes[:, 2] - boxes[:, 0] + 1).double()
    height = (boxes[:, 3] - boxes[:, 1] + 1).double()
    share = (width * height / (maps.shape[-2] * size)).mean()
    return Pointing(
        images=maps.shape[0],
        max_on_box=100 * float(max_on),
        min_off_box=100 * float(min_off),
        chance_on_box=100 * float(inside.double().mean()),
        box_share=100 * float(share),
    )


def cached_form(maps: torch.Tensor) -> torch.Tensor:
    """The maps as a :class:`SaliencyCache` holds them (its cells, bfloat16), read back at full size."""
    batch, height, width = maps.shape
    cache = SaliencyCache(batch)
    index = torch.arange(batch)
    coords = source_coordinates(height, width).expand(batch, -1, -1, -1)
    cache.write(index, coords, maps, epoch=0)
    return cache.read(index, coords)


def load_network(run: Path, num_classes: int) -> tuple[torch.nn.Module, dict]:
    """The run's best network (``model_best.pth.tar``, else ``last.pth.tar``) and its ``args.json``."""
    args = json.loads((run / "args.json").read_text())
    model = timm.create_model(args["model"], num_classes=num_classes, width=args.get("width", 1.0))
    checkpoint = run / "model_best.pth.tar"
    if not checkpoint.is_file():
        checkpoint = run / "last.pth.tar"
    timm.models.load_checkpoint(model, str(checkpoint))  # our own run's file: timm's loader
    return model, args


def boxed_validation_images(data_dir: Path, limit: int | None) -> tuple:
    """Images (B, 3, H, W) as the training script evaluates them, labels (B,), boxes (B, 4), classes."""
    _, val_ds, num_classes, _ = build_datasets("folder", str(data_dir), val_split="val")
    boxes = read_boxes(data_dir / "val_boxes.tsv")
    chosen = [i for i, (path, _) in enumerate(val_ds.reader.samples) if Path(path).name in boxes]
    chosen = chosen[:limit] if limit else chosen
    images, labels = zip(*(val_ds[i] for i in chosen), strict=True)
    names = [Path(val_ds.reader.samples[i][0]).name for i in chosen]
    box_tensor = torch.tensor([boxes[name] for name in names])
    return torch.stack(images), torch.tensor(labels), box_tensor, num_classes


def score(model: torch.nn.Module, images, labels, boxes, grid: int, batch: int) -> dict[str, Pointing]:
    maps = torch.cat(
        [
            gradient_saliency(model, images[i : i + batch], labels[i : i + batch])
            for i in range(0, len(labels), batch)
        ]
    )
    return {"exact": pointing(maps, boxes, grid), "cached form": pointing(cached_form(maps), boxes, grid)}


def markdown(rows: list[tuple[str, dict[str, Pointing]]], grid: int) -> str:
    header = (
        "| network | images | box share % | chance % (R_m on box) | exact: R_m on box % "
        "| exact: R_l off box % | cached form: R_m on box % | cached form: R_l off box % |"
    )
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, result in rows:
        exact, cached = result["exact"], result["cached form"]
        lines.append(
            f"| {name} | {exact.images} | {exact.box_share:.1f} | {exact.chance_on_box:.1f} "
            f"| {exact.max_on_box:.1f} | {exact.min_off_box:.1f} "
            f"| {cached.max_on_box:.1f} | {cached.min_off_box:.1f} |"
        )
    intro = (
        f"SalfMix's cells (grid n = {grid}) against the object boxes: R_m on the box and R_l off it, in % of "
        "the images; chance for R_l off the box is 100 minus the chance for R_m on it."
    )
    return "\n".join([intro, "", *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="train_timm.py run folders")
    parser.add_argument(
        "--data-dir", type=Path, default=TIN20, help="ImageFolder with val/ and val_boxes.tsv"
    )
    parser.add_argument("--grid", type=int, default=8, help="SalfMix's n (paper: 8 at 64 px)")
    parser.add_argument("--limit", type=int, help="score the first N boxed images only")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", type=Path, help="also write the markdown to this file")
    args = parser.parse_args(argv)
    if not (args.data_dir / "val_boxes.tsv").is_file():
        print(f"pointing.py: skipped, no val_boxes.tsv in {args.data_dir}", file=sys.stderr)
        return 0
    images, labels, boxes, num_classes = boxed_validation_images(args.data_dir, args.limit)
    rows = []
    for run in args.runs:
        if not (run / "args.json").is_file():
            print(f"pointing.py: {run} is not a train_timm.py run folder (no args.json)", file=sys.stderr)
            return 2
        model, run_args = load_network(run, num_classes)
        method = run_args.get("method")
        trained_with = ""
        if method in methods.METHODS and methods.spec(method).needs_model:  # how its own saliency came
            trained_with = f" ({run_args.get('saliency_source', 'exact')} saliency)"
        name = f"`{method}`{trained_with}, seed {run_args.get('seed')}"
        rows.append((name, score(model, images, labels, boxes, args.grid, args.batch_size)))
        print(f"[pointing] {run.name} done", file=sys.stderr)
    text = markdown(rows, args.grid)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
