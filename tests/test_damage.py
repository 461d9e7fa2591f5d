"""Damage and tampering (issue 13, points 12-14): a real market is damaged one way at a time;
readers through the CLI (in process, its error boundary) report it (exit 5, one line on stderr, the repair named) or fall
back cleanly and say so (never exit 1); `lw market verify` reports every case; `lw market
refresh --force` repairs the derived ones."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from lwcli import api
from lwcli.market.store import record_checksum, sha256

from conftest import build_learnware, domain_data, market_tree, run_cli, write_user


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Three learnwares on one island (tags a+b, b, c), indexed and anchored, a user's files
    and an anchor report."""
    work = tmp_path_factory.mktemp("damage")
    root = work / "market"
    api.market_init(root)
    ids = []
    for i, tags in enumerate([("a", "b"), ("b",), ("c",)]):
        X, y = domain_data(i % 2, 300, seed=i)
        b = build_learnware(work, f"lw-{i}", X, y, market=root, k=20, tags=tags)
        ids.append(api.submit(b.package, root).id)
    api.market_refresh(root)
    X, y = domain_data(0, 60, seed=5)
    files = {"labelled": write_user(work / "u.csv", X, y), "inputs": write_user(work / "x.csv", X)}
    api.anchor_eval(root, files["labelled"], "y", out=work / "report.json")
    files["report"] = work / "report.json"
    assert api.market_verify(root).ok
    return root, sorted(ids), files


def _gen(m: Path, area: str) -> Path:
    return m / area / (m / area / "CURRENT").read_text().strip()


def _island_file(m: Path, name: str) -> Path:
    return next(_gen(m, "index").glob(f"*.{name}"))


def _flip_last(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[-1] ^= 0xFF
    p.write_bytes(bytes(b))


def _edit_rows(m: Path, old: str, new: str) -> None:
    p = _island_file(m, "summaries.jsonl")
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new))


def _alter_distances(m: Path, update_digest: bool) -> None:
    p = next(_gen(m, "anchors").glob("*.rms.npy"))
    a = np.load(p)
    a[0, 0] += 0.5
    np.save(p, a)
    if update_digest:        # a consistent tamper: the recorded digest follows the file
        doc_path = _gen(m, "anchors") / "anchors.json"
        doc = json.loads(doc_path.read_text())
        for d in doc["islands"].values():
            if p.name in d["files"]:
                d["files"][p.name] = sha256(p.read_bytes())
        doc_path.write_text(json.dumps(doc))


def _edit_record(m: Path, lw_id: str, **qa) -> None:
    p = m / "learnwares" / lw_id / "record.json"
    rec = json.loads(p.read_text())
    rec["qa"].update(qa)
    rec["record_sha256"] = record_checksum(rec)      # who can write the market can do this
    p.write_text(json.dumps(rec))


def _swap_model(m: Path, ids) -> None:
    shutil.copy(m / "learnwares" / ids[1] / "model.skops", m / "learnwares" / ids[0] / "model.skops")


# name: (damage(market, ids), reader command, expected reader exit, text the reader's stderr
#        holds, the verify problem kind, text of its message, repaired by refresh --force)
LS = ("market", "ls", "-q")
SEARCH_TAG = ("search", "--data", "{inputs}", "--tag", "b")
SEARCH_RERANK = ("search", "--data", "{labelled}", "--target", "y")
ANCHOR_SEARCH = ("search", "--anchor-report", "{report}")
CASES = {
    "index CURRENT random bytes": (
        lambda m, ids: (m / "index" / "CURRENT").write_bytes(bytes(range(200, 240))),
        LS, 0, "index is damaged", "index", "CURRENT is damaged", True),
    "anchors CURRENT random bytes": (
        lambda m, ids: (m / "anchors" / "CURRENT").write_bytes(bytes(range(200, 240))),
        ANCHOR_SEARCH, 5, "lw market refresh --force", "anchors", "CURRENT is damaged", True),
    "catalog.json not UTF-8": (
        lambda m, ids: (_gen(m, "index") / "catalog.json").write_bytes(
            (_gen(m, "index") / "catalog.json").read_bytes().replace(b'"format"', b'"f\xffrmat"')),
        LS, 0, "index is damaged", "index", "corrupt", True),
    "ids.npy flipped": (lambda m, ids: _flip_last(_island_file(m, "ids.npy")),
                        SEARCH_TAG, 0, "index is damaged", "index", "sha256", True),
    "tagidx.npy flipped": (lambda m, ids: _flip_last(_island_file(m, "tagidx.npy")),
                           SEARCH_TAG, 0, "index is damaged", "index", "sha256", True),
    "tagptr.npy flipped": (lambda m, ids: _flip_last(_island_file(m, "tagptr.npy")),
                           LS, 0, "index is damaged", "index", "sha256", True),
    "offsets.npy flipped": (lambda m, ids: _flip_last(_island_file(m, "offsets.npy")),
                            SEARCH_RERANK, 0, "index is damaged", "index", "sha256", True),
    "summaries.jsonl flipped": (lambda m, ids: _flip_last(_island_file(m, "summaries.jsonl")),
                                LS, 0, "index is damaged", "index", "sha256", True),
    "a name edited in the catalog rows": (
        lambda m, ids: _edit_rows(m, '"name":"lw-0"', '"name":"lw-X"'),
        LS, 0, "index is damaged", "index", "sha256", True),
    "tags edited in the catalog rows": (
        lambda m, ids: _edit_rows(m, '"tags":["c"]', '"tags":["z"]'),
        LS, 0, "index is damaged", "index", "sha256", True),
    "offsets.npy deleted": (lambda m, ids: _island_file(m, "offsets.npy").unlink(),
                            SEARCH_TAG, 0, "index is damaged", "index", "missing", True),
    "tagidx.npy deleted": (lambda m, ids: _island_file(m, "tagidx.npy").unlink(),
                           SEARCH_TAG, 0, "index is damaged", "index", "missing", True),
    "an anchor distance file deleted": (
        lambda m, ids: next(_gen(m, "anchors").glob("*.rms.npy")).unlink(),
        ANCHOR_SEARCH, 5, "lw market refresh --force", "anchors", "missing", True),
    "anchor distances altered": (
        lambda m, ids: _alter_distances(m, update_digest=False),
        ANCHOR_SEARCH, 5, "recorded sha256", "anchors", "sha256", True),
    "anchor distances altered with their digest": (
        lambda m, ids: _alter_distances(m, update_digest=True),
        None, None, None, "anchors", "recomputed from the stored probe outputs", True),
    "QA figures edited, checksum recomputed": (
        lambda m, ids: _edit_record(m, ids[0], agreement=0.5),
        None, None, None, "index", "differ from their manifests and records", True),
    "QA figures malformed, checksum recomputed": (
        lambda m, ids: _edit_record(m, ids[0], agreement="high"),
        ("market", "info", "{id0}"), 5, "record.json is malformed", "tampered", "malformed",
        False),
    "model replaced by another learnware's": (
        lambda m, ids: _swap_model(m, ids),
        SEARCH_RERANK, 5, "does not match its recorded sha256", "tampered", "sha256", False),
    "manifest deleted": (lambda m, ids: (m / "learnwares" / ids[0] / "learnware.toml").unlink(),
                         ("market", "info", "{id0}"), 5, "learnware.toml is missing", "missing",
                         "missing", False),
    # field report: one flipped bit in market.toml's gamma silently changed every ranking
    "an island's kernel metric edited in market.toml": (
        lambda m, ids: (m / "market.toml").write_text(re.sub(
            r"gamma = (\S+)", lambda g: f"gamma = {float(g.group(1)) * 4:.17g}",
            (m / "market.toml").read_text(), count=1)),
        SEARCH_TAG, 5, "market.toml is damaged or was edited", "inconsistent",
        "spec metric differs", False),
    # field report: info exited 0 for a learnware whose model was gone
    "model deleted, seen by info": (
        lambda m, ids: (m / "learnwares" / ids[0] / "model.skops").unlink(),
        ("market", "info", "{id0}"), 5, "model.skops is missing", "missing", "missing", False),
    "model flipped, seen by info": (
        lambda m, ids: _flip_last(m / "learnwares" / ids[0] / "model.skops"),
        ("market", "info", "{id0}"), 5, "model.skops does not match its recorded sha256",
        "tampered", "sha256", False),
    # field report: ls listed it, info and search said "no learnware" (exit 3)
    "a learnware's folder deleted": (
        lambda m, ids: shutil.rmtree(m / "learnwares" / ids[0]),
        ("market", "info", "{id0}"), 5, "the index lists it, but its folder", "index",
        "differ from learnwares/", True),
    "model deleted": (lambda m, ids: (m / "learnwares" / ids[0] / "model.skops").unlink(),
                      ("reuse", "{id0}", "--data", "{inputs}", "-o", "{out}"), 5,
                      "model.skops is missing", "missing", "missing", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_damage_is_reported_never_an_internal_error(base, tmp_path, case):
    root, ids, files = base
    damage, cmd, code, needle, kind, message, repairable = CASES[case]
    m = tmp_path / "market"
    shutil.copytree(root, m)
    damage(m, ids)
    if cmd is not None:
        args = [a.format(id0=ids[0], out=tmp_path / "pred.csv", **files) for a in cmd]
        proc = run_cli(*args, "--market", m, check=None)
        assert proc.returncode == code, (proc.returncode, proc.stderr)
        assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
        assert needle in proc.stderr, proc.stderr
        if code == 5:
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        if cmd == LS:         # the clean fallback lists every learnware, from learnwares/
            assert sorted(proc.stdout.split()) == ids
    proc = run_cli("market", "verify", "--json", "--market", m, check=5)
    assert "internal error" not in proc.stderr
    problems = json.loads(proc.stdout)["problems"]
    assert any(p["kind"] == kind and message in p["message"] for p in problems), problems
    if repairable:
        api.market_refresh(m, force=True)
        rep = api.market_verify(m)
        assert rep.ok, rep.problems
        assert not any("digests" in w["message"] for w in rep.warnings)


def test_a_fresh_market_records_digests_of_its_derived_files(base):
    root, ids, _ = base
    catalog = json.loads((_gen(root, "index") / "catalog.json").read_text())
    for iid, meta in catalog["islands"].items():
        for name, digest in meta["files"].items():
            assert sha256((_gen(root, "index") / f"{iid}.{name}").read_bytes()) == digest
    doc = json.loads((_gen(root, "anchors") / "anchors.json").read_text())
    for d in doc["islands"].values():
        assert d["files"] and all(
            sha256((_gen(root, "anchors") / f).read_bytes()) == h for f, h in d["files"].items())


def test_a_consistent_forgery_of_the_qa_figures_is_beyond_verify_after_a_refresh(base, tmp_path):
    """What verify promises against someone who can write the market (README, Guarantees):
    inconsistent tampering is found; a record rewritten with its checksum recomputed, and the
    derived data rebuilt from it, is not. Keep verify --json output elsewhere to catch it."""
    root, ids, _ = base
    m = tmp_path / "market"
    shutil.copytree(root, m)
    before = json.loads(run_cli("market", "verify", "--json", "--market", m).stdout)
    _edit_record(m, ids[0], agreement=0.5)
    assert not api.market_verify(m).ok          # the index rows no longer match the record
    api.market_refresh(m, force=True)
    assert api.market_verify(m).ok              # now consistent: only an outside copy tells
    assert api.market_info(m, ids[0])["record"]["qa"]["agreement"] == 0.5
    assert before["ok"]


def test_every_load_checks_the_recorded_hash(base, tmp_path):
    """Library readers too: a swapped model is refused by reuse's loader, in-process."""
    from lwcli.errors import MarketError

    root, ids, _ = base
    m = tmp_path / "market"
    shutil.copytree(root, m)
    _swap_model(m, ids)
    with pytest.raises(MarketError, match="does not match its recorded sha256"):
        api.load_learnwares(m, [ids[0]])
    api.load_learnwares(m, [ids[1]])           # the others load as before


def test_readers_work_on_a_read_only_market(base, tmp_path):
    """Reading (ls, info, verify) needs no write: a read-only copy serves them."""
    root, ids, _ = base
    m = tmp_path / "market"
    shutil.copytree(root, m)
    paths = [m, *m.rglob("*")]
    try:
        for p in paths:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        if os.access(m, os.W_OK):              # root ignores permissions
            pytest.skip("running as root: a read-only market cannot be made with chmod")
        assert sorted(r["id"] for r in api.market_ls(m)) == ids
        assert api.market_info(m, ids[0])["id"] == ids[0]
        assert api.market_verify(m).ok
    finally:
        for p in paths:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize("entry,make", [("tmp", "file"), ("index", "file"), (".lock", "folder")])
def test_a_market_entry_of_the_wrong_kind_is_exit_5_and_changes_nothing(base, tmp_path, entry,
                                                                        make):
    """Field report: with ``tmp`` or ``index`` a file, or ``.lock`` a folder, a write ended in
    exit 1 (FileExistsError, IsADirectoryError)."""
    root, ids, files = base
    m = tmp_path / "market"
    shutil.copytree(root, m)
    p = m / entry
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)
    if make == "file":
        p.write_bytes(b"not a folder")
    else:
        p.mkdir()
    before = market_tree(m)
    proc = run_cli("market", "refresh", "--force", "--market", m, check=5)
    (line,) = proc.stderr.strip().splitlines()
    assert f"{p} should be a" in line and "internal error" not in line
    assert market_tree(m) == before
