"""The method registry is the one vocabulary: every front end derives its names, labels and flags from
``methods.SPECS`` and builds the same transform for a name (issue 20, item 2)."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conformance._conformance_cases import CASES

from salfmix_transforms import flags, methods, viz
from salfmix_transforms.cli import OneLineArgumentParser

ROOT = Path(__file__).resolve().parents[1]
K = 10


def _load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"registry_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _from_flags(argv: list[str]):
    parser = OneLineArgumentParser(prog="train.py")
    flags.add_augmentation_flags(parser)
    args = flags.parse_augmentation_flags(parser, argv)
    return args, flags.build_batch_transform(args, K)


def _same_transform(a, b) -> bool:
    """The same class with the same constructor state (``inplace`` aside: the scripts own their batch)."""
    if a is None or b is None:
        return a is None and b is None
    state = lambda t: {k: v for k, v in vars(t).items() if k not in ("inplace", "counter")}  # noqa: E731
    return type(a) is type(b) and repr(state(a)) == repr(state(b))


@pytest.mark.parametrize("name", methods.METHODS)
def test_every_front_end_builds_the_registry_method_of_a_name(name):
    spec = methods.spec(name)
    built = methods.build(name, K)
    # train_timm.py / train_seg.py: --method NAME is the name's flags, and builds the same transform.
    args, from_flags = _from_flags(["--method", name])
    assert flags.METHOD_FLAGS[name] == spec.flags
    assert flags.method_name(args) == name
    assert flags.uses_saliency(args) == spec.needs_model
    assert flags.uses_grid(args) == spec.uses_grid
    assert _same_transform(from_flags, built), (from_flags, built)
    # ... and the flags alone (without --method) train the same method, under the same name.
    given = [
        f"--{dest.replace('_', '-')}" + ("" if value is True else f" {value}")
        for dest, value in spec.flags.items()
    ]
    if given:
        alone, from_alone = _from_flags(" ".join(given).split())
        assert flags.method_name(alone) in (name, f"salfmix+hybrid-{spec.flags.get('hybrid')}")
        assert _same_transform(from_alone, from_flags)
    # the pictures (viz / show): one row per method but the baseline, under its label.
    if spec.factory is None:
        assert spec.label not in viz.REGISTRY_NAMES
    else:
        assert viz.REGISTRY_NAMES[spec.label] == name
        assert type(viz.default_methods(K)[spec.label]) is type(built)


def test_benchmarks_and_conformance_cases_use_the_registry_vocabulary():
    accuracy = _load_benchmark("accuracy")
    labels = {row: label for row, label, _ in accuracy.ROWS}
    for spec in methods.SPECS:
        if spec.name in labels:
            assert labels[spec.name] == spec.label
    assert set(labels) - set(methods.METHODS) == set(accuracy.ROW_FLAGS)  # the cached-saliency rows
    segmentation = _load_benchmark("segmentation")
    registry_rows = set(segmentation.ROWS) - set(segmentation.ROW_FLAGS)  # less the cached-saliency row
    assert registry_rows <= set(methods.METHODS)
    assert all(segmentation.ROWS[name] == methods.spec(name).label for name in registry_rows)
    # Every transform of the registry has a conformance case, which asks for a map exactly when it needs one.
    cases = {case.name.replace(".", " ").lower(): case for case in CASES}
    for spec in methods.SPECS:
        if spec.factory is None:
            continue
        cls = spec.factory.__self__ if hasattr(spec.factory, "__self__") else spec.factory
        name = cls.__name__.lower() + (f" {spec.name.rsplit('-', 1)[1]}" if spec.hybrid else "")
        assert name in cases, f"no conformance case for {spec.name} ({name})"
        assert cases[name].needs_map == spec.needs_model, spec.name


def test_show_takes_registry_names_and_labels():
    from salfmix_transforms.show import _METHOD_SLUGS, _slug

    for spec in methods.SPECS[1:]:
        assert _METHOD_SLUGS[_slug(spec.name)] == spec.label
        assert _METHOD_SLUGS[_slug(spec.label)] == spec.label
    assert _METHOD_SLUGS[_slug("RandomSelfMix")] == methods.spec("salfmix-nosal").label


def test_the_old_flags_name_is_a_deprecated_alias():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = flags.METHODS
    assert old is flags.METHOD_FLAGS
    assert [w.category for w in caught] == [DeprecationWarning]
    assert caught[0].filename == __file__


def test_a_flag_against_the_resumed_runs_method_is_refused_without_blaming_method():
    """``--resume RUN --hybrid fmix`` on an ``fmix`` run: the method came from the checkpoint, not from the
    command line, so "drop --method" cannot be followed (found by a new-user review)."""
    parser = OneLineArgumentParser(prog="train.py")
    flags.add_augmentation_flags(parser)
    with pytest.raises(flags.UsageError) as caught:
        flags.parse_augmentation_flags(parser, ["--hybrid", "fmix"], {"method": "fmix"})
    message = str(caught.value)
    assert "drop --method" not in message and "fmix is fmix" not in message
    assert "the run being resumed trains fmix" in message and "start a new run" in message
    parser = OneLineArgumentParser(prog="train.py")  # parse_augmentation_flags sets the parser's defaults
    flags.add_augmentation_flags(parser)
    with pytest.raises(flags.UsageError, match=r"--method cutmix, but with --mixup 1.0 the run would train"):
        flags.parse_augmentation_flags(parser, ["--method", "cutmix", "--mixup", "1.0"])


def test_every_method_says_whether_it_keeps_class_masks():
    """``methods.build(name, None)``: the methods that only move pixels return a class mask for a class mask
    (issue 22: train_seg.py's loss is then plain cross-entropy); those that blend labels refuse it."""
    generator = torch.Generator().manual_seed(0)
    x, saliency = torch.rand(4, 3, 8, 8, generator=generator), torch.rand(4, 8, 8, generator=generator)
    mask = torch.randint(0, 3, (4, 8, 8), generator=generator)
    blending = set()
    for spec in methods.SPECS:
        if spec.factory is None:
            continue
        transform = methods.build(spec.name, None, warmup_epochs=0)
        if transform.keeps_class_masks:
            _, target = transform(x, mask, saliency=saliency)
            assert target.shape == mask.shape and target.dtype == mask.dtype, spec.name
        else:
            blending.add(spec.name)
            with pytest.raises(ValueError, match="blends labels"):
                transform(x, mask, saliency=saliency)
    assert blending == {"mixup", "fmix", "hybridmix-v1"}
