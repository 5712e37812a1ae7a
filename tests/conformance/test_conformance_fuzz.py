"""Fuzz: every constructor and call either refuses its arguments cleanly or returns a correct result.

For generated arguments (alphas including 0, negative, inf and NaN; probabilities and ratios out of range;
``grid`` too large or not an int; ``num_classes`` as int, NumPy int, 0, bool, None; images of every float
dtype and some non-float ones; targets as indices, probability rows, rows not summing to 1, NaN rows,
out-of-range indices, ...), drawn from pools of valid values except, in two examples out of three, for one
argument drawn from its pool of suspect values (see :class:`Draw`), the outcome must be:

* a ``ValueError``/``TypeError`` whose message names one of the arguments drawn from a suspect pool (never
  when all arguments are valid), or
* a correct result: images of the input's shape and dtype, finite; targets that are probability rows
  (B, K) (or, for a label-preserving transform without ``num_classes``, the target as given).

The families that broke this before they were fixed (infinite alphas beside CutMix, HybridMix's
``salfmix_*`` names) are fuzzed on their own, so that a regression names them; the general fuzz leaves them
out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from _batch_helpers import images, one_hot
from _conformance_cases import NUM_CLASSES
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from salfmix_transforms import (
    CutMix,
    Cutout,
    HybridMix,
    Mixup,
    RandomSelfMix,
    ResizeMix,
    SalfMix,
    SaliencyCutout,
    SaliencyMix,
)

# A warm-up that nothing ends (warmup_epochs > 0 without steps_per_epoch) warns: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:.*nothing ends the warm-up:UserWarning")

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# A known failing family only needs one failing example: no shrinking (which costs seconds), fewer examples.
FIXED_FAMILY = settings(FUZZ, max_examples=20, phases=[Phase.explicit, Phase.generate])
INF, NAN = math.inf, math.nan

# -- pools of values: (valid values, suspect values) ---------------------------------------------------------

ALPHA = (
    [0.2, 1.0, np.float64(2.0), np.float32(0.5), 1e-300, 1e300],
    [0.0, -1.0, INF, -INF, NAN, True, "1", None],
)
ALPHA_OR_OFF = ([0.0, 1.0, np.float64(0.4)], [-1.0, INF, -INF, NAN, True, "1", None])  # 0 turns a method off
PROB = ([0.0, 0.5, 1.0, np.float64(0.3)], [-0.1, 1.5, NAN, INF, None, "0.5", True])
SMOOTHING = ([0.0, 0.1], [-0.1, 1.5, NAN, INF, "0.1"])
RATIO = (
    [0.25, 0.5, 1.0, np.float32(0.3)],
    [1e-9, 0.0, -0.5, 1.5, NAN, INF, True, None],
)  # 1e-9: 1-pixel patch
GRID = ([1, 2, np.int64(2)], [3, 16, 0, -1, 2.0, True, None, "2"])  # 3 and 16 may not fit the image
NUM_CLASSES_POOL = (
    [NUM_CLASSES, np.int64(NUM_CLASSES), np.int32(NUM_CLASSES)],
    [None, 3, 0, -1, True, False, 8.0, "8"],
)
MODE = (["batch", "pair", "elem"], ["Batch", "", None, 0])
BOOL = ([True, False], [1, 0, "yes", None])
MINMAX = (
    [None, (0.2, 0.8), [0.0, 1.0]],
    [(0.8, 0.2), (0.5, 0.5), (NAN, 0.5), (0.2, 1.5), 0.5, "ab", (0.1, 0.2, 0.3)],
)
SCOPE = (
    [(0.1, 0.8), (0.5, 0.5), (1.0, 1.0), [1e-9, 1e-9]],
    [(0.0, 0.5), (0.8, 0.2), (NAN, 0.5), (0.5, INF), 0.5, None],
)
FILL = ([0.0, 0.5, -1.0, np.float32(0.25), 7], ["0", None, True])
INTERPOLATION = (["bilinear", "nearest"], ["bicubic", None])
SALIENCY_MODE = (["train", "eval"], ["Train", None])
EPOCHS = ([0, 1, np.int64(0)], [-1, 1.5, True])
STEPS = ([None, 1, 3], [0, -2, 2.5])
IMAGE_DTYPES = ([torch.float16, torch.bfloat16, torch.float32, torch.float64], [torch.uint8, torch.int64])
IMAGE_KINDS = (["tensor"], ["ndarray", "3d"])
TARGET_KINDS = (
    ["indices", "indices-int32", "soft", "soft-float64"],
    [
        "soft-sum-2",
        "soft-sum-half",
        "soft-nan",
        "soft-negative",
        "index-too-large",
        "index-negative",
        "float-1d",
    ],
)
SALIENCY_KINDS = (["float32", "float64", "float16", "int64"], ["missing", "wrong-shape", "bool"])


CALL_ARGUMENTS = ("x", "target", "saliency")


@dataclass
class Draw:
    """The arguments of one example and the names of those drawn from a suspect pool.

    An example is ``clean`` (every argument valid: the output must be correct), ``ctor`` (one constructor
    argument, the ``focus``-th, is suspect) or ``call`` (one call argument, the ``focus``-th of x's dtype,
    x's kind, the target and the saliency map, is suspect), a third of the examples each: one suspect at a
    time, so that an error raised by one check never hides the others.
    """

    draw: Callable
    kwargs: dict = field(default_factory=dict)
    suspects: set = field(default_factory=set)
    focus: tuple[str, int] | None = None
    counts: dict = field(default_factory=lambda: {"ctor": 0, "call": 0})

    def __post_init__(self) -> None:
        kind = self.draw(st.sampled_from(["clean", "ctor", "call"]))
        if kind != "clean":
            self.focus = (kind, self.draw(st.integers(0, 15 if kind == "ctor" else 3)))

    @property
    def noisy(self) -> bool:
        return self.focus is not None

    def pick(self, name: str, pool: tuple[list, list], store: bool = True) -> object:
        valid, suspect = pool
        category = "call" if name in CALL_ARGUMENTS else "ctor"
        index = self.counts[category]
        self.counts[category] += 1
        if suspect and self.focus == (category, index):
            value = self.draw(st.sampled_from(suspect))
            self.suspects.add(name)
        else:
            value = self.draw(st.sampled_from(valid))
        if store:
            self.kwargs[name] = value
        return value


def _named(name: str) -> str:
    return rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])"


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _images(d: Draw, channels_ok: Callable[[int], bool] = lambda c: True) -> torch.Tensor:
    batch = d.draw(st.integers(1, 6))
    channels = d.draw(st.integers(1, 4).filter(lambda c: d.noisy or channels_ok(c)))
    if not channels_ok(channels):
        d.suspects.add("x")
    height, width = d.draw(st.integers(2, 16)), d.draw(st.integers(2, 16))
    dtype = d.pick("x", IMAGE_DTYPES, store=False)
    x = images(batch, channels, height, width, seed=d.draw(st.integers(0, 99)))
    x = (x * 255).to(dtype) if not dtype.is_floating_point else x.to(dtype)
    kind = d.pick("x", IMAGE_KINDS, store=False)
    if kind == "ndarray":
        return x.float().numpy()
    return x[0] if kind == "3d" else x


def _target(d: Draw, batch: int, num_classes: object) -> torch.Tensor:
    """Labels for ``batch`` images; ``num_classes`` is the constructor's value (may be suspect)."""
    width = int(num_classes) if _is_int(num_classes) and int(num_classes) > 0 else NUM_CLASSES
    if width < NUM_CLASSES:  # a small num_classes: the labels below may lie outside it
        d.suspects.add("target")
    kind = d.pick("target", TARGET_KINDS, store=False)
    gen = torch.Generator().manual_seed(d.draw(st.integers(0, 99)))
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)
    soft = torch.softmax(3 * torch.randn(batch, width, generator=gen), dim=1)
    targets = {
        "indices": labels,
        "indices-int32": labels.int(),
        "soft": soft,
        "soft-float64": one_hot(labels % width, width).double(),
        "soft-sum-2": 2 * soft,
        "soft-sum-half": 0.5 * soft,
        "soft-nan": torch.where(torch.arange(width) == 0, NAN, soft),
        "soft-negative": soft - one_hot(labels % width, width) * 0.5 + 0.5 / width,
        "index-too-large": torch.full((batch,), width),
        "index-negative": -1 - labels,
        "float-1d": labels.float(),
    }
    return targets[kind]


def _saliency(d: Draw, x: object) -> dict:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        return {}
    kind = d.pick("saliency", SALIENCY_KINDS, store=False)
    if kind == "missing":
        d.suspects.add("model")
        return {}
    batch, _, height, width = x.shape
    maps = torch.rand(batch, height, width, generator=torch.Generator().manual_seed(0))
    return {
        "float32": {"saliency": maps},
        "float64": {"saliency": maps.double()},
        "float16": {"saliency": maps.half()},
        "int64": {"saliency": (maps * 10).long()},
        "wrong-shape": {"saliency": maps[:, 1:]},
        "bool": {"saliency": maps > 0.5},
    }[kind]


def _check(
    d: Draw, make: Callable[[], object], call: Callable[[object], tuple], label_preserving: bool
) -> None:
    """Build, call, and check: a clean error naming a suspect argument, or a correct result."""
    try:
        fn = make()
        out, target = call(fn)
    except (ValueError, TypeError) as error:
        message = str(error)
        assert d.suspects, f"valid arguments refused: {type(error).__name__}: {message}\n{d.kwargs}"
        assert any(re.search(_named(name), message) for name in d.suspects), (
            f"the message does not name any of {sorted(d.suspects)}: {type(error).__name__}: {message}"
        )
        return
    x, given_target = d.kwargs["__x"], d.kwargs["__target"]
    assert isinstance(out, torch.Tensor)
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all(), "non-finite pixels from finite images"
    if label_preserving and fn.num_classes is None:
        assert target is given_target or torch.equal(target, given_target)
        return
    assert target.dim() == 2 and target.shape[0] == x.shape[0]
    assert torch.isfinite(target).all(), "non-finite targets"
    assert (target >= 0).all()
    torch.testing.assert_close(
        target.double().sum(dim=1), torch.ones(x.shape[0], dtype=torch.float64), atol=1e-5, rtol=0
    )


def _call(d: Draw, x: object, target: object, extra: dict | None = None) -> Callable[[object], tuple]:
    d.kwargs["__x"], d.kwargs["__target"] = x, target
    return lambda fn: fn(x, target, generator=torch.Generator().manual_seed(3), **(extra or {}))


def _ctor(d: Draw, cls: Callable, *names: str) -> Callable[[], object]:
    kwargs = {k: v for k, v in d.kwargs.items() if not k.startswith("__") and (not names or k in names)}
    return lambda: cls(**kwargs)


def _frame_args(d: Draw) -> None:
    d.pick("prob", PROB)
    d.pick("mode", MODE)
    d.pick("label_smoothing", SMOOTHING)
    d.pick("num_classes", NUM_CLASSES_POOL)


def _batch_of(x: object) -> int:
    return x.shape[0] if isinstance(x, torch.Tensor) and x.dim() == 4 else 4


# -- families ------------------------------------------------------------------------------------------------


def fuzz_mixup(draw) -> None:
    d = Draw(draw)
    _frame_args(d)
    mixup_alpha = d.pick("mixup_alpha", ALPHA_OR_OFF)
    cutmix_alpha = d.pick("cutmix_alpha", ALPHA_OR_OFF)
    minmax = d.pick("cutmix_minmax", MINMAX)
    d.pick("switch_prob", PROB)
    d.pick("correct_lam", BOOL)
    cutmix_on = (isinstance(cutmix_alpha, float) and cutmix_alpha > 0) or minmax is not None
    if not cutmix_on or mixup_alpha == 0:  # Mixup(0) alone has nothing to do; 0 means "off" with CutMix
        d.suspects.add("mixup_alpha")
    assume(not (mixup_alpha == INF and cutmix_on))  # a known bug: test_fuzz_mixup_inf_alpha_with_cutmix
    x = _images(d)
    target = _target(d, _batch_of(x), d.kwargs["num_classes"])
    _check(d, _ctor(d, Mixup), _call(d, x, target), label_preserving=False)


def fuzz_cutmix(draw) -> None:
    d = Draw(draw)
    _frame_args(d)
    d.pick("cutmix_alpha", ALPHA)
    d.pick("cutmix_minmax", MINMAX)
    d.pick("correct_lam", BOOL)
    d.pick("mixup_alpha", ([0.0], [1.0, -1.0, NAN, INF, "0"]))
    d.pick("switch_prob", PROB)
    x = _images(d)
    target = _target(d, _batch_of(x), d.kwargs["num_classes"])
    _check(d, _ctor(d, CutMix), _call(d, x, target), label_preserving=False)


def fuzz_saliencymix(draw) -> None:
    d = Draw(draw)
    _frame_args(d)
    d.pick("alpha", ALPHA)
    d.pick("per_sample", BOOL)
    d.pick("correct_lam", BOOL)
    given_map = draw(st.booleans())
    x = _images(d, channels_ok=lambda c: given_map or c in (1, 3))
    target = _target(d, _batch_of(x), d.kwargs["num_classes"])
    extra = _saliency(d, x) if given_map else {}
    if given_map and not extra:
        d.suspects.discard("model")  # SaliencyMix computes its own map when none is given
        if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] not in (1, 3):
            d.suspects.add("x")
    _check(d, _ctor(d, SaliencyMix), _call(d, x, target, extra), label_preserving=False)


def fuzz_resizemix(draw) -> None:
    d = Draw(draw)
    _frame_args(d)
    d.pick("scope", SCOPE)
    d.pick("interpolation", INTERPOLATION)
    x = _images(d)
    target = _target(d, _batch_of(x), d.kwargs["num_classes"])
    _check(d, _ctor(d, ResizeMix), _call(d, x, target), label_preserving=False)


def fuzz_hybridmix(draw, forced: dict | None = None) -> None:
    """HybridMix's arguments; ``forced`` {name: values} draws those arguments from ``values``, as suspects."""
    d = Draw(draw)
    _frame_args(d)
    forced = forced or {}
    for name, values in forced.items():
        d.kwargs[name] = draw(st.sampled_from(values))
        d.suspects.add(name)

    def pick(name: str, pool: tuple[list, list]) -> object:
        return d.kwargs[name] if name in forced else d.pick(name, pool)

    alphas = [
        pick("mixup_alpha", ALPHA_OR_OFF),
        pick("cutmix_alpha", ALPHA_OR_OFF),
        # inf: a known bug (test_fuzz_hybridmix_inf_saliencymix_alpha)
        pick("saliencymix_alpha", ([0.0, 1.0, np.float64(0.4)], [-1.0, -INF, NAN, True, "1", None])),
    ]
    minmax = pick("cutmix_minmax", MINMAX)
    scope = pick("resizemix_scope", ([None, (0.2, 0.5)], SCOPE[1]))
    pick("switch_prob", PROB)
    pick("correct_lam", BOOL)
    salfmix_prob = pick("salfmix_prob", PROB)
    # suspect values: a known bug (test_fuzz_hybridmix_salfmix_argument_names)
    pick("salfmix_grid", (GRID[0], []))
    pick("salfmix_ratio", (RATIO[0], []))
    pick("salfmix_pool", (BOOL[0], []))
    d.pick("saliency_mode", SALIENCY_MODE)
    d.pick("warmup_epochs", EPOCHS)
    d.pick("steps_per_epoch", STEPS)
    enabled = [a for a in alphas if isinstance(a, float) and a > 0] or minmax is not None or scope is not None
    if not enabled and salfmix_prob == 0:
        d.suspects.update({"salfmix_prob", "mixup_alpha", "cutmix_alpha", "saliencymix_alpha"})
    saliencymix_on = isinstance(alphas[2], float) and alphas[2] > 0
    x = _images(d, channels_ok=lambda c: not saliencymix_on or c in (1, 3))
    target = _target(d, _batch_of(x), d.kwargs["num_classes"])
    extra = _saliency(d, x)
    _check(d, _ctor(d, HybridMix), _call(d, x, target, extra), label_preserving=False)


def fuzz_salfmix_family(draw, cls: type) -> None:
    d = Draw(draw)
    d.pick("grid", GRID)
    d.pick("ratio", RATIO)
    d.pick("prob", PROB)
    d.pick("pool", BOOL)
    d.pick("saliency_mode", SALIENCY_MODE)
    d.pick("inplace", BOOL)
    d.pick("num_classes", NUM_CLASSES_POOL)
    d.pick("label_smoothing", SMOOTHING)
    if cls is SaliencyCutout:
        d.pick("fill", ([0.0, -1.0], FILL[1]))
    x = _images(d)
    target = _target(d, _batch_of(x), d.kwargs["num_classes"])
    extra = _saliency(d, x)
    _check(d, _ctor(d, cls), _call(d, x, target, extra), label_preserving=True)


def fuzz_cutout(draw) -> None:
    d = Draw(draw)
    d.pick("mask_ratio", RATIO)
    d.pick("prob", PROB)
    d.pick("fill", FILL)
    d.pick("inplace", BOOL)
    d.pick("num_classes", NUM_CLASSES_POOL)
    d.pick("label_smoothing", SMOOTHING)
    d.pick("warmup_epochs", EPOCHS)
    d.pick("steps_per_epoch", STEPS)
    x = _images(d)
    target = _target(d, _batch_of(x), d.kwargs["num_classes"])
    _check(d, _ctor(d, Cutout), _call(d, x, target), label_preserving=True)


FAMILIES = {
    "Mixup": fuzz_mixup,
    "CutMix": fuzz_cutmix,
    "SaliencyMix": fuzz_saliencymix,
    "ResizeMix": fuzz_resizemix,
    "HybridMix": fuzz_hybridmix,
    "SalfMix": lambda draw: fuzz_salfmix_family(draw, SalfMix),
    "RandomSelfMix": lambda draw: fuzz_salfmix_family(draw, RandomSelfMix),
    "SaliencyCutout": lambda draw: fuzz_salfmix_family(draw, SaliencyCutout),
    "Cutout": fuzz_cutout,
}


@pytest.mark.parametrize("family", list(FAMILIES))
@FUZZ
@given(data=st.data())
def test_fuzz_clean_error_or_correct_output(family, data):
    FAMILIES[family](data.draw)


# -- families that broke the rule (fixed; fuzzed on their own so that a regression names them) ---------------


@FIXED_FAMILY
@given(
    data=st.data(),
    mode=st.sampled_from(MODE[0]),
    switch_prob=st.sampled_from([0.0, 0.5]),
    cutmix=st.sampled_from([{"cutmix_alpha": 1.0}, {"cutmix_minmax": (0.2, 0.8)}]),
)
def test_fuzz_mixup_inf_alpha_with_cutmix(data, mode, switch_prob, cutmix):
    d = Draw(data.draw)
    d.kwargs.update(
        num_classes=NUM_CLASSES, label_smoothing=0.0, mode=mode, switch_prob=switch_prob, **cutmix
    )
    d.kwargs["mixup_alpha"] = INF
    d.suspects.add("mixup_alpha")
    x = _images(Draw(data.draw))  # drawn on the side: its own suspects do not count
    assume(isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point())
    target = torch.randint(0, NUM_CLASSES, (x.shape[0],), generator=torch.Generator().manual_seed(0))
    _check(d, _ctor(d, Mixup), _call(d, x, target), label_preserving=False)


@FIXED_FAMILY
@given(data=st.data())
def test_fuzz_hybridmix_inf_saliencymix_alpha(data):
    fuzz_hybridmix(data.draw, forced={"saliencymix_alpha": [INF]})


BAD_SALFMIX_ARGS = {
    "salfmix_grid": [0, -1, 2.0, True, None],
    "salfmix_ratio": [0.0, NAN, 1.5, True],
    "salfmix_pool": [1, None, "no"],
}


@pytest.mark.parametrize("name", list(BAD_SALFMIX_ARGS))
@FIXED_FAMILY
@given(data=st.data())
def test_fuzz_hybridmix_salfmix_argument_names(data, name):
    fuzz_hybridmix(data.draw, forced={name: BAD_SALFMIX_ARGS[name]})
