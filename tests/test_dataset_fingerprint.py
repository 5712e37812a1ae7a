"""The data set changed between a run and its resume (issue 21, item 7).

Checkpoints of both scripts hold a fingerprint of the training set (``salfmix_transforms.fingerprint``: data
set name, class names, number of files, sha256 of the sorted relative file names; for train_seg.py the
image/mask names). On ``--resume``: other classes or another number of files is one line, exit 2, naming the
checkpoint and what differs; only other file names (same count and classes) is refused with train_timm.py's
``--saliency-source cached`` (the cached maps belong to other images) and a warning otherwise; a checkpoint
without a fingerprint (an earlier version's) resumes as before, with a note.

Every run is one or two tiny epochs (a 1/8-width PreActResNet on 16 PNGs; tinyseg on 8 small PNGs).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from _train_helpers import make_image_folder, read_summary, run_fails, tiny_args
from PIL import Image

import train_seg
import train_timm
from salfmix_transforms.data import build_datasets

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCRIPTS = {"train_timm.py": train_timm, "train_seg.py": train_seg}


def _fails(capsys, script: str, argv: list[str], *needles: str) -> str:
    return run_fails(capsys, argv, *needles, script=script)


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


# --- train_timm.py --------------------------------------------------------------------------------------


def _timm_run(data: Path, out: Path, *extra: str) -> list[str]:
    """Train one epoch into ``out / "a"``; returns the command line (for the resume)."""
    argv = tiny_args(data, out, "a", *extra)
    assert train_timm.main(argv) == 0
    return argv


def _timm_resume(argv: list[str], out: Path) -> list[str]:
    return [*argv, "--resume", str(out / "a" / "last.pth.tar"), "--epochs", "2"]


def _rename_train_images(data: Path, count: int) -> None:
    """Replace ``count`` training images by images of other names (the same number, the same classes)."""
    done = 0
    for label in ("class0", "class1"):
        for path in sorted((data / "train" / label).iterdir()):
            if done == count:
                return
            path.rename(path.with_name("new-" + path.name))
            done += 1


def test_the_checkpoint_holds_the_training_sets_fingerprint(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data")
    _timm_run(data, tmp_path, "--method", "baseline")
    fingerprint = _ckpt(tmp_path / "a" / "last.pth.tar")["data_fingerprint"]
    assert fingerprint["name"] == "folder" and fingerprint["classes"] == ["class0", "class1"]
    assert fingerprint["size"] == 16 and len(fingerprint["files_sha256"]) == 64
    # Relative names: the same data in another folder has the same fingerprint.
    from salfmix_transforms.fingerprint import dataset_fingerprint

    moved = shutil.copytree(data, tmp_path / "moved")
    train_ds = build_datasets("folder", str(moved), train_split="train", val_split="val")[0]
    assert dataset_fingerprint(train_ds, "folder") == fingerprint


def test_data_sets_without_files_are_fingerprinted_by_name_and_size():
    from salfmix_transforms.fingerprint import dataset_fingerprint

    train_ds = build_datasets("digits")[0]
    fingerprint = dataset_fingerprint(train_ds, "digits")
    assert fingerprint["name"] == "digits" and fingerprint["size"] == len(train_ds)
    assert fingerprint["files_sha256"] is None


def test_resume_on_a_folder_with_other_classes_is_refused(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data")
    argv = _timm_run(data, tmp_path, "--method", "baseline")
    before = _files(tmp_path / "a")
    for split in ("train", "val"):
        for old, new in (("class0", "cat"), ("class1", "dog")):
            (data / split / old).rename(data / split / new)
    capsys.readouterr()
    ckpt = str(tmp_path / "a" / "last.pth.tar")
    _fails(capsys, "train_timm.py", _timm_resume(argv, tmp_path), ckpt, "classes", "cat", "class0")
    assert _files(tmp_path / "a") == before, "the run folder (results.json, best) is kept as it was"


def test_resume_with_another_number_of_files_is_refused(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data")
    argv = _timm_run(data, tmp_path, "--method", "baseline")
    before = _files(tmp_path / "a")
    for path in sorted((data / "train" / "class0").iterdir())[:2]:
        path.unlink()
    capsys.readouterr()
    ckpt = str(tmp_path / "a" / "last.pth.tar")
    _fails(capsys, "train_timm.py", _timm_resume(argv, tmp_path), ckpt, "16", "14")
    assert _files(tmp_path / "a") == before


def test_resume_with_other_file_names_and_cached_saliency_is_refused(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data")
    flags = ("--method", "salfmix", "--saliency-source", "cached", "--salfmix-warmup-epochs", "0")
    argv = _timm_run(data, tmp_path, *flags)
    before = _files(tmp_path / "a")
    _rename_train_images(data, 10)
    capsys.readouterr()
    ckpt = str(tmp_path / "a" / "last.pth.tar")
    _fails(capsys, "train_timm.py", _timm_resume(argv, tmp_path), ckpt, "file names", "saliency")
    assert _files(tmp_path / "a") == before


def test_resume_with_other_file_names_warns_once_and_trains(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data")
    argv = _timm_run(data, tmp_path, "--method", "baseline")
    _rename_train_images(data, 10)
    capsys.readouterr()
    assert train_timm.main(_timm_resume(argv, tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.count("file names") == 1 and "warning" in out, out
    assert [r["epoch"] for r in read_summary(tmp_path / "a")] == ["0", "1"]
    # The new checkpoints hold the new fingerprint: the next resume has nothing to say.
    assert train_timm.main([*_timm_resume(argv, tmp_path)[:-1], "3"]) == 0
    assert "file names" not in capsys.readouterr().out


def test_resume_of_a_checkpoint_without_a_fingerprint_notes_it(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data")
    _timm_run(data, tmp_path, "--method", "baseline")
    ckpt = _ckpt(tmp_path / "a" / "last.pth.tar")
    ckpt.pop("data_fingerprint", None)  # as an earlier version wrote it
    (tmp_path / "old").mkdir()
    torch.save(ckpt, tmp_path / "old" / "last.pth.tar")
    capsys.readouterr()
    argv = tiny_args(data, tmp_path, "b", "--method", "baseline")
    assert train_timm.main([*argv, "--resume", str(tmp_path / "old" / "last.pth.tar"), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "no data set fingerprint" in out, out


# --- train_seg.py ---------------------------------------------------------------------------------------


def _seg_folder(root: Path, n: int = 8, classes: tuple[str, ...] = ("a", "b")) -> Path:
    """``root/{train,val}/{images,masks}/img<i>.png`` (16x16, class i % 2) and ``classes.txt``."""
    for split in ("train", "val"):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16, 16), (20 * i, 0, 0)).save(root / split / "images" / f"img{i}.png")
            Image.new("L", (16, 16), i % 2).save(root / split / "masks" / f"img{i}.png")
    (root / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes)))
    return root


def _seg_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--dataset", "folder", "--data-dir", str(data), "--method", "baseline", "-b", "4", "--threads", "1",
        "--no-progress", "--output", str(out), "--experiment", "a", *extra,
    ]  # fmt: skip


def _seg_resume(data: Path, out: Path) -> list[str]:
    return ["--resume", str(out / "a"), "--data-dir", str(data), "--epochs", "2", "--no-progress"]


def test_train_seg_checkpoint_holds_the_image_and_mask_names(tmp_path):
    data = _seg_folder(tmp_path / "data")
    assert train_seg.main(_seg_argv(data, tmp_path, "--epochs", "1")) == 0
    fingerprint = _ckpt(tmp_path / "a" / "last.pth.tar")["data_fingerprint"]
    assert fingerprint["name"] == "folder" and fingerprint["classes"] == ["a", "b"]
    assert fingerprint["size"] == 8 and len(fingerprint["files_sha256"]) == 64


@pytest.mark.parametrize("change", ["count", "classes"])
def test_train_seg_resume_on_other_data_is_refused(tmp_path, capsys, change):
    data = _seg_folder(tmp_path / "data")
    assert train_seg.main(_seg_argv(data, tmp_path, "--epochs", "1")) == 0
    before = _files(tmp_path / "a")
    if change == "count":
        other = _seg_folder(tmp_path / "other", n=6)
        needles = ("8", "6")
    else:
        other = _seg_folder(tmp_path / "other", classes=("road", "sky"))
        needles = ("classes", "road")
    capsys.readouterr()
    ckpt = str(tmp_path / "a" / "last.pth.tar")
    _fails(capsys, "train_seg.py", _seg_resume(other, tmp_path), ckpt, *needles)
    assert _files(tmp_path / "a") == before


def test_train_seg_resume_with_other_file_names_warns_once(tmp_path, capsys):
    data = _seg_folder(tmp_path / "data")
    assert train_seg.main(_seg_argv(data, tmp_path, "--epochs", "1")) == 0
    for sub in ("images", "masks"):
        os.rename(data / "train" / sub / "img3.png", data / "train" / sub / "re-encoded3.png")
    capsys.readouterr()
    assert train_seg.main(_seg_resume(data, tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.count("file names") == 1 and "warning" in out, out
    assert [r["epoch"] for r in read_summary(tmp_path / "a")] == ["0", "1"]


def test_train_seg_resume_of_a_cached_run_with_the_files_listed_in_another_order_is_refused(tmp_path, capsys):
    """The saliency cache is indexed by a file's position in ``<root>/train.txt``: the same names in another
    order would give each image another image's maps (found by a review: the run went on silently). Refused
    for a cached run; a run without per-file state resumes."""
    data = _seg_folder(tmp_path / "data")
    names = [f"img{i}.png" for i in range(8)]
    (data / "train.txt").write_text("\n".join(names) + "\n")
    cached = ("--method", "salfmix", "--saliency-source", "cached", "--epochs", "1")
    assert train_seg.main(_seg_argv(data, tmp_path, *cached)) == 0
    (data / "train.txt").write_text("\n".join(names[1:] + names[:1]) + "\n")
    before = _files(tmp_path / "a")
    _fails(capsys, "train_seg.py", _seg_resume(data, tmp_path), "another order", "cached saliency")
    assert _files(tmp_path / "a") == before
    assert train_seg.main([*_seg_argv(data, tmp_path / "plain", "--epochs", "1")]) == 0
    (data / "train.txt").write_text("\n".join(names) + "\n")
    assert train_seg.main(_seg_resume(data, tmp_path / "plain")) == 0
