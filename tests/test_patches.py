"""Geometry and pixel operations of self-mixing (salfmix_transforms.patches, Algorithm 1)."""

from __future__ import annotations

import math

import pytest
import torch

from salfmix_transforms.boxes import box_mask
from salfmix_transforms.patches import (
    SelfMixPlan,
    cell_size,
    copy_patches,
    extreme_cells,
    fill_patches,
    patch_corners,
    patch_size,
    pool_saliency,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# One side of the package's vectorized helpers at a time (the package only needs them together).


def pick_cells(pooled: torch.Tensor, largest: bool, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """R_m (largest) or R_l of each pooled map with :func:`extreme_cells` and fresh tie-break noise."""
    batch, grid_h, grid_w = pooled.shape
    noise = torch.rand((batch, 1, grid_h * grid_w), generator=generator).expand(batch, 2, grid_h * grid_w)
    cell = extreme_cells(pooled, noise)[:, 0 if largest else 1]
    return cell[:, 0], cell[:, 1]


def random_cells(batch, grid_height, grid_width, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """What RandomSelfMix draws: one uniform cell per sample."""
    rows = torch.randint(0, grid_height, (batch,), generator=generator, device=device)
    cols = torch.randint(0, grid_width, (batch,), generator=generator, device=device)
    return rows, cols


def place_patches(cell_rows, cell_cols, cell_h, cell_w, patch_h, patch_w, height, width, generator):
    """Corners of one patch per sample around the given cells (:func:`patch_corners`, Alg. 1 lines 4-5)."""
    batch = cell_rows.shape[0]
    cells = torch.stack((cell_rows, cell_cols), dim=1).long().view(batch, 1, 2)
    uniforms = torch.rand((batch, 1, 2), generator=generator)
    corners = patch_corners(cells, cell_h, cell_w, patch_h, patch_w, height, width, uniforms)
    return corners[:, 0, 0], corners[:, 0, 1]


def make_plan(src_top, src_left, dst_top, dst_left, ph, pw, applied=None) -> SelfMixPlan:
    src_top, src_left, dst_top, dst_left = (
        torch.as_tensor(v, dtype=torch.long) for v in (src_top, src_left, dst_top, dst_left)
    )
    batch = src_top.shape[0]
    if applied is None:
        applied = torch.ones(batch, dtype=torch.bool)
    zeros = torch.zeros(batch, 2, dtype=torch.long)
    return SelfMixPlan(
        src_top=src_top,
        src_left=src_left,
        dst_top=dst_top,
        dst_left=dst_left,
        patch_height=ph,
        patch_width=pw,
        max_cell=zeros,
        min_cell=zeros,
        cell_height=1,
        cell_width=1,
        applied=torch.as_tensor(applied, dtype=torch.bool),
    )


def reference_copy(x: torch.Tensor, plan: SelfMixPlan) -> torch.Tensor:
    """Slow per-sample reference of Algorithm 1 line 6 (test-only loop)."""
    out = x.clone()
    ph, pw = plan.patch_height, plan.patch_width
    for b in range(x.shape[0]):
        if not plan.applied[b]:
            continue
        st, sl, dt, dl = (int(v[b]) for v in (plan.src_top, plan.src_left, plan.dst_top, plan.dst_left))
        out[b, :, dt : dt + ph, dl : dl + pw] = x[b, :, st : st + ph, sl : sl + pw]
    return out


def valid_positions(cell_index: int, cell: int, patch: int, size: int) -> set[int]:
    """Brute force: every top row that contains the whole cell (or lies inside it if the patch is smaller)."""
    start, end = cell_index * cell, cell_index * cell + cell
    positions = set()
    for p in range(size - patch + 1):
        if patch >= cell and p <= start and p + patch >= end:
            positions.add(p)
        if patch < cell and p >= start and p + patch <= end:
            positions.add(p)
    return positions


# -- sizes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "grid", "expected"),
    [(32, 32, 4, (8, 8)), (24, 40, 4, (6, 10)), (10, 10, 3, (3, 3)), (7, 9, 7, (1, 1)), (5, 5, 1, (5, 5))],
)
def test_cell_size(height, width, grid, expected):
    assert cell_size(height, width, grid) == expected


def test_cell_size_grid_too_big():
    with pytest.raises(ValueError, match="grid"):
        cell_size(8, 16, 9)


@pytest.mark.parametrize(
    ("height", "width", "ratio", "expected"),
    [
        (32, 32, 0.3, (9, 9)),
        (24, 40, 0.3, (7, 12)),
        (32, 32, 1.0, (32, 32)),
        (10, 10, 0.01, (1, 1)),  # at least one pixel
        (100, 100, 0.29, (29, 29)),  # 0.29 * 100 == 28.999999999999996 in binary
        (64, 64, 0.5, (32, 32)),
    ],
)
def test_patch_size(height, width, ratio, expected):
    assert patch_size(height, width, ratio) == expected


@pytest.mark.parametrize("ratio", [0.0, 1.5, -0.1])
def test_patch_size_bad_ratio(ratio):
    with pytest.raises(ValueError, match="ratio"):
        patch_size(32, 32, ratio)


# -- pooling and cells -----------------------------------------------------------------------------------


def test_pool_saliency_is_block_mean():
    sal = torch.rand(3, 32, 32, generator=gen())
    pooled = pool_saliency(sal, 8, 8)
    expected = sal.reshape(3, 4, 8, 4, 8).mean(dim=(2, 4))
    assert pooled.shape == (3, 4, 4)
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, expected)


def test_pool_saliency_non_divisible_and_non_square():
    sal = torch.rand(2, 10, 23, generator=gen(1), dtype=torch.float64)
    pooled = pool_saliency(sal, 3, 5)  # floor(10/3)=3 rows, floor(23/5)=4 cols: the rest is dropped
    expected = sal[:, :9, :20].reshape(2, 3, 3, 4, 5).mean(dim=(2, 4)).float()
    assert pooled.shape == (2, 3, 4)
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, expected)


def test_pool_saliency_kernel_one_is_the_map():
    sal = torch.randint(0, 255, (2, 6, 7), generator=gen(), dtype=torch.uint8)
    pooled = pool_saliency(sal, 1, 1)
    assert pooled.dtype == torch.float32
    assert torch.equal(pooled, sal.float())


def test_pick_cells_known_extremes():
    pooled = torch.rand(5, 4, 6, generator=gen()) + 1.0
    pooled[:, 1, 4] = 5.0
    pooled[:, 3, 0] = -2.0
    rows, cols = pick_cells(pooled, True, gen())
    assert rows.dtype == torch.long and cols.dtype == torch.long
    assert rows.tolist() == [1] * 5 and cols.tolist() == [4] * 5
    rows, cols = pick_cells(pooled, False, gen())
    assert rows.tolist() == [3] * 5 and cols.tolist() == [0] * 5


def test_pick_cells_ties_are_random_among_tied_cells_only():
    pooled = torch.zeros(2000, 3, 3)
    pooled[:, 0, 2] = 1.0
    pooled[:, 2, 1] = 1.0  # two tied maxima
    rows, cols = pick_cells(pooled, True, gen())
    chosen = set(zip(rows.tolist(), cols.tolist()))
    assert chosen == {(0, 2), (2, 1)}
    share = (rows == 0).float().mean().item()
    assert 0.4 < share < 0.6


def test_pick_cells_constant_map_gives_random_cells():
    pooled = torch.full((1000, 4, 4), 0.25)
    for largest in (True, False):
        rows, cols = pick_cells(pooled, largest, gen())
        chosen = set(zip(rows.tolist(), cols.tolist()))
        assert len(chosen) == 16  # every cell can be chosen


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_pick_cells_non_finite_gives_random_cells(bad):
    pooled = torch.rand(500, 4, 4, generator=gen())
    pooled[:, 1, 1] = 10.0
    pooled[:250, 2, 3] = bad  # the first half is invalid
    for largest in (True, False):
        rows, cols = pick_cells(pooled, largest, gen(1))
        assert ((rows >= 0) & (rows < 4) & (cols >= 0) & (cols < 4)).all()
        invalid_cells = set(zip(rows[:250].tolist(), cols[:250].tolist()))
        assert len(invalid_cells) >= 12
    # the valid half still gets its argmax
    rows, cols = pick_cells(pooled, True, gen(2))
    assert (rows[250:] == 1).all() and (cols[250:] == 1).all()


def test_random_cells_cover_grid():
    rows, cols = random_cells(3000, 3, 5, gen(), "cpu")
    assert rows.dtype == torch.long and rows.shape == (3000,)
    assert set(zip(rows.tolist(), cols.tolist())) == {(r, c) for r in range(3) for c in range(5)}


# -- placement -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell_row", "cell_col", "cell", "patch", "size"),
    [
        (1, 2, 8, 16, 32),  # patch larger than the cell: 9 positions in each direction
        (3, 0, 8, 16, 32),  # clipped at the bottom / left border
        (0, 3, 8, 9, 32),  # o = floor(32 * 0.3)
        (1, 1, 16, 3, 32),  # patch smaller than the cell: lies inside the cell
        (2, 1, 3, 3, 10),  # patch == cell: a single position
        (0, 0, 5, 10, 10),  # patch == image
    ],
)
def test_place_patches_uniform_over_valid_positions(cell_row, cell_col, cell, patch, size):
    batch = 4000
    rows = torch.full((batch,), cell_row, dtype=torch.long)
    cols = torch.full((batch,), cell_col, dtype=torch.long)
    top, left = place_patches(rows, cols, cell, cell, patch, patch, size, size, gen())
    assert top.dtype == torch.long and top.shape == (batch,)
    for drawn, index in ((top, cell_row), (left, cell_col)):
        valid = valid_positions(index, cell, patch, size)
        assert set(drawn.tolist()) == valid
        counts = torch.bincount(drawn, minlength=size)[sorted(valid)].float()
        mean = batch / len(valid)
        assert (counts >= 0.5 * mean).all() and (counts <= 1.5 * mean).all()


def test_place_patches_non_square():
    # 24x40 image, grid 4: cells 6x10, patch 7x12
    batch = 3000
    rows = torch.randint(0, 4, (batch,), generator=gen())
    cols = torch.randint(0, 4, (batch,), generator=gen(1))
    top, left = place_patches(rows, cols, 6, 10, 7, 12, 24, 40, gen(2))
    assert ((top >= 0) & (top + 7 <= 24) & (left >= 0) & (left + 12 <= 40)).all()
    assert ((top <= rows * 6) & (top + 7 >= rows * 6 + 6)).all()
    assert ((left <= cols * 10) & (left + 12 >= cols * 10 + 10)).all()
    for r in range(4):
        assert set(top[rows == r].tolist()) == valid_positions(r, 6, 7, 24)


# -- pixel operations ------------------------------------------------------------------------------------


def test_copy_patches_matches_reference():
    x = torch.rand(4, 3, 12, 10, generator=gen())
    plan = make_plan([0, 5, 2, 7], [1, 0, 6, 3], [6, 0, 2, 1], [5, 5, 0, 4], 4, 3, [True, True, True, False])
    out = copy_patches(x, plan)
    torch.testing.assert_close(out, reference_copy(x, plan), rtol=0, atol=0)
    assert torch.equal(out[3], x[3])
    assert torch.equal(out[0, :, 6:10, 5:8], x[0, :, 0:4, 1:4])


def test_copy_patches_overlap_reads_original():
    # P_m = rows 0..3, P_l = rows 2..5 of a single column image: overlap on rows 2..3
    x = torch.arange(8.0).view(1, 1, 8, 1).expand(1, 2, 8, 1).contiguous()
    plan = make_plan([0], [0], [2], [0], 4, 1)
    out = copy_patches(x, plan)
    assert out[0, 0, :, 0].tolist() == [0, 1, 0, 1, 2, 3, 6, 7]
    assert x[0, 0, :, 0].tolist() == list(range(8))  # untouched


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_copy_patches_keeps_dtype_and_channels_last(dtype):
    x = torch.rand(3, 3, 16, 16, generator=gen()).to(dtype).to(memory_format=torch.channels_last)
    before = x.clone()
    plan = make_plan([0, 3, 8], [8, 1, 0], [8, 9, 2], [0, 4, 7], 5, 6)
    out = copy_patches(x, plan)
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, before)
    assert torch.equal(out, reference_copy(before, plan))


@pytest.mark.parametrize("channels_last", [False, True])
def test_copy_patches_inplace_overwrites_x_with_the_same_result(channels_last):
    x = torch.rand(3, 3, 16, 16, generator=gen())
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    # sample 0: P_m and P_l overlap; sample 2 is not applied
    plan = make_plan([0, 3, 8], [8, 1, 0], [2, 9, 2], [5, 4, 7], 5, 6, applied=[True, True, False])
    expected = reference_copy(x, plan)
    assert torch.equal(copy_patches(x, plan), expected)
    out = copy_patches(x, plan, inplace=True)
    assert out is x
    assert torch.equal(x, expected)


def test_fill_patches_inplace():
    x = torch.rand(2, 3, 8, 8, generator=gen())
    expected = fill_patches(x, torch.tensor([0, 4]), torch.tensor([1, 2]), 3, 3, 7.0)
    out = fill_patches(x, torch.tensor([0, 4]), torch.tensor([1, 2]), 3, 3, 7.0, inplace=True)
    assert out is x and torch.equal(x, expected)


def test_copy_patches_identity_window_and_full_image():
    x = torch.rand(2, 3, 6, 6, generator=gen())
    out = copy_patches(x, make_plan([0, 0], [0, 0], [0, 0], [0, 0], 6, 6))
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_fill_patches():
    x = torch.rand(3, 2, 8, 9, generator=gen()).to(memory_format=torch.channels_last)
    before = x.clone()
    top, left = torch.tensor([0, 4, 2]), torch.tensor([6, 0, 3])
    out = fill_patches(x, top, left, 4, 3, -1.5, torch.tensor([True, True, False]))
    assert torch.equal(x, before)
    assert out.is_contiguous(memory_format=torch.channels_last)
    expected = before.clone()
    expected[0, :, 0:4, 6:9] = -1.5
    expected[1, :, 4:8, 0:3] = -1.5
    assert torch.equal(out, expected)
    all_applied = fill_patches(x, top, left, 4, 3, 2.0)
    assert (all_applied[2, :, 2:6, 3:6] == 2.0).all()


def test_box_mask_matches_loop():
    top = torch.tensor([0, 3, -2, 5, 4])
    left = torch.tensor([1, -3, 4, 0, 2])
    bottom = torch.tensor([4, 9, 2, 5, 20])
    right = torch.tensor([3, 2, 30, 7, 3])
    mask = box_mask(top, left, bottom, right, 6, 7)
    assert mask.shape == (5, 1, 6, 7) and mask.dtype == torch.bool
    expected = torch.zeros(5, 1, 6, 7, dtype=torch.bool)
    for b in range(5):
        for i in range(6):
            for j in range(7):
                expected[b, 0, i, j] = top[b] <= i < bottom[b] and left[b] <= j < right[b]
    assert torch.equal(mask, expected)
    assert not mask[3].any()  # empty box (top == bottom)


def test_box_mask_python_ints():
    mask = box_mask(1, 2, 3, 5, 4, 6)
    assert mask.shape == (1, 1, 4, 6)
    assert mask.sum() == 6 and mask[0, 0, 1:3, 2:5].all()


@pytest.mark.parametrize("layout", ["transposed", "strided", "height_one"])
def test_copy_patches_unusual_layouts(layout):
    if layout == "transposed":  # dense, but H and W cannot merge into one dimension
        x = torch.rand(3, 2, 11, 9, generator=gen()).transpose(2, 3)
    elif layout == "strided":  # not dense
        x = torch.rand(3, 2, 9, 22, generator=gen())[..., ::2]
    else:
        x = torch.rand(3, 2, 1, 11, generator=gen())
    height, width = x.shape[2], x.shape[3]
    ph, pw = min(3, height), 4
    plan = make_plan(
        [0, height - ph, 0], [0, 5, width - pw], [height - ph, 0, 0], [6, 1, 0], ph, pw, [True, True, False]
    )
    before = x.clone()
    out = copy_patches(x, plan)
    assert torch.equal(x, before)
    assert out.stride() == x.clone().stride()
    assert torch.equal(out, reference_copy(before, plan))


def reference_extreme_cell(values: list[float], noise: list[float], largest: bool) -> int:
    """Algorithm 1, line 2 with the package's tie rule, one map at a time in plain Python."""
    if not all(math.isfinite(v) for v in values):
        candidates = range(len(values))  # NaN / inf anywhere: every cell is a candidate
    else:
        extreme = max(values) if largest else min(values)
        candidates = [i for i, v in enumerate(values) if v == extreme]
    return max(candidates, key=lambda i: noise[i])


def test_extreme_cells_matches_a_per_map_reference():
    g = torch.Generator().manual_seed(3)
    pooled = torch.randint(0, 4, (40, 3, 5), generator=g).float()  # few values: many ties
    pooled[0] = 1.0
    pooled[1, 0, 0] = float("nan")
    pooled[2, 2, 4] = float("inf")
    pooled[3, 1, 2] = float("-inf")
    noise = torch.rand(40, 2, 15, generator=g)
    cells = extreme_cells(pooled, noise)
    assert cells.shape == (40, 2, 2) and cells.dtype == torch.long
    for b in range(40):
        values = pooled[b].flatten().tolist()
        for side, largest in enumerate((True, False)):
            index = reference_extreme_cell(values, noise[b, side].tolist(), largest)
            assert cells[b, side].tolist() == [index // 5, index % 5]


def test_copy_patches_contiguous_and_channels_last_agree():
    from salfmix_transforms import SalfMix

    x = torch.rand(8, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    plan = SalfMix(prob=0.5).plan(torch.rand(8, 20, 24), torch.Generator().manual_seed(2))
    fast = copy_patches(x, plan)
    other = copy_patches(x.contiguous(memory_format=torch.channels_last), plan)
    assert torch.equal(fast, other)
