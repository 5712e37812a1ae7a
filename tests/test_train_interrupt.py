"""Ctrl-C in train_timm.py and train_seg.py (issue 21, item 5).

An interrupted run ends with one line on stderr saying where to resume ("interrupted; resume with --resume
<checkpoint>", or "interrupted before the first checkpoint: nothing to resume yet") and exit code 130, never
a traceback; a save cut short leaves no temporary file and the last checkpoint as it was.

The fast tests raise KeyboardInterrupt in-process (where SIGINT raises it); the slow ones send SIGINT to the
script in a subprocess once it has logged its first batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import make_image_folder, read_summary, tiny_args
from PIL import Image

import train_seg
import train_timm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
SEG = ["--method", "baseline", "--limit-train", "8", "--limit-val", "4", "-b", "8", "--threads", "1"]
SEG += ["--no-progress"]
SCRIPTS = {"train_timm.py": train_timm, "train_seg.py": train_seg}
NOTHING = "interrupted before the first checkpoint: nothing to resume yet"


def _argv(script: str, data: Path, out: Path, name: str, *extra: str) -> list[str]:
    if script == "train_timm.py":
        return tiny_args(data, out, name, "--method", "baseline", *extra)
    return [*SEG, "--output", str(out), "--experiment", name, *extra]


def _interrupted(capsys, script: str, argv: list[str]) -> str:
    """Runs ``script``'s main: exit code 130 and one line on stderr, ``<script>: interrupted...``."""
    try:
        rc = SCRIPTS[script].main(argv)
    except KeyboardInterrupt:  # it would stop pytest too
        pytest.fail(f"KeyboardInterrupt escaped {script}'s main: a traceback, exit code 1")
    err = capsys.readouterr().err
    assert rc == 130, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith(f"{script}: interrupted"), err
    return err.strip()


def _ctrl_c_in_epoch(monkeypatch, script: str, interrupted_epoch: int) -> None:
    module = SCRIPTS[script]
    real = module.train_one_epoch

    def train_one_epoch(run, epoch, *args, **kwargs):
        if epoch == interrupted_epoch:
            raise KeyboardInterrupt
        return real(run, epoch, *args, **kwargs)

    monkeypatch.setattr(module, "train_one_epoch", train_one_epoch)


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_in_the_first_epoch_says_there_is_nothing_to_resume(
    script, tiny_folder, tmp_path, capsys, monkeypatch
):
    _ctrl_c_in_epoch(monkeypatch, script, 0)
    assert _interrupted(capsys, script, _argv(script, tiny_folder, tmp_path, "a", "--epochs", "2")).endswith(
        NOTHING
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_after_a_checkpoint_names_it_and_it_resumes(
    script, tiny_folder, tmp_path, capsys, monkeypatch
):
    _ctrl_c_in_epoch(monkeypatch, script, 1)
    argv = _argv(script, tiny_folder, tmp_path, "a", "--epochs", "2")
    last = tmp_path / "a" / "last.pth.tar"
    assert _interrupted(capsys, script, argv) == f"{script}: interrupted; resume with --resume {last}"
    monkeypatch.undo()
    assert SCRIPTS[script].main([*argv, "--resume", str(last)]) == 0
    capsys.readouterr()
    assert [int(r["epoch"]) for r in read_summary(tmp_path / "a")] == [0, 1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_while_resuming_names_the_resumed_checkpoint(
    script, tiny_folder, tmp_path, capsys, monkeypatch
):
    assert SCRIPTS[script].main(_argv(script, tiny_folder, tmp_path, "a", "--epochs", "1")) == 0
    capsys.readouterr()
    last = tmp_path / "a" / "last.pth.tar"
    _ctrl_c_in_epoch(monkeypatch, script, 1)  # the first epoch of the new folder b
    argv = _argv(script, tiny_folder, tmp_path, "b", "--epochs", "2", "--resume", str(last))
    assert _interrupted(capsys, script, argv) == f"{script}: interrupted; resume with --resume {last}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_while_a_checkpoint_is_saved_keeps_the_last_one(
    script, tiny_folder, tmp_path, capsys, monkeypatch
):
    """SIGINT between writing epoch 1's checkpoint and putting it in place: no temporary file is left and
    last.pth.tar is still epoch 0's."""
    real_replace = os.replace
    calls = []

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == "last.pth.tar":
            calls.append(dst)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    argv = _argv(script, tiny_folder, tmp_path, "a", "--epochs", "2")
    last = tmp_path / "a" / "last.pth.tar"
    assert _interrupted(capsys, script, argv) == f"{script}: interrupted; resume with --resume {last}"
    monkeypatch.undo()
    assert not [p.name for p in (tmp_path / "a").iterdir() if "tmp" in p.name]
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0


# --- SIGINT to the script ------------------------------------------------------------------------------


def _seg_folder(root: Path, count: int) -> Path:
    """A train_seg.py folder data set: ``count`` 32x32 training image/mask pairs, 4 validation pairs."""
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", 4)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{i:03d}.png")
            mask = (image[:, :, 0] > 127).astype(np.uint8)  # class 1 where the red channel is bright
            Image.fromarray(mask).save(root / split / "masks" / f"{i:03d}.png")
    (root / "classes.txt").write_text("0 dark\n1 bright\n")
    return root


def _command(script: str, data: Path, out: Path) -> list[str]:
    """Two epochs of 20 batches, a log line per batch."""
    common = ["--epochs", "2", "--log-interval", "1", "--output", str(out), "--experiment", "a"]
    if script == "train_timm.py":
        flags = tiny_args(data, out, "a", "--method", "baseline", "--threads", "1")
        return [*flags, *common]
    flags = ["--dataset", "folder", "--data-dir", str(data), "--method", "baseline", "-b", "8"]
    return [*flags, "--threads", "1", "--no-progress", *common]


def _sigint_at(script: str, argv: list[str], marker: str) -> tuple[int, str, str]:
    """Runs ``script`` and sends SIGINT once a line holding ``marker`` is logged: (exit code, stdout,
    stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / script), *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored, as in a shell
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(lines) + out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("interrupt")
    splits = (("train", (80, 80)), ("val", (4, 4)))  # 160 images: 20 batches of 8 an epoch
    return {
        "train_timm.py": make_image_folder(root / "timm", splits),
        "train_seg.py": _seg_folder(root / "seg", 160),
    }


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("epoch", [0, 1])
def test_sigint_is_one_line_and_exit_code_130(script, epoch, data, tmp_path):
    marker = f"epoch {epoch} batch [1/"  # the engine's progress line, the same for both scripts
    rc, out, err = _sigint_at(script, _command(script, data[script], tmp_path), marker)
    assert rc == 130, out[-2000:] + err[-3000:]
    assert "Traceback" not in err and err.count("\n") == 1, err
    last = tmp_path / "a" / "last.pth.tar"
    expected = NOTHING if epoch == 0 else f"interrupted; resume with --resume {last}"
    assert err == f"{script}: {expected}\n"
    assert not [p.name for p in (tmp_path / "a").iterdir() if "tmp" in p.name]
    if epoch == 1:
        assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0


# Ctrl-C while the script is still importing torch (a second or more on a cold start): the script is run as
# ``python script.py`` with ``import torch`` made to raise KeyboardInterrupt, which is what Python raises
# when SIGINT arrives during that import; deterministic, unlike a signal sent at a guessed moment.
_CTRL_C_DURING_IMPORT = """
import builtins, runpy, sys
real_import = builtins.__import__
def ctrl_c_at_torch(name, *args, **kwargs):
    if name == "torch" or name.startswith("torch."):
        raise KeyboardInterrupt
    return real_import(name, *args, **kwargs)
builtins.__import__ = ctrl_c_at_torch
sys.argv = [sys.argv[1], "--help"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_while_torch_loads_is_one_line_and_exit_code_130(script):
    proc = subprocess.run(
        [sys.executable, "-c", _CTRL_C_DURING_IMPORT, str(REPO / script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert proc.stderr == f"{script}: interrupted while starting: nothing was run\n", proc.stderr[-3000:]
    assert proc.stdout == ""
