"""timm parity beyond float32 (issue 21, item 12): ``Mixup`` / ``CutMix`` equal ``timm.data.Mixup`` of the
installed timm bit for bit in their pixels for float16 / bfloat16 / float32 / float64 batches in every mode,
and in their targets up to the documented choice (float32 targets with a float32 ``lam``, whatever the
images' dtype); ``cutmix_minmax`` that leaves no box side is refused by name, where timm raises too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.data import mixup as timm_mixup

from salfmix_transforms import mixing
from salfmix_transforms.hybrid import HybridMix
from salfmix_transforms.mixing import CutMix, Mixup

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
LAMS = [0.3, 0.55, 0.8, 0.1, 0.62, 0.45]
CYS, CXS = [3, 12, 0, 15, 7, 9], [4, 19, 9, 0, 10, 2]


def _pin(monkeypatch, mode: str) -> None:
    """The same ``lam`` and box centres for timm's numpy draws and ours; every slot is applied."""
    slots = {"batch": 1, "pair": 3, "elem": 6}[mode]
    centres = [v for pair in zip(CYS[:slots], CXS[:slots]) for v in pair]

    def np_beta(a, b, size=None):
        return LAMS[0] if size is None else np.asarray(LAMS[:size], dtype=np.float64)

    monkeypatch.setattr(np.random, "beta", np_beta)
    monkeypatch.setattr(np.random, "rand", lambda *size: 0.0 if not size else np.zeros(size))
    monkeypatch.setattr(np.random, "randint", lambda low, high=None, size=None: centres.pop(0))
    lams = torch.tensor(LAMS, dtype=torch.float64)
    monkeypatch.setattr(mixing, "sample_beta", lambda alpha, count, g, device: lams[:count].clone())
    monkeypatch.setattr(
        mixing,
        "sample_box_centres",
        lambda h, w, count, g, device: (torch.tensor(CYS[:count]), torch.tensor(CXS[:count])),
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("method", ["mixup", "cutmix"])
def test_mixup_and_cutmix_equal_timm_bit_for_bit_in_every_dtype(monkeypatch, method, mode, dtype):
    _pin(monkeypatch, mode)
    args = {"mixup_alpha": 1.0} if method == "mixup" else {"mixup_alpha": 0.0, "cutmix_alpha": 1.0}
    args.update(mode=mode, label_smoothing=0.1, num_classes=6)
    x = torch.rand(6, 3, 16, 20, generator=torch.Generator().manual_seed(0)).to(dtype)
    target = torch.tensor([3, 1, 0, 2, 5, 4])
    ref_x, ref_t = timm_mixup.Mixup(**args)(x.clone(), target)
    cls = Mixup if method == "mixup" else CutMix
    out, soft = cls(**args)(x, target)
    assert out.dtype == ref_x.dtype == dtype
    assert torch.equal(out, ref_x)
    # Targets: documented choice (Mixup's docstring): float32 targets with lam in float32 whatever the
    # images' dtype, i.e. timm's targets of the same batch in float32. timm rounds the per-sample lam to
    # the images' dtype in 'pair' / 'elem' mode (float64 targets for float64 images; rows that do not sum
    # to 1 in float16 / bfloat16).
    _pin(monkeypatch, mode)
    _, ref_t32 = timm_mixup.Mixup(**args)(x.float().clone(), target)
    assert soft.dtype == ref_t32.dtype == torch.float32
    assert torch.equal(soft, ref_t32), (soft - ref_t32).abs().max()
    if dtype in (torch.float32, torch.float64) or mode == "batch":
        torch.testing.assert_close(soft, ref_t.float(), rtol=0, atol=1e-7)
    torch.testing.assert_close(soft.sum(1), torch.ones(6), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_hybridmix_without_salfmix_equals_timm_in_every_dtype(monkeypatch, dtype):
    _pin(monkeypatch, "elem")
    args = {"mixup_alpha": 0.0, "cutmix_alpha": 1.0, "mode": "elem", "num_classes": 6}
    x = torch.rand(6, 3, 16, 20, generator=torch.Generator().manual_seed(1)).to(dtype)
    target = torch.tensor([3, 1, 0, 2, 5, 4])
    ref_x, _ = timm_mixup.Mixup(**args)(x.clone(), target)
    _pin(monkeypatch, "elem")
    _, ref_t32 = timm_mixup.Mixup(**args)(x.float().clone(), target)
    out, soft = HybridMix(**args, salfmix_prob=0.0)(x, target)
    assert torch.equal(out, ref_x) and soft.dtype == torch.float32 and torch.equal(soft, ref_t32)


@pytest.mark.parametrize("minmax", [(0.5, 0.5), (0.8, 0.2)])
@pytest.mark.parametrize("build", [Mixup, CutMix, HybridMix], ids=["Mixup", "CutMix", "HybridMix"])
def test_cutmix_minmax_low_not_below_high_is_refused(build, minmax):
    with pytest.raises(ValueError, match="low >= high"):  # timm: np.random.randint(low, high)
        timm_mixup.Mixup(mixup_alpha=0.0, cutmix_minmax=minmax)(torch.rand(2, 3, 16, 16), torch.arange(2))
    with pytest.raises(ValueError, match="cutmix_minmax"):
        build(cutmix_minmax=minmax)


@pytest.mark.parametrize("mode", ["batch", "elem"])
@pytest.mark.parametrize("build", [Mixup, CutMix, HybridMix], ids=["Mixup", "CutMix", "HybridMix"])
def test_cutmix_minmax_with_an_empty_side_range_on_the_image_is_refused(build, mode):
    # 16 x 20 images: int(16 * 0.2) == int(16 * 0.24) == 3, an empty range [3, 3) of box heights
    args = {"mixup_alpha": 0.0, "cutmix_minmax": (0.2, 0.24), "mode": mode, "num_classes": 6}
    x, target = torch.rand(6, 3, 16, 20), torch.tensor([3, 1, 0, 2, 5, 4])
    with pytest.raises(ValueError):  # timm: np.random.randint(3, 3)
        timm_mixup.Mixup(**args)(x.clone(), target)
    kwargs = {"salfmix_prob": 0.0} if build is HybridMix else {}
    with pytest.raises(ValueError, match=r"cutmix_minmax=\(0\.2, 0\.24\).*16"):
        build(**args, **kwargs)(x, target)
    build(**args, **kwargs)(torch.rand(6, 3, 32, 40), target)  # [6, 7) on 32 x 40: fine
