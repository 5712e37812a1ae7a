"""Networks of the SalfMix paper's experiments, registered in timm on import.

``import salfmix_transforms.models`` (or the package, once it imports this module) makes
``timm.create_model("preactresnet18" | "preactresnet50" | "preactresnet101", ...)`` work.
"""

from .preact_resnet import (
    PreActBasicBlock,
    PreActBottleneck,
    PreActResNet,
    preactresnet18,
    preactresnet50,
    preactresnet101,
)

__all__ = [
    "PreActBasicBlock",
    "PreActBottleneck",
    "PreActResNet",
    "preactresnet18",
    "preactresnet50",
    "preactresnet101",
]
