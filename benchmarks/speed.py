"""Speed of the package's transforms, side by side with timm, torchvision and kornia, in one process.

Five sections, each printed as a markdown table of median times and of ratios measured in the same run:

1. **Mixing cost given the images** (no model): our ``CutMix`` / ``Mixup`` / ``SaliencyMix`` / ``ResizeMix``
   (``batch`` and ``elem`` modes) and ``SalfMix`` (saliency map precomputed) against ``timm.data.Mixup``
   (``batch`` and ``elem`` modes), ``torchvision.transforms.v2.CutMix`` / ``MixUp`` and kornia's
   ``RandomCutMixV2`` / ``RandomMixUpV2``.
2. **Saliency cost**: one training step (forward, backward, SGD step) of PreActResNet-18, plain against
   SalfMix and HybridMix v3 (both compute the gradient saliency of the model being trained).
3. **Fine-grained static saliency**: the batched torch version against a per-image loop of the same
   function (and OpenCV's ``cv2.saliency`` when it is importable).
4. **Saliency sources**: the SalfMix / HybridMix v3 step with the exact saliency pass, with maps from a
   ``SaliencyCache`` written from the step's own input gradient, and with the pass at half resolution.
5. **Saliency sources in segmentation** (``--sections 5`` or ``--task seg``, not in the default run): section
   4 for ``train_seg.py``'s step: ``tinyseg`` on random images of CamVid's size (128x168, 11 classes,
   ``ignore_index`` 255), the dense soft-target loss, against the plain step (cross-entropy with
   ``ignore_index``).

Method: every candidate of a table cell group is timed round-robin (one repeat of each in turn, ``repeats``
times), so that a change of machine load hits all of them alike; a repeat runs the call ``number`` times
(calibrated so that a repeat lasts a few milliseconds) and the table shows the median over repeats. CUDA is
synchronized around every repeat. Ratios are always between times of the same run; those of the training
steps (sections 2, 4, 5) are paired by round (the median over the rounds of the step over the plain step of
the same round, with a distribution-free 95 % interval of that median), which cancels the slow drifts of a
shared machine that a ratio of two medians can pick up.

    python benchmarks/speed.py                 # full run (several minutes on 2 CPU cores)
    python benchmarks/speed.py --quick         # sections 1-4, small settings, about a minute
    python benchmarks/speed.py --out speed.md  # also write the markdown to a file
    python benchmarks/speed.py --task seg --threads 1 --step-repeats 20   # section 5 (segmentation)
    python benchmarks/speed.py --sections 4 --step-size 64 --step-batch 128 --amp bf16 --channels-last \
        --compile --json step.json             # section 4 as one configuration, its numbers also as JSON
    python benchmarks/speed.py --task seg --json seg.json                  # section 5, also as JSON

``--amp bf16``, ``--channels-last`` and ``--compile`` apply to section 4 only, ``--channels-last`` also to
section 5 (section 2 has its own bf16 and channels_last rows); ``--compile`` compiles the model only
(``torch.compile(model)``, mode default), which both the training step and the transforms' saliency pass
then call, and times after the warm-up calls (at least 3 per candidate, so every graph is compiled before the
clock runs).

The exit status is 1 when one of the package's own transforms failed (its cell shows ``error``); a missing
optional library (kornia, OpenCV's contrib saliency module) only gives ``n/a``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(ROOT))

NUM_CLASSES = 10

# ---------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float | None, float | None]:
    """The median of ``values`` and a distribution-free ``confidence`` interval for it.

    The interval is ``[x_(k), x_(n+1-k)]`` of the sorted values (1-based), ``k`` the largest with
    ``P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2``: it holds the true median with at least that
    probability whatever the distribution of the times (no normality: step times are skewed). With too few
    values even the range holds it less often (``1 - 2 / 2**n``: fewer than 6 values at 95 %); the bounds
    are then ``None``, not an interval that says more than it knows.
    """
    if not values:
        raise ValueError("values must hold at least one time, got none")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    ordered = sorted(values)
    n = len(ordered)
    tail, below, k = (1.0 - confidence) / 2.0, 0.0, 0
    for i in range(n):  # below = P(Binomial(n, 1/2) <= i)
        below += math.comb(n, i) / 2.0**n
        if below > tail:
            break
        k = i + 1
    if k == 0:
        return statistics.median(ordered), None, None
    return statistics.median(ordered), ordered[k - 1], ordered[n - k]


@dataclass
class Timing:
    """Median seconds per call of every candidate of a group, the time of every round, and why a candidate
    has no time."""

    seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # name -> "error: ..." or "n/a: ..."
    rounds: dict[str, list[float]] = field(default_factory=dict)  # name -> seconds per call, round by round

    def get(self, name: str) -> float | None:
        return self.seconds.get(name)

    def cell(self, name: str, unit: str) -> str:
        if name in self.seconds:
            return fmt_time(self.seconds[name], unit)
        return self.errors.get(name, "n/a").split(":")[0]

    def ratio(self, name: str, baseline: str) -> tuple[float, float | None, float | None] | None:
        """``name`` over ``baseline``, paired by round: the median over the rounds of the two times of the
        same round, with its 95 % interval (:func:`median_interval`: ``None`` bounds below 6 rounds);
        ``None`` if either has no time.

        Why paired: the candidates of one round run seconds apart, so a shared machine's slow spells (other
        jobs, clock changes) hit both times of a round; the ratio of the two medians can take them from
        different spells (one sitting of section 5 gave 1.06x-1.14x for the same code that way).
        """
        numerator, denominator = self.rounds.get(name), self.rounds.get(baseline)
        if not numerator or not denominator:
            return None
        ratios = [a / b for a, b in zip(numerator, denominator, strict=True) if b > 0]
        return median_interval(ratios) if ratios else None

    def ratio_cell(self, name: str, baseline: str) -> str:
        """``"1.07x (1.05-1.09)"``: :meth:`ratio` and its interval, for a table."""
        ratio = self.ratio(name, baseline)
        if ratio is None:
            return "n/a"
        median, low, high = ratio
        if low is None or high is None:
            rounds = len(self.rounds[name])
            return f"{fmt_ratio(median, 1.0)} (no interval: {rounds} round{'s' if rounds > 1 else ''})"
        return f"{fmt_ratio(median, 1.0)} ({low:.2f}-{high:.2f})"


class NotAvailable(Exception):
    """An optional competitor cannot run here (library missing): reported as ``n/a``, not as an error."""


def time_group(
    fns: dict[str, Callable[[], Callable[[], object]]],
    *,
    device: torch.device,
    repeats: int,
    warmup: int,
    min_repeat_s: float,
) -> Timing:
    """Median time per call of each candidate, measured round-robin.

    ``fns`` maps a name to a *factory* returning the zero-argument callable to time (setup work such as
    building a model or a transform happens in the factory, outside the timed region). A factory or a
    warm-up call that raises marks that candidate ``error`` (or ``n/a`` for :class:`NotAvailable`) and the
    others go on.
    """
    result = Timing()
    calls: dict[str, Callable[[], object]] = {}
    numbers: dict[str, int] = {}
    for name, factory in fns.items():
        try:
            fn = factory()
            for _ in range(max(1, warmup)):
                fn()
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            once = max(time.perf_counter() - start, 1e-7)
        except NotAvailable as exc:
            result.errors[name] = f"n/a: {exc}"
            continue
        except Exception as exc:
            result.errors[name] = f"error: {type(exc).__name__}: {exc}"
            print(f"[speed] {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
            continue
        calls[name] = fn
        numbers[name] = max(1, min(1000, math.ceil(min_repeat_s / once)))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            number = numbers[name]
            _sync(device)
            start = time.perf_counter()
            for _ in range(number):
                fn()
            _sync(device)
            samples[name].append((time.perf_counter() - start) / number)
    result.rounds = samples
    result.seconds = {name: statistics.median(values) for name, values in samples.items()}
    return result


# How the step tables (sections 2, 4, 5) state their ratios.
PAIRED_RATIOS = (
    "a ratio is the median over the rounds of the step over the plain step of the same round, with a 95 % "
    "interval of that median in parentheses (none below 6 rounds)."
)


def fmt_time(seconds: float, unit: str) -> str:
    scale = {"us": 1e6, "ms": 1e3, "s": 1.0}[unit]
    value = seconds * scale
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator <= 0:
        return "n/a"
    ratio = numerator / denominator
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def prose(text: str) -> str:
    """A paragraph written as an indented triple-quoted string, on one line."""
    return " ".join(text.split())


def markdown_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# section 1: mixing cost given the images
# ---------------------------------------------------------------------------------------------------------

# (row label, library, kind, mode): kind "box" methods are compared with timm's CutMix in the same mode,
# kind "blend" with timm's Mixup; "elem" stands for per-sample parameters (kornia draws them per sample).
MIX_ROWS: list[tuple[str, str, str, str]] = [
    ("CutMix", "ours", "box", "batch"),
    ("CutMix", "ours", "box", "elem"),
    ("Mixup", "ours", "blend", "batch"),
    ("Mixup", "ours", "blend", "elem"),
    ("SaliencyMix", "ours", "box", "batch"),
    ("SaliencyMix (per_sample=False)", "ours", "box", "batch"),
    ("SaliencyMix", "ours", "box", "elem"),
    ("SaliencyMix (saliency given)", "ours", "box", "elem"),
    ("ResizeMix", "ours", "box", "batch"),
    ("ResizeMix", "ours", "box", "elem"),
    ("SalfMix (saliency given)", "ours", "box", "elem"),
    ("SalfMix (saliency given, inplace=True)", "ours", "box", "elem"),
    ("RandomSelfMix (no saliency)", "ours", "box", "elem"),
    ("Mixup(cutmix_alpha=1)", "timm", "box", "batch"),
    ("Mixup(cutmix_alpha=1)", "timm", "box", "elem"),
    ("Mixup(mixup_alpha=1)", "timm", "blend", "batch"),
    ("Mixup(mixup_alpha=1)", "timm", "blend", "elem"),
    ("v2.CutMix", "torchvision", "box", "batch"),
    ("v2.MixUp", "torchvision", "blend", "batch"),
    ("RandomCutMixV2", "kornia", "box", "elem"),
    ("RandomMixUpV2", "kornia", "blend", "elem"),
    ("floor: x.clone()", "torch", "box", "elem"),
    ("floor: x.flip(0).lerp_(x, w)", "torch", "blend", "elem"),
]

# Lower bounds for an out-of-place transform on this machine: a copy of the batch (a box method writes at
# least that much) and one fused blend pass with per-sample weights (what any per-sample Mixup must do).
FLOOR_ROWS = {
    "box": ("floor: x.clone()", "torch", "box", "elem"),
    "blend": ("floor: x.flip(0).lerp_(x, w)", "torch", "blend", "elem"),
}

TIMM_REFERENCE = {
    ("box", "batch"): ("Mixup(cutmix_alpha=1)", "timm", "box", "batch"),
    ("box", "elem"): ("Mixup(cutmix_alpha=1)", "timm", "box", "elem"),
    ("blend", "batch"): ("Mixup(mixup_alpha=1)", "timm", "blend", "batch"),
    ("blend", "elem"): ("Mixup(mixup_alpha=1)", "timm", "blend", "elem"),
}


def row_key(row: tuple[str, str, str, str]) -> str:
    label, library, _, mode = row
    return f"{library}:{label}:{mode}"


# Row labels of our two-image methods and their registry names (salfmix_transforms.methods).
_REGISTRY_NAMES = {
    "Mixup": "mixup",
    "CutMix": "cutmix",
    "SaliencyMix": "saliencymix",
    "ResizeMix": "resizemix",
}


def _ours_mixing(name: str, mode: str, **kwargs: object) -> object:
    from salfmix_transforms import methods

    return methods.build(_REGISTRY_NAMES[name], NUM_CLASSES, mode=mode, **kwargs)


def mixing_factories(
    x: torch.Tensor, target: torch.Tensor, saliency: torch.Tensor
) -> dict[str, Callable[[], Callable[[], object]]]:
    """One factory per row of :data:`MIX_ROWS`; each returns the call that is timed."""

    def ours(name: str, mode: str, saliency: torch.Tensor | None = None, **init_kwargs: object):
        def factory() -> Callable[[], object]:
            transform = _ours_mixing(name, mode, **init_kwargs)
            if saliency is None:
                return lambda: transform(x, target)
            return lambda: transform(x, target, saliency=saliency)

        return factory

    def salfmix(random: bool, inplace: bool = False) -> Callable[[], object]:
        from salfmix_transforms import methods

        name = "salfmix-nosal" if random else "salfmix"
        transform = methods.build(name, NUM_CLASSES, warmup_epochs=0, inplace=inplace)
        xs = x.clone() if inplace else x  # in place: timed like timm, on a batch of its own
        return lambda: transform(xs, target, saliency=saliency)

    def timm_mixup(kind: str, mode: str) -> Callable[[], Callable[[], object]]:
        def factory() -> Callable[[], object]:
            from timm.data import Mixup

            alphas = {"mixup_alpha": 0.0, "cutmix_alpha": 1.0} if kind == "box" else {"mixup_alpha": 1.0}
            # timm mixes in place: timed as used in training, on the batch itself (no defensive copy).
            mixer = Mixup(**alphas, mode=mode, label_smoothing=0.0, num_classes=NUM_CLASSES)
            xt = x.clone()
            return lambda: mixer(xt, target)

        return factory

    def torchvision_mix(kind: str) -> Callable[[], object]:
        from torchvision.transforms import v2

        mixer = (v2.CutMix if kind == "box" else v2.MixUp)(alpha=1.0, num_classes=NUM_CLASSES)
        return lambda: mixer(x, target)

    def floor(kind: str) -> Callable[[], object]:
        if kind == "box":
            return lambda: x.clone()
        weight = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)
        return lambda: x.flip(0).lerp_(x, weight)

    def kornia_mix(kind: str) -> Callable[[], object]:
        try:
            from kornia.augmentation import RandomCutMixV2, RandomMixUpV2
        except ImportError as exc:
            raise NotAvailable("kornia not installed") from exc
        if kind == "box":
            mixer = RandomCutMixV2(data_keys=["input", "class"], use_correct_lambda=True)
        else:
            mixer = RandomMixUpV2(data_keys=["input", "class"])
        return lambda: mixer(x, target)

    factories: dict[str, Callable[[], Callable[[], object]]] = {}
    for row in MIX_ROWS:
        label, library, kind, mode = row
        key = row_key(row)
        if library == "ours":
            if label.startswith("SalfMix"):
                factories[key] = lambda inplace="inplace=True" in label: salfmix(False, inplace)
            elif label.startswith("RandomSelfMix"):
                factories[key] = lambda: salfmix(True)
            elif label == "SaliencyMix (saliency given)":
                factories[key] = ours("SaliencyMix", mode, saliency=saliency)
            elif label == "SaliencyMix (per_sample=False)":
                factories[key] = ours("SaliencyMix", mode, per_sample=False)
            else:
                factories[key] = ours(label, mode)
        elif library == "timm":
            factories[key] = timm_mixup(kind, mode)
        elif library == "torchvision":
            factories[key] = lambda kind=kind: torchvision_mix(kind)
        elif library == "torch":
            factories[key] = lambda kind=kind: floor(kind)
        else:
            factories[key] = lambda kind=kind: kornia_mix(kind)
    return factories


def section_mixing(args: argparse.Namespace, device: torch.device) -> tuple[str, list[str]]:
    configs = [(batch, size) for size in args.sizes for batch in args.batches]
    timings: dict[tuple[int, int], Timing] = {}
    for batch, size in configs:
        gen = torch.Generator().manual_seed(args.seed)
        x = torch.rand(batch, 3, size, size, generator=gen).to(device)
        target = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)
        saliency = torch.rand(batch, size, size, generator=gen).to(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            timings[(batch, size)] = time_group(
                mixing_factories(x, target, saliency),
                device=device,
                repeats=args.repeats,
                warmup=args.warmup,
                min_repeat_s=args.min_repeat_s,
            )
        print(f"[speed] mixing: batch {batch} at {size}x{size} done", file=sys.stderr)

    header = ["method", "library", "mode"]
    for batch, size in configs:
        header += [f"B={batch} {size}px (us)", f"B={batch} {size}px / timm"]
    rows = []
    for row in MIX_ROWS:
        label, library, kind, mode = row
        ref = row_key(TIMM_REFERENCE[(kind, mode)])
        cells = [label, library, mode]
        for config in configs:
            timing = timings[config]
            cells.append(timing.cell(row_key(row), "us"))
            cells.append(fmt_ratio(timing.get(row_key(row)), timing.get(ref)))
        rows.append(cells)
    table = markdown_table(header, rows, ["---", "---", "---"] + ["---:"] * (len(header) - 3))

    # The two targets, at the largest batch of the run.
    big = max(args.batches)
    target_rows = []
    for size in args.sizes:
        timing = timings[(big, size)]
        for label, kind in (
            ("CutMix", "box"),
            ("Mixup", "blend"),
            ("SaliencyMix", "box"),
            ("ResizeMix", "box"),
        ):
            ours_key = row_key((label, "ours", kind, "elem"))
            timm_key = row_key(TIMM_REFERENCE[(kind, "elem")])
            ours_t, timm_t = timing.get(ours_key), timing.get(timm_key)
            speedup = None if ours_t is None or timm_t is None else timm_t / ours_t
            floor_t = timing.get(row_key(FLOOR_ROWS[kind]))
            ceiling = None if floor_t is None or timm_t is None else timm_t / floor_t
            target_rows.append(
                [
                    f"{label} elem vs timm {TIMM_REFERENCE[(kind, 'elem')][0]} elem",
                    f"B={big} {size}px",
                    timing.cell(ours_key, "us"),
                    timing.cell(timm_key, "us"),
                    "n/a" if speedup is None else f"{speedup:.2g}x faster",
                    ">= 10x faster",
                    "n/a" if speedup is None else ("met" if speedup >= 10 else "NOT met"),
                    "n/a" if ceiling is None else f"{ceiling:.1f}x",
                ]
            )
        timm_key = row_key(TIMM_REFERENCE[("box", "batch")])
        for label, salf_label in (
            ("SalfMix patch step vs timm CutMix batch", "SalfMix (saliency given)"),
            (
                "SalfMix patch step, inplace=True, vs timm CutMix batch (both in place)",
                "SalfMix (saliency given, inplace=True)",
            ),
        ):
            salf_key = row_key((salf_label, "ours", "box", "elem"))
            salf_t, timm_t = timing.get(salf_key), timing.get(timm_key)
            ratio = None if salf_t is None or timm_t is None else salf_t / timm_t
            target_rows.append(
                [
                    label,
                    f"B={big} {size}px",
                    timing.cell(salf_key, "us"),
                    timing.cell(timm_key, "us"),
                    "n/a" if ratio is None else f"{ratio:.2f}x the time",
                    "<= 1.5x the time",
                    "n/a" if ratio is None else ("met" if ratio <= 1.5 else "NOT met"),
                    "",
                ]
            )
    targets = markdown_table(
        ["target", "batch", "ours (us)", "timm (us)", "measured", "goal", "status", "ceiling"],
        target_rows,
        ["---", "---", "---:", "---:", "---:", "---", "---", "---:"],
    )
    errors = [
        f"{key} (B={b} {s}px): {msg}"
        for (b, s), timing in timings.items()
        for key, msg in timing.errors.items()
        if key.startswith("ours:") and msg.startswith("error")
    ]
    notes = sorted(
        {
            f"{key}: {msg}"
            for timing in timings.values()
            for key, msg in timing.errors.items()
            if not (key.startswith("ours:") and msg.startswith("error"))
        }
    )
    text = [
        "## 1. Mixing cost given the images (no model)",
        "",
        prose(
            """
            Median time per call in microseconds; `/ timm` is the time divided by timm's `Mixup` of the same
            kind (CutMix-like rows against `Mixup(cutmix_alpha=1)`, blend rows against `Mixup(mixup_alpha=1)`)
            in the same mode (`batch`: one draw per batch; `elem`: one draw per sample), so below 1 is faster
            than timm. Our transforms return a new tensor and soft targets (B, 10), except the
            `inplace=True` row, which overwrites its own batch like timm; timm's `Mixup` mixes the
            batch **in place** (timed as used in training: on the batch itself, no copy; its `elem` mode
            copies the batch and loops over the samples in Python) and returns soft targets; torchvision v2
            returns a new tensor and soft targets (batch mode: one box/lambda per batch, partner =
            `roll(1)`); kornia's `RandomCutMixV2` / `RandomMixUpV2` draw per sample and return `(label,
            partner label, lambda)` triplets instead of soft targets. `SaliencyMix` computes the fine-grained
            static saliency of the images itself unless a map is given (`per_sample=False`: one map per
            batch, as SaliencyMix's reference code); `SalfMix (saliency given)` is the patch step of
            Algorithm 1 with a precomputed map (B, H, W).
            """
        ),
        "",
        table,
        "",
        f"**Targets** (batch {big}):",
        "",
        targets,
        "",
        prose(
            """
            `ceiling`: timm's time divided by the `floor` row of the same kind (a plain copy of the batch for
            box methods, one fused `lerp_` pass for blends), i.e. the largest speed-up any out-of-place
            implementation could show here: below 10x, the 10x target is out of reach on this machine
            whatever the implementation, because timm's per-sample loop works on cache-resident single
            images while a batched kernel streams the whole batch through memory.
            """
        ),
    ]
    if notes:
        text += ["", "Not timed: " + "; ".join(notes)]
    return "\n".join(text), errors


# ---------------------------------------------------------------------------------------------------------
# section 2: saliency cost in a training step
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepVariant:
    label: str
    saliency_mode: str = "train"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False  # torch.compile(model) (section 4's --compile)


STEP_VARIANTS = [
    StepVariant("fp32, saliency_mode=train"),
    StepVariant("fp32, saliency_mode=eval", saliency_mode="eval"),
    StepVariant("bf16 autocast, saliency_mode=train", bf16=True),
    StepVariant("channels_last, saliency_mode=train", channels_last=True),
]


def _make_model(width: float, device: torch.device, channels_last: bool) -> torch.nn.Module:
    import timm

    import salfmix_transforms.models  # noqa: F401  (registers preactresnet18 in timm)

    kwargs = {} if width == 1.0 else {"width": width}
    model = timm.create_model("preactresnet18", num_classes=NUM_CLASSES, **kwargs).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def step_factories(
    variant: StepVariant, args: argparse.Namespace, device: torch.device
) -> dict[str, Callable[[], Callable[[], object]]]:
    gen = torch.Generator().manual_seed(args.seed)
    batch, size = args.step_batch, args.step_size
    x = torch.rand(batch, 3, size, size, generator=gen).to(device)
    if variant.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)
    state: dict[str, object] = {}

    def model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        # One model shared by the candidates of a variant: same weights, same memory format.
        if "model" not in state:
            torch.manual_seed(args.seed)
            model = _make_model(args.width, device, variant.channels_last)
            if variant.compile:
                # The model only (mode default): the step and the saliency pass call the compiled module,
                # as train_timm.py --torchcompile does; the transforms themselves stay eager.
                model = torch.compile(model, backend=args.compile_backend)
            # A small learning rate keeps the weights sane over hundreds of timed steps.
            state["model"] = model
            state["opt"] = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        return state["model"], state["opt"]  # type: ignore[return-value]

    def autocast() -> contextlib.AbstractContextManager:
        if variant.bf16:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(
        model: torch.nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor
    ) -> None:
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(xb), yb)  # class indices or soft targets (B, K)
        loss.backward()
        opt.step()

    # Every step starts from a copy of the batch (the transforms work in place, as train_seg.py builds them,
    # on the loader's fresh batch), the plain one too, so that the copy is on both sides of every ratio.
    def plain() -> Callable[[], object]:
        model, opt = model_and_optimizer()
        return lambda: train_step(model, opt, x, target)

    def with_transform(build: Callable[[], object]) -> Callable[[], Callable[[], object]]:
        def factory() -> Callable[[], object]:
            model, opt = model_and_optimizer()
            transform = build()

            def step() -> None:
                with autocast():
                    xb, yb = transform(x, target, model=model)
                train_step(model, opt, xb, yb)

            return step

        return factory

    def salfmix() -> object:
        from salfmix_transforms import methods

        return methods.build("salfmix", NUM_CLASSES, warmup_epochs=0, saliency_mode=variant.saliency_mode)

    def hybrid_v3() -> object:
        from salfmix_transforms import methods

        # Past the warm-up epoch of Algorithm 2.
        return methods.build(
            "hybridmix-v3", NUM_CLASSES, warmup_epochs=0, saliency_mode=variant.saliency_mode
        )

    def saliency_only() -> Callable[[], object]:
        from salfmix_transforms.saliency import gradient_saliency

        model, _ = model_and_optimizer()

        def call() -> None:
            with autocast():
                gradient_saliency(model, x, target, mode=variant.saliency_mode)

        return call

    def with_cached_saliency(name: str) -> Callable[[], Callable[[], object]]:
        """The step of ``--saliency-source cached``: maps read from the cache, written from the step's own
        input gradient (``x.requires_grad_`` before the forward, ``x.grad`` after the backward)."""

        def factory() -> Callable[[], object]:
            from salfmix_transforms import methods
            from salfmix_transforms.saliency import saliency_from_gradient
            from salfmix_transforms.saliency_cache import SaliencyCache, source_coordinates

            model, opt = model_and_optimizer()
            transform = methods.build(name, NUM_CLASSES, warmup_epochs=0)
            batch, _, height, width = x.shape
            cache = SaliencyCache(batch, device=device)
            indices = torch.arange(batch, device=device)
            coords = source_coordinates(height, width).to(device).expand(batch, -1, -1, -1)

            def step() -> None:
                cells = cache.locate(coords)  # once for the read and the write, as the engine does
                with autocast():
                    xb, yb = transform(x, target, saliency=cache.read(indices, cells))
                xb.requires_grad_(True)
                opt.zero_grad(set_to_none=True)
                with autocast():
                    loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                cache.write(indices, cells, saliency_from_gradient(xb.grad), 0, transform.provenance)
                opt.step()

            return step

        return factory

    def lowres(name: str) -> Callable[[], object]:
        from salfmix_transforms import methods

        return methods.build(name, NUM_CLASSES, warmup_epochs=0, saliency_scale=0.5)

    return {
        "plain": plain,
        "salfmix": with_transform(salfmix),
        "hybrid": with_transform(hybrid_v3),
        "saliency": saliency_only,
        "salfmix cached": with_cached_saliency("salfmix"),
        "salfmix lowres": with_transform(lambda: lowres("salfmix")),
        "hybrid cached": with_cached_saliency("hybridmix-v3"),
        "hybrid lowres": with_transform(lambda: lowres("hybridmix-v3")),
    }


def _only(factories: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {name: factories[name] for name in names}


def section_steps(args: argparse.Namespace, device: torch.device) -> tuple[str, list[str]]:
    rows = []
    errors = []
    for variant in STEP_VARIANTS:
        timing = time_group(
            _only(step_factories(variant, args, device), ("plain", "salfmix", "hybrid", "saliency")),
            device=device,
            repeats=args.step_repeats,
            warmup=args.warmup,
            min_repeat_s=0.0,  # one step per repeat: a step is long enough to time on its own
        )
        rows.append(
            [
                variant.label,
                timing.cell("plain", "ms"),
                timing.cell("salfmix", "ms"),
                timing.ratio_cell("salfmix", "plain"),
                timing.cell("hybrid", "ms"),
                timing.ratio_cell("hybrid", "plain"),
                timing.cell("saliency", "ms"),
                timing.ratio_cell("saliency", "plain"),
            ]
        )
        errors += [f"{variant.label} / {k}: {m}" for k, m in timing.errors.items() if m.startswith("error")]
        print(f"[speed] step: {variant.label} done", file=sys.stderr)
    width = "full width" if args.width == 1.0 else f"width x{args.width:g}"
    table = markdown_table(
        [
            "variant",
            "plain step (ms)",
            "SalfMix step (ms)",
            "SalfMix / plain",
            "HybridMix v3 step (ms)",
            "HybridMix v3 / plain",
            "saliency only (ms)",
            "saliency / plain",
        ],
        rows,
    )
    text = [
        "## 2. Saliency cost in a training step",
        "",
        f"PreActResNet-18 ({width}), batch {args.step_batch} at {args.step_size}x{args.step_size}, "
        f"{NUM_CLASSES} classes, SGD with momentum; median of {args.step_repeats} steps per candidate "
        f"(round-robin); {PAIRED_RATIOS} "
        + prose(
            """
            A step is forward + cross-entropy + backward + `optimizer.step()`; the SalfMix / HybridMix v3
            step adds the transform called with `model=` (gradient saliency: one extra forward and an
            input-only backward, then the patch copy). Floor of the ratio: about 1.67x (a plain step costs
            about three forwards, the saliency about two more); target <= 1.8x on CPU. `saliency only` is
            `gradient_saliency(model, x, target)` alone. bf16 rows run the transform and the step under
            `torch.autocast(bfloat16)` and compare with a plain bf16 step; channels_last rows use a
            channels_last model and batch on both sides. HybridMix v3 is timed with `warmup_epochs=0` (past
            its warm-up epoch).
            """
        ),
        "",
        table,
    ]
    return "\n".join(text), errors


# ---------------------------------------------------------------------------------------------------------
# section 4: where the saliency comes from (issue 14)
# ---------------------------------------------------------------------------------------------------------

SOURCES = ("salfmix", "salfmix cached", "salfmix lowres", "hybrid", "hybrid cached", "hybrid lowres")
# Keys of the JSON of sections 4 and 5 (--json): method -> timing name prefix, source -> timing name suffix.
JSON_METHODS = {"salfmix": "salfmix", "hybridmix-v3": "hybrid"}
JSON_SOURCES = {"exact": "", "cached": " cached", "lowres": " lowres"}


def sources_variant(args: argparse.Namespace) -> StepVariant:
    """Section 4's configuration: fp32 eager by default, else what --amp / --channels-last / --compile ask."""
    return StepVariant(
        "sources", bf16=args.amp == "bf16", channels_last=args.channels_last, compile=args.compile
    )


def _ratios_json(
    section: int, config: dict[str, Any], device: torch.device, timing: Timing
) -> dict[str, Any]:
    """Sections 4 and 5 as JSON (``--json``): the configuration, the median step times and, per method and
    saliency source, the paired ratio over the plain step with its 95 % interval.

    ``errors`` maps every candidate that was not timed to why: ``"error: ..."`` (it failed) or ``"n/a: ..."``
    (not available here, e.g. ``torch.compile`` without a compiler); :func:`main` adds ``errors_of_ours``,
    the failures of this package's own transforms among them (the run then exits 1)."""

    def ms(name: str) -> float | None:
        value = timing.get(name)
        return None if value is None else value * 1e3

    def ratio(name: str) -> float | None:
        paired = timing.ratio(name, "plain")
        return None if paired is None else paired[0]

    def interval(name: str) -> list[float] | None:
        paired = timing.ratio(name, "plain")
        return None if paired is None or paired[1] is None else [paired[1], paired[2]]

    def per_source(value: Callable[[str], Any]) -> dict[str, dict[str, Any]]:
        return {
            method: {source: value(prefix + suffix) for source, suffix in JSON_SOURCES.items()}
            for method, prefix in JSON_METHODS.items()
        }

    return {
        "section": section,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "machine": machine_line(device),
        "config": config,
        "plain_ms": ms("plain"),
        "median_ms": per_source(ms),
        "ratios": per_source(ratio),
        "ratio_intervals": per_source(interval),
        "errors": dict(timing.errors),
    }


def _sources_config(
    args: argparse.Namespace, device: torch.device, variant: StepVariant, warmup: int
) -> dict[str, Any]:
    """Section 4's configuration, as its JSON records it."""
    return {
        "model": "preactresnet18",
        "width": args.width,
        "batch": args.step_batch,
        "size": args.step_size,
        "amp": "bf16" if variant.bf16 else None,
        "channels_last": variant.channels_last,
        "compile": variant.compile,
        "compile_backend": args.compile_backend if variant.compile else None,
        "saliency_mode": variant.saliency_mode,
        "repeats": args.step_repeats,
        "warmup": warmup,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }


def _source_rows(timing: Timing) -> list[list[str]]:
    """SalfMix's and HybridMix v3's rows of a saliency-sources table: the plain step, then each source's
    time and its ratio over the plain step (exact, cached, lowres)."""
    rows = []
    for method, label in (("salfmix", "SalfMix"), ("hybrid", "HybridMix v3")):
        cells = [label, timing.cell("plain", "ms")]
        for source in ("", " cached", " lowres"):
            cells += [timing.cell(method + source, "ms"), timing.ratio_cell(method + source, "plain")]
        rows.append(cells)
    return rows


def section_sources(args: argparse.Namespace, device: torch.device) -> tuple[str, list[str]]:
    variant = sources_variant(args)
    # Under torch.compile the first calls compile (the step, the saliency pass, the lowres size): untimed.
    warmup = max(args.warmup, 3) if variant.compile else args.warmup
    timing = time_group(
        _only(step_factories(variant, args, device), ("plain", *SOURCES)),
        device=device,
        repeats=args.step_repeats,
        warmup=warmup,
        min_repeat_s=0.0,
    )
    args.json_results[4] = _ratios_json(4, _sources_config(args, device, variant, warmup), device, timing)
    rows = _source_rows(timing)
    errors = [f"sources / {k}: {m}" for k, m in timing.errors.items() if m.startswith("error")]
    print("[speed] saliency sources done", file=sys.stderr)
    width = "full width" if args.width == 1.0 else f"width x{args.width:g}"
    precision = "bf16 autocast" if variant.bf16 else "fp32"
    if variant.channels_last:
        precision += ", channels_last"
    if variant.compile:
        precision += f", `torch.compile(model)` ({args.compile_backend}, {warmup} warm-up calls)"
    table = markdown_table(
        [
            "saliency source",
            "plain step (ms)",
            "exact (ms)",
            "exact / plain",
            "cached (ms)",
            "cached / plain",
            "lowres 0.5 (ms)",
            "lowres / plain",
        ],
        rows,
    )
    text = [
        "## 4. Saliency sources: exact, cached, lowres",
        "",
        f"PreActResNet-18 ({width}), batch {args.step_batch} at {args.step_size}x{args.step_size}, "
        f"{precision}, `saliency_mode='train'`; median of {args.step_repeats} steps per candidate "
        f"(round-robin); {PAIRED_RATIOS} "
        + prose(
            """
            exact: the transform with `model=` (an extra forward and input-only backward, eq. 2-3). cached:
            the maps are read from a `SaliencyCache` (gather), the training step's own backward also
            returns the input gradient (`x.requires_grad_(True)`), which is written back (scatter mean
            weighted by the transform's provenance). lowres: the exact pass on the batch down-scaled by 0.5
            (`saliency_scale=0.5`). Targets (issue 14): cached <= 1.10x, lowres <= 1.30x.
            """
        ),
        "",
        table,
    ]
    return "\n".join(text), errors


# ---------------------------------------------------------------------------------------------------------
# section 5: saliency sources in segmentation (issue 22)
# ---------------------------------------------------------------------------------------------------------

SEG_CLASSES = 11  # CamVid's, Unlabelled ignored
SEG_IGNORE = 255


def _seg_batch(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W) and class masks (B, H, W): blocks of 8x8 pixels of random classes, 2 % ignored."""
    height, width = args.seg_size
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.seg_batch, 3, height, width, generator=gen)
    coarse = torch.randint(0, SEG_CLASSES, (args.seg_batch, 1, height // 8, width // 8), generator=gen)
    masks = F.interpolate(coarse.float(), size=(height, width), mode="nearest")[:, 0].long()
    masks[torch.rand(masks.shape, generator=gen) < 0.02] = SEG_IGNORE
    return x.to(device), masks.to(device)


def seg_step_factories(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """train_seg.py's step: plain (the baseline's cross-entropy with ignore_index), and SalfMix / HybridMix v3
    (class masks out, as train_seg.py builds them: the same cross-entropy) with the exact, cached and lowres
    saliency sources."""
    from salfmix_transforms.saliency import saliency_from_gradient
    from salfmix_transforms.saliency_cache import SaliencyCache, source_coordinates
    from salfmix_transforms.segmentation import build_model, logits_of

    x, masks = _seg_batch(args, device)
    batch, _, height, width = x.shape
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=memory_format)  # --channels-last: as train_seg.py's batches and model

    def model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(args.seed)
        model = build_model("tinyseg", SEG_CLASSES).to(device, memory_format=memory_format).train()
        return model, torch.optim.AdamW(model.parameters(), lr=1e-4)

    def dense_soft_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """train_seg.py's segmentation_loss: cross-entropy for class masks, else the soft dense loss."""
        if target.dim() == 3:
            return F.cross_entropy(logits, target, ignore_index=SEG_IGNORE)
        return -(target * logits.float().log_softmax(1)).sum() / target.sum().clamp(min=1)

    def build(name: str, model: torch.nn.Module, source: str = "exact") -> Any:
        """train_seg.py's own transform of ``--method name --saliency-source source`` past the warm-up
        (``train_seg.build_transform``: class masks out where the method only moves pixels)."""
        import train_seg

        argv = ["--method", name, "--salfmix-warmup-epochs", "0", "--saliency-source", source]
        if source == "lowres":
            argv += ["--saliency-scale", str(args.seg_saliency_scale)]
        return train_seg.build_transform(train_seg.parse_args(argv), SEG_CLASSES, model)

    # Every step starts from a copy of the batch (the transforms work in place, as train_seg.py builds them,
    # on the loader's fresh batch), the plain one too, so that the copy is on both sides of every ratio.
    def plain() -> Callable[[], object]:
        model, opt = model_and_optimizer()

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(logits_of(model(x.clone())), masks, ignore_index=SEG_IGNORE).backward()
            opt.step()

        return step

    def exact(name: str, source: str = "exact") -> Callable[[], Callable[[], object]]:
        def factory() -> Callable[[], object]:
            model, opt = model_and_optimizer()
            transform = build(name, model, source)

            def step() -> None:
                xb, yb = transform(x.clone(), masks.clone())  # in place, as in train_seg.py: a fresh batch
                opt.zero_grad(set_to_none=True)
                dense_soft_loss(logits_of(model(xb)), yb).backward()
                opt.step()

            return step

        return factory

    def cached(name: str) -> Callable[[], Callable[[], object]]:
        """train_seg.py --saliency-source cached: read (gather), the step's own input gradient, write."""

        def factory() -> Callable[[], object]:
            model, opt = model_and_optimizer()
            transform = build(name, model, "cached")
            cache = SaliencyCache(batch, device=device)
            indices = torch.arange(batch, device=device)
            coords = source_coordinates(height, width).to(device).expand(batch, -1, -1, -1)

            def step() -> None:
                cells = cache.locate(coords)  # once for the read and the write, as the engine does
                xb, yb = transform(x.clone(), masks.clone(), saliency=cache.read(indices, cells))
                xb.requires_grad_(True)
                opt.zero_grad(set_to_none=True)
                dense_soft_loss(logits_of(model(xb)), yb).backward()
                opt.step()
                cache.write(indices, cells, saliency_from_gradient(xb.grad), 0, transform.provenance)

            return step

        return factory

    return {
        "plain": plain,
        "salfmix": exact("salfmix"),
        "salfmix cached": cached("salfmix"),
        "salfmix lowres": exact("salfmix", "lowres"),
        "hybrid": exact("hybridmix-v3"),
        "hybrid cached": cached("hybridmix-v3"),
        "hybrid lowres": exact("hybridmix-v3", "lowres"),
    }


def section_seg_sources(args: argparse.Namespace, device: torch.device) -> tuple[str, list[str]]:
    timing = time_group(
        seg_step_factories(args, device),
        device=device,
        repeats=args.step_repeats,
        warmup=args.warmup,
        min_repeat_s=0.0,
    )
    height, width = args.seg_size
    config = {
        "model": "tinyseg",
        "batch": args.seg_batch,
        "size": [height, width],
        "classes": SEG_CLASSES,
        "amp": None,
        "channels_last": args.channels_last,
        "compile": False,
        "saliency_mode": "train",
        "saliency_scale": args.seg_saliency_scale,
        "repeats": args.step_repeats,
        "warmup": args.warmup,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }
    args.json_results[5] = _ratios_json(5, config, device, timing)
    rows = _source_rows(timing)
    errors = [f"seg sources / {k}: {m}" for k, m in timing.errors.items() if m.startswith("error")]
    print("[speed] segmentation saliency sources done", file=sys.stderr)
    scale = f"{args.seg_saliency_scale:g}"
    table = markdown_table(
        [
            "saliency source",
            "plain step (ms)",
            "exact (ms)",
            "exact / plain",
            "cached (ms)",
            "cached / plain",
            f"lowres {scale} (ms)",
            "lowres / plain",
        ],
        rows,
    )
    text = [
        "## 5. Saliency sources in segmentation (train_seg.py)",
        "",
        f"tinyseg, batch {args.seg_batch} at {height}x{width} (random images of CamVid's size), "
        f"{SEG_CLASSES} classes, "
        f"AdamW, fp32{', channels_last' if args.channels_last else ''}, `saliency_mode='train'`; median of "
        f"{args.step_repeats} steps per candidate "
        f"(round-robin); {PAIRED_RATIOS} "
        + prose(
            f"""
            plain: train_seg.py's baseline step (forward, cross-entropy with `ignore_index`, backward,
            `optimizer.step()`). exact: the transform with `model=` (the dense loss's saliency pass), then
            the step on its targets: class masks and the same cross-entropy, as train_seg.py builds SalfMix
            and HybridMix v3 (`num_classes=None`: both only move pixels). cached: maps read from a
            `SaliencyCache`, the step's own
            backward gives the input gradient (`x.requires_grad_(True)`), written back weighted by the
            transform's provenance (`train_seg.py --saliency-source cached`). lowres: the exact pass on the
            batch down-scaled by {scale} (`--saliency-source lowres --saliency-scale {scale}`). Targets
            (issue 22): cached <= 1.10x, lowres <= 1.30x.
            """
        ),
        "",
        table,
    ]
    return "\n".join(text), errors


# ---------------------------------------------------------------------------------------------------------
# section 3: fine-grained static saliency
# ---------------------------------------------------------------------------------------------------------


def saliency_factories(x: torch.Tensor) -> dict[str, Callable[[], Callable[[], object]]]:
    def batched() -> Callable[[], object]:
        from salfmix_transforms.static_saliency import fine_grained_saliency

        return lambda: fine_grained_saliency(x)

    def loop() -> Callable[[], object]:
        from salfmix_transforms.static_saliency import fine_grained_saliency

        return lambda: torch.cat([fine_grained_saliency(x[i : i + 1]) for i in range(x.shape[0])])

    def opencv() -> Callable[[], object]:
        try:
            import cv2
        except ImportError as exc:
            raise NotAvailable("OpenCV not installed") from exc
        if not hasattr(cv2, "saliency"):
            raise NotAvailable("cv2.saliency missing (needs opencv-contrib-python)")
        detector = cv2.saliency.StaticSaliencyFineGrained_create()

        def call() -> list[object]:
            # As SaliencyMix's reference code does: tensor -> HWC numpy, one image at a time.
            images = x.detach().cpu().permute(0, 2, 3, 1).numpy()
            return [detector.computeSaliency(image)[1] for image in images]

        return call

    return {"batched": batched, "loop": loop, "opencv": opencv}


def section_static(args: argparse.Namespace, device: torch.device) -> tuple[str, list[str]]:
    rows = []
    errors = []
    notes = set()
    for size in args.sizes:
        gen = torch.Generator().manual_seed(args.seed)
        x = torch.rand(args.static_batch, 3, size, size, generator=gen).to(device)
        timing = time_group(
            saliency_factories(x),
            device=device,
            repeats=args.repeats,
            warmup=args.warmup,
            min_repeat_s=args.min_repeat_s,
        )
        batched = timing.get("batched")
        rows.append(
            [
                f"B={args.static_batch} {size}px",
                timing.cell("batched", "ms"),
                timing.cell("loop", "ms"),
                fmt_ratio(timing.get("loop"), batched),
                timing.cell("opencv", "ms"),
                fmt_ratio(timing.get("opencv"), batched),
            ]
        )
        errors += [f"{size}px / {k}: {m}" for k, m in timing.errors.items() if m.startswith("error")]
        notes |= {f"{k}: {m}" for k, m in timing.errors.items() if m.startswith("n/a")}
        print(f"[speed] static saliency: {size}x{size} done", file=sys.stderr)
    table = markdown_table(
        [
            "batch",
            "batched torch (ms)",
            "per-image loop (ms)",
            "loop / batched",
            "cv2.saliency loop (ms)",
            "cv2 / batched",
        ],
        rows,
    )
    text = [
        "## 3. Fine-grained static saliency",
        "",
        prose(
            """
            `fine_grained_saliency(x)` on the whole batch against a Python loop calling it on one image at a
            time (same function, same device), and OpenCV's `StaticSaliencyFineGrained` one image at a time
            on the CPU (what SaliencyMix's reference code does) when `cv2.saliency` is importable. Ratios
            above 1 mean the batched call is faster.
            """
        ),
        "",
        table,
    ]
    if notes:
        text += ["", "Not timed: " + "; ".join(sorted(notes))]
    return "\n".join(text), errors


# ---------------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------------


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device: torch.device) -> str:
    import timm
    import torchvision

    try:
        import kornia

        kornia_version = kornia.__version__
    except ImportError:
        kornia_version = "not installed"
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{cpu_name()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads"
    return (
        f"Device `{device}` ({where}); torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"timm {timm.__version__}, kornia {kornia_version}; Python {platform.python_version()}; "
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}."
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="all sections with small settings (< 1 minute)")
    parser.add_argument(
        "--sections", default=None, help="comma-separated subset of 1,2,3,4,5 (default 1,2,3,4)"
    )
    parser.add_argument(
        "--task",
        choices=("cls", "seg"),
        default=None,
        help="seg: section 5 only (train_seg.py's step), unless --sections is given",
    )
    parser.add_argument(
        "--seg-batch", type=int, help="section 5 batch (default 8 on CPU, 32 on CUDA; --quick 2)"
    )
    parser.add_argument(
        "--seg-size",
        default="128x168",
        help="section 5 crop HxW (default 128x168: CamVid's training crops)",
    )
    parser.add_argument(
        "--seg-saliency-scale", type=float, default=0.5, help="section 5 lowres scale (default 0.5)"
    )
    parser.add_argument("--batches", type=int, nargs="+", help="section 1 batch sizes (default 64 256)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="image sides for sections 1 and 3 (default 32 64)"
    )
    parser.add_argument("--repeats", type=int, help="timed repeats per candidate, sections 1 and 3")
    parser.add_argument(
        "--step-repeats", type=int, help="timed training steps per candidate, sections 2, 4 and 5"
    )
    parser.add_argument(
        "--step-batch", type=int, help="sections 2 and 4 batch (default 64 on CPU, 256 on CUDA)"
    )
    parser.add_argument("--step-size", type=int, default=32, help="sections 2 and 4 image side")
    parser.add_argument(
        "--width", type=float, help="sections 2 and 4 PreActResNet-18 width multiplier (default 1)"
    )
    parser.add_argument(
        "--amp", choices=("bf16",), help="section 4: step and transform under torch.autocast(bfloat16)"
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="sections 4 and 5: channels_last model and batch"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="section 4: torch.compile(model) (mode default), timed after warm-up",
    )
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend for --compile (default inductor)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="also write the medians and ratios of section 4 or 5 (the one that runs) as JSON here",
    )
    parser.add_argument("--static-batch", type=int, help="section 3 batch (default 128)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per candidate before timing")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the markdown to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    quick = args.quick

    def default(name: str, full: object, small: object) -> None:
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)

    default("batches", [64, 256], [64])
    default("sizes", [32, 64], [32])
    default("repeats", 15, 3)
    default("step_repeats", 10, 3)
    default("step_batch", 256 if cuda else 64, 16)
    default("width", 1.0, 0.25)
    default("static_batch", 128, 16)
    if args.threads is None and quick and device.type == "cpu":
        # One thread: on a shared machine, OpenMP threads waiting for a busy core make the timings erratic.
        args.threads = 1
    args.min_repeat_s = 0.005 if quick else 0.02
    default("seg_batch", 32 if cuda else 8, 2)
    try:
        args.seg_size = tuple(int(v) for v in args.seg_size.lower().split("x"))
    except ValueError:
        args.seg_size = ()
    if len(args.seg_size) != 2 or min(args.seg_size) < 8:
        parser.error("--seg-size must be HxW with sides >= 8, e.g. 128x168")
    if args.sections is None:
        args.sections = "5" if args.task == "seg" else "1,2,3,4"
    args.sections = sorted({int(s) for s in args.sections.split(",") if s.strip()})
    if not set(args.sections) <= {1, 2, 3, 4, 5}:
        parser.error(f"--sections must be a subset of 1,2,3,4,5, got {args.sections}")
    if (args.amp or args.compile) and 4 not in args.sections:
        parser.error("--amp and --compile apply to section 4 only: add 4 to --sections")
    for option in ("repeats", "step_repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1 (timed rounds per candidate)")
    if any(b < 2 or b % 2 for b in args.batches):
        parser.error("--batches must be even numbers >= 2 (timm's Mixup needs an even batch)")
    if args.json is not None and len({4, 5} & set(args.sections)) != 1:
        parser.error("--json writes the numbers of section 4 or of section 5: run exactly one of them")
    args.json_results = {}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    parts = [
        "# Speed benchmarks" + (" (--quick)" if args.quick else ""),
        "",
        machine_line(device),
        "",
        "Command: `python benchmarks/speed.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`",
    ]
    errors: list[str] = []
    sections = {
        1: section_mixing,
        2: section_steps,
        3: section_static,
        4: section_sources,
        5: section_seg_sources,
    }
    for number in args.sections:
        text, section_errors = sections[number](args, device)
        parts += ["", text]
        errors += section_errors
    parts += ["", f"Total benchmark time: {time.perf_counter() - started:.0f} s."]
    if errors:
        parts += ["", "**Errors** (the package's own transforms failed):", ""]
        parts += [f"- {e}" for e in errors]
    markdown = "\n".join(parts) + "\n"
    print(markdown)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown)
    if args.json is not None and args.json_results:
        (section,) = args.json_results
        record = {
            **args.json_results[section],
            "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "total_s": round(time.perf_counter() - started, 2),
            "errors_of_ours": errors,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
