"""Per-sample SalfMix for data loaders, with a saliency map that comes from outside (cached or precomputed).

Two front ends, one implementation:

* :class:`SalfMixA`, an albumentations transform: ``SalfMixA(p=1.0)(image=img, saliency=smap)`` with a
  NumPy image (H, W, C) or (H, W) of any dtype and a map (H, W); inside ``A.Compose`` the map is declared a
  mask target, ``A.Compose([...], additional_targets={"saliency": "mask"})`` (or :func:`salfmix_compose`);
  serializable with ``A.to_dict`` / ``A.from_dict``;
* :class:`SalfMixV2`, a torchvision ``transforms.v2`` transform that reads the map, a ``tv_tensors.Mask``,
  from the sample dict:
  ``SalfMixV2(p=1.0)({"image": tv_tensors.Image(img), "saliency": tv_tensors.Mask(smap), "label": 3})``.

Both decide *where* the patches go with :meth:`salfmix_transforms.SalfMix.plan` (Algorithm 1, lines 1-5) on
a batch of one and move the pixels with :func:`salfmix_transforms.patches.copy_patches` (line 6), so the
same map and the same ``torch.Generator`` state give the same pixels as the batch transform
``SalfMix()(x[None], target, saliency=map[None], generator=g)``. Pixels are only copied, never
re-computed, so the image's dtype (``uint8`` included) and values are kept exactly.

Choices: masks (albumentations ``mask``/``masks``, torchvision ``tv_tensors.Mask``) get the same patch copy
as the image, so a segmentation label stays aligned with its pixels; bounding boxes and key points are
returned unchanged (self-mixing moves no object); the saliency map itself is returned unchanged (it is the
input of the decision, not an image).

Choice: the map must follow every geometric transform placed before SalfMix (flip, crop, resize), else
SalfMix decides on a stale map and copies the wrong patch. torchvision moves a ``tv_tensors.Mask`` with the
image (nearest interpolation, dtype kept, padding 0, i.e. least salient) but leaves a plain tensor or array
where it is; albumentations moves a target only when ``A.Compose`` declares it. So SalfMixV2 accepts only a
``tv_tensors.Mask`` and SalfMixA, inside an ``A.Compose``, only a map declared as a ``mask`` target: anything
else is an error that says how to pass the map, never a silently stale map.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ._validation import check_generator, check_probability
from .patches import SelfMixPlan, copy_patches
from .salfmix import SalfMix

try:  # optional: only SalfMixA needs it (pip install "salfmix-transforms[albumentations]")
    import albumentations as A
except ImportError:  # pragma: no cover - exercised where albumentations is not installed
    A = None

__all__ = ["SalfMixA", "SalfMixV2", "salfmix_compose", "salfmix_image"]


# -- shared core ---------------------------------------------------------------------------------------


def _check_key(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str, got {value!r}")
    return value


def _configure(transform: Any, salfmix: SalfMix, saliency_key: object, generator: object) -> None:
    """What both front ends keep: the checked ``salfmix`` (its grid, ratio and pool also as attributes, which
    albumentations serializes), the map's key and the generator."""
    transform._salfmix = salfmix
    transform.grid, transform.ratio, transform.pool = salfmix.grid, salfmix.ratio, salfmix.pool
    transform.saliency_key = _check_key(saliency_key, "saliency_key")
    transform.generator = check_generator(generator)


def _saliency_tensor(saliency: object, height: int, width: int, name: str) -> torch.Tensor:
    """A per-sample map as a (1, H, W) tensor; (H, W), (H, W, 1) and (1, H, W) are accepted."""
    if isinstance(saliency, np.ndarray):
        if not (np.issubdtype(saliency.dtype, np.floating) or np.issubdtype(saliency.dtype, np.integer)):
            raise TypeError(f"{name} must hold real numbers, got dtype {saliency.dtype}")
        saliency = torch.from_numpy(np.ascontiguousarray(saliency))
    elif not isinstance(saliency, torch.Tensor):
        raise TypeError(
            f"{name} must be a numpy array or torch.Tensor of shape (H, W), got {type(saliency).__name__}"
        )
    shape = tuple(saliency.shape)
    if shape == (height, width, 1):
        saliency = saliency[..., 0]
    elif shape == (1, height, width):
        saliency = saliency[0]
    if tuple(saliency.shape) != (height, width):
        raise ValueError(f"{name} must have shape (H, W) = {(height, width)} matching the image, got {shape}")
    if saliency.is_complex() or saliency.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {saliency.dtype}")
    return torch.as_tensor(saliency).detach().unsqueeze(0)


def _check_mask_type(saliency: object, key: str) -> None:
    """SalfMixV2's map must be a ``tv_tensors.Mask``, the kind v2's geometric transforms move."""
    if not isinstance(saliency, tv_tensors.Mask):
        raise TypeError(
            f"SalfMixV2 reads the saliency map {key!r} as a tv_tensors.Mask, got {type(saliency).__name__}: "
            f"wrap it as tv_tensors.Mask(map) so that v2's geometric transforms (flip, crop, resize) move it "
            f"with the image; they leave a plain tensor or array where it is, and SalfMix would decide on a "
            f"stale map"
        )


def _saliency_mask(saliency: tv_tensors.Mask, height: int, width: int, key: str) -> torch.Tensor:
    """SalfMixV2's map, a ``tv_tensors.Mask`` (H, W) or (1, H, W), as a plain (1, H, W) tensor."""
    shape = tuple(saliency.shape)
    if shape not in ((height, width), (1, height, width)):
        raise ValueError(
            f"{key} must be a tv_tensors.Mask of shape (H, W) or (1, H, W) with (H, W) = {(height, width)} "
            f"matching the image, got {shape}"
        )
    return _saliency_tensor(saliency.as_subclass(torch.Tensor), height, width, key)


def _copy_chw(image: torch.Tensor, plan: SelfMixPlan) -> torch.Tensor:
    """Algorithm 1, line 6 on one image (C, H, W) or (H, W): the batch code on a batch of one."""
    if image.dim() == 2:
        return copy_patches(image[None, None], plan)[0, 0]
    return copy_patches(image.unsqueeze(0), plan)[0]


def _window_corners(plan: SelfMixPlan) -> tuple[int, int, int, int] | None:
    """``(src_top, src_left, dst_top, dst_left)`` of a plan for one image, ``None`` if it is not applied."""
    if not bool(plan.applied[0]):
        return None
    return tuple(int(v[0]) for v in (plan.src_top, plan.src_left, plan.dst_top, plan.dst_left))


def _copy_hwc(image: np.ndarray, plan: SelfMixPlan) -> np.ndarray:
    """Algorithm 1, line 6 on one NumPy image (H, W, ...) of any dtype; a new array, values only copied.

    NumPy slicing, not torch: every NumPy dtype works (uint16, uint32, bool...), and ``P_m`` is read from
    the original image before ``P_l`` is written (the copy of the source window is taken first).
    """
    out = np.array(image, copy=True)
    corners = _window_corners(plan)
    if corners is not None:
        src_top, src_left, dst_top, dst_left = corners
        ph, pw = plan.patch_height, plan.patch_width
        out[dst_top : dst_top + ph, dst_left : dst_left + pw] = image[
            src_top : src_top + ph, src_left : src_left + pw
        ]
    return out


def _copy_pil(image: PIL.Image.Image, plan: SelfMixPlan) -> PIL.Image.Image:
    """Algorithm 1, line 6 on a PIL image of any mode ('P' keeps its palette, 'I;16', '1', 'F'...)."""
    out = image.copy()
    corners = _window_corners(plan)
    if corners is not None:
        src_top, src_left, dst_top, dst_left = corners
        patch = image.crop((src_left, src_top, src_left + plan.patch_width, src_top + plan.patch_height))
        out.paste(patch, (dst_left, dst_top))
    return out


def salfmix_image(
    image: np.ndarray | torch.Tensor,
    saliency: np.ndarray | torch.Tensor,
    *,
    grid: int = 4,
    ratio: float = 0.3,
    pool: bool = True,
    channels_last: bool | None = None,
    generator: torch.Generator | None = None,
) -> np.ndarray | torch.Tensor:
    """SalfMix on one image (always applied): the function behind :class:`SalfMixA` and :class:`SalfMixV2`.

    Args:
        image: a NumPy array (H, W, C) or (H, W), or a tensor (C, H, W) or (H, W); any dtype.
        saliency: its map (H, W).
        channels_last: layout of a 3-D ``image``; ``None`` means HWC for NumPy arrays, CHW for tensors.
        generator: the ``torch.Generator`` of every random choice (the global RNG when ``None``).

    Returns:
        A new image of the same type, shape and dtype.
    """
    if channels_last is None:
        channels_last = isinstance(image, np.ndarray)
    if isinstance(image, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(image))
    elif isinstance(image, torch.Tensor):
        tensor = image
    else:
        raise TypeError(f"image must be a numpy array or torch.Tensor, got {type(image).__name__}")
    if tensor.dim() not in (2, 3):
        raise ValueError(
            f"image must be one image (H, W, C), (C, H, W) or (H, W), got shape {tuple(tensor.shape)}"
        )
    if tensor.dim() == 3 and channels_last:
        tensor = tensor.permute(2, 0, 1)
    height, width = tensor.shape[-2:]
    plan = SalfMix(grid, ratio, 1.0, pool=pool).plan(
        _saliency_tensor(saliency, height, width, "saliency"), check_generator(generator)
    )
    out = _copy_chw(tensor, plan)
    if out.dim() == 3 and channels_last:
        out = out.permute(1, 2, 0)
    return np.ascontiguousarray(out.numpy()) if isinstance(image, np.ndarray) else out


# -- albumentations ------------------------------------------------------------------------------------


class _AlbumentationsMissing:
    """Stands in for ``A.DualTransform`` when albumentations is not installed (SalfMixV2 still works)."""


class SalfMixA(A.DualTransform if A is not None else _AlbumentationsMissing):
    """SalfMix as an albumentations 2.x transform, with the saliency map passed as an extra target.

    Example::

        t = SalfMixA(grid=4, ratio=0.3, p=0.5)
        out = t(image=img, saliency=smap)["image"]          # img (H, W, C) any dtype, smap (H, W)
        pipe = A.Compose([A.HorizontalFlip(), SalfMixA(p=0.5)], additional_targets={"saliency": "mask"})
        out = pipe(image=img, saliency=smap)                 # the flip moves the map with the image
        pipe = salfmix_compose([A.HorizontalFlip(), SalfMixA(p=0.5)])   # the same Compose

    Declaring the map as a ``mask`` target in ``A.Compose`` makes geometric transforms placed *before*
    SalfMixA move it with the image (nearest interpolation for resizes, ``fill_mask`` for padding); SalfMixA
    itself returns it unchanged.

    Choice: inside an ``A.Compose`` (albumentations calls :meth:`set_processors` on every transform of a
    Compose it builds, and :meth:`add_targets` with its ``additional_targets``), a map not declared as a
    ``mask`` target is refused with a ``ValueError`` at every call, whatever ``p``: albumentations would leave
    it where it was and SalfMix would decide on a stale map. The check runs at the call, not when the Compose
    is built, because an enclosing Compose (or ``Compose.add_targets``) may still declare it. Called on its
    own (no Compose), nothing moves the map before SalfMixA and any (H, W) array is accepted; an instance
    that was put in a Compose keeps the Compose's rule.

    Args:
        grid, ratio, pool: as in :class:`salfmix_transforms.SalfMix` (``n``, ``r``, pooling).
        p: probability of applying the transform (albumentations' own draw).
        saliency_key: name of the target that holds the map (H, W).
        generator: a ``torch.Generator`` for the patch choices; without it, a seed is drawn from the
            transform's albumentations RNG (mixed with ``torch.initial_seed()``, which differs between
            DataLoader workers), so ``A.Compose(..., seed=...)`` / ``set_random_seed`` with a fixed torch seed
            make runs reproducible. Not serialized. A generator given here is copied into every DataLoader
            worker, which then draw the same patches: leave it ``None`` with several workers.
    """

    def __init__(
        self,
        grid: int = 4,
        ratio: float = 0.3,
        pool: bool = True,
        saliency_key: str = "saliency",
        p: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        if A is None:
            raise ImportError(
                'SalfMixA needs albumentations: pip install "salfmix-transforms[albumentations]"'
            )
        super().__init__(p=check_probability(p, "p"))
        _configure(self, SalfMix(grid, ratio, 1.0, pool=pool), saliency_key, generator)
        self._in_compose = False  # set by A.Compose (set_processors / add_targets); not serialized
        self._saliency_target: str | None = None  # what A.Compose declared the map as ("mask" is required)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("grid", "ratio", "pool", "saliency_key")

    @property
    def targets_as_params(self) -> list[str]:
        return [self.saliency_key]

    def add_targets(self, additional_targets: dict[str, str]) -> None:
        # A.Compose passes its additional_targets down (only when there are some): remember what the map was
        # declared as. The map is read, never transformed: keep it out of the per-target functions even when
        # it is declared as a mask (so that the geometric transforms before us move it).
        self._in_compose = True
        if self.saliency_key in additional_targets:
            self._saliency_target = additional_targets[self.saliency_key]
        super().add_targets({k: v for k, v in additional_targets.items() if k != self.saliency_key})

    def set_processors(self, processors: dict[str, Any]) -> None:
        # A.Compose calls this on every transform it holds (nested ones included) when it is built: the one
        # hook that tells us we run inside a Compose even when it declares no additional_targets.
        super().set_processors(processors)
        self._in_compose = True

    def _check_map_is_declared(self) -> None:
        if not self._in_compose or self._saliency_target == "mask":
            return
        key = self.saliency_key
        declared = (
            "does not declare it as a mask target"
            if self._saliency_target is None
            else f"declares it as {self._saliency_target!r}, not as a mask target"
        )
        raise ValueError(
            f"SalfMixA reads the saliency map {key!r} inside an A.Compose that {declared}, so the geometric "
            f"transforms before SalfMixA (flip, crop, resize) do not move the map with the image and SalfMix "
            f"would decide on a stale map: pass additional_targets={{{key!r}: 'mask'}} to A.Compose (or "
            f"build it with salfmix_compose(transforms, saliency_key={key!r}))"
        )

    def __call__(self, *args: Any, force_apply: bool = False, **kwargs: Any) -> Any:
        self._check_map_is_declared()  # before albumentations' own p draw: the error must not be random
        return super().__call__(*args, force_apply=force_apply, **kwargs)

    def _torch_generator(self) -> torch.Generator:
        if self.generator is not None:
            return self.generator
        # albumentations' own RNG (seeded by A.Compose(seed=...)), mixed with torch.initial_seed(), which a
        # DataLoader sets differently in every worker: workers holding copies of the same RNG state do not
        # draw the same patches.
        seed = (int(self.random_generator.integers(0, 2**62)) + torch.initial_seed()) % (2**63)
        return torch.Generator().manual_seed(seed)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        saliency = _saliency_tensor(data[self.saliency_key], height, width, self.saliency_key)
        return {"plan": self._salfmix.plan(saliency, self._torch_generator())}

    def apply(self, img: np.ndarray, plan: SelfMixPlan, **params: Any) -> np.ndarray:
        return _copy_hwc(img, plan)

    def apply_to_mask(self, mask: np.ndarray, plan: SelfMixPlan, **params: Any) -> np.ndarray:
        return _copy_hwc(mask, plan)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes

    def apply_to_keypoints(self, keypoints: np.ndarray, **params: Any) -> np.ndarray:
        return keypoints


def salfmix_compose(transforms: Any, saliency_key: str = "saliency", **compose_kwargs: Any) -> A.Compose:
    """``A.Compose(transforms, ...)`` with the saliency map declared as a mask target.

    Example::

        pipe = salfmix_compose([A.RandomResizedCrop((224, 224)), A.HorizontalFlip(), SalfMixA(p=0.5)])
        out = pipe(image=img, saliency=smap)   # the crop and the flip move the map with the image

    Args:
        transforms: the transforms of the Compose (SalfMixA after the geometric ones).
        saliency_key: the key of the map, the ``saliency_key`` of the SalfMixA transforms it holds.
        compose_kwargs: the other arguments of ``A.Compose`` (``seed``, ``strict``, ``bbox_params``, ...); an
            ``additional_targets`` given here is kept and ``{saliency_key: "mask"}`` added to it.

    Returns:
        The ``A.Compose``; ``A.to_dict`` / ``A.from_dict`` keep its ``additional_targets``.
    """
    if A is None:
        raise ImportError(
            'salfmix_compose needs albumentations: pip install "salfmix-transforms[albumentations]"'
        )
    key = _check_key(saliency_key, "saliency_key")
    targets = dict(compose_kwargs.pop("additional_targets", None) or {})
    declared = targets.setdefault(key, "mask")
    if declared != "mask":
        raise ValueError(
            f"additional_targets declares the saliency map {key!r} as {declared!r}; it must be a 'mask' "
            f"target so that geometric transforms move it with the image and colour transforms leave it alone"
        )
    return A.Compose(transforms, additional_targets=targets, **compose_kwargs)


# -- torchvision v2 ------------------------------------------------------------------------------------


class SalfMixV2(v2.Transform):
    """SalfMix as a torchvision ``transforms.v2`` transform; the map is read from the sample dict.

    Example::

        t = SalfMixV2(grid=4, ratio=0.3, p=0.5)
        sample = {"image": tv_tensors.Image(img), "saliency": tv_tensors.Mask(smap), "label": 3}
        out = t(sample)                                      # img (C, H, W), smap (H, W)
        pipe = v2.Compose([v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(), t])
        out = pipe(sample)                                   # the crop and the flip move the map too

    Every ``tv_tensors.Image`` (or, when there is none, the first plain tensor, torchvision's rule) and every
    ``PIL.Image`` and ``tv_tensors.Mask`` of the sample gets the same patch copy; everything else, the map
    included, comes back unchanged.

    Choice: the map must be a ``tv_tensors.Mask`` (H, W) or (1, H, W) of a real dtype; a plain tensor, an
    array or anything else is a ``TypeError``, even when no geometric transform precedes SalfMixV2: v2's
    geometric transforms leave those where they are (only the image moves), so SalfMix would decide on a
    stale map. A ``tv_tensors.Mask`` moves with the image: nearest interpolation, its dtype kept, padding 0
    (least salient).

    Args:
        grid, ratio, pool: as in :class:`salfmix_transforms.SalfMix` (``n``, ``r``, pooling).
        p: probability of applying the transform. It is SalfMix's ``prob``, drawn from the same generator
            after the patch choices, so ``SalfMixV2(p=p)`` gives the pixels of ``SalfMix(prob=p)`` on a batch
            of one for the same generator state.
        saliency_key: key of the sample dict that holds the map, a ``tv_tensors.Mask`` (H, W) or (1, H, W).
        generator: a ``torch.Generator`` for every random choice; PyTorch's global RNG when ``None``
            (``torch.manual_seed`` reproduces a run, and a DataLoader seeds it differently in every worker). A
            generator given here is copied into every worker, which then draw the same patches: leave it
            ``None`` with several workers.
    """

    def __init__(
        self,
        grid: int = 4,
        ratio: float = 0.3,
        p: float = 0.5,
        *,
        pool: bool = True,
        saliency_key: str = "saliency",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _configure(self, SalfMix(grid, ratio, check_probability(p, "p"), pool=pool), saliency_key, generator)
        self.p = self._salfmix.prob

    @staticmethod
    def _needs_copy(flat_inputs: list[Any]) -> list[bool]:
        """Which flattened inputs get the patch copy: torchvision's rule for images, with public functions.

        Every ``tv_tensors.Image``, ``tv_tensors.Mask`` and ``PIL.Image`` does. A plain tensor is the image
        only when the sample holds no ``tv_tensors.Image``, ``tv_tensors.Video`` or ``PIL.Image``, and then
        only the first one (in ``tree_flatten`` order): the rule of ``v2.Transform.forward``, which
        torchvision keeps in a protected method, written out here so that no private API is called.
        """
        plain_is_image = not v2.has_any(flat_inputs, tv_tensors.Image, tv_tensors.Video, PIL.Image.Image)
        needs = []
        for inpt in flat_inputs:
            if TF.is_pure_tensor(inpt):
                needs.append(plain_is_image)
                plain_is_image = False
            else:
                needs.append(isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask, PIL.Image.Image)))
        return needs

    def _image_size(self, flat_inputs: list[Any], needs_transform: list[bool]) -> tuple[int, int]:
        for inpt, needed in zip(flat_inputs, needs_transform):
            if needed and isinstance(inpt, PIL.Image.Image):
                return inpt.height, inpt.width
            if needed and isinstance(inpt, torch.Tensor) and not isinstance(inpt, tv_tensors.Mask):
                if inpt.dim() != 3:
                    raise ValueError(f"image must be one image (C, H, W), got shape {tuple(inpt.shape)}")
                return int(inpt.shape[-2]), int(inpt.shape[-1])
        raise ValueError(
            "SalfMixV2 found no image in the sample: pass a tv_tensors.Image, a PIL image or a "
            "(C, H, W) tensor"
        )

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        if not isinstance(sample, Mapping) or self.saliency_key not in sample:
            raise ValueError(
                f"SalfMixV2 reads the saliency map from the sample: pass a dict with the key "
                f"{self.saliency_key!r}, e.g. "
                f"{{'image': tv_tensors.Image(img), {self.saliency_key!r}: tv_tensors.Mask(map)}}"
            )
        _check_mask_type(sample[self.saliency_key], self.saliency_key)
        rest = {key: value for key, value in sample.items() if key != self.saliency_key}
        flat_inputs, spec = tree_flatten(rest)
        needs_transform = self._needs_copy(flat_inputs)
        height, width = self._image_size(flat_inputs, needs_transform)
        saliency = _saliency_mask(sample[self.saliency_key], height, width, self.saliency_key)
        params = {"plan": self._salfmix.plan(saliency, self.generator)}
        flat_outputs = [
            self.transform(inpt, params) if needed else inpt
            for inpt, needed in zip(flat_inputs, needs_transform)
        ]
        out = tree_unflatten(flat_outputs, spec)
        return {key: sample[key] if key == self.saliency_key else out[key] for key in sample}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        plan = params["plan"]
        if isinstance(inpt, PIL.Image.Image):
            return _copy_pil(inpt, plan)
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return tv_tensors.wrap(_copy_chw(inpt.as_subclass(torch.Tensor), plan), like=inpt)
        if TF.is_pure_tensor(inpt):
            return _copy_chw(inpt, plan)
        return inpt  # bounding boxes, key points, videos: unchanged
