"""The README's examples run as they are written (every python block marked ``<!-- readme-test -->``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"<!-- readme-test -->\s*```python\n(.*?)```", re.DOTALL)


def _examples() -> list[str]:
    return _BLOCK.findall(README.read_text())


def test_the_readme_has_examples_for_timm_torchvision_and_albumentations():
    text = "\n".join(_examples())
    assert len(_examples()) >= 4
    for needle in ("mixup_args", "tv_tensors.Mask", "additional_targets", "steps_per_epoch"):
        assert needle in text


@pytest.mark.parametrize("index", range(len(_examples())))
def test_readme_example_runs(index):
    code = _examples()[index]
    exec(compile(code, f"README.md example {index}", "exec"), {"__name__": f"readme_example_{index}"})
