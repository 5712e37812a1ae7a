"""``repr(t)`` is the constructor call: ``eval(repr(t))`` rebuilds an equal transform for every registry
method (same class, same repr, same outputs for the same seed), and names only constructor arguments."""

from __future__ import annotations

import pytest
import torch

import salfmix_transforms
from salfmix_transforms import methods, mixing
from salfmix_transforms._base import constructor_parameters

NAMESPACE = {**vars(salfmix_transforms), **vars(mixing)}
K = 5


def _outputs(t, seed: int):
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6) % K
    saliency = torch.rand(6, 16, 16, generator=torch.Generator().manual_seed(1))
    return t(x, y, saliency=saliency, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", [n for n in methods.METHODS if n != "baseline"])
@pytest.mark.parametrize("overrides", [{}, {"warmup_epochs": 0}])
def test_eval_repr_rebuilds_an_equal_transform(name, overrides):
    spec = methods.spec(name)
    if spec.two_image and not spec.self_mixing:
        overrides = {**overrides, "mode": "elem", "prob": 0.75}
    t = methods.build(name, K, **overrides)
    rebuilt = eval(repr(t), NAMESPACE)
    assert type(rebuilt) is type(t) and repr(rebuilt) == repr(t)
    for seed in (0, 1):
        (a, ya), (b, yb) = _outputs(t, seed), _outputs(rebuilt, seed)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n in methods.METHODS if n != "baseline"])
def test_repr_names_only_constructor_arguments(name):
    t = methods.build(name, K)
    params = constructor_parameters(type(t))
    text = repr(t)
    inner = text[len(type(t).__name__) + 1 : -1]
    names = [field.split("=")[0] for field in inner.split(", ") if "=" in field and field[0].isalpha()]
    assert set(names) <= set(params), (text, params)
    assert "num_classes=5" in text and len(text) < 200


def test_repr_examples():
    assert repr(mixing.CutMix(cutmix_alpha=0.5, num_classes=10)) == "CutMix(cutmix_alpha=0.5, num_classes=10)"
    assert repr(salfmix_transforms.HybridMix(prob=0.5)) == "HybridMix(prob=0.5)"
    assert repr(salfmix_transforms.HybridMix.v3(num_classes=10)) == (
        "HybridMix(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=10)"
    )
    frame = mixing.TwoImageMix([mixing.MixupMethod(0.4)], num_classes=3)
    assert repr(frame) == "TwoImageMix(methods=[MixupMethod(alpha=0.4)], weights=[1.0], num_classes=3)"
    assert type(eval(repr(frame), NAMESPACE)) is mixing.TwoImageMix


def test_hybridmix_composes_without_forwarding():
    hybrid = salfmix_transforms.HybridMix.v3(num_classes=K, steps_per_epoch=2)
    # Its own warm-up counter; its steps are the public SalfMix and the two-image frame.
    assert hybrid.epoch_counter is hybrid.counter and hybrid.salfmix.warmup_epochs == 0
    assert isinstance(hybrid.mix, mixing.TwoImageMix)
    for name in ("warmup_epochs", "steps_per_epoch", "epoch", "epoch_counter", "model", "set_epoch"):
        assert name not in vars(salfmix_transforms.HybridMix), name  # nothing forwarded to SalfMix
