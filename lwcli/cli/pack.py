from __future__ import annotations

from pathlib import Path

import typer

from . import options
from ._errors import handle_errors
from ._output import info, print_json


@handle_errors
def pack(
    model: Path = typer.Option(..., "--model", help="The model file (skops, onnx; pickle/joblib with --trust)."),
    spec: Path = typer.Option(..., "--spec", help="The RKME spec from lw spec --model."),
    meta: Path = typer.Option(..., "--meta", help="learnware.toml."),
    output: Path = typer.Option(..., "--output", "-o", help="The package to write (.lw)."),
    trust: bool = typer.Option(False, "--trust", help="Allow a pickle/joblib model (recorded)."),
    as_json: bool = options.Json,
) -> None:
    """Bundle model + spec + learnware.toml into one package; print its id."""
    from .. import api

    res = api.pack(model, spec, meta, output, trust=trust)
    if as_json:
        print_json(res.to_dict(), "pack")
    else:
        info(f"wrote {res.path} ({res.size} bytes, {res.model_format})")
        typer.echo(res.id)
