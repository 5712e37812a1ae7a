"""salfmix_transforms.engine: the same run scenarios over both training scripts (issue 20, item 1).

``train_timm.py`` and ``train_seg.py`` share one engine (run folder, resume, schedule, epoch loop, results,
error handling); every scenario here runs on both, with a tiny data set each: a resume after a normal stop,
a resume after ``kill -9`` in the middle of an epoch, a longer ``--epochs`` on resume (the schedule is
rebuilt), another ``--method`` on resume (refused with one line).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from _train_helpers import read_summary, tiny_args

import train_seg
import train_timm
from salfmix_transforms import engine, saliency_sources, segmentation

ROOT = Path(__file__).resolve().parents[1]
SEG_TINY = ["--limit-train", "16", "--limit-val", "8", "-b", "8", "--no-progress"]


class Script:
    """One training script and the command line of a tiny run of it."""

    def __init__(self, module, data: Path | None) -> None:
        self.module, self.data = module, data
        self.prog = module.TASK.prog
        self.lr = module.DEFAULTS["lr"]

    def argv(self, out: Path, name: str, *extra: str) -> list[str]:
        common = ["--threads", "1", "--method", "baseline", *extra]
        if self.module is train_timm:
            return tiny_args(self.data, out, name, *common)
        return [*SEG_TINY, "--output", str(out), "--experiment", name, *common]

    def main(self, argv: list[str]) -> int:
        return self.module.main(argv)


@pytest.fixture(params=["train_timm", "train_seg"])
def script(request, tiny_folder) -> Script:
    if request.param == "train_timm":
        return Script(train_timm, tiny_folder)
    return Script(train_seg, None)


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def _one_line_error(capsys, prog: str, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: error:") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_both_tasks_rank_their_metric_in_its_direction():
    assert (train_timm.TASK.metric, train_timm.TASK.higher_is_better) == ("top1_err", False)
    assert (train_seg.TASK.metric, train_seg.TASK.higher_is_better) == ("miou", True)
    for task in (train_timm.TASK, train_seg.TASK):
        assert isinstance(task, engine.Task) and set(engine.SCHEDULE_FLAGS) <= set(task.run_flags)


@pytest.mark.slow
def test_resume_after_a_normal_stop_extends_the_schedule(script, tmp_path, capsys):
    """A 1-epoch cosine run resumed with --epochs 2 (flags not given are the checkpoint's) continues on the
    2-epoch cosine from epoch 1; resumed again with the same total, nothing is trained (exit code 0)."""
    assert script.main(script.argv(tmp_path, "a", "--epochs", "1")) == 0
    folder = tmp_path / "a"
    argv = ["--resume", str(folder), "--epochs", "2", "--no-progress", "--threads", "1"]
    assert script.main(argv) == 0
    assert [r["epoch"] for r in read_summary(folder)] == ["0", "1"]
    lrs = [float(r["lr"]) for r in read_summary(folder)]
    assert lrs == pytest.approx([script.lr, script.lr * (1 + math.cos(math.pi / 2)) / 2])
    results = _results(folder)
    assert (results["start_epoch"], results["epochs"], results["method"]) == (1, 2, "baseline")
    assert results["best_epoch"] in (0, 1)
    ckpt = torch.load(folder / "last.pth.tar", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["train_state"]["num_updates"] == 2 * 2  # 16 images, batch 8
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert script.main(argv) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_another_method_on_resume_is_one_line(script, tmp_path, capsys):
    assert script.main(script.argv(tmp_path, "a", "--epochs", "1")) == 0
    capsys.readouterr()
    resume = ["--resume", str(tmp_path / "a" / "last.pth.tar"), "--epochs", "2"]
    argv = [a for a in script.argv(tmp_path, "b", *resume) if a != "baseline"]
    argv[argv.index("--method") + 1 : argv.index("--method") + 1] = ["cutmix"]
    assert script.main(argv) == 2
    _one_line_error(capsys, script.prog, "--method baseline", "cutmix", "resume with --method baseline")
    assert not (tmp_path / "b").exists()
    assert script.main([*resume, "--opt", "lamb", "--method", "baseline"]) == 2
    _one_line_error(capsys, script.prog, "--opt", "lamb")


def test_resume_with_other_run_flags_says_which(script, tmp_path, caplog):
    """Flags given on --resume that differ from the checkpoint's (other than the lr schedule's, which rebuild
    the schedule and say so) make another run than the uninterrupted one: one warning names each."""
    assert script.main(script.argv(tmp_path, "a", "--epochs", "1", "--weight-decay", "0.001")) == 0
    folder = tmp_path / "a"
    common = ["--resume", str(folder), "--no-progress", "--threads", "1"]
    with caplog.at_level("WARNING"):
        assert script.main([*common, "--epochs", "2"]) == 0
    assert "differ from the checkpoint" not in caplog.text  # --epochs alone: the schedule's own message
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert script.main([*common, "--epochs", "3", "-b", "4", "--weight-decay", "0.01"]) == 0
    (line,) = [r.getMessage() for r in caplog.records if "differ from the checkpoint" in r.getMessage()]
    assert "--weight-decay 0.001 -> 0.01" in line and "-> 4" in line and "--epochs" not in line


def test_resume_applies_the_optimizer_flags_it_is_given(script, tmp_path):
    """timm's resume loads the checkpoint's optimizer state with its hyper-parameters: the flags given on
    --resume (--weight-decay, --momentum) must still be the ones the optimizer runs with and saves."""
    assert script.main(script.argv(tmp_path, "a", "--epochs", "1", "--opt", "sgd")) == 0
    folder = tmp_path / "a"
    common = ["--resume", str(folder), "--no-progress", "--threads", "1", "--epochs", "2"]
    assert script.main([*common, "--weight-decay", "0.01", "--momentum", "0.5"]) == 0
    groups = torch.load(folder / "last.pth.tar", map_location="cpu", weights_only=False)["optimizer"]
    groups = groups["param_groups"]
    assert {g["weight_decay"] for g in groups} == {0.0, 0.01}  # timm: no decay on biases and norms
    assert {g["momentum"] for g in groups} == {0.5}


def test_resume_keeps_the_precision_flags_it_is_given_and_says_when_they_differ(script, tmp_path, caplog):
    """--amp, --channels-last, --torchcompile belong to the machine (there is no --no-amp): a resume does not
    take them from the checkpoint, but says when they differ from it (another numeric path)."""
    assert script.main(script.argv(tmp_path, "a", "--epochs", "1", "--amp", "--channels-last")) == 0
    argv = ["--resume", str(tmp_path / "a"), "--epochs", "2", "--no-progress", "--threads", "1"]
    args = script.module.parse_args(argv)
    assert (args.amp, args.amp_dtype, args.channels_last, args.torchcompile) == (False, None, False, None)
    with caplog.at_level("WARNING"):
        assert script.main(argv) == 0
    (line,) = [r.getMessage() for r in caplog.records if "differ from the checkpoint" in r.getMessage()]
    assert "--amp True -> False" in line and "--channels-last True -> False" in line


def test_resume_keeps_the_optimizers_own_state_in_its_param_groups(tmp_path):
    """Lookahead keeps its step counter in each param group: a resume must not reset it to a fresh
    optimizer's 0 while it puts the flags' --weight-decay / --momentum back."""
    argv = ["--limit-train", "16", "--limit-val", "8", "-b", "8", "--no-progress", "--threads", "1"]
    argv += ["--method", "baseline", "--opt", "lookahead_sgd", "--output", str(tmp_path), "--experiment", "a"]
    assert train_seg.main([*argv, "--epochs", "1"]) == 0
    steps = torch.load(tmp_path / "a" / "last.pth.tar", map_location="cpu", weights_only=False)
    steps = {g["lookahead_step"] for g in steps["optimizer"]["param_groups"]}
    assert steps == {2}  # 16 images, batch 8
    resume = ["--resume", str(tmp_path / "a"), "--epochs", "2", "--no-progress", "--threads", "1"]
    assert train_seg.main([*resume, "--momentum", "0.5"]) == 0
    groups = torch.load(tmp_path / "a" / "last.pth.tar", map_location="cpu", weights_only=False)
    groups = groups["optimizer"]["param_groups"]
    assert {g["lookahead_step"] for g in groups} == {4} and {g["momentum"] for g in groups} == {0.5}


def test_resume_warning_sees_flags_saved_as_none_and_not_paths_spelled_otherwise(script, tmp_path, caplog):
    assert script.main(script.argv(tmp_path, "a", "--epochs", "1", "--method", "salfmix")) == 0
    saved = torch.load(tmp_path / "a" / "last.pth.tar", map_location="cpu", weights_only=False)["args"]
    assert saved.saliency_mode is None or saved.salfmix_warmup_epochs is None
    common = ["--resume", str(tmp_path / "a"), "--no-progress", "--threads", "1"]
    flag = "--saliency-mode" if saved.saliency_mode is None else "--salfmix-warmup-epochs"
    value = "eval" if flag == "--saliency-mode" else "0"
    with caplog.at_level("WARNING"):
        assert script.main([*common, "--epochs", "2", flag, value]) == 0
    assert f"{flag} None -> {value}" in caplog.text
    if script.module is train_timm:
        caplog.clear()
        spelled = os.path.join(os.path.relpath(str(script.data)), "")  # relative, trailing separator
        with caplog.at_level("WARNING"):
            assert script.main([*common, "--epochs", "3", "--data-dir", spelled]) == 0
        assert "differ from the checkpoint" not in caplog.text


def test_resume_that_switches_weight_decay_on_or_off_is_one_line(script, tmp_path, capsys):
    """timm's optimizer factory puts biases and norms in a group of their own only when the weight decay is
    not 0, so such a resume cannot load the optimizer's state: refused by name, not as "does not fit"."""
    assert script.main(script.argv(tmp_path, "a", "--epochs", "1", "--weight-decay", "0")) == 0
    capsys.readouterr()
    resume = ["--resume", str(tmp_path / "a"), "--epochs", "2", "--no-progress", "--threads", "1"]
    assert script.main([*resume, "--weight-decay", "0.01"]) == 2
    _one_line_error(capsys, script.prog, "--weight-decay 0", "0.01")


@pytest.mark.slow
def test_resume_after_kill_9_in_the_middle_of_an_epoch(script, tmp_path):
    """SIGKILL after the first checkpoint: the run resumes from its newest intact checkpoint, and the
    summary and results go on from there as one run (every epoch once, in order)."""
    epochs = 30 if script.module is train_timm else 4
    argv = script.argv(tmp_path, "k", "--epochs", str(epochs), "--sched", "constant")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / script.prog), *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    last = tmp_path / "k" / "last.pth.tar"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    done = torch.load(last, map_location="cpu", weights_only=False)["epoch"] + 1
    assert 1 <= done < epochs, "killed after its first checkpoint, before its last epoch"
    assert script.main(["--resume", str(tmp_path / "k"), "--no-progress", "--threads", "1"]) == 0
    assert [int(r["epoch"]) for r in read_summary(tmp_path / "k")] == list(range(epochs))
    results = _results(tmp_path / "k")
    assert (results["start_epoch"], results["epochs"]) == (done, epochs)
    assert 0 <= results["best_epoch"] < epochs


# -- the training loop waits for the device once an epoch, not once a step (issue 22, item 2) ---------------

#: Tensor methods that make the host wait for the device (a CUDA tensor's value read on the host).
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")
#: The loop's own code: the engine, the scripts' losses, targets and metrics, the cached saliency's read
#: and write.
#: (The transforms are checked on their own in test_host_sync.py.)
LOOP_FILES = {
    os.path.abspath(m.__file__) for m in (engine, saliency_sources, segmentation, train_timm, train_seg)
}
SOURCES = {
    "baseline": ("--method", "baseline"),
    "salfmix-exact": ("--method", "salfmix", "--salfmix-warmup-epochs", "0"),
    "salfmix-cached": ("--method", "salfmix", "--salfmix-warmup-epochs", "0", "--saliency-source", "cached"),
}


def _host_waits_in_one_epoch(
    monkeypatch, script: Script, argv: list[str], loop=(engine, "train_epoch")
) -> Counter:
    """What the loop's own code (:data:`LOOP_FILES`) does during ``loop`` (module, function: the training
    epoch, or a script's validation) that would make the host wait for a CUDA device: each
    :data:`HOST_READS` call on a tensor, each ``engine.sync``."""
    waits: Counter = Counter()
    inside = [False]

    def counted(name, original):
        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if inside[0] and os.path.abspath(caller) in LOOP_FILES:
                waits[f"{Path(caller).name}: Tensor.{name}"] += 1
            return original(self, *args, **kwargs)

        return read

    module, function = loop
    original = getattr(module, function)

    def one_epoch(*args, **kwargs):
        inside[0] = True
        try:
            return original(*args, **kwargs)
        finally:
            inside[0] = False

    with monkeypatch.context() as patch:  # undone after the run: the next run wraps the originals again
        for name in HOST_READS:
            patch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
        patch.setattr(engine, "sync", lambda device: inside[0] and waits.update(["engine.sync"]))
        patch.setattr(module, function, one_epoch)
        assert script.main(argv) == 0
    return waits


@pytest.mark.parametrize("source", SOURCES)
def test_an_epoch_waits_for_the_device_as_often_whatever_its_length(script, source, tmp_path, monkeypatch):
    """No host synchronisation a step: the loss check, the loss sum and the augmentation's timing wait for the
    device once an epoch (and at the log lines), so an epoch of 8 batches waits as often as one of 2."""
    extra = (
        ("--epochs", "1", "--log-interval", "1000", "--limit-train", "16")
        if script.module is train_seg
        else ()
    )
    argv = {
        batches: script.argv(tmp_path, f"n{batches}", *SOURCES[source], *extra, "-b", str(16 // batches))
        for batches in (2, 8)
    }  # 16 training samples
    two, eight = (_host_waits_in_one_epoch(monkeypatch, script, argv[n]) for n in (2, 8))
    assert eight == two, f"host waits in an epoch of 2 batches: {dict(two)}, of 8 batches: {dict(eight)}"


def test_the_span_clock_sums_its_spans_on_the_host(monkeypatch):
    ticks = iter([10.0, 10.5, 20.0, 20.25])
    monkeypatch.setattr(engine.time, "perf_counter", lambda: next(ticks))
    clock = engine.SpanClock(torch.device("cpu"))
    for _ in range(2):
        with clock.span():
            pass
    assert clock.seconds() == 0.75


def test_a_validation_pass_waits_for_the_device_as_often_whatever_its_length(script, tmp_path, monkeypatch):
    """The validation sums (loss, labelled pixels or correct predictions) stay on the device until the pass
    ends: 4 batches wait as often as 1. (The confusion matrix's own ops are checked on meta tensors in
    test_segmentation_metrics.py: boolean indexing and bincount do not call a counted Tensor method.)"""
    val = ("--limit-val", "8") if script.module is train_seg else ()
    argv = {
        n: script.argv(tmp_path, f"v{n}", *val, "-b", str(8 // n)) for n in (1, 4)
    }  # 8 validation samples
    one, four = (
        _host_waits_in_one_epoch(monkeypatch, script, argv[n], (script.module, "validate")) for n in (1, 4)
    )
    assert four == one, f"host waits in a validation of 1 batch: {dict(one)}, of 4 batches: {dict(four)}"
