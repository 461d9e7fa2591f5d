"""Incremental refresh on real temporary markets: an unchanged market reads no learnware; a new
learnware is the only model that runs (the island's probes are kept); the result equals a full
rebuild on the same probes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import build_learnware, domain_data, market_copy, run_cli, snapshot
from lwcli import api


def _anchors_files(root) -> dict[str, bytes]:
    gen = (root / "anchors" / "CURRENT").read_text().strip()
    return {p.name: p.read_bytes() for p in sorted((root / "anchors" / gen).iterdir())}


def _doc(root) -> dict:
    return json.loads(_anchors_files(root)["anchors.json"])


@pytest.fixture
def grown(world, tmp_path):
    """The shared market plus two learnwares on its island (b, and d from another sample)."""
    root = market_copy(world, tmp_path / "m")
    api.submit(world["pkg"]["same"], root)
    X, y = domain_data(0, 250, seed=31)
    api.submit(build_learnware(tmp_path / "work", "d", X, y, market=root, k=20).package, root)
    return root


def test_a_new_learnware_is_the_only_model_that_runs(world, grown):
    before = _doc(world["base"])
    res = api.market_refresh(grown)
    a = res.anchors
    assert a["changed"] and a["models_run"] == 2                # b and d, not a again
    (iid, d), = a["islands"].items()
    assert d["members"] == 3
    doc = _doc(grown)
    # the island's probes are kept: the same file, drawn from the one member it had then
    assert doc["islands"][iid]["probes"] == before["islands"][iid]["probes"]
    assert doc["islands"][iid]["probes"]["drawn_from"] == 1
    # a's outputs are carried over, not recomputed
    outs = np.load(grown / "anchors" / a["generation"] / f"{iid}.outputs.npy")
    old = np.load(world["base"] / "anchors" / before["generation"] / f"{iid}.outputs.npy")
    pos = doc["islands"][iid]["members"].index(world["first"])
    assert np.array_equal(outs[pos], old[0])


def test_incremental_equals_a_full_rebuild_on_the_same_probes(grown, tmp_path):
    api.market_refresh(grown)                                    # incremental: 2 models
    full = tmp_path / "full"
    shutil.copytree(grown, full)
    res = api.market_refresh(full, force=True)                  # every model again
    assert res.anchors["models_run"] == 3
    assert _anchors_files(full) == _anchors_files(grown)        # byte for byte
    # the index the submits built one learnware at a time equals the rebuilt one
    gi = (grown / "index" / "CURRENT").read_text().strip()
    fi = (full / "index" / "CURRENT").read_text().strip()
    assert fi.startswith(gi)                                    # forced: the name + a suffix
    for f in sorted((grown / "index" / gi).iterdir()):
        a, b = f.read_bytes(), (full / "index" / fi / f.name).read_bytes()
        if f.name == "catalog.json":
            a, b = json.loads(a), json.loads(b)
        assert a == b, f.name


def test_an_unchanged_market_reads_no_learnware(grown):
    """The cron case: nothing changed, so nothing inside learnwares/ is read (damage there is
    lw market verify's to find), nothing runs and nothing is written."""
    api.market_refresh(grown)
    before = snapshot(grown)
    lw_id = sorted(p.name for p in (grown / "learnwares").iterdir())[0]
    for f in (grown / "learnwares" / lw_id).iterdir():
        f.write_bytes(b"unreadable")                             # it would fail if read
    res = api.market_refresh(grown)
    assert not res.changed and res.anchors["models_run"] == 0
    after = snapshot(grown)
    assert {k: v for k, v in after.items() if not k.startswith("learnwares/")} == \
        {k: v for k, v in before.items() if not k.startswith("learnwares/")}
    proc = run_cli("market", "refresh", "--market", grown, "--json")
    assert json.loads(proc.stdout)["changed"] is False
    assert run_cli("market", "verify", "--market", grown, check=5).returncode == 5


def test_a_new_island_runs_only_its_own_models(world, tmp_path):
    root = market_copy(world, tmp_path / "m")
    api.submit(world["pkg"]["new"], root)
    res = api.market_refresh(root).anchors
    assert res["models_run"] == 1 and len(res["islands"]) == 2
    doc = _doc(root)
    new_island, = set(doc["islands"]) - set(_doc(world["base"])["islands"])
    assert doc["islands"][new_island]["probes"]["reason"] == "the island's first anchors"


def test_reprobe_draws_again_runs_everything_and_records_why(grown):
    api.market_refresh(grown)
    res = api.market_refresh(grown, reprobe="the island's data moved")
    assert res.anchors["changed"] and res.anchors["models_run"] == 3
    (iid, entry), = _doc(grown)["islands"].items()
    assert entry["probes"]["reason"] == "the island's data moved"
    assert entry["probes"]["drawn_from"] == 3
    # and from then on the new probes are kept
    again = api.market_refresh(grown)
    assert not again.changed and again.anchors["models_run"] == 0
    out = run_cli("market", "refresh", "--market", grown, "--reprobe", "new data", "--json")
    assert json.loads(out.stdout)["anchors"]["models_run"] == 3
    for empty in ("", "   "):                  # a reason is what --reprobe asks for
        res = run_cli("market", "refresh", "--market", grown, "--reprobe", empty, check=2)
        assert "--reprobe needs a reason" in res.stderr


def test_damaged_stored_probes_are_drawn_again_with_the_reason(grown):
    api.market_refresh(grown)
    doc = _doc(grown)
    (iid, _), = doc["islands"].items()
    gen = doc["generation"]
    probes = grown / "anchors" / gen / f"{iid}.probes.npy"
    probes.chmod(0o644)
    np.save(probes, np.zeros((3, 4)))                             # altered in place
    bad = api.market_verify(grown)
    assert any(p["path"].endswith(".probes.npy") and "sha256" in p["message"]
               for p in bad.problems)
    res = api.market_refresh(grown, force=True)
    assert res.anchors["models_run"] == 3
    entry = _doc(grown)["islands"][iid]
    assert "does not match its recorded sha256" in entry["probes"]["reason"]


def test_other_settings_replan_without_running_what_is_carried(grown):
    """--trust changes which learnwares may run, so the plan is made again; the members'
    outputs on the kept probes are carried over and nothing runs."""
    api.market_refresh(grown)
    res = api.market_refresh(grown, trust=True)
    assert res.anchors["changed"] and res.anchors["models_run"] == 0
    assert not api.market_refresh(grown, trust=True).changed


def test_recheck_runs_qa_again_and_reports_what_no_longer_passes(grown):
    """After an upgrade, --recheck runs every stored model's QA again in this environment
    (the same probes as at submit: the same agreement); a model that no longer loads is
    reported, the records stay as they were."""
    api.market_refresh(grown)
    res = api.market_refresh(grown, recheck=True)
    assert not res.changed
    assert res.recheck == {"checked": 3, "failed": [], "changed": [], "skipped": []}
    lw_id = sorted(p.name for p in (grown / "learnwares").iterdir())[0]
    model = next(p for p in (grown / "learnwares" / lw_id).iterdir() if p.suffix == ".skops")
    model.chmod(0o644)
    model.write_bytes(b"not a model any more")
    before = snapshot(grown)
    out = run_cli("market", "refresh", "--market", grown, "--recheck", "--jobs", "2", "--json")
    rc = json.loads(out.stdout)["recheck"]
    assert rc["checked"] == 3 and [f["id"] for f in rc["failed"]] == [lw_id]
    assert "damaged" in rc["failed"][0]["reason"]
    assert snapshot(grown) == before
    text = run_cli("market", "refresh", "--market", grown, "--recheck")
    assert f"{lw_id} no longer passes QA here" in text.stderr


def test_a_damaged_live_index_of_the_same_digest_is_rebuilt_under_a_new_name(grown):
    """The live generation has the digest a rebuild would give, but lost its catalog: a
    plain refresh rebuilds it under a fresh name (never reusing the damaged folder)."""
    api.market_refresh(grown)
    gen = (grown / "index" / "CURRENT").read_text().strip()
    (grown / "index" / gen / "catalog.json").unlink()
    res = api.market_refresh(grown)
    assert res.index_changed and res.generation.startswith(gen + "-")
    assert api.market_verify(grown).ok and len(api.market_ls(grown)) == 3
