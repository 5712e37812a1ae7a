"""The package's layout holds (issue 20): no private name is used across modules, the scripts import no
private module, and the two scripts check ``--salfmix-grid`` against the image size with one function."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from salfmix_transforms import flags
from salfmix_transforms.cli import UsageError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "salfmix_transforms"
SOURCES = sorted(PACKAGE.rglob("*.py"))
SCRIPTS = [ROOT / "train_timm.py", ROOT / "train_seg.py"]


def _imported_names(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from module import name`` in the file, at any depth."""
    tree = ast.parse(path.read_text())
    return [
        (node.module or "", alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]


@pytest.mark.parametrize("path", SOURCES + SCRIPTS, ids=lambda p: p.name)
def test_no_private_name_is_imported_from_another_module(path):
    private = [f"{module}.{name}" for module, name in _imported_names(path) if name.startswith("_")]
    assert not private, f"{path.name} imports private names {private}"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_use_only_public_modules(path):
    private = [
        module
        for module, _ in _imported_names(path)
        if module.startswith("salfmix_transforms") and any(p.startswith("_") for p in module.split("."))
    ]
    assert not private, f"{path.name} imports from private modules {private}"


def _private_definitions(tree: ast.AST) -> set[str]:
    """The private names a module defines: functions, classes, attributes it assigns (``x._y = ...``)."""
    names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names |= {t.attr for t in targets if isinstance(t, ast.Attribute)}
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def _own(node: ast.Attribute) -> bool:
    """``self._x``, ``cls._x``, ``super()._x``: a class's own (or inherited, protected) member."""
    receiver = node.value
    if isinstance(receiver, ast.Call):
        receiver = receiver.func
    return isinstance(receiver, ast.Name) and receiver.id in {"self", "cls", "super"}


def test_private_attributes_are_not_read_across_modules():
    """``obj._name`` where ``_name`` belongs to another of the package's modules (its internals) is not read
    (a subclass's ``self._name`` is); PyTorch's internals (``_orig_mod``, ``_buffers``) are not ours."""
    trees = {path: ast.parse(path.read_text()) for path in SOURCES + SCRIPTS}
    defined = {path: _private_definitions(tree) for path, tree in trees.items()}
    offenders = []
    for path, tree in trees.items():
        elsewhere = set().union(*(names for other, names in defined.items() if other != path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in elsewhere - defined[path] and not _own(node):
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert not offenders, offenders


@pytest.mark.parametrize(
    ("height", "width", "what"), [(32, 32, "images"), (64, 48, "crops")], ids=["timm", "seg"]
)
def test_one_grid_check_for_both_scripts(height, width, what):
    def parse(argv: list[str]) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        flags.add_augmentation_flags(parser)
        return flags.parse_augmentation_flags(parser, argv)

    args = parse(["--method", "salfmix", "--salfmix-grid", "200"])
    with pytest.raises(UsageError, match=f"--salfmix-grid 200 does not fit {height}x{width} {what}"):
        flags.check_grid_fits(args, height, width, what)
    args.salfmix_grid = min(height, width)
    flags.check_grid_fits(args, height, width, what)  # the largest grid that fits
    baseline = parse(["--method", "baseline", "--salfmix-grid", "200"])
    flags.check_grid_fits(baseline, height, width, what)  # a method without a grid ignores it


def test_one_unwrap_helper_and_the_old_name_warns():
    """``saliency.plain_module`` is the one unwrap helper (issue 20); ``distributed.without_ddp`` (public
    until then) is a deprecated alias of its ``keep_compiled=True`` form."""
    import torch

    from salfmix_transforms import distributed
    from salfmix_transforms.saliency import plain_module

    model = torch.nn.Linear(2, 2)
    wrapped = torch.nn.DataParallel(model)
    assert plain_module(wrapped) is model and plain_module(wrapped, keep_compiled=True) is model
    with pytest.warns(DeprecationWarning, match="plain_module"):
        without_ddp = distributed.without_ddp
    assert without_ddp(model) is model and without_ddp(wrapped) is model
    assert "without_ddp" not in distributed.__all__
