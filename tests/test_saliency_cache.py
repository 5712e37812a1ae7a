"""SaliencyCache (issue 14): maps in the sample's own coordinates, written from the step's input gradient.

Hand-built cases: a hot spot that moves with a flip / crop lands where expected; padding and pasted pixels
never write; two DDP ranks see every write; bad input is refused.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torchvision import tv_tensors
from torchvision.transforms import v2

from salfmix_transforms import CutMix, HybridMix, Mixup, SalfMix
from salfmix_transforms.saliency import gradient_saliency, saliency_from_gradient
from salfmix_transforms.saliency_cache import (
    AddSourceCoordinates,
    SaliencyCache,
    ViewCells,
    source_coordinates,
)

SIZE = 32  # images 32x32, cache 16x16: a cell is 2x2 pixels


def _view(transform: v2.Transform, seed: int = 0) -> torch.Tensor:
    """The coordinate map (2, H, W) of one view through ``transform``."""
    torch.manual_seed(seed)
    image = tv_tensors.Image(torch.zeros(3, SIZE, SIZE))
    sample = v2.Compose([AddSourceCoordinates(), transform])({"image": image})
    return sample["coords"].as_subclass(torch.Tensor)


def _hot(rows: slice, cols: slice, size: int = SIZE) -> torch.Tensor:
    saliency = torch.zeros(size, size)
    saliency[rows, cols] = 1.0
    return saliency


IDENTITY = source_coordinates(SIZE, SIZE)


def _relative(saliency: torch.Tensor) -> torch.Tensor:
    """A map as a write of the whole view stores it: divided by its mean (the cache keeps each write relative
    to the sample's mean over the cells it measures, so that writes at other gradient scales compare)."""
    return saliency / saliency.mean()


def test_source_coordinates_are_pixel_centres_strictly_inside_the_unit_square():
    coords = source_coordinates(4, 8)
    assert coords.shape == (2, 4, 8)
    assert torch.equal(coords[0, :, 0], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert torch.equal(coords[1, 0], (torch.arange(8) + 0.5) / 8)


def test_bytes_per_sample_fit_imagenet_in_one_gigabyte():
    cache = SaliencyCache(10)
    assert cache.bytes_per_sample == 16 * 16 * 2 + 4
    assert 1_281_167 * cache.bytes_per_sample < 1e9


def test_a_hot_spot_seen_through_a_flip_is_stored_where_it_is_in_the_original_image():
    cache = SaliencyCache(3)
    flipped = _view(v2.RandomHorizontalFlip(p=1.0))
    # In the flipped view the object (original columns 0-7) is at columns 24-31.
    cache.write(torch.tensor([1]), flipped[None], _hot(slice(0, 8), slice(24, 32))[None], epoch=0)
    stored = cache.read(torch.tensor([1]), IDENTITY[None])[0]
    assert torch.equal(stored, _relative(_hot(slice(0, 8), slice(0, 8))))
    # Read through another flip, it follows that view: back at columns 24-31.
    assert torch.equal(
        cache.read(torch.tensor([1]), flipped[None])[0], _relative(_hot(slice(0, 8), slice(24, 32)))
    )
    assert cache.written_epoch.tolist() == [-1, 0, -1]


def test_a_hot_spot_seen_through_a_padded_crop_lands_where_expected_and_padding_never_writes():
    # Pad 4 and crop at (0, 0): view pixel (r, c) is original (r - 4, c - 4); rows/cols 0-3 are padding.
    crop = v2.Compose([v2.Pad(4), v2.RandomCrop(SIZE)])
    coords = None
    for seed in range(200):
        coords = _view(crop, seed)
        if float(coords[0, 0, 0]) == 0.0 and coords[:, 4, 4].tolist() == [0.5 / SIZE, 0.5 / SIZE]:
            break
    else:
        pytest.fail("no crop at the top-left corner in 200 draws")
    cache = SaliencyCache(1)
    cache.maps.fill_(7.0)  # what was there before
    cache.written_epoch.fill_(2)
    saliency = torch.full((SIZE, SIZE), 100.0)  # the padding is hot: it must not be written
    saliency[4:, 4:] = 0.0  # the image part of the view: original rows/cols 0-27
    saliency[4:12, 4:12] = 1.0
    cache.write(torch.tensor([0]), coords[None], saliency[None], epoch=3)
    stored = cache.read(torch.tensor([0]), IDENTITY[None])[0]
    expected = torch.zeros(SIZE, SIZE)
    expected[0:8, 0:8] = 7.0 * 28 * 28 / 64  # at the old level (7) over the 28x28 original pixels shown
    expected[SIZE - 4 :, :] = 7.0  # not in the view: kept
    expected[:, SIZE - 4 :] = 7.0
    torch.testing.assert_close(stored, expected, rtol=1e-2, atol=0.0)  # bfloat16
    assert float(cache.read(torch.tensor([0]), coords[None])[0, :4].abs().sum()) == 0.0  # padding reads 0


def test_a_random_resized_crop_writes_only_the_cells_it_shows():
    cache = SaliencyCache(1)
    cache.written_epoch.fill_(0)  # written before (its 0 map a measurement): the cells not shown keep it
    coords = _view(v2.RandomResizedCrop(SIZE, scale=(0.2, 0.3)), seed=1)
    inside = coords.flatten(1)
    cache.write(torch.tensor([0]), coords[None], torch.ones(1, SIZE, SIZE), epoch=0)
    written = cache.maps[0].float()
    rows = (inside[0] * 16).floor().long().unique()
    cols = (inside[1] * 16).floor().long().unique()
    assert torch.equal(written[rows][:, cols], torch.ones(len(rows), len(cols)))
    assert float(written.sum()) == len(rows) * len(cols)  # nothing outside the crop


def test_reading_a_sample_never_written_gives_a_constant_map_and_salfmix_random_cells():
    cache = SaliencyCache(4)
    maps = cache.read(torch.arange(4), IDENTITY.expand(4, -1, -1, -1))
    assert torch.equal(maps, torch.zeros(4, SIZE, SIZE))
    assert not cache.has_map(torch.arange(4)).any()


def _image_batch(batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(batch) % 2


def test_the_pasted_patch_of_salfmix_never_writes_into_the_samples_map():
    x, y = _image_batch()
    salfmix = SalfMix(grid=4, ratio=0.25, generator=torch.Generator().manual_seed(1), warmup_epochs=0)
    saliency = torch.rand(4, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    salfmix(x, y, saliency=saliency)
    own = salfmix.provenance
    plan = salfmix.plan(saliency, torch.Generator().manual_seed(1))
    for b in range(4):  # exactly P_l is 0
        top, left = int(plan.dst_top[b]), int(plan.dst_left[b])
        expected = torch.ones(SIZE, SIZE)
        expected[top : top + 8, left : left + 8] = 0.0
        assert torch.equal(own[b], expected)
    cache = SaliencyCache(4)
    cache.maps.fill_(-1.0)
    cache.written_epoch.fill_(0)  # maps written before (a first write fills what it cannot see: below)
    cache.write(torch.arange(4), IDENTITY.expand(4, -1, -1, -1), torch.full((4, SIZE, SIZE), 5.0), 1, own)
    stored = cache.read(torch.arange(4), IDENTITY.expand(4, -1, -1, -1))
    assert torch.equal(stored[own == 0], torch.full_like(stored[own == 0], -1.0))  # P_l kept the old value
    assert torch.equal(stored[own == 1], torch.full_like(stored[own == 1], 1.0))  # 5.0 relative to its mean


def test_a_first_write_fills_the_cells_it_cannot_see_with_the_mean_of_those_it_sees():
    """A sample first written after the warm-up (``--salfmix-warmup-epochs 0``, a sample that ``drop_last``
    left out of the warm-up epoch, a resume without a cache) gets pasted over before any measurement: the
    cells under ``P_l`` have none. Left at the never-written 0 they would stay the least salient cells
    for good. They read as the mean of the cells measured; later writes keep a cell's value as before."""
    own = torch.ones(1, SIZE, SIZE)
    own[0, 8:16, 8:16] = 0.0  # a pasted P_l: cells (4..7, 4..7) of the 16x16 map
    saliency = 1.0 + torch.rand(1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    cache = SaliencyCache(1)
    cache.write(torch.arange(1), IDENTITY[None], saliency, 0, own)
    stored = cache.maps[0].float()
    unseen = torch.zeros(16, 16, dtype=torch.bool)
    unseen[4:8, 4:8] = True
    measured_mean = stored[~unseen].mean()
    assert torch.allclose(stored[unseen], measured_mean.expand(16), rtol=1e-2)
    assert (
        stored.min() < measured_mean < stored.max()
    )  # the unseen cells are neither the minimum nor the maximum
    cache.write(torch.arange(1), IDENTITY[None], torch.zeros(1, SIZE, SIZE), 1, torch.zeros(1, SIZE, SIZE))
    assert torch.equal(cache.maps[0].float(), stored)  # written before: nothing seen, nothing changes


def test_salfmix_on_cached_maps_does_not_paste_over_the_same_region_on_every_visit():
    """Visits of one never-written sample without a warm-up, as the training loop runs them: read the map,
    SalfMix, write the step's saliency (fresh random maps here) with the provenance. The first visit's
    ``P_l`` is random (a constant map); it must not become the destination of every later visit (it did:
    its cells stayed at 0)."""
    cache = SaliencyCache(1)
    salfmix = SalfMix(grid=4, ratio=0.25, generator=torch.Generator().manual_seed(1), warmup_epochs=0)
    noise, x, destinations = torch.Generator().manual_seed(2), torch.rand(1, 3, SIZE, SIZE), []
    for epoch in range(8):
        salfmix(x, torch.zeros(1, dtype=torch.long), saliency=cache.read(torch.arange(1), IDENTITY[None]))
        pasted = (salfmix.provenance[0] == 0).nonzero()  # P_l's pixels
        destinations.append(tuple(pasted.min(dim=0).values.tolist()))  # its top-left corner
        fresh = torch.rand(1, SIZE, SIZE, generator=noise)
        cache.write(torch.arange(1), IDENTITY[None], fresh, epoch, salfmix.provenance)
    assert len(set(destinations[1:])) > 1, destinations


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_the_partners_box_of_cutmix_never_writes_and_mixup_moves_by_the_own_share(mode):
    x, y = _image_batch()
    cutmix = CutMix(num_classes=2, mode=mode, generator=torch.Generator().manual_seed(3))
    out, _ = cutmix(x, y)
    own = cutmix.provenance
    partner = x.flip(0)
    assert torch.equal(
        own == 0, (out != x).any(1) & (out == partner).all(1) | ((own == 0) & (x == partner).all(1))
    )
    assert set(own.unique().tolist()) <= {0.0, 1.0}

    mixup = Mixup(num_classes=2, mode=mode, generator=torch.Generator().manual_seed(4))
    out, _ = mixup(x, y)
    lam = mixup.provenance[:, 0, 0]
    torch.testing.assert_close(out, x * lam.view(-1, 1, 1, 1) + partner * (1 - lam.view(-1, 1, 1, 1)))
    cache = SaliencyCache(4)
    cache.written_epoch.fill_(0)  # maps of 0 written before
    cache.write(
        torch.arange(4), IDENTITY.expand(4, -1, -1, -1), torch.ones(4, SIZE, SIZE), 1, mixup.provenance
    )
    stored = cache.read(torch.arange(4), IDENTITY.expand(4, -1, -1, -1))[:, 0, 0]
    torch.testing.assert_close(stored, lam, atol=1e-2, rtol=0)  # 0 -> 1 by the own share (bfloat16)


def test_hybridmix_provenance_is_the_product_of_its_two_steps():
    x, y = _image_batch()
    saliency = torch.rand(4, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    hybrid = HybridMix.v3(
        num_classes=2, warmup_epochs=0, mode="elem", generator=torch.Generator().manual_seed(6)
    )
    hybrid(x, y, saliency=saliency)
    salfmix_own = hybrid.salfmix.provenance
    assert salfmix_own is not None and float(salfmix_own.min()) == 0.0
    own = hybrid.provenance
    assert torch.all(own <= salfmix_own) and set(own.unique().tolist()) <= {0.0, 1.0}


def test_the_step_gradient_gives_the_exact_saliency_of_the_view():
    # Saliency for free: the training step's own backward (x.requires_grad_) gives eq. (2)-(3) exactly.
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4096, 2)
    )
    x, y = _image_batch()
    exact = gradient_saliency(model, x, y, mode="eval")
    x_step = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x_step), y, reduction="sum").backward()
    torch.testing.assert_close(saliency_from_gradient(x_step.grad), exact)


def test_a_sample_with_a_non_finite_gradient_is_not_written():
    cache = SaliencyCache(2)
    saliency = torch.ones(2, SIZE, SIZE)
    saliency[1, 0, 0] = float("nan")
    cache.write(torch.arange(2), IDENTITY.expand(2, -1, -1, -1), saliency, epoch=0)
    assert cache.written_epoch.tolist() == [0, -1]
    assert float(cache.maps[1].float().abs().sum()) == 0.0


def test_stale_maps_are_found_by_age():
    cache = SaliencyCache(3)
    cache.written_epoch.copy_(torch.tensor([-1, 2, 5], dtype=torch.int32))
    assert cache.stale(torch.arange(3), epoch=6, max_age=3).tolist() == [False, True, False]
    assert cache.stale(torch.arange(3), epoch=6, max_age=None).tolist() == [False, False, False]


@pytest.mark.parametrize(
    ("call", "exc", "needle"),
    [
        (lambda c: c.read(torch.tensor([0]), torch.zeros(1, 3, SIZE, SIZE)), ValueError, "coords"),
        (lambda c: c.read(torch.tensor([0]), torch.zeros(2, SIZE, SIZE)), ValueError, "coords"),
        (lambda c: c.read(torch.tensor([0]), None), ValueError, "coords"),
        (lambda c: c.read(torch.tensor([5]), IDENTITY[None]), ValueError, "indices"),
        (lambda c: c.read(torch.tensor([-1]), IDENTITY[None]), ValueError, "indices"),
        (lambda c: c.read(torch.tensor([0.0]), IDENTITY[None]), TypeError, "indices"),
        (lambda c: c.read(torch.tensor([True]), IDENTITY[None]), TypeError, "indices"),  # not 0 / 1
        (
            lambda c: c.write(torch.tensor([0]), IDENTITY[None], torch.ones(1, 8, 8), 0),
            ValueError,
            "saliency",
        ),
        (lambda c: c.check_dataset(6), ValueError, "another data set"),
        (lambda c: c.load_state_dict(SaliencyCache(6).state_dict()), ValueError, "data set size"),
    ],
)
def test_bad_input_is_refused_with_the_argument_named(call, exc, needle):
    with pytest.raises(exc, match=needle):
        call(SaliencyCache(5))


def test_state_dict_round_trip():
    cache = SaliencyCache(3)
    cache.write(torch.tensor([2]), IDENTITY[None], torch.rand(1, SIZE, SIZE), epoch=4)
    again = SaliencyCache(3)
    again.load_state_dict(cache.state_dict())
    assert torch.equal(again.maps, cache.maps) and torch.equal(again.written_epoch, cache.written_epoch)


def test_a_cache_saved_before_writes_were_relative_is_made_relative_on_restore():
    """A checkpoint from before relative writes holds absolute maps (input gradients ~1e-8): mixed with the
    relative cells (~1) of the resumed run's writes, its cells that a view does not show would look ~0,
    the least salient, and be pasted over again. Restored, each written map is divided by the mean of its
    measured (nonzero) cells, and its zero cells take that mean."""
    old = SaliencyCache(3)
    old.maps[1] = (1e-8 * torch.arange(1.0, 257.0)).view(16, 16)
    old.maps[1, :2, :2] = 0.0  # never measured (a first visit's P_l was left at 0 then): the minimum for good
    old.written_epoch[1] = 4
    state = {key: value for key, value in old.state_dict().items() if key != "relative"}
    restored = SaliencyCache(3)
    restored.load_state_dict(state)
    absolute = old.maps[1].float()
    expected = absolute / absolute[absolute > 0].mean()
    expected[:2, :2] = 1.0  # the mean of the measured cells
    torch.testing.assert_close(restored.maps[1].float(), expected, rtol=1e-2, atol=0.0)
    assert torch.equal(restored.maps[[0, 2]], old.maps[[0, 2]])  # never written: still 0
    again = SaliencyCache(3)
    again.load_state_dict(restored.state_dict())  # today's format: as saved
    assert torch.equal(again.maps, restored.maps)


# -- DDP: every rank sees every write -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_writes(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cache = SaliencyCache(6)
        # Rank 0 writes samples 0 and 2 with a constant map; rank 1 sample 5 (a batch of another size) with
        # a map hot on its left half: stored relative to their means, the maxima are 1 and 2.
        indices = torch.tensor([0, 2]) if rank == 0 else torch.tensor([5])
        saliency = torch.ones(len(indices), SIZE, SIZE)
        if rank == 1:
            saliency[:, :, SIZE // 2 :] = 0.0
        cache.write(indices, IDENTITY.expand(len(indices), -1, -1, -1), saliency, epoch=1, distributed=True)
        torch.save(cache.state_dict(), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ddp_ranks_see_every_write(tmp_path):
    mp.spawn(_rank_writes, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for state in states:
        assert state["written_epoch"].tolist() == [1, -1, 1, -1, -1, 1]
        maxima = state["maps"].float().amax(dim=(1, 2)).tolist()
        assert maxima == [1.0, 0.0, 1.0, 0.0, 0.0, 2.0]
    assert torch.equal(states[0]["maps"], states[1]["maps"])


def test_albumentations_moves_the_coordinates_like_the_image():
    import albumentations as A
    import numpy as np

    from salfmix_transforms.saliency_cache import source_coordinates_hwc

    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    image[0:8, 0:8] = 255  # the object
    pipe = A.Compose(
        [A.HorizontalFlip(p=1.0), A.Rotate(limit=(90, 90), p=1.0)],
        additional_targets={"coords": "mask"},
        seed=0,
    )
    out = pipe(image=image, coords=source_coordinates_hwc(SIZE, SIZE))
    coords = torch.from_numpy(out["coords"]).permute(2, 0, 1)[None]
    cache = SaliencyCache(1)
    hot = torch.from_numpy(out["image"][:, :, 0] > 0).float()  # the object in the rotated view
    cache.write(torch.tensor([0]), coords, hot[None], epoch=0)
    assert torch.equal(
        cache.read(torch.tensor([0]), IDENTITY[None])[0], _relative(_hot(slice(0, 8), slice(0, 8)))
    )


def test_the_lowres_pass_runs_the_model_on_the_down_scaled_batch():
    from salfmix_transforms.saliency import lowres_gradient_saliency

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1))
    model.append(torch.nn.Flatten()).append(torch.nn.Linear(4, 2))
    seen = []
    model[0].register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    x, y = _image_batch()
    maps = lowres_gradient_saliency(model, x, y, 0.5)
    assert seen == [(4, 3, 16, 16)] and maps.shape == (4, SIZE, SIZE) and torch.isfinite(maps).all()
    assert torch.equal(maps[:, ::2, ::2], maps[:, 1::2, 1::2])  # one value per 2x2 block (nearest)
    out, _ = SalfMix(saliency_scale=0.5, warmup_epochs=0)(x, y, model=model)
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="saliency_scale"):
        SalfMix(saliency_scale=0.0)


def test_provenance_needs_no_switch_and_the_old_switch_warns():
    """Provenance out of the call path (issue 20, item 5): every call records what it drew, and the cache
    reads ``provenance`` without any switch; ``track_provenance = True`` is deprecated."""
    cutmix = CutMix(cutmix_alpha=1.0, num_classes=4)
    x = torch.rand(2, 3, 8, 8)
    cutmix(x, torch.tensor([0, 1]))
    own = cutmix.provenance
    assert own.shape == (2, 8, 8) and ((own == 0) | (own == 1)).all()
    with pytest.warns(DeprecationWarning, match="track_provenance is deprecated"):
        cutmix.track_provenance = True


def test_pixels_from_outside_the_image_read_zero_and_write_nothing():
    """Padding (coordinates outside (0, 1)) and NaN coordinates are no cell: they read 0 and never move a
    cell's value; the in-image pixels of the same view still do."""
    from salfmix_transforms.saliency_cache import SaliencyCache, source_coordinates

    cache = SaliencyCache(1, resolution=4)
    coords = source_coordinates(8, 8).unsqueeze(0).clone()
    coords[0, :, :, :2] = float("nan")
    coords[0, 0, :2, :] = -0.25
    coords[0, 1, -1, :] = 1.5
    saliency = torch.full((1, 8, 8), 5.0)
    cache.write(torch.tensor([0]), coords, saliency, epoch=0)
    read = cache.read(torch.tensor([0]), coords)
    outside = torch.zeros(8, 8, dtype=torch.bool)
    outside[:, :2], outside[:2, :], outside[-1, :] = True, True, True
    assert (read[0][outside] == 0).all() and (read[0][~outside] == 1.0).all()  # 5.0 relative to its mean


def _random_views(batch: int, size: int, seed: int) -> torch.Tensor:
    """Coordinate maps (B, 2, H, W) of random shifted, resized crops: some pixels padding, some NaN."""
    gen = torch.Generator().manual_seed(seed)
    scale = 0.6 + 0.8 * torch.rand(batch, 2, 1, 1, generator=gen)
    shift = torch.rand(batch, 2, 1, 1, generator=gen) - 0.5
    coords = (source_coordinates(size, size).unsqueeze(0) - 0.5) * scale + 0.5 + 0.3 * shift
    coords[0, :, 0, :3] = float("nan")
    return coords


def test_located_views_read_and_write_exactly_as_their_coordinates():
    """``locate(coords)`` once, then ``read`` / ``write`` with it (what the engine does each step): the same
    maps, means and confidences as passing the coordinates to each call."""
    batch, indices = 6, torch.tensor([4, 0, 2, 5, 1, 3])
    coords = _random_views(batch, SIZE, seed=0)
    saliency = torch.rand(batch, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    own = (torch.rand(batch, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) > 0.3).float()
    by_coords, by_cells = SaliencyCache(batch, resolution=8), SaliencyCache(batch, resolution=8)
    cells = by_cells.locate(coords)
    for cache, where in ((by_coords, coords), (by_cells, cells)):
        cache.write(indices, where, saliency, epoch=1, own=own)
    assert torch.equal(by_coords.maps, by_cells.maps) and float(by_cells.maps.float().abs().sum()) > 0
    assert torch.equal(by_coords.written_epoch, by_cells.written_epoch)
    assert torch.equal(by_coords.read(indices, coords), by_cells.read(indices, cells))
    update = by_cells.local_update(indices, cells, saliency, own)
    for expected, got in zip(by_coords.local_update(indices, coords, saliency, own), update):
        assert torch.equal(expected, got)


def test_located_views_give_each_pixel_its_cell_and_padding_none():
    cache = SaliencyCache(2, resolution=4)
    coords = source_coordinates(8, 8).unsqueeze(0).expand(2, -1, -1, -1).clone()
    coords[1, 1] = 1.0 - coords[1, 1]  # sample 1 flipped left-right
    coords[1, :, 0, 0] = -0.5  # padding
    cells = cache.locate(coords)
    assert cells.index.shape == (2, 8, 8) and cells.index.dtype == torch.long
    rows, cols = torch.meshgrid(torch.arange(8) // 2, torch.arange(8) // 2, indexing="ij")
    assert torch.equal(cells.index[0], rows * 4 + cols)
    flipped = rows * 4 + (3 - cols)
    assert torch.equal(cells.index[1].flatten()[1:], flipped.flatten()[1:])  # the padding pixel: no cell
    assert cells.valid[0].all() and not cells.valid[1, 0, 0] and int(cells.valid[1].sum()) == 63


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda c, cells: c.read(torch.tensor([0]), cells), "indices has 1 entries for a batch of 2 views"),
        (lambda c, cells: c.write(torch.arange(2), cells, torch.ones(2, 8, 8), 0), "saliency"),
        (lambda c, cells: SaliencyCache(5, resolution=8).read(torch.arange(2), cells), "resolution"),
    ],
)
def test_located_views_that_do_not_fit_are_refused(call, needle):
    cache = SaliencyCache(5)
    cells = cache.locate(IDENTITY.expand(2, -1, -1, -1))
    with pytest.raises(ValueError, match=needle):
        call(cache, cells)


def test_huge_but_finite_saliency_is_written_and_minus_inf_is_not():
    """The finiteness check looks at each sample's smallest and largest value, not at a sum that could
    overflow: a map of huge finite values (its sum over the image is above float32's range) is written; one
    with a -inf anywhere is not."""
    cache = SaliencyCache(2)
    saliency = torch.full((2, SIZE, SIZE), 1e37)
    saliency[1, 5, 5] = float("-inf")
    cache.write(torch.arange(2), IDENTITY.expand(2, -1, -1, -1), saliency, epoch=0)
    assert cache.written_epoch.tolist() == [0, -1]
    assert torch.equal(cache.maps[0].float(), torch.ones(16, 16))  # 1e37 relative to its mean


def test_located_views_reordered_or_sliced_like_the_batch_read_their_own_samples():
    """A ``ViewCells`` indexed like the batch (``cells.index[perm]``, a sub-batch) still reads and writes
    each view's own sample, as coordinates indexed the same way do."""
    cache = SaliencyCache(4, resolution=4)
    cache.maps.copy_(torch.arange(4.0).view(4, 1, 1).expand(4, 4, 4))
    coords = source_coordinates(8, 8).unsqueeze(0).expand(4, -1, -1, -1)
    cells, perm = cache.locate(coords), torch.tensor([3, 1, 2, 0])
    reordered = ViewCells(cells.index[perm], cells.valid[perm], cells.resolution)
    assert cache.read(perm, reordered)[:, 0, 0].tolist() == [3.0, 1.0, 2.0, 0.0]
    part = ViewCells(cells.index[1:3], cells.valid[1:3], cells.resolution)
    assert cache.read(torch.tensor([2, 3]), part)[:, 0, 0].tolist() == [2.0, 3.0]
    cache.write(torch.tensor([2, 3]), part, torch.full((2, 8, 8), 7.0), epoch=1)
    assert cache.maps[:, 0, 0].float().tolist() == [0.0, 1.0, 1.0, 1.0]  # 7.0 relative to its mean


def test_views_without_pixels_write_nothing_and_read_empty_maps():
    cache = SaliencyCache(2)
    cache.write(torch.arange(2), torch.zeros(2, 2, 0, 8), torch.zeros(2, 0, 8), epoch=0)
    assert cache.written_epoch.tolist() == [-1, -1]
    assert cache.read(torch.arange(2), torch.zeros(2, 2, 0, 8)).shape == (2, 0, 8)


@pytest.mark.parametrize(
    ("call", "exc", "needle"),
    [
        (lambda c: c.write(torch.arange(2), IDENTITY.expand(2, -1, -1, -1), None, 0), TypeError, "saliency"),
        (
            lambda c: c.write(
                torch.arange(2),
                IDENTITY.expand(2, -1, -1, -1),
                torch.ones(2, SIZE, SIZE),
                0,
                torch.ones(2, 4, 4),
            ),
            ValueError,
            "own",
        ),
        (
            lambda c: c.read(
                torch.arange(2), ViewCells(torch.zeros(2, 4, 4).long(), torch.ones(2, 3, 3).bool(), 16)
            ),
            ValueError,
            "valid",
        ),
        (
            lambda c: c.read(torch.arange(2), tuple(c.locate(IDENTITY.expand(2, -1, -1, -1)))),
            ValueError,
            "locate",
        ),
        (  # a hand-built ViewCells whose cells are not in a 16x16 map
            lambda c: c.read(
                torch.arange(2), ViewCells(torch.full((2, 4, 4), 256), torch.ones(2, 4, 4).bool(), 16)
            ),
            ValueError,
            "coords",
        ),
    ],
)
def test_bad_saliency_own_or_located_views_are_refused_with_the_argument_named(call, exc, needle):
    with pytest.raises(exc, match=needle):
        call(SaliencyCache(5))


def test_an_empty_batch_reads_nothing_and_writes_nothing():
    cache = SaliencyCache(4)
    none = torch.zeros(0, dtype=torch.long)
    coords = torch.zeros(0, 2, SIZE, SIZE)
    assert cache.read(none, coords).shape == (0, SIZE, SIZE)
    cache.write(none, coords, torch.zeros(0, SIZE, SIZE), epoch=0)
    empty = torch.zeros(0, SIZE, SIZE)
    cache.write(none, cache.locate(coords), empty, epoch=0, own=empty)
    assert cache.written_epoch.tolist() == [-1] * 4 and not cache.maps.any()


def test_transposed_coordinates_write_as_their_contiguous_copy():
    """A view rotated by 90 degrees (non-contiguous coordinates, or ViewCells transposed) writes as a copy."""
    coords = torch.rot90(IDENTITY.expand(2, -1, -1, -1), 1, (2, 3))
    saliency = torch.rand(2, SIZE, SIZE)
    rotated, copied = SaliencyCache(2), SaliencyCache(2)
    rotated.write(torch.arange(2), coords, saliency, 0)
    copied.write(torch.arange(2), coords.contiguous(), saliency, 0)
    assert torch.equal(rotated.maps, copied.maps) and rotated.maps.any()
    cells = copied.locate(IDENTITY.expand(2, -1, -1, -1))
    transposed = ViewCells(cells.index.mT, cells.valid.mT, cells.resolution)
    rotated.write(torch.arange(2), transposed, saliency, 1)
    copied.write(torch.arange(2), ViewCells(*(t.contiguous() for t in transposed[:2]), 16), saliency, 1)
    assert torch.equal(rotated.maps, copied.maps)


def test_a_non_finite_or_out_of_range_own_share_never_corrupts_a_map():
    """``own`` is a share in [0, 1]: NaN counts as 0 (not the sample's own), values outside are clamped."""
    coords = IDENTITY.expand(2, -1, -1, -1)
    saliency = torch.rand(2, SIZE, SIZE)
    own = torch.ones(2, SIZE, SIZE)
    own[0, 0, 0] = float("nan")
    own[1, 5, 5] = -3.0
    cache = SaliencyCache(2)
    cache.write(torch.arange(2), coords, saliency, 0, own)
    assert torch.isfinite(cache.maps.float()).all()
    expected = SaliencyCache(2)
    fixed = own.nan_to_num(0.0).clamp(0.0, 1.0)
    expected.write(torch.arange(2), coords, saliency, 0, fixed)
    assert torch.equal(cache.maps, expected.maps)


def test_a_hand_built_view_outside_the_map_never_writes_into_another_samples_map():
    """Cell 256 of sample 0 would be cell 0 of sample 1 in the flat index of a write: refused instead."""
    cache = SaliencyCache(2)
    cells = cache.locate(IDENTITY.expand(2, -1, -1, -1))
    index = cells.index.clone()
    index[0, 0, 0] = 256  # only in sample 0: no index error at the end of the flat array
    with pytest.raises(ValueError, match="coords"):
        cache.write(torch.arange(2), ViewCells(index, cells.valid, 16), torch.ones(2, SIZE, SIZE), 0)
    assert not cache.maps.any() and cache.written_epoch.tolist() == [-1, -1]


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = [t.flatten().argsort().argsort().double() for t in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def test_partial_views_at_drifting_gradient_scales_keep_the_maps_ranking():
    """Crops that show 8-32 pixels a side, written 30 times a map at gradient scales that drift by up to 2x
    a write (fp16's loss scale, a converging network): the cells a view does not show keep older writes, so
    each write must come in at the level of the map it updates (found by a review: writes relative to their
    own mean ranked a crop over the object below older background cells, Spearman 0.83; unscaled writes
    follow the drift)."""
    gen = torch.Generator().manual_seed(0)
    maps, truths = 20, []
    cache = SaliencyCache(maps)
    for sample in range(maps):
        centre, width = torch.rand(2, generator=gen) * 16, 2.0 + 3.0 * float(torch.rand(1, generator=gen))
        rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
        blob = torch.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * width**2))
        truth = 0.2 + blob + 0.01 * torch.rand(16, 16, generator=gen)  # an object on a background
        truths.append(truth)
        pixels = truth.repeat_interleave(2, 0).repeat_interleave(2, 1)  # 32x32, a cell is 2x2 pixels
        for epoch in range(30):
            h, w = (int(v) for v in torch.randint(8, 33, (2,), generator=gen))
            top, left = (
                int(torch.randint(0, 33 - h, (1,), generator=gen)),
                int(torch.randint(0, 33 - w, (1,), generator=gen)),
            )
            drift = float(2.0 ** (2 * torch.rand(1, generator=gen) - 1)) * 1e-6
            view = IDENTITY[:, top : top + h, left : left + w]
            cache.write(
                torch.tensor([sample]),
                view[None],
                drift * pixels[None, top : top + h, left : left + w],
                epoch,
            )
    correlations = [_spearman(cache.maps[s].float(), truths[s]) for s in range(maps)]
    assert min(correlations) > 0.95, correlations


def test_a_first_write_blended_with_a_partner_keeps_the_contrast_of_its_cells():
    """A first write through Mixup with lam = 0.05 (own share 5 % everywhere): stored as ``1 + lam (m - 1)``
    the cells would collapse onto a few bfloat16 steps near 1 (13 distinct values of 256, found by a review).
    In a first write every cell the sample shows at all is its own measurement."""
    cells = 2.0 ** torch.linspace(0.0, 4.0, 256)
    cells = cells[torch.randperm(256, generator=torch.Generator().manual_seed(0))].view(16, 16)
    saliency = cells.repeat_interleave(2, 0).repeat_interleave(2, 1)[None]
    cache = SaliencyCache(1)
    cache.write(torch.tensor([0]), IDENTITY[None], saliency, 0, torch.full((1, SIZE, SIZE), 0.05))
    stored = cache.maps[0].float()
    assert int(stored.argmax()) == int(cells.argmax()) and int(stored.argmin()) == int(cells.argmin())
    assert len(stored.unique()) > 200
