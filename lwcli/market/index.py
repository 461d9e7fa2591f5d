"""The derived index: per island, the stacked specifications, their sketches and a catalog.

An index *generation* is a folder ``index/<digest>/`` whose name is a digest of what it was
built from (the islands' metrics and every learnware's id and spec hash). ``index/CURRENT``
names the live one and is replaced atomically, so readers see one whole generation or the
previous one. Rebuilding an unchanged market computes the same digest and writes nothing:
``lw market refresh`` is idempotent and cheap to run from cron.

A generation holds, per island ``<iid>``::

    <iid>.ids.npy            the learnware ids, sorted (16-byte strings)
    <iid>.points.npy         (N, K, d) float32 scaled reduced points, zero-padded to the largest K
    <iid>.beta.npy           (N, K) float32 weights
    <iid>.self.npy           (2, N) float64 squared RKHS norms, joint and input-only
    <iid>.sketch.npy         (2, N, 2m) float32 random-Fourier-feature sketches (joint, inputs)
    <iid>.sketchnorm.npy     (2, N) float64 their squared norms
    <iid>.summaries.jsonl    one catalog row per learnware, in id order
    <iid>.offsets.npy        (N + 1) int64 byte offsets of those rows
    <iid>.tagptr.npy         (N + 1) int64 and ``<iid>.tagidx.npy`` int32: tags as CSR rows
                             into the island's tag vocabulary (in catalog.json)

and one small ``catalog.json`` (islands, counts, sketch seeds, tag vocabularies). Opening the
index reads only that file; arrays are memory-mapped when an island is searched and catalog
rows are read one by one, so opening a market of a million learnwares costs milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..engine.search import (IslandSketch, SpecStack, build_sketch, build_stack, island_basis)
from ..engine.sketch import SketchBasis
from ..errors import LwError, MarketError
from .layout import (CATALOG, CURRENT, INDEX, INDEX_ISLAND_FILES, SPEC_NAME, generation_digest,
                     generation_name, island_file)
from .store import (Island, Market, current_generation_in, publish_generation, read_current,
                    save_npy_synced, sha256_file, stored_json, write_file_synced)

INDEX_FORMAT = 2
REBUILD = "rebuild it with lw market refresh --force"
#: small files a reader checks against their recorded sha256 before first use
CHECKED_ON_LOAD = ("ids.npy", "offsets.npy", "tagptr.npy", "tagidx.npy")
#: the text fields every catalog row has (what ls and search print)
ROW_TEXT = ("name", "version", "description", "license", "island", "task", "model_format")
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def index_digest(islands: dict[str, Island], entries) -> str:
    """Digest of an index's inputs: island metrics and (id, island, spec sha256) triples."""
    h = hashlib.sha256(f"lw-index-{INDEX_FORMAT}\n".encode())
    for iid in sorted(islands):
        h.update(f"island {iid} {islands[iid].metric.digest()}\n".encode())
    for lw_id, iid, spec_sha in sorted(entries):
        h.update(f"lw {lw_id} {iid} {spec_sha}\n".encode())
    return generation_name(h.hexdigest())


SOURCE_FORMAT = 1


def source_digest(islands: dict[str, Island], ids) -> str:
    """What a market's derived data is computed from, as one sha256 hex digest: the islands'
    kernel metrics and the learnware ids. An id is the digest of its package's files and a
    stored learnware never changes, so equal digests mean the same inputs: a refresh decides
    "nothing changed" from a directory listing, without reading any learnware."""
    h = hashlib.sha256(f"lw-source-{SOURCE_FORMAT}\n".encode())
    for iid in sorted(islands):
        h.update(f"island {iid} {islands[iid].metric.digest()}\n".encode())
    h.update("\n".join(sorted(ids)).encode())
    return h.hexdigest()


def sketch_seed(island_id: str) -> int:
    """The island's sketch seed: fixed by its id, recorded in the catalog."""
    return int(hashlib.sha256(f"lw-sketch {island_id}".encode()).hexdigest()[:8], 16)


def learnware_summary(market: Market, lw_id: str, spec=None) -> dict:
    """The catalog row of one learnware (pass its parsed ``spec`` to avoid parsing it again)."""
    man = market.manifest(lw_id)
    rec = market.record(lw_id)
    spec = spec if spec is not None else market.spec(lw_id)
    return {
        "id": lw_id,
        "name": man.name,
        "version": man.version,
        "description": man.description,
        "license": man.license,
        "tags": list(man.tags),
        "island": man.island_id(),
        "task": man.task,
        "model_format": man.model_format,
        "k": spec.rkme.k,
        "approx_error": spec.rkme.approx_error,
        "agreement": rec.get("qa", {}).get("agreement"),
        "spec_sha256": rec["files"][SPEC_NAME],
        "submitted_at": rec.get("submitted_at"),
    }


@dataclass
class IslandTable:
    """What one island's part of a generation is written from (rows in id order)."""

    ids: list[str]
    summaries: list[dict]
    stack: SpecStack
    sketch: IslandSketch


def _tag_csr(summaries: Sequence[dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    vocab = sorted({t for s in summaries for t in s["tags"]})
    pos = {t: i for i, t in enumerate(vocab)}
    ptr = np.zeros(len(summaries) + 1, dtype=np.int64)
    idx = []
    for r, s in enumerate(summaries):
        tags = sorted({pos[t] for t in s["tags"]})
        idx.extend(tags)
        ptr[r + 1] = ptr[r] + len(tags)
    return vocab, ptr, np.asarray(idx, dtype=np.int32)


def _write_island(stage: Path, iid: str, t: IslandTable) -> dict:
    """Write one island's files into ``stage``; returns its catalog entry."""
    n = len(t.ids)
    if not (t.stack.n == t.sketch.n == len(t.summaries) == n):
        raise MarketError(f"island {iid}: {n} ids, {len(t.summaries)} rows, {t.stack.n} specs "
                          f"and {t.sketch.n} sketches", REBUILD)
    def at(name: str) -> Path:
        return stage / island_file(iid, name)

    save_npy_synced(at("ids.npy"), np.asarray(t.ids, dtype="S16"))
    save_npy_synced(at("points.npy"), np.ascontiguousarray(t.stack.points))
    save_npy_synced(at("beta.npy"), np.ascontiguousarray(t.stack.beta))
    save_npy_synced(at("self.npy"), np.stack([t.stack.self_xy, t.stack.self_x]))
    save_npy_synced(at("sketch.npy"), np.stack([t.sketch.xy, t.sketch.x]))
    save_npy_synced(at("sketchnorm.npy"), np.asarray(t.sketch.norms, np.float64))
    offsets = np.zeros(n + 1, dtype=np.int64)
    with open(at("summaries.jsonl"), "wb") as fh:
        for r, s in enumerate(t.summaries):
            line = (json.dumps(s, sort_keys=True, separators=(",", ":")) + "\n").encode()
            fh.write(line)
            offsets[r + 1] = offsets[r] + len(line)
        fh.flush()
        os.fsync(fh.fileno())
    save_npy_synced(at("offsets.npy"), offsets)
    vocab, ptr, idx = _tag_csr(t.summaries)
    save_npy_synced(at("tagptr.npy"), ptr)
    save_npy_synced(at("tagidx.npy"), idx)
    return {"count": n, "metric_digest": t.stack.metric.digest(),
            "sketch": t.sketch.basis.to_dict(), "tags": vocab,
            "files": {name: sha256_file(at(name)) for name in INDEX_ISLAND_FILES}}


@dataclass
class Index:
    """A loaded index generation. Opening reads ``catalog.json`` only; island arrays are
    memory-mapped on first use and catalog rows are read on demand.

    Before an island is first used its files are checked cheaply: all present, the small ones
    (ids, row offsets, tag arrays) against the sha256 the catalog records, and every array's
    dtype, shape and bounds against the catalog's count. Damage is a :class:`MarketError`
    (exit 5) naming the file and the repair, never a crash; ``lw market verify`` checks the
    rest (the large arrays' digests, and everything recomputed from the learnwares)."""

    path: Path
    catalog: dict
    islands_meta: dict[str, Island]
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def generation(self) -> str:
        return self.path.name

    def islands(self) -> list[str]:
        return sorted(self.catalog["islands"])

    def has_island(self, island: str) -> bool:
        return island in self.catalog["islands"]

    def count(self, island: str | None = None) -> int:
        isl = self.catalog["islands"]
        return int(isl[island]["count"]) if island else sum(int(v["count"]) for v in isl.values())

    def _file(self, island: str, name: str) -> Path:
        return self.path / island_file(island, name)

    def _damaged(self, island: str, name: str, what: str) -> MarketError:
        return MarketError(f"index file {self._file(island, name)} is damaged: {what}", REBUILD)

    def recorded_sha256(self, island: str) -> dict[str, str]:
        """The island's files' sha256 as the catalog records them (empty for an index written
        before lw recorded them)."""
        files = self.catalog["islands"][island].get("files")
        return files if isinstance(files, dict) else {}

    def _raw_load(self, island: str, name: str, mmap: str | None) -> np.ndarray:
        try:
            return np.load(self._file(island, name), mmap_mode=mmap, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            how = "missing" if isinstance(exc, FileNotFoundError) else f"unreadable ({exc})"
            raise MarketError(f"index file {self._file(island, name)} is {how}", REBUILD) from exc

    def check_island(self, island: str) -> None:
        """The cheap checks, once per island (see the class)."""
        key = (island, "checked")
        if key in self._cache:
            return
        n = self.count(island)
        recorded = self.recorded_sha256(island)
        for name in INDEX_ISLAND_FILES:
            f = self._file(island, name)
            if not f.is_file():
                raise MarketError(f"index file {f} is missing", REBUILD)
            if name in CHECKED_ON_LOAD and name in recorded and sha256_file(f) != recorded[name]:
                raise self._damaged(island, name, "it does not match its recorded sha256")
        arrays = {name: self._raw_load(island, name, "r") for name in INDEX_ISLAND_FILES
                  if name.endswith(".npy")}

        def need(name: str, ok: bool, what: str) -> None:
            if not ok:
                a = arrays[name]
                raise self._damaged(island, name, f"{what} (dtype {a.dtype}, shape {a.shape}; "
                                    f"the catalog counts {n} learnwares)")

        ids = arrays["ids.npy"]
        need("ids.npy", ids.dtype == np.dtype("S16") and ids.shape == (n,), "expected n ids")
        raw = np.asarray(ids).view(np.uint8)
        need("ids.npy", bool(np.isin(raw, _HEX).all()), "an id is not 16 hex digits")
        need("ids.npy", bool(n < 2 or (ids[1:] > ids[:-1]).all()), "ids are not sorted")
        size = self._file(island, "summaries.jsonl").stat().st_size
        off = arrays["offsets.npy"]
        need("offsets.npy", off.dtype.kind == "i" and off.shape == (n + 1,), "expected n+1 offsets")
        need("offsets.npy", int(off[0]) == 0 and int(off[-1]) == size
             and bool((np.diff(off) > 0).all()),
             f"offsets do not cut the {size}-byte summaries.jsonl into rows")
        ptr, idx = arrays["tagptr.npy"], arrays["tagidx.npy"]
        need("tagidx.npy", idx.dtype.kind == "i" and idx.ndim == 1, "expected a vector")
        need("tagptr.npy", ptr.dtype.kind == "i" and ptr.shape == (n + 1,) and int(ptr[0]) == 0
             and int(ptr[-1]) == len(idx) and bool((np.diff(ptr) >= 0).all()),
             "tag row pointers are out of bounds")
        vocab = self.catalog["islands"][island]["tags"]
        need("tagidx.npy", len(idx) == 0 or (int(idx.min()) >= 0 and int(idx.max()) < len(vocab)),
             f"tag numbers outside the island's {len(vocab)} tags")
        pts, beta = arrays["points.npy"], arrays["beta.npy"]
        isl = self.islands_meta[island]
        need("points.npy", pts.ndim == 3 and pts.shape[0] == n and pts.shape[2] == isl.metric.dim
             and pts.dtype.kind == "f", f"expected (n, K, {isl.metric.dim}) floats")
        need("beta.npy", beta.shape == pts.shape[:2] and beta.dtype.kind == "f",
             "expected (n, K) floats")
        for name in ("self.npy", "sketchnorm.npy"):
            need(name, arrays[name].shape == (2, n) and arrays[name].dtype.kind == "f",
                 "expected (2, n) floats")
        try:
            basis = SketchBasis.from_dict(self.catalog["islands"][island]["sketch"])
            width = 2 * int(basis.pairs)
        except (KeyError, TypeError, ValueError, LwError) as exc:
            raise MarketError(f"index catalog {self.path / CATALOG}: island {island}'s sketch "
                              f"settings are damaged ({exc})", REBUILD) from exc
        sk = arrays["sketch.npy"]
        need("sketch.npy", sk.shape == (2, n, width) and sk.dtype.kind == "f",
             f"expected (2, n, {width}) floats")
        self._cache[key] = True

    def _load(self, island: str, name: str, mmap: str | None = "c") -> np.ndarray:
        self.check_island(island)
        key = (island, name)
        if key not in self._cache:
            self._cache[key] = self._raw_load(island, name, mmap)
        return self._cache[key]

    def ids(self, island: str) -> np.ndarray:
        """The island's learnware ids in row order (a str array; ``.tolist()`` for a list)."""
        if not self.has_island(island):
            return np.empty(0, dtype="U16")
        key = (island, "ids-str")
        if key not in self._cache:
            self._cache[key] = self._load(island, "ids.npy", None).astype("U16")
        return self._cache[key]

    def stack(self, island: str) -> SpecStack:
        isl = self.islands_meta[island]
        selfs = self._load(island, "self.npy", None)
        return SpecStack(isl.metric, self._load(island, "points.npy"),
                         self._load(island, "beta.npy"), selfs[0], selfs[1])

    def sketch(self, island: str) -> IslandSketch:
        sk = self._load(island, "sketch.npy")
        basis = SketchBasis.from_dict(self.catalog["islands"][island]["sketch"])
        return IslandSketch(basis, sk[0], sk[1], self._load(island, "sketchnorm.npy", None))

    def _rows_file(self, island: str):
        """The island's catalog-row file, opened once: a generation that a refresh replaces
        (and deletes) afterwards stays readable through it."""
        self.check_island(island)
        key = (island, "summaries-fh")
        if key not in self._cache:
            try:
                self._cache[key] = open(self._file(island, "summaries.jsonl"), "rb")
            except OSError as exc:
                raise MarketError(f"index file {self._file(island, 'summaries.jsonl')} is "
                                  f"unreadable ({exc})", REBUILD) from exc
        return self._cache[key]

    def _row(self, island: str, r: int, line: bytes, lw_id: str) -> dict:
        """One catalog row, parsed and checked to be ``lw_id``'s and well-formed."""
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):      # UnicodeDecodeError included
            row = None
        if not (isinstance(row, dict) and row.get("id") == lw_id
                and all(isinstance(row.get(k), str) for k in ROW_TEXT)
                and isinstance(row.get("tags"), list)
                and all(isinstance(t, str) for t in row["tags"])):
            raise self._damaged(island, "summaries.jsonl",
                                f"row {r} is not a well-formed catalog row of learnware {lw_id}")
        return row

    def summaries(self, island: str, rows: Sequence[int]) -> list[dict]:
        """Catalog rows of the given row numbers of ``island``, in that order."""
        offsets = self._load(island, "offsets.npy", "r")
        ids = self.ids(island)
        fh = self._rows_file(island)
        out = []
        for r in rows:
            fh.seek(int(offsets[r]))
            out.append(self._row(island, r, fh.read(int(offsets[r + 1] - offsets[r])),
                                 str(ids[r])))
        return out

    def close(self) -> None:
        """Close the catalog-row files (the memory maps go with their arrays)."""
        for key, v in self._cache.items():
            if key[1] == "summaries-fh":
                v.close()
        self._cache.clear()

    def iter_summaries(self, island: str | None = None) -> Iterator[dict]:
        """Every catalog row, in id order. The whole file is read, so it is checked against its
        recorded sha256 too: a damaged file raises :class:`MarketError` at the latest after its
        last row (a caller that keeps the rows, as ``lw market ls`` does, never shows them)."""
        for iid in [island] if island else self.islands():
            if not self.has_island(iid):
                continue
            ids = self.ids(iid)
            h = hashlib.sha256()
            r = -1
            try:
                fh = open(self._file(iid, "summaries.jsonl"), "rb")
            except OSError as exc:
                raise MarketError(f"index file {self._file(iid, 'summaries.jsonl')} is "
                                  f"unreadable ({exc})", REBUILD) from exc
            with fh:
                for r, line in enumerate(fh):
                    h.update(line)
                    if r >= len(ids):
                        raise self._damaged(iid, "summaries.jsonl", "more rows than ids")
                    yield self._row(iid, r, line, str(ids[r]))
            if r + 1 != len(ids):
                raise self._damaged(iid, "summaries.jsonl", f"{r + 1} rows for {len(ids)} ids")
            want = self.recorded_sha256(iid).get("summaries.jsonl")
            if want is not None and h.hexdigest() != want:
                raise self._damaged(iid, "summaries.jsonl", "it does not match its recorded sha256")

    def row_of(self, lw_id: str) -> tuple[str, int] | None:
        """(island, row) of a learnware, by binary search in each island's sorted ids."""
        key = lw_id.encode()
        for iid in self.islands():
            ids = self._load(iid, "ids.npy", "r")
            r = int(np.searchsorted(ids, key))
            if r < len(ids) and ids[r] == key:
                return iid, r
        return None

    def summary(self, lw_id: str) -> dict | None:
        at = self.row_of(lw_id)
        return None if at is None else self.summaries(at[0], [at[1]])[0]

    def tag_mask(self, island: str, tags: Sequence[str]) -> np.ndarray:
        """Which learnwares of ``island`` carry every one of ``tags``."""
        n = self.count(island)
        vocab = {t: i for i, t in enumerate(self.catalog["islands"][island].get("tags", []))}
        if any(t not in vocab for t in tags):
            return np.zeros(n, dtype=bool)
        ptr = self._load(island, "tagptr.npy", "r")
        idx = self._load(island, "tagidx.npy", "r")
        owner = np.repeat(np.arange(n), np.diff(ptr))
        mask = np.ones(n, dtype=bool)
        for t in set(tags):
            has = np.zeros(n, dtype=bool)
            has[owner[idx == vocab[t]]] = True
            mask &= has
        return mask


@dataclass
class IslandView:
    """One island, ready to search: ids, stacked specs, sketch, and catalog-row access."""

    island: str
    ids: np.ndarray
    stack: SpecStack
    sketch: IslandSketch | None
    index: Index | None = None
    rows_cache: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summaries(self, rows: Sequence[int]) -> list[dict]:
        if self.index is not None:
            return self.index.summaries(self.island, rows)
        return [self.rows_cache[self.ids[r]] for r in rows]

    def tag_mask(self, tags: Sequence[str]) -> np.ndarray:
        if self.index is not None:
            return self.index.tag_mask(self.island, tags)
        want = set(tags)
        return np.array([want <= set(self.rows_cache[i]["tags"]) for i in self.ids], dtype=bool)


def island_table(market: Market, island: Island, ids: list[str], device=None,
                 specs: dict | None = None) -> IslandTable:
    """Stack, sketch and summarise the learnwares ``ids`` (sorted) of one island."""
    specs = specs if specs is not None else {i: market.spec(i) for i in ids}
    for i in ids:
        if specs[i].rkme.metric.digest() != island.metric.digest():
            raise MarketError(
                f"learnware {i}'s specification was fitted with kernel metric "
                f"{specs[i].rkme.metric.digest()}, its island {island.id} in market.toml has "
                f"{island.metric.digest()}: market.toml is damaged or was edited",
                "restore market.toml from a backup; lw market verify lists what disagrees")
    stack = build_stack([specs[i].rkme for i in ids], island.metric, device)
    sketch = build_sketch(stack, island_basis(island.metric, sketch_seed(island.id)), device)
    return IslandTable(list(ids), [learnware_summary(market, i, specs[i]) for i in ids], stack,
                       sketch)


def island_view(market: Market, iid: str, device=None) -> IslandView | None:
    """The island from the live index, or (no index yet, or a damaged one: a note says so)
    built from ``learnwares/``."""
    damage = None
    for attempt in range(3):
        try:
            idx = load_index(market)
        except MarketError as exc:
            damage = exc
            break
        if idx is None or not idx.has_island(iid):
            break
        try:     # map and open everything now: a later refresh cannot pull it away
            view = IslandView(iid, idx.ids(iid), idx.stack(iid), idx.sketch(iid), idx)
            idx._load(iid, "offsets.npy", "r")
            idx._rows_file(iid)
            return view
        except MarketError as exc:
            if attempt == 2 or current_generation(market) == idx.generation:
                damage = exc        # damaged, not replaced by a concurrent refresh
                break
    ids = sorted(i for i in market.ids() if market.manifest(i).island_id() == iid)
    if not ids:
        return None
    t = island_table(market, market.island(iid), ids, device)
    if damage is not None:
        note = (f"the index is damaged ({damage.message}); searched learnwares/ directly, "
                "which is slower: repair the index with lw market refresh --force")
    else:
        note = ("the market has no index for this island; run `lw market refresh` to speed "
                "search up")
    return IslandView(iid, np.asarray(t.ids, dtype="U16"), t.stack, t.sketch, None,
                      {s["id"]: s for s in t.summaries}, [note])


def island_references(market: Market, iid: str, device=None, limit: int = 64) -> list:
    """The input parts of (the first ``limit``, by id, of) the island's learnwares'
    specifications as :class:`lwcli.engine.conditional.Reference`s, from the index: what a
    user's features the island takes and she lacks are estimated from (a link, seed sec. 5)."""
    from ..engine.conditional import Reference

    view = island_view(market, iid, device)
    if view is None:
        return []
    isl = market.island(iid)
    m = isl.metric
    d = m.n_inputs
    scales = np.asarray(m.scales[:d], dtype=np.float64)
    out = []
    for i in range(min(limit, len(view.ids))):
        beta = np.asarray(view.stack.beta[i], dtype=np.float64)
        keep = beta > 0
        pts = np.asarray(view.stack.points[i][keep, :d], dtype=np.float64) * scales
        out.append(Reference(tuple(isl.key["features"]), pts, beta[keep] / beta[keep].sum(),
                             scales, float(m.gamma)))
    return out


def keep_ordinary_zeros(market: Market, src, device=None) -> None:
    """Tell ``src`` (:class:`lwcli.intake.Source`) which of its all-zero columns are data:
    those where 0 is an ordinary value of the feature in the specifications of the islands
    that take it (:func:`lwcli.engine.conditional.ordinary_zeros`). Reads the index only
    when the table has such a column."""
    from ..engine.conditional import ordinary_zeros

    cols = src.unmeasured()
    if not cols:
        return
    refs = [r for iid, isl in market.islands().items() if set(cols) & set(isl.key["features"])
            for r in island_references(market, iid, device)]
    src.keep_zeros(ordinary_zeros(refs, cols))


def publish_index(market: Market, tables: dict[str, IslandTable], *,
                  carry_from: "Index | None" = None, replace: bool = False) -> str:
    """Write a generation from ``tables`` (plus, hard-linked, every other island of
    ``carry_from``) and make it live. Returns its folder's name: the digest of its content,
    plus a unique suffix when ``replace`` (a forced rebuild)."""
    islands = market.islands()
    entries, meta = [], {}
    carried = [i for i in (carry_from.islands() if carry_from else []) if i not in tables]
    for iid, t in tables.items():
        entries += [(s["id"], iid, s["spec_sha256"]) for s in t.summaries]
    for iid in carried:
        entries += [(s["id"], iid, s["spec_sha256"]) for s in carry_from.iter_summaries(iid)]
        meta[iid] = carry_from.catalog["islands"][iid]
    digest = index_digest(islands, entries)

    def write(stage: Path) -> None:
        for iid, t in tables.items():
            meta[iid] = _write_island(stage, iid, t)
        for iid in carried:
            for name in INDEX_ISLAND_FILES:
                os.link(carry_from._file(iid, name), stage / island_file(iid, name))
        catalog = {"format": INDEX_FORMAT, "digest": digest, "learnwares": len(entries),
                   "source": source_digest(islands, [e[0] for e in entries]),
                   "islands": {k: meta[k] for k in sorted(meta)}}
        write_file_synced(stage / CATALOG,
                          (json.dumps(catalog, indent=1, sort_keys=True) + "\n").encode())

    lay = market.layout
    return publish_generation(lay.index, digest, write, lay.tmp, replace=replace).name


def current_generation(market: Market) -> str | None:
    return current_generation_in(market.layout.index)


def _check_catalog(market: Market, path: Path, catalog) -> dict:
    """The parsed catalog, its structure checked (what readers index into)."""
    where = path / CATALOG
    if not isinstance(catalog, dict):
        raise MarketError(f"index catalog {where} is damaged: not a JSON object", REBUILD)
    if catalog.get("format") != INDEX_FORMAT:
        raise MarketError(f"the index {path.name} has format {catalog.get('format')!r}; this "
                          f"lw reads format {INDEX_FORMAT}", REBUILD)
    islands = catalog.get("islands")
    known = market.islands()
    if not isinstance(islands, dict):
        raise MarketError(f"index catalog {where} is damaged: no islands table", REBUILD)
    for iid, meta in islands.items():
        ok = (iid in known and isinstance(meta, dict) and type(meta.get("count")) is int
              and meta["count"] >= 0 and isinstance(meta.get("sketch"), dict)
              and isinstance(meta.get("tags", []), list)
              and all(isinstance(t, str) for t in meta.get("tags", []))
              and isinstance(meta.get("files", {}), dict))
        if not ok:
            what = "is not in market.toml" if iid not in known else "has a malformed entry"
            raise MarketError(f"index catalog {where} is damaged: island {iid!r} {what}", REBUILD)
        if meta.get("metric_digest") != known[iid].metric.digest():
            # market.toml's kernel metric is not the one the island's specs were fitted with
            # and its index built with: ranking with it would be silently wrong
            raise MarketError(
                f"island {iid}'s kernel metric in market.toml ({known[iid].metric.digest()}) is "
                f"not the one its index was built with ({meta.get('metric_digest')}): "
                "market.toml is damaged or was edited",
                "restore market.toml from a backup; lw market verify lists what disagrees")
    return catalog


def load_index(market: Market) -> Index | None:
    """The live index, or None when the market has none (run ``lw market refresh``).
    A damaged one (``CURRENT``, ``catalog.json``) is a :class:`MarketError`."""
    name = None
    for _ in range(3):  # a concurrent writer may swap generations between our two reads
        name = read_current(market.layout.index)
        if name is None:
            return None
        path = market.layout.index_generation(name)
        try:
            raw = (path / CATALOG).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise MarketError(f"index catalog {path / CATALOG} is unreadable ({exc})",
                              REBUILD) from exc
        try:
            catalog = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:    # UnicodeDecodeError included
            raise MarketError(f"index catalog {path / CATALOG} is corrupt ({exc})",
                              REBUILD) from exc
        return Index(path, _check_catalog(market, path, catalog), market.islands())
    raise MarketError(f"{INDEX}/{CURRENT} names generation {name}, which has no {CATALOG}",
                      REBUILD)


def index_state(market: Market) -> tuple[dict, dict[str, list[str]], str, bool]:
    """What the index would be built from, without writing anything: (islands, island ->
    ids, digest, whether the live generation already has that digest)."""
    islands = market.islands()
    groups: dict[str, list[str]] = {}
    for i in market.ids():
        iid = market.manifest(i).island_id()
        if iid not in islands:
            raise MarketError(f"learnware {i} sits on island {iid}, which market.toml "
                              "does not record", "run lw market verify")
        groups.setdefault(iid, []).append(i)
    entries = [(i, iid, market.record(i)["files"][SPEC_NAME])
               for iid, ids in groups.items() for i in ids]
    digest = index_digest(islands, entries)
    cur = current_generation_in(market.layout.index, strict=False)
    fresh = cur is not None and generation_digest(cur) == digest and \
        (market.layout.index_generation(cur) / CATALOG).is_file()
    return islands, groups, digest, fresh


def _live_catalog(market: Market) -> dict | None:
    """The live generation's catalog as stored (None: no index, or unreadable)."""
    name = current_generation_in(market.layout.index, strict=False)
    return None if name is None else stored_json(market.layout.index_generation(name) / CATALOG)


def index_fresh(market: Market, ids: Sequence[str]) -> bool:
    """Whether the live index was built from exactly the learnwares ``ids`` (the market's,
    :meth:`Market.ids`) and the islands of ``market.toml``: decided from the source digest
    its catalog records (:func:`source_digest`), reading no learnware. An index written
    before lw recorded it counts as not fresh (the next refresh rewrites it once)."""
    catalog = _live_catalog(market)
    return (catalog is not None and catalog.get("format") == INDEX_FORMAT
            and catalog.get("source") == source_digest(market.islands(), ids))


def build_index(market: Market, device=None, *, force: bool = False,
                executor=None, progress=None) -> tuple[str, bool]:
    """Rebuild the index from ``learnwares/`` (caller holds the lock). Returns (generation,
    changed). Unchanged (same digest, ``force`` not given) writes nothing; ``force`` writes a
    new generation under a fresh name and switches ``CURRENT`` to it.

    Each island's table (stack, sketch, catalog rows) is one piece of ``executor``
    (:mod:`lwcli.executor`; default: here); the generation is written here.
    ``progress(stage, done, total)`` is told as islands finish."""
    from ..executor import InProcess, counting

    islands, groups, digest, fresh = index_state(market)
    if fresh and not force:
        if "source" in (_live_catalog(market) or {}):
            return current_generation_in(market.layout.index), False
        force = True      # written before lw recorded its source: once more, under a new name
    order = sorted(groups)
    dev = None if device is None else str(device)
    tables = (executor or InProcess()).run(
        _island_piece, [(market.location, islands[iid], sorted(groups[iid]), dev)
                        for iid in order], counting(progress, "index: islands", len(order)))
    for t in tables:
        if isinstance(t, LwError):
            raise t
    # the live generation has this digest but is damaged (else it would be fresh): a new name
    cur = current_generation_in(market.layout.index, strict=False)
    damaged = cur is not None and generation_digest(cur) == digest
    return publish_index(market, dict(zip(order, tables)), replace=force or damaged), True


def _island_piece(job: tuple) -> IslandTable:
    """One island's table, in whatever process the executor chose (the market is opened
    there for its learnwares only: no recovery, no lock; the island comes with the job, as
    the writer sees it)."""
    from ..device import resolve_device

    location, island, ids, device = job
    market = Market.open(location, recover=False)
    return island_table(market, island, ids, resolve_device(device) if device else None)


def add_to_index(market: Market, lw_id: str, device=None) -> str:
    """Insert one new learnware into the live index (caller holds the lock).

    Only its island's files are rewritten (its stack and sketch rows are computed for the new
    learnware alone); the others are hard-linked from the previous generation. Falls back to
    a full rebuild when there is no usable index.
    """
    try:
        idx = load_index(market)
    except MarketError:
        idx = None
    if idx is None:
        return build_index(market, device)[0]
    try:
        return _add_incremental(market, idx, lw_id, device)
    except MarketError:
        market.spec(lw_id)       # the new learnware itself damaged: that error, not a rebuild
        # the live index is damaged: what it holds cannot be carried over; rebuild it whole
        return build_index(market, device, force=True)[0]


def _add_incremental(market: Market, idx: "Index", lw_id: str, device) -> str:
    if idx.row_of(lw_id) is not None:
        return idx.generation
    spec = market.spec(lw_id)
    iid = market.manifest(lw_id).island_id()
    island = market.islands()[iid]
    new = island_table(market, island, [lw_id], device, {lw_id: spec})
    if not idx.has_island(iid):
        return publish_index(market, {iid: new}, carry_from=idx)
    old_ids = idx.ids(iid).tolist()
    pos = int(np.searchsorted(np.asarray(old_ids), lw_id))
    old, old_sk = idx.stack(iid), idx.sketch(iid)
    kmax = max(old.points.shape[1], new.stack.points.shape[1])

    def pad(a, k):
        a = np.asarray(a)
        if a.shape[1] == k:
            return a
        return np.pad(a, [(0, 0), (0, k - a.shape[1])] + [(0, 0)] * (a.ndim - 2))

    def ins(a, b):
        return np.insert(np.asarray(a), pos, np.asarray(b)[0], axis=0)

    stack = SpecStack(island.metric, ins(pad(old.points, kmax), pad(new.stack.points, kmax)),
                      ins(pad(old.beta, kmax), pad(new.stack.beta, kmax)),
                      ins(old.self_xy, new.stack.self_xy), ins(old.self_x, new.stack.self_x))
    sketch = IslandSketch(old_sk.basis, ins(old_sk.xy, new.sketch.xy), ins(old_sk.x, new.sketch.x),
                          np.insert(np.asarray(old_sk.norms), pos, new.sketch.norms[:, 0], axis=1))
    summaries = list(idx.iter_summaries(iid))
    summaries.insert(pos, new.summaries[0])
    old_ids.insert(pos, lw_id)
    return publish_index(market, {iid: IslandTable(old_ids, summaries, stack, sketch)},
                         carry_from=idx)

