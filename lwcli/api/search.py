"""Use case: rank an island's learnwares against a requirement; find the best mixture."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError, NotFoundError, SpecError, UsageError
from ..specfile import Spec
from .spec import _resolve_island_for_features, requirement_for_island


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
    islands: list = field(default_factory=list)   # per island searched: its own answer

    def to_dict(self) -> dict:
        out = {"island": self.island, "mode": self.mode, "ranked_by": self.ranked_by,
               "single": self.single, "mixture": self.mixture,
               "requirement": self.requirement, "warnings": self.warnings}
        if self.islands:
            out["islands"] = self.islands
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

    Without ``island``, ``data`` is matched against every island it reaches
    (:func:`lwcli.market.world.eligible`: the island's features among the table's columns,
    and outputs that hold the labels), each with its own requirement under its own metric.
    With labels, ``single`` is one ranking across them by the requirement's loss (same target,
    same loss: comparable); without, the ranking of the island that uses the most columns,
    with a warning, as distances over different feature sets are not comparable
    (:func:`lwcli.engine.search_pipeline.merge_islands`). Each entry names its ``island`` and
    ``features``; ``islands`` holds each island's own answer. The mixture is the best
    entry's island's: a mixture of specifications over different feature spaces has no
    common RKHS to be measured in.

    Islands of more than ``SKETCH_MIN_LEARNWARES`` learnwares are searched through their
    sketch index (nearest sketches shortlisted, then exact MMDs); ``exact`` True / False forces
    either way. The decisions are :func:`lwcli.engine.search_pipeline.run_search`'s. Raises
    :class:`UsageError` for options that do not go together, :class:`NotFoundError` for an
    island without (tagged) learnwares, :class:`SpecError` for a requirement in another
    column order or with other outputs than the island's.
    """
    from ..device import resolve_device
    from ..market.store import Market

    _check_options(data, spec, anchor_report, target, top, rerank)
    if anchor_report is not None:
        from .anchors import anchor_search

        return anchor_search(market, anchor_report, tags=tags, top=top)
    mk = Market.open(market)
    dev = resolve_device(device)
    _warm_up_models(rerank, target)
    plans = _requirements(mk, market, data=data, target=target, spec=spec, island=island,
                          task=task, k=k, seed=seed, device=device, missing=missing)
    options = dict(top=top, rerank=rerank, max_members=max_members, exact=exact, device=dev)
    done, skipped = _search_islands(mk, plans, dev, tags, trust, options)
    return _result(done, top, skipped)


def _search_islands(mk, plans, dev, tags, trust: bool, options: dict):
    """:func:`run_search` on each planned island; an island without learnwares carrying the
    tags is skipped (said) when others are searched, else its :class:`NotFoundError`."""
    from ..engine.search_pipeline import run_search

    done, skipped = [], []
    for req, isl in plans:
        try:
            view, allowed = _island_view(mk, isl, dev, tags)
        except NotFoundError as exc:
            if len(plans) == 1:
                raise
            skipped.append(f"island {isl.id} not searched: {exc.message}")
            continue
        models = ContainedOutputs(mk, isl, view.ids, trust)
        res = run_search(view.stack, req.rkme, sketch=view.sketch, allowed=allowed,
                         outputs_of=models, **options)
        done.append(_IslandAnswer(isl, view, req, res, models))
    if not done:
        raise NotFoundError(f"no island this data reaches has learnwares with tags "
                            f"{list(tags)}", "drop or change --tag")
    return done, skipped


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


def _requirements(mk, market, *, data, target, spec, island, task, k, seed, device,
                  missing) -> list:
    """``(requirement, island)`` for each island searched, the primary island first: the one
    a spec was fitted for, the one ``island`` names, or every island ``data`` reaches."""
    from ..device import resolve_device
    from ..intake import check_policy, open_source
    from ..market.index import island_references, keep_ordinary_zeros
    from ..market.world import bridged, check_island_task, eligible
    from ..specfile import read_spec

    if spec is not None:
        req = spec if isinstance(spec, Spec) else read_spec(spec)
        isl, _ = _resolve_island_for_features(mk, req.features, island, task)
        _check_requirement(req, isl)
        return [(req, isl)]
    check_policy(missing)
    src = open_source(data, target)
    keep_ordinary_zeros(mk, src, resolve_device(device))
    labels = _label_keys(src)
    islands = mk.islands()
    found = eligible(islands, src.available(), task=task, target=target, labels=labels)
    reached, notes = _one_task(found, src)
    links = [] if missing == "error" else bridged(islands, src.available(), reached)
    if island is not None:          # one island: directly, through a link, or estimated
        if island in islands:
            check_island_task(islands[island], task)
        links = [(i, est) for i, est in links if i.id == island]
        reached = [i for i in reached if i.id == island] if not links else []
        if not reached and not links:
            links = _estimated(islands, island, src)
            if links and missing != "impute":     # estimated only when asked to
                _refuse_lacking(src, links[0])
                links = []
    if not reached and not links:   # none by name and outputs: the single-island diagnosis
        isl, notes = _diagnosed(mk, src, island, task)
        reached = [isl]
    plans = [(requirement_for_island(src, isl, target, k=k, seed=seed, device=device,
                                     missing=missing, notes=notes if p == 0 else ()),
              isl) for p, isl in enumerate(reached)]
    for isl, _ in links:            # reached through a link: the extra features estimated
        refs = island_references(mk, isl.id, resolve_device(device))
        if refs:
            plans.append((requirement_for_island(src, isl, target, k=k, seed=seed,
                                                 device=device, missing=missing, bridge=refs),
                          isl))
    return plans


def _estimated(islands: dict, island: str, src) -> list:
    """``--island`` names an island whose features the table lacks some of:
    ``[(island, lacking features)]`` when the table holds at least one of its features; under
    ``--missing impute`` the others are then estimated from the island's own specifications,
    joint samples over all of its features (as through a link, seed sec. 5). The labels are
    checked against the island's outputs as for any named island. Otherwise ``[]`` (the
    diagnosis follows)."""
    isl = islands.get(island)
    if isl is None:
        return []
    have = set(src.available())
    feats = list(isl.key["features"])
    lack = [f for f in feats if f not in have]
    return [(isl, lack)] if lack and len(lack) < len(feats) else []


def _refuse_lacking(src, link) -> None:
    """``--island`` names an island whose features the file lacks, without ``--missing
    impute``: a :class:`DataError` saying so and how to have them estimated (a column that is
    there but holds no data gets the intake's own diagnosis instead)."""
    isl, lack = link
    absent = [f for f in lack if f not in src.frame.columns]
    if absent:
        n = len(isl.key["features"])
        raise DataError(f"{src.name} lacks {len(absent)} of the {n} columns of island "
                        f"{isl.id}: {absent[:5]}{'...' if len(absent) > 5 else ''}",
                        "add those columns (names are compared exactly), or pass --missing "
                        "impute to have them estimated from its specifications")


def _diagnosed(mk, src, island, task) -> tuple:
    """The one island (and notes) the table is matched on when no island reaches it by name
    and outputs (:func:`lwcli.market.world.island_for_columns`); its :class:`NotFoundError`
    also says how to have the columns an island lacks estimated."""
    try:
        return _resolve_island_for_features(mk, src.available(), island, task, src.unusable())
    except NotFoundError as e:
        if island is not None or "also needs" not in e.message:
            raise
        raise NotFoundError(e.message, f"{e.hint}; or pass --island ID --missing impute to "
                                       "have them estimated from its specifications") from None


def _label_keys(src):
    """The target's labels as class keys, missing-value markers left out (None: no target)."""
    from ..labels import label_str

    if src.target is None:
        return None
    return sorted({label_str(v) for v in src.label_values()})


def _one_task(found: list, src) -> tuple[list, list[str]]:
    """The islands of one task: labels that fit both a classification and a regression
    island are one task's (:func:`lwcli.engine.task.infer_task` on the label column), never
    ranked together (a Brier score and an RMSE do not compare); a note names the others."""
    import pandas as pd

    from ..engine.task import infer_task

    tasks = {i.key["task"] for i in found}
    if len(tasks) < 2 or src.target is None:
        return found, []
    col = src.label_values()
    numbers = pd.to_numeric(col, errors="coerce")
    want = infer_task(numbers.to_numpy() if numbers.notna().all() else col.to_numpy())
    keep = [i for i in found if i.key["task"] == want]
    left = [i.id for i in found if i.key["task"] != want]
    return keep, [f"your labels look like a {want} target; also reachable for the other task: "
                  f"{', '.join(left[:4])} (pass --task to search those)"]


def _check_requirement(req, isl) -> None:
    """A saved requirement must be in the island's column order and outputs."""
    if tuple(req.features) != tuple(isl.key["features"]):
        raise SpecError(f"the requirement's features are in another order than island "
                        f"{isl.id}'s", "rebuild it with lw spec --market")
    if req.kind == "joint" and tuple(req.outputs) != tuple(isl.key["outputs"]):
        raise SpecError(f"the requirement's outputs {list(req.outputs)} differ from island "
                        f"{isl.id}'s {isl.key['outputs']}", "rebuild it with lw spec --market")


@dataclass
class _IslandAnswer:
    """One island's search: the island, its view, the requirement and run_search's outcome."""

    isl: object
    view: object
    req: Spec
    res: object
    models: "ContainedOutputs"


def _rows(a: _IslandAnswer, indices) -> list[dict]:
    """Catalog rows of the island's learnwares ``indices``, as ``single`` entries."""
    ids, regression = a.view.ids, a.isl.key["task"] == "regression"
    feats = list(a.isl.key["features"])
    out = []
    for j, summ in zip(indices, a.view.summaries(indices)):
        row = {"id": str(ids[j]), "name": summ["name"], "island": a.isl.id, "features": feats,
               "mmd2": float(a.res.mmd2[j]), "score": float(a.res.scores[j])}
        if j in a.res.losses:   # RMSE for values (the loss is a mean square), Brier for classes
            v = a.res.losses[j]
            row["requirement_loss"] = float(np.sqrt(v)) if regression else v
        out.append(row)
    return out


def _answer(a: _IslandAnswer, top: int) -> dict:
    """One island's own answer (an entry of ``islands``)."""
    from ..engine.search import Ranking

    mix = a.res.mixture
    members = [int(m) for m in mix.members]
    mixture = {"ids": [str(a.view.ids[m]) for m in members],
               "names": [r["name"] for r in a.view.summaries(members)],
               "weights": [float(w) for w in mix.weights], "mmd2": float(mix.mmd2),
               "score": float(Ranking.score(mix.mmd2)), "noise_floor": float(mix.noise_floor)}
    req = a.req
    requirement = {"kind": req.kind, "n_rows": req.rkme.n_rows, "k": req.rkme.k,
                   "metric_digest": req.rkme.metric.digest(),
                   "approx_error": req.rkme.approx_error}
    if a.res.ranked_by == "requirement-loss":
        requirement["loss_metric"] = "rmse" if a.isl.key["task"] == "regression" else "brier"
    return {"island": a.isl.id, "features": list(a.isl.key["features"]), "mode": a.res.mode,
            "ranked_by": a.res.ranked_by,
            "single": _rows(a, [int(j) for j in a.res.order[:top]]),
            "mixture": mixture, "requirement": requirement, "searched": a.res.searched,
            **(req.intake.to_dict() if req.intake is not None else {})}


def _result(done: list, top: int, skipped: list) -> SearchResult:
    """One answer from the islands searched (:func:`merge_islands` decides the ranking)."""
    from ..engine.search_pipeline import merge_islands

    entries, ranked_by, lead, note = merge_islands([a.res for a in done], top)
    single = [row for p, j in entries for row in _rows(done[p], [j])]
    answers = [_answer(a, top) for a in done]
    best = answers[lead]
    intake = _searched_intake(done, lead)
    many = len(done) > 1
    notes = [*(intake.notes() if intake is not None else ())]
    if note:
        notes.append(note.format(island=done[0].isl.id))
    for a in done:
        said = [*a.res.notes, *a.view.notes, *a.models.notes()]
        notes += [f"island {a.isl.id}: {n}" if many else n for n in said]
        if many and a is not done[lead] and a.req.intake is not None:
            notes += [f"island {a.isl.id}: {n}" for n in a.req.intake.notes()
                      if not n.startswith("ignored ")]
    return SearchResult(best["island"], best["mode"], single, best["mixture"],
                        best["requirement"], [*notes, *skipped], ranked_by=ranked_by,
                        searched=best["searched"], intake=intake, islands=answers)


def _searched_intake(done: list, lead: int):
    """The lead island's intake, its ignored columns cut to those no island searched took."""
    from dataclasses import replace

    intake = done[lead].req.intake
    if intake is None or len(done) == 1:
        return intake
    taken = {f for a in done for f in a.isl.key["features"]}
    return replace(intake, ignored=tuple(p for p in intake.ignored if p[0] not in taken))


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
