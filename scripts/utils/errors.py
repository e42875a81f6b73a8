"""Bad input ends a run with its message as the last line printed, not a traceback.

One exception type, ``InputError``, for every input the bundle refuses up front (a broken data set, a run
too short for a DAD window, an output folder that cannot be written, a pipeline whose stages cannot follow
each other). MONAI's config parser wraps an error raised inside a config expression in
``RuntimeError: Failed to evaluate ...``; ``install_hook`` (called by the configs' ``initialize`` and by the
command-line tools) replaces the interpreter's last-resort handler so that, when an ``InputError`` is
anywhere in the chain of the uncaught exception, only its message is printed (on stderr, last) and the
process exits with status 1. ``--debug True`` or ``DAD_DEBUG=1`` keeps the whole traceback.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

__all__ = ["DEBUG_ENV", "DEBUG_NOTE", "InputError", "install_hook", "input_error_in", "report_line"]

DEBUG_ENV = "DAD_DEBUG"
DEBUG_NOTE = f"(the traceback is kept with --debug True or {DEBUG_ENV}=1)"  # printed just before the message
_TRUE = {"1", "true", "yes", "on"}


class InputError(ValueError):
    """Input the bundle refuses before anything is trained or written; the message names what is wrong
    (the case, the file, the problem) and how to fix it."""


def input_error_in(exc: BaseException | None) -> InputError | None:
    """The first ``InputError`` in the chain of ``exc`` (its causes and contexts), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def report_line(error: InputError) -> str:
    """What the hook prints: the message, its last line the one that names the problem."""
    return f"{type(error).__name__}: {error}"


def _debug(debug: object) -> bool:
    return str(debug).strip().lower() in _TRUE or os.environ.get(DEBUG_ENV, "").strip().lower() in _TRUE


def install_hook(debug: object = False) -> bool:
    """Print only the message of an uncaught ``InputError`` (wrapped or not), then exit with status 1.

    Installed at most once per process (the previous ``sys.excepthook`` handles every other exception);
    with ``debug`` true (``--debug True``) or ``$DAD_DEBUG`` set to 1, nothing is installed and Python's
    traceback is kept. Returns whether the hook is in place.
    """
    if _debug(debug):
        return False
    previous = sys.excepthook
    if getattr(previous, "_dad_input_hook", False):
        return True

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        error = input_error_in(exc)
        if error is None:
            previous(kind, exc, tb)
            return
        sys.stdout.flush()
        print(DEBUG_NOTE, file=sys.stderr)
        print(report_line(error), file=sys.stderr, flush=True)

    hook._dad_input_hook = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return True
