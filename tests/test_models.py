"""PreActResNet-18/50/101 (He et al. 2016, CIFAR variant) registered in timm."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import salfmix_transforms.models  # noqa: F401  (registers the models in timm)
from salfmix_transforms.models import PreActBasicBlock, PreActBottleneck, PreActResNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small convolutions: see conftest.py


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_in_timm():
    names = timm.list_models("preactresnet*")
    assert {"preactresnet18", "preactresnet50", "preactresnet101"} <= set(names)
    for name in ("preactresnet18", "preactresnet50", "preactresnet101"):
        assert timm.is_model(name)


@pytest.mark.parametrize("size", [32, 64])
def test_forward_backward_shapes(size):
    torch.manual_seed(0)
    model = timm.create_model("preactresnet18", num_classes=100, width=0.125)
    x = torch.randn(4, 3, size, size, requires_grad=True)
    out = model(x)
    assert out.shape == (4, 100)
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert model.forward_features(torch.randn(2, 3, size, size)).shape == (2, 64, size // 8, size // 8)


def test_parameter_counts_match_the_paper_networks():
    # Full width, 10 classes: ~11.2 M / ~23.5 M / ~42.5 M (the usual CIFAR PreActResNet sizes).
    n18 = _num_params(timm.create_model("preactresnet18", num_classes=10))
    n50 = _num_params(timm.create_model("preactresnet50", num_classes=10))
    n101 = _num_params(timm.create_model("preactresnet101", num_classes=10))
    assert 10.5e6 < n18 < 12e6
    assert 22.5e6 < n50 < 24.5e6
    assert 41.5e6 < n101 < 43.5e6


def test_width_multiplier_shrinks_the_network():
    full = timm.create_model("preactresnet18", num_classes=10)
    half = timm.create_model("preactresnet18", num_classes=10, width=0.5)
    tiny = timm.create_model("preactresnet18", num_classes=10, width=0.125)
    assert _num_params(tiny) < _num_params(half) < _num_params(full)
    # Convolutions scale with width^2: half width is about a quarter of the parameters.
    assert 0.2 < _num_params(half) / _num_params(full) < 0.3
    assert half.num_features == 256 and tiny.num_features == 64
    wide = timm.create_model("preactresnet50", num_classes=10, width=0.25)
    assert wide.num_features == 512  # 128 * 4 (bottleneck expansion)


def test_cifar_stem_no_maxpool_and_block_types():
    m18 = timm.create_model("preactresnet18", width=0.125)
    assert m18.conv1.kernel_size == (3, 3) and m18.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in m18.modules())
    assert all(isinstance(b, PreActBasicBlock) for b in m18.layer1)
    assert [len(s) for s in (m18.layer1, m18.layer2, m18.layer3, m18.layer4)] == [2, 2, 2, 2]
    m101 = timm.create_model("preactresnet101", width=0.125)
    assert all(isinstance(b, PreActBottleneck) for b in m101.layer3)
    assert [len(s) for s in (m101.layer1, m101.layer2, m101.layer3, m101.layer4)] == [3, 4, 23, 3]


def test_pre_activation_identity_path():
    # In a unit without projection the input reaches the output untouched: out = x + F(x).
    block = PreActBasicBlock(8, 8).eval()
    with torch.no_grad():
        for p in (block.conv2.weight,):
            p.zero_()
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(block(x), x)
    down = PreActBasicBlock(8, 16, stride=2)
    assert down.shortcut is not None and down(x).shape == (2, 16, 3, 3)


def test_timm_interface():
    model = timm.create_model("preactresnet18", num_classes=10, width=0.125)
    assert model.num_classes == 10
    assert model.pretrained_cfg["architecture"] == "preactresnet18"
    assert model.default_cfg["input_size"] == (3, 32, 32)
    assert model.pretrained_cfg["classifier"] == "fc" and model.pretrained_cfg["first_conv"] == "conv1"
    assert model.get_classifier() is model.fc
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(7)
    assert model.num_classes == 7 and model(x).shape == (2, 7)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    assert timm.create_model("preactresnet18", num_classes=0, width=0.125)(x).shape == (2, 64)


def test_in_chans_drop_rate_and_features_only():
    model = timm.create_model("preactresnet18", num_classes=5, in_chans=1, drop_rate=0.5, width=0.125)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(model(x), model(x))  # dropout off in eval mode
    features = timm.create_model("preactresnet18", features_only=True, out_indices=(2, 3, 4), width=0.125)
    shapes = [f.shape for f in features(torch.randn(1, 3, 32, 32))]
    assert shapes == [(1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4)]


def test_pretrained_raises_a_clear_error():
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("preactresnet18", pretrained=True)


@pytest.mark.parametrize(
    "kwargs",
    [dict(width=0), dict(width=-1.0), dict(block="wide"), dict(layers=(2, 2, 2)), dict(drop_rate=1.0)],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        PreActResNet(**kwargs)


def test_state_dict_round_trip_through_timm():
    torch.manual_seed(0)
    a = timm.create_model("preactresnet18", num_classes=3, width=0.125).eval()
    b = timm.create_model("preactresnet18", num_classes=3, width=0.125).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x), b(x))
