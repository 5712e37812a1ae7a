"""Dense targets (semantic segmentation, issue 15): class masks (B, H, W) and soft dense targets
(B, K, H, W) follow the image through every batch transform, and the gradient saliency takes dense models.

The images encode where every pixel came from: for every sample ``k`` of the input three channels hold
``[k == b, (k == b) * row, (k == b) * col]`` (float64), so an output pixel holds, for each source sample
``k``, its weight ``w_k`` in the pixel and the source row and column (``value / w_k``); a copy or a paste
has one source of weight 1, a Mixup blend two of weights ``lam`` and ``1 - lam``, a cut-out pixel none.
The expected dense target of every output pixel is then ``sum_k w_k * y_k[row_k, col_k]``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from salfmix_transforms import CutMix, HybridMix, Mixup, SalfMix
from salfmix_transforms.cutout import Cutout, SaliencyCutout
from salfmix_transforms.fmix import FMix
from salfmix_transforms.mixing import MODES, ResizeMix, SaliencyMix
from salfmix_transforms.salfmix import RandomSelfMix
from salfmix_transforms.saliency import gradient_saliency, lowres_gradient_saliency
from salfmix_transforms.targets import dense_one_hot, to_soft_targets

B, H, W, K = 5, 8, 12, 4
IGNORE = 255
SMOOTHING = 0.1


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def weighted_images(batch: int = B) -> torch.Tensor:
    """(B, 3B, H, W) float64: sample k's channels 3k, 3k+1, 3k+2 are its indicator, row and column."""
    x = torch.zeros(batch, 3 * batch, H, W, dtype=torch.float64)
    rows = torch.arange(H, dtype=torch.float64).view(-1, 1).expand(H, W)
    cols = torch.arange(W, dtype=torch.float64).view(1, -1).expand(H, W)
    for k in range(batch):
        x[k, 3 * k], x[k, 3 * k + 1], x[k, 3 * k + 2] = 1.0, rows, cols
    return x


def pasted_images(batch: int = B) -> torch.Tensor:
    """(B, 3, H, W) float32 ``(sample, row, col)``, for transforms that copy or paste only (3 channels, so
    that SaliencyMix can compute its static saliency)."""
    b, r, c = torch.meshgrid(torch.arange(batch), torch.arange(H), torch.arange(W), indexing="ij")
    return torch.stack((b, r, c), dim=1).float()


def decode(out: torch.Tensor, batch: int = B) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output pixel and source sample: weights, source rows and columns, each (B, B, H, W)."""
    if out.shape[1] == 3:  # pasted images: one source of weight 1 per pixel
        source = out[:, 0].round().long()
        weights = (source.unsqueeze(1) == torch.arange(batch).view(1, -1, 1, 1)).double()
        rows = out[:, 1].round().long().unsqueeze(1).expand_as(weights)
        cols = out[:, 2].round().long().unsqueeze(1).expand_as(weights)
        return weights, rows, cols
    weights = out[:, 0::3]
    safe = torch.where(weights > 1e-12, weights, torch.ones_like(weights))
    rows = (out[:, 1::3] / safe).round().long().clamp(0, H - 1)
    cols = (out[:, 2::3] / safe).round().long().clamp(0, W - 1)
    return torch.where(weights > 1e-12, weights, torch.zeros_like(weights)), rows, cols


def expected_soft(out: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``sum_k w_k * source[k, :, row_k, col_k]`` per output pixel: (B, K, H, W) float64."""
    weights, rows, cols = decode(out)
    sample = torch.arange(B).view(1, -1, 1, 1).expand_as(rows)
    picked = source.double()[sample, :, rows, cols]  # (B, B, H, W, K)
    return (weights.unsqueeze(-1) * picked).sum(dim=1).permute(0, 3, 1, 2)


def expected_mask(out: torch.Tensor, mask: torch.Tensor, ignore: int = IGNORE) -> torch.Tensor:
    """The mask value of each output pixel's single source, ``ignore`` where none (cut out)."""
    weights, rows, cols = decode(out)
    assert ((weights == 0) | (weights == 1)).all() and (weights.sum(dim=1) <= 1).all()
    source = weights.argmax(dim=1, keepdim=True)
    picked = mask[source[:, 0], rows.gather(1, source)[:, 0], cols.gather(1, source)[:, 0]]
    return torch.where(weights.sum(dim=1) > 0, picked, torch.full_like(picked, ignore))


def moved_somewhere(out: torch.Tensor) -> bool:
    """Whether some output pixel is not the sample's own pixel at its place (the transform did something)."""
    weights, rows, cols = decode(out)
    own = torch.arange(B).view(-1, 1, 1)
    here_rows = torch.arange(H).view(1, -1, 1)
    here_cols = torch.arange(W).view(1, 1, -1)
    own_weight = weights.gather(1, own.expand(B, H, W).unsqueeze(1))[:, 0]
    own_row = rows.gather(1, own.expand(B, H, W).unsqueeze(1))[:, 0]
    own_col = cols.gather(1, own.expand(B, H, W).unsqueeze(1))[:, 0]
    still = (own_weight == 1) & (own_row == here_rows) & (own_col == here_cols)
    return not bool(still.all())


def class_mask(dtype: torch.dtype = torch.long, ignore: int = IGNORE) -> torch.Tensor:
    """A mask that depends on sample, row and column, with some ignored pixels."""
    b, r, c = torch.meshgrid(torch.arange(B), torch.arange(H), torch.arange(W), indexing="ij")
    mask = (3 * b + r + 2 * (c // 3)) % K
    mask[(r + c + b) % 7 == 0] = ignore
    return mask.to(dtype)


def soft_dense() -> torch.Tensor:
    """Soft dense targets (B, K, H, W): random distributions, some pixels all-zero (ignored)."""
    soft = torch.softmax(2 * torch.randn(B, K, H, W, generator=gen(5)), dim=1)
    soft[:, :, 0, :3] = 0.0
    return soft


def saliency_maps() -> torch.Tensor:
    return torch.rand(B, H, W, generator=gen(7))


LABEL_PRESERVING = {
    "salfmix": lambda **kw: SalfMix(grid=2, ratio=0.4, prob=0.75, warmup_epochs=0, **kw),
    "random-selfmix": lambda **kw: RandomSelfMix(grid=2, ratio=0.4, prob=0.75, warmup_epochs=0, **kw),
    "cutout": lambda **kw: Cutout(mask_ratio=0.5, prob=0.75, **kw),
    "saliency-cutout": lambda **kw: SaliencyCutout(grid=2, ratio=0.4, prob=0.75, warmup_epochs=0, **kw),
}

TWO_IMAGE = {
    "mixup": lambda mode: Mixup(mode=mode, num_classes=K, label_smoothing=SMOOTHING),
    "mixup-cutmix": lambda mode: Mixup(cutmix_alpha=1.0, mode=mode, num_classes=K, label_smoothing=SMOOTHING),
    "cutmix": lambda mode: CutMix(mode=mode, num_classes=K, label_smoothing=SMOOTHING),
    "saliencymix": lambda mode: SaliencyMix(mode=mode, num_classes=K, label_smoothing=SMOOTHING),
    "resizemix": lambda mode: ResizeMix(
        interpolation="nearest", mode=mode, num_classes=K, label_smoothing=SMOOTHING
    ),
    "hybridmix-v1": lambda mode: HybridMix.v1(**_hybrid(mode)),
    "hybridmix-v2": lambda mode: HybridMix.v2(**_hybrid(mode)),
    "hybridmix-v3": lambda mode: HybridMix.v3(**_hybrid(mode)),
}


def _hybrid(mode: str) -> dict:
    return {
        "mode": mode,
        "num_classes": K,
        "label_smoothing": SMOOTHING,
        "warmup_epochs": 0,
        "salfmix_grid": 2,
        "salfmix_ratio": 0.4,
        "salfmix_prob": 0.75,
    }


# -- label-preserving transforms: the mask moves with the pixels ---------------------------------------------


@pytest.mark.parametrize("method", sorted(LABEL_PRESERVING))
def test_label_preserving_class_mask_follows_the_pixels(method):
    x, mask = weighted_images(), class_mask(torch.uint8)
    out, target = LABEL_PRESERVING[method]()(x, mask, saliency=saliency_maps(), generator=gen(1))
    assert moved_somewhere(out)
    assert target.dtype == torch.uint8 and target.shape == (B, H, W)
    assert torch.equal(target, expected_mask(out, mask))
    assert torch.equal(mask, class_mask(torch.uint8)), "the caller's mask is not written"
    if "cutout" in method:
        assert (target == IGNORE).sum() > (mask == IGNORE).sum(), "cut-out pixels become ignore_index"


@pytest.mark.parametrize("method", sorted(LABEL_PRESERVING))
def test_label_preserving_soft_dense_follows_the_pixels(method):
    x, soft = weighted_images(), soft_dense()
    out, target = LABEL_PRESERVING[method]()(x, soft, saliency=saliency_maps(), generator=gen(2))
    assert moved_somewhere(out)
    torch.testing.assert_close(target.double(), expected_soft(out, soft), atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", sorted(LABEL_PRESERVING))
def test_label_preserving_with_num_classes_gives_smoothed_soft_dense_targets(method):
    x, mask = weighted_images(), class_mask()
    transform = LABEL_PRESERVING[method](num_classes=K, label_smoothing=SMOOTHING)
    out, target = transform(x, mask, saliency=saliency_maps(), generator=gen(3))
    source = dense_one_hot(mask, K, SMOOTHING, IGNORE)
    assert target.shape == (B, K, H, W) and target.dtype == torch.float32
    torch.testing.assert_close(target.double(), expected_soft(out, source), atol=1e-6, rtol=0)
    sums = target.sum(dim=1)
    assert torch.all(((sums - 1).abs() < 1e-6) | (sums == 0)), "a pixel is a distribution or ignored"


# -- two-image methods and HybridMix: paste / blend with the image's geometry --------------------------------


def _images_for(method: str) -> torch.Tensor:
    # HybridMix v2's SaliencyMix computes a static saliency, which needs 1 or 3 channels.
    return pasted_images() if method == "hybridmix-v2" else weighted_images()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", sorted(TWO_IMAGE))
def test_two_image_class_mask_gives_mixed_soft_dense_targets(method, mode):
    x, mask = _images_for(method), class_mask(torch.uint8)
    out, target = TWO_IMAGE[method](mode)(x, mask, saliency=saliency_maps(), generator=gen(4))
    assert moved_somewhere(out)
    assert target.shape == (B, K, H, W) and target.dtype == torch.float32
    source = dense_one_hot(mask, K, SMOOTHING, IGNORE)
    torch.testing.assert_close(target.double(), expected_soft(out, source), atol=1e-6, rtol=0)
    weights, _, _ = decode(out)
    if not method.startswith(("mixup", "hybridmix-v1")):  # pasted: hard stays hard (one smoothed one-hot)
        assert ((weights == 0) | (weights == 1)).all()
    # Where every source pixel is labelled the pixel is a distribution: the rows sum to 1.
    weights, rows, cols = decode(out)
    labelled = (mask != IGNORE)[torch.arange(B).view(1, -1, 1, 1), rows, cols] | (weights == 0)
    all_labelled = labelled.all(dim=1)
    sums = target.sum(dim=1)
    torch.testing.assert_close(sums[all_labelled], torch.ones_like(sums[all_labelled]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", sorted(TWO_IMAGE))
def test_two_image_soft_dense_targets_are_mixed_per_pixel(method, mode):
    x, soft = _images_for(method), soft_dense()
    out, target = TWO_IMAGE[method](mode)(x, soft, saliency=saliency_maps(), generator=gen(6))
    assert moved_somewhere(out)
    source = to_soft_targets(soft, K, SMOOTHING)
    torch.testing.assert_close(target.double(), expected_soft(out, source), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_mixup_pixels_are_lam_one_hot_i_plus_one_minus_lam_one_hot_j(mode):
    """Mixup written out: lam read from the image, the partner is the flipped batch, ignore adds nothing."""
    x, mask = weighted_images(), class_mask()
    out, target = Mixup(mode=mode, num_classes=K, label_smoothing=0.0)(x, mask, generator=gen(8))
    for b in range(B):
        j = B - 1 - b
        lam = float(out[b, 3 * b, 0, 0])
        assert 0 < lam <= 1 and (b != j or lam == 1.0)
        expected = lam * F.one_hot(mask[b].clamp(max=K - 1), K).permute(2, 0, 1) * (mask[b] != IGNORE)
        if j != b:
            partner = F.one_hot(mask[j].clamp(max=K - 1), K).permute(2, 0, 1) * (mask[j] != IGNORE)
            expected = expected + (1 - lam) * partner
        torch.testing.assert_close(target[b].double(), expected.double(), atol=1e-6, rtol=0)
        both = (mask[b] != IGNORE) & (mask[j] != IGNORE)
        torch.testing.assert_close(target[b].sum(0)[both], torch.ones(int(both.sum())))


def test_resizemix_resizes_the_mask_with_nearest_whatever_the_image_interpolation():
    mask = class_mask()
    _, target = ResizeMix(num_classes=K, mode="elem")(pasted_images(), mask, generator=gen(9))
    values = target.unique()
    assert set(values.tolist()) <= {0.0, 1.0}, "labels are pasted, never blended at the box edges"
    nearest = ResizeMix(num_classes=K, mode="elem", interpolation="nearest")
    _, target_nearest = nearest(pasted_images(), mask, generator=gen(9))
    assert torch.equal(target, target_nearest)


def test_classification_targets_and_images_are_unchanged_by_the_dense_path():
    """The same generator state gives the same images for a class target and for a class mask."""
    x, labels, mask = weighted_images(), torch.arange(B) % K, class_mask()
    for mode in MODES:
        for name, make in TWO_IMAGE.items():
            images = _images_for(name)
            a, soft = make(mode)(images, labels, saliency=saliency_maps(), generator=gen(11))
            b, _ = make(mode)(images, mask, saliency=saliency_maps(), generator=gen(11))
            assert torch.equal(a, b), (name, mode)
            assert soft.shape == (B, K)
    for make in LABEL_PRESERVING.values():
        a, y = make()(x, labels, saliency=saliency_maps(), generator=gen(12))
        b, _ = make()(x, mask, saliency=saliency_maps(), generator=gen(12))
        assert torch.equal(a, b) and torch.equal(y, labels)


@pytest.mark.parametrize(
    "make", [lambda: SalfMix(grid=2, inplace=True, warmup_epochs=0), lambda: Cutout(inplace=True)]
)
def test_inplace_overwrites_the_images_but_never_the_mask(make):
    x, mask = weighted_images(), class_mask()
    out, target = make()(x, mask, saliency=saliency_maps(), generator=gen(14))
    assert out is x and target is not mask
    assert torch.equal(mask, class_mask()) and torch.equal(target, expected_mask(out, mask))


def test_camvid_ignore_index_11():
    mask = class_mask(torch.uint8, ignore=11) % 12  # classes 0..3 and 11
    cut = Cutout(mask_ratio=0.5, ignore_index=11)
    out, target = cut(weighted_images(), mask, generator=gen(13))
    assert torch.equal(target, expected_mask(out, mask, ignore=11))
    _, soft = CutMix(num_classes=11, ignore_index=11, label_smoothing=0.0)(pasted_images(), mask)
    assert soft.shape == (B, 11, H, W)
    assert torch.all((soft.sum(1) == 0) | (soft.sum(1) == 1))


def test_batch_of_one_and_warmup_keep_the_mask():
    mask = class_mask()[:1]
    _, target = CutMix(num_classes=K, label_smoothing=0.0)(weighted_images(1), mask)
    assert torch.equal(target, dense_one_hot(mask, K))
    salfmix = SalfMix(grid=2, warmup_epochs=1, steps_per_epoch=10)
    _, kept = salfmix(weighted_images(), class_mask(), saliency=saliency_maps())
    assert torch.equal(kept, class_mask())


# -- bad dense targets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "target", "error", "match"),
    [
        (
            lambda: SalfMix(grid=2, warmup_epochs=0),
            lambda: class_mask()[:, :-1],
            ValueError,
            r"target .*7x12.*8x12",
        ),
        (lambda: CutMix(num_classes=K), lambda: soft_dense()[..., :-1], ValueError, r"target .*image"),
        (lambda: Cutout(), lambda: class_mask().float(), TypeError, r"target .*integer class indices"),
        (lambda: Mixup(num_classes=K), lambda: soft_dense().long(), TypeError, r"target .*floating"),
        (lambda: Mixup(num_classes=K), lambda: class_mask()[:3], ValueError, r"target has 3 masks"),
        (lambda: Mixup(num_classes=3), lambda: class_mask(), ValueError, r"target .*outside \[0, 2\]"),
        (lambda: SalfMix(grid=2, warmup_epochs=0), lambda: class_mask() - 1, ValueError, r"target .*outside"),
        (lambda: Mixup(num_classes=K + 1), lambda: soft_dense(), ValueError, r"target .*num_classes=5"),
        (lambda: CutMix(num_classes=K), lambda: soft_dense() * 2, ValueError, r"target .*sum to 1"),
        (lambda: CutMix(num_classes=K), lambda: -soft_dense(), ValueError, r"target .*negative"),
        # A class mask comes back a class mask with num_classes=None, but not with timm's label smoothing.
        (lambda: CutMix(num_classes=None), lambda: class_mask(), ValueError, r"label_smoothing.*num_classes"),
        (lambda: HybridMix.v1(num_classes=None), lambda: class_mask(), ValueError, r"num_classes"),
        (lambda: CutMix(num_classes=300), lambda: class_mask(), ValueError, r"ignore_index=255 is a class"),
        (lambda: Cutout(ignore_index=-1), lambda: class_mask(torch.uint8), ValueError, r"ignore_index=-1"),
        (
            lambda: SalfMix(warmup_epochs=0),
            lambda: class_mask().view(B, 1, 1, H, W),
            ValueError,
            r"target must be",
        ),
    ],
)
def test_bad_dense_targets_are_named(make, target, error, match):
    with pytest.raises(error, match=match):
        make()(weighted_images(), target(), saliency=saliency_maps())


def test_ignore_index_must_be_an_int():
    with pytest.raises(TypeError, match="ignore_index"):
        SalfMix(ignore_index=255.0)
    with pytest.raises(TypeError, match="ignore_index"):
        HybridMix(ignore_index="255")


# -- gradient saliency of segmentation models (eq. (2)-(3), per-pixel cross-entropy) -------------------------


class TinySeg(nn.Module):
    """conv - BN - ReLU - conv: logits (B, K, H, W) (or (B, K, H/2, W/2) with ``stride=2``)."""

    def __init__(self, stride: int = 1, as_dict: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.head = nn.Conv2d(6, K, 3, stride=stride, padding=1)
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        logits = self.head(self.body(x))
        return {"out": logits, "aux": logits.detach()} if self.as_dict else logits


def _seg_batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(B, 3, H, W, generator=gen(20))
    return x, class_mask()


def _reference_saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. (2)-(3) by hand: the summed per-pixel cross-entropy, logits up-sampled to the input size."""
    model.eval()
    x_in = x.clone().requires_grad_(True)
    logits = model(x_in)
    logits = logits["out"] if isinstance(logits, dict) else logits
    logits = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)
    if target.dim() == 3:
        loss = F.cross_entropy(logits, target.long(), ignore_index=IGNORE, reduction="sum")
    else:
        loss = F.cross_entropy(logits, target, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_in)
    return grad.abs().amax(dim=1)


@pytest.mark.parametrize("kind", ["plain", "dict", "stride-2"])
@pytest.mark.parametrize("target_kind", ["mask", "soft"])
def test_dense_saliency_is_the_per_pixel_cross_entropy_gradient(kind, target_kind):
    torch.manual_seed(0)
    model = TinySeg(stride=2 if kind == "stride-2" else 1, as_dict=kind == "dict")
    x, mask = _seg_batch()
    target = mask if target_kind == "mask" else soft_dense()
    maps = gradient_saliency(model, x, target, mode="eval", num_classes=K)
    assert maps.shape == (B, H, W) and maps.dtype == torch.float32 and (maps > 0).any()
    torch.testing.assert_close(maps, _reference_saliency(model, x, target))


def test_dense_saliency_leaves_the_model_as_found():
    torch.manual_seed(0)
    model = TinySeg()
    model.train()
    model.head.eval()  # a mixed pattern of flags comes back as it was
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    x, mask = _seg_batch()
    gradient_saliency(model, x, mask, mode="train")
    assert model.training and model.body.training and not model.head.training
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, grads[name]), name


def test_ignored_pixels_contribute_no_gradient():
    """A pointwise model: the logits of a pixel depend on that input pixel only, so an ignored pixel gets a
    zero saliency and a labelled one a non-zero saliency."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, K, 1)
    x, mask = _seg_batch()
    maps = gradient_saliency(model, x, mask, mode="eval")
    ignored = mask == IGNORE
    assert ignored.any() and (maps[ignored] == 0).all()
    assert (maps[~ignored] > 0).all()


def test_dense_and_classification_models_and_targets_must_agree():
    torch.manual_seed(0)
    x, mask = _seg_batch()
    classifier = nn.Sequential(nn.Conv2d(3, K, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match=r"target is dense.*model must return segmentation logits"):
        gradient_saliency(classifier, x, mask)
    with pytest.raises(ValueError, match=r"^model must return logits.*dense logits need a dense target"):
        gradient_saliency(TinySeg(), x, torch.arange(B) % K)
    with pytest.raises(ValueError, match=r"num_classes=7"):
        gradient_saliency(TinySeg(), x, mask, num_classes=7)
    with pytest.raises(ValueError, match=r"target .*outside \[0, 2\]"):
        gradient_saliency(nn.Conv2d(3, 3, 1), x, mask)
    with pytest.raises(ValueError, match=r"target .*image"):
        gradient_saliency(TinySeg(), x, mask[:, 1:])


def test_salfmix_and_hybridmix_run_on_a_segmentation_model():
    torch.manual_seed(0)
    model = TinySeg(as_dict=True)
    x, mask = _seg_batch()
    state = {name: b.clone() for name, b in model.state_dict().items()}
    salf = SalfMix(grid=2, model=model, num_classes=K, warmup_epochs=0)
    out, target = salf(x, mask, generator=gen(21))
    maps = gradient_saliency(model, x, mask, num_classes=K)
    again, _ = SalfMix(grid=2, num_classes=K, warmup_epochs=0)(x, mask, saliency=maps, generator=gen(21))
    assert torch.equal(out, again) and target.shape == (B, K, H, W)
    hybrid = HybridMix.v3(num_classes=K, warmup_epochs=0, model=model, saliency_scale=0.5)
    out, target = hybrid(x, mask, generator=gen(22))
    assert out.shape == x.shape and target.shape == (B, K, H, W)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_lowres_saliency_samples_the_mask_with_nearest():
    torch.manual_seed(0)
    model = TinySeg().eval()
    x, mask = _seg_batch()
    maps = lowres_gradient_saliency(model, x, mask, 0.5, mode="eval")
    assert maps.shape == (B, H, W) and torch.isfinite(maps).all()
    small = F.interpolate(x, size=(H // 2, W // 2), mode="bilinear", align_corners=False, antialias=True)
    small_mask = mask[:, ::2, ::2]
    expected = gradient_saliency(model, small, small_mask, mode="eval")
    torch.testing.assert_close(maps[:, ::2, ::2], expected)


# -- class masks out: with num_classes=None the methods that paste keep class masks (issue 22) ---------------

PASTING = ("cutmix", "saliencymix", "resizemix", "hybridmix-v2", "hybridmix-v3")


def _pasting(method: str, mode: str, num_classes: int | None) -> object:
    kw = {"mode": mode, "num_classes": num_classes, "label_smoothing": 0.0}
    hybrid = {**_hybrid(mode), **kw}
    return {
        "cutmix": lambda: CutMix(**kw),
        "saliencymix": lambda: SaliencyMix(**kw),
        "resizemix": lambda: ResizeMix(interpolation="nearest", **kw),
        "hybridmix-v2": lambda: HybridMix.v2(**hybrid),
        "hybridmix-v3": lambda: HybridMix.v3(**hybrid),
    }[method]()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", PASTING)
def test_pasting_methods_keep_a_class_mask_without_num_classes(method, mode):
    """Every output pixel's class is its source pixel's (ignored ones stay ignored), in the mask's dtype;
    the same draw with ``num_classes`` gives exactly the one-hot of that mask."""
    x, mask = _images_for(method), class_mask(torch.uint8)
    transform = _pasting(method, mode, None)
    assert transform.keeps_class_masks
    out, target = transform(x, mask, saliency=saliency_maps(), generator=gen(4))
    assert moved_somewhere(out)
    assert target.dtype == torch.uint8 and target.shape == (B, H, W)
    assert torch.equal(target, expected_mask(out, mask.long()).to(torch.uint8))
    out_soft, soft = _pasting(method, mode, K)(x, mask, saliency=saliency_maps(), generator=gen(4))
    assert torch.equal(out_soft, out)
    assert torch.equal(soft, dense_one_hot(target.long(), K, 0.0, IGNORE))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Mixup(num_classes=None, label_smoothing=0.0),
        lambda: Mixup(cutmix_alpha=1.0, num_classes=None, label_smoothing=0.0),
        lambda: HybridMix.v1(num_classes=None, label_smoothing=0.0, warmup_epochs=0, salfmix_grid=2),
        lambda: FMix(num_classes=None, label_smoothing=0.0),
    ],
    ids=["mixup", "mixup-cutmix", "hybridmix-v1", "fmix"],
)
def test_blending_methods_need_num_classes_for_a_class_mask(make):
    """A blended pixel has two classes: no class mask can say so, so soft dense targets are required."""
    transform = make()
    assert not transform.keeps_class_masks
    with pytest.raises(ValueError, match=r"num_classes=None .* (Mixup|FMix)Method blends labels: give num_"):
        transform(weighted_images(), class_mask(), saliency=saliency_maps())


def test_class_masks_out_refuse_label_smoothing_and_pass_the_warm_up():
    with pytest.raises(ValueError, match=r"label_smoothing=0.1 needs soft targets: give num_classes"):
        CutMix(num_classes=None)(weighted_images(), class_mask())
    mask = class_mask()
    _, target = CutMix(num_classes=None, label_smoothing=0.0, warmup_epochs=1)(weighted_images(), mask)
    assert target is mask  # the warm-up returns the class mask as it came


def test_hybridmix_without_a_two_image_method_still_works_on_class_masks():
    """SalfMix alone inside HybridMix (no partner switched on): no frame to ask (found by review)."""
    hybrid = HybridMix(mixup_alpha=0.0, cutmix_alpha=0.0, warmup_epochs=0, salfmix_grid=2, num_classes=K)
    _, soft = hybrid(weighted_images(), class_mask(), saliency=saliency_maps())
    assert soft.shape == (B, K, H, W)
    masks_out = HybridMix(
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        warmup_epochs=0,
        salfmix_grid=2,
        num_classes=None,
        label_smoothing=0.0,
    )
    assert masks_out.keeps_class_masks
    _, target = masks_out(weighted_images(), class_mask(), saliency=saliency_maps())
    assert target.shape == (B, H, W) and target.dtype == torch.long


def test_a_method_that_does_not_say_it_pastes_counts_as_blending():
    """``MixMethod.blends`` defaults to True: a user's method must opt in to class masks (found by review)."""
    from salfmix_transforms.mixing import MixupMethod, TwoImageMix

    class Halves(MixupMethod.__mro__[1]):  # a plain MixMethod written against the documented API
        def sample(self, slots, height, width, generator, device):
            return MixupMethod(1.0).sample(slots, height, width, generator, device)

        def apply(self, x, params, layout, saliency):
            return MixupMethod(1.0).apply(x, params, layout, saliency)

    frame = TwoImageMix([Halves()], num_classes=None, label_smoothing=0.0)
    assert not frame.keeps_class_masks
    with pytest.raises(ValueError, match="Halves blends labels"):
        frame(weighted_images(), class_mask())
