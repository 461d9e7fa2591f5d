"""Derived anchor sets: built per island on ``lw market refresh``, read by ``lw anchor-eval``
and ``lw search --anchor-report``.

    anchors/CURRENT                  names the live generation
    anchors/gen-<digest>/anchors.json   per island: members, anchors, probes, skipped; source
    anchors/gen-<digest>/<island>.probes.npy       (P, d) float64 probe inputs
    anchors/gen-<digest>/<island>.outputs.npy      (N, P, C) float32 outputs on the probes
    anchors/gen-<digest>/<island>.<distance>.npy   (N, A) distances from members to anchors

A generation's name is a digest of what it was built from (the islands' members — content
ids, so any change of a model or spec changes it — the settings and each island's probes);
``anchors.json`` records a digest of the market's ids and islands (``source``), so refreshing
an unchanged market reads no learnware and writes nothing. An island's probes stay the same
across membership changes (:func:`plan_anchors`), so a new learnware is the only model that
runs. Models are loaded by format exactly as in submit: a pickle or joblib learnware is
included only with ``trust=True`` and is otherwise listed as skipped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine.anchors import choose_anchors, default_n_anchors, distances, probe_inputs
from ..errors import LwError, MarketError, NotFoundError
from .layout import (ANCHOR_OUTPUTS, ANCHOR_PROBE_INPUTS, ANCHORS, ANCHORS_JSON, CURRENT, anchor_distances_file,
                     generation_digest, generation_name, island_file)
from .manifest import TRUST_FORMATS
from .store import (Market, current_generation_in, publish_generation, read_current,
                    save_npy_synced, sha256, sha256_file, stored_json, write_file_synced)

ANCHORS_FORMAT = 1
#: probe inputs each learnware runs on to choose anchors (QA uses its own, fewer)
ANCHOR_PROBES = 512
PROBE_SEED = 0
PROBE_NOISE = 0.1
REBUILD = "rebuild them with lw market refresh --force"


def npy_sha256(arr: np.ndarray) -> str:
    """The sha256 of the bytes ``np.save`` writes for ``arr`` (what the file will hold)."""
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return sha256(buf.getvalue())


def distance_kinds(task: str) -> tuple[str, ...]:
    """The distances stored for a task; the first picks the anchors."""
    return ("disagreement",) if task == "classification" else ("rms", "mae")


def anchor_set_id(island: str, anchors: list[str]) -> str:
    """Names one island's anchors: a report stays valid while the anchors stay the same."""
    h = hashlib.sha256(f"{island}\n{','.join(anchors)}".encode()).hexdigest()
    return "as-" + h[:16]


def _members(market: Market, trust: bool, islands, ids):
    """(island -> member ids, skipped entries) of the learnwares ``ids``. Their islands and
    model formats come from the live index when it is fresh (no learnware is read: the
    index's catalog rows hold both), else from their manifests."""
    from .index import index_fresh, load_index

    rows = None
    try:
        if index_fresh(market, ids):
            idx = load_index(market)
            rows = {r["id"]: (r["island"], r["model_format"])
                    for iid in idx.islands() for r in idx.iter_summaries(iid)}
    except MarketError:
        rows = None                  # a damaged index: the manifests say it as well
    groups: dict[str, list[str]] = {}
    skipped = []
    for lw_id in ids:
        if rows is not None and lw_id in rows:
            iid, fmt = rows[lw_id]
        else:
            man = market.manifest(lw_id)
            iid, fmt = man.island_id(), man.model_format
        if iid not in islands:               # its island was created after we read the config:
            continue                         # it joins at the next refresh
        if fmt in TRUST_FORMATS and not trust:
            skipped.append({"id": lw_id, "island": iid,
                            "reason": f"{fmt} model: needs --trust to load"})
            continue
        groups.setdefault(iid, []).append(lw_id)
    return {k: sorted(v) for k, v in sorted(groups.items())}, skipped


def _digest(groups: dict[str, list[str]], params: dict, probes: dict[str, str]) -> str:
    """The generation's name: a digest of its members, settings and each island's probes."""
    h = hashlib.sha256(f"lw-anchors-{ANCHORS_FORMAT}\n".encode())
    h.update(json.dumps(params, sort_keys=True).encode())
    for iid, ids in groups.items():
        h.update(f"\nisland {iid} {probes.get(iid, '')} {','.join(ids)}".encode())
    return generation_name(h.hexdigest())


def anchor_params(n_anchors: int | None = None) -> dict:
    """The settings an anchor generation records (and is named by)."""
    return {"n_probes": ANCHOR_PROBES, "seed": PROBE_SEED, "noise": PROBE_NOISE,
            "n_anchors": n_anchors or "auto"}


def anchors_source(islands, ids, trust: bool, params: dict) -> str:
    """What an anchor generation is computed from, as a digest (see
    :func:`lwcli.market.index.source_digest`), with the settings: equal means unchanged."""
    from .index import source_digest

    canon = json.dumps({"params": params, "trust": bool(trust)}, sort_keys=True)
    return hashlib.sha256(f"{source_digest(islands, ids)}\n{canon}".encode()).hexdigest()


def _stored_doc(market: Market, name: str | None) -> dict | None:
    """The anchors.json of generation ``name`` as stored (None: none, or unreadable)."""
    doc = None if name is None else \
        stored_json(market.layout.anchors_generation(name) / ANCHORS_JSON)
    return doc if doc is not None and isinstance(doc.get("islands"), dict) else None


def _stored_probes(market: Market, name: str | None, doc: dict | None, iid: str, dim: int):
    """An island's probes and its members' outputs on them from the live generation:
    ``(probes (P, d), {id: outputs (P, C) float32}, probes entry)``, or a sentence saying why
    they cannot be used (then the probes are drawn again)."""
    entry = (doc or {}).get("islands", {}).get(iid)
    if not isinstance(entry, dict):
        return "the island's first anchors"
    info = entry.get("probes")
    if not isinstance(info, dict):
        return "the anchors were built by an lw that did not keep their probes"
    path = market.layout.anchors_generation(name)
    files = entry.get("files", {})
    arrays = {}
    for f in (island_file(iid, ANCHOR_PROBE_INPUTS), island_file(iid, ANCHOR_OUTPUTS)):
        try:
            if sha256_file(path / f) != files.get(f):
                return f"the stored {f} does not match its recorded sha256"
            arrays[f] = np.load(path / f, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            return f"the stored {f} is unreadable ({exc})"
    X, outs = arrays[island_file(iid, ANCHOR_PROBE_INPUTS)], arrays[island_file(iid, ANCHOR_OUTPUTS)]
    members = entry.get("members", [])
    if X.ndim != 2 or X.shape[1] != dim or outs.ndim != 3 or outs.shape[:2] != \
            (len(members), X.shape[0]):
        return f"the stored probes {X.shape} and outputs {outs.shape} do not fit the island"
    return X, dict(zip(members, outs)), info


def probe_outputs(market: Market, ids: list[str], X: np.ndarray, trust: bool, island: str,
                  executor=None, progress=None):
    """Every learnware's outputs on the probes: (N, P, C), plus the ids that failed.

    The ids are cut into chunks (:func:`lwcli.executor.chunks`), each one piece of
    ``executor`` (default: here). In a piece the models run contained (one child process
    for the chunk, :mod:`lwcli.market.contained`): a model that crashes, hangs or misbehaves
    is listed as failed (skipped), never run in lw's own process."""
    from ..executor import InProcess, chunks, counting

    ex = executor or InProcess()
    parts = chunks(ids, ex.width)
    results = ex.run(_outputs_piece, [(market.location, part, X, trust)
                                      for part in parts],
                     counting(progress, f"anchors: {island} ({len(ids)} models)", len(parts)))
    got, failed = {}, []
    for part, res in zip(parts, results):
        if isinstance(res, LwError):          # the whole piece was lost (its worker died)
            failed += [{"id": i, "island": island, "reason": res.message}
                       for i in part]
            continue
        for lw_id, out in res:
            if isinstance(out, str):
                failed.append({"id": lw_id, "island": island, "reason": out})
            else:
                got[lw_id] = out
    kept = [i for i in ids if i in got]
    order = {lw_id: n for n, lw_id in enumerate(ids)}
    failed.sort(key=lambda f: order[f["id"]])
    return (np.stack([got[i] for i in kept]) if kept else None), kept, failed


def _outputs_piece(job: tuple) -> list[tuple[str, object]]:
    """One chunk of learnwares run on the probes, contained, in whatever process the executor
    chose: ``(id, outputs array or the reason it failed)`` for each."""
    from ..settings import qa_timeout
    from .contained import Item, run_contained

    root, ids, X, trust = job
    market = Market.open(root, recover=False)
    items, item_ids, out = [], [], {}
    for lw_id in ids:
        try:
            man = market.manifest(lw_id)
            items.append(Item(market.model_bytes(lw_id), man.model_format, man.features,
                              man.task, man.outputs, X, mode="outputs", id=lw_id))
            item_ids.append(lw_id)
        except LwError as exc:
            out[lw_id] = exc.message
    results = run_contained(items, trust=trust, timeout=qa_timeout()) if items else []
    for lw_id, res in zip(item_ids, results):
        out[lw_id] = res.message if isinstance(res, LwError) else res
    return [(lw_id, out[lw_id]) for lw_id in ids]


@dataclass
class AnchorPlan:
    """A computed anchor generation, ready to publish (``arrays`` empty when unchanged);
    ``ran``: how many models ran on probes to compute it."""

    name: str
    doc: dict
    arrays: dict
    changed: bool
    ran: int = 0
    base: str | None = None     # the live generation it was planned from


def plan_anchors(market: Market, *, trust: bool = False, n_anchors: int | None = None,
                 force: bool = False, reprobe: str | None = None, executor=None,
                 progress=None, ids=None) -> AnchorPlan:
    """Choose each island's anchors from its members' outputs on the island's probes.

    Needs no lock: learnwares are immutable and the generation's name is a digest of the
    members, settings and probes it was computed from.

    Incremental: unchanged (the same learnware ids ``ids``, default the market's, islands and
    settings as the live generation records) reads no learnware and runs nothing. Otherwise
    an island keeps its stored probes, so only learnwares new to it run on them (one per
    submit, not the island's N); the others' outputs are carried over, and a model that failed
    is not run again. The anchors are then chosen again from all the outputs. The probes are
    drawn again, every member run, only for a new island, when the stored ones cannot be used
    (the reason is recorded), or when ``reprobe`` gives a reason. ``force`` runs every model
    again on the same probes (the repair; a full rebuild gives what the increments gave).
    """
    market.reload()
    islands = market.islands()
    ids = market.ids() if ids is None else list(ids)
    params = anchor_params(n_anchors)
    source = anchors_source(islands, ids, trust, params)
    cur = current_generation_in(market.layout.anchors, strict=False)
    stored = _stored_doc(market, cur)
    if not force and reprobe is None and stored is not None and stored.get("source") == source:
        return AnchorPlan(cur, stored, {}, False, base=cur)
    groups, skipped = _members(market, trust, islands, ids)
    failed_before = {f["id"]: f for f in (stored or {}).get("skipped", [])
                     if f.get("failed") and not force}
    doc = {"format": ANCHORS_FORMAT, "params": params, "source": source, "islands": {},
           "skipped": list(skipped)}
    arrays: dict[str, np.ndarray] = {}
    probe_sha, ran = {}, 0
    for iid, members in groups.items():
        isl = islands[iid]
        old = _stored_probes(market, cur, stored, iid, isl.metric.n_inputs) \
            if reprobe is None else reprobe
        if isinstance(old, tuple):
            X, known, info = old
            before = failed_before
        else:
            X = probe_inputs([market.spec(i).rkme for i in members], ANCHOR_PROBES,
                             PROBE_SEED, PROBE_NOISE)
            known, info, before = {}, {"reason": old, "drawn_from": len(members)}, {}
        if force:
            known = {}
        run = [i for i in members if i not in known and i not in before]
        outs, new, failed = probe_outputs(market, run, X, trust, iid, executor, progress)
        ran += len(run)
        known.update(zip(new, outs.astype(np.float32)) if outs is not None else [])
        doc["skipped"] += [before[i] for i in members if i in before] + \
            [{**f, "failed": True} for f in failed]
        kept = [i for i in members if i in known]
        if kept:
            probe_sha[iid] = _island_anchors(doc, arrays, isl, iid, kept, known, X, info,
                                             n_anchors)
    doc["skipped"].sort(key=lambda f: (f["island"], f["id"]))
    doc["generation"] = name = _digest(groups, params, probe_sha)
    return AnchorPlan(name, doc, arrays, True, ran, cur)


def _island_anchors(doc: dict, arrays: dict, isl, iid: str, kept: list[str], known: dict,
                    X: np.ndarray, info: dict, n_anchors: int | None) -> str:
    """Choose one island's anchors from its members' outputs; fill its arrays and its entry
    of ``doc``. Returns the probes' sha256."""
    outs = np.stack([known[i] for i in kept]).astype(np.float32)
    kinds = distance_kinds(isl.key["task"])
    k = min(n_anchors or default_n_anchors(len(kept)), len(kept))
    med = choose_anchors(outs, kinds[0], k, seed=PROBE_SEED)
    anchors = [kept[j] for j in med.index]
    X = np.ascontiguousarray(X, dtype=np.float64)
    arrays[island_file(iid, ANCHOR_PROBE_INPUTS)] = X
    arrays[island_file(iid, ANCHOR_OUTPUTS)] = outs
    for kind in kinds:
        # rounded so that rebuilding on another machine gives the same bytes
        arrays[anchor_distances_file(iid, kind)] = np.round(
            distances(outs, outs[med.index], kind), 9)
    files = {f: npy_sha256(a) for f, a in arrays.items() if f.startswith(island_file(iid, ""))}
    doc["islands"][iid] = {
        "task": isl.key["task"], "objective": isl.key["objective"],
        "members": kept, "anchors": anchors, "anchor_set": anchor_set_id(iid, anchors),
        "distances": list(kinds), "cluster_sizes": np.bincount(med.assignment).tolist(),
        "n_probes": int(X.shape[0]),
        "probes": {**info, "sha256": files[island_file(iid, ANCHOR_PROBE_INPUTS)]},
        "files": files}
    return files[island_file(iid, ANCHOR_PROBE_INPUTS)]


def publish_anchors(market: Market, plan: AnchorPlan, *, force: bool = False) -> dict:
    """Make a planned generation live (caller holds the lock); a no-op when unchanged.

    A forced plan, or one that replaces a damaged generation of the same digest, goes to a
    fresh folder name: a live generation is never modified, ``CURRENT`` switches at once."""
    name = plan.name
    if plan.changed:
        def write(stage: Path) -> None:
            for fname, arr in plan.arrays.items():
                save_npy_synced(stage / fname, arr)
            write_file_synced(stage / ANCHORS_JSON,
                              (json.dumps(plan.doc, indent=1, sort_keys=True) + "\n").encode())

        lay = market.layout
        cur = current_generation_in(lay.anchors, strict=False)
        replace = force or (cur is not None and generation_digest(cur) == plan.name) or \
            lay.anchors_generation(plan.name).exists()
        name = publish_generation(lay.anchors, plan.name, write, lay.tmp, replace=replace).name
    return {"generation": name, "changed": plan.changed, "models_run": plan.ran,
            **_summary(plan.doc)}


def _summary(doc: dict) -> dict:
    return {"islands": {iid: {"anchors": d["anchors"], "members": len(d["members"])}
                        for iid, d in doc["islands"].items()},
            "skipped": doc.get("skipped", [])}


@dataclass(frozen=True)
class AnchorSet:
    """One island's anchors as stored by the live generation. Its arrays are checked when
    read (their recorded sha256, shape, finiteness): damage is a :class:`MarketError`."""

    island: str
    task: str
    objective: str
    members: list[str]
    anchors: list[str]
    anchor_set: str
    path: Path
    kinds: tuple = ()
    files: dict = field(default_factory=dict)

    def _array(self, fname: str, shape_ok, what: str) -> np.ndarray:
        f = self.path / fname
        want = self.files.get(fname)
        try:
            if want is not None and sha256_file(f) != want:
                raise MarketError(f"anchor file {f} is damaged: it does not match its recorded "
                                  "sha256", REBUILD)
            arr = np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            how = "missing" if isinstance(exc, FileNotFoundError) else f"unreadable ({exc})"
            raise MarketError(f"anchor file {f} is {how}", REBUILD) from exc
        if arr.dtype.kind != "f" or not shape_ok(arr.shape) or not np.all(np.isfinite(arr)):
            raise MarketError(f"anchor file {f} is damaged: expected {what} finite floats, got "
                              f"{arr.dtype} {arr.shape}", REBUILD)
        return arr

    def outputs(self) -> np.ndarray:
        n = len(self.members)
        return self._array(island_file(self.island, ANCHOR_OUTPUTS),
                           lambda s: len(s) == 3 and s[0] == n, f"({n}, probes, outputs)")

    def distances(self, kind: str) -> np.ndarray:
        shape = (len(self.members), len(self.anchors))
        fname = anchor_distances_file(self.island, kind)
        D = self._array(fname, lambda s: s == shape, str(shape))
        if (D < 0).any():
            raise MarketError(f"anchor file {self.path / fname} is "
                              "damaged: negative distances", REBUILD)
        return D


def load_anchor_set(market: Market, island: str) -> AnchorSet:
    """The live anchors of ``island``; a clear error when refresh has not built them, and a
    :class:`MarketError` (exit 5, with the repair) when what is stored is damaged."""
    lay = market.layout
    hint = (f"run lw market refresh --market {market.display} to choose anchors (with --trust "
            "if the island's models are pickled)")
    doc = name = None
    for _ in range(3):        # a concurrent refresh may swap generations between two reads
        name = read_current(lay.anchors)
        if name is None:
            raise NotFoundError("this market has no anchors yet", hint)
        path = lay.anchors_generation(name)
        try:
            raw = (path / ANCHORS_JSON).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise MarketError(f"{path / ANCHORS_JSON} is unreadable ({exc})", REBUILD) from exc
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:     # UnicodeDecodeError included
            raise MarketError(f"{path / ANCHORS_JSON} is corrupt ({exc})", REBUILD) from exc
        break
    if doc is None:
        raise MarketError(f"{ANCHORS}/{CURRENT} names {name}, which has no {ANCHORS_JSON}",
                          REBUILD)
    islands = doc.get("islands") if isinstance(doc, dict) else None
    if not isinstance(islands, dict):
        raise MarketError(f"{path / ANCHORS_JSON} is damaged: no islands table", REBUILD)
    d = islands.get(island)
    if d is None:
        raise NotFoundError(f"island {island} has no anchors", hint)
    try:
        members, anchors = list(d["members"]), list(d["anchors"])
        kinds = tuple(d["distances"])
        files = d.get("files", {})
        aset = AnchorSet(island, d["task"], d["objective"], members, anchors, d["anchor_set"],
                         path, kinds, files)
        ok = (all(isinstance(x, str) for x in members + anchors + list(kinds))
              and set(anchors) <= set(members) and len(set(members)) == len(members)
              and all(isinstance(x, str) for x in (aset.task, aset.objective, aset.anchor_set))
              and isinstance(files, dict) and anchors and kinds)
    except (KeyError, TypeError) as exc:
        raise MarketError(f"{path / ANCHORS_JSON}: island {island} is malformed ({exc!r})",
                          REBUILD) from exc
    if not ok:
        raise MarketError(f"{path / ANCHORS_JSON}: island {island} is malformed", REBUILD)
    for f in [island_file(island, ANCHOR_OUTPUTS), *(anchor_distances_file(island, k)
                                                      for k in kinds)]:
        if not (path / f).is_file():
            raise MarketError(f"anchor file {path / f} is missing", REBUILD)
    return aset


__all__ = ["plan_anchors", "publish_anchors", "AnchorPlan", "load_anchor_set", "AnchorSet",
           "anchor_set_id", "distance_kinds", "ANCHOR_PROBES"]
