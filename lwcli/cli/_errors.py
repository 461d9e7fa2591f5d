"""The one place where exceptions become exit codes (see :mod:`lwcli.errors`).

:func:`exit_status` maps an exception to its exit code and the line for stderr;
:func:`handle_errors` applies it around every command; :func:`run_cli` runs the typer app and
applies the same closed-pipe rule to the help and usage text typer writes itself.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import NamedTuple

import typer

from .. import settings
from ..errors import LwError
from ..faults import storage_error

#: Exit status when the reader of stdout went away (``lw market ls | head -1``): 128 + SIGPIPE,
#: what a shell reports for a command killed by SIGPIPE, as git is. Nothing goes to stderr.
EXIT_BROKEN_PIPE = 141
#: Exit status on Ctrl-C: 128 + SIGINT, what a shell reports for a process it interrupted.
EXIT_INTERRUPTED = 130
#: Exit status of a bug in lw (an exception lw did not raise on purpose).
EXIT_INTERNAL = 1


class Outcome(NamedTuple):
    """What an exception means to the shell: its exit ``code``, the ``line`` written on stderr
    (None: nothing), and whether it is a ``bug`` in lw (``LW_DEBUG`` then re-raises it)."""

    code: int
    line: str | None
    bug: bool = False


def exit_status(exc: BaseException) -> Outcome:
    """The exit code and stderr line of an exception escaping a command: an
    :class:`~lwcli.errors.LwError` its own code; a closed stdout 141, silently; Ctrl-C 130; an
    OS storage fault no write path named (disk full, read-only, no permission) 9; anything
    else is a bug, exit 1."""
    if isinstance(exc, LwError):
        return Outcome(exc.exit_code, f"lw: error: {exc}")
    if isinstance(exc, BrokenPipeError):     # the reader of stdout went away (`| head`)
        return Outcome(EXIT_BROKEN_PIPE, None)
    if isinstance(exc, KeyboardInterrupt):
        return Outcome(EXIT_INTERRUPTED, "lw: interrupted")
    err = storage_error(exc, verb="could not access")     # None unless an OS storage fault
    if err is not None:
        return Outcome(err.exit_code, f"lw: error: {err}")
    msg = " ".join(f"{type(exc).__name__}: {exc}".split())
    return Outcome(EXIT_INTERNAL, f"lw: internal error: {msg} "
                                  "(rerun with LW_DEBUG=1 for a traceback and report it)", bug=True)


def _stdout_gone() -> None:
    """Point stdout at /dev/null, so that nothing left in its buffer fails again at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):      # no file descriptor (stdout replaced, e.g. in tests)
        pass


def _flush_stdout() -> bool:
    """Flush stdout now, inside the boundary, not at interpreter shutdown (where a closed pipe
    would print "Exception ignored ..." and exit 120). False if its reader went away."""
    try:
        sys.stdout.flush()
        return True
    except BrokenPipeError:
        _stdout_gone()
        return False
    except (OSError, ValueError):
        return True


def handle_errors(fn):
    """Decorate a command: what it prints is flushed inside the boundary, and an exception
    becomes the exit code and stderr line :func:`exit_status` gives (``LW_DEBUG`` set: a bug
    is raised with its traceback instead)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except typer.Exit as exc:
            if not _flush_stdout() and exc.exit_code == 0:
                raise typer.Exit(EXIT_BROKEN_PIPE) from None
            raise
        except (Exception, KeyboardInterrupt) as exc:
            outcome = exit_status(exc)
            if outcome.bug and settings.debug():
                raise
            if isinstance(exc, BrokenPipeError):
                _stdout_gone()
            else:
                _flush_stdout()
            if outcome.line is not None:
                sys.stderr.write(outcome.line + "\n")
            raise typer.Exit(outcome.code) from None
        if not _flush_stdout():
            raise typer.Exit(EXIT_BROKEN_PIPE)
        return result

    return wrapper


def _stdout_is_null() -> bool:
    try:
        st, null = os.fstat(sys.__stdout__.fileno()), os.stat(os.devnull)
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino)


def run_cli(app: typer.Typer) -> None:
    """Run the typer app. Help and usage text are written by typer (click and rich), outside
    :func:`handle_errors`; when stdout's reader has gone (``lw --help | head -1``) they exit
    1, rich after pointing stdout at the null device, click after wrapping it in a
    ``PacifyFlushWrapper``. That is a closed pipe, not an internal error: exit 141, as every
    command does."""
    was_null = _stdout_is_null()
    try:
        app()
    except SystemExit as exc:
        closed = type(sys.stdout).__name__ == "PacifyFlushWrapper" or \
            (_stdout_is_null() and not was_null)
        if exc.code == 1 and closed:
            raise SystemExit(EXIT_BROKEN_PIPE) from None
        raise
