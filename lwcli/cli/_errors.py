"""The one place where exceptions become exit codes (see :mod:`lwcli.errors`)."""

from __future__ import annotations

import functools
import os
import sys

import typer

from ..errors import LwError
from ..faults import storage_error

#: Exit status when the reader of stdout went away (``lw market ls | head -1``): 128 + SIGPIPE,
#: what a shell reports for a command killed by SIGPIPE, as git is. Nothing goes to stderr.
EXIT_BROKEN_PIPE = 141


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
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
            if not _flush_stdout():
                raise typer.Exit(EXIT_BROKEN_PIPE)
            return result
        except typer.Exit as exc:
            if not _flush_stdout() and exc.exit_code == 0:
                raise typer.Exit(EXIT_BROKEN_PIPE) from None
            raise
        except LwError as exc:
            _flush_stdout()
            sys.stderr.write(f"lw: error: {exc}\n")
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:   # the reader of stdout went away (e.g. `| head`): stop quietly
            _stdout_gone()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except KeyboardInterrupt:
            _flush_stdout()
            sys.stderr.write("lw: interrupted\n")
            raise typer.Exit(130) from None
        except OSError as exc:    # a storage fault that no write path named: still exit 9
            err = storage_error(exc, verb="could not access")
            if err is None:
                return _internal(exc)
            _flush_stdout()
            sys.stderr.write(f"lw: error: {err}\n")
            raise typer.Exit(err.exit_code) from None
        except Exception as exc:  # a bug: say so plainly, keep the trace for LW_DEBUG=1
            return _internal(exc)

    def _internal(exc: Exception):
        if os.environ.get("LW_DEBUG"):
            raise exc
        _flush_stdout()
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())
        sys.stderr.write(f"lw: internal error: {msg} "
                         "(rerun with LW_DEBUG=1 for a traceback and report it)\n")
        raise typer.Exit(1) from None

    return wrapper
