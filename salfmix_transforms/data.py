"""Data sets for the training script: an embedded default, ImageFolder trees, CIFAR-10/100, Tiny-ImageNet.

:func:`build_datasets` returns ``(train_ds, val_ds, num_classes, img_size)``; every sample is
``(image tensor (3, S, S) normalised, class index)``. Nothing is ever downloaded.

================  ==============================================================================
name              what ``data_dir`` holds
================  ==============================================================================
``digits``        nothing (no ``data_dir``): scikit-learn's 1,797 real 8x8 hand-written digits,
                  shipped inside scikit-learn, upscaled to 32x32 RGB, split 80/20 with a fixed seed.
                  The default, so that a training run needs no data on disk.
``folder``        ``<train_split>/<class>/*.png|jpg|bmp|tif|webp...`` and ``<val_split>/<class>/...``
                  (read with timm's ``create_dataset``). The validation folder is the given split name,
                  or, when that does not exist and the name is a usual one, the first of ``val``,
                  ``valid``, ``validation``, ``eval``, ``evaluation``, ``test`` that does.
``cifar10``       torchvision's ``cifar-10-batches-py`` (the directory or its parent), already extracted.
``cifar100``      torchvision's ``cifar-100-python`` (the directory or its parent), already extracted.
``tinyimagenet``  ``tiny-imagenet-200``: ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` with
                  ``val/val_annotations.txt`` (``val/<wnid>/...`` folders are read too).
================  ==============================================================================

With ``name=None`` the kind is guessed from ``data_dir`` (no directory: ``digits``). Training images get the
CIFAR recipe (random crop with zero padding of ``img_size // 8`` pixels, i.e. 4 at 32x32, then a horizontal
flip; no flip for digits), validation images are only resized when needed; both are normalised with the
data set's channel statistics.

Every problem with the data (missing directory, unknown name, empty split, class mismatch) raises
:class:`DatasetError` with a one-line message.

Image folders are checked before training, for what timm's folder reader would silently get wrong: an empty
training class folder (the class and its validation images would vanish), a validation class that is not a
training class (dropped), images in a sub-folder of a class folder (a class of its own) or outside a class
folder. Every image is decoded once (JPEGs at 1/8 scale, about 0.1 ms for a small image): unreadable files
(truncated, not an image) are skipped with one warning, or refused when they are more than 1% of a split.
Images of another size than the first are resized and centre-cropped, in training and validation alike, and
16-bit greyscale images are scaled to 8 bits (PIL's RGB conversion clips them to white). 32-bit float
greyscale images (mode ``F``, e.g. float TIFFs) must hold intensities in [0, 1], torchvision's convention for
float images, and are scaled x255 (PIL's conversion would make them black); one with values outside [0, 1]
(no per-image min-max guess, which would give every image another contrast) or with NaN or inf pixels is
refused, naming the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "TensorImageDataset",
    "TinyImageNet",
    "build_datasets",
    "check_data_dir",
    "image_files",
    "image_transforms",
    "with_source_coordinates",
]

DATASETS = ("digits", "folder", "cifar10", "cifar100", "tinyimagenet")

# Accepted spellings of each canonical name (timm's "torch/cifar10", "" for folders, ...).
_ALIASES = {
    alias: name
    for name, aliases in {
        "folder": ("", "imagefolder", "image_folder", "torch/folder", "torch/image_folder"),
        "digits": ("sklearn/digits",),
        "cifar10": ("cifar-10", "torch/cifar10"),
        "cifar100": ("cifar-100", "torch/cifar100"),
        "tinyimagenet": ("tiny-imagenet", "tiny-imagenet-200", "tiny_imagenet"),
    }.items()
    for alias in (name, *aliases)
}

_CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
# The stored data sets' image side and channel statistics (mean, std).
_NATIVE = {
    "cifar10": (32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": (64, (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
}
_EVAL_SPLITS = ("val", "valid", "validation", "eval", "evaluation", "test")
_TRAIN_SPLITS = ("train", "training")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_DIGITS_SEED = 0
_DIGITS_VAL_FRACTION = 0.2
_MAX_UNREADABLE = 0.01  # unreadable images of a folder split: skipped up to this share, an error above

_logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A data set cannot be built from what was given (the message says why, on one line)."""


# --- data sets ------------------------------------------------------------------------------------------


class TensorImageDataset(Dataset):
    """Images held in memory as a float tensor (N, C, H, W) in [0, 1] with integer labels (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None) -> None:
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.images[index]
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[index])


class TinyImageNet(ImageFolder):
    """Tiny-ImageNet-200 as distributed: ``train/<wnid>/images/*.JPEG`` and ``val/val_annotations.txt``.

    Classes are the sorted ``wnids.txt`` entries when that file exists, else the sorted ``train`` folders.
    ``split`` is ``"train"`` or ``"val"`` (or a synonym); a ``val`` folder already sorted into ``val/<wnid>/``
    works too. torchvision's ``ImageFolder`` does the rest (``classes``, ``samples``, RGB loading).
    """

    def __init__(self, root: str, split: str = "train", transform: Callable | None = None) -> None:
        self.split = "train" if _split_is_training("tinyimagenet", split) else "val"
        super().__init__(root, transform=transform)
        if not self.samples:
            raise DatasetError(f"no images found for split {split!r} of Tiny-ImageNet in {root}")

    def find_classes(self, root: str) -> tuple[list[str], dict[str, int]]:
        wnids = os.path.join(root, "wnids.txt")
        train = os.path.join(root, "train")
        if os.path.isfile(wnids):
            with open(wnids) as f:
                classes = sorted(line.strip() for line in f if line.strip())
        elif os.path.isdir(train):
            classes = sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)))
        else:
            raise DatasetError(f"{root} has neither wnids.txt nor a train/ folder (Tiny-ImageNet layout)")
        return classes, {c: i for i, c in enumerate(classes)}

    def make_dataset(self, directory: str, class_to_idx: dict[str, int], *args: Any, **kwargs: Any) -> list:
        """The split's ``(path, class)``: from ``val_annotations.txt``, else ``<split>/<wnid>/[images/]*``."""
        split_dir = os.path.join(directory, self.split)
        annotations = os.path.join(split_dir, "val_annotations.txt")
        samples = []
        if os.path.isfile(annotations):
            with open(annotations) as f:
                for parts in (line.split("\t") for line in f):
                    if len(parts) < 2:
                        continue
                    name, wnid = parts[0].strip(), parts[1].strip()
                    if wnid not in class_to_idx:
                        raise DatasetError(f"{annotations}: class {wnid!r} of {name} is not a training class")
                    samples.append((os.path.join(split_dir, "images", name), class_to_idx[wnid]))
            return sorted(samples)
        for wnid, label in class_to_idx.items():
            for folder in (os.path.join(split_dir, wnid, "images"), os.path.join(split_dir, wnid)):
                if os.path.isdir(folder):
                    samples += [(path, label) for path in image_files(folder)]
                    break
        return samples


def image_files(directory: str) -> list[str]:
    """The image files directly in ``directory`` (by extension, :data:`IMAGE_EXTENSIONS`), as sorted paths."""
    return sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(directory, name))
    )


def _to_rgb(img: Any) -> Any:
    """A PIL image as 8-bit RGB. Integer greyscale (``I;16`` of 16-bit PNGs and TIFFs, ``I``) is scaled from
    0-65535 to 0-255 first: PIL's ``convert("RGB")`` clips it, which turns most 16-bit images white. Float
    greyscale (``F``) holds intensities in [0, 1] (torchvision's convention for float images) and is scaled
    x255 (clipped to [0, 1] first): PIL's conversion would round [0, 1] to black.

    Raises:
        DatasetError: a float image with NaN or inf pixels (:func:`_inspect_images` refuses them before
            training; this catches a file changed since).
    """
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode == "F":
        # timm's reader opens a file object: its name is the path
        name = getattr(img, "filename", "") or getattr(getattr(img, "fp", None), "name", "")
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all():
            name = name if isinstance(name, str) and name else "a 32-bit float image"
            raise DatasetError(f"{name}: pixels that are not finite (NaN or inf): repair or remove the image")
        img = Image.fromarray(np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8))
    elif img.mode.startswith("I"):
        grey = np.rint(np.asarray(img, dtype=np.float64) / 257.0)
        img = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    return img.convert("RGB")


# --- transforms -----------------------------------------------------------------------------------------


def image_transforms(
    img_size: int, native_size: int | None, mean: Sequence[float], std: Sequence[float]
) -> tuple[Callable, Callable]:
    """The training and evaluation transforms of PIL images (the CIFAR recipe): to RGB (:func:`_to_rgb`),
    resize and centre-crop unless the images are ``native_size`` already (``None``: images of several sizes),
    random crop with padding and horizontal flip (training only), to a float tensor, normalise.

    torchvision v2 transforms: called with an image they give a tensor; called with a dict that also holds a
    ``tv_tensors.Mask`` of source coordinates (:func:`with_source_coordinates`) the geometric steps move it
    with the image and the photometric ones leave it alone.
    """
    from PIL import Image
    from torchvision.transforms import v2

    head: list[Callable] = [v2.Lambda(_to_rgb, Image.Image)]
    if native_size != img_size:
        head += [v2.Resize(img_size), v2.CenterCrop(img_size)]
    train = [*head, v2.RandomCrop(img_size, padding=max(1, img_size // 8)), v2.RandomHorizontalFlip()]
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), v2.ToPureTensor()]
    return v2.Compose(train + tail), v2.Compose(head + tail)


def _tensor_transforms(
    img_size: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[Callable, Callable]:
    """Random crop with padding and normalisation for in-memory float tensors (digits: no flip); v2."""
    from torchvision.transforms import v2

    normalize = v2.Normalize(mean, std)
    train = v2.Compose([v2.RandomCrop(img_size, padding=max(1, img_size // 8)), normalize])
    return train, normalize


def with_source_coordinates(dataset: Any) -> Any:
    """The training set for ``--saliency-source cached``: samples ``(image, target, index, coords)``.

    The data set's own transform (a torchvision v2 pipeline of this module) is run on the image together
    with its source-coordinate map (:class:`~salfmix_transforms.saliency_cache.IndexedViews`), so the
    cache knows where every pixel of the view came from.
    """
    import copy

    from .saliency_cache import IndexedViews

    raw = copy.copy(dataset)
    raw.transform = None
    return IndexedViews(raw, dataset.transform)


# --- builders -------------------------------------------------------------------------------------------


def check_data_dir(path: str | None, what: str) -> str:
    """``path``, once it is an existing directory (else :class:`DatasetError` naming ``what``)."""
    if not path:
        raise DatasetError(f"{what} needs a data directory (--data-dir)")
    if not os.path.exists(path):
        raise DatasetError(f"data directory {path!r} does not exist")
    if not os.path.isdir(path):
        raise DatasetError(f"data directory {path!r} is not a directory")
    return path


def _resolve_split(root: str, split: str, kind: str) -> str:
    path = os.path.join(root, split)
    if os.path.isdir(path):
        return path
    synonyms = _TRAIN_SPLITS if split in _TRAIN_SPLITS else _EVAL_SPLITS if split in _EVAL_SPLITS else ()
    for name in synonyms:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    raise DatasetError(f"no {kind} split {split!r} in {root} (sub-directories: {', '.join(found) or 'none'})")


def _guess_name(data_dir: str | None) -> str:
    if data_dir is None:
        return "digits"
    check_data_dir(data_dir, "the data set")
    for name, sub in _CIFAR_DIRS.items():
        if os.path.basename(os.path.normpath(data_dir)) == sub or os.path.isdir(os.path.join(data_dir, sub)):
            return name
    for root in (data_dir, os.path.join(data_dir, "tiny-imagenet-200")):
        if os.path.isfile(os.path.join(root, "wnids.txt")) or os.path.isfile(
            os.path.join(root, "val", "val_annotations.txt")
        ):
            return "tinyimagenet"
    return "folder"


def canonical_name(name: str | None, data_dir: str | None = None) -> str:
    """The canonical name of ``name`` (an alias such as ``torch/cifar10``), or the guess from ``data_dir``."""
    if name is None or name.lower() == "auto":
        return _guess_name(data_dir)
    key = name.lower()
    if key not in _ALIASES:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return _ALIASES[key]


def _split_is_training(name: str, split: str) -> bool:
    """Whether ``split`` names the training images (``train``) or the held-out ones (``val``, ``test``, ...)
    of a data set with those two parts.

    Raises:
        DatasetError: any other name (it would silently score the held-out images under its name).
    """
    if split in _TRAIN_SPLITS:
        return True
    if split in _EVAL_SPLITS:
        return False
    raise DatasetError(f"{name} split must be 'train' or one of {', '.join(_EVAL_SPLITS)}, got {split!r}")


def _build_digits(
    img_size: int | None, data_dir: str | None, train_split: str, val_split: str
) -> tuple[Dataset, Dataset, int, int]:
    if data_dir is not None:
        raise DatasetError("the digits data set is embedded: do not pass a data directory with it")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    size = img_size or 32
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    train_idx, val_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=_DIGITS_VAL_FRACTION,
        random_state=_DIGITS_SEED,
        stratify=labels.numpy(),
    )
    train_images = images[torch.as_tensor(train_idx)]
    mean = [float(train_images.mean())] * 3
    std = [float(train_images.std())] * 3
    train_tf, val_tf = _tensor_transforms(size, mean, std)
    part = {True: torch.as_tensor(train_idx), False: torch.as_tensor(val_idx)}
    train_part = part[_split_is_training("digits", train_split)]
    val_part = part[_split_is_training("digits", val_split)]  # "train": the training images, eval transform
    train_ds = TensorImageDataset(images[train_part], labels[train_part], train_tf)
    val_ds = TensorImageDataset(images[val_part], labels[val_part], val_tf)
    return train_ds, val_ds, 10, size


def _class_folders(root: str) -> dict[str, list[str]]:
    """``{class folder: image paths}`` of a ``<root>/<class>/<image>`` split.

    Raises:
        DatasetError: an image outside a class folder, or in a sub-folder of one (timm's reader would make
            that sub-folder a class of its own).
    """
    classes: dict[str, list[str]] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS):
            raise DatasetError(f"{entry.path} is not in a class folder (expected {root}/<class>/<image>)")
        if not entry.is_dir():
            continue
        classes[entry.name] = []
        for folder, _, names in os.walk(entry.path, followlinks=True):
            images = [os.path.join(folder, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)]
            if images and folder != entry.path:
                raise DatasetError(
                    f"{folder} is a sub-folder of class folder {entry.name!r} with images (timm's reader "
                    "would make it a class of its own): move its images up or remove it"
                )
            classes[entry.name] += images
    return classes


def _check_classes(train_root: str, val_root: str) -> list[str]:
    """The image paths of both splits, once their class folders match (see the module docstring)."""
    train, val = _class_folders(train_root), _class_folders(val_root)
    if not any(train.values()):
        raise DatasetError(
            f"no images found in {train_root} (expected <class>/<image> files: {', '.join(IMAGE_EXTENSIONS)})"
        )
    empty = [c for c, files in train.items() if not files and not c.startswith(".")]
    if empty:
        raise DatasetError(
            f"training class folder {empty[0]!r} in {train_root} has no images (the class would be dropped, "
            "with its validation images): add images or remove the folder"
        )
    extra = [c for c, files in val.items() if files and c not in train]
    if extra:
        raise DatasetError(
            f"validation class folder {extra[0]!r} in {val_root} is not a training class (its images would "
            f"be dropped); training classes: {', '.join(c for c in train if train[c])}"
        )
    return [path for files in (*train.values(), *val.values()) for path in files]


def _inspect_images(paths: list[str]) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Decode every image once: ``({path: (width, height)}, {path: why it cannot be read})``.

    Raises:
        DatasetError: a float image (mode ``F``) with NaN or inf pixels or values outside [0, 1].
    """
    from PIL import Image

    sizes, unreadable = {}, {}
    for path in paths:
        try:
            with Image.open(path) as img:
                sizes[path] = img.size
                img.draft(img.mode, (1, 1))  # JPEG: decode at 1/8 scale; the whole file is still read
                img.load()
                values = np.asarray(img) if img.mode == "F" else None
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for a broken file
            unreadable[path] = " ".join(str(e).split()) or type(e).__name__
            continue
        if values is not None:
            _check_float_pixels(path, values)
    return sizes, unreadable


def _check_float_pixels(path: str, values: np.ndarray) -> None:
    """Refuse a float image that :func:`_to_rgb` cannot scale: NaN or inf pixels, values outside [0, 1]."""
    finite = np.isfinite(values)
    if not finite.all():
        raise DatasetError(
            f"{path}: {values.size - int(finite.sum())} of {values.size} pixels are not finite (NaN or inf): "
            "repair or remove the image"
        )
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0.0 or high > 1.0:
        raise DatasetError(
            f"{path} is a 32-bit float image with values in [{low:g}, {high:g}]: float images must hold "
            "intensities in [0, 1] (scaled x255, torchvision's convention); rescale it to [0, 1] or save it "
            "as an 8- or 16-bit image"
        )


def _skip_unreadable(dataset: Any, root: str, unreadable: dict[str, str]) -> None:
    """Drop the unreadable images from a timm folder dataset, with one warning (an error above 1%)."""
    samples = dataset.reader.samples
    bad = [path for path, _ in samples if path in unreadable]
    if not bad:
        return
    first = f"{bad[0]}: {unreadable[bad[0]]}"
    summary = f"{len(bad)} of {len(samples)} images in {root} cannot be read (first: {first})"
    if len(bad) > _MAX_UNREADABLE * len(samples):
        raise DatasetError(f"{summary}: more than {_MAX_UNREADABLE:.0%}, repair or remove them")
    _logger.warning("warning: %s; skipped", summary)
    dataset.reader.samples = [s for s in samples if s[0] not in unreadable]


def _build_folder(
    data_dir: str, train_split: str, val_split: str, img_size: int | None
) -> tuple[Dataset, Dataset, int, int]:
    from timm.data import create_dataset
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    root = check_data_dir(data_dir, "an image folder")
    train_root = _resolve_split(root, train_split, "training")
    val_root = _resolve_split(root, val_split, "validation")
    sizes, unreadable = _inspect_images(_check_classes(train_root, val_root))
    # timm's reader with this package's extensions; mode None: _to_rgb converts (16-bit images too).
    extensions = ";".join(IMAGE_EXTENSIONS)
    common: dict[str, Any] = dict(search_split=False, input_img_mode=None, input_key=extensions)
    train_ds = create_dataset("", root=train_root, split=train_split, is_training=True, **common)
    class_to_idx = dict(train_ds.reader.class_to_idx)
    val_ds = create_dataset("", root=val_root, split=val_split, class_map=class_to_idx, **common)
    _skip_unreadable(train_ds, train_root, unreadable)
    _skip_unreadable(val_ds, val_root, unreadable)
    if len(val_ds) == 0:
        raise DatasetError(f"no images of the training classes found in {val_root}")
    width, height = sizes[train_ds.reader.samples[0][0]]
    if width != height and img_size is None:
        raise DatasetError(f"images are {width}x{height}; pass --img-size for non-square images")
    kept = [path for ds in (train_ds, val_ds) for path, _ in ds.reader.samples]
    # Images of another size than the first: every image is resized and centre-cropped (no-op for the rest).
    native = width if all(sizes[path] == (width, width) for path in kept) else None
    size = img_size or width
    train_ds.transform, val_ds.transform = image_transforms(
        size, native, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    )
    return train_ds, val_ds, len(class_to_idx), size


def _cifar_splits(name: str, data_dir: str, train_split: str, val_split: str) -> tuple[Dataset, Dataset]:
    from timm.data import create_dataset

    root = check_data_dir(data_dir, name)
    sub = _CIFAR_DIRS[name]
    if os.path.basename(os.path.normpath(root)) == sub:
        root = os.path.dirname(os.path.normpath(root))
    if not os.path.isdir(os.path.join(root, sub)):
        raise DatasetError(f"{name}: no extracted {sub}/ in {data_dir} (nothing is downloaded)")
    parts = {True: "train", False: "validation"}
    train_part, val_part = (parts[_split_is_training(name, split)] for split in (train_split, val_split))
    try:
        # timm's create_dataset wraps torchvision's CIFAR10/CIFAR100 for "torch/..." names.
        train_ds = create_dataset(f"torch/{name}", root=root, split=train_part, download=False)
        val_ds = create_dataset(f"torch/{name}", root=root, split=val_part, download=False)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted."
        raise DatasetError(f"{name}: cannot read {os.path.join(root, sub)}: {e}") from e
    return train_ds, val_ds


def _tinyimagenet_splits(data_dir: str, train_split: str, val_split: str) -> tuple[Dataset, Dataset]:
    root = check_data_dir(data_dir, "tinyimagenet")
    if os.path.basename(os.path.normpath(root)) != "tiny-imagenet-200" and os.path.isdir(
        os.path.join(root, "tiny-imagenet-200")
    ):
        root = os.path.join(root, "tiny-imagenet-200")
    return TinyImageNet(root, train_split), TinyImageNet(root, val_split)


def build_datasets(
    name: str | None = None,
    data_dir: str | None = None,
    *,
    train_split: str = "train",
    val_split: str = "validation",
    img_size: int | None = None,
) -> tuple[Dataset, Dataset, int, int]:
    """Training and validation sets: ``(train_ds, val_ds, num_classes, img_size)``.

    Args:
        name: one of :data:`DATASETS` (or an alias: ``torch/cifar10``, ``imagefolder``, ``tiny-imagenet``,
            ...); ``None`` or ``"auto"`` guesses it from ``data_dir`` (``digits`` without one).
        data_dir: the data set's directory (see the module docstring for the layouts).
        train_split, val_split: split names (folder names for ``folder``).
        img_size: side of the square images the model sees; ``None`` keeps the data set's own size
            (32 for CIFAR and digits, 64 for Tiny-ImageNet, the first image's for folders).

    Raises:
        DatasetError: the directory is missing, the name unknown, a split empty, ...
    """
    if img_size is not None and (isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1):
        raise DatasetError(f"img_size must be an int >= 1, got {img_size!r}")
    kind = canonical_name(name, data_dir)
    if kind == "digits":
        return _build_digits(img_size, data_dir, train_split, val_split)
    if kind == "folder":
        return _build_folder(data_dir, train_split, val_split, img_size)
    if kind in _CIFAR_DIRS:
        train_ds, val_ds = _cifar_splits(kind, data_dir, train_split, val_split)
    else:
        train_ds, val_ds = _tinyimagenet_splits(data_dir, train_split, val_split)
    native, mean, std = _NATIVE[kind]
    size = img_size or native
    train_ds.transform, val_ds.transform = image_transforms(size, native, mean, std)
    return train_ds, val_ds, len(train_ds.classes), size
