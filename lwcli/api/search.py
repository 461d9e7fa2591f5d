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
    """One search's answer (``to_dict()`` is ``lw search --json``): the island, the mode, the
    single matches best first, the mixture (``None`` for an anchor ranking), the requirement
    and warnings; an anchor ranking adds ``anchors`` and ``assessment``."""

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
    intake: object = None                  # what was taken from --data (lwcli.intake.Intake)

    def to_dict(self) -> dict:
        out = {"island": self.island, "mode": self.mode, "ranked_by": self.ranked_by,
               "single": self.single, "mixture": self.mixture,
               "requirement": self.requirement, "warnings": self.warnings}
        if self.intake is not None:
            out.update(self.intake.to_dict())
        if self.searched is not None:
            out["searched"] = self.searched
        if self.anchors is not None:
            out["anchors"] = self.anchors
            out["assessment"] = self.assessment
        return out


def _warm_up_models(rerank: int, target: str | None) -> None:
    """A labelled search re-ranks by running models: start their fork server now, so that its
    imports overlap with fitting the requirement."""
    if rerank and target is not None:
        from ..market.forkserver import warm_up

        warm_up()


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
    missing: str = "drop",
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

    ``data`` is taken by name: the island's feature columns (and ``target``); the others are
    left and listed, and ``missing`` (``drop``, the default, ``impute`` or ``error``) decides
    what happens to rows with gaps (:mod:`lwcli.intake`; ``result.intake`` counts it all).

    Islands of more than ``SKETCH_MIN_LEARNWARES`` learnwares are searched through their
    sketch index (nearest sketches shortlisted, then exact MMDs); ``exact`` True / False forces
    either way. The decisions are :func:`lwcli.engine.search_pipeline.run_search`'s. Raises
    :class:`UsageError` for options that do not go together, :class:`NotFoundError` for an
    island without (tagged) learnwares, :class:`SpecError` for a requirement in another
    column order or with other outputs than the island's.
    """
    from ..device import resolve_device
    from ..engine.search_pipeline import run_search
    from ..market.store import Market

    _check_options(data, spec, anchor_report, target, top, rerank)
    if anchor_report is not None:
        from .anchors import anchor_search

        return anchor_search(market, anchor_report, tags=tags, top=top)
    mk = Market.open(market)
    dev = resolve_device(device)
    _warm_up_models(rerank, target)
    req, isl = _requirement(mk, market, data=data, target=target, spec=spec, island=island,
                            task=task, k=k, seed=seed, device=device, missing=missing)
    view, allowed = _island_view(mk, isl, dev, tags)
    models = ContainedOutputs(mk, isl, view.ids, trust)
    res = run_search(view.stack, req.rkme, sketch=view.sketch, allowed=allowed, top=top,
                     rerank=rerank, max_members=max_members, exact=exact, device=dev,
                     outputs_of=models)
    return _result(isl, view, req, res, top, models)


def _check_options(data, spec, anchor_report, target, top: int, rerank: int) -> None:
    """:class:`UsageError` for search options that do not go together."""
    if sum(x is not None for x in (data, spec, anchor_report)) != 1:
        raise UsageError("give exactly one of --data, --spec and --anchor-report",
                         "see lw search --help")
    if top < 1:
        raise UsageError(f"--top must be >= 1, got {top}", "pass a positive number")
    if rerank < 0:
        raise UsageError(f"--rerank must be >= 0, got {rerank}",
                         "pass 0 to rank by RKHS distance alone")
    if target is not None and data is None:
        raise UsageError("--target goes with --data", "drop --target when using --spec"
                         if anchor_report is None else "drop --target with --anchor-report")


def _island_view(mk, isl, dev, tags: Sequence[str]):
    """The island's stacked view (:func:`lwcli.market.index.island_view`) and the mask of
    the learnwares carrying every tag (``None`` without tags)."""
    from ..market.index import island_view

    view = island_view(mk, isl.id, dev)
    if view is None:
        raise NotFoundError(f"island {isl.id} has no learnwares", "submit some first")
    if not tags:
        return view, None
    allowed = view.tag_mask(tags)
    if not allowed.any():
        raise NotFoundError(f"no learnware on island {isl.id} carries all tags {list(tags)}",
                            "drop or change --tag")
    return view, allowed


def _requirement(mk, market, *, data, target, spec, island, task, k, seed, device, missing):
    """The requirement (read from ``spec``, or fitted from ``data`` with the island's metric)
    and the island it is matched on."""
    from ..specfile import read_spec

    if spec is None:
        req = build_spec(data, target=target, k=k, seed=seed, device=device, market=market,
                         island=island, task=task, clamp_k=True, missing=missing)
        return req, mk.island(req.island)
    req = spec if isinstance(spec, Spec) else read_spec(spec)
    isl, _ = _resolve_island_for_features(mk, req.features, island, task)
    if tuple(req.features) != tuple(isl.key["features"]):
        raise SpecError(f"the requirement's features are in another order than island "
                        f"{isl.id}'s", "rebuild it with lw spec --market")
    if req.kind == "joint" and tuple(req.outputs) != tuple(isl.key["outputs"]):
        raise SpecError(f"the requirement's outputs {list(req.outputs)} differ from island "
                        f"{isl.id}'s {isl.key['outputs']}", "rebuild it with lw spec --market")
    return req, isl


def _result(isl, view, req, res, top: int, models) -> SearchResult:
    """Names, rows and the JSON-able parts of :func:`run_search`'s outcome."""
    from ..engine.search import Ranking

    ids, regression = view.ids, isl.key["task"] == "regression"
    shown = [int(j) for j in res.order[:top]]
    single = []
    for j, summ in zip(shown, view.summaries(shown)):
        row = {"id": str(ids[j]), "name": summ["name"], "mmd2": float(res.mmd2[j]),
               "score": float(res.scores[j])}
        if j in res.losses:     # RMSE for values (the loss is a mean square), Brier for classes
            v = res.losses[j]
            row["requirement_loss"] = float(np.sqrt(v)) if regression else v
        single.append(row)
    mix = res.mixture
    members = [int(m) for m in mix.members]
    mixture = {"ids": [str(ids[m]) for m in members],
               "names": [r["name"] for r in view.summaries(members)],
               "weights": [float(w) for w in mix.weights], "mmd2": float(mix.mmd2),
               "score": float(Ranking.score(mix.mmd2)), "noise_floor": float(mix.noise_floor)}
    requirement = {"kind": req.kind, "n_rows": req.rkme.n_rows, "k": req.rkme.k,
                   "metric_digest": req.rkme.metric.digest(), "approx_error": req.rkme.approx_error}
    if res.ranked_by == "requirement-loss":
        requirement["loss_metric"] = "rmse" if regression else "brier"
    intake = req.intake
    notes = [*(intake.notes() if intake is not None else ()), *res.notes, *view.notes,
             *models.notes()]
    return SearchResult(isl.id, res.mode, single, mixture, requirement, notes,
                        ranked_by=res.ranked_by, searched=res.searched, intake=intake)


class ContainedOutputs:
    """The re-ranking's model runner (:data:`lwcli.engine.search_pipeline.OutputsOf`): the
    shortlisted models run contained (:func:`lwcli.market.contained.run_contained`, one
    child for the whole shortlist), so a model that crashes, hangs or misbehaves is reported
    as not evaluated and keeps its RKME place; lw's own process never runs a stored model
    here. Class probabilities come back in the island's class order. :meth:`notes` says
    which ones could not run, and why."""

    def __init__(self, mk, isl, ids, trust: bool) -> None:
        self.mk, self.ids, self.trust = mk, ids, trust
        self.task, self.features = isl.key["task"], tuple(isl.key["features"])
        self.outputs = list(isl.key["outputs"])
        self.untrusted: list[str] = []
        self.failed: list[str] = []

    def _item(self, j: int, X: np.ndarray):
        """The contained run of learnware ``j`` on ``X`` and its declared outputs."""
        from ..market.contained import Item

        lw_id = str(self.ids[j])
        man = self.mk.manifest(lw_id)
        cols = [self.features.index(f) for f in man.features]
        return Item(self.mk.model_bytes(lw_id), man.model_format, man.features, self.task,
                    man.outputs, X[:, cols],
                    mode="proba" if self.task == "classification" else "values",
                    id=lw_id, name=man.name, class_values=man.class_values), list(man.outputs)

    def _run(self, indices: list, X: np.ndarray) -> dict:
        """Index -> outputs, or the error that kept that model from running."""
        from ..settings import qa_timeout
        from ..errors import LwError, MissingExtraError, ModelCheckError
        from ..labels import align_columns
        from ..market.contained import run_contained

        items, where, done = [], {}, {}
        for j in indices:
            try:
                item, lw_outputs = self._item(j, X)
                items.append(item)
                where[j] = (len(items) - 1, lw_outputs)
            except (ModelCheckError, MissingExtraError) as exc:
                done[j] = exc
            except ValueError as exc:       # a feature the island does not have
                done[j] = ModelCheckError(f"its features do not match the island's ({exc})",
                                          None)
        results = run_contained(items, trust=self.trust, timeout=qa_timeout()) if items else []
        for j, (i, lw_outputs) in where.items():
            res = results[i]
            if not isinstance(res, BaseException) and self.task == "classification":
                try:
                    res = align_columns(res, lw_outputs, self.outputs)
                except LwError as exc:
                    res = exc
            done[j] = res
        return done

    def __call__(self, indices: list, X: np.ndarray) -> list:
        from ..errors import LwError, UntrustedModelError

        done = self._run(indices, X)
        out = []
        for j in indices:
            res = done.get(j)
            if isinstance(res, UntrustedModelError):
                self.untrusted.append(str(self.ids[j]))
            elif isinstance(res, LwError):
                self.failed.append(f"{self.ids[j]}: {res.message}")
            out.append(res if res is not None and not isinstance(res, LwError) else None)
        return out

    def notes(self) -> list[str]:
        """Warnings about the shortlisted models that were not evaluated."""
        notes = []
        u = self.untrusted
        if u:
            notes.append(f"{len(u)} shortlisted learnware(s) have pickled models and were "
                         f"ranked by RKHS distance only ({', '.join(u[:3])}"
                         f"{', ...' if len(u) > 3 else ''}); pass --trust to evaluate them")
        return notes + [f"not evaluated on the requirement: {f}" for f in self.failed]
