"""FMix (Harris et al., 2020) on the two-image frame: the mask's statistics by hand-built cases, targets,
dense targets, provenance, and the front ends (registry, flags, pictures)."""

from __future__ import annotations

import pytest
import torch

from salfmix_transforms import FMix, HybridMix, flags, methods, viz
from salfmix_transforms.boxes import sample_beta
from salfmix_transforms.cli import OneLineArgumentParser
from salfmix_transforms.fmix import FMixMethod, fourier_masks
from salfmix_transforms.targets import to_soft_targets

H, W = 32, 32


def _masks(seed: int, lam: torch.Tensor, **kw) -> torch.Tensor:
    return fourier_masks(lam, H, W, generator=torch.Generator().manual_seed(seed), **kw)


def _low_frequency_fraction(mask: torch.Tensor, cutoff: float = 0.1) -> float:
    power = torch.fft.fft2(mask - mask.mean()).abs() ** 2
    fy = torch.fft.fftfreq(H).view(-1, 1)
    fx = torch.fft.fftfreq(W).view(1, -1)
    low = (fy**2 + fx**2).sqrt() <= cutoff
    return float(power[low].sum() / power.sum())


@pytest.mark.parametrize("lam", [0.0, 0.013, 0.25, 0.5, 0.777, 1.0])
def test_mask_mean_is_lam_within_one_pixel_and_binary(lam):
    masks = _masks(0, torch.full((4,), lam, dtype=torch.float64))
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.all((masks.sum(dim=(1, 2)) - lam * H * W).abs() <= 1)


def test_mask_is_low_frequency():
    lam = torch.full((8,), 0.5, dtype=torch.float64)
    masks = _masks(1, lam)
    gen = torch.Generator().manual_seed(2)
    for mask in masks:
        random = torch.zeros(H * W)
        random[torch.randperm(H * W, generator=gen)[: int(mask.sum())]] = 1
        assert _low_frequency_fraction(mask) > 0.5 > _low_frequency_fraction(random.view(H, W))


def test_fixed_seed_reproduces_the_mask_and_soft_boundary_ramps():
    lam = torch.tensor([0.3, 0.6], dtype=torch.float64)
    assert torch.equal(_masks(3, lam), _masks(3, lam)) and not torch.equal(_masks(3, lam), _masks(4, lam))
    soft = _masks(3, lam, max_soft=0.1)
    assert soft.min() >= 0 and soft.max() <= 1 and ((soft > 0) & (soft < 1)).any()
    assert torch.all((soft.sum(dim=(1, 2)) - lam * H * W).abs() <= 1)  # the ramp is symmetric


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_image_target_and_provenance_are_the_mask(mode):
    x = torch.rand(6, 3, H, W, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6) % 4
    fmix = FMix(num_classes=4, label_smoothing=0.0, mode=mode, prob=1.0)
    out, soft = fmix(x, y, generator=torch.Generator().manual_seed(5))
    own = fmix.provenance  # (B, H, W): the share of each pixel that is the sample's own = the mask
    mask = own.unsqueeze(1)
    assert set(own.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(out, torch.where(mask == 1, x, x.flip(0)), rtol=0, atol=0)
    lam = own.mean(dim=(1, 2))
    one_hot = to_soft_targets(y, 4)
    expected = lam.view(-1, 1) * one_hot + (1 - lam.view(-1, 1)) * one_hot.flip(0)
    torch.testing.assert_close(soft, expected)
    # dense targets follow the mask pixel by pixel
    masks = torch.randint(0, 4, (6, H, W), generator=torch.Generator().manual_seed(7))
    fmix = FMix(num_classes=4, label_smoothing=0.0, mode=mode)
    _, dense = fmix(x, masks, generator=torch.Generator().manual_seed(5))
    own = fmix.provenance.unsqueeze(1)
    one_hot = torch.nn.functional.one_hot(masks, 4).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(dense, torch.where(own == 1, one_hot, one_hot.flip(0)))


def test_the_method_draws_lam_from_beta_and_the_mask_from_its_generator():
    method = FMixMethod(alpha=0.5)
    gen = torch.Generator().manual_seed(9)
    masks = method.sample(3, H, W, gen, torch.device("cpu"))
    lam = sample_beta(0.5, 3, torch.Generator().manual_seed(9), torch.device("cpu"))
    assert torch.all((masks.sum(dim=(1, 2)) - lam * H * W).abs() <= 1)
    with pytest.raises(ValueError, match="alpha"):
        FMix(alpha=0.0)
    with pytest.raises(ValueError, match="max_soft"):
        FMix(max_soft=2.0)


@pytest.mark.parametrize("argv", [["--method", "fmix"], ["--fmix", "0.5"], ["--hybrid", "fmix"]])
def test_flags_parse_and_build_fmix(argv):
    parser = OneLineArgumentParser(prog="train.py")
    flags.add_augmentation_flags(parser)
    args = flags.parse_augmentation_flags(parser, argv)
    transform = flags.build_batch_transform(args, 4)
    if argv[0] == "--hybrid":
        assert isinstance(transform, HybridMix) and [type(m) for m in transform.mix.methods] == [FMixMethod]
    else:
        assert type(transform) is FMix and flags.method_name(args) == "fmix"
    if argv[0] == "--method":
        assert repr(transform) == repr(methods.build("fmix", 4))


def test_pictures_have_an_fmix_row():
    assert "FMix" in viz.default_methods(4)
