"""What the training scripts share on the command line: one-line errors and checked flag types.

``train_timm.py`` and ``train_seg.py`` promise that a user error is one line on stderr and exit code 2,
never a traceback. argparse's own complaints (an unknown flag, an invalid choice, a value its ``type``
refuses) would print the usage and raise ``SystemExit``; :class:`OneLineArgumentParser` raises
:class:`UsageError` instead, the same exception the scripts raise for their own checks, and
:func:`report_error` prints it::

    parser = OneLineArgumentParser(prog="train_seg.py")
    parser.add_argument("--epochs", type=positive_int, default=8)
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        return report_error("train_seg.py", e)   # "train_seg.py: error: argument --epochs: ..." -> 2

The flag types (:func:`positive_int`, :func:`probability`, ...) raise ``argparse.ArgumentTypeError``, which
argparse turns into "argument --flag: <message>", so the message names the flag and what it expects.

A run that stops during training says where it can be resumed, on one line too: :func:`report_interrupt`
(Ctrl-C, exit code 130) and :func:`report_write_error` (a checkpoint or result that cannot be written, exit
code 2), given the checkpoint to resume from (``checkpoints.resumable_checkpoint``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = [
    "EXIT_INTERRUPTED",
    "OneLineArgumentParser",
    "UsageError",
    "logging_to_stdout",
    "non_negative_float",
    "non_negative_int",
    "one_line",
    "plain_flags",
    "positive_float",
    "positive_int",
    "probability",
    "report_error",
    "report_interrupt",
    "report_write_error",
    "writable_folder",
]

# The exit code of a run stopped by Ctrl-C (SIGINT): 128 + 2, what a shell reports.
EXIT_INTERRUPTED = 130

_T = TypeVar("_T")


class UsageError(Exception):
    """Bad command-line input, data or checkpoint: the script prints it as one line and returns 2."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors raise :class:`UsageError` (no usage, no ``SystemExit``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _checked(text: str, parse: Callable[[str], _T], ok: Callable[[_T], bool], expects: str) -> _T:
    """``parse(text)``, refused unless ``ok``: argparse shows "argument --flag: must <expects>, got TEXT",
    also for text that is no number."""
    try:
        value = parse(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must {expects}, got {text}")
    return value


def positive_int(text: str) -> int:
    """An ``int`` >= 1 (epochs, batch size, ...)."""
    return _checked(text, int, lambda v: v >= 1, "be an int >= 1")


def non_negative_int(text: str) -> int:
    """An ``int`` >= 0 (warm-up epochs, worker processes, ...)."""
    return _checked(text, int, lambda v: v >= 0, "be an int >= 0")


def non_negative_float(text: str) -> float:
    """A number >= 0 (NaN refused): weight decay, a Beta alpha, ..."""
    return _checked(text, float, lambda v: v >= 0.0, "be a number >= 0")


def positive_float(text: str) -> float:
    """A finite number > 0: a learning rate."""
    return _checked(text, float, lambda v: 0.0 < v < math.inf, "be a finite number > 0")


def probability(text: str) -> float:
    """A number in [0, 1] (NaN refused): a probability, a ratio, a momentum."""
    return _checked(text, float, lambda v: 0.0 <= v <= 1.0, "lie in [0, 1]")


def plain_flags(args: argparse.Namespace) -> argparse.Namespace:
    """The flags as plain values (str, numbers, bools, ``None``, lists and tuples of those, deep-copied):
    what ``args.json`` and a ``weights_only`` checkpoint load hold. Anything else (a frozenset of the given
    flags, a loaded checkpoint) is left out."""
    plain = {
        k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, tuple, type(None)))
    }
    return argparse.Namespace(**copy.deepcopy(plain))


def one_line(error: BaseException) -> str:
    """The exception's message with every run of white space (newlines included) made one space."""
    return " ".join(str(error).split()) or type(error).__name__


def report_error(prog: str, error: BaseException | str) -> int:
    """Print ``"<prog>: error: <message>"`` as one line on stderr and return the exit code 2."""
    message = error if isinstance(error, str) else one_line(error)
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def report_interrupt(prog: str, checkpoint: str | None, outcome: str | None = None) -> int:
    """Print, as one line on stderr, that the run was interrupted and how to go on from ``checkpoint`` (the
    newest checkpoint of the run, ``None`` when it has none), or ``outcome`` when given (a run that trains
    nothing: "no metrics written"); return :data:`EXIT_INTERRUPTED`."""
    if outcome:
        print(f"{prog}: interrupted; {outcome}", file=sys.stderr)
    elif checkpoint:
        print(f"{prog}: interrupted; resume with --resume {checkpoint}", file=sys.stderr)
    else:
        print(f"{prog}: interrupted before the first checkpoint: nothing to resume yet", file=sys.stderr)
    return EXIT_INTERRUPTED


def report_write_error(prog: str, error: OSError, checkpoint: str | None) -> int:
    """A file of the run (a checkpoint, ``summary.csv``, ``results.json``) could not be written: print the
    error and where the run can be resumed from (``checkpoint``, ``None`` when there is none) as one line on
    stderr; return 2."""
    if checkpoint:
        kept = f"the checkpoints saved before are intact: resume with --resume {checkpoint}"
    else:
        kept = "no checkpoint was saved yet"
    return report_error(prog, f"{one_line(error)}; {kept}")


@contextlib.contextmanager
def logging_to_stdout(primary: bool = True) -> Iterator[None]:
    """Progress and results as bare lines on stdout (errors alone go to stderr) while the block runs.

    Only the primary process of a distributed run logs at INFO; the others log warnings. timm's own
    loggers are kept at WARNING. The handler is removed at the end, so that a script's ``main`` can be
    called repeatedly (as the tests do) without printing each line twice.
    """
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO if primary else logging.WARNING)
    logging.getLogger("timm").setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def writable_folder(path: str, what: str = "the run folder") -> str:
    """Create ``path`` (with its parents) and check that a file can be written in it; returns ``path``.

    A permission problem then stops a script before it trains, instead of as a traceback at the end of the
    first epoch.

    Raises:
        UsageError: ``path`` cannot be created or written (a file in the way, no permission, ...).
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"cannot write {what} {path!r}: {one_line(e)}") from e
    return path
