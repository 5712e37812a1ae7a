"""SalfMix and HybridMix (Choi, Lee, Lee, Jung, Sensors 21(24) 8444, 2021) as timm-style batch transforms.

Every transform is called like ``timm.data.Mixup``::

    x, target = transform(x, target, model=model)

See ``docs/ARCHITECTURE.md`` for the module map (one module per idea of the paper).
"""

import importlib

from . import (
    methods,
    models,  # noqa: F401  (registers preactresnet18/50/101 in timm's model registry)
)
from .cutout import Cutout, SaliencyCutout
from .fmix import FMix
from .hybrid import HybridMix
from .mixing import CutMix, Mixup, ResizeMix, SaliencyMix
from .patches import SelfMixPlan
from .salfmix import RandomSelfMix, SalfMix
from .saliency import gradient_saliency, preserved_model_state
from .static_saliency import fine_grained_saliency
from .targets import mix_targets, one_hot, to_soft_targets

__version__ = "0.1.0"

# Loaded lazily: the per-sample pipeline transforms import torchvision's v2 API (and albumentations), the
# timm training task needs timm.task (timm >= 1.0.23).
_LAZY = {
    **dict.fromkeys(("SalfMixA", "SalfMixV2", "salfmix_compose", "salfmix_image"), "pipeline"),
    "SalfMixTask": "timm_task",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CutMix",
    "Cutout",
    "FMix",
    "HybridMix",
    "Mixup",
    "RandomSelfMix",
    "ResizeMix",
    "SalfMix",
    "SalfMixA",
    "SalfMixTask",
    "SalfMixV2",
    "SaliencyCutout",
    "SaliencyMix",
    "SelfMixPlan",
    "__version__",
    "fine_grained_saliency",
    "gradient_saliency",
    "methods",
    "mix_targets",
    "one_hot",
    "preserved_model_state",
    "salfmix_compose",
    "salfmix_image",
    "to_soft_targets",
]
