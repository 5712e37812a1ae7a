"""timm drop-in (docs/timm.md): the package inside timm's own ``train.py``.

* Route A (``mixup_fn``): timm's ``mixup_args`` built as ``train.py`` builds them, ``HybridMix.v3`` in place
  of ``Mixup``, and ``train.py``'s only call, ``mixup_fn(input, target)``: the warm-up ends by itself and
  every later call runs exactly one saliency pass, which leaves the model as it was.
* ``Mixup(**mixup_args)`` / ``CutMix(**mixup_args)`` equal ``timm.data.Mixup(**mixup_args)`` bit for bit.
* Route B (``SalfMixTask``): timm's ``ClassificationTask`` contract, the criterion, eval, autocast,
  channels_last, DDP and ``torch.compile`` wrappers, the warm-up in timm's checkpoints.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm import loss as timm_loss
from timm.data import create_loader
from timm.data import mixup as timm_mixup
from timm.loss import BinaryCrossEntropy, JsdCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.task import ClassificationTask
from torch import nn

from salfmix_transforms import mixing
from salfmix_transforms import saliency as saliency_module
from salfmix_transforms.hybrid import HybridMix
from salfmix_transforms.mixing import (
    CutMix,
    CutMixMethod,
    Mixup,
    ResizeMix,
    SaliencyMix,
)
from salfmix_transforms.salfmix import SalfMix
from salfmix_transforms.timm_task import SalfMixTask, SoftTargetCriterion, trainable_model

K = 5  # classes


# -- timm's train.py, the parts that matter here ------------------------------------------------------------


def train_py_mixup_args(argv: list[str], num_classes: int = K) -> dict:
    """``mixup_args`` exactly as timm's ``train.py`` (commit aa4b585) builds them from its command line.

    The options, types and defaults are ``train.py``'s (argument group "Mixup parameters" and
    ``--smoothing``); the dict and the ``mixup_active`` test are ``main()``'s. An empty dict means timm builds
    no mixup at all.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--mixup", type=float, default=0.0)
    parser.add_argument("--cutmix", type=float, default=0.0)
    parser.add_argument("--cutmix-minmax", type=float, nargs="+", default=None)
    parser.add_argument("--mixup-prob", type=float, default=1.0)
    parser.add_argument("--mixup-switch-prob", type=float, default=0.5)
    parser.add_argument("--mixup-mode", type=str, default="batch")
    parser.add_argument("--smoothing", type=float, default=0.1)
    args = parser.parse_args(argv)
    args.num_classes = num_classes
    mixup_args = {}
    mixup_active = args.mixup > 0 or args.cutmix > 0.0 or args.cutmix_minmax is not None
    if mixup_active:
        mixup_args = dict(
            mixup_alpha=args.mixup,
            cutmix_alpha=args.cutmix,
            cutmix_minmax=args.cutmix_minmax,
            prob=args.mixup_prob,
            switch_prob=args.mixup_switch_prob,
            mode=args.mixup_mode,
            label_smoothing=args.smoothing,
            num_classes=args.num_classes,
        )
    return mixup_args


def train_py_default_loss() -> nn.Module:
    """``train_loss_fn`` of ``train.py`` with its default flags (no mixup, ``--smoothing 0.1``)."""
    return LabelSmoothingCrossEntropy(smoothing=0.1)


# -- a tiny network and a forward counter -------------------------------------------------------------------


class TinyNet(nn.Module):
    """Two conv layers with BatchNorm, global pooling, a linear head: logits (B, K)."""

    def __init__(self, num_classes: int = K) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ForwardLog:
    """Counts the forwards of a module and keeps the input of the last one."""

    def __init__(self, module: nn.Module) -> None:
        self.count = 0
        self.last_input: torch.Tensor | None = None
        module.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple) -> None:
        self.count += 1
        self.last_input = args[0].detach().clone(memory_format=torch.preserve_format)


def _model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().train()


def _batch(b: int = 4, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.randint(0, K, (b,), generator=g)


def _snapshot(model: nn.Module) -> dict:
    return {
        "flags": [m.training for m in model.modules()],
        "buffers": {k: v.clone() for k, v in model.named_buffers()},
        "grads": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
    }


def _assert_same_state(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["flags"] == before["flags"]
    for name, value in before["buffers"].items():
        assert torch.equal(after["buffers"][name], value), name
    for name, grad in before["grads"].items():
        assert (after["grads"][name] is None) == (grad is None), name
        if grad is not None:
            assert torch.equal(after["grads"][name], grad), name


# -- route A: mixup_fn in train.py -------------------------------------------------------------------------


def test_train_py_builds_these_mixup_args_from_cutmix_flag():
    assert train_py_mixup_args([]) == {}  # no --mixup / --cutmix: timm builds no mixup_fn at all
    assert train_py_mixup_args(["--cutmix", "1.0"]) == {
        "mixup_alpha": 0.0,
        "cutmix_alpha": 1.0,
        "cutmix_minmax": None,
        "prob": 1.0,
        "switch_prob": 0.5,
        "mode": "batch",
        "label_smoothing": 0.1,
        "num_classes": K,
    }


def test_train_py_loop_warms_up_then_one_saliency_pass_per_call():
    steps = 4
    mixup_args = train_py_mixup_args(["--cutmix", "1.0"])
    model = _model()
    # train.py's state between two mixup_fn calls: training mode, BN statistics, maybe accumulated grads
    with torch.no_grad():
        model(torch.rand(4, 3, 8, 8))
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    mixup_fn = HybridMix.v3(**mixup_args, model=model, steps_per_epoch=steps)
    assert [type(m) for m in mixup_fn.mix.methods] == [CutMixMethod] and mixup_fn.label_smoothing == 0.1
    log = ForwardLog(model)
    before = _snapshot(model)
    extra = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loop is configured right: no warning at all
        for epoch in range(3):
            for step in range(steps):
                x, y = _batch(seed=10 * epoch + step)
                count = log.count
                out, target = mixup_fn(x, y)  # train.py's only call
                extra.append(log.count - count)
                assert out.shape == x.shape and target.shape == (4, K)
                torch.testing.assert_close(target.sum(1), torch.ones(4))
                assert float(target.min()) >= 0.1 / K - 1e-7  # --smoothing 0.1 went into the targets
    assert extra == [0] * steps + [1] * (2 * steps)
    assert mixup_fn.epoch == 3
    _assert_same_state(model, before)


def test_train_py_loop_without_steps_per_epoch_warns_once_and_never_ends_warmup():
    mixup_args = train_py_mixup_args(["--cutmix", "1.0"])
    model = _model()
    mixup_fn = HybridMix.v3(**mixup_args, model=model)
    log = ForwardLog(model)
    x, y = _batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # count the warnings issued, not those the filter lets through
        for _ in range(12):
            mixup_fn(x, y)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1, messages
    assert "nothing ends the warm-up" in messages[0]
    assert log.count == 0  # SalfMix never ran: the warm-up never ended


def test_train_py_loop_without_model_warns_in_warmup_then_raises():
    steps = 3
    mixup_fn = HybridMix.v3(**train_py_mixup_args(["--cutmix", "1.0"]), steps_per_epoch=steps)
    x, y = _batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(steps):
            mixup_fn(x, y)  # warm-up: CutMix only, no model needed yet
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "no model" in messages[0], messages
    with pytest.raises(ValueError, match="model must be given"):
        mixup_fn(x, y)


class _ImageSet(torch.utils.data.Dataset):
    """A map-style data set with the ``transform`` attribute that timm's ``create_loader`` sets."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.transform = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.new("RGB", (8, 8))), index % K


def test_steps_per_epoch_expression_of_the_docs_is_len_of_timms_train_loader():
    # docs/timm.md, route A: steps_per_epoch=-(-len(dataset_train) // args.world_size) // args.batch_size
    def expression(n, world, batch):
        return -(-n // world) // batch

    dataset = _ImageSet(45)
    loader = create_loader(
        dataset, input_size=(3, 8, 8), batch_size=8, is_training=True, use_prefetcher=False
    )
    assert len(loader) == expression(45, 1, 8) == 5
    # distributed: timm's training loader is a DistributedSampler with drop_last=True
    for n, world, batch in [(45, 2, 8), (47, 3, 4), (40, 2, 8), (7, 4, 2)]:
        sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world, rank=world - 1)
        dist_loader = torch.utils.data.DataLoader(range(n), batch_size=batch, sampler=sampler, drop_last=True)
        assert len(dist_loader) == expression(n, world, batch), (n, world, batch)


# -- Mixup / CutMix(**mixup_args) equal timm's Mixup -------------------------------------------------------


class _Queue:
    """Fixed values, handed out in call order; ``empty`` tells whether all of them were used."""

    def __init__(self, values) -> None:
        self.values = list(values)

    def pop(self):
        return self.values.pop(0)

    @property
    def empty(self) -> bool:
        return not self.values


def _pin_draws(monkeypatch, lam, timm_rand, our_rand, cy=3, cx=11):
    """Pin timm's numpy draws and ours to the same ``lam`` and box centre.

    ``timm_rand`` / ``our_rand`` are the uniforms of the apply test and of the Mixup/CutMix switch (each side
    maps a uniform to the choice its own way: timm picks CutMix when ``U < switch_prob``, we when
    ``U >= 1 - switch_prob``).
    """
    timm_uniforms, our_uniforms, centres = _Queue(timm_rand), _Queue(our_rand), _Queue([cy, cx])
    monkeypatch.setattr(np.random, "beta", lambda a, b, size=None: lam)
    monkeypatch.setattr(np.random, "rand", lambda *size: timm_uniforms.pop())
    monkeypatch.setattr(np.random, "randint", lambda low, high=None, size=None: centres.pop())
    monkeypatch.setattr(
        mixing, "sample_beta", lambda alpha, count, g, device: torch.full((count,), lam, dtype=torch.float64)
    )
    monkeypatch.setattr(
        mixing,
        "sample_box_centres",
        lambda h, w, count, g, device: (torch.full((count,), cy), torch.full((count,), cx)),
    )
    monkeypatch.setattr(
        mixing,
        "rand",
        lambda shape, g, device="cpu": torch.full(shape, float(our_uniforms.pop()), device=device),
    )
    return timm_uniforms, our_uniforms


# (argv, timm's uniforms, ours, what is picked); our first uniform is the apply draw (< prob = 1 always).
TIMM_CASES = {
    "mixup": (["--mixup", "1.0"], [0.0], [0.0], "mixup"),
    "cutmix": (["--cutmix", "1.0"], [0.0], [0.0], "cutmix"),
    "switch-to-cutmix": (["--mixup", "0.8", "--cutmix", "1.0"], [0.0, 0.2], [0.0, 0.9], "cutmix"),
    "switch-to-mixup": (["--mixup", "0.8", "--cutmix", "1.0"], [0.0, 0.7], [0.0, 0.1], "mixup"),
}


@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_mixup_of_mixup_args_equals_timm_bit_for_bit(monkeypatch, case):
    argv, timm_rand, our_rand, picked = TIMM_CASES[case]
    mixup_args = train_py_mixup_args(argv)
    lam = 0.62
    timm_left, ours_left = _pin_draws(monkeypatch, lam, timm_rand, our_rand)
    g = torch.Generator().manual_seed(1)
    x, target = torch.rand(6, 3, 16, 20, generator=g), torch.tensor([1, 0, 4, 2, 2, 3])
    ref_x, ref_t = timm_mixup.Mixup(**mixup_args)(x.clone(), target)
    out, soft = Mixup(**mixup_args)(x, target)
    assert timm_left.empty and ours_left.empty  # both drew exactly the pinned values
    assert torch.equal(out, ref_x) and torch.equal(soft, ref_t)
    changed = (out != x).any(dim=1)
    if picked == "cutmix":  # a box: pixels outside it are untouched
        assert not changed.all() and changed.any()
    else:  # a blend: every pixel changes
        assert changed.all()


def test_cutmix_of_mixup_args_equals_timm_bit_for_bit(monkeypatch):
    mixup_args = train_py_mixup_args(["--cutmix", "1.0"])
    _pin_draws(monkeypatch, 0.62, [0.0], [0.0])
    g = torch.Generator().manual_seed(2)
    x, target = torch.rand(6, 3, 16, 20, generator=g), torch.tensor([1, 0, 4, 2, 2, 3])
    ref_x, ref_t = timm_mixup.Mixup(**mixup_args)(x.clone(), target)
    out, soft = CutMix(**mixup_args)(x, target)
    assert torch.equal(out, ref_x) and torch.equal(soft, ref_t)


def test_cutmix_of_mixup_args_with_mixup_alpha_raises():
    with pytest.raises(ValueError, match="mixup_alpha"):
        CutMix(**train_py_mixup_args(["--mixup", "0.8", "--cutmix", "1.0"]))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Mixup(**train_py_mixup_args(["--mixup", "0.8", "--cutmix", "1.0"])),
        lambda: CutMix(**train_py_mixup_args(["--cutmix", "1.0"])),
        lambda: SaliencyMix(num_classes=K, label_smoothing=0.1),
        lambda: ResizeMix(num_classes=K, label_smoothing=0.1),
    ],
    ids=["Mixup", "CutMix", "SaliencyMix", "ResizeMix"],
)
def test_mixup_enabled_false_returns_the_images_and_smoothed_one_hot(make):
    transform = make()
    transform.mixup_enabled = False  # what train.py does from --mixup-off-epoch on
    x, target = _batch(6, 16, seed=3)
    out, soft = transform(x, target)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()  # equal values, a new tensor
    expected = torch.full((6, K), 0.1 / K).scatter_(1, target.view(-1, 1), 1 - 0.1 + 0.1 / K)
    assert torch.equal(soft, expected)
    if isinstance(transform, Mixup):  # timm's own Mixup returns the same values
        timm_transform = timm_mixup.Mixup(**train_py_mixup_args(["--mixup", "0.8", "--cutmix", "1.0"]))
        timm_transform.mixup_enabled = False
        ref_x, ref_t = timm_transform(x.clone(), target)
        assert torch.equal(out, ref_x) and torch.equal(soft, ref_t)


# -- route B: SalfMixTask, timm's ClassificationTask contract ---------------------------------------------


class SpyTransform:
    """Calls ``inner`` and records the model, the autocast state and the result of every call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[dict] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, x, target, *, model=None, **kwargs):
        out = self.inner(x, target, model=model, **kwargs)
        self.calls.append({"model": model, "autocast": torch.is_autocast_enabled("cpu"), "out": out})
        return out


@pytest.fixture
def saliency_models(monkeypatch):
    """The models that the saliency pass (``gradient_saliency``) is called with."""
    seen: list[nn.Module] = []
    original = saliency_module.gradient_saliency

    def spy(model, x, target, **kwargs):
        seen.append(model)
        return original(model, x, target, **kwargs)

    monkeypatch.setattr(saliency_module, "gradient_saliency", spy)
    return seen


def _task(
    model, steps=2, criterion="default", autocast_transform=True, **kwargs
) -> tuple[SalfMixTask, SpyTransform]:
    """A task around ``HybridMix.v3(num_classes=K, steps_per_epoch=steps, **kwargs)`` (spied)."""
    transform = SpyTransform(HybridMix.v3(num_classes=K, steps_per_epoch=steps, **kwargs))
    criterion = SoftTargetCrossEntropy() if criterion == "default" else criterion
    task = SalfMixTask(
        transform, model=model, criterion=criterion, verbose=False, autocast_transform=autocast_transform
    )
    return task, transform


def test_task_keeps_timms_classification_task_contract(saliency_models):
    model = _model()
    task, transform = _task(model)
    assert isinstance(task, ClassificationTask)
    assert task.get_trainable_module() is model and task.get_eval_model() is model
    log = ForwardLog(model)
    forwards = []
    for step in range(4):
        x, y = _batch(seed=step)
        count = log.count
        result = task(x, y)
        forwards.append(log.count - count)
        mixed_x, mixed_t = transform.calls[-1]["out"]
        assert set(result) >= {"loss", "output"} and result["output"].shape == (4, K)
        assert torch.equal(log.last_input, mixed_x)  # the model was trained on the transformed batch
        torch.testing.assert_close(result["loss"], SoftTargetCrossEntropy()(result["output"], mixed_t))
        model.zero_grad()
        result["loss"].backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert forwards == [1, 1, 2, 2]  # warm-up (one epoch of 2 steps), then the saliency pass
    assert [c["model"] for c in transform.calls] == [model] * 4
    assert saliency_models == [model, model]
    assert task.epoch == 2


def test_task_runs_the_one_line_change_with_timms_default_flags():
    # train.py with its defaults: no --mixup/--cutmix, --smoothing 0.1 -> LabelSmoothingCrossEntropy
    model = _model()
    task = SalfMixTask(
        HybridMix.v3(num_classes=K, steps_per_epoch=1),
        model=model,
        criterion=train_py_default_loss(),
        device=torch.device("cpu"),
        dtype=None,
        verbose=False,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        x, y = _batch(seed=step)
        loss = task(x, y)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)


def test_label_smoothing_criterion_becomes_the_same_loss_on_soft_targets():
    model = _model()
    task, _ = _task(model, criterion=LabelSmoothingCrossEntropy(smoothing=0.1))
    assert isinstance(task.criterion, SoftTargetCriterion) and task.criterion.smoothing == 0.1
    assert isinstance(task.criterion.criterion, SoftTargetCrossEntropy)
    logits, y = torch.randn(4, K, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 3, 1, 4])
    # class indices: exactly timm's LabelSmoothingCrossEntropy
    torch.testing.assert_close(task.criterion(logits, y), LabelSmoothingCrossEntropy(0.1)(logits, y))
    # soft targets, which LabelSmoothingCrossEntropy cannot take: (1 - s) * CE(t) + s * mean(-log p)
    soft = torch.softmax(torch.randn(4, K, generator=torch.Generator().manual_seed(1)), dim=1)
    with pytest.raises(RuntimeError):
        LabelSmoothingCrossEntropy(0.1)(logits, soft)
    logp = F.log_softmax(logits, dim=1)
    expected = (0.9 * (-soft * logp).sum(1) + 0.1 * (-logp).mean(1)).mean()
    torch.testing.assert_close(task.criterion(logits, soft), expected)


def test_criterion_choices():
    model = _model()
    default = SalfMixTask(HybridMix.v3(num_classes=K), model=model, verbose=False)
    assert isinstance(default.criterion.criterion, SoftTargetCrossEntropy)
    assert default.criterion.smoothing == 0
    cross_entropy = nn.CrossEntropyLoss()
    assert _task(model, criterion=cross_entropy)[0].criterion.criterion is cross_entropy
    bce = BinaryCrossEntropy(smoothing=0.1)  # --bce-loss: timm smooths class indices only
    task = _task(model, criterion=bce)[0]
    assert task.criterion.criterion is bce and task.criterion.smoothing == 0.1
    logits, y = torch.randn(4, K, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 3, 1, 4])
    torch.testing.assert_close(task.criterion(logits, y), bce(logits, y))
    with pytest.raises(TypeError, match="JsdCrossEntropy"):
        _task(model, criterion=JsdCrossEntropy(num_splits=3))
    with pytest.raises(ValueError, match="smoothed twice"):
        _task(model, criterion=LabelSmoothingCrossEntropy(0.1), label_smoothing=0.1)
    assert _task(model, criterion=None, label_smoothing=0.1)[0].criterion.smoothing == 0  # smoothed once
    with pytest.raises(TypeError, match="transform"):
        SalfMixTask("cutmix", model=model)
    if hasattr(timm_loss, "create_classification_loss"):  # timm's loss factory (1.0.31)
        task = SalfMixTask(HybridMix.v3(num_classes=K), model=model, criterion_kwargs={"smoothing": 0.1})
        assert isinstance(task.criterion.criterion, SoftTargetCrossEntropy)
        assert task.criterion.smoothing == 0.1
        with pytest.raises(ValueError, match="not both"):
            SalfMixTask(HybridMix.v3(), model=model, criterion=bce, criterion_kwargs={"smoothing": 0.1})


def test_eval_mode_does_not_apply_the_transform():
    model = _model()
    task, transform = _task(model, steps=1, criterion=LabelSmoothingCrossEntropy(0.1))
    task.set_epoch(1)  # past the warm-up
    log = ForwardLog(model)
    x, y = _batch()
    # task.eval(), then what timm's validate / train_one_epoch do: model.eval() / model.train()
    for switch_off, switch_on in [(task.eval, task.train), (model.eval, model.train)]:
        epoch = task.epoch
        switch_off()
        with torch.no_grad():
            result = task(x, y)
        assert log.count == 1 and torch.equal(log.last_input, x) and not transform.calls
        torch.testing.assert_close(result["loss"], LabelSmoothingCrossEntropy(0.1)(result["output"], y))
        assert task.epoch == epoch  # eval calls do not count as training steps
        switch_on()
        log.count = 0
        task(x, y)
        assert log.count == 2 and len(transform.calls) == 1
        transform.calls.clear()
        log.count = 0


def test_channels_last_input():
    model = _model().to(memory_format=torch.channels_last)
    task, _ = _task(model, steps=1)
    task.set_epoch(1)
    log = ForwardLog(model)
    x, y = _batch(size=16)
    x = x.contiguous(memory_format=torch.channels_last)
    result = task(x, y)
    assert log.count == 2  # saliency pass + training forward
    assert log.last_input.is_contiguous(memory_format=torch.channels_last)
    result["loss"].backward()
    assert torch.isfinite(result["loss"])


@pytest.mark.parametrize("autocast_transform", [True, False])
def test_autocast(autocast_transform, saliency_models):
    model = _model()
    task, transform = _task(model, steps=1, autocast_transform=autocast_transform)
    task.set_epoch(1)
    x, y = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = task(x, y)
    assert transform.calls[-1]["autocast"] is autocast_transform
    assert len(saliency_models) == 1 and result["output"].dtype == torch.bfloat16
    assert result["loss"].dtype == torch.float32 and torch.isfinite(result["loss"])
    result["loss"].backward()


def test_warmup_epoch_travels_in_timms_checkpoint_state():
    model = _model()
    task, _ = _task(model, steps=2)
    x, y = _batch()
    for _ in range(3):
        task(x, y)
    assert task.epoch == 1
    state = task.get_checkpoint_state()
    assert state["task_state"] == {"salfmix_epoch": 1}
    assert "task_state" not in (task.get_checkpoint_state(ema=True) or {})
    resumed, _ = _task(_model(seed=1), steps=2)
    resumed.load_checkpoint_state(state["state_dict"], state["task_state"])  # what --resume does
    assert resumed.epoch == 1
    assert torch.equal(resumed.trainable_module.head.weight, model.head.weight)
    resumed.set_epoch(0)
    assert resumed.epoch == 0


def test_soft_targets_arriving_warn_once():
    model = _model()
    task, _ = _task(model)
    x, y = _batch()
    soft = F.one_hot(y, K).float()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task(x, soft)
        task(x, soft)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "already mixed" in messages[0]


def test_saliency_pass_skips_the_ddp_wrapper(saliency_models):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("no gloo backend")
    if torch.distributed.is_initialized():
        pytest.skip("a process group is already initialised")
    with tempfile.TemporaryDirectory() as tmp:
        init = Path(tmp, "pg").as_uri()
        torch.distributed.init_process_group("gloo", init_method=init, rank=0, world_size=1)
        try:
            model = _model()
            task, transform = _task(model, steps=1)
            task.prepare_distributed()  # DDP around the model, as train.py does (device_ids: CPU)
            ddp = task.get_trainable_module()
            assert isinstance(ddp, nn.parallel.DistributedDataParallel) and trainable_model(ddp) is model
            ddp_log, model_log = ForwardLog(ddp), ForwardLog(model)
            for step in range(3):  # a confused reducer would raise in the next iteration
                result = task(*_batch(seed=step))
                result["loss"].backward()
            assert ddp_log.count == 3 and model_log.count == 3 + 2  # saliency passes bypass DDP
            assert saliency_models == [model, model]
            assert all(call["model"] is model for call in transform.calls)
        finally:
            torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_saliency_pass_uses_the_plain_module_under_compile(saliency_models):
    model = _model()
    task, _ = _task(model, steps=1)
    compiled = task.compile(backend="eager")
    assert task.get_trainable_module() is compiled and compiled is not model
    assert trainable_model(compiled) is model
    task.set_epoch(1)
    result = task(*_batch())
    result["loss"].backward()
    assert saliency_models == [model]


def test_single_image_transform_in_the_task():
    # any of the package's transforms: SalfMix alone (class indices out without num_classes)
    model = _model()
    task = SalfMixTask(SalfMix(steps_per_epoch=1, warmup_epochs=1), model=model, verbose=False)
    task.set_epoch(1)
    x, y = _batch()
    result = task(x, y)
    torch.testing.assert_close(result["loss"], F.cross_entropy(result["output"], y))
