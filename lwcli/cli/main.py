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
         "8 untrusted model refused, 9 storage not writable (disk full, read-only, permission), "
         "130 interrupted, 141 stdout closed by its reader (| head).",
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
    """Run the CLI; exit codes are decided in :mod:`lwcli.cli._errors`."""
    from ._errors import run_cli

    run_cli(app)


if __name__ == "__main__":
    main()
