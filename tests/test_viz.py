"""Pictures: figures, boxes at the plan's coordinates, PNG files, and the show command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from salfmix_transforms.cutout import SaliencyCutout
from salfmix_transforms.patches import copy_patches
from salfmix_transforms.salfmix import SalfMix
from salfmix_transforms.show import load_model, main
from salfmix_transforms.viz import (
    METHOD_NAMES,
    default_methods,
    plot_methods,
    plot_salfmix,
    plot_saliency_over_time,
    unnormalize,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_SIGNATURE


def _batch(b: int = 3, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(b, 3, size, size, generator=g),
        torch.arange(b) % 10,
        torch.rand(b, size, size, generator=g),
    )


def _labelled(ax, label: str):
    found = [p for p in ax.patches if p.get_label() == label]
    assert len(found) == 1, f"expected one {label} rectangle, got {len(found)}"
    return found[0]


class _TinyNet(torch.nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).relu().mean(dim=(2, 3)))


# -- plot_salfmix ----------------------------------------------------------------------------------------


def test_plot_salfmix_returns_a_figure_with_five_axes_per_image_and_writes_a_png(tmp_path):
    x, _, smap = _batch(3)
    before = plt.get_fignums()
    fig = plot_salfmix(
        x, smap, generator=torch.Generator().manual_seed(0), save=tmp_path / "sub" / "steps.png"
    )
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 15
    assert _is_png(tmp_path / "sub" / "steps.png")
    assert plt.get_fignums() == before  # not registered with pyplot: nothing leaks, no window
    assert len(plot_salfmix(x, smap, max_images=2).axes) == 10


@pytest.mark.parametrize("shape", [(32, 32), (24, 40)])
def test_boxes_and_cells_are_drawn_at_the_plan_coordinates(shape):
    h, w = shape
    x = torch.rand(2, 3, h, w)
    smap = torch.rand(2, h, w)
    transform = SalfMix(grid=4, ratio=0.3)
    plan = transform.plan(smap, torch.Generator().manual_seed(3))
    fig = plot_salfmix(x, smap, transform=transform, plan=plan)
    axes = np.array(fig.axes).reshape(2, 5)
    for i in range(2):
        grid_ax, box_ax = axes[i, 2], axes[i, 3]
        for label, top, left in (
            ("P_m", plan.src_top[i], plan.src_left[i]),
            ("P_l", plan.dst_top[i], plan.dst_left[i]),
        ):
            rect = _labelled(box_ax, label)
            assert rect.get_xy() == (int(left) - 0.5, int(top) - 0.5)
            assert (rect.get_width(), rect.get_height()) == (plan.patch_width, plan.patch_height)
        for label, (row, col) in (("R_m", plan.max_cell[i].tolist()), ("R_l", plan.min_cell[i].tolist())):
            cell = _labelled(grid_ax, label)  # in pooled-grid coordinates
            assert cell.get_xy() == (col - 0.5, row - 0.5)
            assert (cell.get_width(), cell.get_height()) == (1, 1)
            pixels = _labelled(box_ax, label)  # the same cell in pixel coordinates
            assert pixels.get_xy() == (col * plan.cell_width - 0.5, row * plan.cell_height - 0.5)
            assert (pixels.get_width(), pixels.get_height()) == (plan.cell_width, plan.cell_height)
        # The pooled grid has (H // kh, W // kw) cells.
        assert grid_ax.images[0].get_array().shape == (h // plan.cell_height, w // plan.cell_width)


def test_result_column_is_the_patch_copy_unnormalized():
    x, _, smap = _batch(2)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    normalized = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    plan = SalfMix().plan(smap, torch.Generator().manual_seed(1))
    fig = plot_salfmix(normalized, smap, plan=plan, mean=mean, std=std)
    expected = unnormalize(copy_patches(normalized, plan), mean, std)
    shown_input = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(shown_input, x[0].permute(1, 2, 0).numpy(), atol=1e-5)
    for i in range(2):
        np.testing.assert_allclose(
            np.asarray(fig.axes[5 * i + 4].images[0].get_array()), expected[i], atol=1e-6
        )


def test_saliency_cutout_result_fills_the_least_salient_patch():
    x, _, smap = _batch(1)
    transform = SaliencyCutout(fill=0.0)
    plan = transform.plan(smap, torch.Generator().manual_seed(0))
    fig = plot_salfmix(x, smap, transform=transform, plan=plan)
    shown = np.asarray(fig.axes[4].images[0].get_array())
    t, lft = int(plan.dst_top[0]), int(plan.dst_left[0])
    assert np.all(shown[t : t + plan.patch_height, lft : lft + plan.patch_width] == 0.0)


def test_plot_salfmix_computes_the_gradient_saliency_of_a_model():
    torch.manual_seed(0)
    x, target, _ = _batch(2)
    fig = plot_salfmix(x, model=_TinyNet(), target=target, generator=torch.Generator().manual_seed(0))
    assert len(fig.axes) == 10
    with pytest.raises(ValueError, match="saliency"):
        plot_salfmix(x)


def test_unnormalize_inverts_normalize_and_clips():
    x = torch.rand(2, 3, 8, 8)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]
    normalized = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    np.testing.assert_allclose(unnormalize(normalized, mean, std), x.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    out = unnormalize(torch.full((1, 1, 4, 4), 3.0))
    assert out.shape == (1, 4, 4, 1) and out.max() == 1.0
    with pytest.raises(ValueError, match="mean"):
        unnormalize(x, mean=[0.1, 0.2])


# -- plot_saliency_over_time ----------------------------------------------------------------------------


def test_saliency_over_time_draws_each_snapshot_with_its_own_plan(tmp_path):
    x, _, _ = _batch(3)
    maps = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(t)) for t in range(4)]
    fig = plot_saliency_over_time(
        x, maps, labels=[f"epoch {t}" for t in range(4)], seed=2, max_images=2, save=tmp_path / "time.png"
    )
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 2 * 4
    assert _is_png(tmp_path / "time.png")
    axes = np.array(fig.axes).reshape(4, 4)  # rows: image 0, its result, image 1, its result
    assert [ax.get_title() for ax in axes[0]] == [f"epoch {t}" for t in range(4)]
    for t, smap in enumerate(maps):
        plan = SalfMix().plan(smap, torch.Generator().manual_seed(2))  # same seed for every snapshot
        for i in range(2):
            rect = _labelled(axes[2 * i, t], "P_m")
            assert rect.get_xy() == (int(plan.src_left[i]) - 0.5, int(plan.src_top[i]) - 0.5)
            rect = _labelled(axes[2 * i, t], "P_l")
            assert rect.get_xy() == (int(plan.dst_left[i]) - 0.5, int(plan.dst_top[i]) - 0.5)
            result = np.asarray(axes[2 * i + 1, t].images[0].get_array())
            np.testing.assert_allclose(result, copy_patches(x, plan)[i].permute(1, 2, 0).numpy())
    assert len(plot_saliency_over_time(x, maps[:2], show_result=False).axes) == 3 * 2
    with pytest.raises(ValueError, match="labels"):
        plot_saliency_over_time(x, maps, labels=["a"])
    with pytest.raises(ValueError, match=r"saliencies\[1\]"):
        plot_saliency_over_time(x, [maps[0], torch.rand(3, 16, 16)])


# -- plot_methods ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_plot_methods_draws_one_row_per_method(tmp_path):
    x, target, smap = _batch(4)
    fig = plot_methods(x, target, num_classes=10, saliency=smap, save=tmp_path / "methods.png")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == (len(METHOD_NAMES) + 1) * 4
    assert _is_png(tmp_path / "methods.png")
    labels = [fig.axes[4 * r].get_ylabel() for r in range(len(METHOD_NAMES) + 1)]
    assert labels == ["original", *METHOD_NAMES]
    small = plot_methods(
        x, target, methods={"SalfMix": SalfMix()}, saliency=smap, max_images=2, show_original=False
    )
    assert len(small.axes) == 2


def test_plot_methods_rows_are_the_transform_outputs_and_reproducible():
    x, target, _ = _batch(4)
    methods = default_methods(10)
    fig = plot_methods(x, target, methods={"CutMix": methods["CutMix"]}, seed=5, show_original=False)
    expected, _ = methods["CutMix"](x, target, generator=torch.Generator().manual_seed(5))
    for c in range(4):
        np.testing.assert_allclose(
            np.asarray(fig.axes[c].images[0].get_array()), expected[c].permute(1, 2, 0).clamp(0, 1).numpy()
        )


def test_plot_methods_gives_the_gradient_saliency_to_self_mixing_only():
    x, target, smap = _batch(2)
    seen: dict[str, dict] = {}

    def spy(name, method):
        def call(x, target, **kwargs):
            seen[name] = kwargs
            return method(x, target, **kwargs)

        return call

    methods = default_methods(10)
    plot_methods(
        x,
        target,
        methods={"SalfMix": spy("SalfMix", methods["SalfMix"]), "SaliencyMix": methods["SaliencyMix"]},
        saliency=smap,
    )
    assert seen["SalfMix"]["saliency"] is not None
    with pytest.raises(ValueError, match="num_classes"):
        plot_methods(x, target)


# -- show command line -----------------------------------------------------------------------------------


def _save_checkpoint(
    path: Path, width: float = 0.125, num_classes: int = 10, prefix: str = "module."
) -> dict:
    import timm

    import salfmix_transforms.models  # noqa: F401

    torch.manual_seed(1)
    model = timm.create_model("preactresnet18", num_classes=num_classes, width=width)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    args = argparse.Namespace(model="preactresnet18", width=width, num_classes=None, img_size=None)
    # What timm's CheckpointSaver writes for train_timm.py (argparse.Namespace included).
    torch.save(
        {"epoch": 0, "arch": "preactresnet18", "args": args, "state_dict": state, "state_dict_ema": ema}, path
    )
    return model.state_dict()


@pytest.mark.slow
def test_show_writes_a_png_for_the_default_images_with_a_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "last.pth.tar"
    state = _save_checkpoint(ckpt)
    model, info = load_model("preactresnet18", str(ckpt))
    assert info["width"] == 0.125 and info["num_classes"] == 10
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert not model.training and info["args"]["width"] == 0.125
    ema_model, _ = load_model(None, str(ckpt), use_ema=True)
    weight = "layer1.0.conv1.weight"
    assert torch.equal(ema_model.state_dict()[weight], state[weight] + 1)
    out = tmp_path / "grid.png"
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--num-images", "3"]) == 0
    assert _is_png(out)
    with Image.open(out) as img:
        assert img.height > img.width  # one row per method
    steps = tmp_path / "steps.png"
    assert main(["--figure", "steps", "--method", "salfmix", "--out", str(steps), "--num-images", "2"]) == 0
    assert _is_png(steps)


def _image_tree(root: Path, classes=("cat", "dog"), per_class: int = 2, size: int = 20) -> None:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


@pytest.mark.slow
def test_show_reads_image_folders(tmp_path):
    tree = tmp_path / "tree"
    _image_tree(tree)
    out = tmp_path / "tree.png"
    args = ["--images", str(tree), "--method", "SalfMix", "--method", "hybridmix-v3", "--num-images", "3"]
    assert main([*args, "--out", str(out), "--img-size", "16"]) == 0
    assert _is_png(out)
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in (tree / "cat").iterdir():
        (flat / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "flat.png"
    assert main(["--images", str(flat), "--method", "cutmix", "--out", str(out)]) == 0
    assert _is_png(out)


def test_show_fails_cleanly_with_one_line_and_exit_code_2(tmp_path, capsys):
    cases = [
        (["--images", str(tmp_path / "missing")], "does not exist"),
        (["--checkpoint", str(tmp_path / "missing.pth")], "does not exist"),
        (["--method", "nosuchmix"], "unknown method"),
        (["--model", "nosuchnet"], "unknown model"),
        (["--num-images", "0"], "--num-images"),
        (["--grid", "64"], "grid"),
    ]
    (tmp_path / "empty").mkdir()
    cases.append((["--images", str(tmp_path / "empty")], "no images"))
    bad = tmp_path / "other.pth"
    _save_checkpoint(bad, num_classes=10, prefix="")
    cases.append((["--checkpoint", str(bad), "--model", "preactresnet50"], "does not fit"))
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    cases.append((["--checkpoint", str(tmp_path / "garbage.pth")], "cannot read"))
    for argv, message in cases:
        out = tmp_path / "never.png"
        assert main([*argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("show: error:") and message in err, (argv, err)
        assert not out.exists()


@pytest.mark.slow
def test_show_module_runs_as_a_program(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "salfmix_transforms.show", "--images", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"show: error: image folder '{tmp_path / 'nope'}' does not exist"
    ]
