from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import options
from ._errors import handle_errors
from ._output import info, print_json


@handle_errors
def spec(
    data: Path = typer.Argument(..., help="Data file: .csv, .parquet or .npy."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the spec (JSON)."),
    target: Optional[str] = typer.Option(None, "--target", "-t",
                                         help="Label column: a label-aware (x, y) requirement."),
    model: Optional[Path] = typer.Option(None, "--model",
                                         help="Developer: embed (x, model(x)); needs --meta."),
    meta: Optional[Path] = typer.Option(None, "--meta", help="The model's learnware.toml."),
    model_format: Optional[str] = typer.Option(None, "--format",
                                               help="Model format (default: from --meta)."),
    trust: bool = typer.Option(False, "--trust", help="Allow loading a pickle/joblib model."),
    k: int = typer.Option(100, "--k", min=1, help="Number of reduced points."),
    seed: int = typer.Option(0, "--seed", help="Random seed (fits are deterministic)."),
    market: Optional[Path] = options.Market,
    island: Optional[str] = typer.Option(None, "--island", help="Fit with this island's metric."),
    device: Optional[str] = options.Device,
    as_json: bool = options.Json,
) -> None:
    """Build an RKME specification of a data file.

    Developer:  lw spec train.csv --model model.skops --meta learnware.toml --market M -o rkme.json
    User:       lw spec mine.csv --target PM2.5 --market M -o requirement.json
    """
    from .. import api

    sp = api.build_spec(data, target=target, model=model, model_format=model_format, trust=trust,
                        meta=meta, k=k, seed=seed, device=device, market=market, island=island)
    path = api.write_spec(sp, output)
    summary = {"output": str(path), "kind": sp.kind, "k": sp.rkme.k, "n_rows": sp.rkme.n_rows,
               "approx_error": sp.rkme.approx_error, "metric_digest": sp.rkme.metric.digest(),
               "island": sp.island}
    if as_json:
        print_json(summary)
    else:
        info(f"wrote {path}: {sp.kind} RKME, K={sp.rkme.k} from {sp.rkme.n_rows} rows, "
             f"approximation error {sp.rkme.approx_error:.4f}"
             + (f", island {sp.island}" if sp.island else ""))
