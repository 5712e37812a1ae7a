"""The tuning flags change what the built transform does (issue 21, item 16).

The flags are parsed as the training scripts parse them (``parse_args``) and the batch transform is built as
they build it; each test measures the flag's effect on a batch, not an attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

import train_seg
import train_timm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32
NUM_CLASSES = 10


def _timm_transform(argv: Sequence[str]) -> Any:
    return train_timm.build_batch_transform(train_timm.parse_args(list(argv)), NUM_CLASSES)


def _seg_transform(argv: Sequence[str]) -> Any:
    return train_seg.build_transform(train_seg.parse_args(list(argv)), NUM_CLASSES, model=None)


SCRIPTS: dict[str, Callable[[Sequence[str]], Any]] = {
    "train_timm": _timm_transform,
    "train_seg": _seg_transform,
}


def _targets(script: str, batch: int) -> torch.Tensor:
    labels = torch.arange(batch) % NUM_CLASSES
    return labels if script == "train_timm" else labels.view(-1, 1, 1).expand(-1, SIZE, SIZE).contiguous()


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    ("flags", "side"), [([], 16), (["--cutout-ratio", "0.25"], 8), (["--cutout-ratio", "0.375"], 12)]
)
def test_cutout_ratio_sets_the_side_of_the_cut_box(script, flags, side):
    torch.manual_seed(0)
    transform = SCRIPTS[script](["--cutout", *flags])
    x = torch.ones(64, 3, SIZE, SIZE)
    out, _ = transform(x.clone(), _targets(script, 64))
    cut = (out == 0).all(dim=1).flatten(1).sum(dim=1)  # pixels filled per image
    # A box is side x side pixels, clipped at the borders: the largest cut of 64 boxes is a whole one.
    assert int(cut.max()) == side * side, cut.tolist()


def _is_cutmix(out: torch.Tensor, values: torch.Tensor) -> bool:
    """Every pixel is one of the input images' constants (CutMix pastes); Mixup blends them."""
    return bool(torch.isin(out, values).all())


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(("switch_prob", "cutmix_share"), [("0", 0.0), ("1", 1.0)])
def test_mixup_switch_prob_chooses_between_mixup_and_cutmix(script, switch_prob, cutmix_share):
    torch.manual_seed(0)
    transform = SCRIPTS[script](["--mixup", "1", "--cutmix", "1", "--mixup-switch-prob", switch_prob])
    values = torch.arange(1.0, 5.0)  # 4 images of distinct constants: an image's partner differs from it
    chosen = []
    for _ in range(20):
        x = values.view(-1, 1, 1, 1).expand(-1, 3, SIZE, SIZE).clone()
        out, _ = transform(x, _targets(script, 4))
        chosen.append(_is_cutmix(out, values))
    assert sum(chosen) / len(chosen) == cutmix_share, chosen
