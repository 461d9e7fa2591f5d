"""Options shared by several commands.

``--market`` and ``--device`` name their variables in ``--help``; the values of those
variables come from :mod:`lwcli.settings`: ``--market`` through :func:`_market_or_setting`
here (an unset ``--market`` is ``$LW_MARKET``), ``--device`` in
:func:`lwcli.device.resolve_device` (an unset ``--device`` is ``$LW_DEVICE`` or auto).
"""

from __future__ import annotations

from typing import Optional

import typer


def _market_or_setting(value: Optional[str]) -> Optional[str]:
    """``--market`` as given, else ``$LW_MARKET``, else None (the command says what is missing).
    A string, not a path: an object-store URL (``s3://bucket/prefix``) keeps its ``//``."""
    if value is not None:
        return value
    from ..settings import market

    return market()


Market = typer.Option(None, "--market", "-m", callback=_market_or_setting,
                      help="Market directory or object-store URL such as s3://bucket/prefix "
                           "(default: $LW_MARKET).", show_default=False)
Json = typer.Option(False, "--json", help="Print one JSON object on stdout, nothing else.")
Device = typer.Option(None, "--device",
                      help="auto | cpu | cuda | cuda:N (default: $LW_DEVICE or auto).",
                      show_default=False)

Jobs = typer.Option(None, "--jobs", "-j", min=1, show_default=False,
                    help="Run the batch's pieces in N local processes (default: $LW_JOBS or 1).")
Scheduler = typer.Option(None, "--scheduler", metavar="ADDRESS", show_default=False,
                         help="Run the batch's pieces on the Dask cluster at ADDRESS, e.g. "
                              "tcp://host:8786 (default: $LW_SCHEDULER; needs lwcli[dask]).")

RowFormat = typer.Option(None, "--format", case_sensitive=False, show_default=False,
                         help="table | tsv | csv | jsonl (default: table). tsv and csv have a "
                              "header row; jsonl is one JSON object per row.")
Quiet = typer.Option(False, "--quiet", "-q", help="Print only the ids, one per line.")


def Missing(default: str, what: str):
    """``--missing drop|impute|error`` with a command's own default (see lwcli.intake)."""
    return typer.Option(default, "--missing", metavar="drop|impute|error",
                        help=f"Rows with a missing value: {what}")


MISSING_DROP = ("drop them (the default; counted on stderr), impute them from the file's "
                "complete rows, or refuse the file.")


def row_format(fmt, quiet: bool, as_json: bool):
    """The format of a list of rows, after checking that --json, --format and -q agree."""
    from ..errors import UsageError
    from ._output import Format

    if as_json and (fmt is not None or quiet):
        raise UsageError(f"--json and {'--format' if fmt is not None else '-q'} both given",
                         "--json prints one JSON document; drop one of them")
    if quiet and fmt is not None:
        raise UsageError("-q and --format both given", "-q prints only the ids; drop one of them")
    return Format(fmt) if fmt is not None else Format.table
