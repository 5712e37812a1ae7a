"""Draw what the transforms do to some images, with the saliency of a trained model.

Command line::

    python -m salfmix_transforms.show --out grid.png                       # embedded digits, untrained model
    python -m salfmix_transforms.show --images default --checkpoint output/train/<run>/model_best.pth.tar
    python -m salfmix_transforms.show --images ~/pictures --checkpoint last.pth.tar --method salfmix \\
        --method cutmix --method hybridmix-v3 --out methods.png
    python -m salfmix_transforms.show --figure steps --out salfmix_steps.png   # SalfMix step by step

``--images`` is ``default`` (the embedded digits data set's validation images, the training script's
default data) or a folder: either ``DIR/<class>/<image>`` (class sub-folders, sorted as ImageFolder sorts
them) or ``DIR/<image>`` (no labels: the model's prediction is used as the label for the saliency).
``--checkpoint`` is a checkpoint of ``train_timm.py`` (timm's ``CheckpointSaver`` format: ``state_dict``,
``state_dict_ema``, ``args``) or a bare ``state_dict``; ``module.`` / ``_orig_mod.`` prefixes are removed,
the width of a PreActResNet and the number of classes are read from the weights. Without a checkpoint the
model is randomly initialised (seeded): the maps are then those of an untrained network.

``--figure methods`` (default) draws one row per method (:func:`salfmix_transforms.viz.plot_methods`);
``--figure steps`` draws SalfMix's steps (:func:`salfmix_transforms.viz.plot_salfmix`). Every problem
(missing folder or checkpoint, unknown model or method, weights that do not fit) ends with one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .cli import OneLineArgumentParser, UsageError, one_line, positive_int, report_error
from .data import image_files, image_transforms
from .viz import METHOD_NAMES, REGISTRY_NAMES, default_methods, plot_methods, plot_salfmix

__all__ = ["ShowError", "build_parser", "load_default_images", "load_folder_images", "load_model", "main"]

_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net")


PROG = "show"  # the one-line errors' prefix: "show: error: ..."


class ShowError(UsageError):
    """Bad input; :func:`main` prints it as one line on stderr and returns 2 (:func:`cli.report_error`)."""


def _slug(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_LABEL_OF = {name: label for label, name in REGISTRY_NAMES.items()}

# --method takes a registry name (as --method of the training scripts) or a row's display name, in any case
# and spacing; also the class names the rows had before they took the registry's labels.
_OLD_ROW_NAMES = {"RandomSelfMix": "salfmix-nosal", "SaliencyCutout": "cutout-sal"}
_METHOD_SLUGS = {
    **{_slug(old): _LABEL_OF[name] for old, name in _OLD_ROW_NAMES.items()},
    **{_slug(label): label for label in METHOD_NAMES},
    **{_slug(name): label for name, label in _LABEL_OF.items()},
}


# -- images ----------------------------------------------------------------------------------------------


def load_default_images(num_images: int = 4, img_size: int | None = None) -> dict[str, Any]:
    """Validation images of the embedded digits data set, one per class first (0, 1, 2, ...).

    Returns ``{"x": (N, 3, S, S) normalised, "target": (N,), "mean", "std", "class_names"}``.
    """
    from .data import build_datasets

    _, val_ds, num_classes, _ = build_datasets("digits", img_size=img_size)
    first = [int((val_ds.labels == wanted).nonzero()[0]) for wanted in range(num_classes)]
    picked = (first + [i for i in range(len(val_ds)) if i not in first])[:num_images]  # one per class first
    images, labels = zip(*(val_ds[i] for i in picked))
    normalize = val_ds.transform
    return {
        "x": torch.stack(images),
        "target": torch.as_tensor(labels, dtype=torch.long),
        "mean": tuple(float(v) for v in normalize.mean),
        "std": tuple(float(v) for v in normalize.std),
        "class_names": [str(i) for i in range(num_classes)],
    }


def load_folder_images(
    folder: str,
    num_images: int = 4,
    img_size: int = 32,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> dict[str, Any]:
    """Images of ``folder``: ``DIR/<class>/<image>`` (labelled) or ``DIR/<image>`` (``target`` is ``None``).

    Classes are taken in turn (one image of each class, then a second one, ...). Images are resized (shorter
    side) and centre-cropped to ``img_size``, scaled to [0, 1] and normalised with ``mean``/``std``.

    Returns ``{"x", "target" (or None), "mean", "std", "class_names" (or None), "paths"}``.

    Raises:
        ShowError: the folder does not exist or holds no image.
    """
    from PIL import Image

    files = image_files(_check_folder(folder))
    class_names: list[str] | None = None
    chosen: list[tuple[str, int | None]] = []
    if files:
        chosen = [(path, None) for path in files[:num_images]]
    else:
        classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        per_class = [(c, f) for c in classes if (f := image_files(os.path.join(folder, c)))]
        if not per_class:
            raise ShowError(
                f"no images in {folder!r} (expected DIR/<image> or DIR/<class>/<image> files; "
                "for a data set with splits, pass the split's folder, e.g. DIR/test)"
            )
        class_names = classes
        labelled = ([(path, classes.index(c)) for path in f] for c, f in per_class)
        chosen = [s for turn in itertools.zip_longest(*labelled) for s in turn if s is not None][:num_images]
    preprocess = image_transforms(img_size, None, list(mean), list(std))[1]  # resize, centre-crop, normalise
    images = []
    for path, _ in chosen:
        try:
            with Image.open(path) as img:
                images.append(preprocess(img))
        except (OSError, ValueError) as e:  # ValueError: data.DatasetError, a float image with NaN pixels
            raise ShowError(f"cannot read image {path!r}: {one_line(e)}") from e
    labels = [label for _, label in chosen]
    return {
        "x": torch.stack(images),
        "target": None if class_names is None else torch.as_tensor(labels, dtype=torch.long),
        "mean": tuple(mean),
        "std": tuple(std),
        "class_names": class_names,
        "paths": [path for path, _ in chosen],
    }


# -- model -----------------------------------------------------------------------------------------------


def _read_checkpoint(path: str) -> Any:
    from timm.utils import load_checkpoint_metadata

    if not os.path.isfile(path):
        raise ShowError(f"checkpoint {path!r} does not exist")
    try:
        return load_checkpoint_metadata(path)  # torch.load(weights_only=True), argparse.Namespace allowed
    except Exception as e:
        raise ShowError(f"cannot read checkpoint {path!r}: {one_line(e)}") from e


def _state_dict_of(checkpoint: Any, path: str, use_ema: bool) -> dict[str, torch.Tensor]:
    from timm.models import clean_state_dict

    if not isinstance(checkpoint, dict):
        raise ShowError(f"checkpoint {path!r} holds a {type(checkpoint).__name__}, not a state_dict")
    keys = (("state_dict_ema", "model_ema") if use_ema else ()) + _STATE_DICT_KEYS
    for key in keys:
        if isinstance(checkpoint.get(key), dict):
            state = checkpoint[key]
            break
    else:
        if use_ema:
            raise ShowError(f"checkpoint {path!r} has no EMA weights (state_dict_ema); drop --ema")
        state = checkpoint
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ShowError(f"checkpoint {path!r} has no state_dict (keys: {', '.join(map(str, checkpoint))})")
    return clean_state_dict(state)


def load_model(
    model_name: str | None = "preactresnet18",
    checkpoint: str | None = None,
    *,
    num_classes: int | None = None,
    width: float | None = None,
    use_ema: bool = False,
    seed: int = 0,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A timm model in eval mode, with the weights of ``checkpoint`` when given.

    ``model_name=None`` takes the checkpoint's ``arch``. The number of classes is read from the classifier's
    weights (else ``num_classes``, else 10) and a PreActResNet's ``width`` from its stem (else ``width``,
    else 0.25, the training script's default). Returns the model and what was learnt about it
    (``model``, ``num_classes``, ``width``, ``args``: the training arguments as a dict, if saved).

    Raises:
        ShowError: unknown model, missing/unreadable checkpoint, weights that do not fit.
    """
    import timm
    from timm.models import get_pretrained_cfg_value

    from . import models  # noqa: F401  (registers preactresnet18/50/101 in timm)

    state: dict[str, torch.Tensor] | None = None
    saved_args: dict[str, Any] = {}
    if checkpoint is not None:
        raw = _read_checkpoint(checkpoint)
        state = _state_dict_of(raw, checkpoint, use_ema)
        if isinstance(raw, dict):
            if raw.get("args") is not None:
                saved_args = (
                    dict(vars(raw["args"])) if hasattr(raw["args"], "__dict__") else dict(raw["args"])
                )
            if model_name is None and isinstance(raw.get("arch"), str):
                model_name = raw["arch"]
    model_name = model_name or saved_args.get("model") or "preactresnet18"
    if not timm.is_model(model_name):
        raise ShowError(
            f"unknown model {model_name!r} (see timm.list_models(); preactresnet18/50/101 are added)"
        )
    preact = model_name.startswith("preactresnet")
    kwargs: dict[str, Any] = {}
    if preact:
        if state is not None and "conv1.weight" in state:
            width = state["conv1.weight"].shape[0] / 64.0
        kwargs["width"] = float(width if width is not None else saved_args.get("width") or 0.25)
    elif width is not None:
        kwargs["width"] = width
    if state is not None:
        classifier = get_pretrained_cfg_value(model_name, "classifier") or "fc"
        weight = state.get(f"{classifier}.weight")
        if weight is not None and weight.dim() == 2:
            num_classes = int(weight.shape[0])
        elif saved_args.get("num_classes"):
            num_classes = int(saved_args["num_classes"])
    num_classes = num_classes or 10
    torch.manual_seed(seed)
    try:
        model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise ShowError(f"cannot create model {model_name!r}: {one_line(e)}") from e
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = one_line(e)[:300]
            raise ShowError(f"checkpoint {checkpoint!r} does not fit model {model_name!r}: {first}") from e
    model.eval()
    info = {"model": model_name, "num_classes": num_classes, "width": kwargs.get("width"), "args": saved_args}
    return model, info


# -- command line ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog="python -m salfmix_transforms.show",
        description="Draw what SalfMix, HybridMix and the other methods do to some images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--images", default="default", help="'default' (embedded digits) or an image folder")
    p.add_argument("--checkpoint", default=None, help="train_timm.py checkpoint (or a bare state_dict)")
    p.add_argument(
        "--model",
        default=None,
        help="timm model name (default: the checkpoint's architecture, else preactresnet18)",
    )
    p.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    p.add_argument("--out", default="grid.png", help="PNG to write")
    p.add_argument("--figure", default="methods", choices=("methods", "steps"), help="what to draw")
    p.add_argument(
        "--method",
        action="append",
        default=None,
        help="a method to draw (repeatable; default: all): " + ", ".join(_LABEL_OF),
    )
    p.add_argument("--num-images", type=positive_int, default=4, help="images to draw")
    p.add_argument(
        "--img-size", type=positive_int, default=None, help="image side (default: the data's / 32)"
    )
    p.add_argument("--grid", type=int, default=4, help="SalfMix pooling grid n")
    p.add_argument("--ratio", type=float, default=0.3, help="SalfMix patch side ratio r")
    p.add_argument("--mean", type=float, nargs="+", default=None, help="normalisation mean (folders)")
    p.add_argument("--std", type=float, nargs="+", default=None, help="normalisation std (folders)")
    p.add_argument(
        "--seed",
        type=int,
        default=7,
        help="seed of the random choices (7: the two-image mixes are well visible)",
    )
    p.add_argument("--dpi", type=int, default=100, help="PNG resolution")
    return p


def _check_folder(folder: str) -> str:
    if not os.path.isdir(folder):
        what = "does not exist" if not os.path.exists(folder) else "is not a folder"
        raise ShowError(f"image folder {folder!r} {what}")
    return folder


def _run(args: argparse.Namespace) -> str:
    names = list(METHOD_NAMES)
    if args.method:
        unknown = [m for m in args.method if _slug(m) not in _METHOD_SLUGS]
        if unknown:
            raise ShowError(f"unknown method {unknown[0]!r}; choose from {', '.join(_LABEL_OF)}")
        names = [_METHOD_SLUGS[_slug(m)] for m in args.method]
    if args.images != "default":
        _check_folder(args.images)  # before the model is built

    model, info = load_model(args.model, args.checkpoint, use_ema=args.ema, seed=args.seed)
    img_size = args.img_size or info["args"].get("img_size") or 32
    if args.images == "default":
        data = load_default_images(args.num_images, img_size)
    else:
        mean = tuple(args.mean) if args.mean else IMAGENET_DEFAULT_MEAN
        std = tuple(args.std) if args.std else IMAGENET_DEFAULT_STD
        data = load_folder_images(args.images, args.num_images, img_size, mean, std)
    x, target, class_names = data["x"], data["target"], data["class_names"]
    num_classes = info["num_classes"]
    if target is None or int(target.max()) >= num_classes:
        with torch.no_grad():  # no labels (or not the model's): explain the model's own prediction
            target = model(x).argmax(dim=1)
        class_names = None if class_names is None or len(class_names) != num_classes else class_names
    try:
        from ._validation import check_grid

        check_grid(args.grid, "grid", x.shape[2], x.shape[3])
        transforms = default_methods(num_classes, grid=args.grid, ratio=args.ratio)
    except (TypeError, ValueError) as e:
        raise ShowError(str(e)) from e
    common = dict(model=model, mean=data["mean"], std=data["std"], max_images=args.num_images, save=args.out)
    if args.figure == "steps":
        titles = None if class_names is None else [class_names[int(t)] for t in target]
        generator = torch.Generator().manual_seed(args.seed)
        salfmix = transforms["SalfMix"]
        plot_salfmix(
            x, target=target, transform=salfmix, generator=generator, titles=titles, dpi=args.dpi, **common
        )
    else:
        # Two-image methods pair image i with B-1-i: draw from a batch of at least 2 images.
        chosen = {name: transforms[name] for name in names}
        plot_methods(
            x, target, methods=chosen, seed=args.seed, class_names=class_names, dpi=args.dpi, **common
        )
    if args.checkpoint is None:
        print("show: note: no --checkpoint, the saliency is that of an untrained model", file=sys.stderr)
    return args.out


def main(argv: Sequence[str] | None = None) -> int:
    """Write the picture; 0 on success, 2 (one line on stderr) on bad input."""
    try:
        args = build_parser().parse_args(argv)
        out = _run(args)
    except UsageError as e:  # ShowError, or a flag argparse refuses
        return report_error(PROG, e)
    except OSError as e:  # e.g. the output folder cannot be written
        return report_error(PROG, f"{type(e).__name__}: {one_line(e)}")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
