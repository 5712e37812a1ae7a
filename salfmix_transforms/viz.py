"""Pictures of what the transforms do (the kind of the paper's Figures 1-3 and 6), drawn with matplotlib.

* :func:`plot_salfmix`: for each image of a batch, the steps of SalfMix (Algorithm 1): the image, its
  saliency map, the average-pooled grid with ``R_m`` (most salient cell, red) and ``R_l`` (least salient
  cell, blue) marked, the patches ``P_m`` / ``P_l`` placed around them, and the result.
* :func:`plot_saliency_over_time`: how the saliency and the chosen patches of the same images change while
  the model trains (paper Figure 6), one column per snapshot.
* :func:`plot_methods`: one row per method (SalfMix, SaliencyCutout, RandomSelfMix, Cutout, Mixup, CutMix,
  SaliencyMix, ResizeMix, HybridMix v1/v2/v3) applied to the same images, with the top classes of the
  resulting (soft) target under each picture.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (so no window, no
global figure list, no backend switch: it renders with Agg whatever the session's backend) and writes a
PNG when ``save=`` is given. Images are un-normalized for display with the
``mean``/``std`` they were normalized with (:func:`unnormalize`).

Box coordinates: matplotlib's ``imshow`` puts pixel ``(r, c)`` at the square ``[c - 0.5, c + 0.5] x
[r - 0.5, r + 0.5]``, so a patch with top-left pixel ``(top, left)`` and size ``(ph, pw)`` is drawn as a
``Rectangle((left - 0.5, top - 0.5), pw, ph)``. Each rectangle carries a ``label`` (``"P_m"``, ``"P_l"``,
``"R_m"``, ``"R_l"``) so it can be found among ``ax.patches``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import methods
from ._validation import check_images, check_saliency
from .methods import SPECS
from .patches import SelfMixPlan, copy_patches, fill_patches, pool_saliency
from .salfmix import SalfMix

__all__ = [
    "METHOD_NAMES",
    "REGISTRY_NAMES",
    "default_methods",
    "plot_methods",
    "plot_salfmix",
    "plot_saliency_over_time",
    "unnormalize",
]

P_M_COLOR = "#e41a1c"  # red: the most salient cell / patch
P_L_COLOR = "#377eb8"  # blue: the least salient cell / patch

#: The rows of :func:`default_methods`: every registry method but the baseline, in the registry's order,
#: by display name (``MethodSpec.label``), with its registry name.
REGISTRY_NAMES = {spec.label: spec.name for spec in SPECS if spec.factory is not None}
METHOD_NAMES = tuple(REGISTRY_NAMES)


# -- helpers ---------------------------------------------------------------------------------------------


def unnormalize(
    x: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> np.ndarray:
    """Images (B, C, H, W) to displayable float arrays (B, H, W, C) in [0, 1].

    ``x * std + mean`` per channel when ``mean``/``std`` are given (the inverse of
    ``torchvision.transforms.Normalize``), then clipped to [0, 1]. Without them the values are taken as
    they are (images already in [0, 1]). One-channel images keep C = 1.
    """
    x = check_images(x).detach().to("cpu", torch.float32)
    channels = x.shape[1]
    for name, value in (("mean", mean), ("std", std)):
        if value is not None and len(value) not in (1, channels):
            raise ValueError(f"{name} must have 1 or C={channels} values, got {len(value)}")
    if std is not None:
        x = x * torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    if mean is not None:
        x = x + torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    return x.clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()


def _show_image(ax, image: np.ndarray) -> None:
    """Draw ``image`` (H, W, C) without ticks."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set(xticks=[], yticks=[])


def _box(ax, top: int, left: int, height: int, width: int, color: str, label: str, **kwargs) -> Rectangle:
    rect = Rectangle(
        (left - 0.5, top - 0.5), width, height, fill=False, edgecolor=color, label=label, **kwargs
    )
    ax.add_patch(rect)
    return rect


def _patch_boxes(ax, plan: SelfMixPlan, i: int) -> None:
    """Frame sample ``i``'s ``P_m`` (red) and ``P_l`` (blue)."""
    ph, pw = plan.patch_height, plan.patch_width
    _box(ax, int(plan.src_top[i]), int(plan.src_left[i]), ph, pw, P_M_COLOR, "P_m", linewidth=2)
    _box(ax, int(plan.dst_top[i]), int(plan.dst_left[i]), ph, pw, P_L_COLOR, "P_l", linewidth=2)


def _figure(rows: int, cols: int, cell_size_inches: float) -> tuple[Figure, np.ndarray]:
    """A figure of ``rows`` x ``cols`` square cells, and its axes (rows, cols)."""
    fig = Figure(figsize=(cols * cell_size_inches, rows * cell_size_inches), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig: Figure, save: str | os.PathLike | None, dpi: int) -> None:
    if save is not None:
        directory = os.path.dirname(os.fspath(save))
        if directory:
            os.makedirs(directory, exist_ok=True)
        fig.savefig(save, dpi=dpi, format="png", bbox_inches="tight")


def _saliency_of(
    x: torch.Tensor,
    saliency: torch.Tensor | None,
    model: torch.nn.Module | None,
    target: torch.Tensor | None,
    mode: str,
) -> torch.Tensor:
    if saliency is not None:
        return check_saliency(saliency, x).detach().to("cpu", torch.float32)
    if model is None or target is None:
        raise ValueError("pass saliency= (maps (B, H, W)) or both model= and target= to compute the saliency")
    from .saliency import gradient_saliency

    return gradient_saliency(model, x, target, mode=mode).detach().cpu()


def _apply_plan(transform: SalfMix, x: torch.Tensor, plan: SelfMixPlan) -> torch.Tensor:
    """Algorithm 1, line 6 for the SalfMix family (SaliencyCutout fills ``P_l`` instead of copying)."""
    fill = getattr(transform, "fill", None)
    if fill is not None:
        return fill_patches(
            x, plan.dst_top, plan.dst_left, plan.patch_height, plan.patch_width, fill, plan.applied
        )
    return copy_patches(x, plan)


def _first(plan: SelfMixPlan, count: int) -> SelfMixPlan:
    """The plan of the first ``count`` samples, on the CPU (where the pictures are drawn)."""
    per_sample = [f.name for f in fields(plan) if isinstance(getattr(plan, f.name), torch.Tensor)]
    return replace(plan, **{name: getattr(plan, name)[:count].cpu() for name in per_sample})


# -- SalfMix, step by step -------------------------------------------------------------------------------


def plot_salfmix(
    x: torch.Tensor,
    saliency: torch.Tensor | None = None,
    *,
    model: torch.nn.Module | None = None,
    target: torch.Tensor | None = None,
    transform: SalfMix | None = None,
    plan: SelfMixPlan | None = None,
    generator: torch.Generator | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    max_images: int = 4,
    titles: Sequence[str] | None = None,
    cell_size_inches: float = 1.8,
    save: str | os.PathLike | None = None,
    dpi: int = 100,
) -> Figure:
    """Draw SalfMix step by step (Algorithm 1): one row per image, five columns.

    Columns: the image; its saliency map; the average-pooled grid (Algorithm 1, line 1) with ``R_m`` (red)
    and ``R_l`` (blue) framed (line 2), with the cell means written in when the grid has at most 64 cells;
    the image with ``P_m`` (red) and ``P_l`` (blue) and, dotted, the cells they contain (lines 3-5); the
    result (line 6), marked "not applied" for a sample that ``prob`` left alone.

    Args:
        x: images (B, C, H, W), as the network sees them (normalized with ``mean``/``std``, if any).
        saliency: maps (B, H, W); when ``None`` they are the gradient saliency of ``model`` for ``target``.
        transform: the :class:`SalfMix` (or ``SaliencyCutout``/``RandomSelfMix``) whose choices are drawn;
            ``SalfMix()`` by default.
        plan: the choices to draw; by default ``transform.plan(saliency, generator)``.
        max_images: draw at most this many images (the first ones).
        titles: one label per image (for example its class), written left of its row.
        save: path of a PNG to write.

    Returns:
        The figure, with ``5 * min(B, max_images)`` axes in row-major order.
    """
    x = check_images(x)
    transform = SalfMix() if transform is None else transform
    smap = _saliency_of(x, saliency, model, target, getattr(transform, "saliency_mode", "train"))
    if plan is None:
        plan = transform.plan(smap, generator)
    count = max(1, min(int(max_images), x.shape[0]))
    plan = _first(plan, count)
    images = unnormalize(x[:count], mean, std)
    mixed = unnormalize(_apply_plan(transform, x[:count].detach().cpu(), plan), mean, std)
    pooled = pool_saliency(smap[:count], plan.cell_height, plan.cell_width).numpy()
    ch, cw = plan.cell_height, plan.cell_width

    fig, axes = _figure(count, 5, cell_size_inches)
    column_titles = ("image", "saliency", "pooled: $R_m$, $R_l$", "$P_m$ → $P_l$", type(transform).__name__)
    for i in range(count):
        ax_img, ax_sal, ax_grid, ax_box, ax_out = axes[i]
        _show_image(ax_img, images[i])
        ax_sal.imshow(smap[i].numpy(), cmap="inferno", interpolation="nearest")
        ax_grid.imshow(pooled[i], cmap="inferno", interpolation="nearest")
        (mr, mc), (lr, lc) = plan.max_cell[i].tolist(), plan.min_cell[i].tolist()
        _box(ax_grid, mr, mc, 1, 1, P_M_COLOR, "R_m", linewidth=2.5)
        _box(ax_grid, lr, lc, 1, 1, P_L_COLOR, "R_l", linewidth=2.5)
        if pooled.shape[1] * pooled.shape[2] <= 64:  # small grids: write the cell means
            low, high = float(pooled[i].min()), float(pooled[i].max())
            for r in range(pooled.shape[1]):
                for c in range(pooled.shape[2]):
                    value = float(pooled[i, r, c])
                    bright = high > low and (value - low) / (high - low) > 0.6
                    colour = "black" if bright else "white"
                    ax_grid.text(c, r, f"{value:.2g}", ha="center", va="center", fontsize=6, color=colour)
        _show_image(ax_box, images[i])
        _box(ax_box, mr * ch, mc * cw, ch, cw, P_M_COLOR, "R_m", linestyle=":", linewidth=1)
        _box(ax_box, lr * ch, lc * cw, ch, cw, P_L_COLOR, "R_l", linestyle=":", linewidth=1)
        _patch_boxes(ax_box, plan, i)
        _show_image(ax_out, mixed[i])
        if not bool(plan.applied[i]):
            ax_out.set_xlabel("not applied (prob)", fontsize=7)
        for j, ax in enumerate(axes[i]):
            ax.set(xticks=[], yticks=[])
            if i == 0:
                ax.set_title(column_titles[j], fontsize=8)
        if titles is not None and i < len(titles):
            ax_img.set_ylabel(str(titles[i]), fontsize=8)
    _save(fig, save, dpi)
    return fig


# -- the same images over training (paper Figure 6) ------------------------------------------------------


def plot_saliency_over_time(
    x: torch.Tensor,
    saliencies: Sequence[torch.Tensor],
    *,
    labels: Sequence[str] | None = None,
    transform: SalfMix | None = None,
    plans: Sequence[SelfMixPlan] | None = None,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    max_images: int = 4,
    show_result: bool = True,
    overlay_alpha: float = 0.6,
    cell_size_inches: float = 1.4,
    save: str | os.PathLike | None = None,
    dpi: int = 100,
) -> Figure:
    """The saliency of the same images at several points of training, with SalfMix's patches (Figure 6).

    One column per snapshot (``saliencies[t]``, maps (B, H, W) of the images ``x``); for every image a row
    with the image under its saliency (heat map, ``overlay_alpha``) and ``P_m`` (red) / ``P_l`` (blue), and,
    with ``show_result``, a row with the SalfMix result. Unless ``plans`` are given, every snapshot's plan is
    drawn with a generator seeded with ``seed``, so the random part of the placement is the same in every
    column and only the saliency makes the patches move.

    Args:
        labels: one title per snapshot (``"epoch 3"``).

    Returns:
        The figure, with ``(1 + show_result) * min(B, max_images) * len(saliencies)`` axes, row-major.
    """
    x = check_images(x)
    if len(saliencies) == 0:
        raise ValueError("saliencies must hold at least one (B, H, W) map")
    if plans is not None and len(plans) != len(saliencies):
        raise ValueError(f"plans has {len(plans)} entries for {len(saliencies)} saliency maps")
    if labels is not None and len(labels) != len(saliencies):
        raise ValueError(f"labels has {len(labels)} entries for {len(saliencies)} saliency maps")
    transform = SalfMix() if transform is None else transform
    maps = [
        check_saliency(m, x, name=f"saliencies[{t}]").detach().cpu().float() for t, m in enumerate(saliencies)
    ]
    if plans is None:
        plans = [transform.plan(m, torch.Generator().manual_seed(seed)) for m in maps]
    count = max(1, min(int(max_images), x.shape[0]))
    images = unnormalize(x[:count], mean, std)
    steps = len(maps)
    rows_per_image = 2 if show_result else 1
    fig, axes = _figure(count * rows_per_image, steps, cell_size_inches)
    for t, (smap, plan) in enumerate(zip(maps, plans)):
        result = unnormalize(_apply_plan(transform, x[:count].detach().cpu(), _first(plan, count)), mean, std)
        for i in range(count):
            ax = axes[i * rows_per_image, t]
            _show_image(ax, images[i])
            ax.imshow(smap[i].numpy(), cmap="inferno", alpha=overlay_alpha, interpolation="nearest")
            _patch_boxes(ax, plan, i)
            if i == 0:
                ax.set_title(labels[t] if labels is not None else f"snapshot {t}", fontsize=8)
            if show_result:
                ax_out = axes[i * rows_per_image + 1, t]
                _show_image(ax_out, result[i])
                if t == 0:
                    ax_out.set_ylabel("SalfMix", fontsize=7)
    _save(fig, save, dpi)
    return fig


# -- one row per method ----------------------------------------------------------------------------------


def default_methods(
    num_classes: int, *, grid: int = 4, ratio: float = 0.3
) -> dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]]:
    """The registry's transforms (:func:`salfmix_transforms.methods.build`), always applied, no warm-up.

    Keys are :data:`METHOD_NAMES` (row names of the pictures; :data:`REGISTRY_NAMES` maps them to the
    registry's names); every transform returns soft targets over ``num_classes`` classes. ``grid``/``ratio``
    are SalfMix's ``n``/``r`` (also inside HybridMix); the warm-up is 0 epochs so that the SalfMix step
    shows.
    """
    transforms = {}
    for row, name in REGISTRY_NAMES.items():
        spec = methods.spec(name)
        overrides: dict[str, object] = {}
        if spec.self_mixing:
            prefix = "salfmix_" if spec.hybrid else ""
            overrides = {f"{prefix}grid": grid, f"{prefix}ratio": ratio, "warmup_epochs": 0}
        transforms[row] = methods.build(name, num_classes, **overrides)
    return transforms


def _label_text(target: torch.Tensor, class_names: Sequence[str] | None, top: int = 2) -> str:
    if target.dim() == 0:
        index = int(target)
        return class_names[index] if class_names is not None else str(index)
    values, indices = target.float().topk(min(top, target.shape[0]))
    parts = []
    for value, index in zip(values.tolist(), indices.tolist()):
        if value <= 0.005:
            continue
        name = class_names[index] if class_names is not None else str(index)
        parts.append(f"{name} {value:.2f}")
    return "  ".join(parts)


def plot_methods(
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    methods: Mapping[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] | None = None,
    num_classes: int | None = None,
    model: torch.nn.Module | None = None,
    saliency: torch.Tensor | None = None,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    max_images: int = 4,
    show_original: bool = True,
    show_labels: bool = True,
    cell_size_inches: float = 1.5,
    save: str | os.PathLike | None = None,
    dpi: int = 100,
) -> Figure:
    """One row per method applied to the same batch (the comparisons of the paper's figures).

    Every method is called as ``method(x, target, model=model, saliency=saliency, generator=g)`` with a
    fresh ``torch.Generator`` seeded with ``seed``, so each row is reproducible and does not depend on the
    rows above it (two-image methods get no ``model``/``saliency``: SaliencyMix uses its static saliency).
    The whole batch goes through each method (two-image methods pair image ``i`` with image ``B - 1 - i``
    of the batch), and the first ``max_images`` results are drawn.

    Args:
        x: images (B, C, H, W) (normalized with ``mean``/``std``, if any); target: class indices (B,).
        methods: ``{row name: transform}``; by default :func:`default_methods` (needs ``num_classes``).
        model: the network whose gradient saliency the saliency-guided methods use. When ``saliency`` is
            not given and ``model`` is, the maps are computed once (``gradient_saliency``) and passed to
            every method, so all rows use the same maps.
        saliency: precomputed maps (B, H, W).
        class_names: names for the label text under each picture (top-2 classes of the returned target).
        show_original: add a first row with the untouched images.
        save: path of a PNG to write.

    Returns:
        The figure, with ``(len(methods) + show_original) * min(B, max_images)`` axes in row-major order.
    """
    x = check_images(x)
    if methods is None:
        if num_classes is None:
            raise ValueError("plot_methods needs num_classes= (or methods=) to build the default transforms")
        methods = default_methods(num_classes)
    if not methods:
        raise ValueError("methods must name at least one transform")
    if saliency is None and model is not None:
        saliency = _saliency_of(x, None, model, target, "train").to(x.device)
    elif saliency is not None:
        saliency = check_saliency(saliency, x)
    count = max(1, min(int(max_images), x.shape[0]))
    rows: list[tuple[str, np.ndarray, torch.Tensor]] = []
    if show_original:
        rows.append(("original", unnormalize(x[:count], mean, std), target[:count]))
    from .mixing import TwoImageMix

    for name, method in methods.items():
        # The gradient saliency is SalfMix's (and HybridMix's); a two-image method's saliency= means its own
        # static maps (SaliencyMix), so it gets none and computes them itself.
        extra = {} if isinstance(method, TwoImageMix) else {"model": model, "saliency": saliency}
        out, out_target = method(x, target, generator=torch.Generator().manual_seed(seed), **extra)
        rows.append((name, unnormalize(out[:count], mean, std), out_target[:count].detach().cpu()))

    fig, axes = _figure(len(rows), count, cell_size_inches)
    for r, (name, images, labels) in enumerate(rows):
        for c in range(count):
            ax = axes[r, c]
            _show_image(ax, images[c])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if show_labels:
                ax.set_xlabel(_label_text(labels[c], class_names), fontsize=6)
    _save(fig, save, dpi)
    return fig
