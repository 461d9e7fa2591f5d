"""The one place where exceptions become exit codes (see :mod:`lwcli.errors`)."""

from __future__ import annotations

import functools
import os
import sys

import typer

from ..errors import LwError


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except LwError as exc:
            sys.stderr.write(f"lw: error: {exc}\n")
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:   # the reader of stdout went away (e.g. `| head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(141) from None
        except KeyboardInterrupt:
            sys.stderr.write("lw: interrupted\n")
            raise typer.Exit(130) from None
        except Exception as exc:  # a bug: say so plainly, keep the trace for LW_DEBUG=1
            if os.environ.get("LW_DEBUG"):
                raise
            sys.stderr.write(f"lw: internal error: {type(exc).__name__}: {exc} "
                             "(rerun with LW_DEBUG=1 for a traceback and report it)\n")
            raise typer.Exit(1) from None

    return wrapper
