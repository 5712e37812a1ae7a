"""Issue 16, API items 1-8: every bad input a clear error, no silent wrong result.

Each test reproduces one report of the adversarial run (x = torch.rand(4, 3, 16, 16), y = torch.arange(4)).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _batch_helpers import images, tiny_classifier
from torch import nn

from salfmix_transforms import (
    CutMix,
    Cutout,
    HybridMix,
    Mixup,
    RandomSelfMix,
    ResizeMix,
    SalfMix,
    SaliencyCutout,
    SaliencyMix,
    gradient_saliency,
)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The adversarial run's batch: x = torch.rand(4, 3, 16, 16) (seed 0), y = torch.arange(4)."""
    return images(4, 3, 16, 16, seed=0), torch.arange(4)


def _net(num_classes: int = 4) -> nn.Module:
    """Conv, batch norm, ReLU, flatten, linear on the 16x16 images (unseeded: the global generator)."""
    return tiny_classifier(num_classes, image_size=16, batchnorm=True, seed=None)


# -- 1. autograd through the out-of-place two-image methods ---------------------------------------------


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize(
    "factory",
    [
        lambda mode: CutMix(num_classes=4, mode=mode),
        lambda mode: SaliencyMix(num_classes=4, mode=mode),
        lambda mode: ResizeMix(num_classes=4, mode=mode),
        lambda mode: Mixup(num_classes=4, mode=mode),
        lambda mode: HybridMix.v2(num_classes=4, mode=mode, salfmix_prob=0.0),
    ],
    ids=["cutmix", "saliencymix", "resizemix", "mixup", "hybridmix-v2"],
)
def test_a_batch_that_requires_grad_gets_a_differentiable_result(factory, mode):
    x, y = _batch()
    x.requires_grad_(True)
    out, _ = factory(mode)(x, y, generator=torch.Generator().manual_seed(1))
    assert out.requires_grad
    (grad,) = torch.autograd.grad(out.sum(), x)
    # Every output pixel is one input pixel (box methods) or a convex combination: the gradient of the sum
    # is a count of how often each input pixel is used, weighted; it sums to the number of output pixels.
    assert float(grad.sum()) == pytest.approx(out.numel(), rel=1e-4)


# -- 2. warm-up returns a new tensor ------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        lambda: SalfMix(warmup_epochs=1),
        lambda: RandomSelfMix(warmup_epochs=1),
        lambda: Cutout(warmup_epochs=1),
        lambda: CutMix(num_classes=4, warmup_epochs=1),
    ],
    ids=["salfmix", "randomselfmix", "cutout", "cutmix"],
)
def test_the_warm_up_returns_a_new_tensor_unless_inplace(factory):
    x, y = _batch()
    transform = factory()
    transform.set_epoch(0)
    out, _ = transform(x, y)
    assert out is not x and torch.equal(out, x)
    out[0, 0, 0, 0] = -1.0
    assert x[0, 0, 0, 0] != -1.0


def test_the_warm_up_of_an_inplace_transform_returns_the_batch_itself():
    x, y = _batch()
    transform = SalfMix(warmup_epochs=1, inplace=True)
    transform.set_epoch(0)
    assert transform(x, y)[0] is x


# -- 3. in place on a batch whose elements share memory -----------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        lambda: Cutout(inplace=True),
        lambda: SaliencyCutout(inplace=True, warmup_epochs=0),
        lambda: SalfMix(inplace=True, warmup_epochs=0),
        lambda: RandomSelfMix(inplace=True, warmup_epochs=0),
    ],
    ids=["cutout", "saliencycutout", "salfmix", "randomselfmix"],
)
def test_inplace_refuses_a_batch_whose_elements_share_memory(factory):
    base = torch.rand(1, 3, 16, 16)
    x = base.expand(4, -1, -1, -1)
    saliency = torch.rand(4, 16, 16)
    with pytest.raises(ValueError, match=r"x.*share memory.*clone"):
        factory()(x, torch.arange(4), saliency=saliency)


def test_inplace_refuses_an_inference_tensor_outside_inference_mode():
    with torch.inference_mode():
        x = torch.rand(4, 3, 16, 16)
    with pytest.raises(ValueError, match=r"inference"):
        Cutout(inplace=True)(x, torch.arange(4))


# -- 4. soft targets that are not distributions --------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        torch.full((4, 4), 0.125),  # rows sum to 0.5
        torch.tensor([[1.5, -0.5, 0.0, 0.0]] * 4),  # a negative entry
        torch.tensor([[float("nan"), 1.0, 0.0, 0.0]] * 4),
    ],
    ids=["sum-0.5", "negative", "nan"],
)
@pytest.mark.parametrize(
    "factory",
    [
        lambda: Mixup(num_classes=4),
        lambda: CutMix(num_classes=4),
        lambda: SaliencyMix(num_classes=4),
        lambda: ResizeMix(num_classes=4),
        lambda: HybridMix.v3(num_classes=4, salfmix_prob=0.0),
        lambda: SalfMix(num_classes=4, warmup_epochs=0),
    ],
    ids=["mixup", "cutmix", "saliencymix", "resizemix", "hybridmix", "salfmix"],
)
def test_soft_targets_must_be_distributions(factory, target):
    x, _ = _batch()
    with pytest.raises(ValueError, match=r"target.*(sum to 1|negative|finite)"):
        factory()(x, target, saliency=torch.rand(4, 16, 16))


# -- 5. num_classes against the model's logits ---------------------------------------------------------


def test_num_classes_is_checked_against_the_models_logits():
    x, y = _batch()
    hybrid = HybridMix.v1(num_classes=20, warmup_epochs=0)
    with pytest.raises(ValueError, match=r"num_classes=20.*10 logits|10 logits.*num_classes=20"):
        hybrid(x, y, model=_net(10))
    with pytest.raises(ValueError, match=r"num_classes=20.*10 logits|10 logits.*num_classes=20"):
        SalfMix(num_classes=20, warmup_epochs=0)(x, y, model=_net(10))


# -- 6. models the saliency pass must handle or refuse clearly -----------------------------------------


class _InPlaceInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.sub_(0.5)
        return self.net(x)


def test_a_forward_that_modifies_its_input_in_place_works_and_leaves_the_callers_batch_alone():
    x, y = _batch()
    before = x.clone()
    saliency = gradient_saliency(_InPlaceInput(), x, y)
    assert saliency.shape == (4, 16, 16) and torch.isfinite(saliency).all()
    assert torch.equal(x, before)


def test_reentrant_gradient_checkpointing_is_refused_with_the_fix():
    from torch.utils.checkpoint import checkpoint

    class Checkpointed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return checkpoint(self.net, x, use_reentrant=True)

    x, y = _batch()
    with pytest.raises(RuntimeError, match=r"reentrant.*use_reentrant=False"):
        gradient_saliency(Checkpointed(), x, y)


def test_train_mode_batchnorm_on_a_batch_of_one_is_refused_with_the_fix():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8), nn.BatchNorm1d(8), nn.Linear(8, 4)).eval()
    x, y = _batch()
    with pytest.raises(ValueError, match=r"batch of 1.*saliency_mode='eval'|mode='eval'"):
        gradient_saliency(model, x[:1], y[:1], mode="train")
    assert gradient_saliency(model, x[:1], y[:1], mode="eval").shape == (1, 16, 16)


def test_a_lazy_model_is_refused_without_materialising_it_or_drawing_random_numbers():
    model = nn.Sequential(nn.Flatten(), nn.LazyLinear(4))
    x, y = _batch()
    state = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"lazy|uninitiali[sz]ed"):
        gradient_saliency(model, x, y)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(model[1], nn.LazyLinear)


def test_a_half_batch_with_a_float_model_says_dtype_mismatch():
    x, y = _batch()
    with pytest.raises(TypeError, match=r"float16.*float32|dtype"):
        gradient_saliency(_net(), x.half(), y)


# -- 8. small things -------------------------------------------------------------------------------------


def test_numpy_integers_are_accepted_for_every_count():
    assert SalfMix(num_classes=np.int64(10), grid=np.int64(4)).num_classes == 10
    assert Mixup(num_classes=np.int64(10)).num_classes == 10


def test_an_infinite_alpha_in_hybridmix_is_reported_under_its_own_name():
    with pytest.raises(ValueError, match="mixup_alpha"):
        HybridMix(mixup_alpha=float("inf"))


@pytest.mark.parametrize("dtype", [torch.int16, torch.int8, torch.float16])
def test_any_real_dtype_is_a_valid_saliency_map(dtype):
    x, y = _batch()
    saliency = torch.zeros(4, 16, 16, dtype=dtype)
    saliency[:, :4, :4] = 5
    out, _ = SalfMix(grid=4, ratio=0.25, warmup_epochs=0)(
        x, y, saliency=saliency, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(out[:, :, :4, :4], x[:, :, :4, :4])  # the hot cell is the source, never overwritten


# -- 7. per-sample front ends: every PIL mode and NumPy dtype ------------------------------------------


def _expected_copy(image: np.ndarray, saliency: torch.Tensor, seed: int) -> np.ndarray:
    """Algorithm 1, line 6 by hand with the plan the front ends draw (same generator state)."""
    plan = SalfMix(4, 0.3, 1.0).plan(saliency[None], torch.Generator().manual_seed(seed))
    st, sl, dt, dl = (int(v[0]) for v in (plan.src_top, plan.src_left, plan.dst_top, plan.dst_left))
    ph, pw = plan.patch_height, plan.patch_width
    expected = image.copy()
    expected[dt : dt + ph, dl : dl + pw] = image[st : st + ph, sl : sl + pw]
    return expected


def _hot_map() -> torch.Tensor:
    saliency = torch.zeros(16, 16)
    saliency[:4, :4] = 1.0
    return saliency


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "L", "RGB", "F"])
def test_salfmixv2_copies_the_patch_of_a_pil_image_of_any_mode(mode):
    from PIL import Image
    from torchvision import tv_tensors

    from salfmix_transforms import SalfMixV2

    base = (np.arange(256).reshape(16, 16) % 200).astype(np.uint8)
    image = {
        "I;16": Image.fromarray((np.arange(256).reshape(16, 16) * 200).astype(np.uint16)),
        "F": Image.fromarray(base.astype(np.float32)),
    }.get(mode) or Image.fromarray(base).convert(mode)
    transform = SalfMixV2(p=1.0, generator=torch.Generator().manual_seed(3))
    out = transform({"image": image, "saliency": tv_tensors.Mask(_hot_map())})["image"]
    assert out.mode == image.mode and out.size == image.size
    assert np.array_equal(np.array(out), _expected_copy(np.array(image), _hot_map(), 3))
    if mode == "P":
        assert out.getpalette() == image.getpalette()


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int64, np.float64, np.bool_])
@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 1), (16, 16, 3)])
def test_salfmixa_copies_the_patch_of_an_array_of_any_dtype(dtype, shape):
    from salfmix_transforms import SalfMixA

    image = (np.arange(16 * 16 * shape[-1] if len(shape) == 3 else 256) * 7 % 5).astype(dtype).reshape(shape)
    transform = SalfMixA(p=1.0, generator=torch.Generator().manual_seed(4))
    out = transform(image=image, saliency=_hot_map().numpy())["image"]
    assert out.dtype == image.dtype and out.shape == image.shape
    assert np.array_equal(out, _expected_copy(image, _hot_map(), 4))


@pytest.mark.parametrize("fill", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("cls", [Cutout, SaliencyCutout])
def test_a_non_finite_fill_is_refused(cls, fill):
    """A NaN or infinite fill would reach the loss as NaN: refused at construction, naming the argument."""
    with pytest.raises(ValueError, match="fill must be a finite"):
        cls(fill=fill)
