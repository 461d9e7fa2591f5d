"""The derived index: a catalog of learnwares and, per island, the stacked specifications.

An index *generation* is a folder ``index/<digest>/`` whose name is a digest of what it was
built from (the islands' metrics and every learnware's id and spec hash). ``index/CURRENT``
names the live one and is replaced atomically, so readers see one whole generation or the
previous one. Rebuilding an unchanged market computes the same digest and writes nothing:
``lw market refresh`` is idempotent and cheap to run from cron.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.search import SpecStack, build_stack
from ..errors import MarketError
from .store import (Island, Market, current_generation_in, publish_generation, save_npy_synced,
                    sha256, write_file_synced)

INDEX_FORMAT = 1
CATALOG = "catalog.json"
ARRAYS = ("points", "beta", "self")


def index_digest(islands: dict[str, Island], entries: list[tuple[str, str, str]]) -> str:
    """Digest of an index's inputs: island metrics and (id, island, spec sha256) triples."""
    h = hashlib.sha256(f"lw-index-{INDEX_FORMAT}\n".encode())
    for iid in sorted(islands):
        h.update(f"island {iid} {islands[iid].metric.digest()}\n".encode())
    for lw_id, iid, spec_sha in sorted(entries):
        h.update(f"lw {lw_id} {iid} {spec_sha}\n".encode())
    return "gen-" + h.hexdigest()[:20]


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
        "spec_sha256": rec["files"]["rkme.json"],
        "submitted_at": rec.get("submitted_at"),
    }


@dataclass
class Index:
    """A loaded index generation. Island arrays are memory-mapped on first use."""

    path: Path
    catalog: dict
    islands_meta: dict[str, Island]

    @property
    def generation(self) -> str:
        return self.path.name

    def ids(self, island: str) -> list[str]:
        return list(self.catalog["islands"].get(island, {}).get("ids", []))

    def stack(self, island: str) -> SpecStack:
        isl = self.islands_meta[island]
        points = np.load(self.path / f"{island}.points.npy", mmap_mode="c")  # writable view, no copy
        beta = np.load(self.path / f"{island}.beta.npy", mmap_mode="c")
        selfs = np.load(self.path / f"{island}.self.npy")
        return SpecStack(isl.metric, points, beta, selfs[0], selfs[1])


def _stack_for(market: Market, island: Island, ids: list[str], device,
               specs: dict | None = None) -> SpecStack:
    rkmes = [(specs[i] if specs is not None else market.spec(i)).rkme for i in ids]
    return build_stack(rkmes, island.metric, device)


def _write_generation(market: Market, name: str, catalog: dict,
                      stacks: dict[str, SpecStack], link_from: Path | None,
                      replace: bool = False) -> Path:
    def write(stage: Path) -> None:
        for iid in catalog["islands"]:
            if iid in stacks:
                st = stacks[iid]
                arrays = {"points": np.ascontiguousarray(st.points),
                          "beta": np.ascontiguousarray(st.beta),
                          "self": np.stack([st.self_xy, st.self_x])}
                for a, arr in arrays.items():
                    save_npy_synced(stage / f"{iid}.{a}.npy", arr)
            else:
                if link_from is None:
                    raise MarketError(f"island {iid} has no arrays to carry over",
                                      "run lw market refresh --force")
                for a in ARRAYS:
                    os.link(link_from / f"{iid}.{a}.npy", stage / f"{iid}.{a}.npy")
        write_file_synced(stage / CATALOG,
                          (json.dumps(catalog, indent=1, sort_keys=True) + "\n").encode())

    lay = market.layout
    return publish_generation(lay.index, name, write, lay.tmp, replace=replace)


def current_generation(market: Market) -> str | None:
    return current_generation_in(market.layout.index)


def load_index(market: Market) -> Index | None:
    """The live index, or None when the market has none (run ``lw market refresh``)."""
    for _ in range(3):  # a concurrent writer may swap generations between our two reads
        name = current_generation(market)
        if name is None:
            return None
        path = market.layout.index_generation(name)
        try:
            catalog = json.loads((path / CATALOG).read_text())
        except FileNotFoundError:
            continue
        except json.JSONDecodeError as exc:
            raise MarketError(f"index catalog {path / CATALOG} is corrupt ({exc})",
                              "rebuild it with lw market refresh") from exc
        return Index(path, catalog, market.islands())
    return None


def _catalog(digest: str, market: Market, groups: dict[str, list[str]],
             summaries: dict[str, dict]) -> dict:
    return {
        "format": INDEX_FORMAT,
        "digest": digest,
        "islands": {iid: {"ids": ids, "metric_digest": market.islands()[iid].metric.digest()}
                    for iid, ids in sorted(groups.items())},
        "learnwares": {i: summaries[i] for i in sorted(summaries)},
    }


def build_index(market: Market, device=None, *, force: bool = False) -> tuple[str, bool]:
    """Rebuild the index from ``learnwares/``. Returns (generation, changed)."""
    islands = market.islands()
    specs = {i: market.spec(i) for i in market.ids()}
    summaries = {i: learnware_summary(market, i, specs[i]) for i in specs}
    groups: dict[str, list[str]] = {iid: [] for iid in islands}
    for i, s in summaries.items():
        if s["island"] not in islands:
            raise MarketError(f"learnware {i} sits on island {s['island']}, which market.toml "
                              "does not record", "run lw market verify")
        groups[s["island"]].append(i)
    groups = {k: sorted(v) for k, v in groups.items() if v}
    digest = index_digest(islands, [(i, s["island"], s["spec_sha256"]) for i, s in summaries.items()])
    if not force and current_generation(market) == digest and \
            (market.layout.index_generation(digest) / CATALOG).is_file():
        return digest, False
    stacks = {iid: _stack_for(market, islands[iid], ids, device, specs)
              for iid, ids in groups.items()}
    _write_generation(market, digest, _catalog(digest, market, groups, summaries), stacks, None,
                      replace=force)
    return digest, True


def add_to_index(market: Market, lw_id: str, device=None) -> str:
    """Insert one new learnware into the live index (caller holds the lock).

    Only its island's arrays are rewritten; the others are hard-linked from the previous
    generation. Falls back to a full rebuild when there is no usable index.
    """
    idx = load_index(market)
    if idx is None:
        return build_index(market, device)[0]
    spec = market.spec(lw_id)
    summary = learnware_summary(market, lw_id, spec)
    iid = summary["island"]
    islands = market.islands()
    summaries = dict(idx.catalog["learnwares"])
    if lw_id in summaries:
        return idx.generation
    summaries[lw_id] = summary
    groups = {k: list(v["ids"]) for k, v in idx.catalog["islands"].items()}
    old_ids = groups.get(iid, [])
    new_ids = sorted(old_ids + [lw_id])
    groups[iid] = new_ids
    new_row = build_stack([spec.rkme], islands[iid].metric, device)
    if old_ids:
        old = idx.stack(iid)
        pos = new_ids.index(lw_id)
        kmax = max(old.points.shape[1], new_row.points.shape[1])

        def pad(a, k):
            if a.shape[1] == k:
                return np.asarray(a)
            width = [(0, 0), (0, k - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
            return np.pad(np.asarray(a), width)

        stack = SpecStack(
            islands[iid].metric,
            np.insert(pad(old.points, kmax), pos, pad(new_row.points, kmax)[0], axis=0),
            np.insert(pad(old.beta, kmax), pos, pad(new_row.beta, kmax)[0], axis=0),
            np.insert(old.self_xy, pos, new_row.self_xy[0]),
            np.insert(old.self_x, pos, new_row.self_x[0]),
        )
    else:
        stack = new_row
    digest = index_digest(islands, [(i, s["island"], s["spec_sha256"]) for i, s in summaries.items()])
    _write_generation(market, digest, _catalog(digest, market, groups, summaries), {iid: stack},
                      idx.path)
    return digest


def index_file_hashes(path: Path) -> dict[str, str]:
    return {p.name: sha256(p.read_bytes()) for p in sorted(path.iterdir()) if p.is_file()}
