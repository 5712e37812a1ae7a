"""The benchmark scripts keep working: speed.py --quick, accuracy.py (plan, a tiny real run, resumability),
perturbation.py on that tiny run.

No timing is asserted anywhere: only that the tables have the rows and columns they promise.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _markdown_helpers import markdown_tables
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SPEED = ROOT / "benchmarks" / "speed.py"
ACCURACY = ROOT / "benchmarks" / "accuracy.py"
PERTURBATION = ROOT / "benchmarks" / "perturbation.py"
# A step ratio: the median over rounds of the candidate over the plain step, and its 95 % interval.
RATIO_CELL = re.compile(r"\d+\.\d+x \((\d+\.\d+-\d+\.\d+|no interval: [1-5] rounds?)\)")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


accuracy = _load(ACCURACY, "benchmarks_accuracy")
perturbation = _load(PERTURBATION, "benchmarks_perturbation")
pointing = _load(ROOT / "benchmarks" / "pointing.py", "benchmarks_pointing")


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def _table_with(tables: list[list[list[str]]], first_header: str) -> list[list[str]]:
    matches = [t for t in tables if t[0][0] == first_header]
    assert len(matches) == 1, f"expected one table starting with {first_header!r}, got {len(matches)}"
    table = matches[0]
    assert all(len(row) == len(table[0]) for row in table), "ragged table"
    return table


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """ImageFolder: train/ 2 classes x 8 PNGs, val/ 2 classes x 4 PNGs, 32x32."""
    root = tmp_path_factory.mktemp("tiny_bench_folder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        for label, colour in enumerate(((200, 60, 40), (40, 60, 200))):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(colour, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return root


# --- speed.py ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_speed_quick_prints_all_tables(tmp_path):
    out = tmp_path / "speed.md"
    proc = _run(str(SPEED), "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    markdown = out.read_text()
    assert markdown.strip() == proc.stdout.strip()
    tables = markdown_tables(markdown)

    speed = _load(SPEED, "benchmarks_speed")
    mixing = _table_with(tables, "method")
    assert mixing[0][:3] == ["method", "library", "mode"]
    assert "B=64 32px (us)" in mixing[0] and "B=64 32px / timm" in mixing[0]
    assert [tuple(row[:3]) for row in mixing[1:]] == [(r[0], r[1], r[3]) for r in speed.MIX_ROWS]
    for row in mixing[1:]:
        if row[1] in ("ours", "timm", "torchvision", "torch"):
            assert row[3] not in ("error", "n/a"), row  # everything but optional kornia must be timed

    targets = _table_with(tables, "target")
    assert len(targets) == 1 + 6  # four elem methods against timm elem + the SalfMix patch step (x2)
    assert targets[0][6:] == ["status", "ceiling"]
    assert all(row[6] in ("met", "NOT met") for row in targets[1:]), targets

    steps = _table_with(tables, "variant")
    assert [row[0] for row in steps[1:]] == [v.label for v in speed.STEP_VARIANTS]
    assert {"SalfMix / plain", "HybridMix v3 / plain"} <= set(steps[0])
    assert all(RATIO_CELL.fullmatch(cell) for row in steps[1:] for cell in (row[3], row[5])), steps

    sources = _table_with(tables, "saliency source")
    assert [row[0] for row in sources[1:]] == ["SalfMix", "HybridMix v3"]
    assert {"exact / plain", "cached / plain", "lowres / plain"} <= set(sources[0])
    assert all(RATIO_CELL.fullmatch(c) for row in sources[1:] for c in (row[3], row[5], row[7])), sources

    static = _table_with(tables, "batch")
    assert static[0][1:4] == ["batched torch (ms)", "per-image loop (ms)", "loop / batched"]
    assert [row[0] for row in static[1:]] == ["B=16 32px"]
    assert "error" not in markdown.split("Total benchmark time")[0]


def test_time_group_reports_errors_and_missing_libraries():
    import torch

    speed = _load(SPEED, "benchmarks_speed")

    def missing():
        raise speed.NotAvailable("no such library")

    def broken():
        raise ValueError("boom")

    timing = speed.time_group(
        {"ok": lambda: lambda: None, "missing": missing, "broken": broken},
        device=torch.device("cpu"),
        repeats=2,
        warmup=1,
        min_repeat_s=0.0,
    )
    assert set(timing.seconds) == {"ok"}
    assert timing.cell("missing", "us") == "n/a" and timing.cell("broken", "us") == "error"
    assert speed.fmt_ratio(2.0, 1.0) == "2.00x" and speed.fmt_ratio(None, 1.0) == "n/a"


def test_median_interval_is_the_distribution_free_interval_of_the_median():
    speed = _load(SPEED, "benchmarks_speed")
    values = [float(v) for v in range(30, 0, -1)]  # 30 values, unsorted
    median, low, high = speed.median_interval(values)
    # n = 30: P(Binomial(30, 1/2) <= 9) = 0.021 <= 0.025 < P(<= 10) = 0.049, so x_(10) and x_(21).
    assert (median, low, high) == (15.5, 10.0, 21.0)
    # Six values are the fewest whose range covers the median with 95 %: 1 - 2 / 2**6 = 0.969.
    assert speed.median_interval([float(v) for v in range(6)]) == (2.5, 0.0, 5.0)
    assert speed.median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (3.0, None, None)  # 0.94: no interval
    assert speed.median_interval([2.0]) == (2.0, None, None)
    with pytest.raises(ValueError, match="values"):
        speed.median_interval([])
    with pytest.raises(ValueError, match="confidence"):
        speed.median_interval([1.0] * 10, confidence=1.5)


def test_step_ratios_are_paired_by_round_so_that_a_drift_cancels():
    speed = _load(SPEED, "benchmarks_speed")
    # The machine slows down 3x during the run; the candidate is always 1.1x the plain step of its round.
    plain = [0.1 * (1 + 2 * (i >= 12)) for i in range(20)]
    timing = speed.Timing(rounds={"plain": plain, "cached": [1.1 * t for t in plain]})
    timing.seconds = {name: float(np.median(v)) for name, v in timing.rounds.items()}
    median, low, high = timing.ratio("cached", "plain")
    assert median == pytest.approx(1.1) and low == pytest.approx(1.1) and high == pytest.approx(1.1)
    assert timing.ratio_cell("cached", "plain") == "1.10x (1.10-1.10)"
    assert timing.ratio("missing", "plain") is None and timing.ratio_cell("missing", "plain") == "n/a"
    few = speed.Timing(rounds={"plain": [0.1] * 3, "cached": [0.11] * 3})
    assert few.ratio_cell("cached", "plain") == "1.10x (no interval: 3 rounds)"
    zero = speed.Timing(rounds={"plain": [0.0] * 3, "cached": [0.11] * 3})  # nothing to divide by
    assert zero.ratio("cached", "plain") is None and zero.ratio_cell("cached", "plain") == "n/a"
    # The slow-down comes between the plain step and the candidate of rounds 9 and 10: the medians of the
    # two lists then fall on different machines (ratio 3.3), the paired median does not (1.1).
    plain = [0.1] * 11 + [0.3] * 9
    cached = [0.11] * 9 + [0.33] * 11
    drift = speed.Timing(rounds={"plain": plain, "cached": cached})
    assert float(np.median(cached) / np.median(plain)) == pytest.approx(3.3)
    assert drift.ratio("cached", "plain")[0] == pytest.approx(1.1)


@pytest.mark.parametrize("sections", ["4,5", "1"])
def test_speed_json_needs_exactly_one_of_sections_4_and_5(sections, capsys):
    speed = _load(SPEED, "benchmarks_speed")
    with pytest.raises(SystemExit):
        speed.parse_args(["--sections", sections, "--json", "out.json"])
    assert "--json writes the numbers of section 4 or of section 5" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--amp", "bf16"], ["--compile"]])
def test_speed_refuses_section_4_flags_where_section_4_does_not_run(flag, capsys):
    speed = _load(SPEED, "benchmarks_speed")
    with pytest.raises(SystemExit):
        speed.parse_args(["--task", "seg", *flag])
    assert "apply to section 4 only" in capsys.readouterr().err
    speed.parse_args(["--sections", "4", *flag])  # accepted where section 4 runs


@pytest.mark.parametrize("option", ["--step-repeats", "--repeats"])
def test_speed_needs_at_least_one_timed_round(option, capsys):
    speed = _load(SPEED, "benchmarks_speed")
    with pytest.raises(SystemExit):
        speed.parse_args([option, "0"])
    assert f"{option} must be >= 1" in capsys.readouterr().err


def test_time_group_keeps_every_round():
    speed = _load(SPEED, "benchmarks_speed")
    timing = speed.time_group(
        {"a": lambda: lambda: None, "b": lambda: lambda: None},
        device=torch.device("cpu"),
        repeats=3,
        warmup=0,
        min_repeat_s=0.0,
    )
    assert {name: len(values) for name, values in timing.rounds.items()} == {"a": 3, "b": 3}
    assert timing.seconds["a"] == float(np.median(timing.rounds["a"]))


# --- accuracy.py ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_accuracy_dry_run_plans_every_row_and_seed(tiny_folder, tmp_path):
    results = str(tmp_path / "results.jsonl")  # not the real file: the long run may have filled it
    proc = _run(str(ACCURACY), "--dry-run", "--data-dir", str(tiny_folder), "--results", results, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == len(accuracy.METHODS) * 2  # cpu-mini: every row, seeds 0 and 1
    for method in accuracy.METHODS:
        train_method, flags = accuracy.ROW_FLAGS.get(method, (method, ()))
        command = " ".join(("--method", train_method, *flags)) + " "
        for seed in (0, 1):
            assert any(command in ln and f"--seed {seed} " in ln for ln in lines), method
    assert all(ln.startswith("[todo]") and "train_timm.py" in ln for ln in lines)
    assert all("--epochs 100 --width 0.25" in ln and "OMP_NUM_THREADS=1" in ln for ln in lines)

    for protocol, preset in (("paper", "cifar"), ("paper-tinyimagenet", "tinyimagenet")):
        paper = _run(
            str(ACCURACY), "--protocol", protocol, "--dry-run", "--data-dir", str(tiny_folder),
            "--rows", "salfmix", "--results", results,
        )  # fmt: skip
        assert paper.returncode == 0, paper.stderr
        planned = [line for line in paper.stdout.splitlines() if line.startswith("[")]
        assert len(planned) == 3  # seeds 0, 1, 2
        assert all(f"--preset {preset}" in ln and "--epochs 300" in ln for ln in planned)


@pytest.mark.slow
def test_accuracy_skips_cleanly_without_data(tmp_path):
    proc = _run(str(ACCURACY), "--data-dir", str(tmp_path / "absent"), "--results", str(tmp_path / "r.jsonl"))
    assert proc.returncode == 0 and "skipped" in proc.stderr
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.slow
def test_accuracy_tiny_run_writes_a_row_and_resumes(tiny_folder, tmp_path):
    results, table = tmp_path / "results.jsonl", tmp_path / "table.md"
    args = [
        str(ACCURACY), "--data-dir", str(tiny_folder), "--val-split", "val", "--rows", "baseline",
        "--seeds", "0", "--epochs", "1", "--width", "0.125", "--results", str(results), "--table", str(table),
        "--runs-dir", str(tmp_path / "runs"), "--", "-b", "8", "--workers", "0",
    ]  # fmt: skip
    first = _run(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert (record["method"], record["seed"], record["protocol"]) == ("baseline", 0, "cpu-mini")
    assert 0.0 <= record["best_top1_err"] <= 100.0 and record["best_epoch"] == 0
    run_dir = Path(record["results_file"]).parent
    summary = list(csv.DictReader((run_dir / "summary.csv").open()))
    assert record["train_time_s"] == pytest.approx(sum(float(row["train_epoch_time"]) for row in summary))
    assert record["resumed_at_epoch"] is None
    rows = _table_with(markdown_tables(table.read_text()), "method")
    baseline = next(row for row in rows if row[0].startswith("Baseline"))
    assert baseline[1] == "1" and baseline[2] == f"{record['best_top1_err']:.2f}"
    assert all(row[1] == "0" for row in rows[1:] if row is not baseline)
    assert len(rows) == 1 + len(accuracy.ROWS)

    second = _run(*args)
    assert second.returncode == 0, second.stderr
    assert "1 already in" in second.stderr and "0 to do" in second.stderr
    assert len(results.read_text().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()) == [
        Path(record["results_file"]).parent.name
    ]

    # perturbation.py probes the finished run's network with each single-image method.
    out = tmp_path / "perturbation.md"
    probe = _run(str(PERTURBATION), "--run", str(run_dir), "--batch-size", "8", "--max-batches", "1",
                 "--out", str(out))  # fmt: skip
    assert probe.returncode == 0, probe.stdout[-3000:] + probe.stderr[-3000:]
    rows = {row[0]: row for row in _table_with(markdown_tables(out.read_text()), "method")[1:]}
    assert list(rows) == [f"`{m}`" for m in ("baseline", "cutout", "cutout-sal", "salfmix-nosal", "salfmix")]
    assert rows["`baseline`"][2] == "1.00x" and rows["`baseline`"][4] == "0.0"
    patch_share = 100 * 9 * 9 / (32 * 32)  # o = floor(32 * 0.3) = 9 at 32x32
    for method in ("`cutout-sal`", "`salfmix-nosal`", "`salfmix`"):
        assert 0.0 < float(rows[method][4]) <= patch_share + 0.05, rows[method]
    assert float(rows["`cutout`"][4]) > 0.0
    assert all(row[5] == row[6] == "—" for row in rows.values())  # no two-class labels

    # ... and with two-image methods, lam drawn per image ('elem'), which adds the share-gap columns.
    probe = _run(str(PERTURBATION), "--run", str(run_dir), "--batch-size", "8", "--max-batches", "1",
                 "--methods", "cutmix", "hybridmix-v3", "--mixup-mode", "elem",
                 "--out", str(out))  # fmt: skip
    assert probe.returncode == 0, probe.stdout[-3000:] + probe.stderr[-3000:]
    assert "two-image mode 'elem'" in out.read_text()
    rows = {row[0]: row for row in _table_with(markdown_tables(out.read_text()), "method")[1:]}
    assert list(rows) == ["`cutmix`", "`hybridmix-v3`"]
    for row in rows.values():
        assert row[2] == "—" and 0.0 < float(row[4]) < 100.0
        assert 0.0 <= float(row[5]) <= 100.0 and 0.0 <= float(row[6]) <= 100.0

    # pointing.py on the same network: a box on every validation image (the left half), grid 4.
    boxed = tmp_path / "boxed"
    shutil.copytree(tiny_folder, boxed)
    names = sorted(p.name for p in (boxed / "val").rglob("*.png"))
    (boxed / "val_boxes.tsv").write_text("".join(f"{n}\tclass0\t0\t0\t15\t31\n" for n in names))
    probe = _run(str(ROOT / "benchmarks" / "pointing.py"), "--runs", str(run_dir), "--data-dir", str(boxed),
                 "--grid", "4", "--out", str(out))  # fmt: skip
    assert probe.returncode == 0, probe.stdout[-3000:] + probe.stderr[-3000:]
    (row,) = _table_with(markdown_tables(out.read_text()), "network")[1:]
    assert row[1] == "8" and float(row[2]) == 50.0 and float(row[3]) == 50.0  # grid 4: 8 of 16 centres
    assert all(0.0 <= float(v) <= 100.0 for v in row[4:])


# --- perturbation.py helpers ---------------------------------------------------------------------------


def test_share_gap_compares_the_networks_split_with_the_labels():
    soft = torch.tensor(
        [
            [0.7, 0.3, 0.0],  # two classes, lam_a = 0.7
            [0.0, 0.5, 0.5],  # a tie: agreed whatever the network says
            [0.0, 0.0, 1.0],  # one class: left out
        ]
    )
    probs = torch.tensor([[0.2, 0.6, 0.2], [0.1, 0.6, 0.3], [0.5, 0.5, 0.0]])
    gap, agreed, pairs = perturbation.share_gap(probs.log(), soft)
    # row 0: split 0.2 / 0.8 = 0.25 against 0.7, disagrees; row 1: split 0.6 / 0.9 against 0.5 (either
    # class may come first among the tied ones, so the gap is |2/3 - 0.5| or |1/3 - 0.5|, both 1/6)
    assert pairs == 2 and agreed == 1
    assert gap == pytest.approx(0.45 + 1 / 6)


def test_share_gap_of_a_network_that_follows_the_label_is_zero():
    lam = torch.tensor([0.9, 0.6, 0.55])
    soft = torch.stack([lam, 1 - lam, torch.zeros(3)], dim=1)
    gap, agreed, pairs = perturbation.share_gap(soft.log(), soft)
    assert pairs == 3 and agreed == 3 and gap == pytest.approx(0.0, abs=1e-6)


# --- accuracy.py helpers -------------------------------------------------------------------------------


def _args(*argv: str):
    return accuracy.parse_args(["--data-dir", "/data/x", *argv])


def test_settings_identify_runs():
    base = accuracy.protocol_settings(_args())
    assert accuracy.settings_id(base) == accuracy.settings_id(accuracy.protocol_settings(_args()))
    assert accuracy.settings_id(base) != accuracy.settings_id(
        accuracy.protocol_settings(_args("--epochs", "7"))
    )
    extra = accuracy.protocol_settings(_args("--", "--lr", "0.1"))
    assert extra["extra"][-2:] == ["--lr", "0.1"] and accuracy.settings_id(extra) != accuracy.settings_id(
        base
    )


def test_table_mean_and_std_over_seeds():
    args = _args()
    sid = accuracy.settings_id(accuracy.protocol_settings(args))

    def record(seed: int, err: float, sid: str = sid) -> dict:
        return {
            "protocol": "cpu-mini",
            "method": "salfmix",
            "seed": seed,
            "settings_id": sid,
            "best_top1_err": err,
            "final_top1_err": err + 1,
            "seconds": 600.0,
        }

    # Training minutes come from train_time_s (8 min); a record without it falls back to its wall time (10).
    records = [record(0, 20.0) | {"train_time_s": 480.0}, record(1, 22.0), record(2, 99.0, "other-settings")]
    rows = _table_with(markdown_tables(accuracy.results_table(records, args)), "method")
    salfmix = next(row for row in rows if "`salfmix`" in row[0])
    assert salfmix[1:6] == ["2", "21.00 ± 1.41", "22.00 ± 1.41", "20.00, 22.00", "9"]
    # The paper column comes from the paper's own tables (../shared/paper): SalfMix, Tables 4 and 5.
    assert salfmix[6] == "4.14 / 22.64 (Tables 4-5)"
    cached = next(row for row in rows if "`salfmix-cached`" in row[0])
    assert cached[1] == "0" and cached[6] == "—"
    assert accuracy.completed(records, accuracy.plan_runs(args)[0]) is None  # baseline seed 0 not done


def test_tin20_100_is_tin20_with_100_epochs_and_its_own_records():
    """The longer protocol: tin20's data, network, flags and paired seeds with 100 epochs (the regularisers
    cost this network accuracy at 30); its own settings id and results file, so the 30-epoch table stays."""
    short, long = _args("--protocol", "tin20"), _args("--protocol", "tin20-100")
    runs = accuracy.plan_runs(long)
    assert [(r.method, r.seed) for r in runs[:6]] == [(m, 0) for m in accuracy.PROTOCOLS["tin20-100"].rows]
    assert len(runs) == 12

    def flags(command: list[str]) -> dict[str, str]:  # the run folder's flags left out: they differ
        found, words = {}, command[2:]  # after the interpreter and the script
        for i, word in enumerate(words):
            if word.startswith("-"):
                has_value = i + 1 < len(words) and not words[i + 1].startswith("-")
                found[word] = words[i + 1] if has_value else ""
        return {k: v for k, v in found.items() if k not in ("--output", "--experiment")}

    twins = {(twin.method, twin.seed): twin for twin in accuracy.plan_runs(short)}
    assert set(twins) == {(run.method, run.seed) for run in runs}
    for run in runs:
        assert flags(run.command) == {**flags(twins[run.method, run.seed].command), "--epochs": "100"}
    long_id = accuracy.settings_id(accuracy.protocol_settings(long))
    assert long_id != accuracy.settings_id(accuracy.protocol_settings(short))
    assert long.results.name == "tin20-100.jsonl"


def test_tin20_plans_the_paper_tinyimagenet_settings_and_quotes_table_7():
    args = _args("--protocol", "tin20")
    runs = accuracy.plan_runs(args)
    assert [(r.method, r.seed) for r in runs[:6]] == [(m, 0) for m in accuracy.PROTOCOLS["tin20"].rows]
    assert len(runs) == 12  # six rows, seeds 0 and 1
    for run in runs:
        command = " ".join(run.command)
        assert "--epochs 30 --width 0.25" in command and "--val-split val" in command
        assert "-b 128 --salfmix-grid 8 --salfmix-ratio 0.3 --sched cosine" in command
    sid = accuracy.settings_id(accuracy.protocol_settings(args))
    records = [
        {"protocol": "tin20", "method": m, "seed": 0, "settings_id": sid, "best_top1_err": e, "seconds": 60.0}
        for m, e in (("baseline", 70.0), ("salfmix", 68.5))
    ]
    tables = markdown_tables(accuracy.results_table(records, args))
    rows = {row[0]: row for row in _table_with(tables, "method")[1:]}
    assert len(rows) == 6  # the protocol's rows only
    assert rows["SalfMix (`salfmix`)"][6] == "40.28 (Table 7)"
    assert rows["HybridMix v3 (+ CutMix) (`hybridmix-v3`)"][6] == "36.86 (Table 7)"
    assert rows["SalfMix, cached saliency (`salfmix-cached`)"][6] == "—"
    paired = _table_with(tables, "comparison")
    assert paired[1][:5] == ["`salfmix` − `baseline`", "0", "-1.50", "-1.50", "— (one seed)"]


def test_paired_difference_is_taken_seed_by_seed_with_a_t_interval():
    runs_a = [{"seed": s, "err": e} for s, e in ((0, 20.0), (1, 21.0), (2, 19.0), (5, 30.0))]
    runs_b = [{"seed": s, "err": e} for s, e in ((0, 21.0), (1, 23.0), (2, 19.5), (3, 10.0))]
    result = accuracy._runs.paired_difference(runs_a, runs_b, "err")
    assert result["seeds"] == [0, 1, 2] and result["diffs"] == [-1.0, -2.0, -0.5]
    # mean -7/6, sd of (-1, -2, -0.5) = 0.7638; t(0.975, 2) = 4.3027: half width 1.8974
    assert result["mean"] == pytest.approx(-7 / 6)
    assert result["low"] == pytest.approx(-7 / 6 - 1.8974, abs=1e-3)
    assert result["high"] == pytest.approx(-7 / 6 + 1.8974, abs=1e-3)
    assert accuracy._runs.paired_difference(runs_a, [{"seed": 9, "err": 1.0}], "err") is None
    lines = accuracy._runs.paired_table([("a", "b")], {"a": runs_a, "b": runs_b}, "err", "Δ", "lower")
    assert lines[2].endswith("| no |")  # the interval [-3.06, +0.73] holds 0
    tight = [{"seed": s, "err": e - 3.0} for s, e in ((0, 21.0), (1, 23.1), (2, 19.4))]
    lines = accuracy._runs.paired_table([("a", "b")], {"a": tight, "b": runs_b}, "err", "Δ", "lower")
    assert lines[2].endswith("| yes: `a` better |")
    # Differences equal up to float32 rounding (cpu-mini's HybridMix v1 cached - exact, seeds 0 and 1).
    cached = [{"seed": 0, "err": 22.025565050813412}, {"seed": 1, "err": 21.238938503209116}]
    exact = [{"seed": 0, "err": 21.042280851681095}, {"seed": 1, "err": 20.255654334084237}]
    same = accuracy._runs.paired_table([("a", "b")], {"a": cached, "b": exact}, "err", "Δ", "lower")
    assert same[2].endswith("| — (no spread) | cannot tell from equal differences |")
    # Opposite differences whose float mean is -4e-7 print as +0.00, not -0.00 (tin20 seeds 0 and 1).
    opposite = [{"seed": 0, "err": 42.70000009155274}, {"seed": 1, "err": 41.09999951171876}]
    base = [{"seed": 0, "err": 41.69999975585939}, {"seed": 1, "err": 42.10000073242188}]
    zero = accuracy._runs.paired_table([("a", "b")], {"a": opposite, "b": base}, "err", "Δ", "lower")
    assert "| +1.00, -1.00 | +0.00 | [-12.71, +12.71] | no |" in zero[2]


def test_pointing_counts_salfmix_cells_on_and_off_the_object_box():
    # 64 px, grid 8: cells of 8 px with centres at 3.5, 11.5, ...; box x 0-15, y 0-15 holds 2 x 2 centres.
    boxes = torch.tensor([[0, 0, 15, 15], [0, 0, 15, 15]])
    maps = torch.zeros(2, 64, 64)
    maps[0, 0:8, 8:16] = 5.0  # R_m = cell (0, 1): on the box
    maps[0, 56:64, 56:64] = -1.0  # R_l = cell (7, 7): off the box
    maps[1, 40:48, 40:48] = 5.0  # R_m = cell (5, 5): off the box
    maps[1, 8:16, 8:16] = -1.0  # R_l = cell (1, 1): on the box
    result = pointing.pointing(maps, boxes, grid=8)
    assert result.images == 2
    assert result.max_on_box == 50.0 and result.min_off_box == 50.0
    assert result.chance_on_box == pytest.approx(100 * 4 / 64)
    assert result.box_share == pytest.approx(100 * 256 / 4096)
    # The cache's 16 x 16 bfloat16 cells keep these cells (4 px cells nest in the 8 px grid).
    assert pointing.pointing(pointing.cached_form(maps), boxes, grid=8) == result
    inside = pointing.cell_centres_in_boxes(torch.tensor([[8, 0, 8, 63]]), 64, 8)
    assert not inside.any()  # a one-pixel column at x = 8 holds no centre (centres at 3.5 and 11.5)


def test_whole_run_times_sum_every_epoch_once_across_resumes(tmp_path):
    assert accuracy.whole_run_times(tmp_path) is None
    # Epoch 1 was logged, then re-run after a resume from the checkpoint of epoch 0: its last row counts.
    (tmp_path / "summary.csv").write_text(
        "epoch,train_loss,train_epoch_time,train_aug_time\n"
        "0,2.0,10.0,1.0\n1,1.5,20.0,2.0\n1,1.4,25.0,3.0\n2,1.2,30.0,4.0\n"
    )
    assert accuracy.whole_run_times(tmp_path) == (65.0, 8.0)
    (tmp_path / "summary.csv").write_text("epoch,train_loss\n0,2.0\n")  # an older layout: no times
    assert accuracy.whole_run_times(tmp_path) is None


def test_table_includes_runs_that_another_invocation_appended(tmp_path, monkeypatch):
    """Two invocations (say seeds 0 and 1) share one results file: each table shows every finished run."""
    results, table = tmp_path / "results.jsonl", tmp_path / "table.md"
    argv = ["--data-dir", str(tmp_path), "--rows", "baseline", "--seeds", "0", "--results", str(results),
            "--table", str(table), "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    sid = accuracy.settings_id(accuracy.protocol_settings(accuracy.parse_args(argv)))

    def record(method: str, err: float) -> dict:
        return {"protocol": "cpu-mini", "method": method, "seed": 0, "settings_id": sid,
                "best_top1_err": err, "final_top1_err": err, "seconds": 60.0}  # fmt: skip

    def fake_execute(run, args):
        accuracy.append_result(results, record("mixup", 21.0))  # the other invocation finishes first
        return record(run.method, 23.0)

    monkeypatch.setattr(accuracy, "execute", fake_execute)
    assert accuracy.main(argv) == 0
    rows = {row[0]: row for row in _table_with(markdown_tables(table.read_text()), "method")[1:]}
    assert rows["Baseline (`baseline`)"][1:3] == ["1", "23.00"]
    assert rows["Mixup (`mixup`)"][1:3] == ["1", "21.00"]


def test_interrupted_run_is_resumed_or_moved_aside(tmp_path):
    args = _args("--runs-dir", str(tmp_path), "--rows", "salfmix", "--seeds", "0")
    (run,) = accuracy.plan_runs(args)
    assert accuracy._command_for(run) == run.command  # fresh start
    run.output.mkdir()
    (run.output / "summary.csv").write_text("epoch\n")
    assert accuracy._command_for(run) == run.command and not run.output.exists()  # moved aside
    run.output.mkdir()
    (run.output / "last.pth.tar").write_bytes(b"")
    assert accuracy._command_for(run)[-2:] == ["--resume", str(run.output / "last.pth.tar")]


@pytest.mark.slow
def test_fidelity_quick_prints_the_agreement_table(tmp_path):
    fidelity = ROOT / "benchmarks" / "fidelity.py"
    out = tmp_path / "fidelity.md"
    proc = _run(str(fidelity), "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = _table_with(markdown_tables(out.read_text()), "epoch")
    assert [row[0] for row in table[1:]] == ["0", "1"]
    assert table[1][-1] == "–" and table[2][-1] != "–"  # no previous epoch before epoch 1
    for row in table[1:]:
        values = [float(v) for v in row[1:] if v != "–"]
        assert all(0.0 <= v <= 100.0 for v in values)
        assert all(float(row[i]) <= float(row[i + 1]) for i in range(1, len(row) - 1, 2) if row[i] != "–")


@pytest.mark.parametrize("flags", [[], ["--channels-last"]], ids=["nchw", "channels_last"])
def test_speed_section_5_times_every_saliency_source_of_train_seg(flags, tmp_path):
    proc = _run(
        str(SPEED), "--task", "seg", "--seg-size", "16x24", "--seg-batch", "2", "--step-repeats", "6",
        "--warmup", "0", "--threads", "1", "--json", str(tmp_path / "seg.json"), *flags,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "seg.json").read_text())  # what the device check reads
    assert record["section"] == 5 and record["errors"] == {}
    assert record["config"]["model"] == "tinyseg" and record["config"]["size"] == [16, 24]
    assert record["config"]["channels_last"] is bool(flags) and record["config"]["repeats"] == 6
    assert record["plain_ms"] > 0
    for method in ("salfmix", "hybridmix-v3"):
        for source in ("exact", "cached", "lowres"):
            low, high = record["ratio_intervals"][method][source]
            assert 0 < low <= record["ratios"][method][source] <= high
    tables = markdown_tables(proc.stdout)
    sources = _table_with(tables, "saliency source")
    assert [row[0] for row in sources[1:]] == ["SalfMix", "HybridMix v3"]
    assert all(RATIO_CELL.fullmatch(c) for row in sources[1:] for c in (row[3], row[5], row[7])), sources
    description = proc.stdout.split("## 5.")[1].split("|")[0]
    assert ("channels_last" in description) == bool(flags)
