"""Semantic segmentation for ``train_seg.py``: data sets, a model factory and the metrics (issue 15).

* :class:`SegmentationFolder`: image/mask pairs of a ``<root>/<split>/images|masks/<name>.png`` layout
  (CamVid's), with a joint torchvision v2 transform (the mask is a ``tv_tensors.Mask`` and moves with the
  image). Training: random crop to the largest multiple of 8 (padded with ``ignore_index`` when the image is
  smaller), horizontal flip, float, normalise. Validation: pad right/bottom to a multiple of 8 (the mask with
  ``ignore_index``), so every labelled pixel is scored and nothing is cropped away.
* :class:`SyntheticShapes`: the embedded default data set (no download): noisy backgrounds with rectangles,
  discs and triangles whose masks are their classes (each disc outlined by ignored pixels), drawn from a
  fixed seed.
* :func:`build_model`: ``tinyseg`` (a small encoder-decoder that trains in minutes on a CPU) or torchvision's
  ``lraspp_mobilenet_v3_large`` (random weights, nothing is downloaded).
* :func:`with_source_coordinates`: the training set of ``train_seg.py --saliency-source cached``, samples
  ``(image, mask, index, coords)``: each pixel's source coordinates moved by the crop and flip exactly as the
  mask (:class:`SegmentationViews`), so a ``SaliencyCache`` reads and writes each view's map aligned.
* :func:`confusion_matrix`, :func:`segmentation_metrics`: mIoU and pixel accuracy from a confusion matrix
  accumulated over the validation set (``ignore_index`` pixels excluded).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from ._validation import IGNORE_INDEX
from .data import DatasetError, check_data_dir, image_files

__all__ = [
    "MODELS",
    "SegmentationFolder",
    "SegmentationViews",
    "SyntheticShapes",
    "TinySeg",
    "build_model",
    "confusion_matrix",
    "joint_transform",
    "logits_of",
    "segmentation_metrics",
    "with_source_coordinates",
]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_IGNORED_CLASS_NAMES = {"unlabelled", "unlabeled", "void", "ignore", "background-ignore"}


# --- transforms -----------------------------------------------------------------------------------------


def joint_transform(train: bool, crop_size: tuple[int, int], ignore_index: int = IGNORE_INDEX):
    """The torchvision v2 transform of (``tv_tensors.Image`` uint8, ``tv_tensors.Mask``) pairs.

    Training: random crop to ``crop_size`` (padding with 0 / ``ignore_index`` where the image is smaller),
    horizontal flip, float in [0, 1], ImageNet normalisation. Validation (``crop_size`` unused): pad
    right/bottom to a multiple of 8, then float and normalise.
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
    to_float = [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(MEAN, STD),
    ]
    if train:
        return v2.Compose(
            [v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill), v2.RandomHorizontalFlip(), *to_float]
        )
    return v2.Compose([_PadToMultipleOf8(fill), *to_float])


class _PadToMultipleOf8:
    """Pad right and bottom to multiples of 8 (a no-op for sizes that are already)."""

    def __init__(self, fill: dict) -> None:
        self.fill = fill

    def __call__(self, image, mask):
        from torchvision.transforms import v2

        height, width = image.shape[-2:]
        pad_h, pad_w = -height % 8, -width % 8
        if pad_h or pad_w:
            return v2.Pad([0, 0, pad_w, pad_h], fill=self.fill)(image, mask)
        return image, mask


def _apply(transform, image: torch.Tensor, mask: torch.Tensor, with_coordinates: bool = False) -> tuple:
    """``(image, mask)`` after the joint ``transform``; ``with_coordinates`` adds the image's
    source-coordinate map, which goes through as a second ``tv_tensors.Mask``: every geometric step moves it
    as it moves the mask (crops and flips copy pixels: nearest). Padding (filled with ``ignore_index`` as the
    mask's) comes back as 0: from no pixel of the image."""
    from torchvision import tv_tensors

    from .saliency_cache import source_coordinates

    inputs = [tv_tensors.Image(image), tv_tensors.Mask(mask)]
    if with_coordinates:
        inputs.append(tv_tensors.Mask(source_coordinates(*image.shape[-2:])))
    image, mask, *coords = transform(*inputs)
    out = (image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long())
    if coords:
        c = coords[0].as_subclass(torch.Tensor).float()
        out += (c.masked_fill(((c <= 0) | (c >= 1)).any(0, keepdim=True), 0.0),)
    return out


# --- data sets ------------------------------------------------------------------------------------------


def read_classes(root: str) -> tuple[list[str], int | None]:
    """The class names of ``<root>/classes.txt`` (``index name [colour]`` or ``name`` per line) without the
    ignored one (Unlabelled, void), and the file's index of that ignored class (``None`` when there is none).

    Raises:
        DatasetError: the file is missing or the ignored class is not the last index.
    """
    path = os.path.join(root, "classes.txt")
    if not os.path.isfile(path):
        raise DatasetError(f"no classes.txt in {root!r}: list one class per line (or pass --num-classes)")
    names, ignored = [], None
    with open(path) as f:
        lines = [line.split() for line in f if line.strip()]
    for i, parts in enumerate(lines):
        name = parts[1] if len(parts) > 1 and parts[0].isdigit() else parts[0]
        if name.lower() in _IGNORED_CLASS_NAMES:
            if i != len(lines) - 1:
                raise DatasetError(f"{path}: the ignored class {name!r} must be the last line")
            ignored = i
        else:
            names.append(name)
    return names, ignored


class _JointDataset(torch.utils.data.Dataset):
    """What both data sets share: ``raw(index)`` (image uint8 (3, H, W), mask long (H, W)) goes through the
    joint ``transform``, the training one (random crop, flip) when ``train`` (default: split "train")."""

    def _set_transform(self, split: str, train: bool | None) -> None:
        train = split == "train" if train is None else train
        self.transform = joint_transform(train, self.crop_size, self.ignore_index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _apply(self.transform, *self.raw(index))


class SegmentationFolder(_JointDataset):
    """Image/mask pairs ``<root>/<split>/images/<name>.png`` and ``<root>/<split>/masks/<name>.png``.

    The names come from ``<root>/<split>.txt`` when it exists (one file name a line), otherwise from the
    images folder. Masks are 8-bit class indices; the class named Unlabelled / void in ``classes.txt`` (the
    last line) becomes ``ignore_index``, as do values already equal to it. Samples are (image float (3, H, W)
    normalised, mask long (H, W)).

    Args:
        root: the data set folder.
        split: ``"train"``, ``"val"``, ...
        train: training transform (random crop, flip) instead of the validation one (pad).
        num_classes: the number of classes when there is no ``classes.txt``.
        crop_size: (H, W) of the training crops; default the first image's size rounded down to multiples
            of 8 (128x168 for CamVid's 128x171).
        limit: use the first ``limit`` samples only.
        ignore_index: the mask value of unlabelled pixels.

    Raises:
        DatasetError: a missing folder or list, an image without a mask, a size mismatch (one line each).
    """

    def __init__(
        self,
        root: str,
        split: str,
        train: bool | None = None,
        *,
        num_classes: int | None = None,
        crop_size: tuple[int, int] | None = None,
        limit: int | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.root, self.split = root, split
        self.ignore_index = ignore_index
        check_data_dir(root, "a segmentation data set")
        self.image_dir = os.path.join(root, split, "images")
        self.mask_dir = os.path.join(root, split, "masks")
        for folder in (self.image_dir, self.mask_dir):
            if not os.path.isdir(folder):
                raise DatasetError(f"no folder {folder!r} (expected <root>/<split>/images and masks)")
        if os.path.isfile(os.path.join(root, "classes.txt")) or num_classes is None:
            self.classes, self.ignored_class = read_classes(root)
        else:
            self.classes, self.ignored_class = [str(i) for i in range(num_classes)], None
        if num_classes is not None and num_classes < len(self.classes):
            raise DatasetError(f"num_classes {num_classes} is smaller than the {len(self.classes)} classes")
        self.num_classes = num_classes or len(self.classes)
        listing = os.path.join(root, f"{split}.txt")
        if os.path.isfile(listing):
            with open(listing) as f:
                names = [line.strip() for line in f if line.strip()]
        else:
            names = [os.path.basename(path) for path in image_files(self.image_dir)]
        if limit is not None:
            names = names[:limit]
        if not names:
            raise DatasetError(f"no images in {self.image_dir!r}")
        for name in names:
            if not os.path.isfile(os.path.join(self.image_dir, name)):
                raise DatasetError(f"image {name!r} of {split} is missing from {self.image_dir!r}")
            if not os.path.isfile(os.path.join(self.mask_dir, self.mask_name(name))):
                raise DatasetError(f"image {name!r} of {split} has no mask in {self.mask_dir!r}")
        self.names = names
        if crop_size is None:  # the first image's size, rounded down to multiples of 8
            crop_size = [max(8, n // 8 * 8) for n in self.raw(0)[0].shape[-2:]]
        self.crop_size = tuple(crop_size)
        self._set_transform(split, train)

    @staticmethod
    def mask_name(name: str) -> str:
        """The mask file of image ``name``: the same stem, ``.png`` (``a.jpg`` -> ``a.png``)."""
        return os.path.splitext(name)[0] + ".png"

    def raw(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index`` before the transform: image uint8 (3, H, W), mask long (H, W)."""
        import numpy as np
        from PIL import Image

        name = self.names[index]
        with Image.open(os.path.join(self.image_dir, name)) as img:
            image = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
        with Image.open(os.path.join(self.mask_dir, self.mask_name(name))) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(f"mask of {name!r} is {img.mode}, not class indices (8-bit L or P)")
            mask = torch.from_numpy(np.array(img).astype(np.int64))
        if image.shape[-2:] != mask.shape:
            raise DatasetError(
                f"image {name!r} is {image.shape[-1]}x{image.shape[-2]} but its mask {mask.shape[-1]}x"
                f"{mask.shape[-2]} (W x H)"
            )
        if self.ignored_class is not None:
            mask[mask == self.ignored_class] = self.ignore_index
        bad = (mask >= self.num_classes) & (mask != self.ignore_index)
        if bool(bad.any()):
            raise DatasetError(
                f"mask of {name!r} has class {int(mask[bad].max())}, not in 0..{self.num_classes - 1} "
                f"or {self.ignore_index}"
            )
        return image, mask

    def __len__(self) -> int:
        return len(self.names)


class SyntheticShapes(_JointDataset):
    """Synthetic scenes, the default data set of ``train_seg.py`` (no download, reproducible).

    Each ``size`` x ``size`` image is a smooth random background (class 0) with 1-4 objects: rectangles
    (class 1), discs (class 2) and triangles (class 3), each of a random colour with a class-dependent bias;
    every disc is outlined by a 1-pixel ring of ``ignore_index`` (as PASCAL VOC's boundaries). The scenes
    are drawn once from ``seed`` (the training and validation splits use different seeds).

    Args:
        split: ``"train"`` (``num_images`` default 256) or ``"val"`` (64).
        train: training transform (random flip) instead of the validation one; default ``split == "train"``.
    """

    CLASSES = ("background", "rectangle", "disc", "triangle")

    def __init__(
        self,
        split: str = "train",
        train: bool | None = None,
        *,
        num_images: int | None = None,
        size: int = 64,
        seed: int = 0,
        limit: int | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if split not in ("train", "val"):
            raise DatasetError(f"the synthetic data set has splits train and val, not {split!r}")
        if size < 16 or size % 8:
            raise DatasetError(f"synthetic image size must be a multiple of 8 >= 16, got {size}")
        num_images = num_images or (256 if split == "train" else 64)
        if limit is not None:
            num_images = min(num_images, limit)
        self.classes = list(self.CLASSES)
        self.num_classes = len(self.classes)
        self.ignore_index = ignore_index
        self.crop_size = (size, size)
        generator = torch.Generator().manual_seed(seed * 1000 + (0 if split == "train" else 1))
        self.images, self.masks = _draw_scenes(num_images, size, generator, ignore_index)
        self._set_transform(split, train)

    def __len__(self) -> int:
        return self.images.shape[0]

    def raw(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index`` before the transform: image uint8 (3, H, W), mask long (H, W)."""
        return self.images[index], self.masks[index].long()


class SegmentationViews(torch.utils.data.Dataset):
    """A segmentation training set whose samples carry what a ``SaliencyCache`` needs:
    ``(image, mask, index, coords)``.

    ``dataset`` (:class:`SegmentationFolder`, :class:`SyntheticShapes`: a ``raw(index)`` and a joint
    ``transform``) is read before its transform, which then moves the image, the mask and the
    source-coordinate map (``saliency_cache.source_coordinates``) together: ``coords`` is (2, H, W)
    float32, 0 where the crop padded. The data set's own ``transform`` is looked up at every call.
    """

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        if not callable(getattr(dataset, "raw", None)) or not hasattr(dataset, "transform"):
            raise TypeError(
                f"{type(dataset).__name__} has no raw(index) and transform to move coordinates with"
            )
        self.dataset = dataset
        self.crop_size = getattr(dataset, "crop_size", None)
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
        image, mask, coords = _apply(self.dataset.transform, *self.dataset.raw(index), with_coordinates=True)
        return image, mask, index, coords


def with_source_coordinates(dataset: torch.utils.data.Dataset) -> SegmentationViews:
    """The training set of ``train_seg.py --saliency-source cached``: :class:`SegmentationViews`."""
    return SegmentationViews(dataset)


def _draw_scenes(
    count: int, size: int, generator: torch.Generator, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` scenes: images uint8 (count, 3, size, size), masks uint8 (count, size, size)."""

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    rows = torch.arange(size, dtype=torch.float32).view(-1, 1)
    cols = torch.arange(size, dtype=torch.float32).view(1, -1)
    bias = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.2, 0.2], [0.2, 0.9, 0.2], [0.2, 0.3, 0.9]])
    images = torch.empty(count, 3, size, size, dtype=torch.uint8)
    masks = torch.zeros(count, size, size, dtype=torch.uint8)
    for i in range(count):
        coarse = rand(1, 3, 4, 4) * 0.6 + 0.2
        image = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]
        image = image + 0.08 * rand(3, size, size)
        mask = torch.zeros(size, size, dtype=torch.uint8)
        for _ in range(1 + int(rand(1) * 4)):
            cls = 1 + int(rand(1) * 3)
            cy, cx = (rand(2) * 0.8 + 0.1) * size
            half = (rand(1) * 0.15 + 0.08) * size
            if cls == 1:
                ratio = rand(1) + 0.5
                inside = ((rows - cy).abs() <= half * ratio) & ((cols - cx).abs() <= half / ratio)
                ring = torch.zeros_like(inside)
            elif cls == 2:
                dist = ((rows - cy) ** 2 + (cols - cx) ** 2).sqrt()
                inside, ring = dist <= half, (dist > half) & (dist <= half + 1)
            else:  # an upward triangle: apex at the top, base at the bottom
                dy = rows - (cy - half)
                inside = (dy >= 0) & (dy <= 2 * half) & ((cols - cx).abs() <= dy / 2)
                ring = torch.zeros_like(inside)
            colour = (0.5 * bias[cls] + 0.5 * rand(3)).view(3, 1, 1)
            image = torch.where(inside, colour, image)
            mask[inside] = cls
            mask[ring & (mask == 0)] = ignore_index
        images[i] = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        masks[i] = mask
    return images, masks


# --- models ---------------------------------------------------------------------------------------------

#: The names :func:`build_model` takes.
MODELS = ("tinyseg", "lraspp_mobilenet_v3_large")


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinySeg(nn.Module):
    """A small encoder-decoder: four conv stages (strides 1, 2, 2, 2, then a dilated one) and a decoder
    that upsamples the stride-8 features, adds the stride-2 ones and classifies; logits (B, K, H, W) at the
    input size (H, W multiples of 8 not needed: the output is interpolated to the input)."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.stem = _conv(3, w // 2)
        self.down1 = _conv(w // 2, w, stride=2)
        self.down2 = nn.Sequential(_conv(w, 2 * w, stride=2), _conv(2 * w, 2 * w))
        self.down3 = nn.Sequential(_conv(2 * w, 2 * w, stride=2), _conv(2 * w, 2 * w, dilation=2))
        self.lateral = nn.Conv2d(w, 2 * w, 1)
        self.head = nn.Sequential(_conv(2 * w, w), nn.Conv2d(w, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        s2 = self.down1(self.stem(x))
        s8 = self.down3(self.down2(s2))
        up = F.interpolate(s8, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        out = self.head(up + self.lateral(s2))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


def build_model(name: str, num_classes: int) -> nn.Module:
    """A segmentation model with random weights (nothing downloaded): ``tinyseg`` (logits (B, K, H, W)) or
    ``lraspp_mobilenet_v3_large`` (torchvision's; a dict with the logits under ``"out"``).

    Raises:
        ValueError: an unknown name.
    """
    if name == "tinyseg":
        return TinySeg(num_classes)
    if name == "lraspp_mobilenet_v3_large":
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large

        return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    raise ValueError(f"model must be one of {', '.join(MODELS)}; got {name!r}")


def logits_of(output: torch.Tensor | dict) -> torch.Tensor:
    """The logits of a model's output: the tensor itself or torchvision's ``output["out"]``."""
    return output["out"] if isinstance(output, dict) else output


# --- metrics --------------------------------------------------------------------------------------------


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The (K, K) int64 confusion matrix ``cm[true, predicted]`` of a batch of class maps (any shape, the
    same for both); pixels whose target is ``ignore_index`` (or out of range) are left out, a prediction
    outside [0, K) counts as the nearest class.

    Summed on the device without a data-dependent shape (the left-out pixels go to a spare bin, counted
    with ``index_add_``; boolean-mask indexing or ``bincount`` would make the host wait for a CUDA device).
    """
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    spare = num_classes * num_classes
    index = torch.where(keep, target * num_classes + pred.clamp(0, num_classes - 1), spare)
    counts = torch.zeros(spare + 1, dtype=torch.long, device=pred.device)
    counts.index_add_(0, index, torch.ones_like(index))
    return counts[:spare].reshape(num_classes, num_classes)


def segmentation_metrics(cm: torch.Tensor) -> dict[str, float | list[float]]:
    """mIoU and pixel accuracy of a confusion matrix ``cm[true, predicted]``.

    Returns ``{"miou", "pixel_acc", "iou"}``: per-class IoU ``TP / (TP + FP + FN)`` (NaN for a class in
    neither target nor prediction), their mean over the classes that occur (in the target or the prediction),
    and the fraction of labelled pixels predicted right. Values in [0, 1]; NaN for an empty matrix.
    """
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    present = union > 0
    total = cm.sum()
    return {
        "miou": float(iou[present].mean()) if bool(present.any()) else math.nan,
        "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
        "iou": iou.tolist(),
    }
