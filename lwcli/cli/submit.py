from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import options
from ._errors import handle_errors
from ._output import info, print_json, warn


@handle_errors
def submit(
    package: Path = typer.Argument(..., help="A package from lw pack."),
    market: Optional[str] = options.Market,
    trust: bool = typer.Option(False, "--trust",
                               help="Allow loading a pickle/joblib model for the checks."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1.0,
                                            help="Seconds the model may take to load and predict "
                                                 "(default: $LW_QA_TIMEOUT or 60)."),
    device: Optional[str] = options.Device,
    as_json: bool = options.Json,
) -> None:
    """Check a package and add it to the market; print the learnware id.

    Idempotent: submitting the same package again prints the same id and changes nothing.
    """
    from .. import api

    res = api.submit(package, market, trust=trust, timeout=timeout, device=device)
    if as_json:
        print_json(res.to_dict(), "submit")
        return
    for w in res.qa.get("warnings", []):
        warn(w)
    if res.status == "added":
        qa = res.qa
        info(f"added to island {res.island}{' (new island)' if res.island_created else ''}; "
             f"spec agreement {qa['agreement_metric']} = {qa['agreement']:.3f}")
    else:
        info(f"already in the market (island {res.island}); nothing changed")
    typer.echo(res.id)
