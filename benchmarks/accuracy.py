"""Accuracy benchmark: the paper's rows trained with ``train_timm.py``, one subprocess per (method, seed).

Rows (the methods the paper compares on CIFAR with PreActResNet-18): baseline, Cutout, Cutout on the least
salient patch, SalfMix without saliency, SalfMix, Mixup, CutMix, SaliencyMix, HybridMix v1/v2/v3. Every
finished run appends one JSON line to the protocol's results file; a run already in that file with the same
settings is skipped, so the benchmark can be stopped at any time and started again with the same command.
After each run (and at the end) the markdown table of top-1 error (mean ± sample std over seeds) is written
next to the results file and printed.

Protocols:

``cpu-mini``
    the real CIFAR-10 subset in ``../shared/data/cifar10-5k`` (ImageFolder ``train/``, ``test/``; 5,085 /
    1,017 images, relative to the project root), PreActResNet-18 at width x0.25, 100 epochs, seeds 0 and 1,
    train_timm.py's other defaults (SGD momentum 0.9, lr 0.05, wd 1e-4, cosine, batch 64), one data-loader
    process and ``OMP_NUM_THREADS=1`` per run. Sized for a 2-core CPU (see BENCHMARKS.md for the timing);
    ``--jobs 2`` runs two trainings at once on two free cores. Skipped with a message when the data is absent.
``tin20``
    the real 20-class Tiny-ImageNet slice in ``../shared/data/tin20`` (4,000 train / 1,000 val, 64x64,
    ImageFolder ``train/``, ``val/``) with the paper's Tiny-ImageNet settings that fit two CPU cores: grid
    8, r = 0.3, batch 128, SGD lr 0.05 momentum 0.9 wd 1e-4, on PreActResNet-18 at width x0.25, 30 epochs
    with a cosine schedule (the paper's 300-epoch step schedule does not fit), seeds 0 and 1, one loader
    process and one OpenMP thread per run. Rows: baseline, Cutout, SalfMix (cached and exact saliency),
    CutMix, HybridMix v3; the paper column is its Table 7 (PreActResNet-18). Seeds are paired: seed s gives
    every method the same initial weights and the same batches in the same order (train_timm.py's
    ``DataOrder``), so that differences between methods can be taken seed by seed.
``tin20-100``
    ``tin20`` with 100 epochs instead of 30 (about 2.5-3.5 h a run on one core without the exact pass, 2.5x
    that with it), its own records: at 30 epochs Cutout and CutMix cost this network accuracy, so whether
    the paper's ordering appears needs a longer schedule. Rows cheapest first, as for ``tin20``: baseline,
    SalfMix (cached), Cutout, CutMix, HybridMix v3, SalfMix (exact).
``paper``
    the paper's CIFAR setting (train_timm.py's ``--preset cifar``: 300 epochs, lr x0.1 at 150 and 225,
    batch 64, full-width PreActResNet-18) on ``--device cuda``; ``--data-dir`` must point to torchvision's
    extracted ``cifar-10-batches-py`` or ``cifar-100-python`` (nothing is downloaded).
``paper-tinyimagenet``
    the paper's Tiny-ImageNet-200 setting (``--preset tinyimagenet``: batch 128, SalfMix grid 8, lr x0.1 at
    75, 150 and 225) on ``--device cuda``; ``--data-dir`` points to the extracted ``tiny-imagenet-200``.

Examples::

    python benchmarks/accuracy.py --protocol cpu-mini --dry-run          # the planned commands
    python benchmarks/accuracy.py --protocol cpu-mini --jobs 2           # everything (hours), resumable
    python benchmarks/accuracy.py --protocol cpu-mini --max-runs 2       # at most two new runs
    python benchmarks/accuracy.py --protocol cpu-mini --rows baseline salfmix --seeds 0
    python benchmarks/accuracy.py --protocol tin20 --jobs 2                # Tiny-ImageNet slice, 64 px
    python benchmarks/accuracy.py --protocol tin20-100 --jobs 2            # the same, 100 epochs (days)
    python benchmarks/accuracy.py --protocol paper --data-dir /data/cifar-100-python --seeds 0 1 2
    python benchmarks/accuracy.py --protocol paper-tinyimagenet --data-dir /data/tiny-imagenet-200
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # imported from its file path (the tests): _runs.py stands next to this file
    sys.path.insert(0, str(HERE))

import _runs  # noqa: E402

# append_result: kept as accuracy.append_result for callers (the tests) that add records themselves
from _runs import append_result, settings_id, whole_run_times  # noqa: E402, F401

from salfmix_transforms import methods  # noqa: E402

ROOT = HERE.parent
TRAIN_SCRIPT = ROOT / "train_timm.py"
RESULTS_DIR = ROOT / "benchmarks" / "results"
RUNS_DIR = RESULTS_DIR / "runs"  # per-run output folders (git-ignored: ``runs/``)

# (row, row label, where the paper reports it): the registry's methods (labels and places from
# salfmix_transforms.methods; ResizeMix is not one of the paper's CIFAR rows), then the rows of ROW_FLAGS.
# The paper's table numbers are given as references (PAPER_TOP1_ERROR).
ROWS: list[tuple[str, str, str]] = [
    *((spec.name, spec.label, spec.paper) for spec in methods.SPECS if spec.name != "resizemix"),
    # Issue 14: the saliency from the training step's own input gradient, one epoch late (SaliencyCache).
    ("salfmix-cached", "SalfMix, cached saliency", "—"),
    ("hybridmix-v1-cached", "HybridMix v1, cached saliency", "—"),
]
METHODS = [method for method, _, _ in ROWS]

# The paper's Table 7: top-1 error (%) on Tiny-ImageNet-200 with PreActResNet-18 (mean of its runs).
PAPER_TINYIMAGENET_TOP1_ERROR: dict[str, float] = {
    "baseline": 42.33,
    "cutout": 42.04,
    "salfmix": 40.28,
    "mixup": 40.22,
    "saliencymix": 37.76,
    "cutmix": 38.11,
    "hybridmix-v1": 38.46,
    "hybridmix-v2": 37.52,
    "hybridmix-v3": 36.86,
}

# Rows that are a registry method with extra train_timm.py flags: row -> (--method, flags).
ROW_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "salfmix-cached": ("salfmix", ("--saliency-source", "cached")),
    "hybridmix-v1-cached": ("hybridmix-v1", ("--saliency-source", "cached")),
}

# The paper's top-1 errors (%) on CIFAR-10 / CIFAR-100, from its own tables (../shared/paper): Tables 4 and 5
# with PreActResNet-18 (Table 4's row after "+Cutout" is labelled "+SaliencyMix" but holds SalfMix's values;
# see that folder's README), Table 9 with PreActResNet-101 for the two ablations it alone reports.
PAPER_TOP1_ERROR: dict[str, tuple[float, float, str]] = {
    "baseline": (5.17, 24.22, "Tables 4-5"),
    "cutout": (4.30, 23.72, "Tables 4-5"),
    "cutout-sal": (3.43, 20.87, "Table 9, PreActResNet-101"),
    "salfmix-nosal": (3.45, 20.70, "Table 9, PreActResNet-101"),
    "salfmix": (4.14, 22.64, "Tables 4-5"),
    "mixup": (4.10, 21.78, "Tables 4-5"),
    "cutmix": (3.96, 20.51, "Tables 4-5"),
    "saliencymix": (3.80, 20.02, "Tables 4-5"),
    "hybridmix-v1": (3.85, 21.42, "Tables 4-5"),
    "hybridmix-v2": (3.74, 19.88, "Tables 4-5"),
    "hybridmix-v3": (3.38, 19.84, "Tables 4-5"),
}


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    data_dir: Path | None
    epochs: int
    width: float
    seeds: tuple[int, ...]
    args: tuple[str, ...] = ()  # extra train_timm.py arguments
    val_split: str | None = None
    threads: int | None = None  # OMP_NUM_THREADS of each training process
    rows: tuple[str, ...] = tuple(METHODS)  # the default rows, in the order the runs are planned
    paper_column: str = "cifar"  # which of the paper's tables the "paper" column quotes: cifar | tinyimagenet


#: ``tin20``: the paper's Tiny-ImageNet settings on the 20-class slice, 30 epochs (``tin20-100`` below).
TIN20 = Protocol(
    name="tin20",
    description=(
        "Tiny-ImageNet 20-class slice (4,000 train / 1,000 val, 64x64), PreActResNet-18 width x0.25, "
        "grid 8, batch 128, cosine, CPU"
    ),
    data_dir=(ROOT / ".." / "shared" / "data" / "tin20"),
    epochs=30,
    width=0.25,
    seeds=(0, 1),
    # The paper's Tiny-ImageNet settings where they fit (Section 5.1; train_timm.py's defaults give SGD
    # lr 0.05 momentum 0.9 wd 1e-4): batch 128, grid 8, r = 0.3; a cosine schedule for the short run.
    args=tuple("-b 128 --salfmix-grid 8 --salfmix-ratio 0.3 --sched cosine -j 1 --checkpoint-hist 1".split()),
    val_split="val",
    threads=1,
    # Cheap rows first, so that a partial run pairs SalfMix (cached) with the baseline and Cutout early.
    rows=("baseline", "salfmix-cached", "cutout", "cutmix", "hybridmix-v3", "salfmix"),
    paper_column="tinyimagenet",
)


PROTOCOLS = {
    "cpu-mini": Protocol(
        name="cpu-mini",
        description="CIFAR-10 subset (5,085 train / 1,017 test, 32x32), PreActResNet-18 width x0.25, CPU",
        data_dir=(ROOT / ".." / "shared" / "data" / "cifar10-5k"),
        epochs=100,
        width=0.25,
        seeds=(0, 1),
        # train_timm.py's defaults otherwise: SGD momentum 0.9, lr 0.05, wd 1e-4, cosine, batch 64.
        # One loader process and one OpenMP thread per run (--threads), so that --jobs 2 runs two trainings
        # on the two cores; while other jobs loaded the machine, PyTorch's two OpenMP threads plus two loader
        # processes made an epoch ~10x slower (on a quiet machine a single run is faster with 2 threads).
        args=("-j", "1", "--checkpoint-hist", "1"),
        val_split="test",
        threads=1,
    ),
    "tin20": TIN20,
    # tin20 with 100 epochs: at 30 the regularisers (Cutout, CutMix) cost this small network accuracy, so
    # the paper's ordering cannot show; a longer run gives them the time they need. Its own records
    # (results/tin20-100.jsonl); everything else is tin20's.
    "tin20-100": replace(
        TIN20,
        name="tin20-100",
        description=TIN20.description.replace("cosine, CPU", "cosine, 100 epochs, CPU"),
        epochs=100,
    ),
    "paper": Protocol(
        name="paper",
        description="the paper's CIFAR setting (--preset cifar), full-width PreActResNet-18, 300 epochs, GPU",
        data_dir=None,
        epochs=300,
        width=1.0,
        seeds=(0, 1, 2),
        args=("--preset", "cifar", "--device", "cuda", "-j", "4", "--checkpoint-hist", "1"),
    ),
    "paper-tinyimagenet": Protocol(
        name="paper-tinyimagenet",
        description=(
            "the paper's Tiny-ImageNet-200 setting (--preset tinyimagenet: batch 128, grid 8, lr x0.1 at "
            "75, 150 and 225), full-width PreActResNet-18, 300 epochs, GPU"
        ),
        data_dir=None,
        epochs=300,
        width=1.0,
        seeds=(0, 1, 2),
        args=("--preset", "tinyimagenet", "--device", "cuda", "-j", "8", "--checkpoint-hist", "1"),
    ),
}


# ---------------------------------------------------------------------------------------------------------
# runs and results
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run(_runs.Run):
    protocol: str
    settings: dict  # what decides the result besides method and seed (data, epochs, width, extras)

    @property
    def settings_id(self) -> str:
        return settings_id(self.settings)


def protocol_settings(args: argparse.Namespace) -> dict:
    return {
        "data": Path(args.data_dir).name if args.data_dir else None,
        "epochs": args.epochs,
        "width": args.width,
        "extra": list(args.train_args),
    }


def plan_runs(args: argparse.Namespace) -> list[Run]:
    """Every (method, seed) of the request, seed-major so that a partial run covers all rows early."""
    settings = protocol_settings(args)
    runs = []
    for seed in args.seeds:
        for method in args.rows:
            experiment = f"{args.protocol}-{method}-s{seed}-{settings_id(settings)}"
            output_root = Path(args.runs_dir)
            train_method, row_flags = ROW_FLAGS.get(method, (method, ()))
            command = [
                sys.executable,
                str(TRAIN_SCRIPT),
                "--method",
                train_method,
                *row_flags,
                "--epochs",
                str(args.epochs),
                "--width",
                f"{args.width:g}",
                "--seed",
                str(seed),
                "--output",
                str(output_root),
                "--experiment",
                experiment,
                "--no-progress",
            ]
            if args.data_dir:
                command += ["--data-dir", str(args.data_dir)]
            if args.val_split:
                command += ["--val-split", args.val_split]
            command += list(args.train_args)
            runs.append(Run(method, seed, command, output_root / experiment, args.protocol, settings))
    return runs


def completed(records: list[dict], run: Run) -> dict | None:
    return _runs.done(_runs.mine(records, run.protocol, run.settings_id), run)


def _number(data: dict, key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def read_run_result(output: Path) -> dict:
    """The numbers of a finished run from its results JSON (``train_timm.py``'s final summary).

    ``train_time_s`` / ``aug_time_s`` cover the whole run (:func:`whole_run_times`), not only its last part.
    """
    candidates = [output / "results.json"] if (output / "results.json").is_file() else []
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        best = _number(data, "best_top1_err")
        if best is None:
            continue
        best_epoch = _number(data, "best_epoch")
        train_time, aug_time = whole_run_times(output) or (
            _number(data, "train_time_s"),
            _number(data, "aug_time_s"),
        )
        start_epoch = _number(data, "start_epoch")
        return {
            "best_top1_err": best,
            "best_epoch": None if best_epoch is None else int(best_epoch),
            "final_top1_err": _number(data, "final_top1_err"),
            "train_time_s": train_time,
            "aug_time_s": aug_time,
            "resumed_at_epoch": int(start_epoch) if start_epoch else None,
            "results_file": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
        }
    raise RuntimeError(f"no results.json with a best top-1 error in {output}")


def _command_for(run: Run) -> list[str]:
    """The run's command, resumed from its ``last.pth.tar`` (``--resume`` names the checkpoint) when there is
    one; a folder without one is moved aside (:func:`_runs.command_for`)."""
    return _runs.command_for(run)


def execute(run: Run, args: argparse.Namespace) -> dict:
    """Train one (method, seed); return its results record (raises on failure)."""
    command = _command_for(run)
    seconds = _runs.train(run, command, args.threads)
    record = {
        "protocol": run.protocol,
        "method": run.method,
        "seed": run.seed,
        "settings": run.settings,
        "settings_id": run.settings_id,
        "seconds": round(seconds, 1),
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "command": shlex.join(command),
        "threads": args.threads,
    }
    record.update(read_run_result(run.output))
    return record


# ---------------------------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------------------------


def _train_minutes(record: dict) -> float:
    """Training minutes of a run (all epochs); the invocation's wall time for records that lack them."""
    seconds = record.get("train_time_s")
    return (seconds if seconds is not None else record["seconds"]) / 60


def _paper_cell(row: str, column: str) -> str:
    """The paper's top-1 error for a row: CIFAR-10 / CIFAR-100 (Tables 4, 5, 9) or Tiny-ImageNet (Table 7).
    A cached-saliency row has no paper figure of its own (the paper computes the exact map)."""
    if column == "tinyimagenet":
        value = PAPER_TINYIMAGENET_TOP1_ERROR.get(row)
        return "—" if value is None else f"{value:.2f} (Table 7)"
    if row in PAPER_TOP1_ERROR:
        c10, c100, where = PAPER_TOP1_ERROR[row]
        return f"{c10:.2f} / {c100:.2f} ({where})"
    return "—"


# Paired differences shown under each table (a - b of the top-1 error, seed by seed; issue 23).
PAIRED_COMPARISONS: list[tuple[str, str]] = [
    ("salfmix", "baseline"),
    ("salfmix", "cutout"),
    ("salfmix-cached", "baseline"),
    ("salfmix-cached", "cutout"),
    ("hybridmix-v3", "cutmix"),
    ("salfmix-cached", "salfmix"),
    ("hybridmix-v1-cached", "hybridmix-v1"),
]

PAPER_HEADERS = {"cifar": "paper (CIFAR-10 / CIFAR-100)", "tinyimagenet": "paper (Tiny-ImageNet-200, R-18)"}


def results_table(records: list[dict], args: argparse.Namespace) -> str:
    settings = protocol_settings(args)
    wanted = settings_id(settings)
    mine = _runs.mine(records, args.protocol, wanted)
    others = len([r for r in records if r.get("protocol") == args.protocol]) - len(mine)
    protocol = PROTOCOLS[args.protocol]
    labels = {method: label for method, label, _ in ROWS}
    shown = [m for m in METHODS if m in protocol.rows or any(r.get("method") == m for r in mine)]
    rows = []
    for method in shown:
        runs = sorted((r for r in mine if r.get("method") == method), key=lambda r: r["seed"])
        best = [r["best_top1_err"] for r in runs]
        final = [r["final_top1_err"] for r in runs if r.get("final_top1_err") is not None]
        minutes = [_train_minutes(r) for r in runs]
        rows.append(
            [
                f"{labels[method]} (`{method}`)",
                str(len(runs)),
                _runs.mean_std(best),
                _runs.mean_std(final) if len(final) == len(runs) else "—",
                ", ".join(f"{r['best_top1_err']:.2f}" for r in runs) or "—",
                f"{statistics.fmean(minutes):.0f}" if minutes else "—",
                _paper_cell(method, protocol.paper_column),
            ]
        )
    header = [
        "method",
        "runs",
        "best top-1 err % (mean ± std)",
        "final top-1 err %",
        "per seed (best)",
        "train min/run",
        PAPER_HEADERS[protocol.paper_column],
    ]
    lines = ["| " + " | ".join(header) + " |", "| --- | ---: | ---: | ---: | --- | ---: | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    intro = [
        f"### Accuracy, protocol `{args.protocol}`",
        "",
        f"{protocol.description}. Settings: data `{settings['data']}`, {settings['epochs']} epochs, "
        f"width x{settings['width']:g}, extra arguments `{' '.join(settings['extra']) or 'none'}` "
        f"(settings id `{wanted}`). Top-1 error on the held-out split: best over epochs (the convention of "
        "the CutMix/SalfMix papers) and at the last epoch; mean ± sample standard deviation over seeds. "
        "`train min/run`: the training time of all epochs (augmentation included, evaluation and start-up "
        "not), summed from each run's `summary.csv` so that a resumed run counts whole.",
    ]
    if others:
        intro += [
            "",
            f"({others} result(s) of this protocol with other settings are in the file, not shown.)",
        ]
    by_method = {m: [r for r in mine if r.get("method") == m] for m in METHODS}
    paired = _runs.paired_table(PAIRED_COMPARISONS, by_method, "best_top1_err", "Δ best top-1 err", "lower")
    if len(paired) > 2:
        paired = [
            "",
            "Paired differences of the best top-1 error (percentage points; negative: the first method has "
            "the lower error), seed by seed, with a 95 % t interval over the seeds:",
            "",
            *paired,
        ]
    else:
        paired = []
    return "\n".join([*intro, "", *lines, *paired]) + "\n"


# ---------------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cpu-mini")
    parser.add_argument("--rows", nargs="+", choices=METHODS, metavar="METHOD", help="subset of the rows")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the protocol's)")
    parser.add_argument("--epochs", type=int, help="override the protocol's epochs")
    parser.add_argument("--width", type=float, help="override the protocol's width multiplier")
    parser.add_argument("--data-dir", help="override the protocol's data directory")
    parser.add_argument("--val-split", help="override the protocol's validation split name")
    parser.add_argument(
        "--max-runs", type=int, help="start at most N new runs, then write the table and stop"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the planned commands, run nothing")
    parser.add_argument(
        "--results", type=Path, help="JSON-lines results file (default: results/<protocol>.jsonl)"
    )
    parser.add_argument("--table", type=Path, help="markdown table file (default: results/<protocol>.md)")
    parser.add_argument(
        "--runs-dir", type=Path, help="where run folders go (default: results/runs/<protocol>)"
    )
    parser.add_argument(
        "--threads", type=int, help="OMP_NUM_THREADS of each training process (default: the protocol's)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="training processes at once (e.g. 2 on 2 free cores, 1 thread each)",
    )
    parser.epilog = "Arguments after a lone `--` are passed to train_timm.py unchanged."
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    protocol = PROTOCOLS[args.protocol]
    args.train_args = [*protocol.args, *extra]
    args.rows = args.rows or list(protocol.rows)
    args.seeds = args.seeds if args.seeds is not None else list(protocol.seeds)
    args.epochs = args.epochs or protocol.epochs
    args.width = args.width or protocol.width
    args.val_split = args.val_split or protocol.val_split
    args.threads = args.threads if args.threads is not None else protocol.threads
    if args.data_dir is None and protocol.data_dir is not None:
        args.data_dir = str(protocol.data_dir.resolve())
    args.results = args.results or RESULTS_DIR / f"{args.protocol}.jsonl"
    args.table = args.table or args.results.with_suffix(".md")
    args.runs_dir = args.runs_dir or RUNS_DIR / args.protocol
    if args.max_runs is not None and args.max_runs < 0:
        parser.error("--max-runs must be >= 0")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data_dir is None:
        print(
            f"[accuracy] protocol {args.protocol!r} needs --data-dir (extracted CIFAR-10/100 or "
            "tiny-imagenet-200)",
            file=sys.stderr,
        )
        return 2
    if not Path(args.data_dir).is_dir():
        print(f"[accuracy] skipped: data directory {args.data_dir} is absent", file=sys.stderr)
        return 0
    records = _runs.load_results(args.results, "accuracy")
    runs = plan_runs(args)
    pending = [run for run in runs if completed(records, run) is None]
    note = f" (at most {args.max_runs} now)" if args.max_runs else ""
    _runs.print_plan("accuracy", args, runs, pending, note)
    if args.dry_run:
        for run in runs:
            state = "done" if completed(records, run) else "todo"
            env = f"OMP_NUM_THREADS={args.threads} " if args.threads else ""
            print(f"[{state}] {run.method} seed {run.seed}: {env}{shlex.join(run.command)}")
        return 0
    if args.max_runs is not None:
        pending = pending[: args.max_runs]
    for number, run in enumerate(pending, 1):
        print(f"[accuracy] queued {number}/{len(pending)}: {run.method} seed {run.seed}", file=sys.stderr)
    return _runs.run_all(
        pending,
        args,
        tag="accuracy",
        execute=execute,
        results_table=results_table,
        outcome=lambda record: f"best top-1 error {record['best_top1_err']:.2f}%",
    )


if __name__ == "__main__":
    sys.exit(main())
