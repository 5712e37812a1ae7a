"""Pre-activation ResNets for small images (CIFAR 32x32, Tiny-ImageNet 64x64), registered in timm.

He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016: every residual unit is
BN -> ReLU -> conv (pre-activation), and the identity path is left untouched. The CIFAR variant that the
SalfMix paper trains (Choi et al., Sensors 2021, Section 4) has a 3x3 stride-1 stem convolution and no
max-pool, four stages of 64-128-256-512 channels (strides 1, 2, 2, 2), basic blocks for depth 18 and
bottlenecks (expansion 4) for depths 50 and 101, then global average pooling and a linear classifier, so the
same network accepts 32x32 and 64x64 inputs.

Choice: a final BN -> ReLU follows the last unit, before pooling, as in He et al. 2016 (the last unit's sum
is otherwise never normalised). This adds 2 x 512 x expansion parameters to the ~11.2 M of PreActResNet-18.

After ``import salfmix_transforms.models`` the networks are available through timm::

    model = timm.create_model("preactresnet18", num_classes=100)
    model = timm.create_model("preactresnet50", num_classes=200, width=0.5)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["PreActBasicBlock", "PreActBottleneck", "PreActResNet"]

_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class PreActBasicBlock(nn.Module):
    """Two 3x3 convolutions, each preceded by BN -> ReLU (He et al. 2016, Fig. 4(e))."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, out_ch)
        # Projection shortcut only where the shape changes; it takes the pre-activated input, as in the paper.
        self.shortcut = _conv1x1(in_ch, out_ch, stride) if stride != 1 or in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convolutions, each preceded by BN -> ReLU; output has ``4 * planes`` channels."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, out_ch)
        self.shortcut = _conv1x1(in_ch, out_ch, stride) if stride != 1 or in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + shortcut


_BLOCKS = {"basic": PreActBasicBlock, "bottleneck": PreActBottleneck}


class PreActResNet(nn.Module):
    """Pre-activation ResNet for small images, with timm's model interface.

    Args:
        layers: number of residual units in each of the four stages, e.g. ``(2, 2, 2, 2)`` for depth 18.
        block: ``"basic"`` or ``"bottleneck"``.
        num_classes: classifier outputs; 0 gives a model without classifier (``forward`` returns features).
        in_chans: input channels.
        width: multiplier of the stage widths 64-128-256-512 (``0.25`` for a CPU-sized network); every
            stage keeps at least one channel.
        drop_rate: dropout before the classifier.
        global_pool: timm pooling type of the head (``"avg"`` by default, ``""`` for none).
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (2, 2, 2, 2),
        block: str = "basic",
        num_classes: int = 1000,
        in_chans: int = 3,
        width: float = 1.0,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got {block!r}")
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ValueError(f"width must be a number > 0, got {width!r}")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be four stage depths >= 1, got {layers!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must lie in [0, 1), got {drop_rate}")
        block_cls = _BLOCKS[block]
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.width = float(width)
        self.grad_checkpointing = False

        stage_planes = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        stem_ch = stage_planes[0]
        self.conv1 = _conv3x3(in_chans, stem_ch)  # 3x3 stride-1 stem, no max-pool (CIFAR variant)
        in_ch = stem_ch
        self.feature_info = [dict(num_chs=stem_ch, reduction=1, module="conv1")]
        stages = []
        reduction = 1
        for i, (planes, depth, stride) in enumerate(zip(stage_planes, layers, (1, 2, 2, 2))):
            units = []
            for j in range(int(depth)):
                units.append(block_cls(in_ch, planes, stride if j == 0 else 1))
                in_ch = planes * block_cls.expansion
            stages.append(nn.Sequential(*units))
            reduction *= stride
            self.feature_info.append(dict(num_chs=in_ch, reduction=reduction, module=f"layer{i + 1}"))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(in_ch)  # final BN -> ReLU of the pre-activation design
        self.num_features = self.head_hidden_size = in_ch
        self.global_pool, self.fc = create_classifier(in_ch, num_classes, pool_type=global_pool)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # --- timm interface -------------------------------------------------------------------------------

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^conv1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map after the final BN -> ReLU: (B, num_features, H / 8, W / 8)."""
        x = self.conv1(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return F.relu(self.bn(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg() -> dict[str, Any]:
    # No weights are published for these networks: url / hf_hub_id stay empty.
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": _CIFAR_MEAN,
        "std": _CIFAR_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
    }


default_cfgs = generate_default_cfgs(
    {name: _cfg() for name in ("preactresnet18", "preactresnet50", "preactresnet101")}
)


def _create(
    variant: str, pretrained: bool, layers: tuple[int, ...], block: str, **kwargs: Any
) -> PreActResNet:
    if pretrained:
        raise ValueError(
            f"{variant} has no pretrained weights (this package ships none and downloads nothing); "
            "create it with pretrained=False"
        )
    return build_model_with_cfg(PreActResNet, variant, pretrained=False, layers=layers, block=block, **kwargs)


@register_model
def preactresnet18(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """PreActResNet-18: basic units (2, 2, 2, 2), ~11.2 M parameters for 10 classes."""
    return _create("preactresnet18", pretrained, (2, 2, 2, 2), "basic", **kwargs)


@register_model
def preactresnet50(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """PreActResNet-50: bottleneck units (3, 4, 6, 3), ~23.5 M parameters for 10 classes."""
    return _create("preactresnet50", pretrained, (3, 4, 6, 3), "bottleneck", **kwargs)


@register_model
def preactresnet101(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """PreActResNet-101: bottleneck units (3, 4, 23, 3), ~42.5 M parameters for 10 classes."""
    return _create("preactresnet101", pretrained, (3, 4, 23, 3), "bottleneck", **kwargs)
