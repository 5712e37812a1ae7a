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


# --- the device / dtype matrix (issue 22), in the style of kornia's test suite -----------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        help="devices of the tests that take the `device` fixture: cpu (default), cuda, all (cpu and, where "
        "the machine has one, cuda), or a comma-separated list",
    )
    parser.addoption(
        "--dtype",
        default="float32",
        help="dtypes of the tests that take the `dtype` fixture: float32 (default), all (float32, float64, "
        "bfloat16, float16), or a comma-separated list",
    )


_DTYPES = {name: getattr(torch, name) for name in ("float32", "float64", "bfloat16", "float16")}


def _devices(option: str) -> list[str]:
    if option == "all":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    devices = [d.strip() for d in option.split(",") if d.strip()]
    if "cuda" in devices and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: this machine has no CUDA device")
    return devices


def _dtypes(option: str) -> list[str]:
    names = list(_DTYPES) if option == "all" else [d.strip() for d in option.split(",") if d.strip()]
    unknown = [n for n in names if n not in _DTYPES]
    if unknown:
        raise pytest.UsageError(f"--dtype: unknown {', '.join(unknown)} (known: {', '.join(_DTYPES)}, all)")
    return names


def _parametrized_by_the_test(metafunc: pytest.Metafunc, name: str) -> bool:
    """Whether the test's own ``@pytest.mark.parametrize`` gives ``name`` (its values then win)."""
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        if name in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the ``device`` and ``dtype`` fixtures from ``--device`` / ``--dtype`` (a test that
    parametrizes one of them itself keeps its own values)."""
    if "device" in metafunc.fixturenames and not _parametrized_by_the_test(metafunc, "device"):
        devices = _devices(metafunc.config.getoption("--device"))
        metafunc.parametrize("device", [torch.device(d) for d in devices], ids=devices)
    if "dtype" in metafunc.fixturenames and not _parametrized_by_the_test(metafunc, "dtype"):
        names = _dtypes(metafunc.config.getoption("--dtype"))
        metafunc.parametrize("dtype", [_DTYPES[n] for n in names], ids=names)
