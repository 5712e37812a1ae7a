"""The device / dtype matrix (issue 22): every registry method, the saliency pass, the cache, dense targets
and timm's task route on the tensors' own device.

Each test takes the ``device`` fixture (and some ``dtype``), set by ``--device`` / ``--dtype`` (see
``conftest.py``): CPU by default, so CI runs them as they are; ``pytest --device cuda`` (or ``all``) runs
them on a GPU, where they check what the CPU cannot: nothing falls back to the host, outputs stay on the
device, and the device's results equal the CPU's where the computation is deterministic.
"""

from __future__ import annotations

import pytest
import torch
from _batch_helpers import images, tiny_classifier
from timm.loss import SoftTargetCrossEntropy

from salfmix_transforms import HybridMix, SalfMix, methods
from salfmix_transforms.patches import pool_saliency
from salfmix_transforms.saliency import gradient_saliency, saliency_from_gradient
from salfmix_transforms.saliency_cache import SaliencyCache, source_coordinates
from salfmix_transforms.timm_task import SalfMixTask

K = 5
B, H, W = 4, 16, 16
TRANSFORMS = [name for name in methods.METHODS if name != "baseline"]


def _past_warmup(fn):
    """The transform as it runs after Algorithm 2's warm-up epoch."""
    fn.set_epoch(1)
    return fn


def _batch(device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    x = images(B, 3, H, W, dtype=dtype).to(device)
    y = torch.arange(B, device=device) % K
    return x, y


@pytest.mark.parametrize("name", TRANSFORMS)
def test_every_registry_method_keeps_the_batch_on_its_device_and_dtype(device, dtype, name):
    x, y = _batch(device, dtype)
    model = tiny_classifier(K).to(device, dtype)  # the saliency pass runs the model in the batch's dtype
    fn = _past_warmup(methods.build(name, K, model=model))
    out, target = fn(x.clone(), y)
    assert out.device == x.device and out.dtype == dtype and out.shape == x.shape
    assert target.device == x.device and target.shape == (B, K)
    assert torch.isfinite(out.float()).all() and torch.isfinite(target.float()).all()
    torch.testing.assert_close(target.double().sum(1), torch.ones(B, dtype=torch.float64, device=device))
    assert not torch.equal(out, x), f"{name} changed nothing"


def test_salfmix_copies_the_most_salient_patch_on_the_device(device):
    # A map whose most salient cell is the top-left and least salient the bottom-right (grid 2, r = 0.5):
    # the 8 x 8 patch over the top-left cell is copied over the bottom-right one, pixel for pixel.
    x, y = _batch(device)
    saliency = torch.zeros(B, H, W, device=device)
    saliency[:, :8, :8] = 2.0
    saliency[:, 8:, 8:] = -1.0
    out, target = _past_warmup(SalfMix(num_classes=K, grid=2, ratio=0.5))(x.clone(), y, saliency=saliency)
    assert out.device == x.device
    assert torch.equal(out[:, :, 8:, 8:], x[:, :, :8, :8])
    assert torch.equal(out[:, :, :8, :], x[:, :, :8, :])
    assert torch.equal(target.argmax(1), y) and torch.equal(target.sum(1), torch.ones(B, device=device))


def test_gradient_saliency_on_the_device_equals_the_cpu_map(device):
    x, y = _batch(torch.device("cpu"))
    model = tiny_classifier(K, batchnorm=True)
    expected = gradient_saliency(model, x, y)
    on_device = gradient_saliency(model.to(device), x.to(device), y.to(device))
    assert on_device.device == x.to(device).device and on_device.dtype == torch.float32
    torch.testing.assert_close(on_device.cpu(), expected, rtol=1e-4, atol=1e-7)
    pooled = pool_saliency(on_device, 4, 4)
    torch.testing.assert_close(pooled.cpu(), pool_saliency(expected, 4, 4), rtol=1e-4, atol=1e-7)


def test_saliency_cache_writes_and_reads_on_the_device_as_on_the_cpu(device):
    maps = torch.rand(B, H, W, generator=torch.Generator().manual_seed(1))
    index = torch.tensor([3, 0, 5, 1])
    coords = source_coordinates(H, W).flip(-1).expand(B, -1, -1, -1)  # a horizontally flipped view
    results = []
    for where in (torch.device("cpu"), device):
        cache = SaliencyCache(8, device=where)
        cache.write(index.to(where), coords.to(where), maps.to(where), epoch=0)
        read = cache.read(index.to(where), coords.to(where))
        assert read.device == cache.maps.device
        results.append(read.cpu())
    torch.testing.assert_close(results[1], results[0])


def test_input_gradient_map_of_the_training_step_stays_on_the_device(device):
    x, y = _batch(device)
    x.requires_grad_(True)
    model = tiny_classifier(K).to(device)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    saliency = saliency_from_gradient(x.grad)
    assert saliency.device == x.device and saliency.shape == (B, H, W)


@pytest.mark.parametrize("name", ["salfmix", "cutout", "cutmix", "hybridmix-v3"])
def test_dense_class_masks_follow_the_pixels_on_the_device(device, name):
    x, _ = _batch(device)
    mask = torch.randint(0, K, (B, H, W), generator=torch.Generator().manual_seed(2)).to(device)
    model = torch.nn.Conv2d(3, K, 1).to(device)  # dense logits for the saliency pass
    fn = _past_warmup(methods.build(name, K, model=model))
    out, target = fn(x.clone(), mask)
    assert out.device == x.device and target.device == x.device
    assert target.shape == (B, K, H, W)  # soft dense targets over the registry's num_classes
    per_pixel = target.sum(1)
    ignored = per_pixel == 0  # Cutout's filled pixels become ignore_index: no class at all
    torch.testing.assert_close(per_pixel[~ignored], torch.ones_like(per_pixel[~ignored]))
    assert ignored.any() == (name == "cutout")


def test_timm_task_trains_on_the_device(device):
    model = tiny_classifier(K).to(device)
    transform = HybridMix.v3(num_classes=K, steps_per_epoch=1)
    task = SalfMixTask(transform, model=model, criterion=SoftTargetCrossEntropy(), verbose=False)
    for _ in range(2):  # the warm-up step, then HybridMix v3 with the saliency pass
        x, y = _batch(device)
        result = task(x, y)
        assert result["output"].device == x.device and result["loss"].device == x.device
        result["loss"].backward()
    assert all(p.grad is not None and p.grad.device == x.device for p in model.parameters())
