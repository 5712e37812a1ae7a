"""SalfMix and HybridMix (Choi, Lee, Lee, Jung, Sensors 21(24) 8444, 2021) as timm-style batch transforms."""

from .targets import mix_targets, one_hot, to_soft_targets

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "mix_targets",
    "one_hot",
    "to_soft_targets",
]
