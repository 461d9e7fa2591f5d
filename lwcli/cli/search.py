from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import options
from ._errors import handle_errors
from ._output import out, print_json, warn


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
    market: Optional[Path] = options.Market,
    tag: List[str] = typer.Option([], "--tag", help="Only learnwares with this tag (repeatable)."),
    top: int = typer.Option(10, "--top", min=1, help="How many single matches to show."),
    island: Optional[str] = typer.Option(None, "--island", help="Search this island."),
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
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = options.Device,
    as_json: bool = options.Json,
) -> None:
    """Find the best single learnware and the best weighted mixture for your data.

    With --anchor-report instead, rank every learnware of the island by its predicted
    performance on your task, from the anchors' scores alone.
    """
    from .. import api

    res = api.search(market, data=data, target=target, spec=spec, tags=tag, top=top,
                     island=island, task=task, k=k, seed=seed, device=device,
                     anchor_report=anchor_report, rerank=rerank, trust=trust,
                     exact=exact)
    for w in res.warnings:
        warn(w)
    if as_json:
        print_json(res.to_dict())
        return
    from rich.table import Table

    if res.mode == "anchors":
        _anchor_table(res)
        return
    mode = "inputs and labels" if res.mode == "xy" else "inputs only"
    how = ("; ranked by loss on your requirement's points"
           if res.ranked_by == "requirement-loss" else "")
    t = Table(title=f"island {res.island} — matched on {mode}{how}", title_justify="left")
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("id", no_wrap=True, min_width=16)
    t.add_column("name", overflow="fold")
    t.add_column("MMD²", justify="right", no_wrap=True)
    t.add_column("score", justify="right", no_wrap=True)
    metric = res.requirement.get("loss_metric")
    if metric:
        t.add_column(f"est. {metric}", justify="right", no_wrap=True)
    for i, r in enumerate(res.single, 1):
        cells = [str(i), r["id"], r["name"], f"{r['mmd2']:.4f}", f"{r['score']:.3f}"]
        if metric:
            cells.append(f"{r['requirement_loss']:.4g}" if "requirement_loss" in r else "-")
        t.add_row(*cells)
    out.print(t)
    mix = res.mixture
    parts = ", ".join(f"{n} ({w:.2f})" for n, w in zip(mix["names"], mix["weights"]))
    out.print(f"mixture: {parts}  MMD² {mix['mmd2']:.4f}  score {mix['score']:.3f}",
              highlight=False)
    s = res.searched
    if s and s["method"] == "sketch":
        out.print(f"searched {s['eligible']:,} learnwares through the sketch index "
                  f"({s['exact_mmd']:,} exact MMDs)", highlight=False)


def _anchor_table(res) -> None:
    from rich.table import Table

    a = res.anchors
    t = Table(title=f"island {res.island} — ranked from {len(a['ids'])} anchors' {a['metric']} "
                    f"on {a['n_rows']} rows", title_justify="left")
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("id", no_wrap=True, min_width=16)
    t.add_column("name", overflow="fold")
    t.add_column(f"{a['metric']}", justify="right", no_wrap=True)
    t.add_column("interval", justify="right", no_wrap=True)
    t.add_column("conf.", justify="right", no_wrap=True)
    for i, r in enumerate(res.single, 1):
        t.add_row(f"{i}{'*' if r['anchor'] else ''}", r["id"], r["name"], f"{r['predicted']:.4g}",
                  f"{r['lower']:.3g}-{r['upper']:.3g}", f"{r['confidence']:.2f}")
    out.print(t)
    out.print("* an anchor: its score was measured on your rows", highlight=False)
    out.print(res.assessment["message"], highlight=False)
