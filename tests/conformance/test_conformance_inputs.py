"""Input structures and targets, as torchvision's v2 ``MixUp``/``CutMix`` document them (properties).

torchvision's contract (``torchvision/transforms/v2/_augment.py``), stated for every transform here:

* the transform works on a collated batch, e.g. as a ``DataLoader``'s ``collate_fn`` wrapper
  ``lambda batch: fn(*default_collate(batch))``;
* index labels (B,) come back as probability rows (B, num_classes): each row sums to 1, and a two-image
  mix gives at most two non-zero labels per row (those of the sample and of its partner);
* wrong inputs raise at once with a message that says which input is wrong: labels of the wrong shape or
  out of range, non-batched or non-floating images, index labels without ``num_classes``.
"""

from __future__ import annotations

import re
from functools import partial

import numpy as np
import pytest
import torch
from _batch_helpers import images, tiny_classifier
from _conformance_cases import CASES, NUM_CLASSES, TWO_IMAGE, Case, channels_ok
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import default_collate

from salfmix_transforms import ResizeMix, SaliencyMix

FAST = settings(max_examples=6, deadline=None, derandomize=True, database=None)


def _collate(fn, batch):
    return fn(*default_collate(batch))


def _dataset(size: int = 11, height: int = 12, width: int = 10) -> list[tuple[torch.Tensor, int]]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.rand(3, height, width, generator=gen), i % NUM_CLASSES) for i in range(size)]


def _check_soft_targets(case: Case, target: torch.Tensor, labels: torch.Tensor) -> None:
    """Rows are distributions over NUM_CLASSES; non-zero only at the sample's and its partner's labels."""
    batch = labels.shape[0]
    assert target.shape == (batch, NUM_CLASSES)
    assert target.is_floating_point()
    assert torch.isfinite(target).all()
    assert (target >= 0).all()
    torch.testing.assert_close(
        target.double().sum(dim=1), torch.ones(batch, dtype=torch.float64), atol=1e-6, rtol=0
    )
    nonzero = target != 0
    allowed = torch.zeros_like(nonzero)
    allowed[torch.arange(batch), labels] = True
    if case.kind != "single":
        allowed[torch.arange(batch), labels.flip(0)] = True  # timm's partner: sample B - 1 - i
        assert (nonzero.sum(dim=1) <= 2).all()
    else:
        assert (nonzero.sum(dim=1) == 1).all()
    assert not (nonzero & ~allowed).any(), "a label that is neither the sample's nor its partner's"


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("batch_size", [4, 5])
def test_works_as_dataloader_collate_fn(case, batch_size):
    # 11 samples: full batches, then an odd or a single-sample last batch.
    fn = case.build(model=tiny_classifier(NUM_CLASSES)) if case.needs_map else case.build()
    loader = DataLoader(
        _dataset(), batch_size=batch_size, collate_fn=lambda batch: fn(*default_collate(batch))
    )
    sizes = []
    for x, target in loader:
        assert x.shape[1:] == (3, 12, 10)
        assert x.dtype == torch.float32
        assert torch.isfinite(x).all()
        labels = torch.arange(sum(sizes), sum(sizes) + x.shape[0]) % NUM_CLASSES
        _check_soft_targets(case, target, labels)
        sizes.append(x.shape[0])
    assert sizes == [batch_size] * (11 // batch_size) + [11 % batch_size]


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.name in ("CutMix", "HybridMix.v3", "Cutout")], ids=repr
)
def test_collate_fn_in_worker_processes(case):
    """The transform (and a model it holds) travels to DataLoader workers and runs there."""
    fn = case.build(model=tiny_classifier(NUM_CLASSES)) if case.needs_map else case.build()
    loader = DataLoader(_dataset(8), batch_size=4, num_workers=2, collate_fn=partial(_collate, fn))
    batches = list(loader)
    assert len(batches) == 2
    for index, (x, target) in enumerate(batches):
        assert x.shape == (4, 3, 12, 10)
        _check_soft_targets(case, target, torch.arange(4 * index, 4 * index + 4) % NUM_CLASSES)


@st.composite
def batches(draw, case: Case):
    batch = draw(st.integers(1, 6))
    channels = draw(st.integers(1, 4).filter(lambda c: channels_ok(case, c)))
    height, width = draw(st.integers(2, 16)), draw(st.integers(2, 16))
    x = images(batch, channels, height, width, torch.float32, seed=draw(st.integers(0, 2**16)))
    labels = torch.tensor(draw(st.lists(st.integers(0, NUM_CLASSES - 1), min_size=batch, max_size=batch)))
    return x, labels


@pytest.mark.parametrize("case", CASES, ids=repr)
@settings(FAST, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), mode=st.sampled_from(["batch", "pair", "elem"]), prob=st.sampled_from([0.0, 0.5, 1.0]))
def test_soft_targets_are_distributions_of_at_most_two_labels(case, data, mode, prob):
    x, labels = data.draw(batches(case))
    fn = case.build(prob=prob, mode=mode)
    out, target = case.call(fn, x, labels, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    _check_soft_targets(case, target, labels)


@pytest.mark.parametrize("case", TWO_IMAGE, ids=repr)
def test_soft_target_input_gives_distributions(case):
    """Probability rows in (as from an earlier mix) give probability rows out."""
    x = images(6, 3, 8, 8, torch.float32, seed=0)
    soft = torch.softmax(torch.randn(6, NUM_CLASSES, generator=torch.Generator().manual_seed(0)), dim=1)
    _, target = case.call(case.build(), x, soft, generator=torch.Generator().manual_seed(0))
    assert target.shape == (6, NUM_CLASSES)
    torch.testing.assert_close(
        target.double().sum(dim=1), torch.ones(6, dtype=torch.float64), atol=1e-6, rtol=0
    )


def _named(name: str) -> str:
    """A regex for ``name`` as a whole identifier in an error message."""
    return rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])"


_BAD_INPUTS = {
    # name: (make bad (x, target) from good ones, exception, the argument the message must name)
    "labels-too-few": (lambda x, y: (x, y[:-1]), ValueError, "target"),
    "labels-too-many": (lambda x, y: (x, torch.cat([y, y[:1]])), ValueError, "target"),
    "labels-3d": (lambda x, y: (x, y.view(-1, 1, 1)), ValueError, "target"),
    "labels-0d": (lambda x, y: (x, y[0]), ValueError, "target"),
    "soft-wrong-width": (
        lambda x, y: (x, torch.full((len(y), NUM_CLASSES + 1), 1 / 9)),
        ValueError,
        "target",
    ),
    "label-too-large": (lambda x, y: (x, torch.full_like(y, NUM_CLASSES)), ValueError, "target"),
    "label-negative": (lambda x, y: (x, torch.full_like(y, -1)), ValueError, "target"),
    "labels-float-1d": (lambda x, y: (x, y.float()), TypeError, "target"),
    "labels-list": (lambda x, y: (x, y.tolist()), TypeError, "target"),
    "images-uint8": (lambda x, y: ((x * 255).to(torch.uint8), y), TypeError, "x"),
    "images-int64": (lambda x, y: (x.long(), y), TypeError, "x"),
    "images-3d": (lambda x, y: (x[0], y), ValueError, "x"),
    "images-ndarray": (lambda x, y: (x.numpy(), y), TypeError, "x"),
}


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("bad", list(_BAD_INPUTS))
def test_bad_inputs_raise_naming_the_argument(case, bad):
    make, error, name = _BAD_INPUTS[bad]
    x, y = make(images(4, 3, 8, 8, torch.float32, seed=0), torch.tensor([0, 1, 2, 3]))
    fn = case.build()
    kwargs = {"saliency": torch.rand(4, 8, 8)} if case.needs_map else {}
    with pytest.raises(error, match=_named(name)):
        fn(x, y, **kwargs)


@pytest.mark.parametrize("cls", [SaliencyMix, ResizeMix])
def test_index_labels_need_num_classes(cls):
    """As torchvision: index labels without num_classes cannot become probability rows."""
    x = images(4, 3, 8, 8, torch.float32, seed=0)
    with pytest.raises(ValueError, match=_named("num_classes")):
        cls()(x, torch.tensor([0, 1, 2, 3]))
    _, target = cls()(x, torch.eye(4))  # probability rows: num_classes inferred from their width
    assert target.shape == (4, 4)


@pytest.mark.parametrize("num_classes", [np.int64(NUM_CLASSES), np.int32(NUM_CLASSES)])
@pytest.mark.parametrize("case", TWO_IMAGE, ids=repr)
def test_numpy_integer_num_classes(case, num_classes):
    x = images(4, 3, 8, 8, torch.float32, seed=0)
    _, target = case.call(case.build(num_classes=num_classes), x, torch.tensor([0, 1, 2, 3]))
    assert target.shape == (4, NUM_CLASSES)
