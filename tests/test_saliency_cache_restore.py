"""A damaged saliency cache in a checkpoint (issue 21, item 8): a one-line error, never a traceback.

``SaliencyCache.load_state_dict`` refuses what it cannot restore with a ValueError naming the entry and what
was expected (train_timm.py turns it into one line), leaves the cache as it was, and drops maps with NaN or
inf values (marked as never written) with one warning.
"""

from __future__ import annotations

import argparse
import warnings

import pytest
import torch

import train_timm
from salfmix_transforms.saliency_cache import SaliencyCache, source_coordinates

SIZE = 32
N = 4


def _saved() -> dict:
    cache = SaliencyCache(N)
    coords = source_coordinates(SIZE, SIZE).expand(N, -1, -1, -1)
    cache.write(torch.arange(N), coords, torch.rand(N, SIZE, SIZE), epoch=3)
    return cache.state_dict()


def _damaged(**changes) -> dict:
    state = _saved()
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


@pytest.mark.parametrize(
    ("state", "needles"),
    [
        pytest.param(
            _damaged(written_epoch=torch.zeros(N, 2, dtype=torch.int32)),
            ("'written_epoch'", f"({N},)", "(4, 2)"),
            id="written_epoch-2d",
        ),
        pytest.param(
            _damaged(written_epoch=torch.zeros(N + 1, dtype=torch.int32)),
            ("'written_epoch'", f"({N},)", "(5,)"),
            id="written_epoch-too-long",
        ),
        pytest.param(
            _damaged(written_epoch=torch.zeros(N)),
            ("'written_epoch'", "integer", "float32"),
            id="written_epoch-float",
        ),
        pytest.param(
            _damaged(written_epoch=[3] * N), ("'written_epoch'", "tensor", "list"), id="written_epoch-list"
        ),
        pytest.param(
            _damaged(written_epoch=torch.full((N,), -7, dtype=torch.int32)),
            ("'written_epoch'", "-1", "-7"),
            id="written_epoch-below-minus-1",
        ),
        pytest.param(_damaged(maps=None), ("'maps'", "no"), id="maps-missing"),
        pytest.param(_damaged(written_epoch=None), ("'written_epoch'", "no"), id="written_epoch-missing"),
        pytest.param(_damaged(maps="junk"), ("'maps'", "tensor", "str"), id="maps-str"),
        pytest.param(
            _damaged(maps=torch.zeros(N, 16, 16, dtype=torch.int64)),
            ("'maps'", "floating", "int64"),
            id="maps-int",
        ),
        pytest.param(
            _damaged(maps=torch.zeros(N, 8, 8)), ("maps", "(4, 8, 8)", "(4, 16, 16)"), id="maps-8x8"
        ),
        pytest.param([1, 2], ("saliency cache", "dict", "list"), id="list"),
        pytest.param(None, ("saliency cache", "dict", "NoneType"), id="None"),
    ],
)
def test_a_damaged_state_is_a_value_error_naming_what_is_wrong(state, needles):
    cache = SaliencyCache(N)
    with pytest.raises(ValueError) as info:
        cache.load_state_dict(state)
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in needles), message
    # Nothing was restored: the cache is still empty.
    assert cache.written_epoch.tolist() == [-1] * N and float(cache.maps.float().abs().sum()) == 0.0


def test_non_finite_maps_are_dropped_as_never_written_with_one_warning():
    state = _saved()
    maps = state["maps"].clone()
    maps[1, 0, 0] = float("nan")
    maps[3, 5, 7] = float("inf")
    state["maps"] = maps
    cache = SaliencyCache(N)
    with pytest.warns(UserWarning) as record:
        cache.load_state_dict(state)
    assert len(record) == 1
    message = str(record[0].message)
    assert "2 of 4" in message and "NaN or inf" in message, message
    assert cache.written_epoch.tolist() == [3, -1, 3, -1]
    assert torch.isfinite(cache.maps.float()).all()
    assert float(cache.maps[[1, 3]].float().abs().sum()) == 0.0  # read as never written: random cells
    assert torch.equal(cache.maps[[0, 2]], state["maps"][[0, 2]])


def test_an_intact_state_loads_without_a_warning():
    state = _saved()
    cache = SaliencyCache(N)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.load_state_dict(state)
    assert torch.equal(cache.maps, state["maps"]) and cache.written_epoch.tolist() == [3] * N


@pytest.mark.parametrize("state", [_damaged(maps=None), _damaged(written_epoch=torch.zeros(N, 2)), [1, 2]])
def test_the_training_script_reports_a_damaged_cache_as_a_checkpoint_error(state):
    args = argparse.Namespace(resume="last.pth.tar", rank=0)
    with pytest.raises(train_timm.CheckpointError, match=r"last\.pth\.tar.*saliency cache"):
        train_timm._restore_saliency_cache(SaliencyCache(N), {"saliency_cache": state}, args)
