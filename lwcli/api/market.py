"""Use cases: create, list, inspect, refresh and verify a market."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import MarketError, UsageError
from ._result import DictView


@dataclass(frozen=True)
class InitResult(DictView):
    """A market ready at ``market`` (an absolute path) and what it holds."""

    market: str
    islands: int
    learnwares: int


@dataclass(frozen=True, eq=False)
class LsResult:
    """Catalog rows (:func:`lwcli.market.index.learnware_summary`'s keys), sorted by island,
    name and id, and notes on how they were read. Iterates, indexes, counts and compares
    like the list of rows it replaced."""

    rows: list[dict]
    notes: list[str] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)    # :func:`lwcli.market.world.links`

    def to_dict(self) -> dict:
        return {"learnwares": self.rows, "links": self.links}

    def __eq__(self, other) -> bool:
        if isinstance(other, LsResult):
            return (self.rows, self.notes, self.links) == (other.rows, other.notes, other.links)
        return self.rows == other if isinstance(other, list) else NotImplemented

    __hash__ = None

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


@dataclass(frozen=True)
class InfoResult(DictView):
    """One learnware: its manifest (as a dict), its QA record and its specification's
    summary (``k`` reduced points from ``n_rows`` rows, approximation error, metric digest)."""

    id: str
    island: str
    manifest: dict
    record: dict
    spec: dict


@dataclass(frozen=True)
class WorldResult(DictView):
    """The specification world (``lw market info`` without an id): every island with its
    features, outputs, learnware count and metric; how the market measures each feature
    (:mod:`lwcli.market.world`); islands that measure a shared feature otherwise
    (``misaligned``); the links between islands (:func:`lwcli.market.world.links`: an island
    whose features another island takes with more, through that island's learnwares) and the
    groups they merge; and notes (e.g. the index could not be used for the counts)."""

    islands: list[dict]
    features: dict
    outputs: dict
    misaligned: dict
    links: list[dict] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RefreshResult(DictView):
    """The index generation now live, whether anything was written (``changed``: the index
    or the anchors), counts, and :func:`lwcli.market.anchors.publish_anchors`'s report."""

    generation: str
    changed: bool
    index_changed: bool
    learnwares: int
    islands: int
    anchors: dict
    recheck: dict | None = None      # :func:`lwcli.market.checks.recheck_learnwares`


@dataclass(frozen=True)
class VerifyResult(DictView):
    """What ``lw market verify`` found: ``problems`` (damage: exit 5) and ``warnings``, each
    ``{"kind", "path", "message"}``, over ``checked`` learnwares."""

    checked: int
    problems: list[dict]
    warnings: list[dict]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "problems": self.problems,
                "warnings": self.warnings}


def market_init(root: str | Path) -> InitResult:
    """Create an empty market at ``root`` (idempotent: an existing one is left as it is)."""
    from ..market.store import Market

    mk = Market.init(root)
    return InitResult(mk.location, len(mk.islands()), len(mk.ids()))


def market_ls(market: str | Path, *, island: str | None = None,
              tags: Sequence[str] = (), notes: list[str] | None = None) -> LsResult:
    """The learnwares' catalog rows, from the index, of ``island`` only and with every tag
    of ``tags`` when given. A damaged index is not used: the rows are then read from
    ``learnwares/`` directly (every file checked against its recorded sha256), and a
    sentence saying so, with the repair, is in the result's ``notes`` (and appended to
    ``notes`` when given). ``links``: the specification world's links between islands
    (:func:`lwcli.market.world.links`). Raises :class:`NotFoundError` for an unknown island."""
    from ..market.index import learnware_summary, load_index
    from ..market.store import Market

    mk = Market.open(market)
    if island:
        mk.island(island)             # an unknown island is "not found", not an empty list
    rows, said = None, []
    try:
        idx = load_index(mk)
        if idx is not None:
            rows = list(idx.iter_summaries(island if island and idx.has_island(island) else None))
    except MarketError as exc:
        said.append(f"the index is damaged ({exc.message}); listed learnwares/ directly: "
                    "repair the index with lw market refresh --force")
        rows = None
    if rows is None:
        rows = [learnware_summary(mk, i) for i in mk.ids()]
    if island:
        rows = [r for r in rows if r["island"] == island]
    if tags:
        rows = [r for r in rows if set(tags) <= set(r["tags"])]
    if notes is not None:
        notes.extend(said)
    from ..market.world import links

    return LsResult(sorted(rows, key=lambda r: (r["island"], r["name"], r["id"])), said,
                    links(mk.islands()))


def market_info(market: str | Path, lw_id: str) -> InfoResult:
    """One learnware, every stored file of it checked first (the model too: info describes
    a learnware that can be used). Raises :class:`NotFoundError` for an unknown id and
    :class:`MarketError` for damage."""
    from ..market.store import Market

    mk = Market.open(market)
    man = mk.manifest(lw_id)
    rec = mk.record(lw_id)
    sp = mk.spec(lw_id)
    mk.check_files(lw_id)        # the model too: info describes a learnware that can be used
    return InfoResult(lw_id, man.island_id(), man.to_dict(), rec,
                      {"k": sp.rkme.k, "n_rows": sp.rkme.n_rows,
                       "approx_error": sp.rkme.approx_error,
                       "metric_digest": sp.rkme.metric.digest(),
                       "output_source": sp.output_source})


def market_world(market: str | Path) -> WorldResult:
    """The market's islands and how it measures each feature (``lw market info``)."""
    from ..market.index import load_index
    from ..market.store import Market
    from ..market.world import (feature_scales, founders, groups, links, misaligned,
                                output_scales)

    mk = Market.open(market)
    islands = mk.islands()
    counts, notes = {}, []
    try:
        idx = load_index(mk)
        counts = {i: idx.count(i) for i in idx.islands()} if idx is not None else None
    except MarketError as exc:
        notes.append(f"the index is damaged ({exc.message}); counted learnwares/ directly")
        counts = None
    if counts is None:
        counts = {}
        for i in mk.ids():
            iid = mk.manifest(i).island_id()
            counts[iid] = counts.get(iid, 0) + 1
    bad = misaligned(islands)
    rows = [{"id": i.id, "task": i.key["task"], "objective": i.key["objective"],
             "features": list(i.key["features"]), "outputs": list(i.key["outputs"]),
             "learnwares": counts.get(i.id, 0), "created_at": i.created_at,
             "first_learnware": i.first_learnware, "metric_digest": i.metric.digest(),
             "gamma": i.metric.gamma, "misaligned": bad.get(i.id, [])}
            for i in founders(islands)]
    return WorldResult(rows,
                       {f: {"scale": m.scale, "island": m.island}
                        for f, m in sorted(feature_scales(islands).items())},
                       {o: {"scale": m.scale, "island": m.island}
                        for o, m in sorted(output_scales(islands).items())}, bad,
                       [{**ln, "learnwares": counts.get(ln["to"], 0)} for ln in links(islands)],
                       groups(islands), notes)


def market_refresh(market: str | Path, *, device: str | None = None, force: bool = False,
                   trust: bool = False, n_anchors: int | None = None, jobs: int | None = None,
                   scheduler=None, progress=None, reprobe: str | None = None,
                   recheck: bool = False) -> RefreshResult:
    """Rebuild the derived data: the search index and each island's anchors.

    Idempotent and incremental: an unchanged market (the same learnware ids and islands as
    the derived data records) reads no learnware, writes nothing (``changed`` is false) and
    takes no lock, so it works on a read-only market. Anchors run each learnware new to an
    island on the island's stored probe inputs (:func:`lwcli.market.anchors.plan_anchors`);
    ``reprobe`` (a reason, recorded) draws every island's probes again and runs every model.
    Pickle/joblib learnwares join only with ``trust``. ``force`` rebuilds both into new
    generations and switches to them atomically (the repair for damaged derived data).

    The index's islands and the anchors' model runs are pieces of one executor
    (:func:`lwcli.executor.open_executor`: ``jobs`` local processes or the Dask cluster at
    ``scheduler``, default ``LW_JOBS``/``LW_SCHEDULER``, else here), started only when there
    is something to compute; what is written is the same bytes whichever ran them.
    ``progress(stage, done, total)`` is told as pieces finish. ``recheck`` runs QA again
    on every stored learnware in this environment, through the same executor, and reports
    what no longer passes (``recheck``; records are never changed).
    """
    from ..device import resolve_device
    from ..executor import open_executor
    from ..faults import point
    from ..market.checks import recheck_learnwares
    from ..market.index import build_index, index_fresh
    from ..market.store import Market, current_generation_in

    if n_anchors is not None and n_anchors < 1:
        raise UsageError(f"--anchors must be >= 1, got {n_anchors}", "pass a positive number")
    if reprobe is not None and not reprobe.strip():
        raise UsageError("--reprobe needs a reason, got an empty one",
                         'say why the probes must be drawn again, e.g. --reprobe "new sites"')
    mk = Market.open(market)
    dev = resolve_device(device)
    ids = mk.ids()
    with open_executor(jobs, scheduler, deferred=True) as ex:
        if index_fresh(mk, ids) and not force and not mk.needs_recovery():
            gen, changed = current_generation_in(mk.layout.index), False   # nothing to write
        else:
            def index() -> tuple[str, bool]:
                point("refresh:locked", mk.root)
                built = build_index(mk, dev, force=force, executor=ex, progress=progress)
                point("refresh:indexed", mk.layout.index)
                return built

            gen, changed = mk.transact(index, device=dev)
            ids = mk.ids()

        anchors = _refresh_anchors(mk, ids, dev, force=force, trust=trust,
                                   n_anchors=n_anchors, reprobe=reprobe, executor=ex,
                                   progress=progress)
        checked = recheck_learnwares(mk, mk.ids(), trust=trust, executor=ex,
                                     progress=progress) if recheck else None
    if changed or anchors["changed"]:
        mk.collect_stale_generations()
    return RefreshResult(gen, changed or anchors["changed"], changed, len(ids),
                         len(mk.islands()), anchors, checked)


def _refresh_anchors(mk, ids, dev, *, force, trust, n_anchors, reprobe, executor,
                     progress) -> dict:
    """The anchors' part of a refresh: planned without the writers' lock (running models
    can take a while; learnwares are immutable and a plan's name is a digest of the members
    it used), published under it; planned again there if another refresh published first."""
    from ..faults import crash_point
    from ..market.anchors import plan_anchors, publish_anchors
    from ..market.store import current_generation_in

    def plan(ids=None):
        return plan_anchors(mk, trust=trust, n_anchors=n_anchors, force=force,
                            reprobe=reprobe, executor=executor, progress=progress, ids=ids)

    first = plan(ids)
    crash_point("refresh:planned")
    if not first.changed:
        return publish_anchors(mk, first, force=force)    # unchanged: writes nothing

    def publish() -> dict:
        p = first if current_generation_in(mk.layout.anchors, strict=False) == first.base \
            else plan()
        published = publish_anchors(mk, p, force=force)
        crash_point("refresh:published")
        return published

    return mk.transact(publish, device=dev)


def market_verify(market: str | Path, *, device: str | None = None) -> VerifyResult:
    """Check hashes, manifests, specs and the index (:func:`lwcli.market.checks.verify_market`);
    damage is reported in ``problems``, not raised."""
    from ..device import resolve_device
    from ..market.checks import verify_market
    from ..market.store import Market

    rep = verify_market(Market.open(market), resolve_device(device))
    return VerifyResult(rep.checked, list(rep.problems), list(rep.warnings))
