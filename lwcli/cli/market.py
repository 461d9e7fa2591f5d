from __future__ import annotations

from typing import List, Optional

import typer

from . import options
from ._errors import handle_errors
from ._output import Column, Format, err, info, out, print_json, print_rows, safe_markup, warn

app = typer.Typer(help="Create, list, inspect, refresh and verify a market directory.",
                  no_args_is_help=True)


@app.command("init")
@handle_errors
def init(directory: str = typer.Argument(..., help="The market directory (or object-store URL, "
                                                  "e.g. s3://bucket/prefix) to create."),
         as_json: bool = options.Json) -> None:
    """Create an empty market (idempotent: an existing market is left as it is)."""
    from .. import api

    res = api.market_init(directory)
    if as_json:
        print_json(res.to_dict(), "market-init")
    else:
        info(f"market ready at {res.market} ({res.learnwares} learnwares)")


@app.command("ls")
@handle_errors
def ls(market: Optional[str] = options.Market,
       island: Optional[str] = typer.Option(None, "--island",
                                            help="Only this island's learnwares."),
       tag: List[str] = typer.Option([], "--tag",
                                     help="Only learnwares with this tag (repeatable)."),
       fmt: Optional[Format] = options.RowFormat,
       quiet: bool = options.Quiet,
       as_json: bool = options.Json) -> None:
    """List the market's learnwares (a table per island; --format, -q for scripts)."""
    from .. import api

    fmt = options.row_format(fmt, quiet, as_json)
    res = api.market_ls(market, island=island, tags=tag)
    for n in res.notes:
        warn(n)
    if as_json:
        print_json(res.to_dict(), "market-ls")
        return
    rows = res.rows
    if not rows and fmt is Format.table and not quiet:
        info("the market has no learnwares")
        return
    linked: dict[str, list[str]] = {}
    for ln in res.links:
        linked.setdefault(ln["island"], []).append(f"linked to {ln['to']}")
        linked.setdefault(ln["to"], []).append(f"links {ln['island']}")
    print_rows(rows, LS_COLUMNS, fmt=fmt, quiet=quiet, group="island",
               group_title=lambda i: f"island {i}" + (f" ({'; '.join(linked[i])})"
                                                       if i in linked else ""))


LS_COLUMNS = (Column("id"), Column("island", table=False), Column("name", fold=True),
              Column("version"), Column("model_format", "format"), Column("task", table=False),
              Column("tags", cell=lambda r: ", ".join(r["tags"]), fold=True))


@app.command("info")
@handle_errors
def info_cmd(lw_id: Optional[str] = typer.Argument(None, metavar="[ID]"),
             market: Optional[str] = options.Market,
             as_json: bool = options.Json) -> None:
    """Show one learnware (manifest, QA record, specification summary), or without an ID the
    specification world: islands, their features, and how the market measures each feature."""
    from .. import api

    if lw_id is None:
        _world(api.market_world(market), as_json)
        return
    res = api.market_info(market, lw_id).to_dict()
    if as_json:
        print_json(res, "market-info")
        return
    m = res["manifest"]
    # what came from the package is shown as text: control characters escaped, never markup
    out.print(f"[bold]{safe_markup(m['name'])}[/bold] {safe_markup(m['version'])}  "
              f"({safe_markup(res['id'])})", highlight=False)
    out.print(m["description"], highlight=False, markup=False)
    out.print(f"island {res['island']}; task {m['task']}; objective {m['objective']}; "
              f"model {m['model']['format']}; license {m['license']}", highlight=False,
              markup=False)
    qa = res["record"].get("qa", {})
    sp = res["spec"]
    out.print(f"spec: K={sp['k']} from {sp['n_rows']} rows, approx error "
              f"{sp['approx_error']:.4f}; QA {qa.get('agreement_metric')} "
              f"{qa.get('agreement', float('nan')):.3f}; submitted "
              f"{res['record'].get('submitted_at')}", highlight=False)


def _world(res, as_json: bool) -> None:
    """The islands, one line each, then the misaligned ones (as warnings)."""
    for n in res.notes:
        warn(n)
    if as_json:
        print_json(res.to_dict(), "market-world")
        return
    if not res.islands:
        info("the market has no islands")
    for i in res.islands:
        feats = ", ".join(i["features"][:8]) + (", ..." if len(i["features"]) > 8 else "")
        out.print(f"island {i['id']}: {i['learnwares']} learnwares; {i['task']} of "
                  f"{', '.join(i['outputs'][:4])} from {len(i['features'])} features ({feats})",
                  highlight=False, markup=False)
    by_island: dict[str, list[str]] = {}
    for f, m in res.features.items():
        by_island.setdefault(m["island"], []).append(f"{f} {m['scale']:.4g}")
    for o, m in res.outputs.items():
        by_island.setdefault(m["island"], []).append(f"{o} (output) {m['scale']:.4g}")
    for iid, scales in by_island.items():
        out.print(f"scales fixed by island {iid}: {', '.join(scales)}", highlight=False,
                  markup=False)
    for ln in res.links:
        out.print(f"linked: island {ln['island']} -> {ln['to']} through its {ln['learnwares']} "
                  f"learnwares ({', '.join(ln['estimated'][:6])} estimated for the first's "
                  "users)", highlight=False, markup=False)
    for iid, bad in res.misaligned.items():
        warn(f"island {iid} measures {bad[0]}" + (f" (and {len(bad) - 1} more)"
                                                   if len(bad) > 1 else "")
             + ": created before lw fixed one scale per feature; it is searched on its own")


@app.command("refresh")
@handle_errors
def refresh(market: Optional[str] = options.Market,
            force: bool = typer.Option(False, "--force", help="Rebuild even if up to date."),
            trust: bool = typer.Option(False, "--trust",
                                       help="Run pickle/joblib learnwares for the anchors too."),
            anchors: Optional[int] = typer.Option(None, "--anchors", min=1,
                                                  help="Anchors per island (default: about "
                                                       "sqrt(N), 2 to 8)."),
            device: Optional[str] = options.Device,
            reprobe: Optional[str] = typer.Option(
                None, "--reprobe", metavar="REASON",
                help="Draw every island's anchor probes again and run every model on them "
                     "(slow); REASON is recorded. Without it, probes are kept and only new "
                     "learnwares run."),
            recheck: bool = typer.Option(
                False, "--recheck", help="Run QA again on every stored learnware in this "
                                         "environment and report what no longer passes."),
            jobs: Optional[int] = options.Jobs,
            scheduler: Optional[str] = options.Scheduler,
            as_json: bool = options.Json) -> None:
    """Rebuild the derived index and anchors (idempotent and incremental; safe to run from
    cron: an unchanged market reads no learnware and writes nothing)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from .. import api

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err, transient=True, disable=as_json or not err.is_terminal) as bar:
        tasks: dict = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        res = api.market_refresh(market, device=device, force=force, trust=trust,
                                 n_anchors=anchors, jobs=jobs, scheduler=scheduler,
                                 progress=progress, reprobe=reprobe,
                                 recheck=recheck).to_dict()
    if as_json:
        print_json(res, "market-refresh")
        return
    info(f"index {res['generation']} {'rebuilt' if res['index_changed'] else 'already up to date'}"
         f" ({res['learnwares']} learnwares, {res['islands']} islands)")
    a = res["anchors"]
    ran = f" ({a['models_run']} models run)" if a["changed"] else ""
    info(f"anchors {a['generation']} {'rebuilt' if a['changed'] else 'already up to date'}{ran}: "
         + ("; ".join(f"{iid}: {len(d['anchors'])} of {d['members']}"
                      for iid, d in a["islands"].items()) or "no islands"))
    for s in a["skipped"]:
        warn(f"{s['id']} left out of the anchors: {s['reason']}")
    rc = res.get("recheck")
    if rc is not None:
        info(f"QA re-check: {rc['checked']} checked, {len(rc['failed'])} failed, "
             f"{len(rc['changed'])} changed, {len(rc['skipped'])} skipped")
        for f in rc["failed"]:
            warn(f"{f['id']} no longer passes QA here: {f['reason']}")
        for c in rc["changed"]:
            warn(f"{c['id']}: agreement with its spec moved from {c['recorded']:.6f} to "
                 f"{c['now']:.6f} here")
        for s in rc["skipped"]:
            warn(f"{s['id']} not re-checked: {s['reason']}")


@app.command("verify")
@handle_errors
def verify(market: Optional[str] = options.Market,
           device: Optional[str] = options.Device,
           as_json: bool = options.Json) -> None:
    """Check hashes, manifests, specs and the index; exit 5 if anything is wrong."""
    from .. import api
    from ..errors import MarketError

    rep = api.market_verify(market, device=device)
    if as_json:
        print_json(rep.to_dict(), "market-verify")
    else:
        for p in rep.problems:
            out.print(f"[red]{p['kind']}[/red] {safe_markup(p['path'])}: "
                      f"{safe_markup(p['message'])}", highlight=False)
        for w in rep.warnings:
            warn(f"{w['kind']} {w['path']}: {w['message']}")
        info(f"{rep.checked} learnwares checked, {len(rep.problems)} problems")
    if not rep.ok:
        raise typer.Exit(MarketError.exit_code)
