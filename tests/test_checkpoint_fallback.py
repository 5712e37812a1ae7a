"""``--resume`` of a run whose ``last.pth.tar`` is gone falls back to the newest *written* checkpoint
(issue 21, item 16).

After a resume from an earlier checkpoint (a shorter schedule, a retry), the epoch numbers of the
``checkpoint-N.pth.tar`` files no longer say which one is newest: the run's latest state is the one written
last.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from salfmix_transforms.checkpoints import find_resume_checkpoint

T0 = 1_700_000_000  # a fixed modification time (seconds)


def _checkpoint(folder: Path, epoch: int, mtime: float) -> Path:
    path = folder / f"checkpoint-{epoch}.pth.tar"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": epoch, "task": "classification"}, path)
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def resumed_run(tmp_path) -> Path:
    """A run to epoch 7, resumed from epoch 2 with a shorter schedule: checkpoint-3 is the newest."""
    for epoch in (5, 6, 7):
        _checkpoint(tmp_path, epoch, T0 + epoch)
    _checkpoint(tmp_path, 3, T0 + 100)
    return tmp_path


@pytest.mark.parametrize("target", ["folder", "last"])
def test_the_fallback_is_the_checkpoint_written_last_not_the_highest_epoch(resumed_run, target):
    path = resumed_run if target == "folder" else resumed_run / "last.pth.tar"
    used, note = find_resume_checkpoint(str(path))
    assert Path(used) == resumed_run / "checkpoint-3.pth.tar", used
    assert note is not None and "checkpoint-3.pth.tar" in note


def test_a_damaged_newest_checkpoint_falls_back_to_the_next_newest(resumed_run):
    newest = resumed_run / "checkpoint-3.pth.tar"
    newest.write_bytes(newest.read_bytes()[:100])
    os.utime(newest, (T0 + 100, T0 + 100))
    used, _ = find_resume_checkpoint(str(resumed_run))
    assert Path(used) == resumed_run / "checkpoint-7.pth.tar", used
