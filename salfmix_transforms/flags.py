"""The augmentation flags of the training scripts, and the batch transform they select.

``train_timm.py`` (classification) and ``train_seg.py`` (segmentation) take the same augmentation flags, so a
run means the same thing in both: timm's two-image flags (``--mixup``, ``--cutmix``, ``--cutmix-minmax``,
``--mixup-prob``, ``--mixup-switch-prob``, ``--mixup-mode``, ``--mixup-off-epoch``) under timm's names, the
package's (``--salfmix``, ``--salfmix-grid``, ``--salfmix-ratio``, ``--salfmix-prob``, ``--salfmix-no-pool``,
``--salfmix-warmup-epochs``, ``--saliency-mode``, ``--cutout``, ``--saliency-cutout``, ``--random-selfmix``,
``--saliencymix``, ``--resizemix``, ``--hybrid``), and ``--method NAME``, a shortcut for the flags of one row
of the paper's tables (the registry's names, :data:`salfmix_transforms.methods.METHODS`)::

    parser = OneLineArgumentParser(prog="train.py")
    add_augmentation_flags(parser)
    args = parse_augmentation_flags(parser, argv)     # --method's flags as defaults; refuses contradictions
    transform = build_batch_transform(args, num_classes, ignore_index=255)

Without any augmentation flag a run trains :data:`DEFAULT_METHOD` (SalfMix, the paper's method); the baseline
is ``--method baseline``. The transforms themselves are built by the registry (``methods.build``) or as
``HybridMix``, so a name means the same transform here and everywhere else.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from typing import Any

from .cli import UsageError, non_negative_float, non_negative_int, positive_int, probability
from .methods import SPECS, spec

__all__ = [
    "DEFAULT_METHOD",
    "HYBRID_PARTNERS",
    "METHOD_FLAGS",
    "add_augmentation_flags",
    "augmentation_dests",
    "build_batch_transform",
    "disable_mixing",
    "flag_name",
    "method_name",
    "parse_augmentation_flags",
    "unused_tuning_flags",
    "uses_grid",
    "uses_saliency",
]

# --method NAME: the registry's names, as the flags they stand for (they set flag defaults; explicit flags
# win). Every table here derives from the registry (methods.SPECS).
METHOD_FLAGS: dict[str, dict[str, Any]] = {spec.name: dict(spec.flags) for spec in SPECS}

# What runs when no augmentation flag is given: the paper's method (Algorithm 1).
DEFAULT_METHOD = "salfmix"

# The two-image methods HybridMix can follow SalfMix with (--hybrid), by registry name.
_PARTNERS = tuple(spec.name for spec in SPECS if spec.two_image and not spec.self_mixing)
HYBRID_PARTNERS = ("none", *_PARTNERS)
_PAPER_ALPHA = 1.0  # Beta(1, 1) for Mixup / CutMix / SaliencyMix when a method is switched on without alpha
# Two-image methods beyond timm's and ResizeMix's flags: each gets `--NAME ALPHA` (on when > 0) from its
# registry row (MethodSpec.alpha), is built by the registry and joins HybridMix as a partner method.
_TIMM_STYLE = ("mixup", "cutmix", "saliencymix", "resizemix")
_ALPHA_METHODS = tuple(s.name for s in SPECS if s.name in _PARTNERS and s.name not in _TIMM_STYLE and s.alpha)

# The single-image flags and their registry names, and every flag that switches an augmentation on.
_SINGLE_FLAGS = {flag: spec.name for spec in SPECS if not spec.two_image for flag in spec.flags}
_SELECTING_FLAGS = (*_SINGLE_FLAGS, "mixup", "cutmix", "cutmix_minmax", "saliencymix", "resizemix", "hybrid")
_SELECTING_FLAGS += _ALPHA_METHODS

# Tuning flags and the augmentations that read them ("mixup+cutmix": timm's switch between the two).
_GRID_METHODS = frozenset(spec.name for spec in SPECS if spec.uses_grid and not spec.two_image)
_TUNING_FLAGS: dict[str, frozenset[str]] = {
    "cutout_ratio": frozenset({"cutout"}),
    **dict.fromkeys(("salfmix_grid", "salfmix_ratio", "salfmix_no_pool", "saliency_mode"), _GRID_METHODS),
    **dict.fromkeys(("mixup_prob", "mixup_mode", "mixup_off_epoch"), frozenset(_PARTNERS)),
    "mixup_switch_prob": frozenset({"mixup+cutmix"}),
    "resizemix_scope": frozenset({"resizemix"}),
}


def __getattr__(name: str) -> Any:
    if name == "METHODS":  # the old name, which methods.METHODS (a tuple of names) also has
        warnings.warn(
            "salfmix_transforms.flags.METHODS is deprecated: use flags.METHOD_FLAGS (the flags of each name) "
            "or methods.METHODS (the names)",
            DeprecationWarning,
            stacklevel=2,
        )
        return METHOD_FLAGS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the flags ------------------------------------------------------------------------------------------


def add_augmentation_flags(parser: argparse.ArgumentParser, grid_help: str = "pooling grid n") -> None:
    """Add the two groups of augmentation flags ("two-image mixing", "single-image methods and HybridMix")
    and ``--method`` to ``parser``. ``grid_help`` is the help of ``--salfmix-grid`` (the paper's value
    depends on the image size)."""
    g = parser.add_argument_group("two-image mixing (timm names)")
    for name in ("mixup", "cutmix", "saliencymix", *_ALPHA_METHODS):
        g.add_argument(
            f"--{name}", type=non_negative_float, default=0.0, help=f"{spec(name).label} alpha, on when > 0"
        )
    g.add_argument(
        "--cutmix-minmax", type=probability, nargs=2, default=None, help="CutMix box side ratio bounds"
    )
    g.add_argument("--resizemix", action="store_true", help="ResizeMix")
    g.add_argument(
        "--resizemix-scope",
        type=probability,
        nargs=2,
        default=None,
        help="ResizeMix scale range (paper 0.1 0.8)",
    )
    g.add_argument(
        "--mixup-prob", type=probability, default=1.0, help="probability of mixing a batch/pair/elem"
    )
    g.add_argument("--mixup-switch-prob", type=probability, default=0.5, help="Mixup <-> CutMix switch prob")
    g.add_argument(
        "--mixup-mode", default="batch", choices=("batch", "pair", "elem"), help="mixing granularity"
    )
    g.add_argument(
        "--mixup-off-epoch", type=non_negative_int, default=0, help="stop two-image mixing here (0: never)"
    )

    g = parser.add_argument_group("single-image methods and HybridMix (this package)")
    g.add_argument("--salfmix", action="store_true", help="SalfMix (Algorithm 1)")
    g.add_argument(
        "--random-selfmix", action="store_true", help="SalfMix without saliency (Table 10 ablation)"
    )
    g.add_argument("--cutout", action="store_true", help="Cutout")
    g.add_argument("--cutout-ratio", type=probability, default=0.5, help="Cutout box side / image side")
    g.add_argument("--saliency-cutout", action="store_true", help="drop the least salient patch (Table 9)")
    g.add_argument("--salfmix-prob", type=probability, default=None, help="probability of SalfMix per sample")
    g.add_argument("--salfmix-grid", type=positive_int, default=4, help=grid_help)
    g.add_argument("--salfmix-ratio", type=probability, default=0.3, help="patch side ratio r")
    g.add_argument("--salfmix-no-pool", action="store_true", help="no pooling of the saliency map (ablation)")
    g.add_argument(
        "--salfmix-warmup-epochs",
        type=non_negative_int,
        default=None,
        help="epochs without SalfMix at the start (default 1, Algorithm 2; the same for SalfMix alone, "
        "SaliencyCutout and RandomSelfMix)",
    )
    g.add_argument("--saliency-mode", default=None, choices=("train", "eval"), help="model mode for saliency")
    g.add_argument(
        "--hybrid",
        default="none",
        choices=HYBRID_PARTNERS,
        help="HybridMix: SalfMix plus this two-image method",
    )
    g.add_argument(
        "--method",
        default=None,
        choices=tuple(METHOD_FLAGS),
        metavar="NAME",
        help=f"shortcut for a paper table row: {', '.join(METHOD_FLAGS)} (default {DEFAULT_METHOD} when no "
        "augmentation flag is given)",
    )


def augmentation_dests() -> tuple[str, ...]:
    """The ``args`` attributes :func:`add_augmentation_flags` defines (``mixup``, ..., ``method``)."""
    return tuple(vars(_augmentation_parser().parse_args([])))


def _augmentation_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    add_augmentation_flags(parser)
    return parser


def parse_augmentation_flags(
    parser: argparse.ArgumentParser, argv: Sequence[str], defaults: dict[str, Any] | None = None
) -> argparse.Namespace:
    """Parse ``argv`` with ``defaults`` and ``--method``'s flags as defaults (explicit flags win; a
    ``"method"`` in ``defaults`` counts as given, but its flags yield to the other ``defaults``).

    Without any augmentation flag the run trains :data:`DEFAULT_METHOD` (``args.method`` is set to it). The
    flags written in ``argv`` are kept in ``args.given_flags`` (a frozenset of dests, not a plain value:
    keep it out of checkpoints).

    Raises:
        UsageError: a flag is malformed, or ``--method M`` comes with flags that would train another method
            under M's name (the message names the method that trains those flags, if any).
    """
    argv = list(argv)
    defaults = dict(defaults or {})
    method = parser.parse_args(argv).method or defaults.get("method")
    if method:
        defaults = {**METHOD_FLAGS[method], **defaults}
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    if args.method is None and method_name(args) == "baseline":
        # No augmentation flag at all: the product's method (the baseline is `--method baseline`).
        parser.set_defaults(**defaults, **METHOD_FLAGS[DEFAULT_METHOD], method=DEFAULT_METHOD)
        args = parser.parse_args(argv)
    args.given_flags = _given_flags(parser, argv)
    _check_method_flags(args)
    return args


def _given_flags(parser: argparse.ArgumentParser, argv: list[str]) -> frozenset[str]:
    """The flags written in ``argv`` (as dests), not those that defaults or ``--method`` set."""
    unset = object()  # argparse leaves an attribute that the namespace already has to the flags given
    namespace = argparse.Namespace(**dict.fromkeys(vars(parser.parse_args([])), unset))
    parsed = vars(parser.parse_args(argv, namespace=namespace))
    return frozenset(dest for dest, value in parsed.items() if value is not unset)


def _components(args: argparse.Namespace) -> frozenset[str]:
    """The augmentations the flags switch on, by registry name (a HybridMix is SalfMix plus its partner)."""
    names = {name for flag, name in _SINGLE_FLAGS.items() if getattr(args, flag)}
    names |= set(_two_image_flags(args))
    if args.hybrid != "none":
        names |= {"salfmix", args.hybrid}
    return frozenset(names)


def _check_method_flags(args: argparse.Namespace) -> None:
    """Refuse ``--method M`` with flags that switch another augmentation on (or one of M's off): the run
    would be named M but train something else."""
    if not args.method:
        return
    base = vars(_augmentation_parser().parse_args([]))
    by_method = {m: _components(argparse.Namespace(**{**base, **f})) for m, f in METHOD_FLAGS.items()}
    expected, selected = by_method[args.method], _components(args)
    if selected == expected:
        return
    flags = " ".join(_as_flag(args, dest) for dest in _SELECTING_FLAGS if dest in args.given_flags)
    same = [m for m, c in by_method.items() if c == selected]
    trains = "+".join(sorted(selected)) or "no augmentation"
    named = "+".join(sorted(expected)) or "no augmentation"
    if "method" not in args.given_flags:  # the checkpoint being resumed set it, not this command line
        raise UsageError(
            f"the run being resumed trains {args.method}; with {flags} it would train {trains} under that "
            "name: a resumed run keeps its method (start a new run, without --resume, for another)"
        )
    hint = f"use --method {same[0]}" if same else "drop --method and give the flags alone"
    what = "," if named == args.method else f" is {named},"
    raise UsageError(
        f"--method {args.method}{what} but with {flags} the run would train {trains} under that name: {hint}"
    )


def flag_name(dest: str) -> str:
    """The command-line spelling of an ``args`` attribute: ``salfmix_grid`` -> ``--salfmix-grid``."""
    return "--" + dest.replace("_", "-")


def _as_flag(args: argparse.Namespace, dest: str) -> str:
    """``dest``'s flag as given: ``--salfmix``, ``--mixup 1.0``, ``--cutmix-minmax 0.2 0.8``."""
    value = getattr(args, dest)
    if value is True:
        return flag_name(dest)
    return " ".join([flag_name(dest), *map(str, value if isinstance(value, list) else [value])])


def unused_tuning_flags(args: argparse.Namespace) -> list[str]:
    """The tuning flags given on the command line that no selected augmentation reads (``--cutout-ratio``
    without Cutout, ...), as flags."""
    selected = set(_components(args))
    if {"mixup", "cutmix"} <= selected:
        selected.add("mixup+cutmix")
    given = getattr(args, "given_flags", frozenset())
    return [flag_name(f) for f, readers in _TUNING_FLAGS.items() if f in given and not readers & selected]


def method_name(args: argparse.Namespace) -> str:
    """A short name of the augmentation the flags select (``--method`` when given)."""
    if args.method:
        return args.method
    parts = [name for flag, name in _SINGLE_FLAGS.items() if getattr(args, flag)]
    if args.hybrid != "none":
        parts.append(f"hybrid-{args.hybrid}")
    return "+".join(parts + _two_image_flags(args)) or "baseline"


def uses_saliency(args: argparse.Namespace) -> bool:
    """Whether the selected augmentation takes the model's saliency (SalfMix, ``cutout-sal``, HybridMix)."""
    return any(spec(name).needs_model for name in _components(args))


def uses_grid(args: argparse.Namespace) -> bool:
    """Whether the selected augmentation pools a saliency grid (``--salfmix-grid`` must fit the image)."""
    return any(spec(name).uses_grid for name in _components(args))


# --- the batch transform --------------------------------------------------------------------------------


def check_grid_fits(args: argparse.Namespace, height: int, width: int, what: str = "images") -> None:
    """Refuse ``--salfmix-grid`` larger than the ``height`` x ``width`` training ``what`` (images, crops)
    before training starts, as one line: Algorithm 1 pools with kernel H // n, which is 0 for n > H.

    Raises:
        UsageError: the method pools a grid (:func:`uses_grid`) that does not fit.
    """
    if uses_grid(args) and args.salfmix_grid > min(height, width):
        raise UsageError(
            f"--salfmix-grid {args.salfmix_grid} does not fit {height}x{width} {what} (need n <= "
            f"{min(height, width)}; paper: 4 at 32x32, 8 at 64x64)"
        )


def build_batch_transform(args: argparse.Namespace, num_classes: int | None, **common: Any) -> Any:
    """The package's batch transform selected by the flags, or ``None`` for the baseline.

    ======================================  ==============================================================
    flags                                   transform
    ======================================  ==============================================================
    (none)                                  ``None``: one-hot (smoothed) targets only
    ``--cutout``                            ``Cutout(mask_ratio=--cutout-ratio)``
    ``--saliency-cutout``                   ``SaliencyCutout(grid, ratio)``
    ``--salfmix``                           ``SalfMix(grid, ratio, prob)``
    ``--random-selfmix``                    ``RandomSelfMix(grid, ratio, prob)``
    one of --mixup/--cutmix/--saliencymix/  ``Mixup`` / ``CutMix`` / ``SaliencyMix`` / ``ResizeMix``
    --resizemix
    --mixup and --cutmix                    ``HybridMix`` without SalfMix (timm's Mixup/CutMix switch)
    ``--hybrid X`` or --salfmix with a      ``HybridMix``: SalfMix then X (alpha 1 unless given)
    two-image method
    ======================================  ==============================================================

    Every transform gets ``num_classes``, ``label_smoothing=--smoothing`` (soft targets out; 0 when the
    script has no ``--smoothing``) and ``common`` (``ignore_index=`` for class masks, ``model=``, or a
    ``label_smoothing`` of its own). ``num_classes=None`` (with ``label_smoothing=0``) keeps class masks class
    masks where the transform can (``keeps_class_masks``: ``train_seg.py``).
    ``--salfmix-prob`` and ``--salfmix-warmup-epochs`` go to the SalfMix-based methods only (elsewhere they
    are an error); unset, every SalfMix-based method skips one warm-up epoch (Algorithm 2). A script with
    ``--saliency-source lowres`` passes ``--saliency-scale`` on.

    Raises:
        ValueError: methods that cannot be combined, or arguments the transform rejects.
    """
    from . import methods

    common = {"label_smoothing": getattr(args, "smoothing", 0.0), **common}
    single = [flag for flag in _SINGLE_FLAGS if getattr(args, flag)]
    two = _two_image_flags(args)
    if len(single) > 1:
        raise ValueError(
            "choose one single-image method: " + " and ".join(flag_name(f) for f in single) + " were given"
        )
    if not uses_grid(args):
        given = [f for f in ("salfmix_prob", "salfmix_warmup_epochs") if getattr(args, f) is not None]
        if given:
            raise ValueError(f"{flag_name(given[0])} needs a SalfMix-based method (--salfmix, --hybrid, ...)")
    hybrid = args.hybrid != "none" or (bool(two) and bool(single)) or {"mixup", "cutmix"} <= set(two)
    if hybrid:
        if single and single != ["salfmix"]:
            raise ValueError(
                f"HybridMix combines SalfMix with a two-image method, not {flag_name(single[0])}"
            )
        return _build_hybrid(args, two, dict(num_classes=num_classes, **common))
    if single:
        # The training loop owns the loader's batch, so the single-image methods may overwrite it (as timm's
        # Mixup does), which saves one copy of the batch per step.
        if single[0] == "cutout":
            return methods.build("cutout", num_classes, mask_ratio=args.cutout_ratio, inplace=True, **common)
        prob = {} if args.salfmix_prob is None else dict(prob=args.salfmix_prob)
        kw = dict(**_salfmix_kwargs(args, prefix=""), **prob, **common)
        return methods.build(_SINGLE_FLAGS[single[0]], num_classes, **kw, inplace=True)
    if len(two) > 1:
        raise ValueError(
            "choose one two-image method (or --mixup with --cutmix): "
            + " and ".join(flag_name(f) for f in two)
            + " were given"
        )
    return _build_two_image(args, two[0], num_classes, common) if two else None


def _two_image_flags(args: argparse.Namespace) -> list[str]:
    """The two-image methods the flags switch on (as timm's, --cutmix-minmax switches CutMix on)."""
    alphas = ("mixup", "cutmix", "saliencymix", *_ALPHA_METHODS)
    two = [f for f in alphas if getattr(args, f) > 0 or (f == "cutmix" and args.cutmix_minmax)]
    return two + (["resizemix"] if args.resizemix else [])


def _salfmix_kwargs(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """Grid, ratio, pooling, saliency mode / scale and warm-up of the SalfMix part (``prefix`` "salfmix_"
    for HybridMix's names)."""
    kw: dict[str, Any] = {
        f"{prefix}grid": args.salfmix_grid,
        f"{prefix}ratio": args.salfmix_ratio,
        f"{prefix}pool": not args.salfmix_no_pool,
    }
    if args.saliency_mode is not None:
        kw["saliency_mode"] = args.saliency_mode
    if getattr(args, "saliency_source", "exact") == "lowres":
        kw["saliency_scale"] = args.saliency_scale
    # Choice: every SalfMix-family method skips the first epoch, as HybridMix does in Algorithm 2 (the
    # saliency of an untrained network is noise); RandomSelfMix too, so that the ablation differs from SalfMix
    # only by the saliency. The classes default to the same one epoch.
    kw["warmup_epochs"] = 1 if args.salfmix_warmup_epochs is None else args.salfmix_warmup_epochs
    return kw


def _build_two_image(args: argparse.Namespace, name: str, num_classes: int, common: dict[str, Any]) -> Any:
    from . import methods

    kw: dict[str, Any] = dict(prob=args.mixup_prob, mode=args.mixup_mode, **common)
    if name == "cutmix":  # on with --cutmix-minmax alone: the paper's alpha
        minmax = tuple(args.cutmix_minmax) if args.cutmix_minmax else None
        kw.update(cutmix_alpha=args.cutmix or _PAPER_ALPHA, cutmix_minmax=minmax)
    elif name == "resizemix":
        kw.update({} if args.resizemix_scope is None else dict(scope=tuple(args.resizemix_scope)))
    else:  # Mixup, SaliencyMix and the other alpha methods: their registry row names the alpha argument
        kw[spec(name).alpha] = getattr(args, name)
    return methods.build(name, num_classes, **kw)


def _build_hybrid(args: argparse.Namespace, two: list[str], common: dict[str, Any]) -> Any:
    from . import methods
    from .hybrid import HybridMix

    partner = args.hybrid
    if partner != "none":
        others = [t for t in two if t != partner]
        if others:
            raise ValueError(f"--hybrid {partner} cannot be combined with {flag_name(others[0])}")
        two = [partner]
    kw: dict[str, Any] = {
        f"{name}_alpha": (getattr(args, name) or _PAPER_ALPHA) if name in two else 0.0
        for name in ("mixup", "cutmix", "saliencymix")
    }
    if "resizemix" in two:
        kw["resizemix_scope"] = tuple(args.resizemix_scope) if args.resizemix_scope else (0.1, 0.8)
    # The other two-image methods join as partner method objects (the registry's transform's methods).
    partners = [
        methods.build(name, 2, **{spec(name).alpha: getattr(args, name) or _PAPER_ALPHA}).methods
        for name in _ALPHA_METHODS
        if name in two
    ]
    if partners:
        kw["partners"] = tuple(m for ms in partners for m in ms)
    if args.cutmix_minmax:
        kw["cutmix_minmax"] = tuple(args.cutmix_minmax)
    if args.salfmix or args.hybrid != "none":
        if args.salfmix_prob is not None:
            kw["salfmix_prob"] = args.salfmix_prob
    else:
        kw["salfmix_prob"] = 0.0
    kw.update(prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode)
    return HybridMix(**kw, **_salfmix_kwargs(args, prefix="salfmix_"), **common)


def disable_mixing(transform: Any) -> Any:
    """``--mixup-off-epoch``: switch off the two-image part (timm's ``mixup_enabled = False``, which every
    two-image transform and HybridMix honour; the single-image methods have no two-image part)."""
    if hasattr(transform, "mixup_enabled"):
        transform.mixup_enabled = False
    return transform
