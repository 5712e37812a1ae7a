"""Per-sample front ends (albumentations, torchvision v2) share SalfMix's patch logic exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import albumentations as A
import numpy as np
import PIL.Image
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from salfmix_transforms.pipeline import SalfMixA, SalfMixV2, salfmix_image
from salfmix_transforms.salfmix import SalfMix

REPO = Path(__file__).resolve().parents[1]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sample(seed: int, height: int = 32, width: int = 32, channels: int = 3, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        image = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    else:
        image = rng.random((height, width, channels)).astype(dtype)
    saliency = rng.random((height, width)).astype(np.float32)
    return image, saliency


def _batch_salfmix(image: np.ndarray, saliency: np.ndarray, seed: int, **kwargs) -> np.ndarray:
    """The batch transform on a batch of one, back to an HWC array of the image's dtype."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.float64)
    out, _ = SalfMix(warmup_epochs=0, **kwargs)(
        x, torch.zeros(1, dtype=torch.long), saliency=torch.from_numpy(saliency)[None], generator=_gen(seed)
    )
    return out[0].permute(1, 2, 0).numpy().astype(image.dtype)


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize(
    ("height", "width", "grid", "ratio", "pool", "dtype"),
    [
        (32, 32, 4, 0.3, True, np.uint8),
        (32, 32, 4, 0.3, True, np.float32),
        (24, 40, 3, 0.5, True, np.uint8),
        (16, 16, 4, 0.2, False, np.float32),
    ],
)
def test_same_map_and_seed_give_same_pixels_through_every_front_end(
    seed, height, width, grid, ratio, pool, dtype
):
    image, saliency = _sample(seed, height, width, dtype=dtype)
    kwargs = {"grid": grid, "ratio": ratio, "pool": pool}
    expected = _batch_salfmix(image, saliency, seed, prob=1.0, **kwargs)
    assert not np.array_equal(expected, image)  # the patches do move pixels

    out_a = SalfMixA(p=1.0, generator=_gen(seed), **kwargs)(image=image, saliency=saliency)["image"]
    np.testing.assert_array_equal(out_a, expected)

    chw = torch.from_numpy(image).permute(2, 0, 1)
    sample = {"image": tv_tensors.Image(chw), "saliency": tv_tensors.Mask(saliency), "label": 3}
    out_v2 = SalfMixV2(p=1.0, generator=_gen(seed), **kwargs)(sample)
    np.testing.assert_array_equal(out_v2["image"].permute(1, 2, 0).numpy(), expected)

    out_fn = salfmix_image(image, saliency, generator=_gen(seed), **kwargs)
    np.testing.assert_array_equal(out_fn, expected)


def test_patch_is_copied_from_the_planned_source_to_the_planned_destination():
    image, saliency = _sample(3)
    plan = SalfMix(prob=1.0).plan(torch.from_numpy(saliency)[None], _gen(5))
    out = SalfMixA(p=1.0, generator=_gen(5))(image=image, saliency=saliency)["image"]
    ph, pw = plan.patch_height, plan.patch_width
    st, sl, dt, dl = (int(v[0]) for v in (plan.src_top, plan.src_left, plan.dst_top, plan.dst_left))
    np.testing.assert_array_equal(out[dt : dt + ph, dl : dl + pw], image[st : st + ph, sl : sl + pw])
    untouched = np.ones(image.shape[:2], dtype=bool)
    untouched[dt : dt + ph, dl : dl + pw] = False
    np.testing.assert_array_equal(out[untouched], image[untouched])


@pytest.mark.parametrize("seed", range(6))
def test_v2_probability_matches_batch_prob(seed):
    image, saliency = _sample(seed)
    expected = _batch_salfmix(image, saliency, seed, prob=0.5)
    sample = {
        "image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
        "saliency": tv_tensors.Mask(saliency),
    }
    out = SalfMixV2(p=0.5, generator=_gen(seed))(sample)["image"]
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), expected)


def test_albumentations_round_trip_through_to_dict_and_from_dict():
    t = SalfMixA(grid=2, ratio=0.5, pool=False, saliency_key="smap", p=0.75)
    serialized = A.to_dict(t)
    assert serialized["transform"]["__class_fullname__"].endswith("SalfMixA")
    restored = A.from_dict(json.loads(json.dumps(serialized)))
    assert type(restored) is SalfMixA
    assert A.to_dict(restored) == serialized
    assert (restored.grid, restored.ratio, restored.pool, restored.saliency_key, restored.p) == (
        2,
        0.5,
        False,
        "smap",
        0.75,
    )
    image, saliency = _sample(0)
    t.set_random_seed(11)
    restored.set_random_seed(11)
    for _ in range(3):
        a = t(image=image, smap=saliency)["image"]
        b = restored(image=image, smap=saliency)["image"]
        np.testing.assert_array_equal(a, b)


def test_albumentations_compose_seed_is_reproducible_and_map_follows_geometry():
    image, saliency = _sample(2)

    def pipe():
        return A.Compose(
            [A.HorizontalFlip(p=1.0), SalfMixA(p=1.0)], additional_targets={"saliency": "mask"}, seed=123
        )

    first, second = pipe()(image=image, saliency=saliency), pipe()(image=image, saliency=saliency)
    np.testing.assert_array_equal(first["image"], second["image"])
    # The flip moved the map; SalfMixA returned it as it got it (flipped, not patched).
    np.testing.assert_array_equal(first["saliency"], saliency[:, ::-1])
    # The decision was made on the flipped map: same as SalfMixA alone on flipped data.
    assert first["image"].dtype == np.uint8


def test_probability_zero_is_the_identity():
    image, saliency = _sample(4)
    out = SalfMixA(p=0.0)(image=image, saliency=saliency)
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["saliency"], saliency)
    chw = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
    out_v2 = SalfMixV2(p=0.0, generator=_gen(0))({"image": chw, "saliency": tv_tensors.Mask(saliency)})
    assert torch.equal(out_v2["image"], chw)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_dtype_and_layout_are_kept(dtype):
    image, saliency = _sample(5, dtype=dtype)
    out = SalfMixA(p=1.0, generator=_gen(0))(image=image, saliency=saliency)["image"]
    assert out.dtype == image.dtype and out.shape == image.shape
    gray = image[..., 0]
    out_gray = SalfMixA(p=1.0, generator=_gen(0))(image=gray, saliency=saliency)["image"]
    assert out_gray.dtype == gray.dtype and out_gray.shape[:2] == gray.shape

    chw = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    sample = {"image": tv_tensors.Image(chw), "saliency": tv_tensors.Mask(saliency)}
    out_v2 = SalfMixV2(p=1.0, generator=_gen(0))(sample)
    assert isinstance(out_v2["image"], tv_tensors.Image)
    assert out_v2["image"].dtype == chw.dtype and out_v2["image"].shape == chw.shape


def test_v2_plain_tensor_pil_image_and_mask():
    image, saliency = _sample(6)
    smap = tv_tensors.Mask(saliency)
    expected = _batch_salfmix(image, saliency, 9, prob=1.0)
    chw = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    # A plain tensor is the image when the sample has no tv_tensors.Image (torchvision's rule).
    out = SalfMixV2(p=1.0, generator=_gen(9))({"image": chw, "saliency": smap})
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), expected)
    # A PIL image stays a PIL image, same mode.
    out = SalfMixV2(p=1.0, generator=_gen(9))({"image": PIL.Image.fromarray(image), "saliency": smap})
    assert isinstance(out["image"], PIL.Image.Image) and out["image"].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out["image"]), expected)
    # A segmentation mask gets the same copy; boxes and labels are untouched.
    mask = np.arange(32 * 32, dtype=np.int64).reshape(32, 32)
    boxes = tv_tensors.BoundingBoxes([[1, 2, 10, 12]], format="XYXY", canvas_size=(32, 32))
    sample = {
        "image": tv_tensors.Image(chw),
        "mask": tv_tensors.Mask(torch.from_numpy(mask)),
        "boxes": boxes,
        "saliency": smap,
        "label": 4,
    }
    out = SalfMixV2(p=1.0, generator=_gen(9))(sample)
    assert list(out) == list(sample)
    expected_mask = _batch_salfmix(mask[..., None].astype(np.float64), saliency, 9, prob=1.0)[..., 0]
    np.testing.assert_array_equal(out["mask"].numpy(), expected_mask.astype(np.int64))
    assert isinstance(out["mask"], tv_tensors.Mask)
    assert torch.equal(out["boxes"], boxes) and out["label"] == 4 and out["saliency"] is smap
    # Inside a torchvision pipeline.
    pipe = v2.Compose([SalfMixV2(p=1.0, generator=_gen(9)), v2.ToDtype(torch.float32, scale=True)])
    out = pipe({"image": tv_tensors.Image(chw), "saliency": smap})
    assert out["image"].dtype == torch.float32


def test_v2_copies_only_what_torchvision_treats_as_an_image():
    image, saliency = _sample(6)
    expected = torch.from_numpy(_batch_salfmix(image, saliency, 9, prob=1.0)).permute(2, 0, 1)
    chw = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    extra = chw.clone()  # e.g. a dataset's supplemental tensor of the same shape
    smap = tv_tensors.Mask(saliency)
    # With a tv_tensors.Image in the sample, plain tensors pass through.
    out = SalfMixV2(p=1.0, generator=_gen(9))(
        {"image": tv_tensors.Image(chw), "extra": extra, "saliency": smap}
    )
    assert torch.equal(out["image"], expected) and out["extra"] is extra
    # Without one, only the first plain tensor (tree_flatten order) is the image.
    out = SalfMixV2(p=1.0, generator=_gen(9))({"image": chw, "extra": extra, "saliency": smap})
    assert torch.equal(out["image"], expected) and out["extra"] is extra
    # The same rule as torchvision's own transforms (its protected method, read here only to compare), of
    # which SalfMixV2 copies images, masks and the plain-tensor image; videos and boxes stay unchanged.
    boxes = tv_tensors.BoundingBoxes([[1, 2, 10, 12]], format="XYXY", canvas_size=(32, 32))
    samples = [
        [chw, extra],
        [tv_tensors.Image(chw), extra, boxes],
        [extra, tv_tensors.Mask(chw[0]), chw],
        [PIL.Image.fromarray(image), chw],
        [tv_tensors.Video(chw[None]), chw],
        [3, "label", boxes, chw, chw],
    ]
    copied = (tv_tensors.Image, tv_tensors.Mask, PIL.Image.Image)
    for flat in samples:
        torchvision_rule = v2.Transform()._needs_transform_list(flat)
        expected = [
            n and (isinstance(i, copied) or TF.is_pure_tensor(i)) for i, n in zip(flat, torchvision_rule)
        ]
        assert SalfMixV2._needs_copy(flat) == expected


def test_albumentations_mask_follows_image():
    image, saliency = _sample(8)
    mask = (np.arange(32 * 32) % 251).astype(np.uint8).reshape(32, 32)
    out = SalfMixA(p=1.0, generator=_gen(2))(image=image, mask=mask, saliency=saliency)
    expected = _batch_salfmix(mask[..., None], saliency, 2, prob=1.0)[..., 0]
    np.testing.assert_array_equal(out["mask"], expected)


@pytest.mark.parametrize(
    "bad", [np.zeros((16, 32)), np.zeros((32, 32, 3)), np.zeros(32), np.zeros((2, 32, 32))]
)
def test_wrong_map_shape_is_a_value_error_naming_the_argument(bad):
    image, _ = _sample(0)
    with pytest.raises(ValueError, match="saliency"):
        SalfMixA(p=1.0)(image=image, saliency=bad)
    chw = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
    with pytest.raises(ValueError, match="saliency"):
        SalfMixV2(p=1.0)({"image": chw, "saliency": tv_tensors.Mask(bad)})
    with pytest.raises(ValueError, match="smap"):
        SalfMixA(p=1.0, saliency_key="smap")(image=image, smap=bad)
    with pytest.raises(ValueError, match="saliency"):
        salfmix_image(image, bad)


def test_missing_map_and_bad_arguments():
    image, _ = _sample(0)
    with pytest.raises(ValueError, match="saliency"):
        SalfMixA(p=1.0)(image=image)
    chw = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
    with pytest.raises(ValueError, match="saliency"):
        SalfMixV2(p=1.0)({"image": chw})
    with pytest.raises(ValueError, match="saliency"):
        SalfMixV2(p=1.0)(chw)
    with pytest.raises(TypeError, match="saliency"):
        SalfMixA(p=1.0)(image=image, saliency=[[0.0] * 32] * 32)
    with pytest.raises(ValueError, match="p"):
        SalfMixA(p=1.5)
    with pytest.raises(ValueError, match="p"):
        SalfMixV2(p=-0.1)
    with pytest.raises(TypeError, match="grid"):
        SalfMixA(grid=2.5)
    with pytest.raises(ValueError, match="ratio"):
        SalfMixV2(ratio=0.0)
    with pytest.raises(TypeError, match="generator"):
        SalfMixV2(generator=0)
    with pytest.raises(ValueError, match="grid"):  # the grid does not fit a 3x3 image
        SalfMixA(grid=4, p=1.0)(image=image[:3, :3], saliency=np.zeros((3, 3)))


@pytest.mark.slow
def test_torchvision_front_end_works_without_albumentations():
    code = (
        "import sys; sys.modules['albumentations'] = None\n"  # makes `import albumentations` fail
        "import torch\n"
        "from torchvision import tv_tensors\n"
        "from salfmix_transforms.pipeline import SalfMixA, SalfMixV2\n"
        "smap = tv_tensors.Mask(torch.rand(8, 8))\n"
        "sample = {'image': tv_tensors.Image(torch.zeros(3, 8, 8)), 'saliency': smap}\n"
        "out = SalfMixV2(p=1.0)(sample)\n"
        "assert out['image'].shape == (3, 8, 8)\n"
        "try:\n"
        "    SalfMixA()\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "albumentations" in result.stdout


def test_albumentations_copies_in_dataloader_workers_do_not_repeat_each_other():
    # A DataLoader copies the transform (same albumentations RNG state) into every worker and seeds torch
    # differently in each: the patches must differ between workers and repeat for the same torch seed.
    image, saliency = _sample(1)
    t = SalfMixA(p=1.0)
    t.set_random_seed(0)

    def worker(torch_seed: int) -> list[np.ndarray]:
        copy = A.from_dict(A.to_dict(t))
        copy.set_random_seed(0)
        torch.manual_seed(torch_seed)
        return [copy(image=image, saliency=saliency)["image"] for _ in range(6)]

    first, second, again = worker(1), worker(2), worker(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))
