"""salfmix_transforms.cli and .distributed: what train_timm.py and train_seg.py share."""

from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
import torch

from salfmix_transforms.cli import (
    OneLineArgumentParser,
    UsageError,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    report_error,
)
from salfmix_transforms.distributed import (
    DataOrder,
    ShardSampler,
    all_reduce_sum,
    gather_rng_states,
    rng_state,
    set_rng_state,
)


@pytest.mark.parametrize(("size", "world"), [(7, 2), (8, 2), (5, 3), (2, 4), (0, 2)])
def test_shards_cover_every_index_exactly_once(size, world):
    shards = [list(ShardSampler(size, rank, world)) for rank in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(size))
    assert [len(ShardSampler(size, rank, world)) for rank in range(world)] == [len(s) for s in shards]


def test_shard_rank_out_of_range_is_named():
    with pytest.raises(ValueError, match="rank"):
        ShardSampler(4, 2, 2)


def test_all_reduce_sum_without_a_group_returns_the_values():
    assert all_reduce_sum([1.5, 2.0], torch.device("cpu"), distributed=False) == [1.5, 2.0]
    cm = torch.ones(2, 2, dtype=torch.long)
    assert all_reduce_sum(cm, torch.device("cpu"), distributed=False) is cm


class _IndexAndDraw(torch.utils.data.Dataset):
    """Sample i is (i, a number drawn from the global torch RNG of the process that loads it)."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int):
        return index, torch.rand(())


def _epoch_batches(order: DataOrder, epoch: int, transform_draws: int) -> list[list[float]]:
    """One epoch of a shuffled 1-worker loader, after ``transform_draws`` draws from the global RNG (what a
    batch transform of some method would have drawn so far)."""
    loader = torch.utils.data.DataLoader(
        _IndexAndDraw(), batch_size=4, shuffle=True, num_workers=1, generator=order.generator
    )
    torch.rand(transform_draws)
    order.set_epoch(epoch)
    return [torch.stack([i.double(), r.double()]).flatten().tolist() for i, r in loader]


def test_data_order_pairs_runs_whatever_the_transforms_draw():
    """Paired seeds: the batches (and the loader workers' random draws) of an epoch depend on seed, epoch
    and rank only, not on how many random numbers a method drew before."""
    torch.manual_seed(0)
    plain = _epoch_batches(DataOrder(seed=3), epoch=1, transform_draws=0)
    torch.manual_seed(0)
    mixing = _epoch_batches(DataOrder(seed=3), epoch=1, transform_draws=1000)
    assert plain == mixing
    assert plain != _epoch_batches(DataOrder(seed=3), epoch=2, transform_draws=0)
    assert plain != _epoch_batches(DataOrder(seed=4), epoch=1, transform_draws=0)
    assert plain != _epoch_batches(DataOrder(seed=3, rank=1), epoch=1, transform_draws=0)


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)  # noqa: NPY002
    random.seed(3)
    states = gather_rng_states(world_size=1, distributed=False)
    torch.save({"rng": states}, tmp_path / "ckpt.pth")
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    set_rng_state(torch.load(tmp_path / "ckpt.pth", weights_only=True)["rng"][0])
    drawn = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(drawn[0], expected[0]) and np.array_equal(drawn[1], expected[1])
    assert drawn[2] == expected[2]
    assert set(rng_state()) >= {"torch", "numpy", "python"}


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (positive_int, ("1", 1), "0"),
        (non_negative_int, ("0", 0), "-1"),
        (non_negative_float, ("0", 0.0), "nan"),
        (positive_float, ("0.5", 0.5), "inf"),
        (probability, ("1", 1.0), "1.5"),
    ],
)
def test_flag_types_name_the_flag_in_one_line(kind, good, bad):
    parser = OneLineArgumentParser(prog="prog")
    parser.add_argument("--value", type=kind)
    assert parser.parse_args(["--value", good[0]]).value == good[1]
    with pytest.raises(UsageError, match=r"argument --value: must .*got " + bad):
        parser.parse_args(["--value", bad])
    # Text that is no number says what was expected too (argparse's default names the function).
    with pytest.raises(UsageError, match=r"argument --value: must (be|lie) .*, got x$"):
        parser.parse_args(["--value", "x"])


def test_parser_errors_raise_instead_of_exiting(capsys):
    parser = OneLineArgumentParser(prog="prog")
    with pytest.raises(UsageError, match="unrecognized arguments: --nope"):
        parser.parse_args(["--nope"])
    assert report_error("prog", UsageError("bad\n  input")) == 2
    assert capsys.readouterr().err == "prog: error: bad input\n"
    assert isinstance(parser, argparse.ArgumentParser)
