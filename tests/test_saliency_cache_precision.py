"""The saliency cache keeps tiny input gradients (issue 21, item 16).

Input gradients are often ~1e-8, below float16's smallest number (6e-8): a float16 cache would store them as
0, and SalfMix would silently pick random cells. Written and read back, such a map must keep its order.
"""

from __future__ import annotations

import pytest
import torch

from salfmix_transforms.saliency_cache import SaliencyCache, source_coordinates

SIZE = 32  # 32x32 views, 16x16 cells: a cell is 2x2 pixels


@pytest.mark.parametrize("scale", [1e-8, 1e-12, 1e-32, 1e3, 1e36])
def test_a_map_of_tiny_gradients_keeps_its_most_and_least_salient_cells(scale):
    # 256 values from 1 to 16, 1.1% apart (bfloat16 keeps them apart and in order), in a random order
    cells = 2.0 ** torch.linspace(0.0, 4.0, 256)
    cells = cells[torch.randperm(256, generator=torch.Generator().manual_seed(0))].view(16, 16)
    saliency = cells.repeat_interleave(2, 0).repeat_interleave(2, 1) * scale  # (32, 32), one value per cell
    cache = SaliencyCache(2)
    identity = source_coordinates(SIZE, SIZE)[None]
    cache.write(torch.tensor([1]), identity, saliency[None], epoch=0)
    stored = cache.read(torch.tensor([1]), identity)[0]
    assert bool((stored > 0).all()), "the map underflowed to 0 (SalfMix would pick random cells)"
    assert int(stored.argmax()) == int(saliency.argmax()) and int(stored.argmin()) == int(saliency.argmin())
    assert torch.equal(stored[::2, ::2].flatten().argsort(), cells.flatten().argsort())  # every cell in order
    unscaled = saliency / scale
    relative = unscaled / unscaled.mean()  # as the cache stores a first write of the whole view
    torch.testing.assert_close(stored, relative, rtol=1e-2, atol=0.0)  # 3 significant digits
