"""Gradients through the out-of-place transforms (kornia checks its augmentations with ``gradcheck``).

A mix is linear in the pixels once its random draws are fixed (Mixup: a weighted sum; the box methods: a
selection), so ``torch.autograd.gradcheck`` in float64 must pass with respect to ``x`` for every mode when
the draws are pinned by re-seeding the generator on every evaluation. Issue report: ``CutMix(num_classes=10,
mode="elem")(x.requires_grad_(), y)`` raised "where(): functions with out=... don't support automatic
differentiation" (also 'pair', SaliencyMix in every mode, HybridMix.v2).
"""

from __future__ import annotations

import pytest
import torch
from _conformance_cases import CASES, NUM_CLASSES

MODES = ("batch", "pair", "elem")
GRADCHECK_CASES = ("Mixup", "CutMix", "CutMix-minmax", "Mixup-CutMix", "SaliencyMix", "SaliencyMix-ref")
GRADCHECK_CASES += ("ResizeMix", "ResizeMix-nearest", "HybridMix.v1", "HybridMix.v3", "HybridMix-resizemix")
BY_NAME = {case.name: case for case in CASES}


def _inputs(batch: int = 4, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, channels, 4, 4, generator=gen, dtype=torch.float64)
    saliency = torch.rand(batch, 4, 4, generator=gen, dtype=torch.float64)
    return x, torch.arange(batch) % NUM_CLASSES, saliency


def _pinned(case, fn, labels, saliency, seed=5):
    """``x -> out`` with the random draws fixed (a fresh generator with the same seed on every call)."""
    kwargs = {"saliency": saliency} if case.needs_map or case.static_map else {}

    def apply(x: torch.Tensor) -> torch.Tensor:
        out, _ = fn(x, labels, generator=torch.Generator().manual_seed(seed), **kwargs)
        return out

    return apply


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", GRADCHECK_CASES)
def test_gradcheck_two_image_methods(name, mode):
    case = BY_NAME[name]
    x, labels, saliency = _inputs()
    fn = _pinned(case, case.build(mode=mode), labels, saliency)
    leaf = x.clone().requires_grad_()
    # the full Jacobian for Mixup and CutMix, one random direction (fast mode) for the others
    fast = name not in ("Mixup", "CutMix")
    assert torch.autograd.gradcheck(fn, (leaf,), eps=1e-6, atol=1e-7, fast_mode=fast)
    assert torch.equal(leaf.detach(), x), "out-of-place transform modified its input"


@pytest.mark.parametrize("batch", [3, 4])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["Mixup", "CutMix"])
def test_gradcheck_mixup_and_cutmix_odd_and_even(name, mode, batch):
    case = BY_NAME[name]
    x, labels, saliency = _inputs(batch, channels=2)
    fn = _pinned(case, case.build(mode=mode, prob=0.7), labels, saliency, seed=11)
    assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(),), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["SaliencyMix", "SaliencyMix-ref", "HybridMix.v2"])
def test_backward_through_static_saliency_methods(name, mode):
    """SaliencyMix computes its own map (no gradient through it): the pixels still carry the gradient.

    ``gradcheck``'s fast mode (one random direction), since every evaluation recomputes the static map.
    """
    case = BY_NAME[name]
    x, labels, saliency = _inputs()
    fn = case.build(mode=mode)
    kwargs = {"saliency": saliency} if case.needs_map else {}

    def apply(inp: torch.Tensor) -> torch.Tensor:
        return fn(inp, labels, generator=torch.Generator().manual_seed(5), **kwargs)[0]

    leaf = x.clone().requires_grad_()
    out = apply(leaf)
    out.backward(torch.ones_like(out))
    # every output pixel is a copy of one input pixel (box methods): the gradient counts how often each
    # input pixel was copied, so it sums to the number of output pixels
    assert leaf.grad is not None
    assert float(leaf.grad.sum()) == pytest.approx(out.numel())
    assert torch.autograd.gradcheck(apply, (x.clone().requires_grad_(),), eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize("name", ["SalfMix", "RandomSelfMix", "SaliencyCutout", "Cutout"])
def test_gradcheck_single_image_methods(name):
    case = BY_NAME[name]
    x, labels, saliency = _inputs()
    fn = _pinned(case, case.build(prob=0.7), labels, saliency)
    assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(),), eps=1e-6, atol=1e-7)
