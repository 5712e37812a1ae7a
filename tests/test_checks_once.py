"""Check once, at the boundary (issue 20, item 4): a transform call checks its grid against the image once,
not again in every helper it calls."""

from __future__ import annotations

import pytest
import torch

from salfmix_transforms import RandomSelfMix, SalfMix, SaliencyCutout, _validation
from salfmix_transforms import patches as patches_module
from salfmix_transforms import salfmix as salfmix_module


@pytest.mark.parametrize("cls", [SalfMix, RandomSelfMix, SaliencyCutout])
def test_a_call_checks_the_grid_once(monkeypatch, cls):
    fn = cls(grid=4, ratio=0.3, warmup_epochs=0)  # the constructor checks the grid itself (n >= 1)
    calls = []

    def counting(*args, **kwargs):
        calls.append(args)
        return _validation.check_grid(*args, **kwargs)

    monkeypatch.setattr(salfmix_module, "check_grid", counting)
    monkeypatch.setattr(patches_module, "check_grid", counting)
    x = torch.rand(2, 3, 16, 16)
    fn(x, torch.tensor([0, 1]), saliency=torch.rand(2, 16, 16))
    assert len(calls) == 1
    with pytest.raises(ValueError, match="grid=4 does not fit a 3x3 image"):
        fn(torch.rand(2, 3, 3, 3), torch.tensor([0, 1]), saliency=torch.rand(2, 3, 3))
    with pytest.raises(ValueError, match="grid=4 does not fit a 3x3 image"):
        SalfMix(grid=4).plan(torch.rand(2, 3, 3))
