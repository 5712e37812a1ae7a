"""torchvision's calling convention (issue 21, item 11): every batch transform takes ``fn(images, labels)``
and the packed ``fn((images, labels))`` of torchvision's v2 ``MixUp`` / ``CutMix``
(``test_supported_input_structure``), and a ``tv_tensors.Image`` batch comes back as a ``tv_tensors.Image``.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate
from torchvision import tv_tensors

from salfmix_transforms import methods

K = 4
NAMES = [name for name in methods.METHODS if name != "baseline"]


def _build(name: str):
    # no warm-up, so that every method transforms the batch at the first call
    overrides = {"warmup_epochs": 0} if methods.spec(name).self_mixing else {}
    return methods.build(name, K, **overrides)


def _call_kwargs(name: str, seed: int = 0) -> dict:
    """Model-free: the methods that need saliency get maps (B, H, W)."""
    kwargs = {"generator": torch.Generator().manual_seed(seed)}
    if methods.spec(name).needs_model:
        kwargs["saliency"] = torch.rand(6, 16, 16, generator=torch.Generator().manual_seed(7))
    return kwargs


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(6, 3, 16, 16, generator=g), torch.randint(0, K, (6,), generator=g)


@pytest.mark.parametrize("pack", [tuple, list], ids=["tuple", "list"])
@pytest.mark.parametrize("name", NAMES)
def test_packed_images_and_labels_equal_the_two_argument_call(name, pack):
    x, y = _batch()
    expected = _build(name)(x, y, **_call_kwargs(name))
    out = _build(name)(pack((x, y)), **_call_kwargs(name))
    assert type(out) is pack and len(out) == 2  # the structure given comes back, as torchvision's
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])
    assert not torch.equal(out[0], x)  # the batch was transformed


@pytest.mark.parametrize("packed", [False, True], ids=["two-arguments", "packed"])
@pytest.mark.parametrize("name", NAMES)
def test_tv_tensors_image_in_gives_tv_tensors_image_out(name, packed):
    x, y = _batch()
    image = tv_tensors.Image(x)
    fn = _build(name)
    out, target = fn((image, y), **_call_kwargs(name)) if packed else fn(image, y, **_call_kwargs(name))
    assert type(out) is tv_tensors.Image, type(out)
    assert type(target) is torch.Tensor and target.shape == (6, K)
    expected, _ = _build(name)(x, y, **_call_kwargs(name))
    assert torch.equal(out.as_subclass(torch.Tensor), expected)


@pytest.mark.parametrize("name", ["salfmix", "hybridmix-v3", "cutmix"])
def test_tv_tensors_image_in_warmup_and_inplace(name):
    x, y = _batch()
    fn = methods.build(name, K, warmup_epochs=1)  # warm-up: the identity (HybridMix: CutMix alone)
    with pytest.warns(UserWarning, match="nothing ends the warm-up"):
        out, _ = fn(tv_tensors.Image(x), y, **_call_kwargs(name))
    assert type(out) is tv_tensors.Image
    assert torch.equal(out.as_subclass(torch.Tensor), x) == (name != "hybridmix-v3")
    if name == "salfmix":
        image = tv_tensors.Image(x.clone())
        fn = methods.build(name, K, warmup_epochs=0, inplace=True)
        out, _ = fn(image, y, **_call_kwargs(name))
        assert out is image  # inplace: the batch itself, overwritten


def test_packed_form_in_a_collate_function():
    """torchvision's recipe: ``collate_fn=lambda batch: cutmix(*default_collate(batch))`` and the packed
    ``cutmix(default_collate(batch))`` (a list)."""
    fn = methods.build("cutmix", K)
    samples = [(torch.rand(3, 8, 8), i % K) for i in range(4)]
    images, labels = fn(default_collate(samples))
    assert images.shape == (4, 3, 8, 8) and labels.shape == (4, K)
    images, labels = fn(*default_collate(samples))
    assert images.shape == (4, 3, 8, 8) and labels.shape == (4, K)


@pytest.mark.parametrize(
    "call",
    [
        lambda fn, x, y: fn((x,)),
        lambda fn, x, y: fn((x, y, y)),
        lambda fn, x, y: fn(x),
        lambda fn, x, y: fn({"image": x, "label": y}),
    ],
    ids=["one", "three", "images-only", "dict"],
)
def test_a_bad_packed_form_names_the_argument(call):
    x, y = _batch()
    with pytest.raises(TypeError, match=r"target.*\(x, target\)"):
        call(_build("cutmix"), x, y)


def test_packed_form_with_a_target_too_is_refused():
    x, y = _batch()
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        _build("cutmix")((x, y), y)
