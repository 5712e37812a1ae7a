"""ImageFolder data sets of 32-bit float (mode ``F``) TIFFs, through ``build_datasets`` (issue 21, item 1).

Float images hold intensities in [0, 1] (torchvision's convention for float images) and are scaled x255;
other ranges and non-finite pixels are refused with a :class:`DatasetError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import make_image_folder, run_fails, tiny_args
from PIL import Image

from salfmix_transforms.data import DatasetError, build_datasets

_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]  # the folder builder normalises with ImageNet's
_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data", (("train", (2, 2)), ("val", (1, 1))))


def _save_float_tif(path: Path, pixels: np.ndarray) -> Path:
    path = path.with_suffix(".tif")
    Image.fromarray(pixels.astype(np.float32), mode="F").save(path)
    with Image.open(path) as img:
        assert img.mode == "F"
    return path


def _float_folder(folder: Path, pixels: np.ndarray) -> None:
    """Every PNG of the folder replaced by a float TIFF of ``pixels``."""
    for png in sorted(folder.glob("*/*/*.png")):
        _save_float_tif(png, pixels)
        png.unlink()


def _unnormalised(x: torch.Tensor) -> torch.Tensor:
    return x * _STD + _MEAN


def test_float_tiffs_in_0_1_are_scaled_to_the_full_range(folder):
    ramp = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    _float_folder(folder, ramp)
    train_ds, val_ds, num_classes, img_size = build_datasets(data_dir=str(folder), val_split="val")
    assert (len(train_ds), len(val_ds), num_classes, img_size) == (4, 2, 2, 32)
    pixels = _unnormalised(val_ds[0][0])
    assert float(pixels.max()) == pytest.approx(1.0, abs=0.6 / 255)  # before: all black (max 0)
    expected = torch.from_numpy(np.rint(ramp * 255) / 255).expand(3, -1, -1)
    assert torch.allclose(pixels, expected, atol=0.6 / 255)
    assert train_ds[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_float_tiff_with_non_finite_pixels_is_refused_naming_the_file(folder, bad):
    _float_folder(folder, np.full((32, 32), 0.5, dtype=np.float32))
    pixels = np.full((32, 32), 0.5, dtype=np.float32)
    pixels[3, 4] = bad
    damaged = _save_float_tif(folder / "train" / "class1" / "01.tif", pixels)
    with pytest.raises(DatasetError, match="not finite") as info:
        build_datasets(data_dir=str(folder), val_split="val")
    assert str(damaged) in str(info.value) and "1 of 1024" in str(info.value)


@pytest.mark.parametrize("low, high", [(0.0, 255.0), (-1.0, 1.0), (0.0, 1.5)])
def test_a_float_tiff_outside_0_1_is_refused_naming_the_file_and_its_range(folder, low, high):
    _float_folder(folder, np.full((32, 32), 0.5, dtype=np.float32))
    pixels = np.linspace(low, high, 32 * 32, dtype=np.float32).reshape(32, 32)
    other = _save_float_tif(folder / "val" / "class0" / "00.tif", pixels)
    with pytest.raises(DatasetError, match=r"\[0, 1\]") as info:
        build_datasets(data_dir=str(folder), val_split="val")
    message = str(info.value)
    assert str(other) in message and f"{low:g}" in message and f"{high:g}" in message, message


def test_a_float_tiff_damaged_after_the_check_is_refused_when_loaded(folder):
    _float_folder(folder, np.full((32, 32), 0.5, dtype=np.float32))
    _, val_ds, _, _ = build_datasets(data_dir=str(folder), val_split="val")
    path, _ = val_ds.reader.samples[0]
    _save_float_tif(Path(path), np.full((32, 32), float("nan"), dtype=np.float32))
    with pytest.raises(DatasetError, match="not finite") as info:
        val_ds[0]
    assert path in str(info.value)


def test_the_training_script_refuses_a_non_finite_float_tiff_in_one_line(folder, tmp_path, capsys):
    _float_folder(folder, np.full((32, 32), 0.5, dtype=np.float32))
    damaged = _save_float_tif(folder / "train" / "class0" / "00.tif", np.full((32, 32), np.inf, np.float32))
    run_fails(capsys, tiny_args(folder, tmp_path / "out", "a"), str(damaged), "not finite")
    assert not (tmp_path / "out").exists()
