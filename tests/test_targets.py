"""Soft targets, validation helpers, random draws and the transform base class."""

import pytest
import torch

from salfmix_transforms import mix_targets, one_hot, to_soft_targets
from salfmix_transforms._base import BatchTransform
from salfmix_transforms._random import beta, randint_between
from salfmix_transforms._validation import (
    check_grid,
    check_images,
    check_probability,
    check_ratio,
    check_target,
)


def test_one_hot_matches_timm_smoothing_formula():
    from timm.data.mixup import mixup_target

    target = torch.tensor([0, 3, 1, 2])
    ours = one_hot(target, 5, smoothing=0.1)
    assert torch.allclose(ours, mixup_target(target, 5, lam=1.0, smoothing=0.1))
    assert torch.allclose(ours.sum(1), torch.ones(4))
    assert ours[1, 3] == pytest.approx(1 - 0.1 + 0.1 / 5)
    assert ours[1, 0] == pytest.approx(0.1 / 5)


def test_soft_targets_are_smoothed_and_still_sum_to_one():
    soft = torch.tensor([[0.25, 0.75, 0.0], [1.0, 0.0, 0.0]])
    out = to_soft_targets(soft, 3, smoothing=0.3)
    assert torch.allclose(out, soft * 0.7 + 0.1)
    assert torch.allclose(out.sum(1), torch.ones(2))


def test_mix_targets_scalar_and_per_sample_lambda():
    a, b = one_hot(torch.tensor([0, 1]), 3), one_hot(torch.tensor([2, 2]), 3)
    assert torch.allclose(mix_targets(a, b, 0.25), torch.tensor([[0.25, 0, 0.75], [0, 0.25, 0.75]]))
    mixed = mix_targets(a, b, torch.tensor([1.0, 0.5]))
    assert torch.allclose(mixed, torch.tensor([[1.0, 0, 0], [0, 0.5, 0.5]]))


def test_randint_between_covers_closed_range_only():
    gen = torch.Generator().manual_seed(0)
    low, high = torch.full((5000,), 2), torch.full((5000,), 6)
    draws = randint_between(low, high, gen)
    assert set(draws.tolist()) == {2, 3, 4, 5, 6}
    counts = torch.bincount(draws - 2).float()
    assert counts.min() > 0.8 * counts.mean()


def test_beta_is_reproducible_with_a_generator():
    a = beta(0.4, 8, torch.Generator().manual_seed(3))
    b = beta(0.4, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and ((a >= 0) & (a <= 1)).all()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: check_images([1, 2]), TypeError, "x must be a torch.Tensor"),
        (lambda: check_images(torch.zeros(3, 4, 4)), ValueError, "4-D"),
        (lambda: check_images(torch.zeros(1, 3, 4, 4, dtype=torch.long)), TypeError, "floating-point"),
        (lambda: check_images(torch.zeros(0, 3, 4, 4)), ValueError, "B >= 1"),
        (lambda: check_target(torch.zeros(2), 2), TypeError, "integer class indices"),
        (lambda: check_target(torch.zeros(3, dtype=torch.long), 2), ValueError, "3 labels for a batch of 2"),
        (lambda: check_target(torch.tensor([0, 7]), 2, 5), ValueError, "outside"),
        (lambda: check_target(torch.zeros(2, 4), 2, 5), ValueError, "num_classes=5"),
        (lambda: check_target(torch.zeros(2, 4, dtype=torch.long), 2), TypeError, "soft targets"),
        (lambda: check_grid(0), ValueError, "grid must be >= 1"),
        (lambda: check_grid(2.0), TypeError, "grid must be an int"),
        (lambda: check_grid(9, height=8, width=16), ValueError, "does not fit"),
        (lambda: check_ratio(0.0), ValueError, "ratio"),
        (lambda: check_probability(1.5, "prob"), ValueError, "prob must lie in"),
        (lambda: check_probability("1", "prob"), TypeError, "prob must be a real number"),
    ],
)
def test_validation_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


class _AddOne(BatchTransform):
    def _apply(self, x, target, *, model, saliency, generator):
        return x + 1, self._output_target(target)


def test_base_warmup_and_soft_targets():
    transform = _AddOne(num_classes=3, label_smoothing=0.0, warmup_epochs=2)
    x, target = torch.zeros(2, 1, 2, 2), torch.tensor([0, 2])
    out, soft = transform(x, target)
    assert torch.equal(out, x), "identity during warm-up"
    assert torch.equal(soft, one_hot(target, 3))
    transform.set_epoch(2)
    out, _ = transform(x, target)
    assert torch.equal(out, x + 1)
    with pytest.raises(ValueError, match="epoch"):
        transform.set_epoch(-1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"num_classes": 2.5}, TypeError, "num_classes"),
        ({"warmup_epochs": -1}, ValueError, "warmup_epochs"),
        ({"label_smoothing": 2.0}, ValueError, "label_smoothing"),
        ({"generator": 3}, TypeError, "generator"),
    ],
)
def test_base_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        _AddOne(**kwargs)


@pytest.mark.parametrize("method", ["salfmix", "cutout-sal", "mixup", "cutmix", "hybridmix-v3"])
def test_a_call_checks_its_target_once(method, monkeypatch):
    """The index-range check reads the target's min and max (a host sync on CUDA): once per call."""
    import salfmix_transforms._base as base
    import salfmix_transforms.targets as targets
    from salfmix_transforms import CutMix, HybridMix, Mixup, SalfMix, SaliencyCutout

    calls = []

    def counting_check(*args, **kwargs):
        calls.append(args)
        return check_target(*args, **kwargs)

    monkeypatch.setattr(base, "check_target", counting_check)
    monkeypatch.setattr(targets, "check_target", counting_check)
    transform = {
        "salfmix": lambda: SalfMix(grid=4, num_classes=10),
        "cutout-sal": lambda: SaliencyCutout(grid=4, num_classes=10),
        "mixup": lambda: Mixup(num_classes=10, mode="elem"),
        "cutmix": lambda: CutMix(num_classes=10),
        "hybridmix-v3": lambda: HybridMix.v3(num_classes=10),
    }[method]()
    x, y = torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 4, 9])
    _, soft = transform(x, y, saliency=torch.rand(6, 16, 16))
    assert soft.shape == (6, 10) and torch.allclose(soft.sum(dim=1), torch.ones(6))
    assert len(calls) == 1
    with pytest.raises(ValueError, match="outside"):
        transform(x, y + 1, saliency=torch.rand(6, 16, 16))


def test_a_number_with_only_an_upper_bound_says_so():
    """``check_number(high=...)`` without ``low`` names the bound (it failed formatting ``None``)."""
    from salfmix_transforms._validation import check_number

    with pytest.raises(ValueError, match=r"x must be <= 2, got 3.0"):
        check_number(3.0, "x", high=2.0)
    assert check_number(-5.0, "x", high=2.0) == -5.0
