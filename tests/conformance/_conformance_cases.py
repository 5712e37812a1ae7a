"""Every batch transform of the package as one "case", built and called the same way by the conformance tests.

The conformance tests state, as properties, the contracts that torchvision's ``MixUp``/``CutMix`` and kornia's
mix augmentations document (and test) for their own transforms, and check them on every transform here. A
case builds its transform with ``num_classes=NUM_CLASSES`` and no label smoothing (so that the returned
targets are exactly the one-hot rows, or mixes of two of them), and calls it with a saliency map when the
transform needs one. The tests draw their images and one-hot targets with ``images`` and ``one_hot`` of
``tests/_batch_helpers.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from salfmix_transforms import (
    CutMix,
    Cutout,
    FMix,
    HybridMix,
    Mixup,
    RandomSelfMix,
    ResizeMix,
    SalfMix,
    SaliencyCutout,
    SaliencyMix,
)
from salfmix_transforms._base import BatchTransform
from salfmix_transforms.fmix import FMixMethod

NUM_CLASSES = 8  # > the largest batch of the tests, so that labels arange(B) are distinct
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INT_DTYPES = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}
INT_DTYPES[torch.float64] = torch.int64
FILL = -3.0  # Cutout's fill value in the cases: never an input value (inputs lie in [0, 1))


@dataclass(frozen=True)
class Case:
    """One transform configuration.

    Attributes:
        name: the test id.
        build: ``build(prob, mode, **kwargs)`` -> the transform (``mode`` is ignored by single-image ones).
        kind: ``"two"`` (a two-image method), ``"hybrid"`` (HybridMix) or ``"single"`` (label-preserving).
        copy_only: every output pixel is a copy of an input pixel (or ``FILL``): no arithmetic on values.
        needs_map: the call needs ``saliency=`` (or a ``model=``): SalfMix and its relatives.
        static_map: the transform computes the fine-grained static saliency of the images itself (so their
            channels must be 1 or 3).
        lam_pinned: the transform draws its mixing weight with ``mixing.sample_beta`` (pinning it to 1
            makes it the identity).
    """

    name: str
    build: Callable[..., BatchTransform]
    kind: str
    copy_only: bool
    needs_map: bool = False
    static_map: bool = False
    lam_pinned: bool = False

    def __repr__(self) -> str:
        return self.name

    def call(
        self,
        fn: BatchTransform,
        x: torch.Tensor,
        target: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kwargs = {"saliency": saliency_of(x)} if self.needs_map else {}
        return fn(x, target, generator=generator, **kwargs)


def saliency_of(x: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in saliency map (B, H, W) of images (B, C, H, W): the channel mean."""
    return x.detach().float().mean(dim=1)


def _two(cls: Callable[..., BatchTransform], *args: object, **fixed: object) -> Callable[..., BatchTransform]:
    def build(prob: float = 1.0, mode: str = "batch", **kwargs: object) -> BatchTransform:
        options = {"label_smoothing": 0.0, "num_classes": NUM_CLASSES, **fixed, **kwargs}
        return cls(*args, prob=prob, mode=mode, **options)

    return build


def _hybrid(preset: str | None, **fixed: object) -> Callable[..., BatchTransform]:
    def build(prob: float = 1.0, mode: str = "batch", **kwargs: object) -> BatchTransform:
        options = {
            "num_classes": NUM_CLASSES,
            "label_smoothing": 0.0,
            "warmup_epochs": 0,
            "salfmix_grid": 2,
            "salfmix_ratio": 0.5,
            **fixed,
            **kwargs,
        }
        if preset is None:
            return HybridMix(prob=prob, mode=mode, **options)
        return getattr(HybridMix, preset)(prob=prob, mode=mode, **options)

    return build


def _single(
    cls: Callable[..., BatchTransform], *args: object, **fixed: object
) -> Callable[..., BatchTransform]:
    def build(prob: float = 1.0, mode: str = "batch", **kwargs: object) -> BatchTransform:
        return cls(*args, prob=prob, **{"num_classes": NUM_CLASSES, **fixed, **kwargs})

    return build


CASES = (
    Case("Mixup", _two(Mixup, mixup_alpha=1.0), "two", copy_only=False, lam_pinned=True),
    Case("CutMix", _two(CutMix, 1.0), "two", copy_only=True, lam_pinned=True),
    Case("CutMix-minmax", _two(CutMix, cutmix_minmax=(0.2, 0.8)), "two", copy_only=True),
    Case("Mixup-CutMix", _two(Mixup, mixup_alpha=1.0, cutmix_alpha=1.0), "two", False, lam_pinned=True),
    Case("SaliencyMix", _two(SaliencyMix, 1.0), "two", copy_only=True, static_map=True, lam_pinned=True),
    Case(
        "SaliencyMix-ref",
        _two(SaliencyMix, 1.0, per_sample=False),
        "two",
        copy_only=True,
        static_map=True,
        lam_pinned=True,
    ),
    Case("ResizeMix", _two(ResizeMix, (0.1, 0.8)), "two", copy_only=False),
    Case("ResizeMix-nearest", _two(ResizeMix, (0.1, 0.8), interpolation="nearest"), "two", copy_only=True),
    Case("FMix", _two(FMix, 1.0), "two", copy_only=True),
    Case("FMix-soft", _two(FMix, 1.0, max_soft=0.1), "two", copy_only=False),
    Case("HybridMix.v1", _hybrid("v1"), "hybrid", copy_only=False, needs_map=True, lam_pinned=True),
    Case(
        "HybridMix.v2",
        _hybrid("v2"),
        "hybrid",
        copy_only=True,
        needs_map=True,
        static_map=True,
        lam_pinned=True,
    ),
    Case("HybridMix.v3", _hybrid("v3"), "hybrid", copy_only=True, needs_map=True, lam_pinned=True),
    Case(
        "HybridMix-resizemix",
        _hybrid(None, mixup_alpha=0.0, resizemix_scope=(0.2, 0.6)),
        "hybrid",
        copy_only=False,
        needs_map=True,
    ),
    Case(
        "HybridMix-fmix",
        _hybrid(None, mixup_alpha=0.0, partners=(FMixMethod(1.0),)),
        "hybrid",
        copy_only=True,
        needs_map=True,
    ),
    Case("SalfMix", _single(SalfMix, 2, 0.5), "single", copy_only=True, needs_map=True),
    Case("RandomSelfMix", _single(RandomSelfMix, 2, 0.5), "single", copy_only=True),
    Case("SaliencyCutout", _single(SaliencyCutout, 2, 0.5, fill=FILL), "single", True, needs_map=True),
    Case("Cutout", _single(Cutout, 0.5, fill=FILL), "single", copy_only=True),
)
TWO_IMAGE = tuple(case for case in CASES if case.kind != "single")
SINGLE = tuple(case for case in CASES if case.kind == "single")


def hybrid_without_salfmix(case: Case, prob: float, mode: str) -> BatchTransform:
    """A two-image case's transform; a HybridMix with SalfMix off (its pixels then come from the mix only)."""
    if case.kind == "hybrid":
        return case.build(prob=prob, mode=mode, salfmix_prob=0.0)
    return case.build(prob=prob, mode=mode)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of a floating tensor as integers of the same width, for byte-identity checks."""
    return t.contiguous().view(INT_DTYPES[t.dtype])


def channels_ok(case: Case, channels: int) -> bool:
    """Whether the case accepts images with this many channels (the static saliency needs 1 or 3)."""
    return not case.static_map or channels in (1, 3)
