"""Use cases: create, list, inspect, refresh and verify a market."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import MarketError, UsageError


def market_init(root: str | Path) -> dict:
    from ..market.store import Market

    mk = Market.init(root)
    return {"market": str(mk.root), "islands": len(mk.islands()), "learnwares": len(mk.ids())}


def market_ls(market: str | Path, *, island: str | None = None,
              tags: Sequence[str] = (), notes: list[str] | None = None) -> list[dict]:
    """The learnwares' catalog rows, from the index. A damaged index is not used: the rows
    are then read from ``learnwares/`` directly (every file checked against its recorded
    sha256), and a sentence saying so, with the repair, is appended to ``notes``."""
    from ..market.index import learnware_summary, load_index
    from ..market.store import Market

    mk = Market.open(market)
    if island:
        mk.island(island)             # an unknown island is "not found", not an empty list
    rows = None
    try:
        idx = load_index(mk)
        if idx is not None:
            rows = list(idx.iter_summaries(island if island and idx.has_island(island) else None))
    except MarketError as exc:
        if notes is not None:
            notes.append(f"the index is damaged ({exc.message}); listed learnwares/ directly: "
                         "repair the index with lw market refresh --force")
        rows = None
    if rows is None:
        rows = [learnware_summary(mk, i) for i in mk.ids()]
    if island:
        rows = [r for r in rows if r["island"] == island]
    if tags:
        rows = [r for r in rows if set(tags) <= set(r["tags"])]
    return sorted(rows, key=lambda r: (r["island"], r["name"], r["id"]))


def market_info(market: str | Path, lw_id: str) -> dict:
    from ..market.store import Market

    mk = Market.open(market)
    man = mk.manifest(lw_id)
    rec = mk.record(lw_id)
    sp = mk.spec(lw_id)
    mk.check_files(lw_id)        # the model too: info describes a learnware that can be used
    return {"id": lw_id, "island": man.island_id(), "manifest": man.to_dict(), "record": rec,
            "spec": {"k": sp.rkme.k, "n_rows": sp.rkme.n_rows,
                     "approx_error": sp.rkme.approx_error,
                     "metric_digest": sp.rkme.metric.digest(), "output_source": sp.output_source}}


def market_refresh(market: str | Path, *, device: str | None = None, force: bool = False,
                   trust: bool = False, n_anchors: int | None = None) -> dict:
    """Rebuild the derived data: the search index and each island's anchors.

    Idempotent: an unchanged market writes nothing (``changed`` is false) and takes no lock,
    so it works on a read-only market. Anchors run every learnware on the island's probe
    inputs; pickle/joblib learnwares join only with ``trust``. ``force`` rebuilds both into
    new generations and switches to them atomically (the repair for damaged derived data).
    """
    from ..device import resolve_device
    from ..faults import crash_point, point
    from ..market.anchors import plan_anchors, publish_anchors
    from ..market.index import build_index, index_state
    from ..market.store import Market, current_generation_in

    if n_anchors is not None and n_anchors < 1:
        raise UsageError(f"--anchors must be >= 1, got {n_anchors}", "pass a positive number")
    mk = Market.open(market)
    dev = resolve_device(device)
    *_, fresh = index_state(mk)
    if fresh and not force and not mk.needs_recovery():
        gen, changed = current_generation_in(mk.layout.index), False      # nothing to write
    else:
        with mk.writing(device=dev):
            point("refresh:locked", mk.root)
            gen, changed = build_index(mk, dev, force=force)
            point("refresh:indexed", mk.layout.index)
    # running every model for the anchors can take a while: not under the writers' lock
    # (learnwares are immutable; the plan's name is a digest of the members it used)
    plan = plan_anchors(mk, trust=trust, n_anchors=n_anchors, force=force)
    crash_point("refresh:planned")
    if plan.changed:
        with mk.writing(device=dev):
            anchors = publish_anchors(mk, plan, force=force)
            crash_point("refresh:published")
    else:
        anchors = publish_anchors(mk, plan, force=force)    # unchanged: writes nothing
    return {"generation": gen, "changed": changed or anchors["changed"],
            "index_changed": changed, "learnwares": len(mk.ids()),
            "islands": len(mk.islands()), "anchors": anchors}


def market_verify(market: str | Path, *, device: str | None = None):
    from ..device import resolve_device
    from ..market.checks import verify_market
    from ..market.store import Market

    mk = Market.open(market)
    return verify_market(mk, resolve_device(device))
