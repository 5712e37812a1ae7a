"""Make ``tests/fixtures/opencv_fine_grained_saliency.npz``: OpenCV's fine-grained saliency of a few images.

``tests/test_static_saliency.py`` compares :func:`salfmix_transforms.fine_grained_saliency` with OpenCV
contrib's ``cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency`` (the map SaliencyMix's reference
code uses). OpenCV contrib is not a dependency of the package, so the comparison reads OpenCV's maps from this
committed fixture instead of calling OpenCV.

Run it from the project's environment (it needs torch, to rebuild the tests' seeded images, and
scikit-learn, for two real photographs)::

    python tools/make_opencv_saliency_fixture.py

It works in three steps:

1. (project environment) build the input images as ``uint8`` RGB arrays (N, H, W, 3):

   * ``blob``: the two disc images of ``_blob_images`` in the tests (a bright disc on a dark textured
     background, a dark disc on a bright one), 40 x 48, with the disc centres;
   * ``random32``, ``random64``: four uniform-noise images each, ``torch.rand(4, 3, s, s)`` seeded with ``s``
     (the images the random-image comparison always used);
   * ``real``: scikit-learn's sample photographs ``china.jpg`` and ``flower.jpg`` (427 x 640) reduced to
     48 x 72 (PIL, box filter);
   * ``shapes``: one non-square synthetic image, 36 x 52, a bright rectangle and a dark disc on a smooth
     horizontal gradient;

2. (a separate virtual environment, ``/tmp/cv-venv`` by default, created and filled with
   ``opencv-contrib-python-headless`` and ``numpy`` by ``pip`` when missing) run OpenCV on each image in its
   BGR order and keep the map. OpenCV 5 returns ``float32`` maps equal to its internal ``uint8`` map times
   ``float32(1 / 255)`` (OpenCV 4 returns the ``uint8`` map itself): the fixture stores the ``uint8`` values
   (checked to be integers), so a test reads OpenCV's map as ``uint8 / 255`` to within 1e-7;

3. write the fixture with ``np.savez_compressed``: ``<name>_rgb`` (uint8, N x H x W x 3, RGB order),
   ``<name>_opencv`` (uint8, N x H x W: OpenCV's map x 255), ``blob_centres`` (int64, N x 2: row, column),
   ``real_names``, ``blur_input`` / ``blur_opencv`` and ``gray_input`` / ``gray_opencv`` (float32: OpenCV's
   ``GaussianBlur(3x3)`` and ``cvtColor(RGB2GRAY)`` of the tests' seeded inputs), and the versions of the
   OpenCV environment (``opencv_version``, ``opencv_package``, ``opencv_map_dtype``, ``numpy_version``).

Options: ``--venv PATH`` (the OpenCV environment), ``--opencv-spec SPEC`` (the pip requirement, default
``opencv-contrib-python-headless``), ``--output PATH``. ``--compute IN OUT`` is step 2 alone, run inside the
OpenCV environment (it needs only ``numpy`` and ``cv2``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "tests" / "fixtures" / "opencv_fine_grained_saliency.npz"
DEFAULT_VENV = Path("/tmp/cv-venv")
DEFAULT_SPEC = "opencv-contrib-python-headless"
SETS = ("blob", "random32", "random64", "real", "shapes")

# -- step 1: the inputs (project environment) --------------------------------------------------------------


def _to_uint8_rgb(x: object) -> np.ndarray:
    """Images (N, 3, H, W) in [0, 1] (torch) to uint8 (N, H, W, 3), rounded as the tests always did."""
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def blob_images() -> tuple[np.ndarray, np.ndarray]:
    """``_blob_images()`` of tests/test_static_saliency.py (same seed and construction) as uint8 RGB."""
    import torch

    height, width = 40, 48
    gen = torch.Generator().manual_seed(3)
    x = 0.2 + 0.02 * torch.rand(2, 3, height, width, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    centres = [(12, 30), (27, 14)]
    disc0 = (yy - centres[0][0]) ** 2 + (xx - centres[0][1]) ** 2 <= 9
    disc1 = (yy - centres[1][0]) ** 2 + (xx - centres[1][1]) ** 2 <= 9
    x[0][:, disc0] = 0.95
    x[1] = 1.0 - x[1]
    x[1][:, disc1] = 0.05
    return _to_uint8_rgb(x), np.asarray(centres, dtype=np.int64)


def random_images(size: int) -> np.ndarray:
    """The noise images of the random-image comparison: ``torch.rand(4, 3, size, size)`` seeded with size."""
    import torch

    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(size))
    return _to_uint8_rgb(x)


def real_images(height: int = 48, width: int = 72) -> tuple[np.ndarray, list[str]]:
    """scikit-learn's two sample photographs, reduced to ``height x width`` with PIL's box filter."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    names = [Path(name).name for name in data.filenames]
    small = [
        np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BOX))
        for image in data.images
    ]
    return np.stack(small).astype(np.uint8), names


def shapes_image(height: int = 36, width: int = 52) -> np.ndarray:
    """One non-square synthetic image: a bright rectangle and a dark disc on a horizontal gradient."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), dtype=np.float64)
    image[..., 0] = 60 + 80 * xx / (width - 1)
    image[..., 1] = 90 + 40 * xx / (width - 1)
    image[..., 2] = 120 - 50 * xx / (width - 1)
    image[5:14, 30:45] = (235, 220, 90)
    image[(yy - 25) ** 2 + (xx - 12) ** 2 <= 20] = (20, 30, 45)
    return np.round(image).astype(np.uint8)[None]


def float_inputs() -> dict[str, np.ndarray]:
    """The float32 inputs of the two smaller OpenCV comparisons of the tests: ``GaussianBlur`` of gray maps
    (``torch.rand(2, 7, 9, dtype=float64)`` seeded 0, as float32) and ``cvtColor(RGB2GRAY)`` of an RGB image
    (``torch.rand(5, 6, 3)`` seeded 1)."""
    import torch

    blur = torch.rand(2, 7, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
    gray = torch.rand(5, 6, 3, generator=torch.Generator().manual_seed(1))
    return {"blur_input": blur.numpy(), "gray_input": gray.numpy()}


def build_inputs() -> dict[str, np.ndarray]:
    blob, centres = blob_images()
    real, names = real_images()
    return {
        "blob_rgb": blob,
        "blob_centres": centres,
        "random32_rgb": random_images(32),
        "random64_rgb": random_images(64),
        "real_rgb": real,
        "real_names": np.asarray(names),
        "shapes_rgb": shapes_image(),
        **float_inputs(),
    }


# -- step 2: OpenCV (its own environment) ------------------------------------------------------------------


def compute(inputs_path: Path, output_path: Path) -> None:
    """OpenCV's maps of every ``<set>_rgb`` array of ``inputs_path``, written to ``output_path``."""
    import cv2

    inputs = dict(np.load(inputs_path))
    out: dict[str, np.ndarray] = {}
    dtypes = set()
    for name in SETS:
        maps = []
        for rgb in inputs[f"{name}_rgb"]:
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            ok, saliency = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(bgr)
            if not ok:
                raise RuntimeError(f"OpenCV's computeSaliency failed on an image of set {name!r}")
            saliency = np.asarray(saliency)
            dtypes.add(str(saliency.dtype))
            if saliency.dtype == np.uint8:
                maps.append(saliency)
                continue
            # OpenCV 5: float32(uint8 map) * float32(1 / 255). Store the uint8 values, checking that the map
            # is such a product (so nothing but that float32 rounding, below 1e-7, is lost).
            scaled = saliency.astype(np.float64) * 255.0
            rounded = np.round(scaled)
            if rounded.min() < 0 or rounded.max() > 255 or np.abs(scaled - rounded).max() > 1e-3:
                raise RuntimeError(f"OpenCV's map of set {name!r} is not a uint8 map / 255")
            maps.append(rounded.astype(np.uint8))
        out[f"{name}_opencv"] = np.stack(maps)
    out["blur_opencv"] = np.stack([cv2.GaussianBlur(g, (3, 3), 0, 0) for g in inputs["blur_input"]])
    out["gray_opencv"] = cv2.cvtColor(inputs["gray_input"], cv2.COLOR_RGB2GRAY)
    out["opencv_version"] = np.asarray(cv2.__version__)
    out["opencv_map_dtype"] = np.asarray(",".join(sorted(dtypes)))
    out["numpy_version"] = np.asarray(np.__version__)
    np.savez(output_path, **out)


# -- orchestration (project environment) -------------------------------------------------------------------


def ensure_venv(venv: Path, spec: str) -> Path:
    """The Python of ``venv``, created with ``python -m venv`` and given ``spec`` and numpy if needed."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(python), "-c", "import cv2, numpy; cv2.saliency"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", spec, "numpy"], check=True)
    return python


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="virtual environment for OpenCV")
    parser.add_argument("--opencv-spec", default=DEFAULT_SPEC, help="pip requirement of OpenCV contrib")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the fixture to write")
    parser.add_argument("--compute", nargs=2, type=Path, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compute is not None:
        compute(*args.compute)
        return

    inputs = build_inputs()
    python = ensure_venv(args.venv, args.opencv_spec)
    with tempfile.TemporaryDirectory() as tmp:
        inputs_path, maps_path = Path(tmp) / "inputs.npz", Path(tmp) / "maps.npz"
        np.savez(inputs_path, **inputs)
        subprocess.run(
            [str(python), str(Path(__file__).resolve()), "--compute", inputs_path, maps_path], check=True
        )
        maps = dict(np.load(maps_path))
    package = subprocess.run(
        [str(python), "-m", "pip", "show", args.opencv_spec.split("=")[0].split("<")[0].split(">")[0]],
        capture_output=True,
        text=True,
    )
    version_line = next((line for line in package.stdout.splitlines() if line.startswith("Version:")), "")
    fixture = {
        **inputs,
        **maps,
        "opencv_package": np.asarray(f"{args.opencv_spec} {version_line.removeprefix('Version:').strip()}"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **fixture)
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({size / 1024:.1f} KiB), OpenCV {fixture['opencv_version']}")
    for name in SETS:
        print(f"  {name}: inputs {fixture[f'{name}_rgb'].shape}, maps {fixture[f'{name}_opencv'].shape}")


if __name__ == "__main__":
    main()
