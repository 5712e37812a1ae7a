"""benchmarks/segmentation.py keeps working: the plan (``--dry-run``), a tiny real run, no rerun of finished
runs, resume of an interrupted one, the table. No timing is asserted beyond ratios in [0, 1]."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "segmentation.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

_spec = importlib.util.spec_from_file_location("benchmarks_segmentation", SCRIPT)
seg = importlib.util.module_from_spec(_spec)
sys.modules["benchmarks_segmentation"] = seg  # dataclasses look their module up
_spec.loader.exec_module(seg)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300
    )


def _table(markdown: str) -> list[list[str]]:
    """The markdown table's rows of cells, header first, separator dropped."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()]
    rows = [row for row, line in zip(rows, markdown.splitlines()) if line.startswith("|")]
    return [row for row in rows if not all(set(cell) <= set("-: ") for cell in row)]


@pytest.mark.slow
def test_dry_run_plans_every_method_and_seed(tmp_path):
    results, runs_dir = tmp_path / "r.jsonl", tmp_path / "runs"
    proc = _run("--dry-run", "--results", str(results), "--runs-dir", str(runs_dir))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == len(seg.ROWS) * 2 == 6 * 2 and all(line.startswith("[todo]") for line in lines)
    camvid = str(ROOT.parent / "shared" / "data" / "camvid")
    for method in ("baseline", "cutout", "cutmix", "salfmix", "hybridmix-v3"):
        for seed in (0, 1):
            (line,) = [ln for ln in lines if f"--experiment camvid-cpu-{method}-s{seed}-" in ln]
            assert f"--method {method} " in line and f"--seed {seed} " in line
            assert "train_seg.py --dataset camvid" in line and f"--data-dir {camvid} " in line
            assert "--epochs 100 " in line and "--model tinyseg" in line and "--threads 1" in line
            assert line.split(": ", 1)[1].startswith("OMP_NUM_THREADS=1 ")
            assert f"--output {runs_dir} " in line and f"--experiment camvid-cpu-{method}-s{seed}-" in line
    assert not results.exists() and not runs_dir.exists()

    quick = _run("--protocol", "synthetic-quick", "--rows", "cutmix", "--seeds", "3", "4", "--epochs", "2",
                 "--dry-run", "--results", str(results))  # fmt: skip
    assert quick.returncode == 0, quick.stderr
    lines = [line for line in quick.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 2 and all("--dataset synthetic --method cutmix --epochs 2" in ln for ln in lines)
    assert all("--data-dir" not in ln and "--limit-train 32" in ln for ln in lines)


@pytest.mark.slow
def test_quick_run_records_table_and_does_not_rerun(tmp_path):
    results, table, runs_dir = tmp_path / "r.jsonl", tmp_path / "t.md", tmp_path / "runs"
    args = ["--protocol", "synthetic-quick", "--rows", "baseline", "salfmix", "--seeds", "0",
            "--results", str(results), "--table", str(table), "--runs-dir", str(runs_dir)]  # fmt: skip
    first = _run(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    records = {r["method"]: r for r in map(json.loads, results.read_text().splitlines())}
    assert sorted(records) == ["baseline", "salfmix"]
    for record in records.values():
        assert record["seed"] == 0 and record["protocol"] == "synthetic-quick" and record["best_epoch"] == 0
        assert 0.0 <= record["best_miou"] <= 1.0 and 0.0 <= record["final_miou"] <= 1.0
        assert 0.0 <= record["final_pixel_acc"] <= 1.0
        assert 0.0 <= record["aug_time_s"] <= record["train_time_s"] and not record["resumed"]
    assert records["baseline"]["aug_time_s"] == 0.0 and records["salfmix"]["aug_time_s"] > 0.0

    text = table.read_text()
    rows = _table(text.split("Paired differences")[0])
    assert rows[0] == ["method", "runs", "best mIoU % (mean ± std)", "final mIoU %", "final pixel acc %",
                       "per seed (best mIoU %)", "train min/run", "aug / train time"]  # fmt: skip
    assert [row[0].split("`")[1] for row in rows[1:]] == list(seg.ROWS)
    by_method = {row[0].split("`")[1]: row for row in rows[1:]}
    for method, record in records.items():
        row = by_method[method]
        assert row[1] == "1" and row[2] == f"{100 * record['best_miou']:.2f}"
        assert 0.0 <= float(row[2]) / 100 <= 1.0 and 0.0 <= float(row[4]) / 100 <= 1.0
        assert 0.0 <= float(row[7]) <= 1.0
    assert all(row[1] == "0" and row[2] == "—" for m, row in by_method.items() if m not in records)
    (paired,) = [row for row in _table(text) if row[0] == "`salfmix` − `baseline`"]
    delta = 100 * (records["salfmix"]["best_miou"] - records["baseline"]["best_miou"])
    assert paired[1:4] == ["0", f"{delta:+.2f}", f"{delta:+.2f}"] and paired[5] == "no interval"

    second = _run(*args)
    assert second.returncode == 0, second.stderr
    assert "2 already in" in second.stderr and "0 to do" in second.stderr
    assert len(results.read_text().splitlines()) == 2

    # A finished run folder without its record (the driver was stopped) continues with --resume.
    results.write_text(results.read_text().splitlines()[0] + "\n")
    third = _run(*args)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    last = json.loads(results.read_text().splitlines()[-1])
    assert (
        last["resumed"]
        and "--resume" in last["command"]
        and last["best_miou"] == records[last["method"]]["best_miou"]
    )
    assert len({p.name for p in runs_dir.iterdir() if p.is_dir()}) == 2


def test_interrupted_run_is_resumed_or_moved_aside(tmp_path):
    args = seg.parse_args(["--runs-dir", str(tmp_path), "--rows", "salfmix", "--seeds", "0"])
    (run,) = seg.plan_runs(args)
    assert seg.command_for(run) == run.command  # fresh start
    run.output.mkdir()
    (run.output / "summary.csv").write_text("epoch\n")
    assert seg.command_for(run) == run.command and not run.output.exists()  # moved aside
    run.output.mkdir()
    (run.output / "last.pth.tar").write_bytes(b"")
    assert seg.command_for(run)[-2:] == ["--resume", str(run.output)]
    shutil.rmtree(run.output)


def test_table_mean_std_and_time_ratio(tmp_path):
    args = seg.parse_args(["--results", str(tmp_path / "r.jsonl")])
    sid = seg.settings_id(args)

    def record(seed: int, miou: float, sid: str = sid) -> dict:
        return {"protocol": "camvid-cpu", "method": "salfmix", "seed": seed, "settings_id": sid,
                "best_miou": miou, "final_miou": miou - 0.01, "final_pixel_acc": 0.8,
                "train_time_s": 600.0, "aug_time_s": 150.0}  # fmt: skip

    records = [record(1, 0.52), record(0, 0.50), record(2, 0.99, "other-settings")]
    rows = {row[0]: row for row in _table(seg.results_table(records, args))[1:]}
    assert rows["SalfMix (`salfmix`)"][1:] == ["2", "51.00 ± 1.41", "50.00 ± 1.41", "80.00 ± 0.00",
                                              "50.00, 52.00", "10.0", "0.25"]  # fmt: skip
    assert rows["Baseline (`baseline`)"][1:3] == ["0", "—"]
    assert seg.settings_id(seg.parse_args(["--epochs", "7"])) != sid


def test_cached_saliency_row_trains_salfmix_with_the_cache(tmp_path):
    """Issue 22: CamVid mIoU of the cached saliency against the exact one needs its own row."""
    args = seg.parse_args(["--runs-dir", str(tmp_path), "--rows", "salfmix-cached", "--seeds", "0", "1"])
    runs = seg.plan_runs(args)
    assert [(run.method, run.seed) for run in runs] == [("salfmix-cached", 0), ("salfmix-cached", 1)]
    for run in runs:
        command = " ".join(run.command)
        assert "--method salfmix --saliency-source cached --epochs 100 " in command
        assert f"--experiment camvid-cpu-salfmix-cached-s{run.seed}-{seg.settings_id(args)}" in command
    # The exact row keeps its command (and so its settings id and its records).
    (exact,) = seg.plan_runs(
        seg.parse_args(["--runs-dir", str(tmp_path), "--rows", "salfmix", "--seeds", "0"])
    )
    assert "--saliency-source" not in exact.command


def test_paired_differences_of_miou_under_the_table(tmp_path):
    """Seed-by-seed ``a - b`` of the best mIoU in points, with its 95 % t interval (as accuracy.py's)."""
    args = seg.parse_args(["--results", str(tmp_path / "r.jsonl")])
    sid = seg.settings_id(args)

    def record(method: str, seed: int, miou: float) -> dict:
        return {"protocol": "camvid-cpu", "method": method, "seed": seed, "settings_id": sid,
                "best_miou": miou, "final_miou": miou, "final_pixel_acc": 0.8,
                "train_time_s": 60.0, "aug_time_s": 6.0}  # fmt: skip

    mious = {"salfmix": (0.50, 0.52), "salfmix-cached": (0.51, 0.52), "baseline": (0.40, 0.43)}
    records = [record(method, seed, miou) for method, pair in mious.items() for seed, miou in enumerate(pair)]
    text = seg.results_table(records, args)
    rows = {row[0]: row for row in _table(text) if "−" in row[0]}
    cached = rows["`salfmix-cached` − `salfmix`"]
    assert cached[1:4] == ["0, 1", "+1.00, +0.00", "+0.50"]
    assert cached[4].startswith("[") and cached[5] == "no"  # 0.5 ± 12.7 * 0.707 / 1.414 spans 0
    better = rows["`salfmix` − `baseline`"]
    assert better[2] == "+10.00, +9.00" and better[5] == "yes: `salfmix` better"
