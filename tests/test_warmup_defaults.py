"""One warm-up default (issue 21, item 14): ``SalfMix(...)`` and ``methods.build("salfmix")`` are the same
transform. Every SalfMix-family constructor (SalfMix, the ablations RandomSelfMix and SaliencyCutout,
HybridMix) skips the paper's first epoch by default (Algorithm 2), ``warmup_epochs=0`` turns it off, and a
``steps_per_epoch`` that can never matter (no warm-up) warns once, at the user's line.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from salfmix_transforms import (
    CutMix,
    Cutout,
    HybridMix,
    Mixup,
    RandomSelfMix,
    SalfMix,
    SaliencyCutout,
    methods,
)

FAMILY = {"salfmix": SalfMix, "salfmix-nosal": RandomSelfMix, "cutout-sal": SaliencyCutout}
PRESETS = {"hybridmix-v1": HybridMix.v1, "hybridmix-v2": HybridMix.v2, "hybridmix-v3": HybridMix.v3}


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 16, 16, generator=g), torch.arange(4), torch.rand(4, 16, 16, generator=g)


@pytest.mark.parametrize("name", [*FAMILY, *PRESETS])
def test_the_constructor_and_the_registry_warm_up_alike(name):
    build = FAMILY.get(name) or PRESETS[name]
    built = build(num_classes=4)
    assert built.warmup_epochs == 1
    assert methods.build(name, 4).warmup_epochs == built.warmup_epochs
    assert build(num_classes=4, warmup_epochs=0).warmup_epochs == 0


@pytest.mark.parametrize("cls", [SalfMix, RandomSelfMix, SaliencyCutout, HybridMix])
def test_the_signature_says_one_warmup_epoch(cls):
    assert inspect.signature(cls).parameters["warmup_epochs"].default == 1, cls


@pytest.mark.parametrize("cls", [SalfMix, RandomSelfMix, SaliencyCutout])
def test_the_default_skips_the_first_epoch_and_warmup_epochs_0_does_not(cls):
    x, y, saliency = _batch()
    default = cls(steps_per_epoch=2)
    outs = [default(x, y, saliency=saliency, generator=torch.Generator().manual_seed(1))[0] for _ in range(3)]
    assert [torch.equal(out, x) for out in outs] == [True, True, False]
    out, _ = cls(warmup_epochs=0)(x, y, saliency=saliency, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(out, x)


def test_the_other_methods_keep_no_warm_up():
    for transform in (Cutout(), Mixup(), CutMix(), *(methods.build(n, 4) for n in ("cutout", "cutmix"))):
        assert transform.warmup_epochs == 0, transform


@pytest.mark.parametrize(
    "build",
    [
        lambda: SalfMix(warmup_epochs=0, steps_per_epoch=5),
        lambda: RandomSelfMix(warmup_epochs=0, steps_per_epoch=5),
        lambda: SaliencyCutout(warmup_epochs=0, steps_per_epoch=5),
        lambda: HybridMix.v3(num_classes=4, warmup_epochs=0, steps_per_epoch=5),
        lambda: methods.build("salfmix", 4, warmup_epochs=0, steps_per_epoch=5),
        lambda: CutMix(num_classes=4, steps_per_epoch=5),
        lambda: Cutout(steps_per_epoch=5),
    ],
    ids=["SalfMix", "RandomSelfMix", "SaliencyCutout", "HybridMix", "registry", "CutMix", "Cutout"],
)
def test_steps_per_epoch_without_warmup_warns_once_at_the_users_line(build):
    x, y, saliency = _batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        transform = build()
        for _ in range(3):
            transform(x, y, saliency=saliency)
    messages = [str(w.message) for w in caught]
    assert len(caught) == 1, messages
    assert caught[0].category is UserWarning and caught[0].filename == __file__
    assert "steps_per_epoch=5" in messages[0] and "warmup_epochs=0" in messages[0]
    assert "no effect" in messages[0]
    assert messages[0].startswith(type(transform).__name__)


def test_steps_per_epoch_with_a_warmup_or_alone_does_not_warn():
    x, y, saliency = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for transform in (SalfMix(steps_per_epoch=5), SalfMix(warmup_epochs=0), CutMix(num_classes=4)):
            transform(x, y, saliency=saliency)
