"""Fixtures shared by the test files, and ``tests/`` on ``sys.path``: the helper modules ``_train_helpers``
and ``_batch_helpers`` then import under any ``--import-mode`` (the default ``prepend`` puts the test file's
own folder on ``sys.path``: ``tests/`` for the tests here, ``tests/conformance/`` for the conformance tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from _train_helpers import TINY_FOLDER_SPLITS, make_image_folder  # noqa: E402  (needs the path above)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the test (opt in with ``pytestmark = pytest.mark.usefixtures(...)``).

    For tiny models and training runs: on a shared 2-core machine extra OpenMP threads only spin against other
    processes.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """ImageFolder: train/ 2 classes x 8 PNGs, val/ 2 x 4, val7/ 4 + 3; 32x32, one colour per class.

    Module-scoped: a test must not damage it (``make_image_folder(tmp_path / ...)`` makes one that may be).
    """
    return make_image_folder(tmp_path_factory.mktemp("tiny_folder"), TINY_FOLDER_SPLITS)
