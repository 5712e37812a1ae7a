"""The prepared GPU check keeps working: ``benchmarks/device_check.sh --smoke`` runs start to finish on the
CPU and writes the JSON and markdown it promises; its report records failed parts softly.

No timing is asserted: only structure, statuses and that ratios are positive numbers.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _markdown_helpers import markdown_tables

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.sh"
STATUSES = {"ok", "partial", "failed", "timeout", "skipped"}
PART_ROWS = ["a. tests", "b. step ratios", "b2. segmentation step ratios", "c. training"]
# "1.07x (1.05-1.09)": the median over rounds of the step over the plain step, and its 95 % interval.
RATIO_CELL = re.compile(r"(\d+\.\d+)x \((\d+\.\d+)-(\d+\.\d+)\)")
RATIO_ROWS = [
    ["SalfMix", "exact"],
    ["SalfMix", "cached"],
    ["SalfMix", "lowres"],
    ["HybridMix v3", "exact"],
    ["HybridMix v3", "cached"],
    ["HybridMix v3", "lowres"],
]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


device_train = _load(ROOT / "benchmarks" / "device_train.py", "benchmarks_device_train")


def _positive(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    out = tmp_path_factory.mktemp("device_check") / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    env.pop("OUT", None)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out, proc


@pytest.mark.slow
def test_smoke_run_writes_json_and_markdown(smoke):
    out, proc = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[device-check] card: CPU" in proc.stdout  # the card is printed first
    report = json.loads((out / "device_check.json").read_text())
    assert report["schema"] == "device-check/1" and report["smoke"] is True
    assert report["env"]["torch"] == torch.__version__ and report["env"]["card"]
    assert set(report["parts"]) == {"tests", "speed", "seg", "train"}
    assert all(part["status"] in STATUSES for part in report["parts"].values())

    tests = report["parts"]["tests"]
    assert tests["status"] == "skipped" and "smoke" in tests["reason"]
    assert "--device cuda" in tests["command"]

    speed = report["parts"]["speed"]
    assert speed["status"] == "ok"
    assert [run["name"] for run in speed["runs"]] == ["16px-eager"]
    for run in speed["runs"]:
        assert run["status"] == "ok" and run["errors"] == {}
        config = run["config"]
        assert (config["width"], config["batch"], config["size"]) == (0.125, 8, 16)
        assert config["amp"] == "bf16" and config["channels_last"] is True and config["compile"] is False
        assert _positive(run["plain_ms"])
        assert set(run["ratios"]) == {"salfmix", "hybridmix-v3"}
        for method in run["ratios"].values():
            assert set(method) == {"exact", "cached", "lowres"}
            assert all(_positive(ratio) for ratio in method.values()), run["ratios"]
        for method, sources in run["ratio_intervals"].items():  # paired by round: the median inside
            for source, (low, high) in sources.items():
                assert low <= run["ratios"][method][source] <= high, run["ratio_intervals"]
        assert (out / run["json"]).exists() and (out / run["log"]).exists()

    seg = report["parts"]["seg"]  # speed.py section 5: train_seg.py's step, exact / cached / lowres
    assert seg["status"] == "ok" and seg["errors"] == {}, seg
    assert seg["config"]["model"] == "tinyseg" and seg["config"]["batch"] == 2
    assert _positive(seg["plain_ms"])
    for method, sources in seg["ratio_intervals"].items():
        assert set(sources) == {"exact", "cached", "lowres"}
        for source, (low, high) in sources.items():
            assert 0 < low <= seg["ratios"][method][source] <= high, seg
    assert (out / seg["json"]).exists() and (out / seg["log"]).exists()

    train = report["parts"]["train"]
    assert train["status"] == "ok" and train["data"]["generated"] is True
    assert train["data"]["train"] == 64
    assert list(train["methods"]) == ["baseline", "cutout", "salfmix"]
    for result in train["methods"].values():
        assert 0.0 <= result["top1_error"] <= 100.0
        assert _positive(result["s_per_epoch"]) and result["epochs"] == 1

    # Everything under the one output folder: nothing written into the checkout.
    assert not (ROOT / "device-check").exists()
    assert (out / "smoke-data" / "train").is_dir()


@pytest.mark.slow
def test_smoke_markdown_has_the_promised_tables(smoke):
    out, proc = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    markdown = (out / "device_check.md").read_text()
    assert markdown.startswith("# Device check (--smoke)")
    assert "Card: CPU" in markdown
    parts, ratios, seg_ratios, training = markdown_tables(markdown)

    assert parts[0] == ["part", "status", "seconds", "detail"]
    assert [row[0] for row in parts[1:]] == PART_ROWS
    assert [row[1] for row in parts[1:]] == ["skipped", "ok", "ok", "ok"]

    assert ratios[0] == ["method", "saliency source", "16px eager"]
    assert ratios[1][:2] == ["plain step (ms)", "-"] and float(ratios[1][2]) > 0
    assert [row[:2] for row in ratios[2:]] == RATIO_ROWS
    for cell in (cell for row in ratios[2:] for cell in row[2:]):
        match = RATIO_CELL.fullmatch(cell)
        assert match, cell
        ratio, low, high = (float(v) for v in match.groups())
        assert 0 < low <= ratio <= high, cell

    assert seg_ratios[0] == ["method", "saliency source", "tinyseg 16x24"]
    assert seg_ratios[1][:2] == ["plain step (ms)", "-"] and float(seg_ratios[1][2]) > 0
    assert [row[:2] for row in seg_ratios[2:]] == RATIO_ROWS
    assert all(RATIO_CELL.fullmatch(row[2]) for row in seg_ratios[2:]), seg_ratios

    assert training[0] == ["method", "top-1 error (%)", "s / epoch", "epochs"]
    assert [row[0] for row in training[1:]] == ["baseline", "Cutout", "SalfMix (cached saliency)"]
    assert all(row[3] == "1" for row in training[1:])


def test_help_says_what_smoke_skips():
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    proc = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "--smoke" in proc.stdout and "part a is SKIPPED" in proc.stdout
    assert "--device cuda" in proc.stdout and "--data-dir" in proc.stdout
    bad = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


def test_report_records_failed_parts_softly(tmp_path):
    """A timed-out test run, a failed and a timed-out speed run, no training data: the report still builds."""
    (tmp_path / "env.json").write_text(json.dumps({"card": "NVIDIA H100 80GB HBM3 (79 GiB)", "torch": "x"}))
    (tmp_path / "meta.json").write_text(
        json.dumps(
            {"smoke": False, "started_at": "now", "wall_s": 400, "budget_s": 460, "speed": {"width": 1}}
        )
    )
    (tmp_path / "tests.log").write_text("....F..\n=== 1 failed, 6 passed, 2 skipped in 119.50s ===\n")
    good = {
        "config": {"size": 32},
        "plain_ms": 10.0,
        "median_ms": {
            m: {s: 17.0 for s in ("exact", "cached", "lowres")} for m in ("salfmix", "hybridmix-v3")
        },
        "ratios": {m: {s: 1.7 for s in ("exact", "cached", "lowres")} for m in ("salfmix", "hybridmix-v3")},
        "ratio_intervals": {
            m: {s: [1.65, 1.75] for s in ("exact", "cached", "lowres")} for m in ("salfmix", "hybridmix-v3")
        },
        "errors": {},
    }
    (tmp_path / "speed-32px-eager.json").write_text(json.dumps(good))
    rows = [
        ["tests", "pytest", "timeout", "124", "120", "120", "tests.log", "pytest ...", "stopped"],
        ["speed", "32px-eager", "ok", "0", "20", "45", "speed-32px-eager.log", "speed.py ...", ""],
        ["speed", "64px-eager", "failed", "1", "5", "45", "speed-64px-eager.log", "speed.py ...", "exit 1"],
        ["speed", "32px-compile", "timeout", "124", "100", "100", "speed-32px-compile.log", "speed.py", "t"],
        ["speed", "64px-compile", "skipped", "-", "0", "3", "", "speed.py", "no time left"],
        ["seg", "seg", "timeout", "124", "40", "40", "seg.log", "speed.py --task seg", "stopped"],
        ["train", "train", "skipped", "-", "0", "-", "", "-", "no data set"],
    ]
    (tmp_path / "runs.tsv").write_text("".join("\t".join(row) + "\n" for row in rows))

    assert device_train.main(["report", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "device_check.json").read_text())
    parts = report["parts"]
    assert parts["tests"]["status"] == "timeout"
    assert parts["tests"]["counts"] == {"failed": 1, "passed": 6, "skipped": 2}
    assert parts["speed"]["status"] == "partial"
    assert [r["status"] for r in parts["speed"]["runs"]] == ["ok", "failed", "timeout", "skipped"]
    assert parts["train"]["status"] == "skipped" and parts["train"]["reason"] == "no data set"
    assert parts["seg"]["status"] == "timeout" and "ratios" not in parts["seg"]
    markdown = (tmp_path / "device_check.md").read_text()
    assert "## b2. Segmentation step over the plain step\n\nNot timed: timeout (stopped)." in markdown
    _, ratios, *_ = markdown_tables(markdown)
    assert ratios[0][2:] == ["32px eager", "64px eager", "32px compile", "64px compile"]
    assert ratios[2][2:] == ["1.70x (1.65-1.75)", "failed", "timeout", "skipped"]


def test_train_skips_cleanly_without_data(tmp_path):
    out = tmp_path / "train.json"
    args = ["train", "--data-dir", str(tmp_path / "absent"), "--device", "cpu", "--out", str(out)]
    assert device_train.main(args) == 0
    record = json.loads(out.read_text())
    assert record["status"] == "skipped" and "absent" in record["reason"]


def test_crop_flip_moves_the_coordinates_with_the_pixels():
    from salfmix_transforms.saliency_cache import source_coordinates

    torch.manual_seed(0)
    batch, size = 6, 8
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    coords = source_coordinates(size, size).expand(batch, -1, -1, -1)
    views, moved = device_train.crop_flip(images, coords, pad=2)
    assert views.shape == images.shape and moved.shape == coords.shape
    for b in range(batch):
        for i in range(size):
            for j in range(size):
                row, col = moved[b, :, i, j].tolist()
                if row == 0 and col == 0:  # padding: black
                    assert views[b, :, i, j].eq(0).all()
                    continue
                src_i, src_j = int(row * size), int(col * size)
                assert torch.equal(views[b, :, i, j], images[b, :, src_i, src_j])


@pytest.mark.parametrize("option", ["--budget-s", "--seg-budget", "--train-minutes", "--tests-budget"])
@pytest.mark.parametrize("value", ["abc", "1.5", "-3"])
def test_a_bad_number_is_refused_before_anything_is_removed(tmp_path, option, value):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    out = tmp_path / "out"
    out.mkdir()
    (out / "device_check.json").write_text("{}")  # an earlier run's report
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--smoke", option, value, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{option} must be a whole number" in proc.stderr and value in proc.stderr
    assert (out / "device_check.json").exists()  # nothing removed


def test_a_relative_out_is_relative_to_where_the_script_is_run(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    # --budget-s 0: every part is skipped at once, the folder and the report are still made.
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--smoke", "--budget-s", "0", "--out", "rel"],
        cwd=tmp_path,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "rel" / "device_check.json").exists()
    assert not (ROOT / "rel").exists()


@pytest.mark.parametrize(
    "content", ['{"config": {"size": [16', "[1, 2]", "{}"], ids=["truncated", "a list", "no keys"]
)
def test_an_unreadable_result_file_is_reported_as_such_and_the_other_parts_still_build(tmp_path, content):
    (tmp_path / "env.json").write_text(json.dumps({"card": "GPU", "torch": "x"}))
    (tmp_path / "seg.json").write_text(content)
    rows = [
        ["seg", "seg", "ok", "0", "9", "40", "seg.log", "speed.py --task seg", ""],
        ["train", "train", "skipped", "-", "0", "-", "", "-", "no data set"],
        ["tests", "pytest", "oops", "x", "1", "1", "", "pytest", ""],  # a damaged line: no number
    ]
    (tmp_path / "runs.tsv").write_text("".join("\t".join(row) + "\n" for row in rows))
    assert device_train.main(["report", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "device_check.json").read_text())
    seg = report["parts"]["seg"]
    assert seg["status"] == "failed" and "seg.json" in seg["reason"] and "unreadable" in seg["reason"]
    assert report["parts"]["train"]["reason"] == "no data set"
    markdown = (tmp_path / "device_check.md").read_text()
    assert "Not timed: failed (seg.json unreadable" in markdown


def test_an_earlier_runs_files_are_removed_before_the_run(tmp_path):
    """A card read that fails must not leave the previous run's card in the report (nor its logs)."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    out = tmp_path / "out"
    out.mkdir()
    old = ["env.json", "meta.json", "tests.log", "speed-32px-eager.md", "speed-32px-eager.log", "seg.md"]
    for name in old:
        (out / name).write_text('{"card": "OLD-CARD"}')
    env = {**os.environ, "PYTHON": "false"}  # every Python step fails, the card read included
    subprocess.run(
        ["bash", str(SCRIPT), "--smoke", "--budget-s", "0", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert [name for name in old if (out / name).exists() and "OLD-CARD" in (out / name).read_text()] == []


def test_report_on_a_missing_folder_is_one_line_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert device_train.main(["report", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and "no such folder" in err
    assert not missing.exists()
