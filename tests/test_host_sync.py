"""No host synchronisation in the hot path (issue 22, item 2).

A GPU training step must not wait for the host inside a transform call: no ``.item()`` / ``.tolist()`` /
``bool(tensor)`` / ``int(tensor)`` / ``float(tensor)``, no ``.cpu()`` / ``.numpy()``, no blocking copy, no
data-dependent shape (``nonzero``, boolean-mask indexing, ``unique``) of the batch's own values.

* On the CPU (the default run) every registry method is called on ``device="meta"`` tensors: a meta tensor
  has a shape and no data, so any operation that reads the data's values on the host fails there, while the
  random draws that the transforms make on the host (as timm draws ``lam`` with NumPy) still work. The
  model path runs too: autograd (the gradient saliency of eq. (2)-(3)) works on a model moved to meta.
* With ``pytest --device cuda`` the same calls run on the GPU under
  ``torch.cuda.set_sync_debug_mode("error")``, which raises on every synchronising CUDA call (a blocking
  copy included).

Every call is past the warm-up (``set_epoch(1)``): the registry's default mode otherwise.
"""

from __future__ import annotations

import pytest
import torch
from _batch_helpers import images, tiny_classifier

from salfmix_transforms import methods

K = 5
B, H, W = 4, 16, 16
TRANSFORMS = [name for name in methods.METHODS if name != "baseline"]
#: The methods whose saliency comes from the model being trained (or a map given as ``saliency=``).
WITH_SALIENCY = [name for name in TRANSFORMS if methods.spec(name).needs_model]
TARGETS = ("indices", "soft")
META = torch.device("meta")


def _past_warmup(fn):
    fn.set_epoch(1)
    return fn


def _target(kind: str, device: torch.device) -> torch.Tensor:
    """Class indices (B,) or soft targets (B, K), uninitialised (meta: no data at all)."""
    if kind == "indices":
        return torch.empty(B, dtype=torch.long, device=device)
    return torch.empty(B, K, device=device)


def _assert_result(out: torch.Tensor, target: torch.Tensor, device: torch.device) -> None:
    assert out.device.type == device.type and out.shape == (B, 3, H, W) and out.dtype == torch.float32
    assert target.device.type == device.type and target.shape == (B, K)


# -- meta tensors: the CPU run's check ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("name", TRANSFORMS)
def test_every_method_runs_on_meta_tensors(name, kind):
    fn = _past_warmup(methods.build(name, K))
    x = torch.empty(B, 3, H, W, device=META)
    extra = {"saliency": torch.empty(B, H, W, device=META)} if name in WITH_SALIENCY else {}
    out, target = fn(x, _target(kind, META), **extra)
    _assert_result(out, target, META)


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("name", WITH_SALIENCY)
def test_the_model_saliency_path_runs_on_meta_tensors(name, kind):
    # The gradient saliency (forward, input-only backward, BatchNorm state put back) on a meta model.
    model = tiny_classifier(K, batchnorm=True).to(META)
    fn = _past_warmup(methods.build(name, K, model=model))
    out, target = fn(torch.empty(B, 3, H, W, device=META), _target(kind, META))
    _assert_result(out, target, META)


def test_a_dense_class_mask_runs_on_meta_tensors():
    # The dense targets' value checks (class range, ignore_index) are device-side too.
    fn = _past_warmup(methods.build("hybridmix-v3", K))
    mask = torch.empty(B, H, W, dtype=torch.long, device=META)
    out, target = fn(torch.empty(B, 3, H, W, device=META), mask, saliency=torch.empty(B, H, W, device=META))
    assert out.shape == (B, 3, H, W) and target.shape == (B, K, H, W) and target.device == META


# -- CUDA: the same calls under sync debug mode "error" (pytest --device cuda) -----------------------------


def _call_without_sync(fn, x, target, **extra):
    """One call of ``fn`` with every synchronising CUDA call raising; a first call outside the check does the
    one-time set-up (cuDNN handles, the per-shape index tables)."""
    fn(x, target, **extra)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, mixed = fn(x, target, **extra)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()
    return out, mixed


def _cuda_only(device: torch.device) -> None:
    if device.type != "cuda":
        pytest.skip("CUDA only (pytest --device cuda); on the CPU the meta tests check the same calls")


def _cuda_target(kind: str, device: torch.device) -> torch.Tensor:
    labels = torch.arange(B, device=device) % K
    return labels if kind == "indices" else torch.nn.functional.one_hot(labels, K).float()


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("name", TRANSFORMS)
def test_every_method_makes_no_host_sync_on_cuda(device, name, kind):
    _cuda_only(device)
    x = images(B, 3, H, W).to(device)
    extra = {"saliency": torch.rand(B, H, W, device=device)} if name in WITH_SALIENCY else {}
    out, target = _call_without_sync(
        _past_warmup(methods.build(name, K)), x, _cuda_target(kind, device), **extra
    )
    _assert_result(out, target, device)
    assert torch.isfinite(out).all() and torch.isfinite(target).all()


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("name", WITH_SALIENCY)
def test_the_model_saliency_path_makes_no_host_sync_on_cuda(device, name, kind):
    _cuda_only(device)
    model = tiny_classifier(K, batchnorm=True).to(device)
    fn = _past_warmup(methods.build(name, K, model=model))
    out, target = _call_without_sync(fn, images(B, 3, H, W).to(device), _cuda_target(kind, device))
    _assert_result(out, target, device)
