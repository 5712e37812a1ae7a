"""The per-sample map follows every geometric transform placed before SalfMix, or the call fails.

A 32x32 image holds one object (an 8x8 square of a colour found nowhere else) near the top-left corner; its
saliency map is 1 on the object and 0 elsewhere. After a flip, a pad + crop or a resized crop, SalfMix must
copy the object (``P_m`` covers the *transformed* hot spot) over ``P_l``. A map that torchvision or
albumentations would leave where it was (a plain tensor / array for ``SalfMixV2``, a map not declared as a
mask target for ``SalfMixA``) is refused with an error that says how to pass it.
"""

from __future__ import annotations

import json

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from salfmix_transforms import pipeline
from salfmix_transforms.pipeline import SalfMixA, SalfMixV2
from salfmix_transforms.salfmix import SalfMix

SIZE = 32
OBJECT = (slice(4, 12), slice(4, 12))
COLOUR = np.array([250, 20, 20], dtype=np.uint8)  # red channel > 128: never in the background


def _object_sample() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 128, (SIZE, SIZE, 3), dtype=np.uint8)
    image[OBJECT] = COLOUR
    saliency = np.zeros((SIZE, SIZE), dtype=np.float32)
    saliency[OBJECT] = 1.0
    return image, saliency


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_object_copied(out_hwc: np.ndarray, moved_map: np.ndarray, seed: int) -> None:
    """``out_hwc`` is SalfMix of the transformed image, decided on the transformed map ``moved_map``.

    The plan is recomputed from ``moved_map`` with the transform's generator seed: ``P_m`` must cover the
    transformed hot spot, ``P_l`` must now hold the object's pixels, and outside ``P_l`` the object must sit
    exactly where the map says (the image and the map moved together).
    """
    hot = moved_map > 0
    assert hot.any(), "the object must stay in view"
    plan = SalfMix(prob=1.0).plan(torch.from_numpy(np.ascontiguousarray(moved_map))[None].float(), _gen(seed))
    ph, pw = plan.patch_height, plan.patch_width
    st, sl, dt, dl = (int(v[0]) for v in (plan.src_top, plan.src_left, plan.dst_top, plan.dst_left))
    is_object = (out_hwc == COLOUR).all(axis=-1)
    src_hot = hot[st : st + ph, sl : sl + pw]
    assert src_hot.any(), "P_m must cover the transformed hot spot"
    # P_l now shows P_m's pixels: the object wherever P_m covered the hot spot, background elsewhere.
    np.testing.assert_array_equal(is_object[dt : dt + ph, dl : dl + pw], src_hot)
    outside = np.ones_like(hot)
    outside[dt : dt + ph, dl : dl + pw] = False
    np.testing.assert_array_equal(is_object[outside], hot[outside])
    # The object's colour now appears at two places: more object pixels than the object has.
    assert is_object.sum() > hot.sum()


def _stale_map_fails_the_check(out_hwc: np.ndarray, seed: int) -> bool:
    """Whether the check above, run against the map *before* the geometric transform, fails.

    It does whenever the geometry moved the object enough to change SalfMix's decision: those seeds are the
    ones that tell a map that followed the image from a stale one.
    """
    try:
        _assert_object_copied(out_hwc, _object_sample()[1], seed)
    except AssertionError:
        return True
    return False


SEEDS = range(12)
# Flips always move the object to the other side; a crop that happens to keep it in place (or moves it too
# little to change SalfMix's decision) does not tell the two apart, hence the margin (12 of 12 today).
MIN_TELLING_SEEDS = {"flip": len(SEEDS), "pad_crop": len(SEEDS) // 2, "resized_crop": len(SEEDS) // 2}


# -- torchvision v2 ------------------------------------------------------------------------------------

V2_GEOMETRY = {
    "flip": lambda: v2.RandomHorizontalFlip(p=1.0),
    "pad_crop": lambda: v2.RandomCrop(SIZE, padding=4),
    "resized_crop": lambda: v2.RandomResizedCrop(
        SIZE, scale=(0.4, 0.7), ratio=(1.0, 1.0), interpolation=v2.InterpolationMode.NEAREST
    ),
}


@pytest.mark.parametrize("geometry", sorted(V2_GEOMETRY))
def test_v2_mask_map_follows_geometry_and_the_object_is_copied(geometry):
    image, saliency = _object_sample()
    telling = 0
    for seed in SEEDS:
        sample = {
            "image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
            "saliency": tv_tensors.Mask(torch.from_numpy(saliency)),
            "label": 3,
        }
        pipe = v2.Compose([V2_GEOMETRY[geometry](), SalfMixV2(p=1.0, generator=_gen(seed))])
        torch.manual_seed(seed)  # the geometric transform's draw
        out = pipe(sample)
        moved = out["saliency"]
        assert isinstance(moved, tv_tensors.Mask) and moved.dtype == torch.float32 and moved.shape == (32, 32)
        assert set(torch.unique(moved).tolist()) <= {0.0, 1.0}  # nearest interpolation, zero padding
        if geometry == "flip":
            np.testing.assert_array_equal(moved.numpy(), saliency[:, ::-1])
        assert out["label"] == 3
        out_hwc = out["image"].permute(1, 2, 0).numpy()
        _assert_object_copied(out_hwc, moved.numpy(), seed)
        telling += _stale_map_fails_the_check(out_hwc, seed)
    assert telling >= MIN_TELLING_SEEDS[geometry]


@pytest.mark.parametrize("as_map", [torch.from_numpy, np.asarray], ids=["tensor", "ndarray"])
@pytest.mark.parametrize("geometry", sorted(V2_GEOMETRY))
def test_v2_plain_map_is_refused_with_the_fix_in_the_message(geometry, as_map):
    image, saliency = _object_sample()
    sample = {
        "image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
        "saliency": as_map(saliency),
    }
    pipe = v2.Compose([V2_GEOMETRY[geometry](), SalfMixV2(p=1.0, generator=_gen(0))])
    with pytest.raises(TypeError, match=r"'saliency'.*tv_tensors\.Mask\(") as info:
        pipe(sample)
    assert "flip, crop, resize" in str(info.value)


def test_v2_map_must_be_a_mask_even_alone_and_under_its_own_key():
    image, saliency = _object_sample()
    chw = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
    for bad in (torch.from_numpy(saliency), saliency, saliency.tolist(), tv_tensors.Image(saliency[None])):
        with pytest.raises(TypeError, match=r"'smap'.*tv_tensors\.Mask"):
            SalfMixV2(p=1.0, saliency_key="smap")({"image": chw, "smap": bad})
    # (H, W) and (1, H, W) masks give the same pixels; the map comes back as it was given.
    flat = tv_tensors.Mask(torch.from_numpy(saliency))
    out_hw = SalfMixV2(p=1.0, generator=_gen(4))({"image": chw, "saliency": flat})
    out_1hw = SalfMixV2(p=1.0, generator=_gen(4))({"image": chw, "saliency": tv_tensors.Mask(flat[None])})
    assert torch.equal(out_hw["image"], out_1hw["image"]) and out_hw["saliency"] is flat
    for shape in [(32, 32, 1), (2, 32, 32), (16, 32)]:
        with pytest.raises(ValueError, match="saliency"):
            SalfMixV2(p=1.0)({"image": chw, "saliency": tv_tensors.Mask(torch.zeros(shape))})
    with pytest.raises(TypeError, match="real numbers"):
        SalfMixV2(p=1.0)({"image": chw, "saliency": tv_tensors.Mask(torch.ones(32, 32, dtype=torch.bool))})


# -- albumentations ------------------------------------------------------------------------------------

A_GEOMETRY = {
    "flip": lambda: [A.HorizontalFlip(p=1.0)],
    "pad_crop": lambda: [
        A.PadIfNeeded(SIZE + 8, SIZE + 8, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
        A.RandomCrop(SIZE, SIZE),
    ],
    "resized_crop": lambda: [
        A.RandomResizedCrop((SIZE, SIZE), scale=(0.4, 0.7), ratio=(1.0, 1.0), interpolation=cv2.INTER_NEAREST)
    ],
}


@pytest.mark.parametrize("geometry", sorted(A_GEOMETRY))
def test_albumentations_mask_target_follows_geometry_and_the_object_is_copied(geometry):
    image, saliency = _object_sample()
    telling = 0
    for seed in SEEDS:
        pipe = A.Compose(
            [*A_GEOMETRY[geometry](), SalfMixA(p=1.0, generator=_gen(seed))],
            additional_targets={"saliency": "mask"},
            seed=seed,
            strict=True,
        )
        out = pipe(image=image, saliency=saliency)
        moved = out["saliency"]
        assert moved.dtype == np.float32 and moved.shape == (32, 32)
        assert set(np.unique(moved).tolist()) <= {0.0, 1.0}
        if geometry == "flip":
            np.testing.assert_array_equal(moved, saliency[:, ::-1])
        _assert_object_copied(out["image"], moved, seed)
        telling += _stale_map_fails_the_check(out["image"], seed)
    assert telling >= MIN_TELLING_SEEDS[geometry]


@pytest.mark.parametrize("geometry", sorted(A_GEOMETRY))
def test_salfmix_compose_builds_the_declared_pipeline(geometry):
    image, saliency = _object_sample()
    by_hand = A.Compose(
        [*A_GEOMETRY[geometry](), SalfMixA(p=1.0, generator=_gen(3))],
        additional_targets={"saliency": "mask"},
        seed=3,
    )
    helper = pipeline.salfmix_compose([*A_GEOMETRY[geometry](), SalfMixA(p=1.0, generator=_gen(3))], seed=3)
    assert isinstance(helper, A.Compose) and helper.additional_targets == {"saliency": "mask"}
    out, again = by_hand(image=image, saliency=saliency), helper(image=image, saliency=saliency)
    np.testing.assert_array_equal(again["image"], out["image"])
    np.testing.assert_array_equal(again["saliency"], out["saliency"])
    _assert_object_copied(again["image"], again["saliency"], 3)


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("geometry", sorted(A_GEOMETRY))
def test_albumentations_map_not_declared_as_mask_is_refused(geometry, strict):
    image, saliency = _object_sample()
    pipe = A.Compose([*A_GEOMETRY[geometry](), SalfMixA(p=1.0, generator=_gen(0))], strict=strict)
    with pytest.raises(ValueError, match=r"additional_targets=\{'saliency': 'mask'\}"):
        pipe(image=image, saliency=saliency)
    # Another additional target does not count; the map declared as an image does not either (colour
    # transforms would change its values).
    for targets in ({"image2": "image"}, {"saliency": "image"}):
        pipe = A.Compose([*A_GEOMETRY[geometry](), SalfMixA(p=1.0)], additional_targets=targets)
        with pytest.raises(ValueError, match=r"additional_targets=\{'saliency': 'mask'\}"):
            pipe(image=image, saliency=saliency, image2=image)


def test_albumentations_refusal_does_not_depend_on_the_probability_and_names_the_key():
    image, saliency = _object_sample()
    pipe = A.Compose([A.HorizontalFlip(p=1.0), SalfMixA(p=0.0, saliency_key="smap")])
    with pytest.raises(ValueError, match=r"additional_targets=\{'smap': 'mask'\}"):
        pipe(image=image, smap=saliency)


def test_albumentations_nested_and_late_declarations_are_honoured():
    image, saliency = _object_sample()
    # Declared on the outer Compose only: albumentations passes it down to the inner one.
    inner = A.Compose([A.HorizontalFlip(p=1.0), SalfMixA(p=1.0, generator=_gen(1))])
    outer = A.Compose([A.OneOf([inner], p=1.0)], additional_targets={"saliency": "mask"})
    out = outer(image=image, saliency=saliency)
    np.testing.assert_array_equal(out["saliency"], saliency[:, ::-1])
    _assert_object_copied(out["image"], out["saliency"], 1)
    # Declared nowhere: refused however deep SalfMixA sits.
    bare = A.Compose([A.OneOf([A.Compose([A.HorizontalFlip(p=1.0), SalfMixA(p=1.0)])], p=1.0)])
    with pytest.raises(ValueError, match=r"additional_targets=\{'saliency': 'mask'\}"):
        bare(image=image, saliency=saliency)
    # Declared after construction with Compose.add_targets.
    late = A.Compose([A.HorizontalFlip(p=1.0), SalfMixA(p=1.0, generator=_gen(1))])
    late.add_targets({"saliency": "mask"})
    np.testing.assert_array_equal(late(image=image, saliency=saliency)["image"], out["image"])
    # Standalone (no Compose): nothing can move the map before SalfMixA, so a plain array is fine.
    alone = SalfMixA(p=1.0, generator=_gen(1))(image=image[:, ::-1].copy(), saliency=saliency[:, ::-1].copy())
    np.testing.assert_array_equal(alone["image"], out["image"])


def test_albumentations_compose_round_trips_through_to_dict_and_from_dict():
    image, saliency = _object_sample()
    pipe = pipeline.salfmix_compose(
        [A.HorizontalFlip(p=1.0), SalfMixA(p=1.0, saliency_key="smap")], "smap", seed=5
    )
    serialized = A.to_dict(pipe)
    restored = A.from_dict(json.loads(json.dumps(serialized)))
    assert A.to_dict(restored) == serialized
    assert restored.additional_targets == {"smap": "mask"}
    restored.set_random_seed(5)  # A.to_dict does not keep the seed
    torch.manual_seed(0)
    a = pipe(image=image, smap=saliency)
    torch.manual_seed(0)
    b = restored(image=image, smap=saliency)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert (a["image"] == COLOUR).all(-1).sum() > 64  # the object was copied
    # Without the declaration the restored Compose refuses the call as well.
    bare = A.from_dict(A.to_dict(A.Compose([A.HorizontalFlip(p=1.0), SalfMixA(p=1.0)])))
    with pytest.raises(ValueError, match="additional_targets"):
        bare(image=image, saliency=saliency)


def test_salfmix_compose_refuses_a_conflicting_declaration():
    with pytest.raises(ValueError, match="mask"):
        pipeline.salfmix_compose([SalfMixA()], additional_targets={"saliency": "image"})
    pipe = pipeline.salfmix_compose([SalfMixA()], additional_targets={"image2": "image"})
    assert pipe.additional_targets == {"image2": "image", "saliency": "mask"}
