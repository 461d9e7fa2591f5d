"""``lw``: the entry point. Importing this module does not import torch."""

from __future__ import annotations

import typer

from .. import __version__
from . import anchor_eval, market, pack, reuse, search, spec, submit

app = typer.Typer(
    name="lw",
    help="lw — a learnware market toolchain: specify, pack, submit, search and reuse "
         "learnwares.\n\n"
         "Exit codes: 0 ok, 1 internal error, 2 usage, 3 not found, 4 invalid input, "
         "5 market conflict/corruption, 6 device or extra missing, 7 model rejected by QA, "
         "8 untrusted model refused, 141 stdout closed by its reader (| head).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("spec")(spec.spec)
app.command("pack")(pack.pack)
app.command("submit")(submit.submit)
app.command("search")(search.search)
app.command("reuse")(reuse.reuse)
app.command("anchor-eval")(anchor_eval.anchor_eval)
app.add_typer(market.app, name="market")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lw {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit.")) -> None:
    """lw — a learnware market toolchain."""


def main() -> None:
    """Run the CLI. Help and usage text are written by typer (click and rich), not inside lw's
    error boundary; when stdout's reader has gone (``lw --help | head -1``) they exit 1, rich
    after pointing stdout at the null device, click after wrapping it in a
    ``PacifyFlushWrapper``. That is a closed pipe, not an internal error: exit 141, as every
    command does."""
    import os
    import sys

    def null_stdout() -> bool:
        try:
            st, null = os.fstat(sys.__stdout__.fileno()), os.stat(os.devnull)
        except (OSError, ValueError, AttributeError):
            return False
        return (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino)

    was_null = null_stdout()
    try:
        app()
    except SystemExit as exc:
        closed = type(sys.stdout).__name__ == "PacifyFlushWrapper" or \
            (null_stdout() and not was_null)
        if exc.code == 1 and closed:
            raise SystemExit(141) from None
        raise


if __name__ == "__main__":
    main()
