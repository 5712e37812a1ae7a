"""Cutout (DeVries & Taylor) and SaliencyCutout (paper Table 9)."""

from __future__ import annotations

import pytest
import torch

from salfmix_transforms.cutout import Cutout, SaliencyCutout
from salfmix_transforms.salfmix import SalfMix


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def labels(batch: int) -> torch.Tensor:
    return torch.arange(batch) % 10


def filled_boxes(out: torch.Tensor, fill: float) -> list[tuple[int, int, int, int] | None]:
    """Per sample, the bounding box (top, left, bottom, right) of the filled pixels, checked to be full."""
    boxes = []
    for b in range(out.shape[0]):
        filled = (out[b] == fill).all(0)
        if not filled.any():
            boxes.append(None)
            continue
        rows = filled.any(1).nonzero().flatten()
        cols = filled.any(0).nonzero().flatten()
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        assert filled[top:bottom, left:right].all()
        assert filled.sum() == (bottom - top) * (right - left)
        boxes.append((top, left, bottom, right))
    return boxes


# -- Cutout ----------------------------------------------------------------------------------------------


def test_cutout_box_size_clipping_and_fill():
    batch = 1000
    x = torch.rand(batch, 3, 32, 32, generator=gen()) + 1.0  # never equal to the fill
    out, target = Cutout(mask_ratio=0.5, fill=-0.5)(x, labels(batch), generator=gen(1))
    assert torch.equal(target, labels(batch))
    boxes = filled_boxes(out, -0.5)
    assert all(box is not None for box in boxes)
    full = clipped = 0
    covered = torch.zeros(32, 32, dtype=torch.bool)
    for b, (top, left, bottom, right) in enumerate(boxes):
        h, w = bottom - top, right - left
        assert 1 <= h <= 16 and 1 <= w <= 16
        assert h == 16 or top == 0 or bottom == 32  # only the border shortens the box
        assert w == 16 or left == 0 or right == 32
        assert h >= 8 and w >= 8  # the centre is inside the image: at least half the box stays
        full += h == 16 and w == 16
        clipped += h < 16 or w < 16
        covered[top:bottom, left:right] = True
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[top:bottom, left:right] = False
        assert torch.equal(out[b][:, outside], x[b][:, outside])
    assert full > 100 and clipped > 100
    assert covered.all()


def test_cutout_matches_boxes():
    x = torch.rand(50, 3, 20, 30, generator=gen())
    t = Cutout(mask_ratio=0.4)
    out, _ = t(x, labels(50), generator=gen(7))
    top, left, bottom, right, applied = t.boxes(50, 20, 30, "cpu", gen(7))
    assert applied.all()
    for b in range(50):
        expected = x[b].clone()
        expected[:, top[b] : bottom[b], left[b] : right[b]] = 0.0
        assert torch.equal(out[b], expected)
    assert ((bottom - top) <= 8).all() and ((right - left) <= 12).all()  # floor(20*0.4), floor(30*0.4)
    assert ((top >= 0) & (left >= 0) & (bottom <= 20) & (right <= 30)).all()


def test_cutout_odd_size_keeps_every_pixel():
    x = torch.ones(400, 1, 10, 10)
    out, _ = Cutout(mask_ratio=0.5)(x, labels(400), generator=gen())
    sizes = {(b[2] - b[0], b[3] - b[1]) for b in filled_boxes(out, 0.0)}
    assert (5, 5) in sizes
    assert max(h for h, _ in sizes) == 5 and max(w for _, w in sizes) == 5


def test_cutout_prob():
    x = torch.rand(8, 3, 16, 16, generator=gen()) + 1.0
    out, _ = Cutout(prob=0.0)(x, labels(8))
    assert torch.equal(out, x)
    batch = 2000
    x = torch.ones(batch, 1, 8, 8)
    out, _ = Cutout(prob=0.5)(x, labels(batch), generator=gen(3))
    share = (out == 0).flatten(1).any(1).float().mean().item()
    assert 0.45 < share < 0.55


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_cutout_dtype_channels_last_no_inplace(dtype):
    x = (torch.rand(4, 3, 16, 16, generator=gen()) + 1).to(dtype).to(memory_format=torch.channels_last)
    before = x.clone()
    out, _ = Cutout(fill=0.25)(x, labels(4), generator=gen())
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, before)
    assert ((out == 0.25).all(1).flatten(1).sum(1) > 0).all()


def test_cutout_reproducible_and_soft_targets():
    x = torch.rand(6, 3, 16, 16, generator=gen())
    a, soft = Cutout(num_classes=10, label_smoothing=0.2, generator=gen(5))(x, labels(6))
    b, _ = Cutout(generator=gen(1))(x, labels(6), generator=gen(5))
    assert torch.equal(a, b)
    torch.testing.assert_close(soft.sum(1), torch.ones(6))
    assert torch.allclose(soft[torch.arange(6), labels(6)], torch.full((6,), 0.82))


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"mask_ratio": 0.0}, ValueError, "mask_ratio"),
        ({"mask_ratio": 1.2}, ValueError, "mask_ratio"),
        ({"prob": 2.0}, ValueError, "prob"),
        ({"prob": -1.0}, ValueError, "prob"),
        ({"fill": "black"}, TypeError, "fill"),
        ({"fill": True}, TypeError, "fill"),
        ({"inplace": "yes"}, TypeError, "inplace"),
        ({"generator": 1}, TypeError, "generator"),
    ],
)
def test_cutout_bad_arguments(kwargs, error, name):
    with pytest.raises(error, match=name):
        Cutout(**kwargs)


def test_cutout_inplace_fills_x_itself():
    images = torch.rand(8, 3, 16, 16, generator=gen()) + 1
    expected, _ = Cutout(fill=0.5, prob=0.5)(images, labels(8), generator=gen(4))
    x = images.clone().to(memory_format=torch.channels_last)
    out, _ = Cutout(fill=0.5, prob=0.5, inplace=True)(x, labels(8), generator=gen(4))
    assert out is x and torch.equal(x, expected) and not torch.equal(x, images)
    with pytest.raises(ValueError, match="inplace=True cannot overwrite x"):
        Cutout(inplace=True)(torch.rand(1, 3, 8, 8, requires_grad=True), labels(1))


def test_saliency_cutout_inplace_fills_x_itself():
    images = torch.rand(6, 3, 16, 16, generator=gen()) + 1
    sal = torch.rand(6, 16, 16, generator=gen(1))
    expected, _ = SaliencyCutout(prob=0.5, warmup_epochs=0)(images, labels(6), saliency=sal, generator=gen(2))
    x = images.clone()
    out, _ = SaliencyCutout(prob=0.5, inplace=True, warmup_epochs=0)(
        x, labels(6), saliency=sal, generator=gen(2)
    )
    assert out is x and torch.equal(x, expected) and not torch.equal(x, images)


def test_cutout_bad_call():
    with pytest.raises(TypeError, match="x"):
        Cutout()([1.0], labels(1))
    with pytest.raises(ValueError, match="target"):
        Cutout()(torch.rand(2, 3, 8, 8), labels(3))


# -- SaliencyCutout --------------------------------------------------------------------------------------


def test_saliency_cutout_fills_exactly_least_salient_patch():
    batch = 100
    x = torch.rand(batch, 3, 32, 32, generator=gen()) + 1.0
    sal = 0.5 + 0.01 * torch.rand(batch, 32, 32, generator=gen(1))
    sal[:, 8:16, 24:32] = 9.0
    sal[:, 16:24, 0:8] = -9.0  # R_l = cell (2, 0)
    t = SaliencyCutout(grid=4, ratio=0.3, fill=-2.0, warmup_epochs=0)
    out, target = t(x, labels(batch), saliency=sal, generator=gen(2))
    assert torch.equal(target, labels(batch))
    plan = t.plan(sal, generator=gen(2))
    assert (plan.min_cell == torch.tensor([2, 0])).all()
    for b, (top, left, bottom, right) in enumerate(filled_boxes(out, -2.0)):
        assert (top, left) == (int(plan.dst_top[b]), int(plan.dst_left[b]))
        assert (bottom - top, right - left) == (9, 9)
        assert top <= 16 and bottom >= 24 and left == 0  # contains the cell, inside the image
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[top:bottom, left:right] = False
        assert torch.equal(out[b][:, outside], x[b][:, outside])
    # the same P_l as SalfMix for the same generator state
    salfmix_plan = SalfMix(grid=4, ratio=0.3).plan(sal, generator=gen(2))
    assert torch.equal(salfmix_plan.dst_top, plan.dst_top) and torch.equal(
        salfmix_plan.dst_left, plan.dst_left
    )


def test_saliency_cutout_prob_dtype_and_memory_format():
    x = (
        (torch.rand(6, 3, 16, 16, generator=gen()) + 1)
        .to(torch.bfloat16)
        .to(memory_format=torch.channels_last)
    )
    before = x.clone()
    sal = torch.rand(6, 16, 16, generator=gen(1))
    out, _ = SaliencyCutout(prob=0.0, warmup_epochs=0)(x, labels(6), saliency=sal)
    assert torch.equal(out, x)
    out, _ = SaliencyCutout(warmup_epochs=0)(x, labels(6), saliency=sal)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, before)
    assert ((out == 0).all(1).flatten(1).sum(1) == 16).all()  # floor(16 * 0.3) = 4, 4x4 patch


def test_saliency_cutout_needs_model_or_saliency():
    with pytest.raises(ValueError, match=r"model=.*saliency="):
        SaliencyCutout(warmup_epochs=0)(torch.rand(2, 3, 8, 8), labels(2))
    with pytest.raises(ValueError, match="saliency"):
        SaliencyCutout(warmup_epochs=0)(torch.rand(2, 3, 8, 8), labels(2), saliency=torch.rand(2, 8, 9))
    with pytest.raises(ValueError, match="grid"):
        SaliencyCutout(grid=9, warmup_epochs=0)(
            torch.rand(2, 3, 8, 8), labels(2), saliency=torch.rand(2, 8, 8)
        )
    with pytest.raises(TypeError, match="fill"):
        SaliencyCutout(fill=None)
    with pytest.raises(ValueError, match="ratio"):
        SaliencyCutout(ratio=0)
