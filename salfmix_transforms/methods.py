"""The method registry: one name per row of the paper's tables, one way to build each transform.

Every front end of the package (``train_timm.py --method``, :mod:`salfmix_transforms.viz` and
:mod:`salfmix_transforms.show`, the benchmarks, the notebooks) builds its transforms here, so a name means
the same transform everywhere::

    from salfmix_transforms import methods

    fn = methods.build("hybridmix-v3", num_classes=10, model=model, steps_per_epoch=len(loader))
    x, target = fn(x, target)

=================  ===========================================================  ===================
name               transform (defaults)                                         paper
=================  ===========================================================  ===================
``baseline``       ``None``: no augmentation (one-hot targets in the loop)      Tables 4-5
``cutout``         ``Cutout(mask_ratio=0.5)``                                   Tables 4-5, 9
``cutout-sal``     ``SaliencyCutout(grid=4, ratio=0.3)``                        Table 9
``salfmix``        ``SalfMix(grid=4, ratio=0.3)``                               Alg. 1, Tables 4-5
``salfmix-nosal``  ``RandomSelfMix(grid=4, ratio=0.3)``                         Table 10
``mixup``          ``Mixup(mixup_alpha=1)``                                     Tables 4-5
``cutmix``         ``CutMix(cutmix_alpha=1)``                                   Tables 4-5
``saliencymix``    ``SaliencyMix(alpha=1)``                                     Tables 4-5
``resizemix``      ``ResizeMix(scope=(0.1, 0.8))``                              (not in the paper)
``fmix``           ``FMix(alpha=1, decay_power=3)``                             (not in the paper)
``hybridmix-v1``   ``HybridMix.v1()``: SalfMix + Mixup                          Alg. 2, Table 2
``hybridmix-v2``   ``HybridMix.v2()``: SalfMix + SaliencyMix                    Alg. 2, Table 2
``hybridmix-v3``   ``HybridMix.v3()``: SalfMix + CutMix                         Alg. 2, Table 2
=================  ===========================================================  ===================

Choices shared by every name: ``label_smoothing=0`` (the paper trains with plain cross-entropy on the
mixed labels) and soft targets over ``num_classes``; every SalfMix-family method (``cutout-sal``,
``salfmix``, ``salfmix-nosal`` and the HybridMix versions) skips one warm-up epoch (Algorithm 2: the
saliency of an untrained network is noise; the ablation too, so that it differs from SalfMix only by the
saliency). That warm-up is the classes' own default (``warmup_epochs=1``), so a name and its class build
the same transform. ``overrides`` replace any constructor argument of the transform, e.g.
``warmup_epochs=0``, ``grid=8`` or ``model=model``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._base import BatchTransform
from ._validation import check_num_classes
from .cutout import Cutout, SaliencyCutout
from .fmix import FMix
from .hybrid import HybridMix
from .mixing import CutMix, Mixup, ResizeMix, SaliencyMix
from .salfmix import RandomSelfMix, SalfMix

__all__ = ["METHODS", "SPECS", "MethodSpec", "build", "spec"]


@dataclass(frozen=True)
class MethodSpec:
    """One name of the registry: how it is built, and what every front end needs to know of it.

    Attributes:
        name: the registry name (``--method`` of the training scripts and of ``show``, the benchmarks'
            rows).
        label: its display name (the pictures' rows, the benchmark tables).
        factory: the class (or preset) that builds it; ``None`` for the baseline.
        defaults: the constructor arguments the name implies (overridable).
        flags: the training scripts' augmentation flags the name stands for (``--method NAME`` sets them as
            defaults: :mod:`salfmix_transforms.flags`), as ``{dest: value}``.
        self_mixing: a SalfMix-family method (grid ``n`` and ratio ``r``, warm-up epoch, ``inplace``).
        needs_model: its saliency comes from the model being trained (``model=``).
        two_image: it mixes pairs of images (soft targets of two classes).
        paper: where the paper has it.
        alpha: for a two-image method switched on by ``--NAME ALPHA`` (on when > 0), the constructor
            argument that ``ALPHA`` sets; ``None`` otherwise. A two-image method that is not one of timm's
            flags gets its ``--NAME`` flag from this (:mod:`salfmix_transforms.flags`).
    """

    name: str
    label: str
    factory: Callable[..., BatchTransform] | None
    defaults: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    self_mixing: bool = False
    needs_model: bool = False
    two_image: bool = False
    paper: str = ""
    alpha: str | None = None

    @property
    def uses_grid(self) -> bool:
        """Whether it pools a saliency map on SalfMix's n x n grid (the grid must fit the image)."""
        return self.self_mixing

    @property
    def hybrid(self) -> bool:
        """SalfMix followed by a two-image method (Algorithm 2)."""
        return self.self_mixing and self.two_image


def _self_mixing(
    name: str, label: str, factory: type, flag: str, paper: str, needs_model: bool = True
) -> MethodSpec:
    """A SalfMix-family name: ``--method NAME`` sets the training scripts' ``flag``."""
    return MethodSpec(
        name, label, factory, flags={flag: True}, self_mixing=True, needs_model=needs_model, paper=paper
    )


def _alpha_method(name: str, label: str, factory: type, alpha: str, paper: str = "") -> MethodSpec:
    """A two-image name switched on by ``--NAME ALPHA``, which sets the constructor argument ``alpha`` (1)."""
    return MethodSpec(
        name, label, factory, {alpha: 1.0}, {name: 1.0}, two_image=True, paper=paper, alpha=alpha
    )


_HYBRID_PARTNERS = {
    "v1": ("mixup", "Mixup"),
    "v2": ("saliencymix", "SaliencyMix"),
    "v3": ("cutmix", "CutMix"),
}

SPECS: tuple[MethodSpec, ...] = (
    MethodSpec("baseline", "Baseline", None, paper="Tables 4-5"),
    MethodSpec("cutout", "Cutout", Cutout, {"mask_ratio": 0.5}, {"cutout": True}, paper="Tables 4-5, 9"),
    _self_mixing("cutout-sal", "Cutout, least-salient patch", SaliencyCutout, "saliency_cutout", "Table 9"),
    _self_mixing("salfmix", "SalfMix", SalfMix, "salfmix", "Alg. 1, Tables 4-5"),
    _self_mixing(
        "salfmix-nosal", "SalfMix without saliency", RandomSelfMix, "random_selfmix", "Table 10", False
    ),
    _alpha_method("mixup", "Mixup", Mixup, "mixup_alpha", "Tables 4-5"),
    _alpha_method("cutmix", "CutMix", CutMix, "cutmix_alpha", "Tables 4-5"),
    _alpha_method("saliencymix", "SaliencyMix", SaliencyMix, "alpha", "Tables 4-5"),
    MethodSpec(
        "resizemix", "ResizeMix", ResizeMix, {"scope": (0.1, 0.8)}, {"resizemix": True}, two_image=True
    ),
    _alpha_method("fmix", "FMix", FMix, "alpha"),
    *(
        MethodSpec(
            f"hybridmix-{version}",
            f"HybridMix {version} (+ {partner_label})",
            getattr(HybridMix, version),
            flags={"salfmix": True, "hybrid": partner},
            self_mixing=True,
            needs_model=True,
            two_image=True,
            paper="Alg. 2, Table 2",
        )
        for version, (partner, partner_label) in _HYBRID_PARTNERS.items()
    ),
)

#: Every registry name, in the order of the paper's tables.
METHODS: tuple[str, ...] = tuple(s.name for s in SPECS)
_BY_NAME = {s.name: s for s in SPECS}


def spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name``.

    Raises:
        ValueError: ``name`` is not a registry name.
    """
    if not isinstance(name, str) or name not in _BY_NAME:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {name!r}")
    return _BY_NAME[name]


def build(name: str, num_classes: int, **overrides: Any) -> BatchTransform | None:
    """The transform of ``name`` with soft targets over ``num_classes`` classes (``None`` for the baseline).

    Args:
        name: a registry name (:data:`METHODS`).
        num_classes: number of classes of the soft targets; ``None``: class masks (B, H, W) come back as
            class masks where the method only moves pixels (``transform.keeps_class_masks``; issue 22), and
            class indices (B,) are refused at call time.
        overrides: constructor arguments that replace the name's defaults (and ``label_smoothing=0``).
            ``model=`` is accepted for every name (so a loop over :data:`METHODS` can pass it) and dropped
            for the methods that take no saliency.

    Raises:
        ValueError: unknown ``name``, a bad ``num_classes``, or an override the transform rejects.
        TypeError: an override that the transform does not take (the message names it and the class).
    """
    method = spec(name)
    num_classes = check_num_classes(num_classes)
    if method.factory is None:
        if overrides:
            raise TypeError(f"the baseline takes no arguments, got {', '.join(sorted(overrides))}")
        return None
    if not method.needs_model:
        overrides.pop("model", None)  # a method without saliency has no use for it (as timm's Mixup)
    kwargs = {"num_classes": num_classes, "label_smoothing": 0.0, **method.defaults, **overrides}
    try:
        return method.factory(**kwargs)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        raise TypeError(f"method {name!r} ({_factory_name(method)}): {error}") from None


def _factory_name(method: MethodSpec) -> str:
    return getattr(method.factory, "__qualname__", str(method.factory))
