"""Checkpoint safety of train_timm.py and train_seg.py (issue 21, items 3, 4, 6 and 9).

* 3: a disk that fills up (or a file-size limit) while a checkpoint is saved is one line naming the run
  folder and the cause, exit code 2; no temporary file is left and the last good checkpoint still resumes.
* 4: a checkpoint with non-finite weights (model or EMA; no ``checksums.sha256`` to catch it) is refused on
  ``--resume`` with one line naming it, instead of "training diverged".
* 6: ``last.pth.tar``, ``checkpoint-N.pth.tar`` and ``model_best.pth.tar`` are separate files: damage to
  ``last`` in place leaves the others as they were.
* 9: a checkpoint of the other script is refused with one line naming it and the script that wrote it.

Every run is one or two tiny epochs (a 1/8-width PreActResNet on 16 PNGs; tinyseg on 8 synthetic scenes).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_helpers import read_summary, run_fails, tiny_args

import train_seg
import train_timm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
SEG = ["--method", "baseline", "--limit-train", "8", "--limit-val", "4", "-b", "8", "--threads", "1"]
SEG += ["--no-progress"]
SCRIPTS = {"train_timm.py": train_timm, "train_seg.py": train_seg}


def _argv(script: str, data: Path, out: Path, name: str, *extra: str) -> list[str]:
    """A tiny run of ``script`` into ``out / name``."""
    if script == "train_timm.py":
        return tiny_args(data, out, name, "--method", "baseline", *extra)
    return [*SEG, "--output", str(out), "--experiment", name, *extra]


def _fails(capsys, script: str, argv: list[str], *needles: str) -> str:
    return run_fails(capsys, argv, *needles, script=script)


def _epoch_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- 3. no space left while a checkpoint is saved ------------------------------------------------------


def _disk_full_at_save(monkeypatch, failing_call: int) -> None:
    """``torch.save`` writes part of the file, then fails as a full disk does, at its ``failing_call``-th
    call (1-based)."""
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) != failing_call:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        part = buffer.getvalue()[:4096]
        if hasattr(f, "write"):
            f.write(part)
        else:
            Path(f).write_bytes(part)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(
    script, tiny_folder, tmp_path, capsys, monkeypatch
):
    run_dir = tmp_path / "a"
    _disk_full_at_save(monkeypatch, failing_call=2)  # epoch 1's save; epoch 0's went through
    _fails(
        capsys, script, _argv(script, tiny_folder, tmp_path, "a", "--epochs", "2"), str(run_dir), "No space"
    )
    monkeypatch.undo()
    assert not [p.name for p in run_dir.iterdir() if "tmp" in p.name]  # no temporary file left
    last = run_dir / "last.pth.tar"
    assert _epoch_of(last) == 0
    listed = (run_dir / "checksums.sha256").read_text()
    assert f"{_sha256(last)}  last.pth.tar" in listed  # intact: the bytes that were saved
    resume = _argv(script, tiny_folder, tmp_path, "a", "--epochs", "2", "--resume", str(last))
    assert SCRIPTS[script].main(resume) == 0
    capsys.readouterr()
    assert _epoch_of(last) == 1 and [int(r["epoch"]) for r in read_summary(run_dir)] == [0, 1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_full_disk_while_copying_keeps_last_at_the_previous_epoch(
    script, tiny_folder, tmp_path, capsys, monkeypatch
):
    """``last.pth.tar`` is written last: a save that fails while copying the epoch's checkpoint-N or
    model_best leaves ``last`` at the previous epoch, so a resume redoes the epoch and finishes its
    bookkeeping (model_best, results.json) instead of finding "nothing to train" with a stale best."""
    from salfmix_transforms.checkpoints import AtomicCheckpointSaver

    copy = AtomicCheckpointSaver._duplicate
    calls = {"n": 0}

    def duplicate(self, src, dst):
        calls["n"] += 1
        if calls["n"] >= 3:  # epoch 0's copies went through; epoch 1's first copy fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return copy(self, src, dst)

    monkeypatch.setattr(AtomicCheckpointSaver, "_duplicate", duplicate)
    run_dir = tmp_path / "a"
    argv = _argv(script, tiny_folder, tmp_path, "a", "--epochs", "2")
    _fails(capsys, script, argv, str(run_dir), "No space")
    monkeypatch.undo()
    last = run_dir / "last.pth.tar"
    assert _epoch_of(last) == 0
    assert not (run_dir / "results.json").exists()
    assert SCRIPTS[script].main([*argv, "--resume", str(last)]) == 0
    capsys.readouterr()
    assert _epoch_of(last) == 1 and (run_dir / "results.json").is_file()
    assert (
        _epoch_of(run_dir / "model_best.pth.tar")
        == json.loads((run_dir / "results.json").read_text())["best_epoch"]
    )


def _file_size_limit(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_file_size_limit_while_saving_is_one_line(script, tiny_folder, tmp_path):
    """The real thing (``ulimit -f``): torch.save's writer fails on the first checkpoint (1.5-2 MB)."""
    argv = _argv(script, tiny_folder, tmp_path, "a", "--epochs", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_file_size_limit(500_000),
    )
    err = proc.stderr
    assert proc.returncode == 2, proc.stdout[-2000:] + err[-3000:]
    assert err.count("\n") == 1 and err.startswith(f"{script}: error: "), err
    assert str(tmp_path / "a") in err and "File too large" in err, err
    assert not (tmp_path / "a" / "tmp.pth.tar").exists()


# --- 4. non-finite weights -----------------------------------------------------------------------------


def _poison(path: Path, key: str, tensor: str = "state_dict") -> None:
    """Overwrites, in place, the first value of ``ckpt[tensor][key]`` in the file with NaN (as flipped
    bits of the exponent do); the file still loads."""
    values = torch.load(path, map_location="cpu", weights_only=False)[tensor][key]
    raw = values.contiguous().numpy().tobytes()
    data = path.read_bytes()
    assert data.count(raw) == 1, "the tensor's bytes are found once in the file"
    with open(path, "r+b") as f:
        f.seek(data.index(raw))
        f.write(struct.pack("<f", float("nan")))


def _first_float_weight(path: Path, tensor: str = "state_dict") -> str:
    state = torch.load(path, map_location="cpu", weights_only=False)[tensor]
    return next(k for k, v in state.items() if k.endswith("weight") and v.dtype == torch.float32)


@pytest.mark.parametrize(
    ("script", "tensor"),
    [("train_timm.py", "state_dict"), ("train_timm.py", "state_dict_ema"), ("train_seg.py", "state_dict")],
)
def test_non_finite_weights_are_refused_on_resume(script, tensor, tiny_folder, tmp_path, capsys):
    ema = ["--model-ema"] if script == "train_timm.py" else []
    assert SCRIPTS[script].main(_argv(script, tiny_folder, tmp_path, "a", "--epochs", "1", *ema)) == 0
    capsys.readouterr()
    copy = tmp_path / "copy"  # no checksums.sha256 beside it
    copy.mkdir()
    ckpt = copy / "last.pth.tar"
    shutil.copyfile(tmp_path / "a" / "last.pth.tar", ckpt)
    _poison(ckpt, _first_float_weight(ckpt, tensor), tensor)
    resume = _argv(script, tiny_folder, tmp_path, "b", "--epochs", "2", *ema, "--resume", str(ckpt))
    err = _fails(capsys, script, resume, str(ckpt), "non-finite")
    assert "diverged" not in err
    assert not (tmp_path / "b" / "summary.csv").exists()


# --- 6. separate files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_damage_to_last_in_place_leaves_the_other_checkpoints(script, tiny_folder, tmp_path, capsys):
    assert SCRIPTS[script].main(_argv(script, tiny_folder, tmp_path, "a", "--epochs", "2")) == 0
    capsys.readouterr()
    run_dir = tmp_path / "a"
    last = run_dir / "last.pth.tar"
    others = {p: p.read_bytes() for p in run_dir.glob("*.pth.tar") if p != last}
    assert {"model_best.pth.tar", "checkpoint-1.pth.tar"} <= {p.name for p in others}
    best = torch.load(run_dir / "model_best.pth.tar", map_location="cpu", weights_only=False)
    with open(last, "r+b") as f:  # in place: every hard link of the file sees it
        f.truncate(1000)
    for path, data in others.items():
        assert path.read_bytes() == data, f"{path.name} changed with last.pth.tar"
    again = torch.load(run_dir / "model_best.pth.tar", map_location="cpu", weights_only=False)
    assert again["epoch"] == best["epoch"]
    assert all(torch.equal(again["state_dict"][k], v) for k, v in best["state_dict"].items())


# --- 9. a checkpoint of the other script ---------------------------------------------------------------


def _without_task(path: Path, folder: Path) -> Path:
    """A copy of checkpoint ``path`` as an earlier version wrote it (no ``task`` entry)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    ckpt.pop("task", None)
    assert isinstance(ckpt["args"], argparse.Namespace)
    folder.mkdir()
    torch.save(ckpt, folder / "last.pth.tar")
    return folder / "last.pth.tar"


@pytest.mark.parametrize("old", [False, True], ids=["tagged", "old"])
@pytest.mark.parametrize(
    ("writer", "reader"), [("train_timm.py", "train_seg.py"), ("train_seg.py", "train_timm.py")]
)
def test_a_checkpoint_of_the_other_script_is_refused(writer, reader, old, tiny_folder, tmp_path, capsys):
    assert SCRIPTS[writer].main(_argv(writer, tiny_folder, tmp_path, "a", "--epochs", "1")) == 0
    capsys.readouterr()
    ckpt = tmp_path / "a" / "last.pth.tar"
    if old:
        ckpt = _without_task(ckpt, tmp_path / "old")
    argv = ["--resume", str(ckpt), "--epochs", "2", "--no-progress", "--threads", "1"]
    _fails(capsys, reader, argv, str(ckpt), writer)
