"""HybridMix (Algorithm 2): SalfMix on the whole batch, then a two-image mix, with timm Mixup's API."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from _batch_helpers import tiny_classifier
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.data import mixup as timm_mixup

from salfmix_transforms import mixing
from salfmix_transforms import saliency as saliency_module
from salfmix_transforms.hybrid import HybridMix
from salfmix_transforms.mixing import (
    CutMix,
    CutMixMethod,
    Mixup,
    MixupMethod,
    ResizeMix,
    SaliencyMix,
    SaliencyMixMethod,
)
from salfmix_transforms.salfmix import SalfMix
from salfmix_transforms.targets import to_soft_targets


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 4, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=_gen(seed))


def _saliency(b: int = 4, h: int = 16, w: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, h, w, generator=_gen(seed))


def _pin(monkeypatch, lam, cy=None, cx=None):
    monkeypatch.setattr(
        mixing, "sample_beta", lambda alpha, count, g, device: torch.full((count,), lam, dtype=torch.float64)
    )
    if cy is not None:
        monkeypatch.setattr(
            mixing,
            "sample_box_centres",
            lambda h, w, count, g, device: (torch.full((count,), cy), torch.full((count,), cx)),
        )


# -- API parity with timm ----------------------------------------------------------------------------------


def test_constructor_mirrors_timm_mixup():
    ours = inspect.signature(HybridMix).parameters
    theirs = inspect.signature(timm_mixup.Mixup).parameters
    shared = [name for name in theirs if name != "multi_label"]
    assert list(ours)[: len(shared)] == shared
    for name in shared:
        assert ours[name].default == theirs[name].default, name
    hybrid = HybridMix()
    assert hybrid.mixup_enabled is True
    assert hybrid.prob == 1.0 and hybrid.num_classes == 1000 and hybrid.label_smoothing == 0.1
    assert hybrid.warmup_epochs == 1 and hybrid.salfmix_prob == 1.0
    assert HybridMix(cutmix_minmax=(0.2, 0.8)).cutmix_alpha == 1.0  # as timm


def test_presets_of_table_2():
    v1, v2, v3 = HybridMix.v1(num_classes=10), HybridMix.v2(num_classes=10), HybridMix.v3(num_classes=10)
    # HybridMix composes the two-image frame: its methods are the frame's method objects.
    assert [type(m) for m in v1.mix.methods] == [MixupMethod]
    assert [type(m) for m in v2.mix.methods] == [SaliencyMixMethod]
    assert [type(m) for m in v3.mix.methods] == [CutMixMethod]
    for preset in (v1, v2, v3):
        assert preset.label_smoothing == 0.0
        assert preset.salfmix_prob == 1.0 and preset.warmup_epochs == 1
        assert preset.salfmix.grid == 4 and preset.salfmix.ratio == 0.3 and preset.salfmix.pool
    assert HybridMix.v3(num_classes=10, label_smoothing=0.1, mode="elem").mode == "elem"


@pytest.mark.parametrize("use_cutmix", [False, True])
def test_batch_mode_equals_timm_with_salfmix_off(monkeypatch, use_cutmix):
    lam, cy, cx = 0.62, 3, 11
    monkeypatch.setattr(np.random, "beta", lambda a, b, size=None: lam)
    monkeypatch.setattr(np.random, "rand", lambda *size: 0.0)
    draws = [cy, cx]
    monkeypatch.setattr(np.random, "randint", lambda low, high=None, size=None: draws.pop(0))
    _pin(monkeypatch, lam, cy, cx)
    alphas = {"mixup_alpha": 0.0, "cutmix_alpha": 1.0} if use_cutmix else {}
    x = _batch(6)
    target = torch.tensor([1, 0, 4, 2, 2, 3])
    ref_x, ref_t = timm_mixup.Mixup(num_classes=5, **alphas)(x.clone(), target)
    out, soft = HybridMix(num_classes=5, salfmix_prob=0.0, **alphas)(x, target)
    torch.testing.assert_close(out, ref_x, rtol=0, atol=0)
    torch.testing.assert_close(soft, ref_t, rtol=0, atol=0)


# -- SalfMix off: exactly the plain two-image method -------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "plain"),
    [
        ("v1", lambda **k: Mixup(1.0, label_smoothing=0.0, **k)),
        ("v2", lambda **k: SaliencyMix(1.0, **k)),
        ("v3", lambda **k: CutMix(label_smoothing=0.0, **k)),
    ],
)
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("off", ["prob", "warmup"])
def test_salfmix_off_is_the_plain_method(preset, plain, mode, off):
    x, target = _batch(5), torch.tensor([0, 1, 2, 3, 4])
    kwargs = {"salfmix_prob": 0.0} if off == "prob" else {"warmup_epochs": 3}
    hybrid = getattr(HybridMix, preset)(num_classes=5, mode=mode, generator=_gen(7), **kwargs)
    if off == "warmup":
        hybrid.set_epoch(2)
    out, soft = hybrid(x, target)  # no model needed: SalfMix is not active
    ref_out, ref_soft = plain(num_classes=5, mode=mode, generator=_gen(7))(x, target)
    assert torch.equal(out, ref_out)
    assert torch.equal(soft, ref_soft)


def test_resizemix_in_hybrid_is_resizemix():
    x, target = _batch(4), torch.arange(4)
    hybrid = HybridMix(mixup_alpha=0.0, resizemix_scope=(0.2, 0.5), salfmix_prob=0.0, num_classes=4)
    a = hybrid(x, target, generator=_gen(3))
    b = ResizeMix((0.2, 0.5), label_smoothing=0.1, num_classes=4)(x, target, generator=_gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# -- Algorithm 2 order -----------------------------------------------------------------------------------


def _order_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 16x16 images with unique pixels and hand-built saliency: a 4x4 grid of 4x4 cells, patch 4x4."""
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    saliency = torch.zeros(2, 16, 16)
    saliency[0, 0:4, 0:4] = 10.0  # R_m of image 0: cell (0, 0)
    saliency[0, 12:16, 12:16] = -1.0  # R_l of image 0: cell (3, 3)
    saliency[1, 12:16, 0:4] = 10.0  # R_m of image 1: cell (3, 0)
    saliency[1, 0:4, 12:16] = -1.0  # R_l of image 1: cell (0, 3)
    saliency += 0.01 * torch.arange(16.0).view(1, 1, 16)  # no ties between the other cells
    return x, saliency


def test_salfmix_runs_first_on_both_images_then_cutmix(monkeypatch):
    x, saliency = _order_batch()
    _pin(monkeypatch, 0.75, cy=4, cx=12)  # CutMix box: rows [0, 8), cols [8, 16)
    hybrid = HybridMix.v3(num_classes=2, salfmix_ratio=0.25, warmup_epochs=0)
    out, soft = hybrid(x, torch.tensor([0, 1]), saliency=saliency, generator=_gen(0))

    self_mixed = x.clone()
    self_mixed[0, :, 12:16, 12:16] = x[0, :, 0:4, 0:4]  # Algorithm 1 on image 0
    self_mixed[1, :, 0:4, 12:16] = x[1, :, 12:16, 0:4]  # Algorithm 1 on image 1
    expected = self_mixed.clone()
    expected[:, :, 0:8, 8:16] = self_mixed.flip(0)[:, :, 0:8, 8:16]  # then CutMix
    assert torch.equal(out, expected)
    # the target's most salient patch survives (copied over R_l, outside the CutMix box) ...
    assert torch.equal(out[0, :, 12:16, 12:16], x[0, :, 0:4, 0:4])
    # ... and the pasted region comes from the *self-mixed* source
    assert torch.equal(out[0, :, 0:4, 12:16], x[1, :, 12:16, 0:4])
    torch.testing.assert_close(soft, torch.tensor([[0.75, 0.25], [0.25, 0.75]]))


def test_saliency_comes_from_the_unmixed_batch_and_original_labels(monkeypatch):
    seen = {}

    def spy(model, x, target, *, mode, **kwargs):
        seen["x"], seen["target"], seen["mode"] = x.clone(), target.clone(), mode
        return torch.rand(x.shape[0], x.shape[2], x.shape[3], generator=_gen(0))

    monkeypatch.setattr(saliency_module, "gradient_saliency", spy)
    x, target = _batch(4), torch.tensor([3, 1, 4, 1])
    hybrid = HybridMix.v1(num_classes=5, warmup_epochs=0, saliency_mode="eval")
    hybrid(x, target, model=tiny_classifier(5), generator=_gen(0))
    assert torch.equal(seen["x"], x)
    assert torch.equal(seen["target"], target)
    assert seen["mode"] == "eval"


# -- warm-up, mixup_enabled, model -------------------------------------------------------------------------


def test_warmup_turns_only_salfmix_off():
    x, target, saliency = _batch(4), torch.arange(4), _saliency()
    hybrid = HybridMix.v3(num_classes=4, warmup_epochs=2)
    plain = CutMix(num_classes=4)
    for epoch in (0, 1):
        hybrid.set_epoch(epoch)
        assert not hybrid.salfmix_active
        out, _ = hybrid(x, target, generator=_gen(epoch))  # no model needed during the warm-up
        assert torch.equal(out, plain(x, target, generator=_gen(epoch))[0])
    hybrid.set_epoch(2)
    assert hybrid.salfmix_active
    with pytest.raises(ValueError, match="model"):
        hybrid(x, target)
    out, _ = hybrid(x, target, saliency=saliency, generator=_gen(2))
    assert not torch.equal(out, plain(x, target, generator=_gen(2))[0])
    hybrid.set_epoch(0)
    assert not hybrid.salfmix_active


def test_mixup_disabled_leaves_only_salfmix():
    x, target, saliency = _batch(4), torch.tensor([0, 2, 1, 2]), _saliency()
    hybrid = HybridMix.v1(num_classes=3, label_smoothing=0.1, warmup_epochs=0)
    hybrid.mixup_enabled = False
    out, soft = hybrid(x, target, saliency=saliency, generator=_gen(5))
    ref, _ = SalfMix(warmup_epochs=0)(x, target, saliency=saliency, generator=_gen(5))
    assert torch.equal(out, ref)
    assert not torch.equal(out, x)
    assert torch.equal(soft, to_soft_targets(target, 3, 0.1))


def test_mixup_disabled_and_salfmix_off_is_identity():
    x = _batch(2)
    hybrid = HybridMix(num_classes=3, salfmix_prob=0.0)
    hybrid.mixup_enabled = False
    out, soft = hybrid(x, torch.tensor([0, 2]))
    assert torch.equal(out, x) and out is not x
    assert torch.equal(soft, to_soft_targets(torch.tensor([0, 2]), 3, 0.1))


def test_runs_with_a_model_and_is_reproducible():
    x, target, model = _batch(4), torch.tensor([0, 1, 2, 3]), tiny_classifier(4)
    for preset in ("v1", "v2", "v3"):
        hybrid = getattr(HybridMix, preset)(num_classes=4, mode="elem", warmup_epochs=0)
        a = hybrid(x, target, model=model, generator=_gen(9))
        b = hybrid(x, target, model=model, generator=_gen(9))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        torch.testing.assert_close(a[1].sum(1), torch.ones(4))
        assert a[1].shape == (4, 4)
    seeded = HybridMix.v3(num_classes=4, warmup_epochs=0, generator=_gen(4))
    again = HybridMix.v3(num_classes=4, warmup_epochs=0, generator=_gen(4))
    assert torch.equal(seeded(x, target, model=model)[0], again(x, target, model=model)[0])


def test_model_is_required_only_when_salfmix_is_active():
    x, target = _batch(2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"model must be given.*salfmix_prob"):
        HybridMix(num_classes=2, warmup_epochs=0)(x, target)
    HybridMix(num_classes=2, warmup_epochs=0, salfmix_prob=0.0)(x, target)
    HybridMix(num_classes=2, warmup_epochs=1)(x, target)


# -- method choice -----------------------------------------------------------------------------------------


def test_switch_prob_chooses_between_mixup_and_cutmix():
    x = _batch(6)
    target = torch.arange(6)
    flipped = x.flip(0)
    only_cut = HybridMix(cutmix_alpha=1.0, switch_prob=1.0, salfmix_prob=0.0, num_classes=6, mode="elem")
    out, _ = only_cut(x, target, generator=_gen(1))
    assert ((out == x) | (out == flipped)).all()  # every pixel from one image: box methods only
    only_mix = HybridMix(cutmix_alpha=1.0, switch_prob=0.0, salfmix_prob=0.0, num_classes=6, mode="elem")
    out, _ = only_mix(x, target, generator=_gen(1))
    assert ((out != x) & (out != flipped)).float().mean() > 0.9  # blends everywhere: Mixup only


def test_elem_mode_mixes_methods_within_one_batch():
    x = (torch.arange(8, dtype=torch.float32) + 1).view(8, 1, 1, 1).expand(8, 3, 12, 12).contiguous()
    hybrid = HybridMix(
        mixup_alpha=1.0,
        cutmix_alpha=1.0,
        saliencymix_alpha=1.0,
        resizemix_scope=(0.3, 0.6),
        salfmix_prob=0.0,
        mode="elem",
        label_smoothing=0.0,
        num_classes=8,
    )
    kinds = set()
    for seed in range(3):
        out, soft = hybrid(x, torch.arange(8), generator=_gen(seed))
        torch.testing.assert_close(soft.sum(1), torch.ones(8))
        for i in range(8):
            own, partner = float(i + 1), float(8 - i)
            pixels = out[i, 0]
            if ((pixels == own) | (pixels == partner)).all():
                kinds.add("box")
                area = float((pixels == partner).float().mean())
                assert float(soft[i, 7 - i]) == pytest.approx(area, abs=1e-6)
            else:
                kinds.add("mixup")
                lam = float(soft[i, i])
                torch.testing.assert_close(pixels, torch.full_like(pixels, lam * own + (1 - lam) * partner))
    assert kinds == {"box", "mixup"}


# -- batch sizes, dtypes -----------------------------------------------------------------------------------


def test_batch_of_one():
    x = _batch(1)
    out, soft = HybridMix.v3(num_classes=3, salfmix_prob=0.0)(x, torch.tensor([1]))
    assert torch.equal(out, x)
    assert torch.equal(soft, torch.tensor([[0.0, 1.0, 0.0]]))
    # with SalfMix on, the single image is still self-mixed; the two-image mix leaves it alone
    hybrid = HybridMix.v3(num_classes=3, warmup_epochs=0)
    out, soft = hybrid(x, torch.tensor([1]), saliency=_saliency(1), generator=_gen(0))
    ref, _ = SalfMix(warmup_epochs=0)(x, torch.tensor([1]), saliency=_saliency(1), generator=_gen(0))
    assert torch.equal(out, ref)
    assert torch.equal(soft, torch.tensor([[0.0, 1.0, 0.0]]))


@pytest.mark.parametrize("preset", ["v1", "v2", "v3"])
def test_odd_batch(preset):
    x, target = _batch(5), torch.arange(5)
    hybrid = getattr(HybridMix, preset)(num_classes=5, warmup_epochs=0, mode="pair")
    out, soft = hybrid(x, target, saliency=_saliency(5), generator=_gen(0))
    ref, _ = SalfMix(warmup_epochs=0)(x, target, saliency=_saliency(5), generator=_gen(0))
    assert torch.equal(out[2], ref[2])  # the middle sample is only self-mixed
    assert torch.equal(soft[2], torch.eye(5)[2])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("preset", ["v1", "v2", "v3"])
def test_dtype_preserved(dtype, preset):
    x = _batch(4).to(dtype)
    hybrid = getattr(HybridMix, preset)(num_classes=4, warmup_epochs=0, mode="elem")
    out, soft = hybrid(x, torch.arange(4), saliency=_saliency(), generator=_gen(0))
    assert out.dtype == dtype
    assert soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(1), torch.ones(4))


def test_input_untouched_and_channels_last():
    x = _batch(4).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    out, _ = HybridMix.v3(num_classes=4, warmup_epochs=0)(x, torch.arange(4), saliency=_saliency())
    assert torch.equal(x, before)
    assert out.is_contiguous(memory_format=torch.channels_last)


# -- bad inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"mode": "half"}, ValueError, "mode"),
        ({"mixup_alpha": -1.0}, ValueError, "mixup_alpha"),
        ({"cutmix_alpha": -0.1}, ValueError, "cutmix_alpha"),
        ({"saliencymix_alpha": -2.0}, ValueError, "saliencymix_alpha"),
        ({"cutmix_minmax": (0.9, 0.1)}, ValueError, "cutmix_minmax"),
        ({"prob": 2.0}, ValueError, "prob"),
        ({"switch_prob": -0.5}, ValueError, "switch_prob"),
        ({"salfmix_prob": 1.5}, ValueError, "salfmix_prob"),
        ({"resizemix_scope": (0.5, 0.1)}, ValueError, "resizemix_scope"),
        ({"correct_lam": "yes"}, TypeError, "correct_lam"),
        ({"label_smoothing": 1.5}, ValueError, "label_smoothing"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"warmup_epochs": -1}, ValueError, "warmup_epochs"),
        ({"salfmix_grid": 0}, ValueError, "grid"),
        ({"salfmix_ratio": 0.0}, ValueError, "ratio"),
        ({"saliency_mode": "test"}, ValueError, "saliency_mode"),
        ({"mixup_alpha": 0.0, "salfmix_prob": 0.0}, ValueError, "salfmix_prob"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        HybridMix(**kwargs)


def test_bad_call_arguments():
    hybrid = HybridMix(num_classes=3, salfmix_prob=0.0)
    x = _batch(2)
    with pytest.raises(ValueError, match="target"):
        hybrid(x, torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="target"):
        hybrid(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="target"):
        hybrid(x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="saliency"):
        HybridMix(num_classes=3, warmup_epochs=0)(x, torch.tensor([0, 1]), saliency=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="epoch"):
        hybrid.set_epoch(-1)


# -- properties ------------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(
    preset=st.sampled_from(["v1", "v2", "v3"]),
    mode=st.sampled_from(["batch", "pair", "elem"]),
    batch=st.integers(1, 6),
    size=st.integers(4, 20),
    smoothing=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_rows_sum_to_one(preset, mode, batch, size, smoothing, seed):
    x = torch.rand(batch, 3, size, size, generator=_gen(seed))
    target = torch.randint(0, 4, (batch,), generator=_gen(seed))
    hybrid = getattr(HybridMix, preset)(num_classes=4, mode=mode, label_smoothing=smoothing, warmup_epochs=0)
    saliency = torch.rand(batch, size, size, generator=_gen(seed + 1))
    out, soft = hybrid(x, target, saliency=saliency, generator=_gen(seed))
    assert out.shape == x.shape
    torch.testing.assert_close(soft.sum(1), torch.ones(batch))
