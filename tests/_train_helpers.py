"""Helpers of the ``train_timm.py`` tests (``test_train.py``, ``test_train_reliability.py``): a tiny image
folder, the command line of a tiny run, the files a run writes, and the one-line usage errors.

The ``tiny_folder`` fixture (``conftest.py``) is ``make_image_folder(..., TINY_FOLDER_SPLITS)``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

import train_timm

# (split, (images of class0, images of class1)); class0 is reddish, class1 bluish.
DEFAULT_SPLITS: tuple[tuple[str, tuple[int, int]], ...] = (("train", (8, 8)), ("val", (4, 4)))
# val7/: an odd number of validation images (7), for the two-process run of test_train.py.
TINY_FOLDER_SPLITS = (*DEFAULT_SPLITS, ("val7", (4, 3)))


def make_image_folder(
    root: Path, splits: Sequence[tuple[str, tuple[int, int]]] = DEFAULT_SPLITS, size: int = 32
) -> Path:
    """An ImageFolder data set: ``root/<split>/class0``, ``root/<split>/class1`` of ``size`` x ``size`` PNGs.

    The pixels are drawn from one generator (seed 0) split by split in the order given, so that a split's
    images do not depend on the splits that come after it.
    """
    rng = np.random.default_rng(0)
    for split, counts in splits:
        for label, colour in enumerate(((200, 60, 40), (40, 60, 200))):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(counts[label]):
                pixels = np.clip(rng.normal(colour, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return root


def tiny_args(data: Path, out: Path, name: str, *extra: str) -> list[str]:
    """The command line of a one-epoch run of a 1/8-width network on ``data``, into ``out / name``."""
    return [
        "--data-dir", str(data), "--val-split", "val", "--width", "0.125", "-b", "8", "--epochs", "1",
        "--workers", "0", "--output", str(out), "--experiment", name, "--no-progress", *extra,
    ]  # fmt: skip


def read_summary(run_dir: Path | str) -> list[dict[str, str]]:
    """The rows of a run's ``summary.csv``."""
    with open(Path(run_dir) / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def read_results(run_dir: Path) -> dict:
    """A run's ``results.json``."""
    return json.loads((run_dir / "results.json").read_text())


def assert_one_line_error(rc: int, err: str, *needles: str, script: str = "train_timm.py") -> None:
    """Exit code 2 and one line on stderr, ``<script>: error: ...``, that holds every needle."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{script}: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def run_fails(capsys, argv: list[str], *needles: str, script: str = "train_timm.py") -> str:
    """Runs ``<script>``'s ``main(argv)`` (``train_timm.py`` or ``train_seg.py``) and checks that it ends with
    a one-line error holding the needles."""
    import train_seg

    rc = {"train_timm.py": train_timm, "train_seg.py": train_seg}[script].main(argv)
    _, err = capsys.readouterr()
    assert_one_line_error(rc, err, *needles, script=script)
    return err
