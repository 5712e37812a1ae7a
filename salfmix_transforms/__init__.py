"""SalfMix and HybridMix (Choi, Lee, Lee, Jung, Sensors 21(24) 8444, 2021) as timm-style batch transforms.

Every transform is called like ``timm.data.Mixup``::

    x, target = transform(x, target, model=model)

See ``docs/ARCHITECTURE.md`` for the module map (one module per idea of the paper).
"""

from .cutout import Cutout, SaliencyCutout
from .patches import SelfMixPlan
from .salfmix import RandomSelfMix, SalfMix
from .saliency import gradient_saliency, preserved_model_state
from .targets import mix_targets, one_hot, to_soft_targets

__version__ = "0.1.0"

__all__ = [
    "Cutout",
    "RandomSelfMix",
    "SalfMix",
    "SaliencyCutout",
    "SelfMixPlan",
    "__version__",
    "gradient_saliency",
    "mix_targets",
    "one_hot",
    "preserved_model_state",
    "to_soft_targets",
]
