"""``--evaluate CKPT`` of both scripts and ``--val-split`` of train_seg.py (issue 21, item 10).

``--evaluate`` scores a checkpoint (with ``--model-ema`` its EMA weights) on the validation split: one line of
metrics on stdout, the metrics as JSON next to the checkpoint (or in ``--output``), no training, exit 0. The
model, classes and data come from the checkpoint's flags, as ``--resume`` takes them. The score of a 1-epoch
run's ``model_best`` is the one the run logged for that epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from _train_helpers import read_summary, run_fails, tiny_args
from PIL import Image

import train_seg
import train_timm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCRIPTS = {"train_timm.py": train_timm, "train_seg.py": train_seg}
SEG = ["--method", "baseline", "--limit-train", "8", "--limit-val", "4", "-b", "8", "--threads", "1"]
SEG += ["--no-progress"]


def _fails(capsys, script: str, argv: list[str], *needles: str) -> str:
    return run_fails(capsys, argv, *needles, script=script)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _evaluated(capsys, script: str, argv: list[str]) -> tuple[str, dict]:
    """Runs ``--evaluate``; exit 0 and one line on stdout naming the JSON file, which is returned."""
    rc = SCRIPTS[script].main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    path = lines[0].rsplit(" ", 1)[-1]
    assert path.endswith(".json") and os.path.isfile(path), lines[0]
    with open(path) as f:
        return lines[0], {"path": path, **json.load(f)}


# --- train_timm.py --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ema", [False, True], ids=["model", "ema"])
def test_timm_evaluate_scores_model_best_as_the_run_logged(tiny_folder, tmp_path, capsys, ema):
    extra = ["--model-ema", "--model-ema-decay", "0.5"] if ema else []
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline", *extra)) == 0
    capsys.readouterr()
    run = tmp_path / "a"
    before = _tree(tmp_path)
    line, result = _evaluated(
        capsys, "train_timm.py", ["--evaluate", str(run / "model_best.pth.tar"), *extra]
    )
    row = read_summary(run)[0]
    prefix = "eval_ema_" if ema else "eval_"
    metrics = result["metrics"]
    assert metrics["top1_err"] == float(row[prefix + "top1_err"])
    assert metrics["top5_err"] == float(row[prefix + "top5_err"])
    assert metrics["loss"] == pytest.approx(float(row[prefix + "loss"]), rel=1e-6)
    if not ema:
        assert metrics["top1_err"] == json.loads((run / "results.json").read_text())["best_top1_err"]
    assert result["weights"] == ("ema" if ema else "model") and result["epoch"] == 0
    assert os.path.dirname(result["path"]) == str(run), "next to the checkpoint"
    assert "top-1 err" in line
    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before, "nothing else written or changed"
    assert sorted(set(after) - set(before)) == [os.path.relpath(result["path"], tmp_path)]


def test_timm_evaluate_writes_to_output_and_takes_flags_from_the_checkpoint(tiny_folder, tmp_path, capsys):
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline")) == 0
    capsys.readouterr()
    ckpt = str(tmp_path / "a" / "model_best.pth.tar")
    # The model, width, data and split come from the checkpoint; --val-split val7 scores another split.
    _, result = _evaluated(
        capsys, "train_timm.py", ["--evaluate", ckpt, "--val-split", "val7", "--output", str(tmp_path / "ev")]
    )
    assert os.path.dirname(result["path"]) == str(tmp_path / "ev")
    assert result["split"] == "val7" and result["val_size"] == 7
    _, result = _evaluated(
        capsys, "train_timm.py", ["--evaluate", ckpt, "--output", str(tmp_path / "ev" / "mine.json")]
    )
    assert result["path"] == str(tmp_path / "ev" / "mine.json") and result["val_size"] == 8


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        ("missing", ("does not exist",)),
        ("not_torch", ("cannot read checkpoint",)),
        ("results_json", ("results.json",)),
        ("with_resume", ("--resume",)),
        ("other_model", ("resnet18",)),
    ],
)
def test_timm_evaluate_of_a_bad_checkpoint_is_one_line(tiny_folder, tmp_path, capsys, make, needles):
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline")) == 0
    capsys.readouterr()
    ckpt = tmp_path / "a" / "model_best.pth.tar"
    before = _tree(tmp_path)
    argv = ["--evaluate", str(ckpt)]
    if make == "missing":
        argv = ["--evaluate", str(tmp_path / "nope.pth.tar")]
    elif make == "not_torch":
        (tmp_path / "junk.pth.tar").write_text("not a checkpoint")
        before = _tree(tmp_path)
        argv = ["--evaluate", str(tmp_path / "junk.pth.tar")]
    elif make == "results_json":
        argv += ["--output", str(tmp_path / "a" / "results.json")]
    elif make == "with_resume":
        argv += ["--resume", str(ckpt)]
    else:
        argv += ["--model", "resnet18"]
    _fails(capsys, "train_timm.py", argv, *needles)
    assert _tree(tmp_path) == before


def test_timm_evaluate_of_a_train_seg_checkpoint_is_one_line(tmp_path, capsys):
    assert train_seg.main([*SEG, "--epochs", "1", "--output", str(tmp_path), "--experiment", "s"]) == 0
    capsys.readouterr()
    ckpt = str(tmp_path / "s" / "model_best.pth.tar")
    _fails(capsys, "train_timm.py", ["--evaluate", ckpt], ckpt, "train_seg.py")
    _fails(capsys, "train_seg.py", ["--evaluate", str(tmp_path / "s" / "summary.csv")], "summary.csv")


# --- train_seg.py ---------------------------------------------------------------------------------------


def test_seg_evaluate_scores_model_best_as_the_run_logged(tmp_path, capsys):
    assert train_seg.main([*SEG, "--epochs", "1", "--output", str(tmp_path), "--experiment", "s"]) == 0
    capsys.readouterr()
    run = tmp_path / "s"
    before = _tree(tmp_path)
    line, result = _evaluated(capsys, "train_seg.py", ["--evaluate", str(run / "model_best.pth.tar")])
    row = read_summary(run)[0]
    metrics = result["metrics"]
    assert metrics["miou"] == float(row["eval_miou"])
    assert metrics["miou"] == json.loads((run / "results.json").read_text())["best_miou"]
    assert metrics["pixel_acc"] == float(row["eval_pixel_acc"])
    assert metrics["loss"] == pytest.approx(float(row["eval_loss"]), rel=1e-6)
    assert result["split"] == "val" and result["val_size"] == 4 and result["epoch"] == 0
    assert os.path.dirname(result["path"]) == str(run) and "mIoU" in line
    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == [os.path.relpath(result["path"], tmp_path)]


def _seg_folder(root: Path, splits=("train", "val", "test")) -> Path:
    for split in splits:
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        n = 8 if split == "train" else 3
        for i in range(n):
            Image.new("RGB", (16, 16), (20 * i, 0, 0)).save(root / split / "images" / f"img{i}.png")
            Image.new("L", (16, 16), i % 2).save(root / split / "masks" / f"img{i}.png")
    (root / "classes.txt").write_text("0 a\n1 b\n")
    return root


def test_seg_val_split_scores_another_split(tmp_path, capsys):
    data = _seg_folder(tmp_path / "data", splits=("train", "test"))  # no val/
    argv = ["--dataset", "folder", "--data-dir", str(data), "--method", "baseline", "-b", "4"]
    argv += [
        "--threads",
        "1",
        "--no-progress",
        "--output",
        str(tmp_path),
        "--experiment",
        "s",
        "--epochs",
        "1",
    ]
    assert train_seg.main([*argv, "--val-split", "test"]) == 0
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert results["val_size"] == 3
    capsys.readouterr()
    # The checkpoint's --val-split is the default of --evaluate; --val-split train scores the training set.
    ckpt = str(tmp_path / "s" / "model_best.pth.tar")
    _, result = _evaluated(capsys, "train_seg.py", ["--evaluate", ckpt])
    assert result["split"] == "test" and result["metrics"]["miou"] == results["best_miou"]
    _, result = _evaluated(capsys, "train_seg.py", ["--evaluate", ckpt, "--val-split", "train"])
    assert result["split"] == "train" and result["val_size"] == 8


def test_seg_missing_val_split_is_one_line(tmp_path, capsys):
    data = _seg_folder(tmp_path / "data", splits=("train", "test"))
    argv = ["--dataset", "folder", "--data-dir", str(data), "--method", "baseline", "-b", "4"]
    argv += ["--output", str(tmp_path), "--experiment", "s", "--epochs", "1", "--val-split", "valid"]
    _fails(capsys, "train_seg.py", argv, "valid")


def test_evaluate_never_writes_the_runs_results_json(tmp_path, capsys):
    assert train_seg.main([*SEG, "--epochs", "1", "--output", str(tmp_path), "--experiment", "s"]) == 0
    capsys.readouterr()
    ckpt = str(tmp_path / "s" / "model_best.pth.tar")
    before = _tree(tmp_path)
    _fails(
        capsys,
        "train_seg.py",
        ["--evaluate", ckpt, "--output", str(tmp_path / "s" / "results.json")],
        "results.json",
    )
    _fails(capsys, "train_seg.py", ["--evaluate", ckpt, "--resume", ckpt], "--resume")
    assert _tree(tmp_path) == before
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] == 0


def test_evaluate_keeps_an_earlier_evaluation_of_other_data(tmp_path, capsys):
    """Scoring the same checkpoint again on the same data rewrites its file (same record); on other data (here
    fewer validation images) the earlier file is kept and the new one is numbered: no result is lost."""
    assert train_seg.main([*SEG, "--epochs", "1", "--output", str(tmp_path), "--experiment", "s"]) == 0
    capsys.readouterr()
    ckpt = str(tmp_path / "s" / "model_best.pth.tar")
    _, first = _evaluated(capsys, "train_seg.py", ["--evaluate", ckpt])
    first_bytes = Path(first["path"]).read_bytes()
    _, again = _evaluated(capsys, "train_seg.py", ["--evaluate", ckpt])
    assert again["path"] == first["path"] and Path(first["path"]).read_bytes() == first_bytes
    _, other = _evaluated(capsys, "train_seg.py", ["--evaluate", ckpt, "--limit-val", "2"])
    assert other["path"] == first["path"][: -len(".json")] + "-2.json" and other["val_size"] == 2
    assert Path(first["path"]).read_bytes() == first_bytes
    _, third = _evaluated(capsys, "train_seg.py", ["--evaluate", ckpt, "--limit-val", "2"])
    assert third["path"] == other["path"]  # the same evaluation again: its own file, rewritten


def test_evaluate_writes_an_explicit_output_file_as_asked(tmp_path, capsys):
    """--output e.json names the file: a second evaluation into it replaces it (no numbered file)."""
    assert train_seg.main([*SEG, "--epochs", "1", "--output", str(tmp_path), "--experiment", "s"]) == 0
    capsys.readouterr()
    out = str(tmp_path / "e.json")
    ckpt = str(tmp_path / "s" / "model_best.pth.tar")
    _, first = _evaluated(capsys, "train_seg.py", ["--evaluate", ckpt, "--output", out])
    _, second = _evaluated(capsys, "train_seg.py", ["--evaluate", ckpt, "--output", out, "--limit-val", "2"])
    assert first["path"] == second["path"] == out and second["val_size"] == 2
    assert not (tmp_path / "e-2.json").exists()
