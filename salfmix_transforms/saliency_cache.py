"""Saliency for free: each sample's map from the training step's own input gradient, one epoch late.

SalfMix needs the saliency of eq. (2)-(3), ``M = max_c |dCE(f(x), y)/dx|``. Computing it exactly costs one
extra forward and input-only backward per step. But the training step's own backward can give the input
gradient too (``x.requires_grad_(True)`` before the forward, ``x.grad`` after), for about the price of the
first layer's input gradient. That gradient belongs to the *augmented* view of this visit, and SalfMix wants
the map of the *next* visit's view, so :class:`SaliencyCache` keeps one map per training sample in the
sample's own, un-augmented coordinates, at a fixed low resolution:

* writing (after the backward) scatters each pixel's saliency to the cell of the original image it came
  from, as a mean over the pixels that land in a cell (:meth:`SaliencyCache.write`);
* reading (before the next visit's transform) gathers, for each pixel of the new view, the value of the
  cell it comes from (:meth:`SaliencyCache.read`);
* both find each pixel's cell from its coordinates; a step that reads and writes the same views finds them
  once (:meth:`SaliencyCache.locate`, :class:`ViewCells`).

Where each pixel of a view came from is a *coordinate map* that the data pipeline passes through the same
geometric transforms as the image (:func:`source_coordinates`; :class:`AddSourceCoordinates` for
torchvision v2; :func:`source_coordinates_hwc` as a mask target for albumentations). Pixels that do not
come from the sample itself are never written: padding (coordinates 0), and what a transform pasted or
blended in, through the transforms' ``provenance`` (the pasted ``P_l`` of SalfMix, the partner's box of
CutMix, the partner's share of Mixup: a cell moves towards the new value by the share of its pixels that
are the sample's own).

Choices (the paper does not have a cache):

* resolution 16 x 16 per map in bfloat16: 512 bytes per sample (plus 4 for the epoch it was written), so
  ImageNet-1k's 1.28 M images take 660 MB. bfloat16 keeps float32's exponent range (input gradients are
  often below float16's smallest normal number) and 3 significant digits, enough to rank cells;
* a cell that a view does not cover keeps its previous value; a sample that was never written reads as a
  constant 0 map, for which SalfMix picks random cells (its rule for constant maps): no extra pass. In a
  sample's first write the cells it cannot see take the mean of those it measures (not 0, which would keep
  a first, random ``P_l`` the least salient region for good: :meth:`SaliencyCache.apply_update`);
* a sample whose gradient is not finite (a diverging step) is not written;
* a write comes in at the level of the map it updates (:meth:`SaliencyCache.apply_update`): a map mixes
  cells of several writes (those a view does not show, or that were pasted over, keep an older one), and
  the gradient's scale changes between writes (fp16 AMP's loss scale, ``GradScaler`` on CUDA, doubles or
  halves; a converging network's gradients shrink). Taken as they come, an older cell would look more or
  less salient than it is (after a doubled loss scale, the ``P_l`` pasted over last time would look half
  as salient and be chosen again). SalfMix uses only a map's ranking, which this keeps.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from ._validation import (
    check_index_range,
    check_non_negative_int,
    check_optional_positive_int,
    check_positive_int,
)

__all__ = [
    "DEFAULT_RESOLUTION",
    "AddSourceCoordinates",
    "IndexedViews",
    "SaliencyCache",
    "ViewCells",
    "source_coordinates",
    "source_coordinates_hwc",
]

#: Cells per side of a cached map.
DEFAULT_RESOLUTION = 16


def source_coordinates(height: int, width: int) -> torch.Tensor:
    """The coordinate map of an un-augmented image: (2, H, W) float32, ``(row + 0.5) / H`` and
    ``(col + 0.5) / W``, strictly inside (0, 1).

    Passed through the image's geometric transforms as a mask (nearest interpolation keeps the values; the
    padding that a crop or a rotation adds is filled with 0), it tells where each pixel of the augmented view
    came from. 0 marks a pixel that came from no pixel of the image.
    """
    rows = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    cols = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    return torch.stack((rows.view(-1, 1).expand(height, width), cols.view(1, -1).expand(height, width)))


def source_coordinates_hwc(height: int, width: int) -> np.ndarray:
    """:func:`source_coordinates` as an (H, W, 2) float32 NumPy array: an albumentations mask target.

    ``A.Compose([...], additional_targets={"coords": "mask"})`` called with
    ``coords=source_coordinates_hwc(h, w)`` moves it with the image (masks are resampled with nearest
    interpolation and padded with 0). A batch of them from a DataLoader is (B, H, W, 2):
    ``coords.permute(0, 3, 1, 2)`` is what the cache reads.
    """
    return source_coordinates(height, width).permute(1, 2, 0).contiguous().numpy()


class AddSourceCoordinates:
    """A torchvision v2 step, first in the pipeline: adds ``sample[key] = tv_tensors.Mask(coordinates)``.

    Later geometric transforms (flip, crop with padding, ``RandomResizedCrop``, rotation) move the mask
    with the image, so at the end it holds each pixel's source coordinates (:func:`source_coordinates`).
    The sample must be a dict holding a ``tv_tensors.Image``, a PIL image or a (C, H, W) tensor under
    ``image_key``.
    """

    def __init__(self, key: str = "coords", image_key: str = "image") -> None:
        self.key, self.image_key = key, image_key

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF

        if not isinstance(sample, dict) or self.image_key not in sample:
            raise ValueError(
                f"AddSourceCoordinates needs a dict sample with the image under {self.image_key!r}"
            )
        height, width = TF.get_size(sample[self.image_key])
        return {**sample, self.key: tv_tensors.Mask(source_coordinates(height, width))}


class IndexedViews(torch.utils.data.Dataset):
    """A training set whose samples carry what the cache needs: ``(image, target, index, coords)``.

    Args:
        dataset: a map-style data set of ``(image, target)`` with no transform of its own (PIL images or
            (C, H, W) tensors).
        transform: a torchvision v2 transform of the dict ``{"image": ..., "coords": tv_tensors.Mask}``:
            its geometric steps move the coordinates with the image, its photometric and normalising steps
            touch the image only (v2 leaves masks alone). It must return a tensor image.

    ``coords`` comes back as a plain (2, H, W) float32 tensor (:func:`source_coordinates` after the
    transform), so the default collate stacks a batch into (B, 2, H, W).
    """

    def __init__(self, dataset: Any, transform: Any) -> None:
        self.dataset = dataset
        self.transform = transform
        self.add_coordinates = AddSourceCoordinates()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any, int, torch.Tensor]:
        image, target = self.dataset[index]
        sample = self.transform(self.add_coordinates({"image": image}))
        return sample["image"], target, index, sample["coords"].as_subclass(torch.Tensor)


class ViewCells(NamedTuple):
    """Where the pixels of a batch of views lie in a :class:`SaliencyCache` (:meth:`SaliencyCache.locate`).

    Indexed along the batch like the views (``ViewCells(cells.index[perm], cells.valid[perm], R)`` for
    reordered views), as the coordinates would be.

    Attributes:
        index: (B, H, W) int64, ``row * R + col``: the cell of its sample's own map that each pixel came
            from (any cell of the map, in ``[0, R * R)``, for a pixel that is not ``valid``).
        valid: (B, H, W) bool, whether the pixel came from the image (False for padding and NaN
            coordinates: no cell).
        resolution: ``R``, the cache's cells per side.
    """

    index: torch.Tensor
    valid: torch.Tensor
    resolution: int


def _measured_mean(means: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1): each sample's mean cell value over the cells a write measures, weighted by ``confidence``
    (the weights normalised first, so that huge finite values do not overflow)."""
    seen = confidence.sum(dim=(1, 2), keepdim=True).clamp(min=1e-12)
    return (confidence / seen * means).sum(dim=(1, 2), keepdim=True)


class SaliencyCache:
    """One low-resolution saliency map per training sample, in the sample's own coordinates.

    Args:
        num_samples: size of the training set (indices are ``0 .. num_samples - 1``).
        resolution: cells per side of a map (:data:`DEFAULT_RESOLUTION`).
        device: where the maps live (the training device: reading and writing are gathers and scatters).

    Attributes:
        maps: (N, R, R) bfloat16.
        written_epoch: (N,) int32, the epoch of each map's last write, -1 for never.
    """

    def __init__(
        self, num_samples: int, resolution: int = DEFAULT_RESOLUTION, device: torch.device | str = "cpu"
    ) -> None:
        if num_samples is None:
            raise TypeError("num_samples must be the size of the training set (an int >= 1), got None")
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.resolution = check_optional_positive_int(resolution, "resolution") or DEFAULT_RESOLUTION
        shape = (self.num_samples, self.resolution, self.resolution)
        self.maps = torch.zeros(shape, dtype=torch.bfloat16, device=device)
        self.written_epoch = torch.full((self.num_samples,), -1, dtype=torch.int32, device=device)

    @property
    def bytes_per_sample(self) -> int:
        return self.maps[0].numel() * self.maps.element_size() + self.written_epoch.element_size()

    # -- checks -----------------------------------------------------------------------------------------

    def check_dataset(self, num_samples: int) -> None:
        """Refuse a cache built for a data set of another size (a resumed run on other data)."""
        if num_samples != self.num_samples:
            raise ValueError(
                f"the saliency cache holds {self.num_samples} samples, but the data set has {num_samples}: "
                "it was built for another data set"
            )

    def _check_indices(self, indices: object, batch: int) -> torch.Tensor:
        if (
            not isinstance(indices, torch.Tensor)
            or indices.dim() != 1
            or indices.is_floating_point()
            or indices.dtype == torch.bool  # a mask is not a list of samples: True would read sample 1
        ):
            raise TypeError("indices must be a (B,) integer tensor of sample indices")
        if indices.shape[0] != batch:
            raise ValueError(f"indices has {indices.shape[0]} entries for a batch of {batch} views")
        indices = indices.to(self.maps.device, torch.long)
        check_index_range(indices, self.num_samples, "indices", "the cache's data set")
        return indices

    def _located(self, coords: object) -> ViewCells:
        """``coords`` as :class:`ViewCells`: located here, or checked to be this cache's."""
        if not isinstance(coords, ViewCells):
            return self.locate(coords)
        index, valid = coords.index, coords.valid
        if not (isinstance(index, torch.Tensor) and isinstance(valid, torch.Tensor)) or (
            index.dim() != 3
            or index.dtype != torch.long
            or valid.dtype != torch.bool
            or valid.shape != index.shape
        ):
            raise ValueError(
                f"the located views must hold index (B, H, W) int64 and valid of the same shape, bool "
                f"(SaliencyCache.locate), got index {_describe(index)} and valid {_describe(valid)}"
            )
        if coords.resolution != self.resolution:
            raise ValueError(
                f"the located views are for a cache of resolution {coords.resolution}, this one has "
                f"{self.resolution}: locate them with this cache"
            )
        # A hand-built index outside the map would gather an error, or scatter into the next sample's map.
        index, valid = index.to(self.maps.device), valid.to(self.maps.device)
        cells_per_map = self.resolution * self.resolution
        check_index_range(index, cells_per_map, "coords", f"the located cells of a {cells_per_map}-cell map")
        return ViewCells(index, valid, coords.resolution)

    def locate(self, coords: torch.Tensor) -> ViewCells:
        """Where every pixel of a batch of views comes from in its sample's map (the cell), once per batch.

        :meth:`read` and :meth:`write` take the result in place of ``coords``: a training step that reads
        and writes the same views locates them once (the engine does), which saves one pass over the
        coordinates (with the write's cheaper finiteness check, 2-4 % of a small segmentation network's
        step on the CPU: ``BENCHMARKS.md``, section 5).

        Args:
            coords: the source-coordinate maps (B, 2, H, W) of the batch (:func:`source_coordinates`
                passed through the geometric transforms).

        Raises:
            ValueError: ``coords`` is not a (B, 2, H, W) tensor.
        """
        if not isinstance(coords, torch.Tensor) or coords.dim() != 4 or coords.shape[1] != 2:
            shape = tuple(coords.shape) if isinstance(coords, torch.Tensor) else type(coords).__name__
            raise ValueError(
                f"coords must be the source-coordinate maps (B, 2, H, W) of the batch (source_coordinates "
                f"passed through the geometric transforms) or their SaliencyCache.locate(), got {shape}"
            )
        coords = coords.to(self.maps.device, torch.float32)
        rows, cols = coords[:, 0], coords[:, 1]
        valid = (rows > 0) & (rows < 1) & (cols > 0) & (cols < 1)
        # In float32 (exact for cell indices < 2**24), one conversion at the end: 5x faster than per axis.
        resolution, cells = self.resolution, self.resolution * self.resolution
        scaled = (coords * resolution).floor_().clamp_(0, resolution - 1)
        cell = (scaled[:, 0] * resolution + scaled[:, 1]).long().clamp_(0, cells - 1)  # NaN stays in range
        return ViewCells(cell, valid, resolution)

    # -- read / write -----------------------------------------------------------------------------------

    def read(self, indices: torch.Tensor, coords: torch.Tensor | ViewCells) -> torch.Tensor:
        """The cached maps aligned with this visit's views: (B, H, W) float32 (gather).

        ``coords``: the views' source-coordinate maps (B, 2, H, W), or their :meth:`locate`. Padding pixels
        read 0; a sample never written reads a constant 0 map (SalfMix: random cells).
        """
        cells = self._located(coords)
        indices = self._check_indices(indices, cells.index.shape[0])
        batch, pixels = indices.shape[0], cells.index.shape[1] * cells.index.shape[2]
        flat = self.maps[indices].float().reshape(batch, self.resolution * self.resolution)
        values = flat.gather(1, cells.index.reshape(batch, pixels)).view_as(cells.index)
        return values.masked_fill_(~cells.valid, 0.0)

    def local_update(
        self,
        indices: torch.Tensor,
        coords: torch.Tensor | ViewCells,
        saliency: torch.Tensor,
        own: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What :meth:`write` would write: ``(indices, means (B, R, R), confidence (B, R, R))``.

        Per cell of each sample's own image: ``means``, the mean of ``saliency`` (B, H, W) over the pixels
        that came from the cell, weighted by ``own`` (the share of each pixel that is the sample's own, 1
        when ``None``); ``confidence``, the mean of ``own`` over those pixels (0 for a cell the view does
        not show). Samples whose saliency is not finite get confidence 0; ``own`` is clamped to [0, 1], a
        NaN share counts as 0. Separate from :meth:`apply_update` so that DDP can all-gather it.

        Each sample's ``means`` are relative (the saliency divided by its largest magnitude before the sums,
        the means by their mean over the cells measured, weighted by ``confidence``): the gradient's scale
        drops out, and :meth:`apply_update` brings the write to the level of the map it updates.
        """
        cells = self._located(coords)
        batch, cells_per_map = cells.index.shape[0], self.resolution * self.resolution
        indices = self._check_indices(indices, batch)
        views = tuple(cells.index.shape)
        if not isinstance(saliency, torch.Tensor):
            raise TypeError(
                f"saliency must be a (B, H, W) tensor = the views' {views}, got {_describe(saliency)}"
            )
        if tuple(saliency.shape) != views:
            raise ValueError(f"saliency must be (B, H, W) = the views' {views}, got {tuple(saliency.shape)}")
        if own is not None and (not isinstance(own, torch.Tensor) or tuple(own.shape) != views):
            raise ValueError(
                f"own must be the share (B, H, W) of each pixel that is the sample's own, the views' "
                f"{views} (a transform's provenance), got {_describe(own)}"
            )
        saliency = saliency.to(cells.index.device, torch.float32)
        finite = torch.ones(batch, 1, 1, dtype=torch.bool, device=saliency.device)
        if saliency.numel():  # one pass for each sample's extremes: a NaN or an inf anywhere shows there
            smallest, largest = torch.aminmax(saliency.flatten(1), dim=1)
            finite = (torch.isfinite(smallest) & torch.isfinite(largest)).view(-1, 1, 1)
            peak = torch.maximum(smallest.abs(), largest.abs()).view(-1, 1, 1)
            peak = torch.where(finite & (peak > 0), peak, 1.0)
            saliency = saliency / peak  # in [-1, 1]: the cell sums neither overflow nor underflow
        shown = (cells.valid & finite).float()  # the pixels that may write: from the image, finite sample
        if own is not None:  # a share in [0, 1]: NaN is no share of the sample's own (no host check)
            own = own.to(shown.device, torch.float32).nan_to_num(0.0, 0.0, 0.0).clamp_(0.0, 1.0)
        weight = shown if own is None else shown * own
        first_cell = torch.arange(batch, device=cells.index.device).view(-1, 1, 1) * cells_per_map
        flat = (cells.index + first_cell).reshape(-1)  # one flat index over the batch's B maps

        def cell_sums(values: torch.Tensor) -> torch.Tensor:
            sums = torch.zeros(batch * cells_per_map, device=values.device)
            sums.index_add_(0, flat, values.reshape(-1))
            return sums.view(batch, self.resolution, self.resolution)

        weighted = cell_sums(torch.nan_to_num(saliency).mul_(weight))
        own_pixels = cell_sums(weight)
        pixels = own_pixels if own is None else cell_sums(shown)
        means = weighted / own_pixels.clamp_min(1e-12)
        confidence = own_pixels / pixels.clamp_min(1e-12)
        return indices, means / _measured_mean(means, confidence).clamp_min(1e-30), confidence

    def apply_update(
        self, indices: torch.Tensor, means: torch.Tensor, confidence: torch.Tensor, epoch: int
    ) -> None:
        """Move each cell towards its new mean by its confidence: ``old + c * (mean - old)``.

        Choice: a sample that appears twice in one update (a repeated-augmentation sampler) keeps one of its
        writes, not their mean (PyTorch leaves which one unspecified for repeated indices; the CPU keeps the
        last).

        A cell seen only through the sample's own pixels (``c = 1``) is replaced; one that the view does not
        show, or that only pasted pixels covered (``c = 0``), keeps its value; a blended cell (Mixup's
        ``lam``) moves part of the way. The samples whose write moved any cell are stamped with ``epoch``.

        Choices (the cache's level is arbitrary: the gradient's scale drifts between writes, so only a map's
        ranking means something):

        * a later write comes in at the level of the map it updates: its means are scaled so that, over the
          cells it measures (weighted by ``c``), their mean is the old map's there. A view that shows only
          the object then ranks it above the older background cells it does not show, as one that shows
          the whole image would, whatever the gradient's scale (fp16's loss scale, a converging network);
        * a sample's first write sets the level, and every cell it shows at all (``c > 0``) is its own
          measurement (a Mixup share would otherwise squeeze the cells onto a few bfloat16 steps); the cells
          it cannot see take the mean of those it measures, not the never-written 0: a sample first written
          after the warm-up is pasted over before any measurement, and at 0 the cells of that ``P_l`` would
          stay the map's minimum, never measured again while pasted over, pasted over on every later visit.
        """
        epoch = check_non_negative_int(epoch, "epoch")
        indices = indices.to(self.maps.device, torch.long)
        means = means.to(self.maps.device, torch.float32)
        confidence = confidence.to(self.maps.device, torch.float32).clamp(0.0, 1.0)
        old = self.maps[indices].float()
        seen = confidence.sum(dim=(1, 2), keepdim=True) > 0
        first = (self.written_epoch[indices] < 0).view(-1, 1, 1) & seen
        confidence = torch.where(first, (confidence > 0).float(), confidence)
        old_level, level = _measured_mean(old, confidence), _measured_mean(means, confidence)
        aligned = ~first & (old_level > 0) & (level > 0)
        means = means * torch.where(aligned, old_level / level.clamp_min(1e-30), 1.0)
        old = torch.where(first, level, old)  # a first write's means are not rescaled: its level as it is
        self.maps[indices] = (old + confidence * (means - old)).to(self.maps.dtype)
        touched = (confidence > 0).flatten(1).any(dim=1)  # (a where, not a mask: no host synchronisation)
        self.written_epoch[indices] = torch.where(touched, epoch, self.written_epoch[indices])

    def write(
        self,
        indices: torch.Tensor,
        coords: torch.Tensor | ViewCells,
        saliency: torch.Tensor,
        epoch: int,
        own: torch.Tensor | None = None,
        *,
        distributed: bool = False,
    ) -> None:
        """Store this step's saliency (B, H, W), e.g. ``saliency_from_gradient(x.grad)`` (eq. (3)), of the
        views at ``coords`` (their source-coordinate maps (B, 2, H, W), or their :meth:`locate`).

        With ``distributed=True`` (DDP, a ``DistributedSampler``: each rank sees other samples), every
        rank's update is all-gathered and applied on every rank, so all caches stay identical.
        """
        update = self.local_update(indices, coords, saliency, own)
        if distributed and dist.is_available() and dist.is_initialized():
            update = _all_gather_update(update)
        self.apply_update(*update, epoch)

    # -- staleness --------------------------------------------------------------------------------------

    def has_map(self, indices: torch.Tensor) -> torch.Tensor:
        """(B,) bool: whether each sample was written at least once."""
        return self.written_epoch[indices.to(self.maps.device, torch.long)] >= 0

    def stale(self, indices: torch.Tensor, epoch: int, max_age: int | None) -> torch.Tensor:
        """(B,) bool: samples whose map is older than ``max_age`` epochs (``None``: never stale)."""
        written = self.written_epoch[indices.to(self.maps.device, torch.long)]
        if max_age is None:
            return torch.zeros_like(written, dtype=torch.bool)
        return (written >= 0) & (epoch - written > max_age)

    # -- checkpoints ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "maps": self.maps.cpu(),
            "written_epoch": self.written_epoch.cpu(),
            "resolution": self.resolution,
            "relative": True,  # writes at the map's level (apply_update); absent before: absolute gradients
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (a checkpoint's cache).

        Maps with NaN or inf values are dropped: they read as never written (SalfMix picks random cells until
        the sample is next seen), with one warning saying how many. A cache saved before writes came in at
        the map's level (no ``"relative"`` entry: absolute input gradients, and the cells of a first
        visit's ``P_l`` left at 0) has each written map divided by the mean of its nonzero cells and its
        zero cells set to that mean (1).

        Raises:
            ValueError: a state that cannot be restored (not a dict, an entry missing, ``maps`` or
                ``written_epoch`` of another shape or type, epochs below -1); the message names the entry
                and what was expected. The cache is left as it was.
        """
        shape = tuple(self.maps.shape)
        if not isinstance(state, Mapping):
            raise ValueError(
                "the saved saliency cache must be a dict with 'maps' and 'written_epoch' (SaliencyCache."
                f"state_dict()), got {type(state).__name__}"
            )
        for key in ("maps", "written_epoch"):
            if key not in state:
                raise ValueError(
                    f"the saved saliency cache has no {key!r} entry (SaliencyCache.state_dict())"
                )
        maps, written = state["maps"], state["written_epoch"]
        if not isinstance(maps, torch.Tensor) or not maps.is_floating_point():
            raise ValueError(
                f"the saved saliency cache's 'maps' must be a floating-point tensor {shape}, got "
                f"{_describe(maps)}"
            )
        if tuple(maps.shape) != shape:
            raise ValueError(
                f"the saved saliency cache has maps {tuple(maps.shape)}, this one {shape}: "
                "another data set size or resolution"
            )
        if (
            not isinstance(written, torch.Tensor)
            or written.is_floating_point()
            or written.is_complex()
            or written.dtype == torch.bool
            or tuple(written.shape) != (self.num_samples,)
        ):
            raise ValueError(
                f"the saved saliency cache's 'written_epoch' must be a ({self.num_samples},) integer tensor "
                f"(the epoch of each sample's map, -1 for never), got {_describe(written)}"
            )
        if written.numel() and (int(written.min()) < -1 or int(written.max()) > torch.iinfo(torch.int32).max):
            raise ValueError(
                "the saved saliency cache's 'written_epoch' must hold -1 (never written) or epochs >= 0, got "
                f"values in [{int(written.min())}, {int(written.max())}]"
            )
        finite = torch.isfinite(maps).flatten(1).all(dim=1).to(self.maps.device)
        if not state.get("relative", False):
            maps = _relative_old_maps(maps.float(), written)
        self.maps.copy_(maps)
        self.written_epoch.copy_(written)
        dropped = int((~finite).sum())
        if dropped:
            self.maps[~finite] = 0
            self.written_epoch[~finite] = -1
            warnings.warn(
                f"the saved saliency cache holds {dropped} of {self.num_samples} maps with NaN or inf "
                "values: they are dropped (read as never written, rebuilt when the samples are next seen)",
                stacklevel=2,
            )


def _relative_old_maps(maps: torch.Tensor, written: torch.Tensor) -> torch.Tensor:
    """Maps of a cache saved before writes were relative: each written map divided by the mean of its
    nonzero cells, and its zero cells (never measured: the ``P_l`` of a first visit was left at 0 then, the
    map's minimum for good) set to that mean, 1."""
    measured = maps != 0
    count = measured.sum(dim=(1, 2), keepdim=True).clamp_min(1)
    mean = (maps * measured).sum(dim=(1, 2), keepdim=True) / count
    rescale = (written.to(maps.device) >= 0).view(-1, 1, 1) & (mean > 0)
    relative = torch.where(measured, maps / mean.clamp_min(1e-30), 1.0)
    return torch.where(rescale, relative, maps)


def _describe(value: object) -> str:
    """A tensor's dtype and shape, or another value's type name (for error messages)."""
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}"
    return type(value).__name__


def _all_gather_update(
    update: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every rank's ``(indices, means, confidence)``, concatenated (ranks may hold batches of other sizes)."""
    indices, maps, covered = update
    world = dist.get_world_size()
    size = torch.tensor([indices.shape[0]], device=indices.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    largest = int(max(int(s) for s in sizes))

    def gather(tensor: torch.Tensor) -> list[torch.Tensor]:
        padded = torch.zeros((largest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[: tensor.shape[0]] = tensor
        parts = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        return [part[: int(n)] for part, n in zip(parts, sizes)]

    # float32: a dtype every backend (gloo included) gathers.
    gathered = [torch.cat(gather(t)) for t in (indices, maps.float(), covered.float())]
    return gathered[0], gathered[1], gathered[2]
