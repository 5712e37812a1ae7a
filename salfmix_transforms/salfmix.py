"""SalfMix (Choi et al., Sensors 2021, Algorithm 1) and its "without saliency" ablation (Table 10).

SalfMix mixes an image with itself: the most salient patch ``P_m`` is copied over the least salient patch
``P_l`` of the same image, and the label is kept. The saliency map is either given (``saliency=``) or
computed from the model being trained (``model=``, the gradient saliency of eq. (2)-(3)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import BatchTransform
from ._random import rand, randint_from_uniform
from ._validation import (
    SALIENCY_MODES,
    check_bool,
    check_choice,
    check_grid,
    check_model,
    check_probability,
    check_ratio,
    check_saliency,
    check_writable,
)
from .patches import (
    SelfMixPlan,
    copy_patches,
    extreme_cells,
    pasted_window_free,
    patch_corners,
    patch_size,
    pool_saliency,
)

__all__ = ["RandomSelfMix", "SalfMix"]


class SalfMix(BatchTransform):
    """SalfMix: copy the most salient patch over the least salient one in each image (Algorithm 1).

    Call as ``x, target = salfmix(x, target, model=model)`` (saliency from the model's input gradient) or
    ``x, target = salfmix(x, target, saliency=maps)`` with precomputed maps (B, H, W).

    Per sample (Algorithm 1; the functions of :mod:`salfmix_transforms.patches`):

    1. pool the saliency map with kernel = stride = ``(H // n, W // n)`` (line 1, :func:`pool_saliency`);
    2. ``R_m`` = argmax cell, ``R_l`` = argmin cell of the pooled map (line 2, :func:`extreme_cells`);
    3. patch side ``o = floor(W * r)`` (line 3, :func:`patch_size`);
    4. place ``P_m`` around ``R_m`` and ``P_l`` around ``R_l`` uniformly at random among the positions that
       contain the whole cell and lie inside the image (lines 4-5, :func:`patch_corners`);
    5. copy the pixels of ``P_m`` over ``P_l`` (line 6, :func:`copy_patches`), reading from the unmodified
       image; the label is unchanged. A dense target (class mask (B, H, W) or soft (B, K, H, W)) has the
       same patch copied: the labels of ``P_m`` move with its pixels (a new tensor, also with
       ``inplace=True``).

    Choices (the paper is silent): non-square images use a patch of ``floor(H * r) x floor(W * r)`` and a
    kernel of ``(H // n, W // n)``; a patch is at least one pixel; a patch smaller than a cell lies
    uniformly inside the cell; ties between cells are broken uniformly at random, and a constant map or a
    map with NaN/inf gets uniformly random cells; ``prob`` is drawn independently per sample.

    Args:
        grid: ``n``, the number of cells per side of the pooled grid (``n <= min(H, W)``).
        ratio: ``r`` in (0, 1], the patch side as a fraction of the image side.
        prob: probability that a sample is transformed.
        pool: ``False`` is the "no pooling" ablation: every cell is one pixel (argmax/argmin of the raw map).
        saliency_mode: ``"train"`` or ``"eval"``, the model mode while the saliency is computed (passed to
            :func:`salfmix_transforms.saliency.gradient_saliency`).
        model: the network being trained, used for the saliency when a call passes neither ``model=`` nor
            ``saliency=`` (a call's ``model=`` wins). It lets a loop that calls ``fn(x, target)`` only, as
            timm's ``train.py`` does with its ``mixup_fn``, run SalfMix.
        saliency_scale: in (0, 1]; below 1 the saliency pass runs on the batch down-scaled by this factor
            and the map is up-sampled back (:func:`~salfmix_transforms.saliency.lowres_gradient_saliency`):
            at 0.5 about a quarter of the pass's FLOPs. 1 is the paper's exact map.
        inplace: ``True`` overwrites ``x`` and returns it (as timm's ``Mixup`` and torchvision's
            ``RandomErasing(inplace=True)`` do), saving one copy of the batch; ``x`` must not require grad.
            The default returns a new tensor and leaves ``x`` as it was.
        warmup_epochs: 1, Algorithm 2's warm-up (see :class:`~salfmix_transforms._base.BatchTransform`);
            ``warmup_epochs=0`` turns it off (SalfMix from the first call).
        num_classes, label_smoothing, steps_per_epoch, generator, ignore_index (keyword only): see
            :class:`~salfmix_transforms._base.BatchTransform`.
    """

    def __init__(
        self,
        grid: int = 4,
        ratio: float = 0.3,
        prob: float = 1.0,
        *,
        pool: bool = True,
        saliency_mode: str = "train",
        inplace: bool = False,
        model: torch.nn.Module | None = None,
        saliency_scale: float = 1.0,
        warmup_epochs: int = 1,
        **kwargs: object,
    ) -> None:
        super().__init__(warmup_epochs=warmup_epochs, **kwargs)
        self.saliency_scale = check_ratio(saliency_scale, "saliency_scale")
        self.grid = check_grid(grid)
        self.ratio = check_ratio(ratio)
        self.prob = check_probability(prob, "prob")
        self.pool = check_bool(pool, "pool")
        self.saliency_mode = check_choice(saliency_mode, "saliency_mode", SALIENCY_MODES)
        self.inplace = check_bool(inplace, "inplace")
        self.model = check_model(model)

    @property
    def needs_saliency(self) -> bool:
        """Whether a call needs a saliency map (``model=`` or ``saliency=``): ``False`` for the ablation."""
        return True

    def _check_can_run(
        self, in_warmup: bool, model: torch.nn.Module | None, saliency: torch.Tensor | None
    ) -> None:
        super()._check_can_run(in_warmup, model, saliency)
        if in_warmup and self.needs_saliency and self.prob > 0:
            self._warn_if_no_map(model, saliency)

    # -- geometry -------------------------------------------------------------------------------------

    def _cell_size(self, height: int, width: int) -> tuple[int, int]:
        """Algorithm 1's pooling kernel (:func:`cell_size`), 1 x 1 without pooling. The grid was checked
        against the image where the call came in (:meth:`plan`, :meth:`_apply`)."""
        return (height // self.grid, width // self.grid) if self.pool else (1, 1)

    def _selection_draws(self, grid_shape: tuple[int, int]) -> int:
        """Uniforms per sample that :meth:`_select_cells` needs: tie-break noise for ``R_m`` and ``R_l``."""
        return 2 * grid_shape[0] * grid_shape[1]

    def _select_cells(
        self,
        saliency: torch.Tensor | None,
        grid_shape: tuple[int, int],
        cell: tuple[int, int],
        uniforms: torch.Tensor,
    ) -> torch.Tensor:
        """``R_m`` and ``R_l`` as (B, 2, 2) ``(row, col)`` (:func:`extreme_cells`); Algorithm 1, lines 1-2.

        ``uniforms`` (B, :meth:`_selection_draws`) are this step's share of the plan's random numbers.
        """
        pooled = pool_saliency(saliency, *cell)
        return extreme_cells(pooled, uniforms.view(uniforms.shape[0], 2, -1))

    def _make_plan(
        self,
        saliency: torch.Tensor | None,
        shape: tuple[int, int, int],
        device: torch.device,
        generator: torch.Generator | None,
    ) -> SelfMixPlan:
        """Algorithm 1, lines 1-5 and the ``prob`` draw, with every random number from ONE ``rand`` call.

        Each sample's row of uniforms ``u`` (B, S + 5) is split as: ``u[:, :S]`` the cell selection
        (:meth:`_selection_draws`; tie-break noise of ``R_m`` then ``R_l``), ``u[:, S:S + 4]`` the
        placement (top and left of ``P_m``, then of ``P_l``), ``u[:, S + 4]`` the ``prob`` draw
        (``applied = u < prob``). One draw instead of one per step keeps the per-batch overhead low; the
        same generator state still gives the same plan.
        """
        batch, height, width = shape
        cell_h, cell_w = self._cell_size(height, width)
        patch_h, patch_w = patch_size(height, width, self.ratio)
        grid_shape = (height // cell_h, width // cell_w)
        select = self._selection_draws(grid_shape)
        u = rand((batch, select + 5), generator, device)
        cells = self._select_cells(saliency, grid_shape, (cell_h, cell_w), u[:, :select])
        placement = u[:, select : select + 4].view(batch, 2, 2)
        corners = patch_corners(cells, cell_h, cell_w, patch_h, patch_w, height, width, placement)
        if self.prob == 1.0:  # u < 1 always holds: skip the comparison
            applied = torch.ones(batch, dtype=torch.bool, device=device)
        else:
            applied = u[:, select + 4] < self.prob
        return SelfMixPlan(
            src_top=corners[:, 0, 0],
            src_left=corners[:, 0, 1],
            dst_top=corners[:, 1, 0],
            dst_left=corners[:, 1, 1],
            patch_height=patch_h,
            patch_width=patch_w,
            max_cell=cells[:, 0],
            min_cell=cells[:, 1],
            cell_height=cell_h,
            cell_width=cell_w,
            applied=applied,
        )

    def plan(self, saliency: torch.Tensor, generator: torch.Generator | None = None) -> SelfMixPlan:
        """Decide ``R_m``, ``R_l``, ``P_m``, ``P_l`` and which samples are transformed, for maps (B, H, W).

        Algorithm 1, lines 1-5; ``applied = rand(B) < prob``. ``generator`` wins over the constructor's.
        """
        if not isinstance(saliency, torch.Tensor):
            raise TypeError(
                f"saliency must be a torch.Tensor of shape (B, H, W), got {type(saliency).__name__}"
            )
        if saliency.dim() != 3 or min(saliency.shape) < 1:
            raise ValueError(f"saliency must have shape (B, H, W), got {tuple(saliency.shape)}")
        check_grid(self.grid, height=saliency.shape[1], width=saliency.shape[2])
        generator = self._resolve_generator(generator)
        return self._make_plan(saliency, tuple(saliency.shape), saliency.device, generator)

    # -- call -----------------------------------------------------------------------------------------

    def _saliency(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        model: torch.nn.Module | None,
        saliency: torch.Tensor | None,
    ) -> torch.Tensor:
        """The given map (checked against ``x``) or the model's gradient saliency (eq. (2)-(3))."""
        if saliency is not None:
            return check_saliency(saliency, x).to(x.device)
        model = model if model is not None else self.model
        if model is None:
            raise ValueError(
                f"{type(self).__name__} needs a saliency map: pass model= (the network being trained) to "
                "the constructor or the call, or saliency= (precomputed maps of shape (B, H, W))"
            )
        options = {
            "mode": self.saliency_mode,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
        }
        if self.saliency_scale == 1.0:
            from .saliency import gradient_saliency

            return gradient_saliency(model, x, target, **options)
        from .saliency import lowres_gradient_saliency

        return lowres_gradient_saliency(model, x, target, self.saliency_scale, **options)

    def _apply(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        *,
        model: torch.nn.Module | None,
        saliency: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The checks of a call, the saliency map (given or eq. (2)-(3)), the plan (Algorithm 1, lines 1-5)
        and line 6 (:meth:`_line_6`) on the pixels and on a dense target."""
        batch, _, height, width = x.shape
        check_grid(self.grid, height=height, width=width)
        if self.inplace:
            check_writable(x)
        saliency = self._saliency(x, target, model, saliency) if self.needs_saliency else None
        plan = self._make_plan(saliency, (batch, height, width), x.device, generator)
        return self._pixel_step(
            x, target, self._line_6(plan), lambda: pasted_window_free(plan, height, width)
        )

    def _line_6(self, plan: SelfMixPlan) -> Callable[[torch.Tensor, float | int, bool], torch.Tensor]:
        """Algorithm 1, line 6, as the pixel operation of :meth:`_pixel_step`: ``P_m`` copied over ``P_l``
        (on a dense target: the labels of ``P_m`` move with its pixels)."""

        def copy(planes: torch.Tensor, fill: float | int, inplace: bool) -> torch.Tensor:
            return copy_patches(planes, plan, inplace=inplace, all_applied=self.prob == 1.0)

        return copy


class RandomSelfMix(SalfMix):
    """SalfMix without saliency (the ablation of Table 10): ``R_m`` and ``R_l`` are uniformly random cells.

    Everything else is Algorithm 1 (patch size, placement around the cells, copy, unchanged label). No model
    is needed: ``model=`` and ``saliency=`` are ignored at call time, and :meth:`plan` uses only the shape
    and device of the map it is given.

    Choice: ``R_m`` and ``R_l`` are drawn independently, so they may coincide. With ``pool=False`` the
    cells are single pixels. It warms up as SalfMix does, so that the ablation differs from SalfMix only by
    the saliency.
    """

    def _selection_draws(self, grid_shape: tuple[int, int]) -> int:
        return 4  # row and column of R_m, then of R_l

    def _select_cells(
        self,
        saliency: torch.Tensor | None,
        grid_shape: tuple[int, int],
        cell: tuple[int, int],
        uniforms: torch.Tensor,
    ) -> torch.Tensor:
        # Built on the host, then a non-blocking copy (``torch.tensor(..., device="cuda")`` would wait).
        last = torch.tensor([grid_shape[0] - 1, grid_shape[1] - 1]).to(uniforms.device, non_blocking=True)
        return randint_from_uniform(uniforms.view(uniforms.shape[0], 2, 2), torch.zeros_like(last), last)

    @property
    def needs_saliency(self) -> bool:
        return False
