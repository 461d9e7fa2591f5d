from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import options
from ._errors import handle_errors
from ._output import Column, Format, out, print_json, print_rows, warn


@handle_errors
def search(
    data: Optional[Path] = typer.Option(None, "--data", "-d",
                                        help="Your data; the requirement is built locally."),
    target: Optional[str] = typer.Option(None, "--target", "-t",
                                         help="Label column in --data: match the function, "
                                              "not only the inputs."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="A precomputed requirement."),
    anchor_report: Optional[Path] = typer.Option(
        None, "--anchor-report",
        help="Rank by predicted performance from lw anchor-eval's report (little data)."),
    market: Optional[str] = options.Market,
    tag: List[str] = typer.Option([], "--tag", help="Only learnwares with this tag (repeatable)."),
    top: int = typer.Option(10, "--top", min=1, help="How many single matches to show."),
    island: Optional[str] = typer.Option(
        None, "--island",
        help="Search this island only. With --missing impute, also one whose features --data "
             "lacks some of: they are estimated from its specifications."),
    task: Optional[str] = typer.Option(None, "--task",
                                       help="classification | regression, when columns match several islands."),
    k: int = typer.Option(100, "--k", min=1, help="Reduced points of the requirement."),
    rerank: int = typer.Option(
        20, "--rerank", min=0,
        help="With --target: run the N best RKME matches on the requirement's reduced points "
             "and rank them by that loss (0: RKHS distance only)."),
    trust: bool = typer.Option(False, "--trust",
                               help="Also run pickle/joblib models when re-ranking."),
    exact: Optional[bool] = typer.Option(
        None, "--exact/--sketch",
        help="Compute the exact MMD to every learnware, or shortlist through the island's "
             "sketch index first. Default: the sketch above 100,000 learnwares."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the requirement's RKME fit."),
    missing: str = options.Missing("drop", options.MISSING_DROP),
    device: Optional[str] = options.Device,
    fmt: Optional[Format] = options.RowFormat,
    quiet: bool = options.Quiet,
    as_json: bool = options.Json,
) -> None:
    """Find the best single learnware and the best weighted mixture for your data.

    With --anchor-report instead, rank every learnware of the island by its predicted
    performance on your task, from the anchors' scores alone.

    --data is taken by name: the island's feature columns (and --target); other columns
    (ids, dates, text) are ignored and listed on stderr and in --json's ignored_columns.

    --format tsv|csv|jsonl and -q print the single matches only, best first (the mixture is
    in the table and in --json).
    """
    from .. import api

    fmt = options.row_format(fmt, quiet, as_json)
    res = api.search(market, data=data, target=target, spec=spec, tags=tag, top=top,
                     island=island, task=task, k=k, seed=seed, device=device,
                     anchor_report=anchor_report, rerank=rerank, trust=trust,
                     exact=exact, missing=missing)
    for w in res.warnings:
        warn(w)
    if as_json:
        print_json(res.to_dict(), "search")
        return
    rows = [{"rank": i, **r} for i, r in enumerate(res.single, 1)]
    if res.mode == "anchors":
        _render_anchors(res, rows, fmt, quiet)
    else:
        _render_rkme(res, rows, fmt, quiet)


def _render_anchors(res, rows, fmt, quiet: bool) -> None:
    """The ranking from an anchor report, and (as a table) the hope assessment."""
    a = res.anchors
    print_rows(rows, _anchor_columns(a["metric"]), fmt=fmt, quiet=quiet,
               title=f"island {res.island} — ranked from {len(a['ids'])} anchors' "
                     f"{a['metric']} on {a['n_rows']} rows")
    if fmt is Format.table and not quiet:
        out.print("* an anchor: its score was measured on your rows", highlight=False)
        out.print(res.assessment["message"], highlight=False)


def _render_rkme(res, rows, fmt, quiet: bool) -> None:
    """The single matches and (as a table) the mixture and how the island was searched."""
    mode = "inputs and labels" if res.mode == "xy" else "inputs only"
    how = ("; ranked by loss on your requirement's points"
           if res.ranked_by == "requirement-loss" else "")
    many = len({r["island"] for r in rows}) > 1
    where = (f"{len(res.islands)} islands" if many else f"island {res.island}")
    print_rows(rows, _columns(res.requirement.get("loss_metric"), many), fmt=fmt, quiet=quiet,
               title=f"{where} — matched on {mode}{how}")
    if fmt is not Format.table or quiet:
        return
    mix = res.mixture
    parts = ", ".join(f"{n} ({w:.2f})" for n, w in zip(mix["names"], mix["weights"]))
    out.print(f"mixture: {parts}  MMD² {mix['mmd2']:.4f}  score {mix['score']:.3f}",
              highlight=False)
    s = res.searched
    if s and s["method"] == "sketch":
        out.print(f"searched {s['eligible']:,} learnwares through the sketch index "
                  f"({s['exact_mmd']:,} exact MMDs)", highlight=False)


def _columns(metric: Optional[str], many: bool = False) -> list[Column]:
    """The single matches of an RKME search (with the estimated loss after re-ranking); the
    island in the table too when the matches come from several."""
    cols = [Column("rank", "#", justify="right"), Column("id"), Column("name", fold=True),
            Column("island", table=many),
            Column("mmd2", "MMD²", cell=lambda r: f"{r['mmd2']:.4f}", justify="right"),
            Column("score", cell=lambda r: f"{r['score']:.3f}", justify="right")]
    if metric:
        cols.append(Column("requirement_loss", f"est. {metric}", justify="right",
                           cell=lambda r: f"{r['requirement_loss']:.4g}"
                           if "requirement_loss" in r else "-"))
    return cols


def _anchor_columns(metric: str) -> list[Column]:
    """The ranking from an anchor report (* marks the anchors: their scores were measured)."""
    return [Column("rank", "#", cell=lambda r: f"{r['rank']}{'*' if r['anchor'] else ''}",
                   justify="right"),
            Column("id"), Column("name", fold=True),
            Column("predicted", metric, cell=lambda r: f"{r['predicted']:.4g}", justify="right"),
            Column("lower", "interval", cell=lambda r: f"{r['lower']:.3g}-{r['upper']:.3g}",
                   justify="right"),
            Column("upper", table=False),
            Column("confidence", "conf.", cell=lambda r: f"{r['confidence']:.2f}",
                   justify="right"),
            Column("anchor", table=False), Column("observed", table=False)]
