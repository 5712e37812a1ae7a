"""A fingerprint of a training set, saved in the checkpoints of ``train_timm.py`` and ``train_seg.py``.

A run resumed on another data set would go on training under the old run's name (and keep the old data's
best in ``results.json``), and a ``--saliency-source cached`` run would read the cached maps of other images.
Each checkpoint therefore holds the training set's :func:`dataset_fingerprint`:

* ``name``: the data set kind (``folder``, ``cifar10``, ``digits``, ``synthetic``, ...);
* ``classes``: the class names in label order (``None`` when the data set has none);
* ``size``: the number of training files (images; image/mask pairs for segmentation), or of samples for
  a data set without files (digits, CIFAR, synthetic scenes);
* ``files_sha256``: the sha256 of the sorted file names relative to the data set's folder (so a moved
  folder keeps its fingerprint); ``None`` for a data set without files;
* ``order_sha256``: the sha256 of the same names in the data set's order, the sample indices that per-file
  state (the saliency cache) is kept by; ``None`` for a data set without files.

:func:`check_resume_data` compares it with the data of the resumed run: another name, class list or size is
refused (:class:`DataChangedError`, one line naming the checkpoint and what differs); other file names with
the same size and classes are refused where the run keeps per-file state (the saliency cache) and a warning
otherwise (images may have been re-encoded); the same names in another order (a reordered
``train.txt``) are refused where the run keeps per-file state; a checkpoint without a fingerprint (an
earlier version's) resumes with a note.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

__all__ = [
    "FINGERPRINT_KEY",
    "DataChangedError",
    "check_evaluation_data",
    "check_resume_data",
    "dataset_fingerprint",
]

#: The checkpoint entry that holds the fingerprint.
FINGERPRINT_KEY = "data_fingerprint"

_SHOWN = 4  # class names shown in a message


class DataChangedError(ValueError):
    """The data set is not the one the checkpoint was trained on (one line: the checkpoint, what differs)."""


def _relative(paths: Sequence[str], root: str) -> list[str]:
    return [os.path.relpath(path, root).replace(os.sep, "/") for path in paths]


def _files(dataset: Any) -> list[str] | None:
    """The training files of ``dataset`` relative to its folder; ``None`` for a data set without files.

    timm's folder data set (``create_dataset``): ``reader.samples`` under ``reader.root``; Tiny-ImageNet:
    ``samples`` under ``root``; :class:`~salfmix_transforms.segmentation.SegmentationFolder`: the image and
    mask of each name.
    """
    reader = getattr(dataset, "reader", None)
    if reader is not None and hasattr(reader, "samples") and hasattr(reader, "root"):
        return _relative([sample[0] for sample in reader.samples], reader.root)
    names = getattr(dataset, "names", None)
    if names is not None and hasattr(dataset, "image_dir") and hasattr(dataset, "mask_dir"):
        root = getattr(dataset, "root", os.path.dirname(dataset.image_dir))
        pairs = [
            (os.path.join(dataset.image_dir, n), os.path.join(dataset.mask_dir, dataset.mask_name(n)))
            for n in names
        ]
        return [" ".join(_relative(pair, root)) for pair in pairs]
    samples = getattr(dataset, "samples", None)
    if samples is not None and isinstance(getattr(dataset, "root", None), str):
        return _relative([sample[0] for sample in samples], dataset.root)
    return None


def _classes(dataset: Any) -> list[str] | None:
    reader = getattr(dataset, "reader", None)
    class_to_idx = getattr(reader, "class_to_idx", None) or getattr(dataset, "class_to_idx", None)
    if class_to_idx:
        return [str(name) for name, _ in sorted(class_to_idx.items(), key=lambda item: item[1])]
    classes = getattr(dataset, "classes", None)
    return None if classes is None else [str(name) for name in classes]


def dataset_fingerprint(dataset: Any, name: str) -> dict[str, Any]:
    """The fingerprint of training set ``dataset`` of kind ``name`` (see the module docstring): plain
    values, ``{"name", "classes", "size", "files_sha256", "order_sha256"}``."""
    files = _files(dataset)

    def digest(names: list[str]) -> str | None:
        return None if files is None else hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()

    return {
        "name": name,
        "classes": _classes(dataset),
        "size": len(files) if files is not None else len(dataset),
        "files_sha256": digest(sorted(files or [])),
        "order_sha256": digest(files or []),
    }


def _show(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def _class_difference(saved: list[str], current: list[str]) -> str:
    gone = [c for c in saved if c not in current]
    new = [c for c in current if c not in saved]
    parts = []
    if new:
        parts.append(f"{_show(new)} now, not in the checkpoint's")
    if gone:
        parts.append(f"{_show(gone)} in the checkpoint's, not now")
    if not parts:
        parts.append("the same names in another order")
    return "other classes: " + "; ".join(parts)


def _data_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What makes ``current`` another data set than ``saved`` (name, classes, size); empty when none."""
    differences = []
    if saved.get("name") and saved["name"] != current["name"]:
        differences.append(f"data set {saved['name']} then, {current['name']} now")
    old, new = saved.get("classes"), current["classes"]
    if old is not None and new is not None and list(old) != list(new):
        differences.append(_class_difference(list(old), list(new)))
    if saved.get("size") is not None and int(saved["size"]) != current["size"]:
        differences.append(f"{saved['size']} training files then, {current['size']} now")
    return differences


def check_resume_data(
    path: str, ckpt: dict[str, Any], current: dict[str, Any], per_file_state: str | None = None
) -> str | None:
    """Check that the training set of a resumed run (fingerprint ``current``) is the one checkpoint ``path``
    (metadata ``ckpt``) was trained on. Returns the line to log (a note or a warning), ``None`` when there is
    nothing to say.

    Args:
        per_file_state: what the run keeps per training file (e.g. "its cached saliency maps
            (--saliency-source cached)"); with it, other file names are refused instead of a warning.

    Raises:
        DataChangedError: another data set, class list or number of files; other file names, or the
            same in another order, with ``per_file_state``.
    """
    saved = ckpt.get(FINGERPRINT_KEY)
    if not isinstance(saved, dict):
        return (
            f"note: checkpoint {path!r} has no data set fingerprint (an earlier version's): the training "
            "data cannot be checked against the checkpoint's"
        )
    differences = _data_differences(saved, current)
    if differences:
        raise DataChangedError(
            f"checkpoint {path!r} was trained on another data set ({'; '.join(differences)}): resume on the "
            "checkpoint's data, or start a new run"
        )
    old, new = saved.get("files_sha256"), current["files_sha256"]
    if old is None or new is None or old == new:
        old_order, new_order = saved.get("order_sha256"), current.get("order_sha256")
        if per_file_state and old_order is not None and new_order is not None and old_order != new_order:
            raise DataChangedError(
                f"the training files are listed in another order than for checkpoint {path!r} (the same "
                f"{current['size']} names): {per_file_state} are kept by position; restore the order "
                "(e.g. train.txt), or start a new run"
            )
        return None
    what = (
        f"the training file names differ from those of checkpoint {path!r} (the same {current['size']} files "
        "and classes)"
    )
    if per_file_state:
        raise DataChangedError(
            f"{what}: {per_file_state} belong to other images; resume on the checkpoint's data, or start a "
            "new run"
        )
    return f"warning: {what}; resuming (re-encoded or renamed images?)"


def check_evaluation_data(path: str, ckpt: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to score checkpoint ``path`` (metadata ``ckpt``) on a data set of other classes than it was
    trained on (``current``: the fingerprint of the evaluation run's training split); a checkpoint without a
    fingerprint passes.

    Raises:
        DataChangedError: another data set kind or class list (the message names both).
    """
    saved = ckpt.get(FINGERPRINT_KEY)
    if not isinstance(saved, dict):
        return
    differences = [d for d in _data_differences(saved, current) if "training files" not in d]
    if differences:
        raise DataChangedError(
            f"checkpoint {path!r} was trained on another data set ({'; '.join(differences)}): evaluate it "
            "on its own data (--data-dir, --dataset)"
        )
