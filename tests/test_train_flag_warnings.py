"""train_timm.py warns about a tuning flag that nothing reads (issue 21, item 2): ``--model-ema-decay``
without ``--model-ema`` gets the warning line of every other unused flag."""

from __future__ import annotations

import pytest
from _train_helpers import tiny_args

import train_timm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _warnings(out: str, err: str) -> list[str]:
    return [line for line in (out + err).splitlines() if line.startswith("warning:")]


def test_model_ema_decay_without_model_ema_warns(tiny_folder, tmp_path, capsys):
    argv = tiny_args(tiny_folder, tmp_path, "a", "--method", "baseline", "--model-ema-decay", "0.5")
    assert train_timm.main(argv) == 0
    warned = [line for line in _warnings(*capsys.readouterr()) if "--model-ema-decay" in line]
    assert len(warned) == 1 and "needs --model-ema" in warned[0] and "ignored" in warned[0], warned


def test_model_ema_decay_with_model_ema_does_not_warn(tiny_folder, tmp_path, capsys):
    argv = tiny_args(
        tiny_folder, tmp_path, "a", "--method", "baseline", "--model-ema", "--model-ema-decay", "0.5"
    )
    assert train_timm.main(argv) == 0
    out, err = capsys.readouterr()
    assert "--model-ema-decay" not in out + err


def test_unused_flags_lists_model_ema_decay_with_the_others():
    args = train_timm.parse_args(
        ["--method", "baseline", "--cutout-ratio", "0.3", "--model-ema-decay", "0.5"]
    )
    assert train_timm.unused_flags(args) == ["--cutout-ratio", "--model-ema-decay"]
