"""Use case: rank an island's learnwares against a requirement; find the best mixture."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import NotFoundError, SpecError, UsageError
from ..specfile import Spec
from .spec import _resolve_island_for_features, build_spec


@dataclass(frozen=True)
class SearchResult:
    island: str
    mode: str                              # "xy" (label-aware) or "x" (inputs only)
    single: list[dict]
    mixture: dict
    requirement: dict
    warnings: list[str] = field(default_factory=list)
    anchors: dict | None = None            # mode "anchors": the report's anchors and metric
    assessment: dict | None = None         # mode "anchors": is there hope in this market?
    ranked_by: str = "rkme"                # "rkme", "requirement-loss" or "anchors"
    searched: dict | None = None           # how: learnwares, "exact" or "sketch", exact MMDs

    def to_dict(self) -> dict:
        out = {"island": self.island, "mode": self.mode, "ranked_by": self.ranked_by,
               "single": self.single, "mixture": self.mixture,
               "requirement": self.requirement, "warnings": self.warnings}
        if self.searched is not None:
            out["searched"] = self.searched
        if self.anchors is not None:
            out["anchors"] = self.anchors
            out["assessment"] = self.assessment
        return out


def search(
    market: str | Path,
    *,
    data: str | Path | None = None,
    target: str | None = None,
    spec: str | Path | Spec | None = None,
    tags: Sequence[str] = (),
    top: int = 10,
    island: str | None = None,
    task: str | None = None,
    k: int = 100,
    seed: int = 0,
    device: str | None = None,
    max_members: int = 5,
    anchor_report: str | Path | dict | None = None,
    rerank: int = 20,
    trust: bool = False,
    exact: bool | None = None,
) -> SearchResult:
    """Rank an island's learnwares against a requirement, and find the best mixture.

    The requirement is built locally from ``data`` (label-aware with ``target``) or read from
    ``spec``. Scores are absolute: ``1 - MMD/sqrt(2)``. A label-aware requirement also
    re-ranks the ``rerank`` best RKME matches by each model's loss on the requirement's
    reduced points (``requirement_loss``: RMSE for values, the Brier score for classes), which
    tells a strong model from a weak one trained on similar data; ``rerank=0`` ranks by RKHS
    distance alone. Pickled models take part in that only with ``trust``. The mixture is
    always the RKME one (seed eq. 3). With ``anchor_report`` instead (what
    :func:`anchor_eval` returned, or the path it wrote), every learnware of the island is
    ranked by its predicted performance from the anchors' scores alone (mode ``"anchors"``;
    no mixture).

    Islands of more than ``SKETCH_MIN_LEARNWARES`` learnwares are searched through their
    sketch index: the nearest sketches are shortlisted and only they get an exact MMD.
    ``exact=True`` always scans every learnware; ``exact=False`` uses the sketch at any size.
    """
    from ..device import resolve_device
    from ..engine.search import (MIXTURE_CANDIDATES, SKETCH_CANDIDATES, SKETCH_MIN_LEARNWARES,
                                Ranking, mixture_search, rank_single, requirement_notes)
    from ..market.index import island_view
    from ..market.store import Market
    from ..specfile import read_spec

    if sum(x is not None for x in (data, spec, anchor_report)) != 1:
        raise UsageError("give exactly one of --data, --spec and --anchor-report",
                         "see lw search --help")
    if top < 1:
        raise UsageError(f"--top must be >= 1, got {top}", "pass a positive number")
    if rerank < 0:
        raise UsageError(f"--rerank must be >= 0, got {rerank}",
                         "pass 0 to rank by RKHS distance alone")
    if anchor_report is not None:
        if target is not None:
            raise UsageError("--target goes with --data", "drop --target with --anchor-report")
        from .anchors import anchor_search

        return anchor_search(market, anchor_report, tags=tags, top=top)
    if target is not None and data is None:
        raise UsageError("--target goes with --data", "drop --target when using --spec")
    mk = Market.open(market)
    dev = resolve_device(device)
    if spec is not None:
        req = spec if isinstance(spec, Spec) else read_spec(spec)
        isl = _resolve_island_for_features(mk, req.features, island, task)
        if tuple(req.features) != tuple(isl.key["features"]):
            raise SpecError(f"the requirement's features are in another order than island "
                            f"{isl.id}'s", "rebuild it with lw spec --market")
        if req.kind == "joint" and tuple(req.outputs) != tuple(isl.key["outputs"]):
            raise SpecError(f"the requirement's outputs {list(req.outputs)} differ from island "
                            f"{isl.id}'s {isl.key['outputs']}", "rebuild it with lw spec --market")
    else:
        req = build_spec(data, target=target, k=k, seed=seed, device=device, market=market,
                         island=island, task=task, clamp_k=True)
        isl = mk.island(req.island)
    view = island_view(mk, isl.id, dev)
    if view is None:
        raise NotFoundError(f"island {isl.id} has no learnwares", "submit some first")
    ids, stack = view.ids, view.stack
    notes = [*requirement_notes(req.rkme.n_rows, req.kind == "joint"), *view.notes]
    allowed = None
    if tags:
        allowed = view.tag_mask(tags)
        if not allowed.any():
            raise NotFoundError(f"no learnware on island {isl.id} carries all tags {list(tags)}",
                                "drop or change --tag")
    use_sketch = exact is False or (exact is None and stack.n > SKETCH_MIN_LEARNWARES)
    keep = max(top, rerank, MIXTURE_CANDIDATES)
    ranking = rank_single(stack, req.rkme, dev, sketch=view.sketch if use_sketch else None,
                          keep=keep, allowed=allowed)
    order = [int(j) for j in ranking.order]
    scores = Ranking.score(ranking.mmd2)
    ranked_by, loss_of = "rkme", {}
    if ranking.mode == "xy" and rerank > 0:
        order, loss_of, skipped = _rerank_by_requirement(mk, isl, ids, order, req.rkme, rerank,
                                                         trust)
        ranked_by = "requirement-loss"
        notes = [*notes, *skipped]
    shown = order[:top]
    single = []
    for j, summ in zip(shown, view.summaries(shown)):
        row = {"id": str(ids[j]), "name": summ["name"], "mmd2": float(ranking.mmd2[j]),
               "score": float(scores[j])}
        if j in loss_of:
            row["requirement_loss"] = loss_of[j]
        single.append(row)
    mix = mixture_search(stack, req.rkme, ranking, max_members=max_members, device=dev)
    members = [int(m) for m in mix.members]
    mixture = {"ids": [str(ids[m]) for m in members],
               "names": [r["name"] for r in view.summaries(members)],
               "weights": [float(w) for w in mix.weights], "mmd2": float(mix.mmd2),
               "score": float(Ranking.score(mix.mmd2)), "noise_floor": float(mix.noise_floor)}
    eligible = stack.n if allowed is None else int(allowed.sum())
    searched = {"learnwares": stack.n, "eligible": eligible,
                "method": "sketch" if use_sketch else "exact",
                "exact_mmd": ranking.shortlist if use_sketch else eligible,
                "sketch_candidates": SKETCH_CANDIDATES if use_sketch else None}
    requirement = {"kind": req.kind, "n_rows": req.rkme.n_rows, "k": req.rkme.k,
                   "metric_digest": req.rkme.metric.digest(), "approx_error": req.rkme.approx_error}
    if ranked_by == "requirement-loss":
        requirement["loss_metric"] = "brier" if isl.key["task"] == "classification" else "rmse"
    return SearchResult(isl.id, ranking.mode, single, mixture, requirement, notes,
                        ranked_by=ranked_by, searched=searched)


def _rerank_by_requirement(mk, isl, ids, order, rkme, shortlist: int, trust: bool):
    """Run the shortlisted models on the requirement's reduced points; new order, the loss of
    each evaluated index (RMSE or Brier), and notes about the ones that could not run.

    The models run contained (:func:`lwcli.market.contained.run_contained`, one child for the
    whole shortlist): a model that crashes, hangs or misbehaves is reported as not evaluated
    and keeps its RKME place; lw's own process never runs a stored model here."""
    from ..config import qa_timeout
    from ..engine.search import requirement_sample, rerank
    from ..errors import LwError, MissingExtraError, ModelCheckError, UntrustedModelError
    from ..labels import align_columns
    from ..market.contained import Item, run_contained

    task, features = isl.key["task"], tuple(isl.key["features"])
    outputs = list(isl.key["outputs"])
    untrusted, failed = [], []

    X, _, _ = requirement_sample(rkme)
    k = max(0, int(shortlist))
    items, where, done = [], {}, {}
    for j in [int(j) for j in np.asarray(order, dtype=np.int64)[:k]]:
        lw_id = str(ids[j])
        try:
            man = mk.manifest(lw_id)
            cols = [features.index(f) for f in man.features]
            items.append(Item(mk.model_bytes(lw_id), man.model_format, man.features, task,
                              man.outputs, X[:, cols],
                              mode="proba" if task == "classification" else "values",
                              id=lw_id, name=man.name, class_values=man.class_values))
            where[j] = (len(items) - 1, list(man.outputs))
        except (ModelCheckError, MissingExtraError) as exc:
            done[j] = exc
        except ValueError as exc:       # a feature the island does not have
            done[j] = ModelCheckError(f"its features do not match the island's ({exc})", None)
    results = run_contained(items, trust=trust, timeout=qa_timeout()) if items else []
    for j, (i, lw_outputs) in where.items():
        res = results[i]
        if not isinstance(res, BaseException) and task == "classification":
            try:
                res = align_columns(res, lw_outputs, outputs)
            except LwError as exc:
                res = exc
        done[j] = res

    def outputs_of(j: int, X: np.ndarray):
        res = done.get(j)
        if isinstance(res, UntrustedModelError):
            untrusted.append(str(ids[j]))
        elif isinstance(res, LwError):
            failed.append(f"{ids[j]}: {res.message}")
        elif res is not None:
            return res
        return None

    rr = rerank(np.asarray(order, dtype=np.int64), rkme, outputs_of, shortlist)
    loss_of = {int(j): (float(np.sqrt(v)) if task == "regression" else float(v))
               for j, v in zip(rr.order, rr.losses) if np.isfinite(v)}
    notes = []
    if untrusted:
        notes.append(f"{len(untrusted)} shortlisted learnware(s) have pickled models and were "
                     f"ranked by RKHS distance only ({', '.join(untrusted[:3])}"
                     f"{', ...' if len(untrusted) > 3 else ''}); pass --trust to evaluate them")
    notes += [f"not evaluated on the requirement: {f}" for f in failed]
    return [int(j) for j in rr.order], loss_of, notes
