"""train_timm.py reliability (issue 16, items 9-12): resume, crash-safe checkpoints, flags, data checks.

Every bad input ends with exit code 2 and one line on stderr; no checkpoint or result is lost, no partial
output is left behind. The data is a few 32x32 PNGs in class folders; every run is one or a few tiny epochs.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import make_image_folder, read_results, read_summary, run_fails, tiny_args
from PIL import Image

import train_timm
from salfmix_transforms.data import DatasetError, build_datasets

# --- fixtures and helpers (shared with test_train.py: conftest.py, _train_helpers.py) ----------------------

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def own_folder(tmp_path) -> Path:
    """A tiny folder data set that the test may damage."""
    return make_image_folder(tmp_path / "data")


def _epoch_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listed(run_dir: Path) -> dict[str, str]:
    """checksums.sha256 of a run folder (``sha256sum`` format: digest, two spaces, file name)."""
    lines = (run_dir / "checksums.sha256").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines)}


def _scripted_top1(monkeypatch, errors: list[float]) -> None:
    """validate() returns these top-1 errors in turn, so that the best epoch is known in advance."""
    queue = list(errors)

    def validate(run, model):
        err = queue.pop(0)
        return {"loss": err / 100, "top1_err": err, "top5_err": 0.0}

    monkeypatch.setattr(train_timm, "validate", validate)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the tensors: torch.load still reads it
    path.write_bytes(bytes(data))


# --- A. resume ----------------------------------------------------------------------------------------


def test_resume_with_more_epochs_rebuilds_the_cosine_schedule(tiny_folder, tmp_path, capsys):
    # The README's `--resume last.pth.tar --epochs 20`: the old 1-epoch cosine gave lr 0 from epoch 1 on.
    args = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline")
    assert train_timm.main(args) == 0
    assert train_timm.main([*args, "--resume", str(tmp_path / "a" / "last.pth.tar"), "--epochs", "3"]) == 0
    capsys.readouterr()
    lrs = [float(row["lr"]) for row in read_summary(tmp_path / "a")]
    # The 3-epoch cosine of timm (t_initial 3) from epoch 1 on: 0.05 * (1 + cos(pi * epoch / 3)) / 2.
    assert lrs == pytest.approx([0.05 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)])


def test_resume_into_a_run_folder_it_cannot_write_is_one_line(tiny_folder, tmp_path, capsys):
    """A resumed run continues in its own folder; when that folder cannot be written (here args.json is a
    directory), the run stops with one line before it trains, and the checkpoints stay as they were."""
    args = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline")
    assert train_timm.main(args) == 0
    last = tmp_path / "a" / "last.pth.tar"
    before = last.read_bytes()
    os.remove(tmp_path / "a" / "args.json")
    os.makedirs(tmp_path / "a" / "args.json")
    capsys.readouterr()
    assert train_timm.main([*args, "--resume", str(last), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train_timm.py: error:") and err.count("\n") == 1 and "args.json" in err
    assert last.read_bytes() == before and len(read_summary(tmp_path / "a")) == 1


def test_resume_with_no_epochs_left_changes_nothing(tiny_folder, tmp_path, capsys):
    # It rewrote results.json with null final errors. Now nothing is written, and a finished command run
    # again (a benchmark restarted after a kill) still exits with 0.
    args = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline")
    assert train_timm.main(args) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    for experiment in ("a", "b"):  # its own folder, a new one
        argv = tiny_args(tiny_folder, tmp_path, experiment, "--method", "baseline")
        assert train_timm.main([*argv, "--resume", str(tmp_path / "a" / "last.pth.tar")]) == 0
        out, err = capsys.readouterr()
        assert "nothing to train" in out and "--epochs 1" in out and "1 epoch" in out and not err, out + err
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no new run folder


def test_resume_into_a_new_experiment_keeps_the_best(tiny_folder, tmp_path, capsys, monkeypatch):
    _scripted_top1(monkeypatch, [10.0, 30.0, 40.0])  # epoch 0 stays the best
    args = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline", "--epochs", "2")
    assert train_timm.main(args) == 0
    resume = ["--resume", str(tmp_path / "a" / "last.pth.tar"), "--epochs", "3"]
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "b", "--method", "baseline", *resume)) == 0
    capsys.readouterr()
    results = read_results(tmp_path / "b")
    assert (results["best_epoch"], results["best_top1_err"]) == (0, 10.0)
    assert _epoch_of(tmp_path / "b" / "model_best.pth.tar") == 0  # the best's weights come along
    assert _sha256(tmp_path / "b" / "model_best.pth.tar") == _listed(tmp_path / "b")["model_best.pth.tar"]


def test_resume_from_an_older_checkpoint_rederives_model_best(tiny_folder, tmp_path, capsys, monkeypatch):
    _scripted_top1(monkeypatch, [30.0, 10.0, 20.0, 40.0])
    args = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline", "--epochs", "3")
    assert train_timm.main(args) == 0
    assert _epoch_of(tmp_path / "a" / "model_best.pth.tar") == 1
    # Back to epoch 0 and another epoch 1 (error 40): epoch 1 of the first branch is no longer the best.
    resume = ["--resume", str(tmp_path / "a" / "checkpoint-0.pth.tar"), "--epochs", "2"]
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline", *resume)) == 0
    capsys.readouterr()
    results = read_results(tmp_path / "a")
    assert (results["best_epoch"], results["best_top1_err"]) == (0, 30.0)
    assert _epoch_of(tmp_path / "a" / "model_best.pth.tar") == 0


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--method", "cutmix"], ("--method baseline", "cutmix")),
        (["--method", "baseline", "--opt", "adamw"], ("--opt momentum", "adamw")),
    ],
)
def test_resume_with_another_method_or_optimizer_is_refused(tiny_folder, tmp_path, capsys, flags, needles):
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline")) == 0
    capsys.readouterr()
    resume = ["--resume", str(tmp_path / "a" / "last.pth.tar"), "--epochs", "2"]
    run_fails(capsys, tiny_args(tiny_folder, tmp_path, "b", *flags, *resume), *needles)
    assert not (tmp_path / "b").exists()


# --- B. checkpoints -----------------------------------------------------------------------------------


class _Killed(BaseException):
    """Stands for SIGKILL between two file operations."""


@pytest.mark.parametrize("name", ["last.pth.tar", "model_best.pth.tar"])
def test_a_kill_while_a_checkpoint_is_replaced_leaves_the_old_one(
    tiny_folder, tmp_path, capsys, monkeypatch, name
):
    # timm's saver unlinks last / model_best before it renames / links the new file in.
    _scripted_top1(monkeypatch, [20.0, 10.0])  # epoch 1 is a new best: model_best is replaced too
    real_replace, real_link = os.replace, os.link
    seen: list[str] = []

    def killing(real):
        def op(src, dst, *args, **kwargs):
            if os.path.basename(dst) == name:
                seen.append(dst)
                if len(seen) == 2:  # epoch 1's replace (epoch 0 created the file)
                    raise _Killed
            return real(src, dst, *args, **kwargs)

        return op

    monkeypatch.setattr(os, "replace", killing(real_replace))
    monkeypatch.setattr(os, "link", killing(real_link))
    with pytest.raises(_Killed):
        train_timm.main(tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline", "--epochs", "2"))
    capsys.readouterr()
    assert _epoch_of(tmp_path / "a" / name) == 0


def test_checkpoints_are_listed_with_their_sha256(tiny_folder, tmp_path, capsys):
    argv = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline", "--epochs", "2")
    assert train_timm.main(argv) == 0
    capsys.readouterr()
    run_dir = tmp_path / "a"
    listed = _listed(run_dir)
    names = sorted(p.name for p in run_dir.glob("*.pth.tar"))
    assert sorted(listed) == names  # and nothing else: no temporary file left, none listed
    assert all(listed[n] == _sha256(run_dir / n) for n in names)


def test_checkpoints_are_copied_where_hard_links_fail(tiny_folder, tmp_path, capsys, monkeypatch):
    def no_link(src, dst, *args, **kwargs):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_link)
    argv = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline", "--epochs", "2")
    assert train_timm.main(argv) == 0
    capsys.readouterr()
    run_dir = tmp_path / "a"
    names = sorted(p.name for p in run_dir.glob("*.pth.tar"))
    assert {"last.pth.tar", "model_best.pth.tar", "checkpoint-1.pth.tar"} <= set(names)
    assert _listed(run_dir) == {n: _sha256(run_dir / n) for n in names}


@pytest.mark.parametrize(
    ("damage", "used"),
    [
        ("missing", "checkpoint-1.pth.tar"),
        ("folder", "checkpoint-1.pth.tar"),  # --resume <run folder>, its last.pth.tar gone
        # checkpoint-1 is a copy of last.pth.tar (not a hard link): damage to last leaves it intact.
        ("truncated", "checkpoint-1.pth.tar"),
        ("flipped", "checkpoint-1.pth.tar"),
    ],
)
def test_resume_falls_back_to_the_newest_intact_checkpoint(tiny_folder, tmp_path, capsys, damage, used):
    args = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline", "--sched", "constant")
    assert train_timm.main([*args, "--epochs", "2"]) == 0
    run_dir = tmp_path / "a"
    last = run_dir / "last.pth.tar"
    if damage in ("missing", "folder"):
        last.unlink()
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[:1000])
    else:
        _flip_a_byte(last)
    target = run_dir if damage == "folder" else last
    capsys.readouterr()
    assert train_timm.main([*args, "--epochs", "3", "--resume", str(target)]) == 0
    out, err = capsys.readouterr()
    assert f"resuming from the newest intact checkpoint {run_dir / used}" in out and not err, out + err
    assert [int(r["epoch"]) for r in read_summary(run_dir)] == [0, 1, 2]
    assert _epoch_of(last) == 2


def test_a_checkpoint_with_flipped_bits_is_refused(tiny_folder, tmp_path, capsys):
    args = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline")
    assert train_timm.main([*args, "--epochs", "2"]) == 0
    capsys.readouterr()
    ckpt = tmp_path / "a" / "checkpoint-0.pth.tar"
    _flip_a_byte(ckpt)
    run_fails(capsys, [*args, "--epochs", "3", "--resume", str(ckpt)], "checkpoint-0.pth.tar", "sha256")
    assert [int(r["epoch"]) for r in read_summary(tmp_path / "a")] == [0, 1]  # untouched


# --- C. flags -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--method", "salfmix", "--mixup", "1.0"], ("--method salfmix", "--mixup", "hybridmix-v1")),
        (["--method", "cutmix", "--mixup", "1.0"], ("--method cutmix", "--mixup")),
        (["--method", "baseline", "--cutmix", "1.0"], ("--method baseline", "--cutmix")),
    ],
)
def test_a_method_and_a_flag_of_another_method_are_refused(tiny_folder, tmp_path, capsys, argv, needles):
    run_fails(capsys, tiny_args(tiny_folder, tmp_path, "a", *argv), *needles)
    assert not (tmp_path / "a").exists()


def test_tuning_flags_of_a_method_that_does_not_run_warn_once(tiny_folder, tmp_path, capsys):
    extra = ["--method", "baseline", "--cutout-ratio", "0.3", "--salfmix-grid", "2", "--mixup-prob", "0.5"]
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "a", *extra)) == 0
    out, err = capsys.readouterr()
    warned = [line for line in (out + err).splitlines() if "--cutout-ratio" in line]
    assert len(warned) == 1, out + err
    assert all(flag in warned[0] for flag in ("--salfmix-grid", "--mixup-prob", "baseline"))
    # A flag of the method that runs is not reported.
    argv = tiny_args(tiny_folder, tmp_path, "b", "--method", "salfmix", "--salfmix-grid", "2")
    assert train_timm.main(argv) == 0
    out, err = capsys.readouterr()
    assert "--salfmix-grid" not in out + err


def test_an_unknown_compile_backend_is_one_line(tiny_folder, tmp_path, capsys):
    argv = tiny_args(tiny_folder, tmp_path, "a", "--torchcompile", "nosuchbackend")
    run_fails(capsys, argv, "--torchcompile nosuchbackend")
    assert not (tmp_path / "a").exists()


def test_a_model_that_cannot_take_the_image_size_is_refused_before_training(tiny_folder, tmp_path, capsys):
    argv = tiny_args(tiny_folder, tmp_path, "a", "--model", "test_vit3", "--method", "baseline")
    del argv[argv.index("--width") : argv.index("--width") + 2]
    run_fails(capsys, argv, "test_vit3", "32x32", "--img-size")
    assert not (tmp_path / "a").exists()


def test_a_diverging_loss_is_one_line(tiny_folder, tmp_path, capsys):
    argv = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline", "--lr", "1e30")
    run_fails(capsys, argv, "a loss is not finite", "diverged")


def test_a_diverging_loss_names_the_batches_since_the_last_check(tiny_folder, tmp_path, capsys):
    """The loss is checked where the loop reads it (each --log-interval batches) and at the end of the epoch,
    not at every step: the error names the batches since the last check. The first step (lr 1e30) makes every
    later loss NaN, so the second batch is the first bad one (the message counts from 1, as the log lines
    do)."""
    diverging = ("--method", "baseline", "--lr", "1e30", "-b", "4")
    whole_epoch = "a loss is not finite (their sum is nan) at epoch 0, batches [1-4/4]"
    run_fails(capsys, tiny_args(tiny_folder, tmp_path, "a", *diverging), whole_epoch)
    logged = tiny_args(tiny_folder, tmp_path, "b", *diverging, "--log-interval", "1")
    run_fails(capsys, logged, "at epoch 0, batch [2/4]:", "diverged")


def test_a_diverging_loss_is_checked_at_the_progress_bars_refresh(tiny_folder, tmp_path, capsys, monkeypatch):
    """With a progress bar the loop reads the loss at batches 0, 10, 20, ...: the check at batch 0 finds it
    finite, so the end of the epoch names batches 2-4 (counted from 1)."""
    from salfmix_transforms import engine

    monkeypatch.setattr(engine, "show_progress", lambda args: True)
    argv = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline", "--lr", "1e30", "-b", "4")
    run_fails(capsys, argv, "at epoch 0, batches [2-4/4]:")


def test_a_diverging_loss_keeps_the_completed_epochs(tiny_folder, tmp_path, capsys, monkeypatch):
    real_epoch = train_timm.train_one_epoch

    def diverging(run, epoch, *args, **kwargs):
        if epoch == 1:
            raise FloatingPointError(f"loss is nan at epoch {epoch}, batch 0")
        return real_epoch(run, epoch, *args, **kwargs)

    monkeypatch.setattr(train_timm, "train_one_epoch", diverging)
    argv = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline", "--epochs", "2")
    run_fails(capsys, argv, "loss is nan at epoch 1", str(tmp_path / "a"))
    run_dir = tmp_path / "a"
    assert _epoch_of(run_dir / "last.pth.tar") == 0 and (run_dir / "checkpoint-0.pth.tar").is_file()
    assert [int(r["epoch"]) for r in read_summary(run_dir)] == [0]


def test_more_threads_than_cpus_is_refused(tiny_folder, tmp_path, capsys):
    run_fails(capsys, tiny_args(tiny_folder, tmp_path, "a", "--threads", "100000"), "--threads 100000")
    assert not (tmp_path / "a").exists()


def test_an_output_folder_under_a_file_is_one_line(tiny_folder, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    run_fails(capsys, tiny_args(tiny_folder, afile / "sub", "a"), "--output", str(afile))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and afile.read_text() == "not a folder"


# --- D. data ------------------------------------------------------------------------------------------


def _empty_all(root: Path) -> None:
    for path in root.glob("train/*/*.png"):
        path.unlink()


def _empty_one(root: Path) -> None:
    for path in root.glob("train/class1/*.png"):
        path.unlink()


def _extra_val_class(root: Path) -> None:
    (root / "val" / "class2").mkdir()
    Image.new("RGB", (32, 32)).save(root / "val" / "class2" / "00.png")


def _sub_folder(root: Path) -> None:
    (root / "train" / "class0" / "more").mkdir()
    Image.new("RGB", (32, 32)).save(root / "train" / "class0" / "more" / "00.png")


def _truncated(root: Path) -> None:
    path = root / "train" / "class0" / "00.png"
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        (_empty_all, ("no images",)),
        (_empty_one, ("class1", "no images")),
        (_extra_val_class, ("class2", "not a training class")),
        (_sub_folder, ("class0", "more")),
        (_truncated, ("1 of 16", "00.png")),  # 6% of the training images: above the 1% that is skipped
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_bad_image_folders_are_one_line_errors(own_folder, tmp_path, capsys, damage, needles):
    damage(own_folder)
    run_fails(capsys, tiny_args(own_folder, tmp_path / "out", "a"), *needles)
    assert not (tmp_path / "out").exists()


def test_a_few_unreadable_images_are_skipped_and_reported_once(tmp_path, caplog):
    root = make_image_folder(tmp_path, (("train", (150, 150)), ("val", (4, 4))))
    truncated = root / "train" / "class0" / "00.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    (root / "train" / "class1" / "junk.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level("WARNING"):
        train_ds, val_ds, num_classes, _ = build_datasets(data_dir=str(root), val_split="val")
    assert (len(train_ds), len(val_ds), num_classes) == (299, 8, 2)
    paths = {path for path, _ in train_ds.reader.samples}
    assert str(truncated) not in paths and str(root / "train" / "class1" / "junk.jpg") not in paths
    reports = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(reports) == 1 and "2 of 301" in reports[0] and "00.png" in reports[0], reports


def test_16_bit_pngs_are_scaled_not_white(own_folder):
    grey = np.full((32, 32), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    Image.fromarray(grey).save(own_folder / "val" / "class0" / "00.png")
    assert Image.open(own_folder / "val" / "class0" / "00.png").mode.startswith("I")
    _, val_ds, _, _ = build_datasets(data_dir=str(own_folder), val_split="val")
    x, _ = val_ds[0]  # val/class0/00.png, normalised with ImageNet statistics
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = x * std[:, None, None] + mean[:, None, None]
    assert pixels.flatten().tolist() == pytest.approx([127.5 / 255] * pixels.numel(), abs=0.6 / 255)


def test_bmp_and_tif_images_are_read(own_folder):
    for i, path in enumerate(sorted(own_folder.glob("train/class0/*.png"))):
        Image.open(path).save(path.with_suffix(".bmp" if i % 2 else ".tif"))
        path.unlink()
    train_ds, _, num_classes, _ = build_datasets(data_dir=str(own_folder), val_split="val")
    assert (len(train_ds), num_classes) == (16, 2)


def test_images_of_another_size_are_resized_before_training(own_folder, tmp_path, capsys):
    Image.new("RGB", (40, 40), (200, 60, 40)).save(own_folder / "val" / "class0" / "00.png")
    Image.new("RGB", (24, 20), (40, 60, 200)).save(own_folder / "train" / "class1" / "00.png")
    train_ds, val_ds, _, img_size = build_datasets(data_dir=str(own_folder), val_split="val")
    assert img_size == 32 and val_ds[0][0].shape == train_ds[8][0].shape == (3, 32, 32)
    assert train_timm.main(tiny_args(own_folder, tmp_path, "a", "--method", "baseline")) == 0
    capsys.readouterr()
    assert len(read_summary(tmp_path / "a")) == 1


def test_data_errors_are_dataset_errors(own_folder):
    _empty_all(own_folder)
    with pytest.raises(DatasetError, match="no images"):
        build_datasets(data_dir=str(own_folder), val_split="val")
