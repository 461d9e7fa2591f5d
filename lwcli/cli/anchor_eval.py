from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import options
from ._errors import handle_errors
from ._output import info, print_json, warn


@handle_errors
def anchor_eval(
    data: Path = typer.Option(..., "--data", "-d", help="Your labelled rows (20 are enough)."),
    target: str = typer.Option(..., "--target", "-t", help="The label column."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the report (JSON)."),
    island: Optional[str] = typer.Option(None, "--island", help="Use this island's anchors."),
    task: Optional[str] = typer.Option(None, "--task",
                                       help="classification | regression, when your columns "
                                            "match several islands."),
    trust: bool = typer.Option(False, "--trust", help="Allow loading pickle/joblib anchors."),
    missing: str = options.Missing("drop", options.MISSING_DROP),
    market: Optional[str] = options.Market,
    as_json: bool = options.Json,
) -> None:
    """Score the market's anchor learnwares on your labelled data, locally.

    The report holds scores only (never your rows): pass it to lw search --anchor-report.
    Columns are taken by name (the island's features and --target); others are ignored.
    """
    from .. import api

    res = api.anchor_eval(market, data, target, island=island, task=task, trust=trust,
                          out=output, missing=missing)
    if res.intake is not None:
        for note in res.intake.notes():
            warn(note)
    rep = res.to_dict()
    if rep["n_rows"] < 20:
        warn(f"only {rep['n_rows']} labelled rows: the anchors' scores are noisy")
    if as_json:
        print_json(rep, "anchor-eval")
        return
    best, metric = res.best, res.metric
    info(f"wrote {output}: {len(rep['scores'])} anchors scored on {rep['n_rows']} rows; best "
         f"{best['name']} {metric} {best['scores'][metric]:.4g} (constant prediction: "
         f"{rep['baseline'][metric]:.4g})")
