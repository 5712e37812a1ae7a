"""The registry's SalfMix-family single-image methods skip one warm-up epoch (issue 21, item 16).

Algorithm 2: no SalfMix in the first epoch (the saliency of an untrained network is noise); the ablation
``salfmix-nosal`` skips it too, so that it differs from SalfMix only by the saliency. Built by name from the
registry, each must leave the images of epoch 0 unchanged and change them from epoch 1 on.
"""

from __future__ import annotations

import pytest
import torch

from salfmix_transforms import methods

SELF_MIXING = ("salfmix-nosal", "salfmix", "cutout-sal")


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g)
    saliency = torch.rand(4, 32, 32, generator=g)
    return x, torch.arange(4), saliency


@pytest.mark.parametrize("name", SELF_MIXING)
def test_the_first_epoch_is_unchanged_and_the_second_is_augmented(name):
    transform = methods.build(name, num_classes=4)
    x, target, saliency = _batch()
    per_epoch = []
    for epoch in (0, 1):
        transform.set_epoch(epoch)
        out, _ = transform(x.clone(), target, saliency=saliency, generator=torch.Generator().manual_seed(1))
        per_epoch.append(out)
    assert torch.equal(per_epoch[0], x), f"{name} changed the images of the warm-up epoch"
    assert not torch.equal(per_epoch[1], x), f"{name} left the images of epoch 1 unchanged"


@pytest.mark.parametrize("name", SELF_MIXING)
def test_the_warm_up_ends_after_one_epoch_of_steps(name):
    transform = methods.build(name, num_classes=4, steps_per_epoch=2)
    x, target, saliency = _batch()
    changed = []
    for _ in range(3):  # two steps of epoch 0, one of epoch 1
        out, _ = transform(x.clone(), target, saliency=saliency, generator=torch.Generator().manual_seed(1))
        changed.append(not torch.equal(out, x))
    assert changed == [False, False, True], changed
