"""Random draws that honour an optional ``torch.Generator``.

Every random choice in the package goes through these helpers, so one generator (passed to a transform's
constructor or call) makes a whole batch reproducible. Without a generator they use PyTorch's global RNG,
so ``torch.manual_seed`` is enough to reproduce a run.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["beta", "host_device", "rand", "randint_between", "randint_from_uniform"]


def host_device(generator: torch.Generator | None) -> torch.device:
    """Where a transform draws the numbers that decide its control flow (timm draws them with NumPy): the
    generator's device, or the CPU without one. Read there (``bool``, ``int``, ``float``, ``tolist``) they
    cost no host synchronisation, unless a CUDA generator was given, whose draws live on the GPU."""
    return generator.device if generator is not None else torch.device("cpu")


def rand(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Uniform [0, 1) float32 numbers of ``shape`` on ``device``."""
    device = torch.device(device)
    # A generator draws on its own device; without one we draw where the data lives (no host round trip).
    draw_device = generator.device if generator is not None else device
    values = torch.rand(shape, generator=generator, device=draw_device)
    return values.to(device, non_blocking=True)


def randint_between(low: torch.Tensor, high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One integer drawn uniformly from the closed range [low[i], high[i]] for every i (vectorized).

    ``low`` and ``high`` are integer tensors of the same shape with ``low <= high``.
    """
    return randint_from_uniform(rand(tuple(low.shape), generator, low.device), low, high)


def randint_from_uniform(u: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Map float32 uniforms ``u`` in [0, 1) to integers in the closed ranges [low, high] (broadcast).

    The result is ``low + floor(u * span)`` with ``span = high - low + 1``, computed exactly in integer
    arithmetic: ``k = u * 2^24`` is the 24-bit integer behind a CPU float32 uniform (multiplying by a power
    of two is exact), and ``floor(u * span) = (k * span) >> 24`` is always below ``span``, so no clamp is
    needed. (A uniform that is not on the 2^-24 grid, e.g. from CUDA, is truncated to it first; the
    result is still uniform to within ``span / 2^24``.) Spans must stay below 2^39 (int64 product).
    """
    k = (u * 16777216.0).long()  # 2^24
    return low + ((k * (high - low + 1)) >> 24)


def beta(
    alpha: float, size: int, generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``size`` draws from Beta(alpha, alpha) as a float64 tensor on ``device``.

    PyTorch's Beta sampler cannot take a generator, so the draws come from a NumPy generator seeded from the
    torch generator (or the global torch RNG): the same torch state gives the same lambdas. The seed is
    drawn on the host (:func:`host_device`; a CUDA generator costs one host synchronisation here) and the
    draws reach ``device`` by a non-blocking copy.
    """
    seed_device = host_device(generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=seed_device).item())
    draws = np.random.default_rng(seed).beta(alpha, alpha, size=size)
    return torch.from_numpy(draws).to(device, non_blocking=True)
