"""Two-image methods (Mixup, CutMix, SaliencyMix, ResizeMix) with timm's Mixup semantics."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _batch_helpers import labelled_batch
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.data import mixup as timm_mixup

from salfmix_transforms import mixing
from salfmix_transforms.boxes import box_lambda, cutmix_box, minmax_box, resize_from_boxes, saliency_peaks
from salfmix_transforms.mixing import MODES, CutMix, Mixup, ResizeMix, SaliencyMix
from salfmix_transforms.static_saliency import fine_grained_saliency
from salfmix_transforms.targets import to_soft_targets


def _frame_defaults(cls: type) -> type:
    """``cls`` with the frame's defaults (no smoothing, K inferred) instead of timm's 0.1 and 1000.

    Mixup and CutMix take timm's constructor, defaults included; the generic tests below compare every
    method with the plain formulas, so they build all four with the frame's defaults.
    """

    class WithFrameDefaults(cls):
        def __init__(self, *args, label_smoothing=0.0, num_classes=None, **kwargs):
            super().__init__(*args, label_smoothing=label_smoothing, num_classes=num_classes, **kwargs)

    WithFrameDefaults.__name__ = WithFrameDefaults.__qualname__ = cls.__name__
    return WithFrameDefaults


METHODS = tuple(_frame_defaults(cls) for cls in (Mixup, CutMix, SaliencyMix, ResizeMix))
BOX_METHODS = METHODS[1:]
Mixup, CutMix = METHODS[:2]  # timm's defaults are tested in test_dropin.py


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 4, c: int = 3, h: int = 16, w: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=_gen(seed))


def _pin_lambda(monkeypatch, values):
    values = torch.as_tensor(values, dtype=torch.float64)

    def fake(alpha, count, generator, device):
        return values[:count].to(device) if values.numel() > 1 else values.expand(count).to(device)

    monkeypatch.setattr(mixing, "sample_beta", fake)


def _pin_centres(monkeypatch, cy, cx):
    cy = torch.as_tensor(cy, dtype=torch.long)
    cx = torch.as_tensor(cx, dtype=torch.long)

    def fake(height, width, count, generator, device):
        return cy.expand(count) if cy.dim() == 0 else cy[:count], cx.expand(count) if cx.dim() == 0 else cx[
            :count
        ]

    monkeypatch.setattr(mixing, "sample_box_centres", fake)


class _NumpyFeed:
    """Replaces numpy's global draws used by timm with fixed values (in call order)."""

    def __init__(self, monkeypatch, beta, randint=()):
        self.beta = np.asarray(beta, dtype=np.float64)
        self.randint = list(randint)
        monkeypatch.setattr(np.random, "beta", self._beta)
        monkeypatch.setattr(np.random, "rand", self._rand)
        monkeypatch.setattr(np.random, "randint", self._randint)

    def _beta(self, a, b, size=None):
        return float(self.beta[0]) if size is None else self.beta[:size].copy()

    def _rand(self, *size):
        return 0.0 if not size else np.zeros(size)

    def _randint(self, low, high=None, size=None):
        return self.randint.pop(0)


# -- labels ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", METHODS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [2, 5, 6])
def test_rows_sum_to_one_and_shape(cls, mode, batch):
    x = _batch(batch)
    target = torch.arange(batch) % 3
    out, soft = cls(mode=mode, num_classes=3, label_smoothing=0.1, generator=_gen(batch))(x, target)
    assert out.shape == x.shape
    assert soft.shape == (batch, 3)
    assert soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(1), torch.ones(batch))


def _pasted_fraction(out: torch.Tensor, batch: int) -> torch.Tensor:
    """Fraction of each output image that holds its partner's constant value (see labelled_batch)."""
    partner_value = (torch.arange(batch, dtype=torch.float32).flip(0) + 1).view(batch, 1, 1, 1)
    return (out[:, 0:1] == partner_value).float().mean(dim=(1, 2, 3)).double()


@pytest.mark.parametrize("cls", BOX_METHODS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [4, 5])
def test_label_weight_of_pasted_image_is_its_area(cls, mode, batch):
    x = labelled_batch(batch, 16, 20)
    target = torch.arange(batch)
    for seed in range(4):
        out, soft = cls(mode=mode, num_classes=batch, generator=_gen(seed))(x, target)
        area = _pasted_fraction(out, batch)
        rows = torch.arange(batch)
        partner = rows.flip(0)
        middle = batch // 2
        for i in range(batch):
            if batch % 2 == 1 and i == middle:
                assert torch.equal(out[i], x[i])
                assert torch.equal(soft[i], torch.eye(batch)[i])
                continue
            assert float(soft[i, partner[i]]) == pytest.approx(float(area[i]), abs=1e-6)
            assert float(soft[i, i]) == pytest.approx(1.0 - float(area[i]), abs=1e-6)
        # every pixel comes from the image itself or its partner
        own = out[:, 0:1] == x[:, 0:1]
        theirs = out[:, 0:1] == x.flip(0)[:, 0:1]
        assert (own | theirs).all()


@pytest.mark.parametrize("mode", MODES)
def test_mixup_label_weight_is_lambda_and_pixels_are_the_convex_combination(monkeypatch, mode):
    lams = [0.3, 0.55, 0.8, 0.1]
    _pin_lambda(monkeypatch, lams)
    x = _batch(4)
    out, soft = Mixup(mode=mode, num_classes=4)(x, torch.arange(4))
    per_sample = {"batch": [0.3] * 4, "pair": [0.3, 0.55, 0.55, 0.3], "elem": lams}[mode]
    lam = torch.tensor(per_sample)
    torch.testing.assert_close(soft[torch.arange(4), torch.arange(4)], lam)
    torch.testing.assert_close(soft[torch.arange(4), torch.arange(4).flip(0)], 1 - lam)
    expected = x * lam.view(-1, 1, 1, 1) + x.flip(0) * (1 - lam.view(-1, 1, 1, 1))
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("mode", MODES)
def test_cutmix_inside_box_is_source_outside_is_target(monkeypatch, mode):
    _pin_lambda(monkeypatch, [0.6, 0.75, 0.5, 0.9])
    _pin_centres(monkeypatch, [3, 10, 0, 15], [4, 19, 9, 0])
    x = _batch(4, h=16, w=20)
    out, soft = CutMix(mode=mode, num_classes=4)(x, torch.arange(4))
    slots = {"batch": [0, 0, 0, 0], "pair": [0, 1, 1, 0], "elem": [0, 1, 2, 3]}[mode]
    lam_all = torch.tensor([0.6, 0.75, 0.5, 0.9], dtype=torch.float64)
    top, bottom, left, right = cutmix_box(
        16, 20, lam_all, torch.tensor([3, 10, 0, 15]), torch.tensor([4, 19, 9, 0])
    )
    for i in range(4):
        k = slots[i]
        expected = x[i].clone()
        expected[:, top[k] : bottom[k], left[k] : right[k]] = x[3 - i][
            :, top[k] : bottom[k], left[k] : right[k]
        ]
        assert torch.equal(out[i], expected)
        area = float((bottom[k] - top[k]) * (right[k] - left[k])) / (16 * 20)
        assert float(soft[i, 3 - i]) == pytest.approx(area, abs=1e-6)


def test_correct_lam_false_keeps_the_drawn_lambda(monkeypatch):
    _pin_lambda(monkeypatch, [0.2])
    _pin_centres(monkeypatch, 0, 0)  # a corner: the box is clipped to a quarter
    out, soft = CutMix(correct_lam=False, num_classes=2)(_batch(2), torch.tensor([0, 1]))
    assert float(soft[0, 0]) == pytest.approx(0.2, abs=1e-6)
    out2, soft2 = CutMix(correct_lam=True, num_classes=2)(_batch(2), torch.tensor([0, 1]))
    assert torch.equal(out, out2)
    assert float(soft2[0, 0]) > 0.5


def test_minmax_forces_corrected_lambda_and_box_ranges():
    mix = CutMix(cutmix_alpha=0.3, cutmix_minmax=(0.2, 0.6), correct_lam=False, num_classes=2, mode="elem")
    assert mix.alpha == 1.0
    x = labelled_batch(2, 20, 30)
    for seed in range(5):
        out, soft = mix(x, torch.tensor([0, 1]), generator=_gen(seed))
        area = _pasted_fraction(out, 2)
        torch.testing.assert_close(
            soft[:, 1].double(), torch.stack([area[0], 1 - area[1]]), atol=1e-6, rtol=0
        )
    top, bottom, left, right = minmax_box(20, 30, (0.2, 0.6), 200, _gen(1), "cpu")
    assert ((bottom - top) >= 4).all() and ((bottom - top) < 12).all()
    assert ((right - left) >= 6).all() and ((right - left) < 18).all()
    assert (top >= 0).all() and (bottom <= 20).all() and (left >= 0).all() and (right <= 30).all()
    assert len(set((bottom - top).tolist())) == 8  # all of [4, 12) reached


# -- the geometry helpers against timm's -------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 0.13, 0.5, 0.77, 0.99, 1.0])
@pytest.mark.parametrize(("cy", "cx"), [(0, 0), (7, 11), (15, 19), (3, 18)])
def test_cutmix_box_matches_timm_rand_bbox(monkeypatch, lam, cy, cx):
    _NumpyFeed(monkeypatch, beta=[lam], randint=[cy, cx])
    (yl, yh, xl, xh), timm_lam = timm_mixup.cutmix_bbox_and_lam((2, 3, 16, 20), lam, correct_lam=True)
    top, bottom, left, right = cutmix_box(
        16, 20, torch.tensor([lam], dtype=torch.float64), torch.tensor([cy]), torch.tensor([cx])
    )
    assert (int(top[0]), int(bottom[0]), int(left[0]), int(right[0])) == (yl, yh, xl, xh)
    assert float(box_lambda(top, bottom, left, right, 16, 20)[0]) == timm_lam


def test_saliency_peaks_are_numpys_argmax():
    maps = torch.zeros(3, 5, 6)
    maps[0, 2, 3] = 1.0
    maps[1, 4, 0] = 2.0
    maps[1, 0, 5] = 2.0  # tie: the first in row-major order wins
    rows, cols = saliency_peaks(maps)
    assert rows.tolist() == [2, 0, 0] and cols.tolist() == [3, 5, 0]


# -- timm parity -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("lam", [0.31, 0.8])
def test_batch_mode_mixup_equals_timm(monkeypatch, smoothing, lam):
    _NumpyFeed(monkeypatch, beta=[lam])
    _pin_lambda(monkeypatch, [lam])
    x = _batch(6)
    target = torch.tensor([0, 4, 2, 9, 1, 1])
    ref_x, ref_t = timm_mixup.Mixup(
        mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=smoothing, num_classes=10
    )(x.clone(), target)
    out, soft = Mixup(1.0, label_smoothing=smoothing, num_classes=10)(x, target)
    torch.testing.assert_close(out, ref_x, rtol=0, atol=0)
    torch.testing.assert_close(soft, ref_t, rtol=0, atol=0)


@pytest.mark.parametrize("correct_lam", [True, False])
@pytest.mark.parametrize(("lam", "cy", "cx"), [(0.4, 5, 6), (0.7, 0, 19), (0.15, 15, 2)])
def test_batch_mode_cutmix_equals_timm(monkeypatch, correct_lam, lam, cy, cx):
    _NumpyFeed(monkeypatch, beta=[lam], randint=[cy, cx])
    _pin_lambda(monkeypatch, [lam])
    _pin_centres(monkeypatch, cy, cx)
    x = _batch(4, h=16, w=20)
    target = torch.tensor([3, 1, 0, 2])
    ref_x, ref_t = timm_mixup.Mixup(
        mixup_alpha=0.0, cutmix_alpha=1.0, correct_lam=correct_lam, num_classes=5
    )(x.clone(), target)
    out, soft = CutMix(1.0, correct_lam=correct_lam, label_smoothing=0.1, num_classes=5)(x, target)
    torch.testing.assert_close(out, ref_x, rtol=0, atol=0)
    torch.testing.assert_close(soft, ref_t, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["elem", "pair"])
@pytest.mark.parametrize("use_cutmix", [False, True])
def test_per_sample_modes_equal_timm(monkeypatch, mode, use_cutmix):
    lams = [0.3, 0.55, 0.8, 0.1, 0.62, 0.45]
    cys, cxs = [3, 12, 0, 15, 7, 9], [4, 19, 9, 0, 10, 2]
    slots = 6 if mode == "elem" else 3
    feed = [v for pair in zip(cys[:slots], cxs[:slots]) for v in pair]
    _NumpyFeed(monkeypatch, beta=lams, randint=feed)
    _pin_lambda(monkeypatch, lams)
    _pin_centres(monkeypatch, cys, cxs)
    x = _batch(6, h=16, w=20)
    target = torch.tensor([3, 1, 0, 2, 5, 4])
    alphas = {"mixup_alpha": 0.0, "cutmix_alpha": 1.0} if use_cutmix else {}
    ref_x, ref_t = timm_mixup.Mixup(mode=mode, num_classes=6, **alphas)(x.clone(), target)
    cls = CutMix if use_cutmix else Mixup
    out, soft = cls(mode=mode, label_smoothing=0.1, num_classes=6)(x, target)
    torch.testing.assert_close(out, ref_x)
    torch.testing.assert_close(soft, ref_t)


# -- modes, pairs, odd batches ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", METHODS)
def test_pair_mode_is_symmetric(cls):
    x = labelled_batch(6, 16, 20) if cls is not Mixup else _batch(6)
    target = torch.arange(6)
    out, soft = cls(mode="pair", num_classes=6, generator=_gen(3))(x, target)
    for i in range(3):
        j = 5 - i
        # the pair swaps the same region / uses the same lambda
        torch.testing.assert_close(soft[i, i], soft[j, j])
        torch.testing.assert_close(soft[i, j], soft[j, i])
        if cls is Mixup:
            torch.testing.assert_close(out[i] + out[j], x[i] + x[j])
        elif cls is not SaliencyMix:  # SaliencyMix centres each box on its own source's peak
            assert torch.equal(out[i] != x[i], out[j] != x[j])


@pytest.mark.parametrize("cls", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_odd_batch_middle_sample_is_unchanged(cls, mode):
    x = _batch(5)
    target = torch.tensor([0, 1, 2, 3, 4])
    out, soft = cls(mode=mode, num_classes=5, label_smoothing=0.2, generator=_gen(1))(x, target)
    assert torch.equal(out[2], x[2])
    assert torch.equal(soft[2], to_soft_targets(target, 5, 0.2)[2])
    assert not torch.equal(out[0], x[0])


@pytest.mark.parametrize("cls", METHODS)
def test_batch_of_one_is_identity_with_soft_label(cls):
    x = _batch(1)
    out, soft = cls(num_classes=4, label_smoothing=0.1)(x, torch.tensor([2]))
    assert torch.equal(out, x) and out is not x
    torch.testing.assert_close(soft, torch.tensor([[0.025, 0.025, 0.925, 0.025]]))


@pytest.mark.parametrize("cls", METHODS)
def test_prob_zero_and_partial_prob(cls):
    x = _batch(6)
    target = torch.arange(6)
    out, soft = cls(prob=0.0, num_classes=6)(x, target)
    assert torch.equal(out, x)
    assert torch.equal(soft, torch.eye(6))
    out, soft = cls(prob=0.5, mode="elem", num_classes=6, generator=_gen(4))(x, target)
    unchanged = [i for i in range(6) if torch.equal(out[i], x[i])]
    for i in unchanged:
        assert torch.equal(soft[i], torch.eye(6)[i])
    assert 0 < len(unchanged) < 6


def test_soft_targets_give_num_classes():
    soft_in = torch.softmax(torch.randn(4, 7, generator=_gen(0)), dim=1)
    _, soft = Mixup(generator=_gen(0))(_batch(4), soft_in)
    assert soft.shape == (4, 7)
    torch.testing.assert_close(soft.sum(1), torch.ones(4))


def test_warmup_epochs_give_identity_with_soft_targets():
    mix = CutMix(num_classes=3, warmup_epochs=1)
    x = _batch(2)
    out, soft = mix(x, torch.tensor([0, 2]))
    assert torch.equal(out, x)
    assert torch.equal(soft, torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
    mix.set_epoch(1)
    out, _ = mix(x, torch.tensor([0, 2]), generator=_gen(0))
    assert not torch.equal(out, x)


# -- SaliencyMix -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_saliencymix_box_is_centred_on_the_source_peak(monkeypatch, mode):
    _pin_lambda(monkeypatch, [0.75])  # an 8 x 10 box on 16 x 20
    peaks = [(4, 5), (8, 10), (10, 14), (12, 16)]
    saliency = torch.zeros(4, 16, 20)
    for b, (py, px) in enumerate(peaks):
        saliency[b, py, px] = 1.0
    x = labelled_batch(4, 16, 20)
    out, _ = SaliencyMix(mode=mode, num_classes=4)(x, torch.arange(4), saliency=saliency)
    for i in range(4):
        py, px = peaks[3 - i]  # the source is the flipped partner
        expected = torch.zeros(16, 20, dtype=torch.bool)
        expected[max(py - 4, 0) : py + 4, max(px - 5, 0) : px + 5] = True
        assert torch.equal(out[i, 0] == 4 - i, expected)


def test_saliencymix_per_sample_false_uses_the_first_sources_map(monkeypatch):
    _pin_lambda(monkeypatch, [0.75])
    saliency = torch.zeros(4, 16, 20)
    saliency[3, 5, 6] = 1.0  # the source of sample 0
    saliency[0, 12, 15] = 1.0
    x = labelled_batch(4, 16, 20)
    out, _ = SaliencyMix(per_sample=False, num_classes=4)(x, torch.arange(4), saliency=saliency)
    for i in range(4):
        changed = (out[i, 0] != x[i, 0]).nonzero()
        assert changed[:, 0].min() == 1 and changed[:, 0].max() == 8
        assert changed[:, 1].min() == 1 and changed[:, 1].max() == 10


def test_saliencymix_computes_the_static_saliency_itself():
    x = _batch(4)
    mix = SaliencyMix(mode="elem", num_classes=4)
    given_map = mix(x, torch.arange(4), saliency=fine_grained_saliency(x), generator=_gen(2))
    computed = mix(x, torch.arange(4), generator=_gen(2))
    assert torch.equal(given_map[0], computed[0])
    assert torch.equal(given_map[1], computed[1])


# -- ResizeMix -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_resize_from_boxes_matches_interpolate(interpolation):
    x = _batch(5, h=17, w=23, seed=3)
    top = torch.tensor([0, 3, 8, 1, 0])
    left = torch.tensor([0, 5, 2, 9, 22])
    heights = torch.tensor([17, 5, 9, 1, 13])
    widths = torch.tensor([23, 11, 4, 14, 1])
    canvas = resize_from_boxes(x, top, top + heights, left, left + widths, mode=interpolation)
    for b in range(5):
        h, w = int(heights[b]), int(widths[b])
        ref = F.interpolate(x[b : b + 1], size=(h, w), mode=interpolation)
        got = canvas[b : b + 1, :, top[b] : top[b] + h, left[b] : left[b] + w]
        torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("mode", MODES)
def test_resizemix_pastes_the_resized_source(mode):
    x = _batch(4, h=24, w=30, seed=7)
    mix = ResizeMix(scope=(0.2, 0.7), mode=mode, num_classes=4)
    for seed in range(3):
        out, soft = mix(x, torch.arange(4), generator=_gen(seed))
        for i in range(4):
            changed = (out[i] != x[i]).any(0).nonzero()
            top, left = changed.min(0).values.tolist()
            bottom, right = (changed.max(0).values + 1).tolist()
            h, w = bottom - top, right - left
            assert 0.2 * 24 - 1 <= h <= 0.7 * 24 and 0.2 * 30 - 1 <= w <= 0.7 * 30
            ref = F.interpolate(x[3 - i : 4 - i], size=(h, w), mode="bilinear")[0]
            torch.testing.assert_close(out[i, :, top:bottom, left:right], ref)
            outside = torch.ones(24, 30, dtype=torch.bool)
            outside[top:bottom, left:right] = False
            assert torch.equal(out[i][:, outside], x[i][:, outside])
            assert float(soft[i, 3 - i]) == pytest.approx(h * w / (24 * 30), abs=1e-6)


# -- dtype, device, format, reproducibility --------------------------------------------------------------


@pytest.mark.parametrize("cls", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_dtype_preserved(cls, dtype, mode):
    x = _batch(4).to(dtype)
    out, soft = cls(mode=mode, num_classes=4, generator=_gen(0))(x, torch.arange(4))
    assert out.dtype == dtype
    assert soft.dtype == torch.float32
    assert torch.isfinite(out).all()
    torch.testing.assert_close(soft.sum(1), torch.ones(4))


@pytest.mark.parametrize("cls", METHODS)
@pytest.mark.parametrize("mode", ["batch", "pair"])
def test_channels_last_and_input_untouched(cls, mode):
    x = _batch(4).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    out, _ = cls(mode=mode, num_classes=4, generator=_gen(0))(x, torch.arange(4))
    assert torch.equal(x, before)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("cls", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_reproducible_with_a_generator(cls, mode):
    x = _batch(6)
    target = torch.arange(6)
    a = cls(mode=mode, num_classes=6, generator=_gen(11))(x, target)
    b = cls(mode=mode, num_classes=6)(x, target, generator=_gen(11))  # a call's generator works too
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = cls(mode=mode, num_classes=6, generator=_gen(11))(x, target, generator=_gen(12))
    d = cls(mode=mode, num_classes=6)(x, target, generator=_gen(12))
    assert torch.equal(c[0], d[0])  # the call's generator wins over the constructor's


# -- bad inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", METHODS)
def test_bad_call_arguments(cls):
    mix = cls(num_classes=3)
    x = _batch(2)
    with pytest.raises(ValueError, match="target"):
        mix(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="target"):
        mix(x, torch.tensor([-1, 0]))
    with pytest.raises(TypeError, match="target"):
        mix(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="num_classes"):
        cls()(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target"):
        mix(x, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="x must"):
        mix(x.long(), torch.tensor([0, 1]))


@pytest.mark.parametrize(
    ("factory", "exc", "name"),
    [
        (lambda: Mixup(mode="half"), ValueError, "mode"),
        (lambda: CutMix(mode=None), ValueError, "mode"),
        (lambda: Mixup(mixup_alpha=-1.0), ValueError, "alpha"),
        (lambda: Mixup(mixup_alpha=0.0), ValueError, "alpha"),
        (lambda: SaliencyMix(alpha=-0.5), ValueError, "alpha"),
        (lambda: CutMix(cutmix_alpha=float("nan")), ValueError, "alpha"),
        (lambda: CutMix(cutmix_alpha="1"), TypeError, "alpha"),
        (lambda: Mixup(prob=1.5), ValueError, "prob"),
        (lambda: Mixup(label_smoothing=-0.1), ValueError, "label_smoothing"),
        (lambda: CutMix(cutmix_minmax=(0.5, 0.2)), ValueError, "minmax"),
        (lambda: CutMix(cutmix_minmax=(0.2,)), ValueError, "minmax"),
        (lambda: CutMix(correct_lam=1), TypeError, "correct_lam"),
        (lambda: SaliencyMix(per_sample="yes"), TypeError, "per_sample"),
        (lambda: ResizeMix(scope=(0.0, 0.5)), ValueError, "scope"),
        (lambda: ResizeMix(scope=(0.6, 0.5)), ValueError, "scope"),
        (lambda: ResizeMix(scope=(0.1, 1.5)), ValueError, "scope"),
        (lambda: ResizeMix(interpolation="bicubic"), ValueError, "interpolation"),
        (lambda: Mixup(num_classes=0), ValueError, "num_classes"),
    ],
)
def test_bad_constructor_arguments(factory, exc, name):
    with pytest.raises(exc, match=name):
        factory()


def test_saliencymix_rejects_a_saliency_of_the_wrong_shape():
    with pytest.raises(ValueError, match="saliency"):
        SaliencyMix(num_classes=2)(_batch(2), torch.tensor([0, 1]), saliency=torch.zeros(2, 5, 5))


# -- properties ------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    mode=st.sampled_from(MODES),
    batch=st.integers(1, 7),
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    smoothing=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_rows_sum_to_one(method, mode, batch, height, width, smoothing, seed):
    x = torch.rand(batch, 3, height, width, generator=_gen(seed))
    target = torch.randint(0, 5, (batch,), generator=_gen(seed))
    out, soft = method(mode=mode, num_classes=5, label_smoothing=smoothing, generator=_gen(seed))(x, target)
    assert out.shape == x.shape
    torch.testing.assert_close(soft.sum(1), torch.ones(batch))
    assert (soft >= 0).all()


@settings(max_examples=30, deadline=None)
@given(
    method=st.sampled_from(BOX_METHODS),
    mode=st.sampled_from(MODES),
    batch=st.integers(2, 7),
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_pasted_area_equals_label_weight(method, mode, batch, height, width, seed):
    x = labelled_batch(batch, height, width)
    out, soft = method(mode=mode, num_classes=batch, generator=_gen(seed))(x, torch.arange(batch))
    area = _pasted_fraction(out, batch)
    for i in range(batch):
        j = batch - 1 - i
        if i == j:
            assert torch.equal(out[i], x[i])
            continue
        assert float(soft[i, j]) == pytest.approx(float(area[i]), abs=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None, reason="inductor needs a C++ compiler on CPU"
)
@pytest.mark.parametrize("method", ["cutmix-elem", "cutout", "salfmix"])
def test_torch_compile_gives_the_eager_result(method):
    """``torch.compile`` of a whole transform (inductor, CPU) runs and gives the eager pixels and targets.

    Before ``box_mask`` switched to the plain ``bool`` form under compilation, inductor failed with a C++
    compile error on its ``uint8`` -> ``bool`` view (CutMix / SaliencyMix / ResizeMix per sample, Cutout).
    """
    from salfmix_transforms import Cutout, SalfMix

    transform = {
        "cutmix-elem": lambda: CutMix(mode="elem", num_classes=10),
        "cutout": lambda: Cutout(num_classes=10),
        "salfmix": lambda: SalfMix(num_classes=10, warmup_epochs=0),
    }[method]()
    x, y = torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 4, 9])
    saliency = torch.rand(6, 16, 16)
    torch._dynamo.reset()
    try:
        expected = transform(x, y, saliency=saliency, generator=torch.Generator().manual_seed(0))
        compiled = torch.compile(transform)
        got = compiled(x, y, saliency=saliency, generator=torch.Generator().manual_seed(0))
    finally:
        torch._dynamo.reset()
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert not torch.equal(got[0], x)  # the transform did change the batch
