"""Use cases: score the anchors on the user's labelled rows; search from that report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError, MarketError, NotFoundError, UsageError
from ._result import DictView
from .reuse import load_learnwares
from .spec import _resolve_island_for_features


MIN_ANCHOR_ROWS = 5


@dataclass(frozen=True)
class AnchorEvalResult(DictView):
    """An anchor report (:mod:`lwcli.anchorreport`: scores only, never a row) and, for the
    summary, the score that ranks the island and the anchor best at it."""

    report: dict
    metric: str           # the island's ranking score (:func:`lwcli.engine.anchors.anchor_metric`)
    best: dict            # the report's ``scores`` entry best at ``metric``
    intake: object = None  # what was taken from the data (:class:`lwcli.intake.Intake`)

    def to_dict(self) -> dict:
        """The report plus ``ignored_columns`` and ``input_rows`` (which the report file
        never holds: it carries scores only)."""
        return {**self.report, **(self.intake.to_dict() if self.intake is not None else {})}


def _anchor_labels(table, isl, task: str, target: str) -> np.ndarray:
    """The user's labels as the island's anchors are scored against them: class keys, each
    one of the island's classes, or float values for a single-output regression island."""
    from ..labels import label_str

    outputs = tuple(isl.key["outputs"])
    if task == "classification":
        y = np.asarray([label_str(v) for v in table.y], dtype=object)
        unknown = sorted(set(y) - set(outputs))
        if unknown:
            raise DataError(f"target column {target!r} has labels {unknown[:5]} that are not "
                            f"among the island's classes {list(outputs)}",
                            "use data whose labels are the island's classes")
        return y
    if len(outputs) != 1:
        raise DataError(f"island {isl.id} has {len(outputs)} outputs; --target gives one",
                        "anchor-eval supports single-output regression islands")
    return table.y.astype(np.float64)


def _score_anchors(mk, aset, outputs, X, y, trust: bool) -> list[dict]:
    """Every metric of every anchor on the user's rows (seed sec. 3.3: the user runs them)."""
    from ..engine.metrics import classification_scores, regression_scores

    scores = []
    for lw in load_learnwares(mk, aset.anchors, trust=trust, with_specs=False):
        if aset.task == "classification":
            proba = lw.predict_proba(X)
            pred = np.asarray(outputs, dtype=object)[np.argmax(proba, axis=1)]
            sc = classification_scores(y, pred, proba, outputs)
        else:
            sc = regression_scores(y, lw.predict_values(X))
        scores.append({"id": lw.id, "name": lw.name, "scores": sc})
    return scores


def anchor_eval(market: str | Path, data: str | Path, target: str, *, island: str | None = None,
                task: str | None = None, trust: bool = False,
                out: str | Path | None = None, missing: str = "drop") -> AnchorEvalResult:
    """Score the island's anchor learnwares on the user's labelled rows, locally (seed
    sec. 3.3).

    ``data`` is taken by name (the island's features and ``target``; other columns are left
    and listed in ``result.intake``); rows with gaps are dropped (``missing="drop"``), or
    refused (``"error"``); anchors score labelled rows as they are, so ``"impute"`` fills
    inputs from the file's complete rows.

    Returns (and with ``out`` writes) a report of scores only: every metric per anchor, the
    same metrics for the best constant prediction, and the row count (at least
    :data:`MIN_ANCHOR_ROWS`). Give it to ``search(anchor_report=...)``. Raises
    :class:`UsageError` without ``target``, :class:`NotFoundError` for a missing output
    folder or island, :class:`DataError` for labels the island does not have.
    """
    from ..anchorreport import make_report
    from ..engine.anchors import anchor_metric, best_scored
    from ..engine.metrics import baseline_scores
    from ..market.anchors import load_anchor_set
    from ..market.store import Market, write_output

    if not target:
        raise UsageError("anchor-eval needs --target: the label column of your data",
                         "pass --target COL")
    if out is not None and not Path(out).parent.exists():
        raise NotFoundError(f"output folder {Path(out).parent} does not exist", "create it first")
    mk = Market.open(market)
    table, isl = _anchor_table(mk, data, target, island, task, missing)
    aset = load_anchor_set(mk, isl.id)
    y = _anchor_labels(table, isl, aset.task, target)
    scores = _score_anchors(mk, aset, tuple(isl.key["outputs"]), table.X, y, trust)
    report = make_report(island=isl.id, anchor_set=aset.anchor_set, task=aset.task,
                         objective=aset.objective, n_rows=table.n_rows, scores=scores,
                         baseline=baseline_scores(y, aset.task))
    if out is not None:
        write_output(out, (json.dumps(report, indent=1) + "\n").encode())
    metric, _ = anchor_metric(aset.task, aset.objective)
    return AnchorEvalResult(report, metric, best_scored(report["scores"], metric), table.intake)


def _anchor_table(mk, data, target: str, island, task, missing: str):
    """The user's labelled rows, the island's features taken by name, and the island."""
    from dataclasses import replace

    from ..intake import check_policy, open_source
    from ..market.index import keep_ordinary_zeros
    from .spec import impute_from_own_rows

    check_policy(missing)
    src = open_source(data, target)
    keep_ordinary_zeros(mk, src)
    isl, notes = _resolve_island_for_features(mk, src.available(), island, task,
                                              src.unusable())
    table = src.take(isl.key["features"], missing=missing, min_rows=MIN_ANCHOR_ROWS,
                     what=f"island {isl.id}")
    table = replace(table, intake=replace(table.intake, hints=tuple(notes)))
    return (impute_from_own_rows(table) if missing == "impute" else table), isl


def _report_distances(aset, ids: list[str], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The report's anchors' positions among the island's members and every member's
    distance to each of them (the stored ones when the report used the current anchors)."""
    from ..engine.anchors import distances

    pos = np.asarray([aset.members.index(i) for i in ids])
    if ids == aset.anchors:
        return pos, aset.distances(kind)
    outs = np.asarray(aset.outputs(), dtype=np.float64)   # another anchor choice, same members
    return pos, distances(outs, outs[pos], kind)


def _member_summaries(mk, members) -> tuple[dict, object, list[str]]:
    """Catalog rows of the anchored members, the index (``None`` when damaged) and the
    warning that says the index was not used."""
    from ..market.index import learnware_summary, load_index

    try:
        idx = load_index(mk)
        return ({i: (idx.summary(i) if idx is not None else None) or learnware_summary(mk, i)
                 for i in members}, idx, [])
    except MarketError as exc:      # a damaged index: the rows from learnwares/, said so
        return ({i: learnware_summary(mk, i) for i in members}, None,
                [f"the index is damaged ({exc.message}); read learnwares/ directly: "
                 "repair the index with lw market refresh --force"])


def _ranked_rows(rk, members, summ, obs: dict, metric: str, tags: Sequence[str]) -> list[dict]:
    """The ranking as rows, best first, in the metric's own units (accuracy, not its loss:
    the bounds swap), leaving out the learnwares without every tag in ``tags``."""
    from ..engine.anchors import as_loss

    flip = metric == "accuracy"

    def val(x):
        return float(as_loss(x, metric))

    rows = []
    for j in rk.order:
        i = members[j]
        if tags and not set(tags) <= set(summ[i]["tags"]):
            continue
        lo, hi = (val(rk.upper[j]), val(rk.lower[j])) if flip else (val(rk.lower[j]),
                                                                     val(rk.upper[j]))
        rows.append({"id": i, "name": summ[i]["name"], "predicted": val(rk.predicted[j]),
                     "lower": lo, "upper": hi, "confidence": float(rk.confidence[j]),
                     "anchor": i in obs, "observed": obs.get(i)})
    return rows


def _check_report(rep, aset, isl, metric: str) -> list[str]:
    """The ids the report scores; :class:`MarketError` when they are not the island's
    anchored members or the report lacks the island's ranking score."""
    ids = [s["id"] for s in rep["scores"]]
    missing = [i for i in ids if i not in aset.members]
    if missing:
        raise MarketError(f"the report scores learnwares {missing[:3]} that are not among island "
                          f"{isl.id}'s anchored learnwares", "rerun lw anchor-eval on this market")
    if any(metric not in s["scores"] for s in rep["scores"]) or metric not in rep["baseline"]:
        raise MarketError(f"the report lacks the {metric} score this island is ranked by",
                          "rerun lw anchor-eval on this market")
    return ids


def anchor_search(market, report_path, *, tags: Sequence[str], top: int):
    """:func:`lwcli.api.search` with an anchor report: every learnware of the report's
    island ranked by its predicted score (:func:`lwcli.engine.anchors.rank_from_anchors`,
    seed sec. 3.3), the hope assessment, and warnings. ``report_path``: the report's path, the
    report itself, or :func:`anchor_eval`'s result. Returns a ``SearchResult`` of mode
    ``"anchors"``."""
    from ..anchorreport import read_report, report_from_dict
    from ..engine.anchors import (anchor_metric, as_loss, assess_hope, inconsistency_warning,
                                  rank_from_anchors)
    from ..engine.metrics import skill
    from ..market.anchors import load_anchor_set
    from ..market.store import Market
    from .search import SearchResult

    if isinstance(report_path, AnchorEvalResult):
        report_path = report_path.to_dict()
    rep = report_from_dict(report_path) if isinstance(report_path, dict) else \
        read_report(report_path)
    mk = Market.open(market)
    isl = mk.island(rep["island"])
    aset = load_anchor_set(mk, isl.id)
    metric, kind = anchor_metric(aset.task, aset.objective)
    ids = _check_report(rep, aset, isl, metric)
    pos, D = _report_distances(aset, ids, kind)
    observed = np.asarray([s["scores"][metric] for s in rep["scores"]])
    rk = rank_from_anchors(D, as_loss(observed, metric), pos)
    summ, idx, warnings = _member_summaries(mk, aset.members)
    obs = dict(zip(ids, observed.tolist()))
    single = _ranked_rows(rk, aset.members, summ, obs, metric, tags)
    if not single:
        raise NotFoundError(f"no learnware on island {isl.id} carries all tags {list(tags)}",
                            "drop or change --tag")
    assessment = assess_hope({i: skill(obs[i], rep["baseline"][metric], metric) for i in ids},
                             {i: summ[i]["name"] for i in ids})
    warnings += [assessment["message"]] if assessment["hope"] == "low" else []
    warnings += [w for w in [inconsistency_warning(rk.inconsistent)] if w]
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
    return SearchResult(isl.id, "anchors", single[:top], None, requirement, warnings, anchors,
                        assessment, ranked_by="anchors")
