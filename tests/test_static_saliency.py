"""Fine-grained static saliency (Montabone & Soto 2010, OpenCV's StaticSaliencyFineGrained) in torch."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from salfmix_transforms.static_saliency import (
    NEIGHBOURHOODS,
    fine_grained_saliency,
    gaussian_blur_3x3,
    rgb_to_gray,
)

# -- a slow reference: OpenCV's calcIntensityChannel pixel by pixel, in float64 ----------------------------


def _reflect101(i: int, n: int) -> int:
    if n == 1:
        return 0
    if i < 0:
        return -i
    if i >= n:
        return 2 * n - 2 - i
    return i


def _ref_blur(gray: np.ndarray) -> np.ndarray:
    kernel = np.outer([0.25, 0.5, 0.25], [0.25, 0.5, 0.25])
    h, w = gray.shape
    out = np.zeros_like(gray)
    for y in range(h):
        for x in range(w):
            total = 0.0
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    total += kernel[dy + 1, dx + 1] * gray[_reflect101(y + dy, h), _reflect101(x + dx, w)]
            out[y, x] = total
    return out


def _ref_saliency(image: np.ndarray) -> np.ndarray:
    """One image (C, H, W), C in {1, 3} (RGB), to its map (H, W), following the C++ loop by loop."""
    if image.shape[0] == 3:
        gray = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    else:
        gray = image[0].copy()
    gray = _ref_blur(_ref_blur(gray))
    h, w = gray.shape
    integral = np.zeros((h + 1, w + 1))
    for y in range(h):
        for x in range(w):
            integral[y + 1, x + 1] = gray[y, x] + integral[y, x + 1] + integral[y + 1, x] - integral[y, x]
    on_sum = np.zeros((h, w))
    off_sum = np.zeros((h, w))
    for n in (12, 24, 48, 28, 56, 112):
        for y in range(h):
            for x in range(w):
                # getMean: corners clipped to the integral image's [0, cols - 1] x [0, rows - 1].
                p1x = min(max(x - n + 1, 0), w)
                p1y = min(max(y - n + 1, 0), h)
                p2x = min(max(x + n + 1, 0), w)
                p2y = min(max(y + n + 1, 0), h)
                value = integral[p2y, p2x] + integral[p1y, p1x] - integral[p2y, p1x] - integral[p1y, p2x]
                centre = gray[y, x]
                count = (p2x - p1x) * (p2y - p1y) - 1
                mean = (value - centre) / count if count > 0 else centre
                on_sum[y, x] += max(centre - mean, 0.0)
                off_sum[y, x] += max(mean - centre, 0.0)
    on = on_sum / on_sum.max() if on_sum.max() > 0 else on_sum
    off = off_sum / off_sum.max() if off_sum.max() > 0 else off_sum
    peak = max(on.max(), off.max())
    return (on + off) / peak if peak > 0 else on + off


def _blob_images(height: int = 40, width: int = 48) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Two RGB images: a bright disc on a dark textured background, and a dark disc on a bright one."""
    gen = torch.Generator().manual_seed(3)
    x = 0.2 + 0.02 * torch.rand(2, 3, height, width, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    centres = [(12, 30), (27, 14)]
    disc0 = (yy - centres[0][0]) ** 2 + (xx - centres[0][1]) ** 2 <= 9
    disc1 = (yy - centres[1][0]) ** 2 + (xx - centres[1][1]) ** 2 <= 9
    x[0][:, disc0] = 0.95
    x[1] = 1.0 - x[1]
    x[1][:, disc1] = 0.05
    return x, centres


def test_neighbourhoods_are_opencvs():
    assert NEIGHBOURHOODS == (12, 24, 48, 28, 56, 112)


@pytest.mark.parametrize(("channels", "height", "width"), [(3, 10, 12), (1, 10, 12), (3, 30, 37)])
def test_matches_slow_reference(channels, height, width):
    gen = torch.Generator().manual_seed(channels * 100 + height)
    x = torch.rand(2, channels, height, width, generator=gen, dtype=torch.float64)
    expected = torch.from_numpy(np.stack([_ref_saliency(img) for img in x.numpy()]))
    got = fine_grained_saliency(x)
    assert got.shape == (2, height, width)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    # float32 input: float32 arithmetic, same map up to float32 rounding
    torch.testing.assert_close(fine_grained_saliency(x.float()), expected.float(), rtol=1e-4, atol=1e-4)


def test_blur_matches_reference_and_opencv():
    gen = torch.Generator().manual_seed(0)
    gray = torch.rand(2, 7, 9, generator=gen, dtype=torch.float64)
    expected = np.stack([_ref_blur(g) for g in gray.numpy()])
    torch.testing.assert_close(gaussian_blur_3x3(gray), torch.from_numpy(expected))
    cv2 = pytest.importorskip("cv2")
    ocv = np.stack([cv2.GaussianBlur(g, (3, 3), 0, 0) for g in gray.float().numpy()])
    torch.testing.assert_close(gaussian_blur_3x3(gray.float()), torch.from_numpy(ocv), rtol=1e-6, atol=1e-6)


def test_gray_weights_follow_rgb_order():
    x = torch.zeros(3, 3, 2, 2)
    for c in range(3):
        x[c, c] = 1.0
    gray = rgb_to_gray(x)
    torch.testing.assert_close(gray[:, 0, 0], torch.tensor([0.299, 0.587, 0.114]))
    cv2 = pytest.importorskip("cv2")
    img = torch.rand(5, 6, 3, generator=torch.Generator().manual_seed(1)).numpy()  # H, W, RGB
    ocv = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    torch.testing.assert_close(
        rgb_to_gray(torch.from_numpy(img).permute(2, 0, 1)[None])[0], torch.from_numpy(ocv)
    )


@pytest.mark.parametrize("textured", [False, True])
def test_blob_centre_is_a_maximum(textured):
    # The blob saturates the "on" channel (normalized to 1) and has no "off" response, so its centre reaches
    # the map's maximum 1. The "off" channel is normalized on its own and also reaches 1 somewhere near the
    # blob (where the clipped neighbourhood holds the most blob), so the maximum is not unique.
    x, centres = _blob_images()
    if not textured:
        x = torch.where(x > 0.5, 0.9, 0.1)
    saliency = fine_grained_saliency(x)
    for b, (cy, cx) in enumerate(centres):
        assert float(saliency[b, cy, cx]) == pytest.approx(float(saliency[b].max()), abs=1e-6)
        assert float(saliency[b].max()) == pytest.approx(1.0, abs=1e-6)


def test_bright_and_dark_blobs_give_the_same_map():
    # on and off are symmetric: inverting the image swaps them, and the map is their normalized sum.
    x, _ = _blob_images()
    torch.testing.assert_close(fine_grained_saliency(1.0 - x), fine_grained_saliency(x))


def test_invariant_to_affine_intensity_changes_and_single_gray_channel():
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    base = fine_grained_saliency(x)
    torch.testing.assert_close(fine_grained_saliency(255.0 * x), base)
    torch.testing.assert_close(fine_grained_saliency((x - 0.45) / 0.22), base)
    gray = x[:, :1]
    torch.testing.assert_close(fine_grained_saliency(gray.expand(2, 3, 20, 24)), fine_grained_saliency(gray))


def test_range_dtype_and_no_gradient():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2), requires_grad=True)
    saliency = fine_grained_saliency(x)
    assert saliency.dtype == torch.float32
    assert not saliency.requires_grad
    assert float(saliency.min()) >= 0.0
    assert float(saliency.max()) <= 2.0
    for dtype in (torch.float16, torch.bfloat16):
        low = fine_grained_saliency(x.detach().to(dtype))
        assert low.dtype == torch.float32
        assert torch.isfinite(low).all()


def test_degenerate_images_give_zero_maps():
    assert torch.equal(fine_grained_saliency(torch.full((2, 3, 8, 9), 0.7)), torch.zeros(2, 8, 9))
    assert torch.equal(fine_grained_saliency(torch.rand(1, 3, 1, 1)), torch.zeros(1, 1, 1))
    thin = fine_grained_saliency(torch.rand(2, 1, 1, 7, generator=torch.Generator().manual_seed(0)))
    assert thin.shape == (2, 1, 7)
    assert torch.isfinite(thin).all()


def test_bad_channel_count():
    with pytest.raises(ValueError, match="channels"):
        fine_grained_saliency(torch.rand(1, 4, 8, 8))
    with pytest.raises(TypeError, match="x must"):
        fine_grained_saliency(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# -- OpenCV contrib's own maps, from a committed fixture ---------------------------------------------------

# OpenCV contrib is not a dependency: tools/make_opencv_saliency_fixture.py ran its StaticSaliencyFineGrained
# once (in a separate virtual environment) and stored the uint8 RGB inputs and OpenCV's maps here.
OPENCV_FIXTURE = Path(__file__).parent / "fixtures" / "opencv_fine_grained_saliency.npz"


@functools.cache
def _opencv_fixture() -> dict[str, np.ndarray]:
    with np.load(OPENCV_FIXTURE) as data:
        return {key: data[key] for key in data.files}


def _opencv_set(name: str) -> tuple[torch.Tensor, np.ndarray]:
    """A set of the fixture: the images (N, 3, H, W) float32 RGB in [0, 1] (exactly OpenCV's 8-bit input)
    and OpenCV's maps (N, H, W) float64 in [0, 1] (OpenCV's uint8 map / 255)."""
    if not OPENCV_FIXTURE.exists():
        pytest.skip(f"{OPENCV_FIXTURE} is missing: run python tools/make_opencv_saliency_fixture.py")
    fixture = _opencv_fixture()
    images = torch.from_numpy(fixture[f"{name}_rgb"]).permute(0, 3, 1, 2).float() / 255
    return images, fixture[f"{name}_opencv"].astype(np.float64) / 255.0


def test_peak_agrees_with_opencv_contrib():
    """The blob images of :func:`_blob_images` (8-bit, as OpenCV got them) against OpenCV's maps."""
    x, ocv_maps = _opencv_set("blob")
    centres = _opencv_fixture()["blob_centres"]
    assert [tuple(c) for c in centres.tolist()] == _blob_images()[1]
    ours = fine_grained_saliency(x)
    for b in range(x.shape[0]):
        ocv = ocv_maps[b]
        cy, cx = centres[b]
        # OpenCV's map also peaks at (or next to) the blob, and the two maps agree overall.
        assert ocv[cy - 2 : cy + 3, cx - 2 : cx + 3].max() >= 0.95 * ocv.max()
        corr = np.corrcoef(ocv.ravel(), ours[b].clamp(max=1.0).numpy().ravel())[0, 1]
        assert corr > 0.9


@pytest.mark.parametrize("image_set", ["random32", "random64", "real", "shapes"])
def test_matches_opencv_contrib_on_random_images(image_set):
    """Pixel by pixel against OpenCV's StaticSaliencyFineGrained (what SaliencyMix's reference code calls).

    The sets of the fixture: four noise images of 32x32 and of 64x64 (``torch.rand`` seeded with the size),
    scikit-learn's china.jpg and flower.jpg reduced to 48x72, and a non-square synthetic image (36x52).
    OpenCV works on 8-bit grey images and 8-bit intermediates, so the maps differ by a few percent of
    their range (at most 0.036 on the noise images, 0.025 on the photographs with OpenCV 5.1); the structure
    is the same (correlation 0.999).
    """
    x, ocv_maps = _opencv_set(image_set)
    ours = fine_grained_saliency(x).numpy()
    for b in range(x.shape[0]):
        ocv = ocv_maps[b]
        assert np.abs(ocv - ours[b]).max() < 0.08
        assert np.corrcoef(ocv.ravel(), ours[b].ravel())[0, 1] > 0.995


def test_gaussian_blur_matches_index_reference():
    from salfmix_transforms.static_saliency import gaussian_blur_3x3

    def reference(gray):
        def neighbours(size):
            index = torch.arange(size)
            if size == 1:
                return index, index
            return torch.where(index == 0, 1, index - 1), torch.where(index == size - 1, size - 2, index + 1)

        up, down = neighbours(gray.shape[-2])
        left, right = neighbours(gray.shape[-1])
        gray = 0.25 * gray[:, up] + 0.5 * gray + 0.25 * gray[:, down]
        return 0.25 * gray[:, :, left] + 0.5 * gray + 0.25 * gray[:, :, right]

    for shape in [(2, 1, 1), (2, 1, 5), (2, 5, 1), (2, 2, 2), (3, 7, 9)]:
        gray = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        assert torch.equal(gaussian_blur_3x3(gray), reference(gray))
