"""SalfMix (Algorithm 1) and RandomSelfMix (Table 10) as batch transforms."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from salfmix_transforms.patches import SelfMixPlan, pool_saliency
from salfmix_transforms.salfmix import RandomSelfMix, SalfMix


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def labels(batch: int, num_classes: int = 10) -> torch.Tensor:
    return torch.arange(batch) % num_classes


def hand_map(batch: int, height: int, width: int, grid: int, high: tuple[int, int], low: tuple[int, int]):
    """A map of 0.5 + small noise, one cell set to 10 and another to -10."""
    kh, kw = height // grid, width // grid
    sal = 0.5 + 0.01 * torch.rand(batch, height, width, generator=gen(123))
    sal[:, high[0] * kh : high[0] * kh + kh, high[1] * kw : high[1] * kw + kw] = 10.0
    sal[:, low[0] * kh : low[0] * kh + kh, low[1] * kw : low[1] * kw + kw] = -10.0
    return sal


def check_output(x: torch.Tensor, out: torch.Tensor, plan: SelfMixPlan) -> None:
    """P_l receives the original P_m, every other pixel is unchanged, non-applied samples are untouched."""
    ph, pw = plan.patch_height, plan.patch_width
    for b in range(x.shape[0]):
        if not plan.applied[b]:
            assert torch.equal(out[b], x[b])
            continue
        st_, sl, dt, dl = (int(v[b]) for v in (plan.src_top, plan.src_left, plan.dst_top, plan.dst_left))
        assert torch.equal(out[b, :, dt : dt + ph, dl : dl + pw], x[b, :, st_ : st_ + ph, sl : sl + pw])
        outside = torch.ones(x.shape[2], x.shape[3], dtype=torch.bool)
        outside[dt : dt + ph, dl : dl + pw] = False
        assert torch.equal(out[b][:, outside], x[b][:, outside])


def check_geometry(plan: SelfMixPlan, height: int, width: int) -> None:
    """Patches inside the image; each contains its cell, or lies inside it when smaller (per direction)."""
    ph, pw, kh, kw = plan.patch_height, plan.patch_width, plan.cell_height, plan.cell_width
    for top, left, cell in (
        (plan.src_top, plan.src_left, plan.max_cell),
        (plan.dst_top, plan.dst_left, plan.min_cell),
    ):
        assert ((top >= 0) & (top + ph <= height) & (left >= 0) & (left + pw <= width)).all()
        for pos, idx, c, p in ((top, cell[:, 0], kh, ph), (left, cell[:, 1], kw, pw)):
            start, end = idx * c, idx * c + c
            if p >= c:
                assert ((pos <= start) & (pos + p >= end)).all()
            else:
                assert ((pos >= start) & (pos + p <= end)).all()


# -- Algorithm 1 on hand-built maps ----------------------------------------------------------------------


def test_known_cells_square():
    x = torch.rand(64, 3, 32, 32, generator=gen())
    sal = hand_map(64, 32, 32, 4, high=(1, 2), low=(3, 0))
    t = SalfMix(grid=4, ratio=0.3, warmup_epochs=0)
    plan = t.plan(sal, generator=gen(5))
    assert plan.max_cell.dtype == torch.long and plan.max_cell.shape == (64, 2)
    assert (plan.max_cell == torch.tensor([1, 2])).all()
    assert (plan.min_cell == torch.tensor([3, 0])).all()
    assert (plan.cell_height, plan.cell_width) == (8, 8)
    assert (plan.patch_height, plan.patch_width) == (9, 9)  # floor(32 * 0.3)
    assert plan.applied.all()
    check_geometry(plan, 32, 32)
    out, target = t(x, labels(64), saliency=sal, generator=gen(5))
    check_output(x, out, plan)
    assert torch.equal(target, labels(64))
    assert not torch.equal(out, x)


def test_overlapping_patches_copy_from_original():
    # adjacent cells and big patches (16 px around 8 px cells): P_m and P_l overlap in many samples
    batch = 200
    x = torch.rand(batch, 3, 32, 32, generator=gen())
    sal = hand_map(batch, 32, 32, 4, high=(1, 1), low=(1, 2))
    t = SalfMix(grid=4, ratio=0.5, warmup_epochs=0)
    plan = t.plan(sal, generator=gen(9))
    overlap_rows = (plan.src_top - plan.dst_top).abs() < 16
    overlap_cols = (plan.src_left - plan.dst_left).abs() < 16
    assert (overlap_rows & overlap_cols).sum() > 50
    out, _ = t(x, labels(batch), saliency=sal, generator=gen(9))
    check_output(x, out, plan)


def test_non_square_geometry():
    x = torch.rand(100, 3, 24, 40, generator=gen())
    sal = hand_map(100, 24, 40, 4, high=(0, 3), low=(2, 1))
    t = SalfMix(grid=4, ratio=0.3, warmup_epochs=0)
    plan = t.plan(sal, generator=gen(1))
    assert (plan.cell_height, plan.cell_width) == (6, 10)
    assert (plan.patch_height, plan.patch_width) == (7, 12)
    assert (plan.max_cell == torch.tensor([0, 3])).all()
    assert (plan.min_cell == torch.tensor([2, 1])).all()
    check_geometry(plan, 24, 40)
    out, _ = t(x, labels(100), saliency=sal, generator=gen(1))
    check_output(x, out, plan)


def test_patch_smaller_than_cell_lies_inside_cell():
    sal = hand_map(500, 32, 32, 2, high=(1, 0), low=(0, 1))
    plan = SalfMix(grid=2, ratio=0.1).plan(sal, generator=gen())
    assert plan.patch_height == 3 and plan.cell_height == 16
    assert (
        (plan.src_top >= 16) & (plan.src_top + 3 <= 32) & (plan.src_left >= 0) & (plan.src_left + 3 <= 16)
    ).all()
    assert (
        (plan.dst_top >= 0) & (plan.dst_top + 3 <= 16) & (plan.dst_left >= 16) & (plan.dst_left + 3 <= 32)
    ).all()
    # uniform inside the cell: all 14 positions appear
    assert set(plan.src_top.tolist()) == set(range(16, 30))


def test_placement_uniform_over_valid_positions():
    batch = 4000
    sal = hand_map(batch, 32, 32, 4, high=(1, 2), low=(3, 3))
    plan = SalfMix(grid=4, ratio=0.5).plan(sal, generator=gen(3))  # 16 px patches around 8 px cells
    expected = {
        "src_top": range(0, 9),  # cell rows 8..15: top in [0, 8]
        "src_left": range(8, 17),  # cell cols 16..23: left in [8, 16]
        "dst_top": range(16, 17),  # bottom-right cell: clipped to the single position 16
        "dst_left": range(16, 17),
    }
    for name, valid in expected.items():
        drawn = getattr(plan, name)
        assert set(drawn.tolist()) == set(valid), name
        counts = torch.bincount(drawn, minlength=32)[list(valid)].float()
        mean = batch / len(valid)
        assert (counts >= 0.5 * mean).all() and (counts <= 1.5 * mean).all(), name


# -- degenerate maps -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["constant", "zeros", "nan", "inf", "ties"])
def test_degenerate_maps(kind):
    batch = 400
    x = torch.rand(batch, 3, 16, 16, generator=gen())
    sal = torch.rand(batch, 16, 16, generator=gen(1))
    if kind == "constant":
        sal = torch.full_like(sal, 3.0)
    elif kind == "zeros":
        sal = torch.zeros_like(sal)
    elif kind == "nan":
        sal[:, 3, 3] = float("nan")
    elif kind == "inf":
        sal[:, 5, 9] = float("inf")
        sal[:, 0, 0] = float("-inf")
    elif kind == "ties":
        sal = torch.zeros_like(sal)
        sal[:, :4, :4] = 1.0
        sal[:, 12:, 12:] = 1.0
    t = SalfMix(grid=4, ratio=0.4, warmup_epochs=0)
    plan = t.plan(sal, generator=gen(2))
    out, _ = t(x, labels(batch), saliency=sal, generator=gen(2))
    assert torch.isfinite(out).all()
    check_geometry(plan, 16, 16)
    check_output(x, out, plan)
    max_cells = set(map(tuple, plan.max_cell.tolist()))
    if kind == "ties":
        assert max_cells == {(0, 0), (3, 3)}
    else:
        assert len(max_cells) >= 10
        assert len(set(map(tuple, plan.min_cell.tolist()))) >= 10


# -- probability, randomness -----------------------------------------------------------------------------


def test_prob_zero_is_identity():
    x = torch.rand(8, 3, 16, 16, generator=gen())
    sal = torch.rand(8, 16, 16, generator=gen(1))
    out, target = SalfMix(prob=0.0, warmup_epochs=0)(x, labels(8), saliency=sal)
    assert torch.equal(out, x)
    assert torch.equal(target, labels(8))


def test_prob_half_applies_about_half():
    batch = 2000
    x = torch.rand(batch, 1, 8, 8, generator=gen())
    sal = hand_map(batch, 8, 8, 4, high=(0, 0), low=(3, 3))  # disjoint cells: every applied sample changes
    t = SalfMix(grid=4, ratio=0.25, prob=0.5, warmup_epochs=0)
    plan = t.plan(sal, generator=gen(4))
    assert 0.45 < plan.applied.float().mean().item() < 0.55
    out, _ = t(x, labels(batch), saliency=sal, generator=gen(4))
    changed = (out != x).flatten(1).any(dim=1)
    assert torch.equal(changed, plan.applied)
    check_output(x, out, plan)


def test_reproducible_and_call_generator_wins():
    x = torch.rand(16, 3, 32, 32, generator=gen())
    sal = torch.rand(16, 32, 32, generator=gen(1))
    sal[:, :8] = 0.5  # ties among the top cells: the tie-break is random
    y = labels(16)
    a, _ = SalfMix(prob=0.7, generator=gen(11), warmup_epochs=0)(x, y, saliency=sal)
    b, _ = SalfMix(prob=0.7, generator=gen(11), warmup_epochs=0)(x, y, saliency=sal)
    assert torch.equal(a, b)
    c, _ = SalfMix(prob=0.7, generator=gen(11), warmup_epochs=0)(x, y, saliency=sal, generator=gen(22))
    d, _ = SalfMix(prob=0.7, warmup_epochs=0)(x, y, saliency=sal, generator=gen(22))
    assert torch.equal(c, d)
    assert not torch.equal(a, c)
    torch.manual_seed(5)
    e, _ = SalfMix(warmup_epochs=0)(x, y, saliency=sal)
    torch.manual_seed(5)
    f, _ = SalfMix(warmup_epochs=0)(x, y, saliency=sal)
    assert torch.equal(e, f)


def test_plan_generator_wins_over_constructor():
    sal = torch.rand(50, 16, 16, generator=gen())
    t = SalfMix(generator=gen(1), warmup_epochs=0)
    p1 = t.plan(sal, generator=gen(2))
    p2 = SalfMix().plan(sal, generator=gen(2))
    assert torch.equal(p1.dst_top, p2.dst_top) and torch.equal(p1.src_left, p2.src_left)


# -- ablations -------------------------------------------------------------------------------------------


def test_pool_false_picks_argmax_pixel():
    sal = torch.rand(20, 32, 32, generator=gen())
    sal[:, 5, 7] = 2.0
    sal[:, 20, 30] = -1.0
    t = SalfMix(grid=4, ratio=0.3, pool=False, warmup_epochs=0)
    plan = t.plan(sal, generator=gen())
    assert (plan.cell_height, plan.cell_width) == (1, 1)
    assert (plan.max_cell == torch.tensor([5, 7])).all()
    assert (plan.min_cell == torch.tensor([20, 30])).all()
    check_geometry(plan, 32, 32)
    # the same map pooled picks a cell, not a pixel
    pooled_plan = SalfMix(grid=4, ratio=0.3).plan(sal, generator=gen())
    pooled = pool_saliency(sal, 8, 8)
    flat = pooled.flatten(1).argmax(1)
    assert torch.equal(pooled_plan.max_cell[:, 0] * 4 + pooled_plan.max_cell[:, 1], flat)


def test_random_selfmix_without_model():
    batch = 300
    x = torch.rand(batch, 3, 16, 16, generator=gen())
    t = RandomSelfMix(grid=4, ratio=0.25, warmup_epochs=0)
    out, target = t(x, labels(batch), generator=gen(1))
    assert torch.equal(target, labels(batch))
    assert (out != x).flatten(1).any(1).float().mean() > 0.8  # R_m == R_l only 1/16 of the time
    plan = t.plan(torch.zeros(batch, 16, 16), generator=gen(1))
    check_output(x, out, plan)
    check_geometry(plan, 16, 16)
    assert len(set(map(tuple, plan.max_cell.tolist()))) == 16
    assert len(set(map(tuple, plan.min_cell.tolist()))) == 16
    # the saliency and the model are ignored
    out2, _ = t(
        x, labels(batch), saliency=torch.rand(batch, 16, 16), model=torch.nn.Identity(), generator=gen(1)
    )
    assert torch.equal(out, out2)


# -- dtypes, memory format, in-place ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dtype_memory_format_no_inplace(dtype, channels_last):
    x = torch.rand(6, 3, 16, 16, generator=gen()).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    before = x.clone()
    sal = torch.rand(6, 16, 16, generator=gen(1)).to(dtype)
    t = SalfMix(grid=4, ratio=0.5, warmup_epochs=0)
    out, _ = t(x, labels(6), saliency=sal, generator=gen(2))
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.equal(x, before)
    check_output(before, out, t.plan(sal, generator=gen(2)))


# -- targets, warm-up ------------------------------------------------------------------------------------


def test_soft_targets():
    x = torch.rand(4, 3, 8, 8, generator=gen())
    y = torch.tensor([0, 3, 9, 3])
    sal = torch.rand(4, 8, 8, generator=gen(1))
    _, soft = SalfMix(num_classes=10, label_smoothing=0.1, warmup_epochs=0)(x, y, saliency=sal)
    assert soft.shape == (4, 10) and soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    assert torch.allclose(soft[torch.arange(4), y], torch.full((4,), 1 - 0.1 + 0.01))
    assert torch.allclose(soft[0, 1:], torch.full((9,), 0.01))
    _, hard = SalfMix(num_classes=10, warmup_epochs=0)(x, y, saliency=sal)
    assert torch.equal(hard, torch.nn.functional.one_hot(y, 10).float())
    _, same = SalfMix(warmup_epochs=0)(x, y, saliency=sal)
    assert same is y
    given_soft = torch.softmax(torch.rand(4, 10, generator=gen(2)), 1)
    _, out_soft = SalfMix(warmup_epochs=0)(x, given_soft, saliency=sal)
    assert torch.equal(out_soft, given_soft)


def test_warmup_is_identity():
    x = torch.rand(4, 3, 8, 8, generator=gen())
    sal = torch.rand(4, 8, 8, generator=gen(1))
    t = SalfMix(warmup_epochs=1)
    t.set_epoch(0)
    out, _ = t(x, labels(4), saliency=sal)
    assert torch.equal(out, x)
    t.set_epoch(1)
    out, _ = t(x, labels(4), saliency=sal)
    assert not torch.equal(out, x)


# -- model path ------------------------------------------------------------------------------------------


def test_model_path_uses_gradient_saliency(monkeypatch):
    calls = []

    def fake_gradient_saliency(model, x, target, *, mode="train", **kwargs):
        calls.append((model, mode, target.clone()))
        return hand_map(x.shape[0], x.shape[2], x.shape[3], 4, high=(2, 2), low=(0, 0))

    fake = types.ModuleType("salfmix_transforms.saliency")
    fake.gradient_saliency = fake_gradient_saliency
    monkeypatch.setitem(sys.modules, "salfmix_transforms.saliency", fake)
    model = torch.nn.Identity()
    x = torch.rand(5, 3, 32, 32, generator=gen())
    t = SalfMix(saliency_mode="eval", warmup_epochs=0)
    out, _ = t(x, labels(5), model=model, generator=gen(3))
    assert len(calls) == 1 and calls[0][0] is model and calls[0][1] == "eval"
    assert torch.equal(calls[0][2], labels(5))
    plan = t.plan(hand_map(5, 32, 32, 4, high=(2, 2), low=(0, 0)), generator=gen(3))
    assert (plan.max_cell == torch.tensor([2, 2])).all()
    check_output(x, out, plan)
    # a given saliency map wins over the model
    out2, _ = t(x, labels(5), model=model, saliency=torch.rand(5, 32, 32), generator=gen(3))
    assert len(calls) == 1 and out2.shape == x.shape


def test_model_path_with_real_saliency_module():
    saliency = pytest.importorskip("salfmix_transforms.saliency")
    if not hasattr(saliency, "gradient_saliency"):
        pytest.skip("gradient_saliency not written yet")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 10),
    )
    x = torch.rand(4, 3, 16, 16, generator=gen())
    out, target = SalfMix(grid=4, ratio=0.25, warmup_epochs=0)(x, labels(4), model=model, generator=gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(target, labels(4))
    diff = (out != x).any(1)  # at most one 4x4 patch changed per image
    assert (diff.flatten(1).sum(1) <= 16).all()


# -- property test ---------------------------------------------------------------------------------------


@st.composite
def cases(draw):
    batch = draw(st.integers(1, 6))
    height = draw(st.integers(4, 40))
    width = draw(st.integers(4, 40))
    grid = draw(st.integers(1, min(height, width)))
    ratio = draw(st.floats(0.0, 1.0, exclude_min=True, allow_nan=False))
    prob = draw(st.floats(0.0, 1.0, allow_nan=False))
    pool = draw(st.booleans())
    constant = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return batch, height, width, grid, ratio, prob, pool, constant, seed


@settings(max_examples=60, deadline=None)
@given(cases())
def test_property_invariants(case):
    batch, height, width, grid, ratio, prob, pool, constant, seed = case
    x = torch.rand(batch, 2, height, width, generator=gen(seed))
    sal = (
        torch.full((batch, height, width), 1.0)
        if constant
        else torch.rand(batch, height, width, generator=gen(seed + 1))
    )
    t = SalfMix(grid=grid, ratio=ratio, prob=prob, pool=pool, warmup_epochs=0)
    out, target = t(x, labels(batch), saliency=sal, generator=gen(seed))
    plan = t.plan(sal, generator=gen(seed))
    assert out.shape == x.shape and torch.equal(target, labels(batch))
    check_output(x, out, plan)
    check_geometry(plan, height, width)
    kh, kw = plan.cell_height, plan.cell_width
    pooled = pool_saliency(sal, kh, kw)
    rows, cols = plan.max_cell[:, 0], plan.max_cell[:, 1]
    assert ((rows < pooled.shape[1]) & (cols < pooled.shape[2])).all()
    b = torch.arange(batch)
    assert torch.equal(pooled[b, rows, cols], pooled.flatten(1).amax(1))
    assert torch.equal(pooled[b, plan.min_cell[:, 0], plan.min_cell[:, 1]], pooled.flatten(1).amin(1))
    if prob == 0.0:
        assert torch.equal(out, x)


# -- inplace=True ----------------------------------------------------------------------------------------


def layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same images as a contiguous, a channels_last and a strided (H, W not mergeable) batch."""
    strided = x.transpose(2, 3).contiguous().transpose(2, 3)  # column-major images
    assert strided.stride(2) != strided.stride(3) * strided.shape[3]
    return {
        "contiguous": x.clone(),
        "channels_last": x.clone().to(memory_format=torch.channels_last),
        "strided": strided,
    }


@pytest.mark.parametrize("cls", [SalfMix, RandomSelfMix])
@pytest.mark.parametrize("prob", [1.0, 0.5])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_inplace_writes_the_out_of_place_result_into_x(cls, prob, layout):
    # big patches around adjacent cells, so P_m and P_l overlap: the copy must still read the original P_m
    batch = 64
    images = torch.rand(batch, 3, 32, 32, generator=gen())
    sal = hand_map(batch, 32, 32, 4, high=(1, 1), low=(1, 2))
    expected, _ = cls(grid=4, ratio=0.5, prob=prob, warmup_epochs=0)(
        images, labels(batch), saliency=sal, generator=gen(3)
    )
    x = layouts(images)[layout]
    out, target = cls(grid=4, ratio=0.5, prob=prob, inplace=True, warmup_epochs=0)(
        x, labels(batch), saliency=sal, generator=gen(3)
    )
    assert out is x
    assert torch.equal(x, expected)
    assert not torch.equal(x, images)
    assert torch.equal(target, labels(batch))


def test_inplace_refuses_a_batch_that_requires_grad():
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    with pytest.raises(ValueError, match="inplace=True cannot overwrite x"):
        SalfMix(grid=2, inplace=True, warmup_epochs=0)(x, labels(2), saliency=torch.rand(2, 8, 8))
    out, _ = SalfMix(grid=2, warmup_epochs=0)(
        x, labels(2), saliency=torch.rand(2, 8, 8)
    )  # out of place: allowed
    assert out.requires_grad


# -- bad inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"grid": 0}, ValueError, "grid"),
        ({"grid": 2.0}, TypeError, "grid"),
        ({"grid": True}, TypeError, "grid"),
        ({"ratio": 0.0}, ValueError, "ratio"),
        ({"ratio": 1.01}, ValueError, "ratio"),
        ({"ratio": "0.3"}, TypeError, "ratio"),
        ({"prob": -0.1}, ValueError, "prob"),
        ({"prob": 1.5}, ValueError, "prob"),
        ({"saliency_mode": "test"}, ValueError, "saliency_mode"),
        ({"saliency_mode": None}, ValueError, "saliency_mode"),
        ({"pool": 1}, TypeError, "pool"),
        ({"inplace": 1}, TypeError, "inplace"),
        ({"generator": 3}, TypeError, "generator"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"label_smoothing": 2.0}, ValueError, "label_smoothing"),
    ],
)
@pytest.mark.parametrize("cls", [SalfMix, RandomSelfMix])
def test_bad_constructor_arguments(cls, kwargs, error, name):
    with pytest.raises(error, match=name):
        cls(**kwargs)


def test_bad_call_arguments():
    t = SalfMix(grid=4, warmup_epochs=0)
    x = torch.rand(2, 3, 8, 8)
    sal = torch.rand(2, 8, 8)
    y = labels(2)
    with pytest.raises(TypeError, match="x"):
        t(x.numpy(), y, saliency=sal)
    with pytest.raises(ValueError, match="x"):
        t(x[0], y, saliency=sal)
    with pytest.raises(TypeError, match="x"):
        t(torch.ones(2, 3, 8, 8, dtype=torch.int64), y, saliency=sal)
    with pytest.raises(ValueError, match="target"):
        t(x, labels(3), saliency=sal)
    with pytest.raises(ValueError, match="saliency"):
        t(x, y, saliency=torch.rand(2, 8, 7))
    with pytest.raises(ValueError, match="saliency"):
        t(x, y, saliency=torch.rand(2, 1, 8, 8))
    with pytest.raises(TypeError, match="saliency"):
        t(x, y, saliency=[[0.0]])
    with pytest.raises(ValueError, match=r"model=.*saliency="):
        t(x, y)
    with pytest.raises(TypeError, match="generator"):
        t(x, y, saliency=sal, generator="seed")
    with pytest.raises(ValueError, match="grid"):
        SalfMix(grid=9, warmup_epochs=0)(x, y, saliency=sal)
    with pytest.raises(ValueError, match="grid"):
        RandomSelfMix(grid=5, warmup_epochs=0)(torch.rand(1, 3, 4, 16), labels(1))
    with pytest.raises(ValueError, match="grid"):
        t.plan(torch.rand(2, 3, 8))
    with pytest.raises(TypeError, match="saliency"):
        t.plan("map")
    with pytest.raises(ValueError, match="saliency"):
        t.plan(torch.rand(8, 8))


def test_repr_names_arguments():
    text = repr(SalfMix(grid=3, ratio=0.25))
    assert text.startswith("SalfMix(") and "grid=3" in text and "ratio=0.25" in text
