"""API conventions a timm user relies on: timm's Mixup arguments and defaults, multi_label refused by
name, how to turn a method on, warnings at the caller's line, model= for every registry name, the cache's
default resolution. Each test failed before its fix (a new-user review of the drop-in and the cache)."""

from __future__ import annotations

import inspect
import warnings

import pytest
import timm.data
import torch

from salfmix_transforms import CutMix, HybridMix, Mixup, SalfMix, methods
from salfmix_transforms.saliency_cache import SaliencyCache


def test_mixup_takes_every_argument_of_timms_mixup_with_its_default():
    ours, theirs = inspect.signature(Mixup).parameters, inspect.signature(timm.data.Mixup).parameters
    for name, parameter in theirs.items():
        assert name in ours, name
        assert ours[name].default == parameter.default, name
    assert list(ours)[: len(theirs)] == list(theirs)  # the same positions
    # CutMix and HybridMix take every one of timm's names too (CutMix with Mixup off).
    timm_args = {name: parameter.default for name, parameter in theirs.items()}
    timm_args.update(mixup_alpha=0.0, cutmix_alpha=1.0)
    for cls in (CutMix, HybridMix):
        assert cls(**timm_args).num_classes == 1000, cls


def test_multi_label_targets_are_refused_by_name():
    assert Mixup(multi_label=False).mixup_alpha == 1.0
    for build in (lambda: Mixup(multi_label=True), lambda: CutMix(multi_label=True)):
        with pytest.raises(ValueError, match="multi_label"):
            build()
    with pytest.raises(ValueError, match="multi_label"):
        HybridMix(multi_label=True)


def test_mixup_with_both_alphas_zero_says_how_to_turn_a_method_on():
    with pytest.raises(ValueError, match="cutmix_alpha"):
        Mixup(mixup_alpha=0.0, cutmix_alpha=0.0)


def test_warnings_point_at_the_callers_line():
    x, y = torch.rand(2, 3, 8, 8), torch.arange(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        HybridMix.v3(num_classes=2)(x, y)  # no model, no set_epoch, no steps_per_epoch: two warnings
        SalfMix(warmup_epochs=1)(x, y)
    assert len(caught) == 4
    assert {w.filename for w in caught} == {__file__}
    assert all(str(w.message).startswith(("HybridMix", "SalfMix")) for w in caught)
    assert sum(str(w.message).startswith("HybridMix") for w in caught) == 2  # named after what the user built


def test_the_registry_takes_model_for_every_method():
    model = torch.nn.Linear(2, 2)
    for name in methods.METHODS:
        if name != "baseline":
            assert methods.build(name, 10, model=model) is not None, name


def test_a_cache_without_resolution_gets_the_default_and_messages_do_not_offer_none():
    assert SaliencyCache(4, resolution=None).maps.shape == (4, 16, 16)
    with pytest.raises(ValueError, match=r"num_samples must be .*>= 1") as error:
        SaliencyCache(0)
    assert "None" not in str(error.value)
