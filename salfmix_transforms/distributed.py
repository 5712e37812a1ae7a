"""What the training scripts share for data-parallel runs (``torchrun``, one process per device).

timm's helpers do the set-up (``timm.utils.init_distributed_device``) and the BatchNorm statistics
(``distribute_bn``); these are the pieces timm keeps inside its ``train.py``:

* :class:`ShardSampler`: the validation split across ranks without padding, so that metrics summed over
  the ranks (:func:`all_reduce_sum`) count every image exactly once (torch's ``DistributedSampler`` pads
  an uneven split with repeats).
* :func:`rng_state` / :func:`set_rng_state` / :func:`gather_rng_states`: every rank's torch, NumPy and
  Python random states, saved in the checkpoints so that a resumed run draws what the uninterrupted run
  would have drawn (crops, flips, SalfMix cells, mixing boxes).
* :func:`broadcast_from_primary`: what rank 0 alone found out (the run folder it created, or why it could
  not), so that every rank goes on or stops together instead of waiting in a collective.
* :class:`DataOrder`: the training loader's shuffling and worker seeds as a function of (seed, epoch,
  rank) alone, so that runs of different methods with one seed see the same batches in the same order
  (paired seeds) however many random numbers their augmentation draws.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "DataOrder",
    "ShardSampler",
    "all_reduce_sum",
    "broadcast_from_primary",
    "gather_rng_states",
    "rng_state",
    "set_rng_state",
]


def __getattr__(name: str) -> Any:
    if name == "without_ddp":  # public until issue 20 merged the three unwrap helpers
        import functools
        import warnings

        from .saliency import plain_module

        warnings.warn(
            "salfmix_transforms.distributed.without_ddp is deprecated: use "
            "salfmix_transforms.saliency.plain_module(model, keep_compiled=True)",
            DeprecationWarning,
            stacklevel=2,
        )
        return functools.partial(plain_module, keep_compiled=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ShardSampler(torch.utils.data.Sampler):
    """Every ``world_size``-th index from ``rank``: disjoint shards that cover ``range(size)`` once.

    Args:
        size: length of the data set.
        rank: this process's rank, in ``[0, world_size)``.
        world_size: number of processes.
    """

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        self.indices = list(range(rank, size, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class DataOrder:
    """The random stream of a training ``DataLoader``, re-seeded from ``(seed, epoch, rank)`` every epoch.

    A ``DataLoader`` without a ``generator`` draws its shuffling order and its workers' base seed from the
    global torch RNG, which the batch transforms also draw from (SalfMix's patch positions, CutMix's
    boxes): two runs with one seed but different methods then see different batches from the second epoch
    on. Passing :attr:`generator` to the loader and calling :meth:`set_epoch` before each epoch makes the
    order, and the crops and flips drawn in the loader's worker processes, the same for every method
    (``num_workers >= 1``; with ``num_workers=0`` the image transforms run in the main process and draw from
    the global RNG). A resumed run gets the same order too, since nothing here depends on earlier epochs.

    Args:
        seed: the run's seed (``--seed``).
        rank: this process's rank (0 in a single process).
    """

    def __init__(self, seed: int, rank: int = 0) -> None:
        self.seed = int(seed)
        self.rank = int(rank)
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Re-seed :attr:`generator` for ``epoch`` (0-based), as ``DistributedSampler.set_epoch``."""
        entropy = [self.seed % 2**63, int(epoch), self.rank]
        self.generator.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))


def all_reduce_sum(
    values: Sequence[float] | torch.Tensor, device: torch.device, distributed: bool
) -> list[float] | torch.Tensor:
    """The element-wise sum of ``values`` over every rank (in float64 for a list; a tensor keeps its dtype
    and is summed in place). Returns ``values`` unchanged when ``distributed`` is False."""
    if not distributed:
        return values
    if isinstance(values, torch.Tensor):
        torch.distributed.all_reduce(values)
        return values
    total = torch.tensor(list(values), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return total.tolist()


def broadcast_from_primary(values: list[Any], distributed: bool) -> list[Any]:
    """Rank 0's ``values`` (picklable) on every rank (a collective: every rank must call it); ``values``
    itself when not ``distributed``. For what only the primary process knows: the run folder it created,
    or the error that stops the run on every rank."""
    if not distributed:
        return values
    shared = list(values)
    torch.distributed.broadcast_object_list(shared, src=0)
    return shared


def rng_state() -> dict[str, Any]:
    """This process's torch (and CUDA, when initialised), NumPy (the legacy global generator that timm's
    ``random_seed`` seeds) and Python random states, as values ``torch.load(weights_only=True)`` accepts."""
    name, keys, *rest = np.random.get_state()  # noqa: NPY002
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), *(_plain(v) for v in rest)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (the CUDA part only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):  # another number of GPUs: keep the seeded state
            torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(world_size: int, distributed: bool) -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, indexed by rank (a collective: every rank must call it)."""
    state = rng_state()
    if not distributed:
        return [state]
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, state)
    return gathered
