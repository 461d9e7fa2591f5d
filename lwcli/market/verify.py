"""The market's self-check (``lw market verify``): every stored file against its recorded
sha256, and every derived file (index, anchors) against what it was derived from.

What verify promises. Against *accidental* damage (a flipped byte, a truncated or deleted
file, a crash, a bad copy) it finds every change to a stored learnware (each file is checked
against the sha256 in its ``record.json``, the record against its own checksum, and the folder
name is the content id of the package files) and every change to derived data that alters
what users see: catalog rows and tag arrays are recomputed from the learnwares and compared,
stacked specifications and sketches are recomputed from the specs, anchor distances are
recomputed from the stored probe outputs, and the derived files are checked against the
sha256 their generation records. Against someone who can *write* the market directory it
finds inconsistent tampering only: such a person can rewrite a record and recompute its
checksum (QA figures are checked for form, not value: re-deriving them would mean running the
model), or replace probe outputs with their digests. Keep ``lw market verify --json`` output
(ids, which are content digests of the packages) somewhere the market's writers cannot reach
to detect a consistent forgery.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import LwError, MarketError
from .layout import (ANCHORS_JSON, CATALOG, CURRENT, ID_RE, INDEX_ISLAND_FILES, MANIFEST_NAME,
                     RECORD_NAME, SPEC_NAME, anchor_distances_file, island_file)
from .package import content_id
from .store import (Market, read_current, record_checksum, record_form_problems, sha256,
                    sha256_file)

FIX = "lw market refresh --force rebuilds it"
_PARSE_ERRORS = (LwError, ValueError, TypeError, KeyError, RecursionError, OverflowError)


@dataclass
class VerifyReport:
    problems: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, kind: str, path, message: str) -> None:
        self.problems.append({"kind": kind, "path": str(path), "message": message})

    def warn(self, kind: str, path, message: str) -> None:
        self.warnings.append({"kind": kind, "path": str(path), "message": message})

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "problems": self.problems,
                "warnings": self.warnings}


def _canon(row: dict) -> str:
    """A catalog row as comparable text (NaN compares equal to NaN)."""
    return json.dumps(row, sort_keys=True, separators=(",", ":"))


def verify_market(market: Market, device=None) -> VerifyReport:
    """Check the whole market; every finding is a problem or a warning, never an exception.
    A market on object storage is downloaded afresh first (every object, whatever the local
    copy holds) and checked as a directory; the paths reported are its URLs."""
    from .remote import RemoteMarket

    if isinstance(market, RemoteMarket):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="lw-verify-") as td:
            local = market.download(Path(td) / "market")
            rep = verify_market(Market.open(local, recover=False), device)
            for row in rep.problems + rep.warnings:
                row["path"] = row["path"].replace(str(local), market.url)
                row["message"] = row["message"].replace(str(local), market.url)
        return rep
    rep = VerifyReport()
    lay = market.layout
    try:
        islands = market.islands()
    except MarketError as exc:
        rep.problem("tampered", lay.market_toml, exc.message)
        return rep
    groups: dict[str, list[str]] = {}
    specs: dict[str, object] = {}
    for p in sorted(lay.learnwares.iterdir()) if lay.learnwares.is_dir() else []:
        if not (p.is_dir() and ID_RE.match(p.name)):
            rep.problem("extra", p, "unexpected entry in learnwares/")
            continue
        rep.checked += 1
        try:
            found = _verify_learnware(p, islands, rep)
        except _PARSE_ERRORS + (OSError,) as exc:     # a last guard: report, never raise
            rep.problem("tampered", p, f"unreadable: {type(exc).__name__}: {exc}")
            continue
        if found is not None:
            iid, spec = found
            groups.setdefault(iid, []).append(p.name)
            specs[p.name] = spec
    if lay.tmp.is_dir():
        for t in lay.tmp.iterdir():
            rep.warn("stale-temp", t, "left by an interrupted write; safe to delete")
    _verify_anchors(market, islands, groups, rep)
    _verify_index(market, islands, groups, specs, rep, device)
    return rep


def _verify_learnware(p, islands, rep: VerifyReport):
    """Check one stored learnware; (island, spec) when it may be indexed."""
    from ..specfile import spec_from_bytes
    from .manifest import manifest_from_text

    rec_path = p / RECORD_NAME
    try:
        rec = json.loads(rec_path.read_bytes().decode("utf-8"))
        if not isinstance(rec, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, RecursionError) as exc:
        rep.problem("missing" if isinstance(exc, FileNotFoundError) else "tampered", rec_path,
                    f"{RECORD_NAME} unreadable: {exc}")
        return None
    try:
        same = rec.get("record_sha256") == record_checksum(rec)
    except (TypeError, ValueError):
        same = False
    if not same:
        rep.problem("tampered", rec_path, f"{RECORD_NAME} checksum does not match its content")
    bad = record_form_problems(rec, p.name)
    if bad:
        rep.problem("tampered", rec_path, f"{RECORD_NAME} is malformed: {', '.join(bad)}")
        if "files" in bad:
            return None
    files = rec["files"]
    present = {f.name for f in p.iterdir()} - {RECORD_NAME}
    for extra in sorted(present - set(files)):
        rep.problem("extra", p / extra, f"file not listed in {RECORD_NAME}")
    contents = {}
    for name, digest in files.items():
        fp = p / name
        if not fp.is_file():
            rep.problem("missing", fp, f"file listed in {RECORD_NAME} is missing")
            continue
        data = fp.read_bytes()
        contents[name] = data
        if sha256(data) != digest:
            rep.problem("tampered", fp, "content does not match its recorded sha256")
    if len(contents) == len(files) and content_id(contents) != p.name:
        rep.problem("tampered", p, "the folder name is not the content id of its files")
    try:
        man = manifest_from_text(contents[MANIFEST_NAME].decode(), str(p / MANIFEST_NAME))
        spec = spec_from_bytes(contents[SPEC_NAME], str(p / SPEC_NAME))
    except (KeyError, UnicodeDecodeError, LwError, RecursionError) as exc:
        rep.problem("tampered", p, f"manifest or spec unreadable: {exc}")
        return None
    if man.model_file not in files:
        rep.problem("tampered", p, f"the manifest's model file {man.model_file} is not recorded")
    iid = man.island_id()
    if rec.get("island") != iid:
        rep.problem("tampered", rec_path, f"{RECORD_NAME} names island {rec.get('island')!r}, the "
                    f"manifest's is {iid}")
    if iid not in islands:
        rep.problem("inconsistent", p, f"island {iid} is not recorded in market.toml")
        return None
    if spec.rkme.metric.digest() != islands[iid].metric.digest():
        rep.problem("inconsistent", p, "spec metric differs from its island's metric")
        return None
    return iid, spec


def _verify_index(market: Market, islands, groups, specs, rep: VerifyReport, device) -> None:
    """The live index: its files as its catalog records them, then its learnwares, inputs,
    catalog rows, tags, stacked specs and sketches against those recomputed from
    ``learnwares/`` (``groups``: island -> ids, ``specs``: id -> parsed spec)."""
    idx = _live_index(market, rep)
    if idx is None:
        return
    _verify_index_files(market, idx, rep)
    if not rep.ok and any(p["kind"] == "index" for p in rep.problems):
        return
    try:
        cat_groups = {k: idx.ids(k).tolist() for k in idx.islands()}
        rows = {k: list(idx.iter_summaries(k)) for k in idx.islands()}
    except (OSError, ValueError, LwError) as exc:
        rep.problem("index", idx.path, f"unreadable: {exc}")
        return
    if {k: sorted(v) for k, v in groups.items()} != cat_groups:
        rep.problem("index", idx.path, "the index's learnwares differ from learnwares/; "
                    "run lw market refresh")
        return
    _verify_index_inputs(market, idx, islands, groups, rep)
    for iid, ids in cat_groups.items():
        if _verify_island_rows(market, idx, iid, ids, rows[iid], specs, rep):
            _verify_island_arrays(idx, iid, ids, islands, specs, rep, device)


def _live_index(market: Market, rep: VerifyReport):
    """The live :class:`~lwcli.market.index.Index`, or None (and the problem, if any)."""
    from .index import load_index

    lay = market.layout
    try:
        name = read_current(lay.index)
    except MarketError as exc:
        rep.problem("index", lay.index_current, f"{exc.message}; {FIX}")
        return None
    if name is None:
        if rep.checked:
            rep.problem("index", lay.index, "no index; run lw market refresh")
        return None
    try:
        idx = load_index(market)
    except MarketError as exc:
        rep.problem("index", lay.index_generation(name), f"{exc.message}; {FIX}")
        return None
    if idx is None:
        rep.problem("index", lay.index_generation(name), f"{CURRENT} names a missing generation")
    return idx


def _verify_index_files(market: Market, idx, rep: VerifyReport) -> None:
    """Unused entries of ``index/`` (warnings); every island file present and matching the
    sha256 its catalog records."""
    for p in market.layout.index.iterdir():
        if p.name not in (CURRENT, idx.generation):
            rep.warn("extra", p, "unused index entry; lw market refresh removes it")
    for iid in idx.islands():
        recorded = idx.recorded_sha256(iid)
        if not recorded:
            rep.warn("index", idx.path / island_file(iid, "*"), "written before lw recorded "
                     "index file digests; lw market refresh --force records them")
        for fname in INDEX_ISLAND_FILES:
            f = idx._file(iid, fname)
            if not f.is_file():
                rep.problem("index", f, f"missing; {FIX}")
            elif fname in recorded and sha256_file(f) != recorded[fname]:
                rep.problem("index", f, f"does not match the sha256 its catalog records; {FIX}")


def _verify_index_inputs(market: Market, idx, islands, groups, rep: VerifyReport) -> None:
    """The catalog's digest and count against the market's islands and specs."""
    from .index import index_digest

    where = idx.path / CATALOG
    try:
        entries = [(i, iid, market.record(i)["files"][SPEC_NAME])
                   for iid, ids in groups.items() for i in ids]
        if idx.catalog.get("digest") != index_digest(islands, entries):
            rep.problem("index", where, "the index was built from other inputs "
                        f"(islands, specs) than the market holds; {FIX}")
        if idx.catalog.get("learnwares") != len(entries):
            rep.problem("index", where, f"counts {idx.catalog.get('learnwares')!r} "
                        f"learnwares, the market holds {len(entries)}; {FIX}")
    except LwError as exc:
        rep.problem("index", where, f"cannot recompute its inputs: {exc}")


def _verify_island_rows(market: Market, idx, iid: str, ids: list[str], rows: list[dict],
                        specs, rep: VerifyReport) -> bool:
    """One island's catalog rows and tag arrays against those recomputed from its
    learnwares; False when they cannot be read or recomputed (the island's checks stop)."""
    from .index import _tag_csr, learnware_summary

    rows_file = idx._file(iid, "summaries.jsonl")
    try:
        want = [json.loads(_canon(learnware_summary(market, i, specs[i]))) for i in ids]
    except LwError as exc:
        rep.problem("index", rows_file, f"cannot recompute its rows: {exc}")
        return False
    differ = [i for i, a, b in zip(ids, want, rows) if _canon(a) != _canon(b)]
    if differ:
        rep.problem("index", rows_file,
                    f"the catalog rows of {len(differ)} learnware(s) ({', '.join(differ[:3])})"
                    f" differ from their manifests and records; {FIX}")
    vocab, ptr, tidx = _tag_csr(want)
    tags_files = idx.path / island_file(iid, "tag*.npy")
    try:
        same_tags = (vocab == idx.catalog["islands"][iid].get("tags")
                     and np.array_equal(idx._load(iid, "tagptr.npy", "r"), ptr)
                     and np.array_equal(idx._load(iid, "tagidx.npy", "r"), tidx))
    except LwError as exc:
        rep.problem("index", tags_files, f"unreadable: {exc}")
        return False
    if not same_tags:
        rep.problem("index", tags_files, f"the tag index differs from the learnwares' tags; {FIX}")
    return True


def _verify_island_arrays(idx, iid: str, ids: list[str], islands, specs, rep: VerifyReport,
                          device) -> None:
    """One island's stacked specs and sketches against those rebuilt from its specs (within
    float32 tolerances: the device may differ from the one that built them)."""
    from ..engine.search import build_sketch, build_stack, island_basis
    from .index import sketch_seed

    arrays = idx.path / island_file(iid, "*.npy")
    try:
        st, sk = idx.stack(iid), idx.sketch(iid)
        ref = build_stack([specs[i].rkme for i in ids], islands[iid].metric, device)
        ref_sk = build_sketch(ref, sk.basis, device)
        same = (st.points.shape == ref.points.shape
                and np.allclose(st.points, ref.points, rtol=1e-6, atol=1e-6)
                and np.allclose(st.beta, ref.beta, rtol=1e-6, atol=1e-7)
                and np.allclose(st.self_xy, ref.self_xy, rtol=1e-4, atol=1e-6)
                and np.allclose(st.self_x, ref.self_x, rtol=1e-4, atol=1e-6)
                and sk.basis == island_basis(islands[iid].metric, sketch_seed(iid))
                and np.allclose(sk.xy, ref_sk.xy, atol=1e-5)
                and np.allclose(sk.x, ref_sk.x, atol=1e-5)
                and np.allclose(sk.norms, ref_sk.norms, rtol=1e-4, atol=1e-6))
    except (OSError, ValueError, LwError) as exc:
        rep.problem("index", arrays, f"unreadable: {exc}")
        return
    if not same:
        rep.problem("index", arrays,
                    "stacked specifications or sketches differ from the learnwares' specs")


def _verify_anchors(market: Market, islands, groups: dict[str, list[str]],
                    rep: VerifyReport) -> None:
    """Anchors are derived: problems when unreadable, altered or inconsistent (distances are
    recomputed from the stored probe outputs), a warning when stale."""
    from .anchors import REBUILD as fix

    lay = market.layout
    try:
        name = read_current(lay.anchors)
    except MarketError as exc:
        rep.problem("anchors", lay.anchors_current, exc.message + f"; {fix}")
        return
    if name is None:
        return
    path = lay.anchors_generation(name)
    try:
        doc = json.loads((path / ANCHORS_JSON).read_bytes().decode("utf-8"))
        anchored = doc["islands"]
        if not isinstance(anchored, dict):
            raise TypeError("islands is not a table")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        rep.problem("anchors", path / ANCHORS_JSON, f"unreadable ({exc}); {fix}")
        return
    for iid in anchored:
        _verify_anchor_island(market, islands, groups, iid, anchored[iid], path, rep)


def _verify_anchor_island(market: Market, islands, groups: dict[str, list[str]], iid: str,
                          entry: dict, path, rep: VerifyReport) -> None:
    """One island of the live anchor generation (``entry``: its part of anchors.json,
    ``path``: the generation folder)."""
    from ..engine.anchors import distances
    from .anchors import REBUILD as fix
    from .anchors import anchor_set_id, distance_kinds, load_anchor_set

    try:
        aset = load_anchor_set(market, iid)
        outs = aset.outputs()
        dists = {k: aset.distances(k) for k in aset.kinds}
    except LwError as exc:
        rep.problem("anchors", path / island_file(iid, "*.npy"), f"{exc.message}; {fix}")
        return
    members, anchors = aset.members, aset.anchors
    for fname, digest in sorted(aset.files.items()):        # the probes too
        try:
            same = sha256_file(path / fname) == digest
        except OSError:
            same = False
        if not same:
            rep.problem("anchors", path / fname, f"island {iid}: {fname} is missing or does "
                        f"not match its recorded sha256; {fix}")
    if not aset.files:
        rep.warn("anchors", path / ANCHORS_JSON, f"island {iid}: written before lw recorded "
                 "anchor file digests; lw market refresh --force records them")
    unknown = sorted(set(members) - set(groups.get(iid, [])))
    if iid not in islands or unknown:
        rep.problem("anchors", path / ANCHORS_JSON,
                    f"island {iid}: anchors name learnwares that are not on it; {fix}")
        return
    key = islands[iid].key
    if (aset.task != key["task"] or aset.kinds != distance_kinds(key["task"])
            or outs.shape[2] != len(key["outputs"])
            or outs.shape[1] != entry.get("n_probes")
            or aset.anchor_set != anchor_set_id(iid, anchors)):
        rep.problem("anchors", path / ANCHORS_JSON,
                    f"island {iid}: its settings do not match the island or its arrays; {fix}")
        return
    pos = [members.index(a) for a in anchors]
    o = np.asarray(outs, dtype=np.float64)
    # the stored outputs are float32 and a distance near 0 loses digits to cancellation:
    # a tolerance on the outputs' scale (an alteration that matters is far larger)
    atol = 1e-5 * (1.0 + float(np.abs(o).max(initial=0.0)))
    for kind, D in dists.items():
        ref = np.round(distances(o, o[pos], kind), 9)
        if not np.allclose(D, ref, rtol=1e-4, atol=atol):
            rep.problem("anchors", path / anchor_distances_file(iid, kind),
                        f"island {iid}: its {kind} distances differ from those recomputed "
                        f"from the stored probe outputs; {fix}")
    if sorted(members) != sorted(groups.get(iid, [])):
        rep.warn("stale-anchors", path, f"island {iid}: learnwares joined since the anchors "
                 "were chosen (or need --trust); lw market refresh updates them")


__all__ = ["VerifyReport", "verify_market", "record_form_problems"]
