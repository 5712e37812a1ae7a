"""Identity cases, untouched rows and dtypes, as kornia's mix augmentations document them (properties).

kornia's contract (``kornia/augmentation/_2d/mix/``: ``MixAugmentationBaseV2``, ``RandomMixUpV2``,
``RandomCutMixV2``), stated for every transform here:

* probability 0 is the identity: the pixels are unchanged and every label is the sample's own;
* a mixing weight lambda = 1 (nothing taken from the partner) is the identity too;
* "an unselected image keeps its input values": a row that is not mixed (its label is its own) is
  byte-identical to its input row;
* images may be float16, bfloat16, float32 or float64: the output has the input's dtype and stays finite,
  and a method that only copies pixels (CutMix, SaliencyMix, SalfMix with a given map, Cutout, ...) returns
  only values that were in the input (or Cutout's fill value).
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from _batch_helpers import images, one_hot
from _conformance_cases import (
    CASES,
    DTYPES,
    FILL,
    NUM_CLASSES,
    SINGLE,
    TWO_IMAGE,
    bits,
    channels_ok,
    hybrid_without_salfmix,
    saliency_of,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from salfmix_transforms import Cutout, mixing

FAST = settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MODES = st.sampled_from(["batch", "pair", "elem"])


@st.composite
def shapes(draw, case):
    batch = draw(st.integers(1, 6))
    channels = draw(st.integers(1, 4).filter(lambda c: channels_ok(case, c)))
    return batch, channels, draw(st.integers(2, 16)), draw(st.integers(2, 16))


def _identity_build(case, mode):
    """The case's transform with every probability 0 (HybridMix: both SalfMix's and the mix's)."""
    if case.kind == "hybrid":
        return case.build(prob=0.0, mode=mode, salfmix_prob=0.0)
    return case.build(prob=0.0, mode=mode)


@pytest.mark.parametrize("case", CASES, ids=repr)
@FAST
@given(data=st.data(), mode=MODES, dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_probability_zero_is_the_identity(case, data, mode, dtype, seed):
    batch, channels, height, width = data.draw(shapes(case))
    x = images(batch, channels, height, width, dtype, seed)
    before = x.clone()
    labels = torch.arange(batch)
    out, target = case.call(
        _identity_build(case, mode), x, labels, generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(bits(x), bits(before)), "the input was modified"
    assert out.data_ptr() != x.data_ptr(), "not a new tensor (inplace=False)"
    assert out.dtype == dtype
    assert torch.equal(bits(out), bits(x))
    assert torch.equal(target, one_hot(labels, NUM_CLASSES))


@pytest.mark.parametrize("case", [c for c in TWO_IMAGE if c.lam_pinned], ids=repr)
@FAST
@given(data=st.data(), mode=MODES, dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_lambda_one_is_the_identity(case, data, mode, dtype, seed):
    """lam = 1 (pinned through ``mixing.sample_beta``, every method's one Beta draw): no partner pixel."""
    batch, channels, height, width = data.draw(shapes(case))
    x = images(batch, channels, height, width, dtype, seed)
    labels = torch.arange(batch)

    def ones(alpha, count, generator, device):
        return torch.ones(count, dtype=torch.float64, device=device)

    with mock.patch.object(mixing, "sample_beta", ones):
        fn = hybrid_without_salfmix(case, prob=1.0, mode=mode)
        out, target = case.call(fn, x, labels, generator=torch.Generator().manual_seed(seed))
    assert out.dtype == dtype
    assert torch.equal(bits(out), bits(x))
    assert torch.equal(target, one_hot(labels, NUM_CLASSES))


@pytest.mark.parametrize("case", TWO_IMAGE, ids=repr)
@FAST
@given(
    data=st.data(),
    mode=MODES,
    dtype=st.sampled_from(DTYPES),
    prob=st.sampled_from([0.3, 0.5, 0.7]),
    seed=st.integers(0, 2**16),
)
def test_rows_that_are_not_mixed_are_byte_identical(case, data, mode, dtype, prob, seed):
    batch, channels, height, width = data.draw(shapes(case))
    x = images(batch, channels, height, width, dtype, seed)
    labels = torch.arange(batch)  # distinct labels: a row's target is its own one-hot only if it is not mixed
    fn = hybrid_without_salfmix(case, prob=prob, mode=mode)
    out, target = case.call(fn, x, labels, generator=torch.Generator().manual_seed(seed))
    own = (target == one_hot(labels, NUM_CLASSES)).all(dim=1)
    if batch % 2 == 1:
        assert own[batch // 2], "the middle sample of an odd batch is its own partner: never mixed"
    for i in torch.nonzero(own).flatten().tolist():
        assert torch.equal(bits(out[i]), bits(x[i])), f"row {i} is not mixed but its pixels changed"


@pytest.mark.parametrize("case", SINGLE, ids=repr)
@FAST
@given(data=st.data(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_single_image_rows_that_are_not_drawn_are_byte_identical(case, data, dtype, seed):
    """The rows whose ``prob`` draw fails (the plan's or boxes' ``applied``, same generator) are untouched."""
    batch, channels, height, width = data.draw(shapes(case))
    x = images(batch, channels, height, width, dtype, seed)
    fn = case.build(prob=0.5)
    if isinstance(fn, Cutout):
        applied = fn.boxes(batch, height, width, "cpu", torch.Generator().manual_seed(seed))[4]
    else:
        applied = fn.plan(saliency_of(x), torch.Generator().manual_seed(seed)).applied
    out, _ = case.call(fn, x, torch.arange(batch), generator=torch.Generator().manual_seed(seed))
    for i in torch.nonzero(~applied).flatten().tolist():
        assert torch.equal(bits(out[i]), bits(x[i])), f"row {i} is not drawn but its pixels changed"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=repr)
@FAST
@given(data=st.data(), mode=MODES, seed=st.integers(0, 2**16))
def test_dtype_matrix(case, dtype, data, mode, seed):
    batch, channels, height, width = data.draw(shapes(case))
    x = images(batch, channels, height, width, dtype, seed)
    fn = case.build(mode=mode)
    out, target = case.call(fn, x, torch.arange(batch), generator=torch.Generator().manual_seed(seed))
    assert out.dtype == dtype
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert target.shape == (batch, NUM_CLASSES)
    assert torch.isfinite(target).all()
    if case.copy_only:
        # every dtype converts to float64 exactly, so membership is exact
        allowed = torch.cat([x.double().flatten(), torch.tensor([FILL], dtype=torch.float64)])
        assert torch.isin(out.double().flatten(), allowed).all(), (
            "a value that is not a copy of an input value"
        )
