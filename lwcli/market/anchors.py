"""Derived anchor sets: built per island on ``lw market refresh``, read by ``lw anchor-eval``
and ``lw search --anchor-report``.

    anchors/CURRENT                  names the live generation
    anchors/gen-<digest>/anchors.json   per island: members, anchors, probe settings, skipped
    anchors/gen-<digest>/<island>.outputs.npy      (N, P, C) float32 outputs on the probes
    anchors/gen-<digest>/<island>.<distance>.npy   (N, A) distances from members to anchors

A generation's name is a digest of what it was built from (the islands' members — content
ids, so any change of a model or spec changes it — and the settings), so refreshing an
unchanged market writes nothing. Models are loaded by format exactly as in submit: a pickle or
joblib learnware is included only with ``trust=True`` and is otherwise listed as skipped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine.anchors import choose_anchors, default_n_anchors, distances, probe_inputs
from ..errors import LwError, MarketError, NotFoundError
from .layout import (ANCHOR_OUTPUTS, ANCHORS, ANCHORS_JSON, CURRENT, anchor_distances_file,
                     generation_digest, generation_name, island_file)
from .manifest import TRUST_FORMATS
from .store import (Market, current_generation_in, publish_generation, read_current,
                    save_npy_synced, sha256, sha256_file, write_file_synced)

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


def _members(market: Market, trust: bool, islands):
    """(island -> member ids, skipped entries, id -> manifest) of the learnwares to run."""
    groups: dict[str, list[str]] = {}
    skipped = []
    manifests = {}
    for lw_id in market.ids():
        man = manifests[lw_id] = market.manifest(lw_id)
        if man.island_id() not in islands:   # its island was created after we read the config:
            continue                         # it joins at the next refresh
        if man.model_format in TRUST_FORMATS and not trust:
            skipped.append({"id": lw_id, "island": man.island_id(),
                            "reason": f"{man.model_format} model: needs --trust to load"})
            continue
        groups.setdefault(man.island_id(), []).append(lw_id)
    return {k: sorted(v) for k, v in sorted(groups.items())}, skipped, manifests


def _digest(groups: dict[str, list[str]], params: dict) -> str:
    h = hashlib.sha256(f"lw-anchors-{ANCHORS_FORMAT}\n".encode())
    h.update(json.dumps(params, sort_keys=True).encode())
    for iid, ids in groups.items():
        h.update(f"\nisland {iid} {','.join(ids)}".encode())
    return generation_name(h.hexdigest())


def probe_outputs(market: Market, ids: list[str], X: np.ndarray, trust: bool, manifests,
                  executor=None, progress=None):
    """Every learnware's outputs on the probes: (N, P, C), plus the ids that failed.

    The ids are cut into chunks (:func:`lwcli.executor.chunks`), each one piece of
    ``executor`` (default: here). In a piece the models run contained (one child process
    for the chunk, :mod:`lwcli.market.contained`): a model that crashes, hangs or misbehaves
    is listed as failed (skipped), never run in lw's own process."""
    from ..executor import InProcess, chunks, counting

    ex = executor or InProcess()
    parts = chunks(ids, ex.width)
    island = manifests[ids[0]].island_id() if ids else ""
    results = ex.run(_outputs_piece, [(str(market.root.resolve()), part, X, trust)
                                      for part in parts],
                     counting(progress, f"anchors: {island} ({len(ids)} models)", len(parts)))
    got, failed = {}, []
    for part, res in zip(parts, results):
        if isinstance(res, LwError):          # the whole piece was lost (its worker died)
            failed += [{"id": i, "island": manifests[i].island_id(), "reason": res.message}
                       for i in part]
            continue
        for lw_id, out in res:
            if isinstance(out, str):
                failed.append({"id": lw_id, "island": manifests[lw_id].island_id(),
                               "reason": out})
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
    """A computed anchor generation, ready to publish (``arrays`` empty when unchanged)."""

    name: str
    doc: dict
    arrays: dict
    changed: bool


def plan_anchors(market: Market, *, trust: bool = False, n_anchors: int | None = None,
                 force: bool = False, executor=None, progress=None) -> AnchorPlan:
    """Choose each island's anchors: runs every learnware on the island's probes.

    Needs no lock: learnwares are immutable and the generation's name is a digest of the
    members it was computed from.
    """
    market.reload()
    islands = market.islands()
    groups, skipped, manifests = _members(market, trust, islands)
    params = {"n_probes": ANCHOR_PROBES, "seed": PROBE_SEED, "noise": PROBE_NOISE,
              "n_anchors": n_anchors or "auto"}
    name = _digest(groups, params)
    lay = market.layout
    cur = current_generation_in(lay.anchors, strict=False)
    if not force and cur is not None and generation_digest(cur) == name:
        try:
            doc = json.loads((lay.anchors_generation(cur) / ANCHORS_JSON).read_text())
            return AnchorPlan(cur, doc, {}, False)
        except (OSError, ValueError):
            pass                 # damaged: build it again (under a fresh name, see publish)
    doc = {"format": ANCHORS_FORMAT, "generation": name, "params": params, "islands": {},
           "skipped": list(skipped)}
    arrays: dict[str, np.ndarray] = {}
    for iid, ids in groups.items():
        isl = islands[iid]
        X = probe_inputs([market.spec(i).rkme for i in ids], ANCHOR_PROBES, PROBE_SEED,
                         PROBE_NOISE)
        outs, kept, failed = probe_outputs(market, ids, X, trust, manifests, executor,
                                           progress)
        doc["skipped"] += failed
        if outs is None:
            continue
        kinds = distance_kinds(isl.key["task"])
        k = min(n_anchors or default_n_anchors(len(kept)), len(kept))
        med = choose_anchors(outs, kinds[0], k, seed=PROBE_SEED)
        anchors = [kept[j] for j in med.index]
        arrays[island_file(iid, ANCHOR_OUTPUTS)] = outs.astype(np.float32)
        for kind in kinds:
            # rounded so that rebuilding on another machine gives the same bytes
            arrays[anchor_distances_file(iid, kind)] = np.round(distances(outs, outs[med.index], kind), 9)
        doc["islands"][iid] = {
            "task": isl.key["task"], "objective": isl.key["objective"],
            "members": kept, "anchors": anchors, "anchor_set": anchor_set_id(iid, anchors),
            "distances": list(kinds), "cluster_sizes": np.bincount(med.assignment).tolist(),
            "n_probes": int(X.shape[0]),
            "files": {f: npy_sha256(a) for f, a in arrays.items()
                      if f.startswith(island_file(iid, ""))}}
    return AnchorPlan(name, doc, arrays, True)


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
    return {"generation": name, "changed": plan.changed, **_summary(plan.doc)}


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
    hint = (f"run lw market refresh --market {market.root} to choose anchors (with --trust "
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
