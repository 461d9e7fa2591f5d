from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import options
from ._errors import handle_errors
from ._output import err, error, info, print_json, warn


@handle_errors
def spec(
    data: Optional[List[Path]] = typer.Argument(
        None, help="Data file (.csv, .csv.gz, .parquet or .npy); with --out-dir, several files or "
                   "folders of them."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Where to write the spec (JSON), for one file."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out-dir",
        help="Batch: write <stem>.rkme.json here for each data file, skipping the specs that "
             "are up to date."),
    from_list: Optional[Path] = typer.Option(
        None, "--from-list", help="Batch: data paths from this file, one per line ('-': stdin)."),
    force: bool = typer.Option(False, "--force", help="Batch: refit specs that are up to date."),
    target: Optional[str] = typer.Option(None, "--target", "-t",
                                         help="Label column: a label-aware (x, y) requirement."),
    model: Optional[Path] = typer.Option(None, "--model",
                                         help="Developer: embed (x, model(x)); needs --meta."),
    meta: Optional[Path] = typer.Option(None, "--meta", help="The model's learnware.toml."),
    model_format: Optional[str] = typer.Option(None, "--format",
                                               help="Model format (default: from --meta)."),
    trust: bool = typer.Option(False, "--trust", help="Allow loading a pickle/joblib model."),
    k: int = typer.Option(100, "--k", min=1, help="Number of reduced points."),
    clamp_k: bool = typer.Option(False, "--clamp-k",
                                 help="Lower --k to the row count of smaller files."),
    seed: int = typer.Option(0, "--seed", help="Random seed (fits are deterministic)."),
    market: Optional[str] = options.Market,
    island: Optional[str] = typer.Option(None, "--island", help="Fit with this island's metric."),
    missing: str = options.Missing("drop", options.MISSING_DROP),
    device: Optional[str] = options.Device,
    jobs: Optional[int] = options.Jobs,
    scheduler: Optional[str] = options.Scheduler,
    as_json: bool = options.Json,
) -> None:
    """Build an RKME specification of a data file, or of many.

    Developer:  lw spec train.csv --model model.skops --meta learnware.toml --market M -o rkme.json
    User:       lw spec mine.csv --target PM2.5 --market M -o requirement.json
    Batch:      lw spec data/ more.csv --market M --out-dir specs/   (reruns skip what is done)
                add --jobs N (local processes) or --scheduler ADDRESS (Dask) to fit in parallel

    Columns are taken by name (the manifest's features, the island's, or every numeric one
    that is no row number); the others (ids, dates, text, a label) are ignored and listed.
    """
    from .. import api
    from ..errors import UsageError

    paths = list(data or [])
    if from_list is not None:
        from ..specbatch import read_list

        paths += read_list(from_list)
    if out_dir is not None:
        if output is not None:
            raise UsageError("--output and --out-dir both given",
                             "-o writes one spec; --out-dir writes one per data file")
        _batch(api, paths, out_dir, force, as_json, jobs, scheduler, target=target, model=model,
               model_format=model_format, trust=trust, meta=meta, k=k, seed=seed,
               market=market, island=island, device=device, clamp_k=clamp_k, missing=missing)
        return
    if jobs is not None or scheduler is not None:
        raise UsageError(f"{'--jobs' if jobs is not None else '--scheduler'} given for one file",
                         "they run a batch (--out-dir DIR) in parallel; drop it for -o")
    _one(api, paths, output, from_list, as_json, target=target, model=model,
         model_format=model_format, trust=trust, meta=meta, k=k, seed=seed, device=device,
         market=market, island=island, clamp_k=clamp_k, missing=missing)


def _one(api, paths, output, from_list, as_json: bool, **kw) -> None:
    """One data file to one spec file (``-o``), summarised."""
    from ..errors import UsageError

    if from_list is not None or len(paths) != 1 or paths[0].is_dir():
        raise UsageError(f"{'a folder' if len(paths) == 1 else f'{len(paths)} data paths'} "
                         f"given without --out-dir", "pass one data file with -o FILE, or "
                                                     "several files or folders with --out-dir DIR")
    if output is None:
        raise UsageError("no --output given", "pass -o FILE (or --out-dir DIR for a batch)")
    sp = api.build_spec(paths[0], **kw)
    for note in sp.intake.notes() if sp.intake is not None else ():
        warn(note)
    res = api.write_spec(sp, output)
    if as_json:
        print_json(res.to_dict(), "spec")
    else:
        info(f"wrote {res.output}: {res.kind} RKME, K={res.k} from {res.n_rows} rows, "
             f"approximation error {res.approx_error:.4f}"
             + (f", island {res.island}" if res.island else ""))


def _batch(api, paths, out_dir, force: bool, as_json: bool, jobs, scheduler, **kw) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[last]}"), console=err, transient=True,
                  disable=as_json or not err.is_terminal) as bar:
        task = bar.add_task("lw spec", total=None, last="")

        def progress(done, total, path, status):
            bar.update(task, completed=done, total=total, last=f"{status}: {path.name}")

        res = api.build_specs(paths, out_dir, force=force, progress=progress, jobs=jobs,
                              scheduler=scheduler, **kw)
    for w in res.written:
        for note in w.get("warnings", []):
            warn(f"{w['data']}: {note}")
    for f in res.failed:
        error(f["error"] if f["data"] in f["error"] else f"{f['data']}: {f['error']}")
    if as_json:
        print_json(res.to_dict(), "spec-batch")
    else:
        info(f"{res.out_dir}: {len(res.written)} written, {len(res.skipped)} up to date"
             + (f", {len(res.failed)} failed" if res.failed else ""))
    if res.failed:
        raise typer.Exit(res.failed[0]["exit_code"])
