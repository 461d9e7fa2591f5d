"""Use case: check a package and store it in a market."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import MarketError, MetricMismatchError


@dataclass(frozen=True)
class SubmitResult:
    """The learnware's id and island, whether it was ``"added"`` or already ``"exists"``,
    whether its island was created, and the quality check's record (empty when it existed)."""

    id: str
    island: str
    status: str                 # "added" | "exists"
    island_created: bool = False
    qa: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "island": self.island, "status": self.status,
                "island_created": self.island_created, "qa": self.qa}


def submit(package: str | Path, market: str | Path, *, trust: bool = False,
           timeout: float | None = None, device: str | None = None) -> SubmitResult:
    """Check a package and store it in the market. Idempotent: same package, same id.

    All or nothing, also across a crash: an intent record is written (under the writers'
    lock) before anything changes, and removed once the learnware is stored and indexed. A
    failure undoes what was done (the market is left byte for byte as it was); a submit that
    died is completed or undone by the next lw process that writes (or opens a writable
    market), or by the same submit again."""
    from ..device import resolve_device
    from ..faults import point
    from ..market.checks import quality_check
    from ..market.forkserver import warm_up
    from ..market.index import add_to_index
    from ..market.package import read_package
    from ..market.store import Market

    def indexed(mk) -> bool:
        return _indexed(mk, lw_id)

    mk = Market.open(market)
    pkg = read_package(package)
    lw_id = pkg.learnware_id
    iid = pkg.manifest.island_id()
    if mk.has(lw_id) and indexed(mk):
        if lw_id in mk.recovered.get("completed", ()):   # this submit died; opening finished it
            return SubmitResult(lw_id, iid, "added", qa=dict(mk.record(lw_id).get("qa", {})))
        return SubmitResult(lw_id, iid, "exists")
    warm_up()                           # QA will run the model: boot its server meanwhile
    metric = pkg.spec.rkme.metric
    stored = mk.has(lw_id)              # by a submit that died before indexing it
    qa = None
    if not stored:
        _check_metric(mk, pkg, iid, metric)
        # the model runs in a child with its scratch files outside the market
        qa = quality_check(pkg, trust=trust, timeout=timeout)
    dev = resolve_device(device)
    done: dict = {}                     # what an attempt that lost a race already did

    def store() -> SubmitResult:        # under the writers' lock, after recovery
        nonlocal qa
        point("submit:locked", mk.root)
        if mk.has(lw_id):               # completed by recovery, stored meanwhile, or by us
            if not indexed(mk):
                add_to_index(mk, lw_id, dev)
            rec = mk.record(lw_id)
            mine = stored or done.get("added", False)
            return SubmitResult(lw_id, iid, "added" if mine else "exists",
                                done.get("created", False),
                                qa=dict(rec.get("qa", {})) if mine else {})
        current = mk.islands().get(iid)
        _check_metric(mk, pkg, iid, metric)          # again: another submit may have won
        created = current is None
        if qa is None:                  # it was stored, and is gone again: check it after all
            qa = quality_check(pkg, trust=trust, timeout=timeout)
        added = _store(mk, pkg, qa, created, trust, dev)
        done.update(added=added, created=created)
        return SubmitResult(lw_id, iid, "added" if added else "exists", created, qa.to_dict())

    return mk.transact(store, device=dev)


def _check_metric(mk, pkg, iid: str, metric) -> None:
    """The spec's metric is its island's, or (founding one) measures every feature the
    market knows at the market's scale (:func:`lwcli.market.world.check_founding`)."""
    from ..market.world import check_founding

    islands = mk.islands()
    existing = islands.get(iid)
    if existing is None:
        check_founding(islands, iid, pkg.manifest.island_key(), metric, mk.display)
    elif existing.metric.digest() != metric.digest():
        raise MetricMismatchError(
            f"the package's specification was fitted with kernel metric {metric.digest()}, "
            f"but island {iid} uses {existing.metric.digest()}",
            f"rebuild the spec with lw spec ... --market {mk.display} and pack again")


def _indexed(mk, lw_id: str) -> bool:
    """Whether the market's index lists ``lw_id`` (a damaged index lists nothing)."""
    from ..market.index import load_index

    try:
        idx = load_index(mk)
        return idx is not None and idx.row_of(lw_id) is not None
    except MarketError:
        return False


def _store(mk, pkg, qa, created: bool, trust: bool, dev) -> bool:
    """Store the checked package under the writers' lock (the caller holds it): intent
    record, the island if ``created``, the learnware, its index row; on any failure undo
    it all (or leave the intent for the next writer's recovery). Whether it was added."""
    import contextlib

    from ..faults import crash_point, point
    from ..market.index import add_to_index
    from ..market.store import Island, utcnow

    lw_id, iid = pkg.learnware_id, pkg.manifest.island_id()
    before = mk.layout.market_toml.read_bytes() if created else None
    mk.write_intent(lw_id, iid, created)
    try:
        point("submit:intent", mk.layout.intent(lw_id))
        if created:
            mk.add_island(Island(iid, pkg.manifest.island_key(), pkg.spec.rkme.metric, utcnow(),
                                 lw_id))
            point("submit:island", mk.layout.market_toml)
        record = {"id": lw_id, "island": iid, "submitted_at": utcnow(),
                  "lw_version": __version__, "trusted_load": bool(trust), "qa": qa.to_dict()}
        added = mk.commit_learnware(lw_id, pkg.files, record)
        point("submit:committed", mk.layout.learnware(lw_id))
        add_to_index(mk, lw_id, dev)
        crash_point("submit:indexed")
    except BaseException:
        # leave the market as it was; if that fails too, the intent stays for recovery
        with contextlib.suppress(Exception):
            mk.undo_submit(lw_id, iid, created, before)
        raise
    mk.clear_intent(lw_id)
    return added
