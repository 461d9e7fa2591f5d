"""Use cases: score the anchors on the user's labelled rows; search from that report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError, MarketError, NotFoundError, UsageError
from .reuse import load_learnwares
from .spec import _resolve_island_for_features


def _anchor_metric(task: str, objective: str) -> tuple[str, str]:
    """(score used for ranking, distance that bounds it) for an island."""
    if task == "classification":
        return "accuracy", "disagreement"
    return ("mae", "mae") if objective == "mae" else ("rmse", "rms")


def _as_loss(values, metric: str):
    v = np.asarray(values, dtype=np.float64)
    return 1.0 - v if metric == "accuracy" else v


HOPELESS_SKILL = 0.1    # the best anchor beats a constant prediction by less than 10%
INCONSISTENT_SHARE = 0.25   # warn when the bounds cross for more than this share of learnwares
MIN_ANCHOR_ROWS = 5


def anchor_eval(market: str | Path, data: str | Path, target: str, *, island: str | None = None,
                task: str | None = None, trust: bool = False,
                out: str | Path | None = None) -> dict:
    """Score the island's anchor learnwares on the user's labelled rows, locally.

    Returns (and with ``out`` writes) a report of scores only: every metric per anchor, the
    same metrics for the best constant prediction, and the row count. Give it to
    ``search(anchor_report=...)``.
    """
    from ..anchorreport import make_report
    from ..engine.metrics import baseline_scores, classification_scores, regression_scores
    from ..io import read_table
    from ..labels import label_str
    from ..market.anchors import load_anchor_set
    from ..market.store import Market, write_output

    if not target:
        raise UsageError("anchor-eval needs --target: the label column of your data",
                         "pass --target COL")
    if out is not None and not Path(out).parent.exists():
        raise NotFoundError(f"output folder {Path(out).parent} does not exist", "create it first")
    mk = Market.open(market)
    table = read_table(data, target=target, min_rows=MIN_ANCHOR_ROWS)
    isl = _resolve_island_for_features(mk, table.features, island, task)
    table = table.select(isl.key["features"])
    aset = load_anchor_set(mk, isl.id)
    outputs = tuple(isl.key["outputs"])
    if aset.task == "classification":
        y = np.asarray([label_str(v) for v in table.y], dtype=object)
        unknown = sorted(set(y) - set(outputs))
        if unknown:
            raise DataError(f"target column {target!r} has labels {unknown[:5]} that are not "
                            f"among the island's classes {list(outputs)}",
                            "use data whose labels are the island's classes")
    else:
        if len(outputs) != 1:
            raise DataError(f"island {isl.id} has {len(outputs)} outputs; --target gives one",
                            "anchor-eval supports single-output regression islands")
        y = table.y.astype(np.float64)
    scores = []
    for lw in load_learnwares(mk, aset.anchors, trust=trust, with_specs=False):
        if aset.task == "classification":
            proba = lw.predict_proba(table.X)
            pred = np.asarray(outputs, dtype=object)[np.argmax(proba, axis=1)]
            sc = classification_scores(y, pred, proba, outputs)
        else:
            sc = regression_scores(y, lw.predict_values(table.X))
        scores.append({"id": lw.id, "name": lw.name, "scores": sc})
    report = make_report(island=isl.id, anchor_set=aset.anchor_set, task=aset.task,
                         objective=aset.objective, n_rows=table.n_rows, scores=scores,
                         baseline=baseline_scores(y, aset.task))
    if out is not None:
        write_output(out, (json.dumps(report, indent=1) + "\n").encode())
    return report


def anchor_search(market, report_path, *, tags: Sequence[str], top: int):
    from ..anchorreport import read_report, report_from_dict
    from .search import SearchResult
    from ..engine.anchors import distances, rank_from_anchors
    from ..engine.metrics import skill
    from ..market.anchors import load_anchor_set
    from ..market.index import learnware_summary, load_index
    from ..market.store import Market

    rep = report_from_dict(report_path) if isinstance(report_path, dict) else \
        read_report(report_path)
    mk = Market.open(market)
    isl = mk.island(rep["island"])
    aset = load_anchor_set(mk, isl.id)
    metric, kind = _anchor_metric(aset.task, aset.objective)
    ids = [s["id"] for s in rep["scores"]]
    missing = [i for i in ids if i not in aset.members]
    if missing:
        raise MarketError(f"the report scores learnwares {missing[:3]} that are not among island "
                          f"{isl.id}'s anchored learnwares", "rerun lw anchor-eval on this market")
    if any(metric not in s["scores"] for s in rep["scores"]) or metric not in rep["baseline"]:
        raise MarketError(f"the report lacks the {metric} score this island is ranked by",
                          "rerun lw anchor-eval on this market")
    pos = np.asarray([aset.members.index(i) for i in ids])
    if ids == aset.anchors:
        D = aset.distances(kind)
    else:   # a report on another anchor choice of the same members: distances from outputs
        outs = np.asarray(aset.outputs(), dtype=np.float64)
        D = distances(outs, outs[pos], kind)
    observed = np.asarray([s["scores"][metric] for s in rep["scores"]])
    rk = rank_from_anchors(D, _as_loss(observed, metric), pos)
    try:
        idx = load_index(mk)
        summ = {i: (idx.summary(i) if idx is not None else None) or learnware_summary(mk, i)
                for i in aset.members}
    except MarketError as exc:      # a damaged index: the rows from learnwares/, said so
        idx = None
        summ = {i: learnware_summary(mk, i) for i in aset.members}
        warnings_first = [f"the index is damaged ({exc.message}); read learnwares/ directly: "
                          "repair the index with lw market refresh --force"]
    else:
        warnings_first = []
    flip = metric == "accuracy"
    val = (lambda x: float(1.0 - x)) if flip else float
    obs = dict(zip(ids, observed.tolist()))
    single = []
    for j in rk.order:
        i = aset.members[j]
        if tags and not set(tags) <= set(summ[i]["tags"]):
            continue
        lo, hi = (val(rk.upper[j]), val(rk.lower[j])) if flip else (val(rk.lower[j]),
                                                                     val(rk.upper[j]))
        single.append({"id": i, "name": summ[i]["name"], "predicted": val(rk.predicted[j]),
                       "lower": lo, "upper": hi, "confidence": float(rk.confidence[j]),
                       "anchor": i in obs, "observed": obs.get(i)})
    if not single:
        raise NotFoundError(f"no learnware on island {isl.id} carries all tags {list(tags)}",
                            "drop or change --tag")
    single = single[:top]
    skills = {i: skill(obs[i], rep["baseline"][metric], metric) for i in ids}
    best = max(skills, key=skills.get)
    hopeless = skills[best] < HOPELESS_SKILL
    assessment = {
        "hope": "low" if hopeless else "ok", "best_anchor": best,
        "best_anchor_skill": skills[best],
        "message": (f"every anchor performs poorly on your task (the best, {summ[best]['name']},"
                    f" is {100 * skills[best]:.0f}% better than a constant prediction): there "
                    "may be little hope in this market for this task") if hopeless else
                   (f"the best anchor, {summ[best]['name']}, is {100 * skills[best]:.0f}% better "
                    "than a constant prediction")}
    warnings = [*warnings_first, *([assessment["message"]] if hopeless else [])]
    if rk.inconsistent > INCONSISTENT_SHARE:
        warnings.append(f"for {100 * rk.inconsistent:.0f}% of the learnwares the anchors' scores "
                        "contradict their functional distances: your data may lie away from "
                        "the island's probe inputs; trust the ranking less")
    on_island = idx.ids(isl.id).tolist() if idx is not None else \
        [i for i in mk.ids() if mk.manifest(i).island_id() == isl.id]
    unplaced = sorted(set(on_island) - set(aset.members))
    if unplaced:
        warnings.append(f"{len(unplaced)} learnwares of this island have no anchor distances "
                        "(joined since the last refresh, or need --trust); run lw market refresh")
    anchors = {"metric": metric, "distance": kind, "anchor_set": rep["anchor_set"],
               "current_anchor_set": aset.anchor_set, "n_rows": rep["n_rows"],
               "baseline": rep["baseline"][metric], "ids": ids, "bandwidth": rk.bandwidth,
               "inconsistent": rk.inconsistent}
    requirement = {"kind": "anchor-report", "n_rows": rep["n_rows"], "metric": metric}
    return SearchResult(isl.id, "anchors", single, None, requirement, warnings, anchors,
                        assessment, ranked_by="anchors")
