"""Crash-safe training checkpoints: timm's ``CheckpointSaver`` with atomic replaces and sha256 checksums.

timm's saver puts ``last.pth.tar`` in place by unlink-then-rename and ``model_best.pth.tar`` by
unlink-then-link: a kill between the two steps leaves neither file. :class:`AtomicCheckpointSaver` keeps all
of timm's bookkeeping (ranked history, best metric, resume state) and changes only how a file is put in
place: it is written (or copied) under a temporary name, fsynced, then moved over the old one with
``os.replace``, so every checkpoint name holds a complete file at every moment.

``checksums.sha256`` in the checkpoint folder (the format of ``sha256sum -c``) lists the sha256 of every
checkpoint there. A digest is listed before its file is moved into place and dropped only once no file has it,
so every file the saver wrote has its digest listed, even after a kill; a file whose bytes changed (flipped
bits, a truncated copy) is not listed and fails :func:`verify`. :func:`find_resume_checkpoint` turns a
``--resume`` path into the file to load, falling back from a missing or damaged ``last.pth.tar`` to the newest
intact ``checkpoint-N.pth.tar``.

``last.pth.tar``, ``checkpoint-N.pth.tar`` and ``model_best.pth.tar`` are separate files (copies, not hard
links of one inode), so damage to one in place (a truncating copy, a bad sector) leaves the others intact. A
save that fails (no space left, a file-size limit, Ctrl-C) removes its temporary files and leaves every
checkpoint saved before as it was (:class:`CheckpointSaveError`).

Every checkpoint names the script that wrote it (``task``: ``"classification"`` for ``train_timm.py``,
``"segmentation"`` for ``train_seg.py``; :func:`checkpoint_task`), and :func:`load_resume_checkpoint` refuses
one of the other script, or one whose weights are not finite.

``--evaluate CKPT`` of both scripts scores a checkpoint without training (:func:`load_evaluation_checkpoint`,
:func:`saved_flags`, :func:`evaluation_path`, :func:`write_json`); it never writes a run's ``results.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from typing import Any

import torch
from timm.utils import CheckpointSaver, load_checkpoint_metadata

from .cli import one_line

__all__ = [
    "CHECKSUMS",
    "RESULTS",
    "TASK_SCRIPTS",
    "AtomicCheckpointSaver",
    "CheckpointSaveError",
    "CorruptCheckpointError",
    "checkpoint_epoch",
    "checkpoint_task",
    "evaluation_path",
    "find_resume_checkpoint",
    "load_evaluation_checkpoint",
    "load_resume_checkpoint",
    "open_run_folder",
    "read_checksums",
    "restore_best",
    "resumable_checkpoint",
    "saved_flags",
    "sha256_file",
    "verify",
    "write_json",
]

_logger = logging.getLogger(__name__)

CHECKSUMS = "checksums.sha256"
_LAST = "last.pth.tar"
_NUMBERED = re.compile(r"checkpoint-(\d+)\.pth\.tar$")
# The ``task`` entry of a checkpoint and the script that writes it.
TASK_SCRIPTS = {"classification": "train_timm.py", "segmentation": "train_seg.py"}


class CorruptCheckpointError(ValueError):
    """A checkpoint whose bytes are not those saved: its sha256 is not in its folder's checksums.sha256, or
    its weights are not finite."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (no space left, a file-size limit, ...). The message names the
    folder and the cause; the temporary files are removed and the checkpoints saved before are intact."""


# --- checksums ----------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checksums(folder: str | os.PathLike) -> dict[str, str] | None:
    """``{file name: sha256}`` from ``folder``'s checksums.sha256, ``None`` when there is none."""
    try:
        with open(os.path.join(folder, CHECKSUMS)) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    entries = (line.split("  ", 1) for line in lines if "  " in line)
    return {name: digest for digest, name in entries}


def verify(path: str | os.PathLike) -> bool | None:
    """Whether ``path`` holds the bytes that were saved: ``True`` when its sha256 is listed in its folder's
    checksums.sha256, ``False`` when the list names the file but not its digest (corrupt), ``None`` when
    there is nothing to check against (no list, or a file saved before checksums were written)."""
    folder, name = os.path.split(os.path.abspath(path))
    listed = read_checksums(folder)
    if not listed:
        return None
    if sha256_file(path) in listed.values():
        return True
    return False if name in listed else None


def _fsync(path: str) -> None:
    """Make a file's bytes, or a rename in folder ``path``, durable (a folder that cannot be synced is
    skipped: not every system can open one)."""
    is_folder = os.path.isdir(path or ".")
    try:
        fd = os.open(path or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not is_folder:
            raise


def _write_atomically(path: str, text: str, tmp: str) -> None:
    """Write ``text`` to ``path`` through the temporary file ``tmp`` (fsynced, then ``os.replace``): the file
    holds the old or the new content at every moment, never a partial one. A failed write removes ``tmp``.

    Raises:
        OSError: the file cannot be written.
    """
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync(os.path.dirname(os.path.abspath(path)))


def _write_checksums(folder: str, entries: dict[str, str]) -> None:
    lines = "".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items()))
    _write_atomically(os.path.join(folder, CHECKSUMS), lines, os.path.join(folder, CHECKSUMS + ".tmp"))


# --- saver --------------------------------------------------------------------------------------------


class AtomicCheckpointSaver(CheckpointSaver):
    """timm's ``CheckpointSaver`` (same arguments) whose every replace is atomic, whose every file is a
    separate copy (no hard links) and whose every file is listed with its sha256 in ``checksums.sha256`` of
    ``checkpoint_dir`` (see the module docstring).

    Only ``_save``, ``_replace`` and ``_duplicate`` (how a file is put in place) are changed, and a failed
    ``save_checkpoint`` cleans up after itself; ranking, history, best-metric tracking and the resume state
    are timm's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.can_hardlink = False  # one file per name: damage to last.pth.tar stays in last.pth.tar
        self._digests: dict[str, str] = read_checksums(self.checkpoint_dir) or {}
        self._pending_last: str | None = None  # the new last.pth.tar, put in place when the save is complete
        self._saving = False  # inside save_checkpoint: the replace of last.pth.tar waits for the copies

    def _save(self, save_path: str, epoch: int, metric: float | None = None) -> None:
        # torch.save writes through a Python file object: a failed write raises its OSError (ENOSPC, EFBIG)
        # as the context of torch's RuntimeError, where a path gives "unexpected pos" and no cause.
        with open(save_path, "wb") as f:
            super()._save(f, epoch, metric)  # type: ignore[arg-type]  (timm hands it to torch.save)
            f.flush()
            os.fsync(f.fileno())
        self._digests[os.path.basename(save_path)] = sha256_file(save_path)
        _write_checksums(self.checkpoint_dir, self._digests)  # listed before it replaces anything

    def _replace(self, src: str, dst: str) -> None:
        if self._saving and os.path.basename(dst) == "last" + self.extension:
            # timm replaces last.pth.tar first, then copies it to checkpoint-N and model_best: a save that
            # fails in between would leave a new last and a stale best. last is the commit point instead:
            # the copies are made from the new file (still tmp), and last replaced when they are done.
            self._pending_last = src
            return
        os.replace(src, dst)  # dst is the old file or the new one, never missing
        _fsync(os.path.dirname(dst))
        self._digests[os.path.basename(dst)] = self._digests.pop(os.path.basename(src))

    def _duplicate(self, src: str, dst: str) -> None:
        if self._pending_last is not None and os.path.basename(src) == "last" + self.extension:
            src = self._pending_last  # the epoch's new state, not the previous last.pth.tar
        folder = os.path.dirname(dst)
        tmp = os.path.join(folder, "tmp_copy" + self.extension)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by a kill
        digest = self._digests.get(os.path.basename(src))
        if digest is None or os.path.dirname(os.path.abspath(src)) != os.path.abspath(folder):
            digest = sha256_file(src)  # a file of another folder (a resumed run's best)
            self._digests[os.path.basename(tmp)] = digest
            _write_checksums(self.checkpoint_dir, self._digests)
        shutil.copy2(src, tmp)  # a copy, not a hard link: each name its own inode
        _fsync(tmp)
        os.replace(tmp, dst)
        _fsync(folder)
        self._digests.pop(os.path.basename(tmp), None)
        self._digests[os.path.basename(dst)] = digest

    def save_checkpoint(self, epoch: int, metric: float | None = None) -> tuple[Any, Any]:
        """timm's ``save_checkpoint`` with ``last.pth.tar`` written last (after checkpoint-N and model_best);
        when it fails (a write error, Ctrl-C), its temporary files are removed and ``last.pth.tar`` is the
        previous epoch's, so a resume redoes the epoch and completes its bookkeeping.

        Raises:
            CheckpointSaveError: a file could not be written (no space left, a file-size limit, ...).
        """
        try:
            self._saving = True
            try:
                result = super().save_checkpoint(epoch, metric)
            finally:
                self._saving = False
            self._commit_last()
            self._prune_checksums()
        except BaseException as e:
            self._pending_last = None  # last.pth.tar stays the previous epoch's
            self._remove_temporaries()
            if isinstance(e, (OSError, RuntimeError)):
                folder = os.path.abspath(self.checkpoint_dir)
                raise CheckpointSaveError(f"cannot save a checkpoint in {folder!r}: {_cause(e)}") from e
            raise
        return result

    def _commit_last(self) -> None:
        """Put the epoch's new state in place as ``last.pth.tar``: the last step of a save."""
        src, self._pending_last = self._pending_last, None
        if src is not None:
            self._replace(src, os.path.join(self.checkpoint_dir, "last" + self.extension))

    def _remove_temporaries(self) -> None:
        """Remove what a failed save leaves (best effort; the checksums then list the files that exist)."""
        for name in ("tmp" + self.extension, "tmp_copy" + self.extension, CHECKSUMS + ".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.checkpoint_dir, name))
        with contextlib.suppress(OSError):
            self._prune_checksums()

    def install(self, src: str, name: str) -> None:
        """Put a copy of checkpoint ``src`` (of any folder) in place as ``name`` in ``checkpoint_dir``."""
        self._duplicate(src, os.path.join(self.checkpoint_dir, name))
        self._prune_checksums()

    def _prune_checksums(self) -> None:
        """List exactly the files that exist (the temporary names and evicted checkpoints drop out)."""
        folder = self.checkpoint_dir
        self._digests = {n: d for n, d in self._digests.items() if os.path.exists(os.path.join(folder, n))}
        _write_checksums(self.checkpoint_dir, self._digests)


def _cause(error: BaseException) -> str:
    """What went wrong in a failed write: the OSError of the chain (torch.save wraps the write's in a
    RuntimeError) as "No space left on device", else the error's own message."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return " ".join(str(error).split()) or type(error).__name__


# --- resume -------------------------------------------------------------------------------------------


def _read_training_checkpoint(path: str) -> dict[str, Any]:
    """The metadata of training checkpoint ``path`` (timm's ``load_checkpoint_metadata``).

    Raises:
        ValueError: no such file, a file that is not a torch checkpoint, or one that is not a training
            checkpoint (no ``state_dict`` / ``epoch``); the message names the path.
    """
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} does not exist")
    try:
        ckpt = load_checkpoint_metadata(path)
    except Exception as e:  # not a torch file, truncated, ...
        raise ValueError(f"cannot read checkpoint {path!r} (not a torch.save file?): {one_line(e)}") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
        raise ValueError(f"{path!r} is not a training checkpoint (no state_dict / epoch)")
    return ckpt


def _problem(path: str) -> str | None:
    """Why ``path`` cannot be resumed from (missing, corrupt, unreadable), ``None`` when it is intact."""
    if os.path.isfile(path) and verify(path) is False:
        return f"checkpoint {path!r} does not match its sha256 in {CHECKSUMS}"
    try:
        _read_training_checkpoint(path)
    except ValueError as e:
        return str(e)
    return None


def _numbered_newest_first(folder: str) -> list[str]:
    """The ``checkpoint-N.pth.tar`` files of ``folder``, most recently written first (then highest N)."""
    names = [n for n in os.listdir(folder) if _NUMBERED.fullmatch(n)]
    paths = [os.path.join(folder, n) for n in names]
    key = {p: (os.path.getmtime(p), int(_NUMBERED.fullmatch(os.path.basename(p)).group(1))) for p in paths}
    return sorted(paths, key=key.__getitem__, reverse=True)


def find_resume_checkpoint(path: str) -> tuple[str, str | None]:
    """The checkpoint file that ``--resume path`` means, and a note when it is not ``path`` itself.

    ``path`` is a checkpoint file or a run folder (its ``last.pth.tar``). When ``last.pth.tar`` is missing,
    unreadable or fails its checksum, the newest intact ``checkpoint-N.pth.tar`` of its folder is used and the
    note says so. Any other file is used as given (the caller reports a missing or unreadable one).

    Raises:
        CorruptCheckpointError: the file fails its checksum (and, for ``last.pth.tar``, no intact
            ``checkpoint-N`` is there to fall back to).
    """
    if os.path.isdir(path):
        path = os.path.join(path, _LAST)
    problem = _problem(path)
    if problem is None:
        return path, None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.basename(path) == _LAST and os.path.isdir(folder):
        for candidate in _numbered_newest_first(folder):
            if _problem(candidate) is None:
                return candidate, f"{problem}; resuming from the newest intact checkpoint {candidate}"
    if CHECKSUMS in problem:
        raise CorruptCheckpointError(
            f"{problem}: the file changed since it was saved (corrupt); resume from another checkpoint of "
            f"{folder}"
        )
    return path, None


def checkpoint_task(ckpt: dict[str, Any]) -> str | None:
    """Which script wrote checkpoint metadata ``ckpt``: ``"classification"`` (``train_timm.py``) or
    ``"segmentation"`` (``train_seg.py``), a key of :data:`TASK_SCRIPTS`; ``None`` when it cannot be told.

    Its ``task`` entry; for a checkpoint written before there was one, the flags saved with it
    (``--limit-train`` / ``--limit-val`` are train_seg.py's, ``--val-split`` / ``--model-ema``
    train_timm.py's)."""
    task = ckpt.get("task")
    if task in TASK_SCRIPTS:
        return task
    saved = ckpt.get("args")
    names = set(vars(saved) if isinstance(saved, argparse.Namespace) else saved or ())
    if names & {"limit_train", "limit_val"}:
        return "segmentation"
    if names & {"val_split", "train_split", "model_ema"}:
        return "classification"
    return None


def _non_finite_weight(ckpt: dict[str, Any]) -> tuple[str, str] | None:
    """The first floating-point tensor of the model or EMA weights (``state_dict``, ``state_dict_ema``) with
    a NaN or an infinity, as (entry, tensor name); ``None`` when all are finite."""
    for entry in ("state_dict", "state_dict_ema"):
        state = ckpt.get(entry)
        if not isinstance(state, dict):
            continue
        for name, value in state.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                if not bool(torch.isfinite(value).all()):
                    return entry, name
    return None


def load_resume_checkpoint(path: str, task: str | None = None) -> tuple[str, dict[str, Any], str | None]:
    """What ``--resume path`` of a training script means: the checkpoint file
    (:func:`find_resume_checkpoint`), its metadata (timm's ``load_checkpoint_metadata``) and the fallback
    note (``None`` when ``path`` itself is used). ``task`` (a key of :data:`TASK_SCRIPTS`): the script that
    resumes; a checkpoint of the other one is refused.

    Raises:
        CorruptCheckpointError: the file fails its checksum, or its model or EMA weights are not finite.
        ValueError: no such file, a file that is not a torch checkpoint, one that is not a training
            checkpoint (no ``state_dict`` / ``epoch``), or one of the other script; the message names the
            path.
    """
    path, note = find_resume_checkpoint(path)
    ckpt = _read_training_checkpoint(path)
    written = checkpoint_task(ckpt)
    if task is not None and written is not None and written != task:
        raise ValueError(
            f"checkpoint {path!r} was written by {TASK_SCRIPTS[written]} (a {written} run), not by "
            f"{TASK_SCRIPTS[task]}: use {TASK_SCRIPTS[written]}"
        )
    bad = _non_finite_weight(ckpt)
    if bad is not None:
        raise CorruptCheckpointError(
            f"checkpoint {path!r} has non-finite values (NaN / inf) in {bad[0]} {bad[1]!r}: the file is "
            f"damaged; resume from another checkpoint"
        )
    return path, ckpt, note


def resumable_checkpoint(folder: str, fallback: str = "") -> str | None:
    """The checkpoint that continues the run of ``folder`` (its ``last.pth.tar``, else its newest
    ``checkpoint-N.pth.tar``), else ``fallback`` (the checkpoint or run folder the run was resumed from)
    when it exists; ``None`` when there is none. What a script's "resume with --resume ..." names."""
    if folder and os.path.isdir(folder):
        last = os.path.join(folder, _LAST)
        if os.path.isfile(last):
            return os.path.abspath(last)
        numbered = _numbered_newest_first(folder)
        if numbered:
            return os.path.abspath(numbered[0])
    if fallback and os.path.exists(fallback):
        return os.path.abspath(fallback)
    return None


def checkpoint_epoch(path: str | os.PathLike) -> int | None:
    """The epoch of checkpoint ``path``; ``None`` when there is no readable checkpoint."""
    try:
        return int(_read_training_checkpoint(str(path))["epoch"])
    except ValueError:  # missing, unreadable, not a checkpoint: not a source of model_best
        return None


def restore_best(saver: AtomicCheckpointSaver, path: str, ckpt: dict[str, Any]) -> None:
    """Continue the bookkeeping of the resumed checkpoint ``path`` (metadata ``ckpt``) in ``saver``'s folder.

    The ranked history is timm's saver state (only in the checkpoint's own folder, where its files are); the
    best metric and epoch count the checkpoint's own metric too, in any folder; and ``model_best.pth.tar`` is
    made the best epoch's checkpoint: copied from the resumed run into a new folder, re-derived when an older
    ``checkpoint-N`` is resumed (the later epochs, and their best, are no longer the run's).
    """
    state = ckpt.get("saver") or {}
    if os.path.dirname(os.path.abspath(path)) == os.path.abspath(saver.checkpoint_dir):
        saver.load_state_dict(state)
    else:
        saver.best_metric, saver.best_epoch = state.get("best_metric"), state.get("best_epoch")
    metric, epoch = ckpt.get("metric"), int(ckpt["epoch"])
    if metric is not None and (saver.best_metric is None or saver.cmp(metric, saver.best_metric)):
        saver.best_metric, saver.best_epoch = metric, epoch
    if saver.best_epoch is not None:
        _install_model_best(saver, path, epoch)


def _install_model_best(saver: AtomicCheckpointSaver, path: str, epoch: int) -> None:
    """Make ``model_best.pth.tar`` of ``saver``'s folder the best epoch's checkpoint: the resumed one (of
    ``epoch``), or the ``checkpoint-N`` / ``model_best`` of its folder that has the best epoch."""
    best = saver.best_epoch
    if checkpoint_epoch(os.path.join(saver.checkpoint_dir, "model_best.pth.tar")) == best:
        return
    folder = os.path.dirname(os.path.abspath(path))
    sources = [path] if epoch == best else []
    sources += [os.path.join(folder, name) for name in (f"checkpoint-{best}.pth.tar", "model_best.pth.tar")]
    for source in sources:
        if checkpoint_epoch(source) == best and verify(source) is not False:
            saver.install(source, "model_best.pth.tar")
            return
    _logger.warning("no intact checkpoint of the best epoch %d: model_best.pth.tar is not updated", best)


def open_run_folder(
    output_dir: str,
    run_args: argparse.Namespace,
    resume: str = "",
    resume_ckpt: dict[str, Any] | None = None,
    **saver_kwargs: Any,
) -> AtomicCheckpointSaver:
    """The checkpoint saver of a training script's run folder ``output_dir``, ready for the first epoch.

    An :class:`AtomicCheckpointSaver` (timm's arguments in ``saver_kwargs``: model, optimizer, ``decreasing``,
    ``max_history``, ``task``, ...) saving ``run_args`` (plain values) in every checkpoint; a resumed run's
    best so far restored (:func:`restore_best`, from checkpoint ``resume`` with metadata ``resume_ckpt``); and
    ``run_args`` written to ``args.json``.

    Raises:
        OSError: the folder cannot be written.
    """
    saver = AtomicCheckpointSaver(
        args=run_args, checkpoint_dir=output_dir, recovery_dir=output_dir, **saver_kwargs
    )
    if resume and resume_ckpt is not None:
        restore_best(saver, resume, resume_ckpt)
    with open(os.path.join(output_dir, "args.json"), "w") as f:
        json.dump(vars(run_args), f, indent=2, sort_keys=True)
    return saver


# --- evaluate-only runs (--evaluate) ---------------------------------------------------------------------

RESULTS = "results.json"  # a run's results: an evaluation never writes it


def saved_flags(ckpt: dict[str, Any], names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The flags ``names`` that checkpoint metadata ``ckpt`` was trained with (its ``args``); those it does
    not have are left out."""
    saved = ckpt.get("args")
    values = vars(saved) if isinstance(saved, argparse.Namespace) else dict(saved or {})
    return {name: values[name] for name in names if name in values}


def load_evaluation_checkpoint(
    path: str, task: str, ema: bool = False
) -> tuple[str, dict[str, Any], dict[str, Any], str, str | None]:
    """What ``--evaluate path`` of a training script scores: ``(checkpoint file, metadata, state dict,
    "model" or "ema", note)``. The file is found, checked and refused as by :func:`load_resume_checkpoint`
    (``task``: the script's); with ``ema`` its EMA weights when it has them, else the model's and a note
    that says so (``None`` when there is nothing to say).

    Raises:
        CorruptCheckpointError, ValueError: as :func:`load_resume_checkpoint`.
    """
    from timm.models import clean_state_dict

    path, ckpt, note = load_resume_checkpoint(path, task=task)
    weights = "model"
    if ema and isinstance(ckpt.get("state_dict_ema"), dict):
        weights = "ema"
    elif ema:
        note = f"checkpoint {path!r} has no EMA weights: scoring the model's (--model-ema)"
    state = clean_state_dict(ckpt["state_dict_ema" if weights == "ema" else "state_dict"])
    return path, ckpt, state, weights, note


def evaluation_path(checkpoint: str, output: str, split: str, weights: str = "model") -> str:
    """Where ``--evaluate`` writes its metrics: ``output`` when it names a ``.json`` file, else the file
    ``<checkpoint name>-eval-<split>[-ema].json`` in folder ``output``, or next to ``checkpoint`` when
    ``output`` is empty (``model_best.pth.tar`` -> ``model_best-eval-val.json``).

    Raises:
        ValueError: the path is a run's ``results.json`` (never overwritten by an evaluation).
    """
    if output.lower().endswith(".json"):
        path = output
    else:
        name = os.path.basename(checkpoint)
        for suffix in (".pth.tar", ".pth", ".pt", ".tar", ".bin", ".safetensors"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        suffix = "-ema" if weights == "ema" else ""
        split = split.replace(os.sep, "_").replace("/", "_")
        path = os.path.join(
            output or os.path.dirname(os.path.abspath(checkpoint)), f"{name}-eval-{split}{suffix}.json"
        )
    if os.path.basename(path) == RESULTS:
        raise ValueError(f"--output {output!r}: {RESULTS} is a run's results, never written by --evaluate")
    return os.path.abspath(path)


def free_evaluation_path(path: str, record: dict[str, Any]) -> str:
    """Where an evaluation ``record`` goes so that no other one is lost: ``path`` when it is free or holds
    this same record (the same checkpoint scored again on the same data), else the first of
    ``<stem>-2.json``, ``<stem>-3.json``, ... that is (the existing file scored another data set or split
    size, or a ``model_best`` that has changed since)."""
    wanted = json.dumps(json.loads(json.dumps(record)), sort_keys=True)
    stem, number, candidate = path[: -len(".json")], 1, path
    while os.path.exists(candidate):
        try:
            with open(candidate) as f:
                if json.dumps(json.load(f), sort_keys=True) == wanted:
                    return candidate
        except (OSError, ValueError):
            pass  # unreadable or not JSON: not ours to replace either
        number += 1
        candidate = f"{stem}-{number}.json"
    return candidate


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file, fsynced, then ``os.replace``): the
    file holds the old or the new content at every moment, never a partial one.

    Raises:
        OSError: the file cannot be written (the temporary file is removed).
    """
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    _write_atomically(path, json.dumps(data, indent=2) + "\n", tmp)
