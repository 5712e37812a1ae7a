"""Which timm (issue 21, item 13): the box code we match is timm's from release 1.0.29 on, and the lower
bound of ``timm`` in ``pyproject.toml`` says so; the installed timm's box code equals ours draw for draw.

Before 1.0.29 timm's ``rand_bbox`` ended the box at ``c + cut // 2`` (ours and timm >= 1.0.29:
``c + (cut + 1) // 2``) and ``rand_bbox_minmax`` drew the corner from ``[0, S - cut)`` (ours and
timm >= 1.0.29: ``[0, S - cut]``); with 1.0.28's code only 23 / 60 and 16 / 60 of the draws below match.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from packaging.version import Version
from timm.data import mixup as timm_mixup

from salfmix_transforms import boxes
from salfmix_transforms.boxes import box_lambda, cutmix_box, minmax_box

FIRST_MATCHING_TIMM = Version("1.0.29")
DRAWS = 60


def _timm_requirement() -> str:
    """The ``timm`` entry of ``[project] dependencies`` (read as text: ``tomllib`` needs Python 3.11)."""
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    (requirement,) = re.findall(r'^\s*"(timm\b[^"]*)"', dependencies, re.M)
    return requirement


def test_pyproject_requires_the_first_timm_with_the_box_code_we_match():
    requirement = _timm_requirement()
    match = re.fullmatch(r"timm\s*>=\s*([0-9.]+)", requirement)
    assert match, requirement
    assert Version(match.group(1)) == FIRST_MATCHING_TIMM, requirement
    assert Version(version("timm")) >= FIRST_MATCHING_TIMM  # the installed timm, which the tests compare with


def test_cutmix_boxes_equal_the_installed_timms_rand_bbox_on_every_draw(monkeypatch):
    rng = np.random.default_rng(0)
    matched = 0
    for _ in range(DRAWS):
        height, width = (int(v) for v in rng.integers(2, 40, size=2))
        lam = float(rng.random())
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        centres = [cy, cx]

        def np_randint(low, high=None, size=None, queue=centres):
            return queue.pop(0)

        monkeypatch.setattr(np.random, "randint", np_randint)
        box, timm_lam = timm_mixup.cutmix_bbox_and_lam((3, height, width), lam, correct_lam=True)
        ours = cutmix_box(height, width, torch.tensor([lam], dtype=torch.float64), torch.tensor([cy]),
                          torch.tensor([cx]))  # fmt: skip
        our_lam = float(box_lambda(*ours, height, width)[0])
        matched += tuple(int(c[0]) for c in ours) == tuple(int(c) for c in box) and our_lam == timm_lam
    assert matched == DRAWS, f"{matched}/{DRAWS} draws equal timm {version('timm')}'s"


def test_minmax_boxes_equal_the_installed_timms_rand_bbox_minmax_on_every_draw(monkeypatch):
    """The same uniforms drive timm's ``np.random.randint(low, high)`` (``high`` excluded) and our
    ``randint_between(low, high)`` (``high`` included), so equal ranges give equal boxes."""
    rng = np.random.default_rng(1)
    matched = 0
    for _ in range(DRAWS):
        height, width = (int(v) for v in rng.integers(8, 40, size=2))
        minmax = (0.2, 0.8)
        uniforms = [float(u) for u in rng.random(4)]
        timm_u, our_u = list(uniforms), list(uniforms)

        def np_randint(low, high=None, size=None, queue=timm_u):
            return low + int(queue.pop(0) * (high - low))

        def ours_randint(low, high, generator, queue=our_u):
            return low + (queue.pop(0) * (high - low + 1).double()).long()

        monkeypatch.setattr(np.random, "randint", np_randint)
        monkeypatch.setattr(boxes, "randint_between", ours_randint)
        box = timm_mixup.rand_bbox_minmax((3, height, width), minmax)
        ours = minmax_box(height, width, minmax, 1, None, "cpu")
        matched += tuple(int(c[0]) for c in ours) == tuple(int(c) for c in box)
    assert matched == DRAWS, f"{matched}/{DRAWS} draws equal timm {version('timm')}'s"
