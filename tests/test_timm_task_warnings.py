"""The warnings of timm's task route point at the user's line (issue 21, item 15), not at
``torch/nn/modules/module.py`` (the ``nn.Module`` call machinery between ``task(x, y)`` and
``SalfMixTask.forward``): the task's own warning and those of the transform it runs.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from salfmix_transforms import HybridMix, SalfMix
from salfmix_transforms.timm_task import SalfMixTask

K = 5


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, K)
    )


def _task(transform) -> SalfMixTask:
    return SalfMixTask(transform, model=_model(), criterion=SoftTargetCrossEntropy(), verbose=False)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 8, 8, generator=g), torch.randint(0, K, (4,), generator=g)


def test_the_transforms_warnings_point_at_the_task_call():
    # no steps_per_epoch and no set_epoch: HybridMix warns that nothing ends the warm-up
    task = _task(HybridMix.v3(num_classes=K))
    x, y = _batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task(x, y)
    assert [w.filename for w in caught] == [__file__], [(w.filename, str(w.message)) for w in caught]
    assert "nothing ends the warm-up" in str(caught[0].message)


def test_the_warm_up_warning_says_what_the_transform_does_meanwhile():
    """SalfMix stays the identity; HybridMix runs its two-image mix without SalfMix (not the identity)."""
    x, y = _batch()
    for transform, says in (
        (SalfMix(num_classes=K, model=_model()), "the transform stays the identity"),
        (HybridMix.v3(num_classes=K, model=_model()), "SalfMix never runs: only the two-image mix does"),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transform(x, y)
        messages = [str(w.message) for w in caught if "nothing ends the warm-up" in str(w.message)]
        assert len(messages) == 1 and says in messages[0], messages


def test_the_transforms_warning_of_useless_steps_per_epoch_points_at_the_task_call():
    task = _task(SalfMix(num_classes=K, warmup_epochs=0, steps_per_epoch=3))
    x, y = _batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task(x, y)
    assert [w.filename for w in caught] == [__file__], [(w.filename, str(w.message)) for w in caught]


def test_the_tasks_own_warning_points_at_the_task_call():
    task = _task(HybridMix.v3(num_classes=K, steps_per_epoch=1))
    x, y = _batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task(x, F.one_hot(y, K).float())  # already soft: mixed before the task?
    messages = [str(w.message) for w in caught]
    assert len(caught) == 1 and "already mixed" in messages[0], messages
    assert caught[0].filename == __file__


def test_a_hook_on_the_task_does_not_move_the_warning():
    task = _task(HybridMix.v3(num_classes=K))
    task.register_forward_pre_hook(lambda module, args: None)  # Module._call_impl takes its slow path
    x, y = _batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task(x, y)
    assert [w.filename for w in caught] == [__file__]
