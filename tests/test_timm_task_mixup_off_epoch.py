"""timm's ``--mixup-off-epoch`` on the task route (issue 21, item 15): ``SalfMixTask(...,
mixup_off_epoch=args.mixup_off_epoch)`` switches the transform's two-image mix off from that epoch on, as
route A (``train_timm.py``, ``disable_mixing``) and timm's own ``mixup_fn`` do; a transform without a
two-image mix refuses it by name.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from salfmix_transforms import CutMix, HybridMix, SalfMix
from salfmix_transforms.timm_task import SalfMixTask

K = 5


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, K)
    )


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 3, 8, 8, generator=g), torch.randint(0, K, (4,), generator=g)


def _task(transform, **kwargs) -> SalfMixTask:
    return SalfMixTask(transform, model=_model(), criterion=SoftTargetCrossEntropy(), verbose=False, **kwargs)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CutMix(num_classes=K, steps_per_epoch=2),
        lambda: HybridMix.v3(num_classes=K, steps_per_epoch=2, salfmix_prob=0.0),
    ],
    ids=["CutMix", "HybridMix"],
)
def test_mixup_off_epoch_switches_the_two_image_mix_off_from_that_epoch(make):
    transform = make()
    task = _task(transform, mixup_off_epoch=2)
    enabled = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # configured right: no warning
        for step in range(6):  # epochs 0, 0, 1, 1, 2, 2
            task(*_batch(step))
            enabled.append(transform.mixup_enabled)
    assert enabled == [True, True, True, True, False, False]


def test_mixup_off_epoch_follows_set_epoch_and_a_resume():
    transform = CutMix(num_classes=K, label_smoothing=0.0)
    task = _task(transform, mixup_off_epoch=3)
    task.set_epoch(2)
    task(*_batch(0))
    assert transform.mixup_enabled
    task.load_task_state({"salfmix_epoch": 3})  # --resume from an epoch-3 checkpoint
    x, y = _batch(1)
    out = task(x, y)
    assert not transform.mixup_enabled
    one_hot = nn.functional.one_hot(y, K).float()
    torch.testing.assert_close(out["loss"], SoftTargetCrossEntropy()(task.trainable_module(x), one_hot))


def test_mixup_off_epoch_zero_is_timms_never():
    transform = CutMix(num_classes=K)
    task = _task(transform, mixup_off_epoch=0)
    task.set_epoch(5)
    for step in range(3):
        task(*_batch(step))
    assert transform.mixup_enabled


def test_a_transform_without_two_image_mix_refuses_mixup_off_epoch():
    with pytest.raises(ValueError, match=r"mixup_off_epoch=1.*SalfMix"):
        _task(SalfMix(num_classes=K), mixup_off_epoch=1)
    _task(SalfMix(num_classes=K), mixup_off_epoch=0)  # timm's default: nothing to refuse


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_a_bad_mixup_off_epoch_is_refused_by_name(bad):
    with pytest.raises((TypeError, ValueError), match="mixup_off_epoch"):
        _task(CutMix(num_classes=K), mixup_off_epoch=bad)


def test_mixup_off_epoch_without_an_epoch_count_warns_at_the_users_line():
    task = _task(CutMix(num_classes=K), mixup_off_epoch=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            task(*_batch(step))
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "mixup_off_epoch=1" in str(caught[0].message) and "set_epoch" in str(caught[0].message)
    assert caught[0].filename == __file__


def test_steps_per_epoch_of_a_transform_without_warmup_is_used_by_mixup_off_epoch():
    # CutMix has no warm-up: its steps_per_epoch counts the epochs that mixup_off_epoch reads, so the
    # "steps_per_epoch has no effect" warning of the transform must not fire
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task = _task(CutMix(num_classes=K, steps_per_epoch=1), mixup_off_epoch=1)
        task(*_batch(0))
