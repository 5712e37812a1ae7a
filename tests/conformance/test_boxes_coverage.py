"""Two box properties that no test pinned (issue 16, items 13-14).

* Cutout's box centre is a uniformly random pixel: over many draws every row and every column is a centre
  at least once (a centre drawn from ``[0, H - 2]`` never reaches the last row).
* ResizeMix pastes the whole partner image resized to exactly ``floor(tau * H) x floor(tau * W)`` pixels,
  also for non-square images (a box of ``floor(tau * H)`` on both sides, or with the sides swapped, is not).

Each property comes with a test that the check fails on an implementation with the planted bug.
"""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch
from _batch_helpers import labelled_batch

from salfmix_transforms import Cutout, ResizeMix, mixing
from salfmix_transforms._random import rand, randint_between
from salfmix_transforms.boxes import sample_resize_boxes
from salfmix_transforms.patches import patch_size

SHAPES = [(7, 5), (5, 9), (16, 16), (2, 13), (13, 2), (1, 4)]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- Cutout: every row and every column is a centre --------------------------------------------------------


def _centres(top, left, bottom, right, height, width, box_h, box_w):
    """The centres ``(cy, cx)`` of Cutout's clipped boxes ``[cy - box_h // 2, cy - box_h // 2 + box_h)``.

    A side clipped at the top/left still has its bottom/right edge (and vice versa), unless the box spans
    the whole axis at both ends (then the centre is unknown: -1).
    """

    def axis(start, stop, size, box):
        from_start = start + box // 2  # exact when the start is not clipped (start > 0)
        from_stop = stop - box + box // 2  # exact when the stop is not clipped (stop < size)
        unknown = torch.full_like(start, -1)
        return torch.where(start > 0, from_start, torch.where(stop < size, from_stop, unknown))

    return axis(top, bottom, height, box_h), axis(left, right, width, box_w)


def _assert_every_row_and_column_is_a_centre(cutout: Cutout, height: int, width: int, draws: int = 600):
    top, left, bottom, right, applied = cutout.boxes(draws, height, width, "cpu", _gen(1))
    box_h, box_w = patch_size(height, width, cutout.mask_ratio)
    assert applied.all()
    assert (top >= 0).all() and (left >= 0).all() and (bottom <= height).all() and (right <= width).all()
    assert ((bottom - top) >= (box_h + 1) // 2).all(), "the centre lies inside the image"
    cy, cx = _centres(top, left, bottom, right, height, width, box_h, box_w)
    known_y, known_x = cy[cy >= 0], cx[cx >= 0]
    assert ((known_y >= 0) & (known_y < height)).all() and ((known_x >= 0) & (known_x < width)).all()
    if box_h < height:  # otherwise every centre gives the same (whole-axis) box: nothing to recover
        assert set(known_y.tolist()) == set(range(height)), "a row that is never a centre"
    if box_w < width:
        assert set(known_x.tolist()) == set(range(width)), "a column that is never a centre"


@pytest.mark.parametrize(("height", "width"), SHAPES)
@pytest.mark.parametrize("mask_ratio", [1e-9, 0.3, 0.5])
def test_cutout_every_row_and_column_is_a_centre(height, width, mask_ratio):
    """``mask_ratio=1e-9``: a 1x1 box, which is its centre; 0.3 and 0.5: centres recovered from the edges."""
    _assert_every_row_and_column_is_a_centre(Cutout(mask_ratio), height, width)


@pytest.mark.parametrize(("height", "width"), [(7, 5), (5, 9), (16, 16)])
def test_cutout_every_pixel_is_filled_by_a_one_pixel_box(height, width):
    """Through the public call: 1x1 boxes (their centres) fill every pixel of the image at least once."""
    draws = 40 * height * width
    x = torch.ones(draws, 1, height, width)
    out, _ = Cutout(1e-9, fill=0.0)(x, torch.zeros(draws, dtype=torch.long), generator=_gen(2))
    filled = out[:, 0] == 0
    assert (filled.sum(dim=(1, 2)) == 1).all()
    assert filled.any(dim=0).all(), "a pixel that is never a centre"


class _CutoutCentresMissLastRow(Cutout):
    """The planted bug: centres drawn from ``[0, H - 2] x [0, W - 2]`` (``boxes`` copied, ``- 2`` for
    ``- 1``)."""

    def boxes(self, batch, height, width, device, generator):
        device = torch.device(device)
        box_h, box_w = patch_size(height, width, self.mask_ratio)
        zeros = torch.zeros(batch, dtype=torch.long, device=device)
        centre_y = randint_between(zeros, torch.full_like(zeros, max(height - 2, 0)), generator)
        centre_x = randint_between(zeros, torch.full_like(zeros, max(width - 2, 0)), generator)
        top = centre_y - box_h // 2
        left = centre_x - box_w // 2
        bottom = (top + box_h).clamp(max=height)
        right = (left + box_w).clamp(max=width)
        applied = rand((batch,), generator, device) < self.prob
        return top.clamp(min=0), left.clamp(min=0), bottom, right, applied


@pytest.mark.parametrize(("height", "width"), [(7, 5), (5, 9), (16, 16)])
@pytest.mark.parametrize("mask_ratio", [1e-9, 0.3, 0.5])
def test_cutout_centre_check_catches_the_planted_bug(height, width, mask_ratio):
    with pytest.raises(AssertionError, match="never a centre"):
        _assert_every_row_and_column_is_a_centre(_CutoutCentresMissLastRow(mask_ratio), height, width)


# -- ResizeMix: the pasted box is floor(tau * H) x floor(tau * W) -----------------------------------------


def _pasted_boxes(out: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """Per sample i, the box ``(top, left, rows, cols)`` holding its partner's value ``B - i``, checked to be
    a full rectangle and the rest to be the sample's own value ``i + 1``."""
    batch = out.shape[0]
    boxes = []
    for i in range(batch):
        pasted = ((out[i] - (batch - i)).abs() < 0.25).all(dim=0)
        own = ((out[i] - (i + 1)).abs() < 0.25).all(dim=0)
        assert (pasted | own).all(), f"sample {i}: a pixel of neither image"
        rows = pasted.any(dim=1).nonzero().flatten()
        cols = pasted.any(dim=0).nonzero().flatten()
        assert rows.numel() > 0, f"sample {i}: nothing pasted"
        top, left = int(rows[0]), int(cols[0])
        h, w = int(rows[-1]) + 1 - top, int(cols[-1]) + 1 - left
        assert int(pasted.sum()) == h * w, f"sample {i}: the pasted region is not a rectangle"
        boxes.append((top, left, h, w))
    return boxes


def _assert_resizemix_box_size(tau: float, height: int, width: int, mode: str, interpolation: str):
    batch = 4  # even: every sample has a partner other than itself
    x = labelled_batch(batch, height, width)
    fn = ResizeMix((tau, tau), num_classes=batch, mode=mode, interpolation=interpolation)
    out, target = fn(x, torch.arange(batch), generator=_gen(3))
    rows, cols = math.floor(tau * height), math.floor(tau * width)
    for i, (top, left, h, w) in enumerate(_pasted_boxes(out)):
        assert (h, w) == (rows, cols), f"sample {i}: pasted {h}x{w}, expected floor(tau*H) x floor(tau*W)"
        assert top + h <= height and left + w <= width
        # the label weight of the pasted image is its area fraction
        assert float(target[i, batch - 1 - i]) == pytest.approx(rows * cols / (height * width), abs=1e-6)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("mode", ["batch", "elem"])
@pytest.mark.parametrize(("height", "width"), [(12, 20), (20, 12), (9, 16), (16, 5)])
@pytest.mark.parametrize("tau", [0.375, 0.5, 0.625, 0.875])
def test_resizemix_box_is_floor_tau_h_by_floor_tau_w(tau, height, width, mode, interpolation):
    _assert_resizemix_box_size(tau, height, width, mode, interpolation)


@pytest.mark.parametrize(
    "planted",
    [
        lambda height, width, tau, generator: sample_resize_boxes(height, height, tau, generator),  # square
        lambda height, width, tau, generator: sample_resize_boxes(width, height, tau, generator),  # swapped
    ],
    ids=["square-box", "swapped-sides"],
)
@pytest.mark.parametrize(("height", "width"), [(12, 20), (20, 12)])
def test_resizemix_box_check_catches_the_planted_bugs(planted, height, width):
    with mock.patch.object(mixing, "sample_resize_boxes", planted), pytest.raises(AssertionError):
        _assert_resizemix_box_size(0.5, height, width, "elem", "nearest")
