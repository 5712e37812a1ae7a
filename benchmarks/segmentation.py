"""Segmentation benchmark (issue 15): val mIoU of five methods trained with ``train_seg.py``.

Rows: baseline, Cutout, CutMix, SalfMix, HybridMix v3, each trained once per seed in its own
``train_seg.py`` subprocess. Every finished run appends one JSON line (method, seed, best mIoU and its epoch,
final mIoU and pixel accuracy, training and augmentation seconds) to the protocol's results file; a run
already there with the same settings is skipped, and a run folder left with ``last.pth.tar`` but no record
(an interrupted benchmark) continues with ``--resume``, so the same command can be started again at any
time. After each run the markdown table (best mIoU mean ± sample std over seeds, augmentation / training
time ratio) is written next to the results file and printed at the end.

Protocols:

``camvid-cpu``
    CamVid (SegNet's 11 classes, 367 train / 101 val images at 171x128) in ``../shared/data/camvid``
    (relative to the project root), ``tinyseg``, 100 epochs, seeds 0 and 1, train_seg.py's other defaults
    (AdamW lr 3e-3, wd 1e-4, cosine, batch 16, crops 128x168, SalfMix grid 4, ratio 0.3, one warm-up
    epoch), one OpenMP thread per run. Length: the grid is 5 methods x 2 seeds = 10 runs, two at a time
    (``--jobs 2`` on the 2-core CPU). Measured on a quiet machine with two runs at a time (camvid-short, seed
    2): ~9.8 s of training per epoch for baseline / Cutout / CutMix, ~16.4-17.5 s for SalfMix / HybridMix v3,
    ~1.3 s of evaluation; so 10 x 100 epochs x ~15 s / 2 ~ 2.1 h quiet, and with the 2-4x slow-down of a
    shared machine still inside one night (10 h). Skipped with a message when the data is absent.
``camvid-short``
    ``camvid-cpu`` at half the length (50 epochs, its own cosine schedule): the grid that fits in one
    working session beside development (3 seeds: ~58 min quiet). The table in BENCHMARKS.md comes from it
    (``--seeds 0 1 2``).
``synthetic-quick``
    for tests: train_seg.py's synthetic scenes (64x64, 4 classes), 32 train / 16 val images, batch 8,
    1 epoch without the SalfMix warm-up (so SalfMix runs), seed 0.

Examples::

    python benchmarks/segmentation.py --dry-run                          # the planned commands
    python benchmarks/segmentation.py --jobs 2                           # the whole grid (a night), resumable
    python benchmarks/segmentation.py --rows baseline salfmix --seeds 0 --epochs 5
    python benchmarks/segmentation.py --protocol synthetic-quick --rows baseline salfmix
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # imported from its file path (the tests): _runs.py stands next to this file
    sys.path.insert(0, str(HERE))

import _runs  # noqa: E402

from salfmix_transforms import methods  # noqa: E402

ROOT = HERE.parent
TRAIN_SCRIPT = ROOT / "train_seg.py"
RESULTS_DIR = ROOT / "benchmarks" / "results"
RUNS_DIR = RESULTS_DIR / "runs"  # per-run folders (git-ignored: ``runs/``)

ROWS = {
    name: methods.spec(name).label for name in ("baseline", "cutout", "cutmix", "salfmix", "hybridmix-v3")
}
# Issue 22: SalfMix with the saliency cached from the training step's own input gradient (one epoch late),
# to compare its mIoU with the exact pass's. Row -> (train_seg.py's --method, extra flags).
ROW_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "salfmix-cached": ("salfmix", ("--saliency-source", "cached"))
}
ROWS["salfmix-cached"] = "SalfMix, cached saliency"

# Paired differences shown under the table (a - b of the best mIoU, seed by seed; issue 23's intervals).
PAIRED_COMPARISONS: list[tuple[str, str]] = [
    ("salfmix", "baseline"),
    ("salfmix", "cutout"),
    ("hybridmix-v3", "cutmix"),
    ("salfmix-cached", "salfmix"),
]


@dataclass(frozen=True)
class Protocol:
    description: str
    dataset: str
    data_dir: Path | None
    epochs: int
    seeds: tuple[int, ...]
    args: tuple[str, ...] = ()  # extra train_seg.py flags (part of the settings)
    threads: int = 1  # OMP_NUM_THREADS and --threads of each run
    salfmix_args: tuple[str, ...] = ()  # extra flags of the SalfMix-family rows only (part of the settings)


_QUICK_ARGS = (
    "--model", "tinyseg", "--limit-train", "32", "--limit-val", "16", "-b", "8", "--checkpoint-hist", "1",
)  # fmt: skip
PROTOCOLS = {
    "camvid-cpu": Protocol(
        "CamVid (11 classes, 367 train / 101 val, 171x128), tinyseg, CPU",
        "camvid",
        ROOT.parent / "shared" / "data" / "camvid",
        epochs=100,
        seeds=(0, 1),
        args=("--model", "tinyseg", "--checkpoint-hist", "1"),
    ),
    "synthetic-quick": Protocol(
        "synthetic scenes (64x64, 4 classes), 32 train / 16 val, tinyseg, for tests",
        "synthetic",
        None,
        epochs=1,
        seeds=(0,),
        args=_QUICK_ARGS,
        salfmix_args=("--salfmix-warmup-epochs", "0"),
    ),
}
PROTOCOLS["camvid-short"] = dataclasses.replace(
    PROTOCOLS["camvid-cpu"], description=PROTOCOLS["camvid-cpu"].description + ", half length", epochs=50
)


def settings(args: argparse.Namespace) -> dict:
    """What decides a result besides method and seed; its hash (``settings_id``) names runs and records."""
    protocol = PROTOCOLS[args.protocol]
    decided = {"dataset": args.dataset, "epochs": args.epochs, "args": list(protocol.args)}
    if protocol.salfmix_args:  # only where there are some: the ids of the other protocols stay as they were
        decided["salfmix_args"] = list(protocol.salfmix_args)
    return decided


def settings_id(args: argparse.Namespace) -> str:
    return _runs.settings_id(settings(args))


def plan_runs(args: argparse.Namespace) -> list[_runs.Run]:
    """Every (method, seed), seed-major so that a partial benchmark covers every row early."""
    protocol, sid = PROTOCOLS[args.protocol], settings_id(args)
    runs = []
    for seed in args.seeds:
        for method in args.rows:
            name = f"{args.protocol}-{method}-s{seed}-{sid}"
            command = [sys.executable, str(TRAIN_SCRIPT), "--dataset", args.dataset]
            if args.data_dir:
                command += ["--data-dir", str(args.data_dir)]
            train_method, row_flags = ROW_FLAGS.get(method, (method, ()))
            command += ["--method", train_method, *row_flags]
            command += ["--epochs", str(args.epochs), "--seed", str(seed), *protocol.args]
            if methods.spec(train_method).self_mixing:
                command += protocol.salfmix_args
            command += ["--threads", str(protocol.threads), "--output", str(args.runs_dir)]
            command += ["--experiment", name, "--no-progress"]
            runs.append(_runs.Run(method, seed, command, Path(args.runs_dir) / name))
    return runs


def mine(records: list[dict], args: argparse.Namespace) -> list[dict]:
    return _runs.mine(records, args.protocol, settings_id(args))


def command_for(run: _runs.Run) -> list[str]:
    """Resume an interrupted run from its ``last.pth.tar`` (``--resume`` names the run folder); a folder
    without one is moved aside (:func:`_runs.command_for`)."""
    return _runs.command_for(run, resume_folder=True)


def execute(run: _runs.Run, args: argparse.Namespace) -> dict:
    """Train one (method, seed) and return its record; raises RuntimeError on failure."""
    command = command_for(run)
    seconds = _runs.train(run, command, PROTOCOLS[args.protocol].threads)
    try:
        result = json.loads((run.output / "results.json").read_text())
        times = _runs.whole_run_times(run.output)
        if times is None:
            raise ValueError("no summary.csv with per-epoch times")
    except (OSError, ValueError, KeyError) as exc:
        raise RuntimeError(f"no results in {run.output}: {exc}") from exc
    train_s, aug_s = times
    return {
        "protocol": args.protocol,
        "method": run.method,
        "seed": run.seed,
        "settings": settings(args),
        "settings_id": settings_id(args),
        "best_miou": result["best_miou"],
        "best_epoch": result["best_epoch"],
        "final_miou": result["final_miou"],
        "final_pixel_acc": result["final_pixel_acc"],
        "train_time_s": round(train_s, 2),
        "aug_time_s": round(aug_s, 2),
        "resumed": "--resume" in command,
        "seconds": round(seconds, 1),
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(command),
        "output": str(run.output),
    }


def results_table(records: list[dict], args: argparse.Namespace) -> str:
    header = ["method", "runs", "best mIoU % (mean ± std)", "final mIoU %", "final pixel acc %"]
    header += ["per seed (best mIoU %)", "train min/run", "aug / train time"]
    lines = ["| " + " | ".join(header) + " |", "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    records = mine(records, args)
    for method, label in ROWS.items():
        runs = sorted((r for r in records if r["method"] == method), key=lambda r: r["seed"])
        train = sum(r["train_time_s"] for r in runs)
        cells = [
            f"{label} (`{method}`)",
            str(len(runs)),
            _runs.mean_std([100 * r["best_miou"] for r in runs]),
            _runs.mean_std([100 * r["final_miou"] for r in runs]),
            _runs.mean_std([100 * r["final_pixel_acc"] for r in runs]),
            ", ".join(f"{100 * r['best_miou']:.2f}" for r in runs) or "—",
            f"{train / 60 / len(runs):.1f}" if runs else "—",
            f"{sum(r['aug_time_s'] for r in runs) / train:.2f}" if train > 0 else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    intro = (
        f"### Segmentation, protocol `{args.protocol}`\n\n{PROTOCOLS[args.protocol].description}; "
        f"{args.epochs} epoch(s), settings id `{settings_id(args)}`. mIoU and pixel accuracy on the "
        "validation set: best over epochs and at the last epoch, mean ± sample std over seeds. "
        "`train min/run`: training time of all epochs (augmentation included, evaluation not); "
        "`aug / train time`: the augmentation's share of it (SalfMix's saliency pass included), summed "
        "over the method's runs."
    )
    by_method = {
        m: [{**r, "best_miou_pct": 100 * r["best_miou"]} for r in records if r["method"] == m] for m in ROWS
    }
    paired = _runs.paired_table(
        PAIRED_COMPARISONS, by_method, "best_miou_pct", "Δ best mIoU (points)", "higher"
    )
    if len(paired) > 2:
        note = (
            "Paired differences of the best mIoU (percentage points; positive: the first method is better), "
            "seed by seed, with a 95 % t interval over the seeds:"
        )
        lines += ["", note, "", *paired]
    return intro + "\n\n" + "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="camvid-cpu")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), metavar="METHOD", help="subset of the rows")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the protocol's)")
    parser.add_argument("--epochs", type=int, help="override the protocol's epochs")
    parser.add_argument("--jobs", type=int, default=1, help="training processes at once (2 on 2 free cores)")
    parser.add_argument("--dry-run", action="store_true", help="print the planned commands, run nothing")
    parser.add_argument("--results", type=Path, help="JSON lines (default results/<protocol>-seg.jsonl)")
    parser.add_argument("--table", type=Path, help="markdown table (default: the results file's .md)")
    parser.add_argument("--runs-dir", type=Path, help="run folders (default results/runs/<protocol>)")
    args = parser.parse_args(argv)
    protocol = PROTOCOLS[args.protocol]
    args.dataset, args.data_dir = protocol.dataset, protocol.data_dir
    args.rows = args.rows or list(ROWS)
    args.seeds = args.seeds if args.seeds is not None else list(protocol.seeds)
    args.epochs = args.epochs or protocol.epochs
    args.results = args.results or RESULTS_DIR / f"{args.protocol}-seg.jsonl"
    args.table = args.table or args.results.with_suffix(".md")
    args.runs_dir = (args.runs_dir or RUNS_DIR / args.protocol).resolve()
    if args.jobs < 1 or args.epochs < 1:
        parser.error("--jobs and --epochs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data_dir is not None and not args.data_dir.is_dir():
        print(f"[segmentation] data directory {args.data_dir} is absent", file=sys.stderr)
        if not args.dry_run:
            print("[segmentation] skipped", file=sys.stderr)
            return 0
    records = mine(_runs.load_results(args.results, "segmentation"), args)
    runs = plan_runs(args)
    pending = [run for run in runs if not _runs.done(records, run)]
    _runs.print_plan("segmentation", args, runs, pending)
    if args.dry_run:
        for run in runs:
            state = "done" if _runs.done(records, run) else "todo"
            if state == "todo" and _runs.resumable(run):
                state = "resume"
            threads = PROTOCOLS[args.protocol].threads
            print(
                f"[{state}] {run.method} seed {run.seed}: OMP_NUM_THREADS={threads} {shlex.join(run.command)}"
            )
        return 0
    return _runs.run_all(
        pending,
        args,
        tag="segmentation",
        execute=execute,
        results_table=results_table,
        outcome=lambda record: f"best mIoU {100 * record['best_miou']:.2f}%",
    )


if __name__ == "__main__":
    sys.exit(main())
