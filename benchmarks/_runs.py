"""Run bookkeeping shared by the training benchmarks (``accuracy.py``, ``segmentation.py``).

Each benchmark trains one subprocess per (method, seed) in its own run folder and appends one JSON line per
finished run to the protocol's results file; the hash of the settings (:func:`settings_id`) names the run
folders and tells a protocol's records with other settings apart. A run already recorded is skipped, a run
folder left by an interrupted benchmark is resumed from its last checkpoint (or moved aside without one), and
the markdown table is rewritten after every run, so the same command can be started again at any time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the training scripts run from the project root
CHECKPOINT = "last.pth.tar"  # the training scripts' latest checkpoint in a run folder


@dataclass(frozen=True)
class Run:
    method: str
    seed: int
    command: list[str]
    output: Path  # the training script's run folder (--output / --experiment); absent before a fresh start

    @property
    def log(self) -> Path:
        return self.output.with_name(self.output.name + ".log")


def settings_id(settings: dict) -> str:
    """Short hash of what decides a run's result besides method and seed; it names runs and records."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


# ---------------------------------------------------------------------------------------------------------
# results file
# ---------------------------------------------------------------------------------------------------------


def load_results(path: Path, tag: str) -> list[dict]:
    """Every record of a JSON-lines results file (none without the file); an unreadable line is skipped
    with a message ``[tag] file:line`` on stderr."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"[{tag}] {path}:{number}: unreadable line skipped", file=sys.stderr)
    return records


def mine(records: list[dict], protocol: str, sid: str) -> list[dict]:
    """The records of one protocol with one settings id (a results file may hold others)."""
    return [r for r in records if r.get("protocol") == protocol and r.get("settings_id") == sid]


def done(records: list[dict], run: Run) -> dict | None:
    """The record of ``run``'s method and seed among ``records`` (those of :func:`mine`), or ``None``."""
    return next((r for r in records if r.get("method") == run.method and r.get("seed") == run.seed), None)


def append_result(path: Path, record: dict) -> None:
    """Append one record as a JSON line, flushed to disk before the next run is reported."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------------------


def resumable(run: Run) -> bool:
    """Whether the run's folder holds a checkpoint to continue from (an interrupted run)."""
    return (run.output / CHECKPOINT).is_file()


def command_for(run: Run, resume_folder: bool = False) -> list[str]:
    """The run's command, continuing an interrupted run from its last checkpoint when there is one.

    The training scripts pick a new folder (``name-1``) when ``--experiment`` exists and no ``--resume`` is
    given, so a folder left by an interrupted run is either resumed (it has ``last.pth.tar``) or moved aside.
    ``--resume`` gets the checkpoint, or with ``resume_folder`` the run folder (train_seg.py's form).
    """
    if resumable(run):
        return [*run.command, "--resume", str(run.output if resume_folder else run.output / CHECKPOINT)]
    if run.output.exists():
        run.output.rename(run.output.with_name(f"{run.output.name}.incomplete-{int(time.time())}"))
    return run.command


def train(run: Run, command: list[str], threads: int | None) -> float:
    """Run ``command`` (the training script is ``command[1]``) from the project root, its output appended to
    the run's log after the command line; return its wall seconds. ``threads`` (when set) is the process's
    ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``. Raises RuntimeError with the log's tail when it fails."""
    run.output.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    with run.log.open("a") as handle:
        handle.write("$ " + shlex.join(command) + "\n")
        handle.flush()
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        tail = "\n".join(run.log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{Path(command[1]).name} exited with {code} (log: {run.log}):\n{tail}")
    return seconds


def whole_run_times(output: Path) -> tuple[float, float] | None:
    """Training and augmentation seconds summed over every epoch of a run, resumed parts included.

    ``results.json`` of a run resumed from a checkpoint older than the time totals in ``train_state`` counts
    only the epochs of the invocation that finished the run; ``summary.csv`` (timm's ``update_summary``,
    appended to across resumes) has one row per epoch, whichever version wrote the checkpoints. An epoch
    logged twice (re-run after a resume from an older checkpoint) counts once, with its last row. ``None``
    without the file or its time columns.
    """
    path = output / "summary.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        by_epoch = {row["epoch"]: row for row in csv.DictReader(handle)}
    try:
        train = sum(float(row["train_epoch_time"]) for row in by_epoch.values())
        aug = sum(float(row["train_aug_time"]) for row in by_epoch.values())
    except (KeyError, TypeError, ValueError):
        return None
    return train, aug


# ---------------------------------------------------------------------------------------------------------
# table and driver
# ---------------------------------------------------------------------------------------------------------


def mean_std(values: list[float]) -> str:
    """``mean ± sample std`` with two decimals; the value alone for one, ``—`` for none."""
    if not values:
        return "—"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}"


def t_quantile(probability: float, df: int) -> float:
    """Student's t quantile (scipy, which scikit-learn in the ``train`` extra brings)."""
    from scipy.stats import t

    return float(t.ppf(probability, df))


def paired_difference(runs_a: list[dict], runs_b: list[dict], key: str) -> dict | None:
    """``a - b`` of ``key`` over the seeds both have, with a 95 % confidence interval.

    Seeds pair two methods' runs: seed s starts both from the same weights (and, for runs made since
    ``DataOrder``, the same batches), so the difference is taken seed by seed and its spread is the spread
    of the differences, not of each method. The interval is ``mean ± t(0.975, n - 1) * sd / sqrt(n)``;
    ``None`` without a shared seed, and no interval from a single pair.
    """
    by_seed_b = {r["seed"]: r[key] for r in runs_b if r.get(key) is not None}
    pairs = sorted((r["seed"], r[key] - by_seed_b[r["seed"]]) for r in runs_a if r["seed"] in by_seed_b)
    if not pairs:
        return None
    diffs = [d for _, d in pairs]
    mean = statistics.fmean(diffs)
    low = high = None
    if len(diffs) > 1:
        # Equal differences up to float32 rounding (errors come in steps of 100/N % for N images) have no
        # spread to build an interval from: low == high marks them.
        spread = statistics.stdev(diffs) if max(diffs) - min(diffs) > 1e-6 else 0.0
        half = t_quantile(0.975, len(diffs) - 1) * spread / len(diffs) ** 0.5
        low, high = mean - half, mean + half
    return {"seeds": [s for s, _ in pairs], "diffs": diffs, "mean": mean, "low": low, "high": high}


def _points(value: float) -> str:
    """``value`` signed, two decimals; a value that rounds to zero is ``+0.00`` (never ``-0.00``)."""
    return f"{round(value, 2) + 0.0:+.2f}"


def paired_table(
    comparisons: list[tuple[str, str]], runs: dict[str, list[dict]], key: str, what: str, better: str
) -> list[str]:
    """Markdown lines of the paired differences ``a - b`` of ``key`` for each comparison with shared seeds.

    ``better``: ``"lower"`` (an error) or ``"higher"`` (mIoU) - which sign of the difference favours ``a``.
    """
    header = f"| comparison | seeds | {what} per seed | mean | 95 % CI | distinguishable from 0? |"
    lines = [header, "| --- | --- | --- | ---: | --- | --- |"]
    for a, b in comparisons:
        result = paired_difference(runs.get(a, []), runs.get(b, []), key)
        if result is None:
            continue
        seeds = ", ".join(str(s) for s in result["seeds"])
        per_seed = ", ".join(_points(d) for d in result["diffs"])
        if result["low"] is None:
            interval, verdict = "— (one seed)", "no interval"
        elif result["low"] == result["high"]:  # equal differences (errors come in steps of 1/N images)
            interval, verdict = "— (no spread)", "cannot tell from equal differences"
        else:
            interval = f"[{result['low']:+.2f}, {result['high']:+.2f}]"
            if result["low"] > 0 or result["high"] < 0:
                favours = (result["mean"] < 0) == (better == "lower")
                verdict = f"yes: `{a if favours else b}` better"
            else:
                verdict = "no"
        lines.append(
            f"| `{a}` − `{b}` | {seeds} | {per_seed} | {_points(result['mean'])} | {interval} | {verdict} |"
        )
    return lines


def print_plan(
    tag: str, args: argparse.Namespace, runs: list[Run], pending: list[Run], note: str = ""
) -> None:
    """The request in one line on stderr: runs requested, already in the results file, to do."""
    print(
        f"[{tag}] protocol {args.protocol}: {len(runs)} runs requested, {len(runs) - len(pending)} "
        f"already in {args.results}, {len(pending)} to do{note}",
        file=sys.stderr,
    )


def write_table(args: argparse.Namespace, results_table: Callable, tag: str) -> str:
    """Write ``results_table(records, args)`` of the results file, read again (another invocation may have
    appended runs meanwhile), to ``args.table``; return it."""
    table = results_table(load_results(args.results, tag), args)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(table)
    return table


def run_all(
    pending: list[Run],
    args: argparse.Namespace,
    *,
    tag: str,
    execute: Callable,
    results_table: Callable,
    outcome: Callable[[dict], str],
) -> int:
    """Train the pending runs, ``args.jobs`` at a time; as each finishes, append its record
    (``execute(run, args)``) to ``args.results``, rewrite the table and report ``outcome(record)`` on stderr.
    A run that raises RuntimeError or OSError is reported and left out. Prints the final table; returns the
    exit status (1 when a run failed)."""
    failures = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(execute, run, args): run for run in pending}
        for future in concurrent.futures.as_completed(futures):
            run = futures[future]
            try:
                record = future.result()
            except (RuntimeError, OSError) as exc:
                failures += 1
                print(f"[{tag}] {run.method} seed {run.seed} FAILED: {exc}", file=sys.stderr)
                continue
            append_result(args.results, record)  # only this thread writes the results and the table
            write_table(args, results_table, tag)
            print(
                f"[{tag}] {run.method} seed {run.seed}: {outcome(record)} ({record['seconds'] / 60:.1f} min)",
                file=sys.stderr,
            )
    print(write_table(args, results_table, tag))
    return 1 if failures else 0
