"""Market integrity: idempotence, atomicity, concurrency, verify, refresh, trust, QA."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from lwcli import api
from lwcli.errors import (MetricMismatchError, ModelCheckError, NotFoundError,
                          UntrustedModelError)

from conftest import LW, build_learnware, domain_data, fork_lw, run_cli, snapshot, spawn_lw

HERE = Path(__file__).parent


def _pkgs(tmp_path, n, market=None):
    out = []
    for i in range(n):
        X, y = domain_data(i, 300, seed=i)
        out.append(build_learnware(tmp_path / "work", f"lw-{i}", X, y, market=market, k=20))
    return out


def test_submit_is_idempotent_and_content_addressed(market, tmp_path):
    (b,) = _pkgs(tmp_path, 1)
    r1 = api.submit(b.package, market)
    before = snapshot(market)
    r2 = api.submit(b.package, market)
    assert (r1.status, r2.status) == ("added", "exists")
    assert r1.id == r2.id
    assert snapshot(market) == before
    # re-packing the same inputs gives the same bytes, hence the same id
    again = api.pack(b.model, b.spec, b.meta, tmp_path / "again.lw")
    assert again.id == r1.id
    assert (tmp_path / "again.lw").read_bytes() == b.package.read_bytes()


def test_the_same_model_dumped_twice_gets_the_same_id(tmp_path):
    import skops.io as sio
    from sklearn.ensemble import RandomForestRegressor

    from lwcli.market.models import load_model
    from lwcli.market.package import read_package

    X, y = domain_data(0, 300, seed=0)
    built = [build_learnware(tmp_path / w, "rf", X, y,
                             model=RandomForestRegressor(5, random_state=0).fit(X, y))
             for w in ("a", "b")]
    a, b = built
    assert a.model.read_bytes() != b.model.read_bytes()      # skops names arrays by address
    assert a.package.read_bytes() == b.package.read_bytes()  # lw pack canonicalises them
    packed = load_model(read_package(a.package).model_bytes, "skops")
    original = sio.load(a.model, trusted=sio.get_untrusted_types(file=a.model))
    np.testing.assert_array_equal(packed.predict(X), original.predict(X))


def test_stored_learnware_round_trips(market, tmp_path):
    (b,) = _pkgs(tmp_path, 1)
    lw_id = api.submit(b.package, market).id
    info = api.market_info(market, lw_id)
    assert info["manifest"]["name"] == "lw-0"
    assert info["record"]["qa"]["agreement"] > 0.95       # the spec belongs to the model
    from lwcli.specfile import read_spec

    stored = read_spec(market / "learnwares" / lw_id / "rkme.json")
    orig = read_spec(b.spec)
    np.testing.assert_array_equal(stored.rkme.points, orig.rkme.points)
    np.testing.assert_array_equal(stored.rkme.beta, orig.rkme.beta)


@pytest.mark.system
def test_parallel_submits_from_processes_leave_a_consistent_market(market, tmp_path):
    first = _pkgs(tmp_path, 1)[0]
    api.submit(first.package, market)          # the island exists; the others use its metric
    pkgs = [build_learnware(tmp_path / "par", f"p-{i}", *domain_data(i + 1, 300, seed=i),
                            market=market, k=20) for i in range(5)]
    env = dict(os.environ, LW_DEVICE="cpu", PYTHONWARNINGS="ignore")
    procs = [subprocess.Popen([str(LW), "submit", str(p.package), "--market", str(market)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for p in pkgs + pkgs[:2]]            # two packages are submitted twice at once
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outs
    ids = [o[0].decode().strip() for o in outs]
    assert ids[5:] == ids[:2]
    assert len(set(ids)) == 5
    rep = api.market_verify(market)
    assert rep.ok, rep.problems
    listed = {r["id"] for r in api.market_ls(market)}
    assert listed == set(ids) | {api.pack(first.model, first.spec, first.meta,
                                          tmp_path / "x.lw").id}


@pytest.mark.system
def test_submit_killed_midway_leaves_nothing_half_visible(market, tmp_path):
    """Real submits (forked warm, see tests/launcher.py) SIGKILLed at seven points spread over
    one uninterrupted submit's duration (measured here, used only to place the kills)."""
    base = _pkgs(tmp_path, 1)[0]
    fork_lw("--version")                    # the launcher is warm before the span is measured
    t0 = time.monotonic()
    fork_lw("submit", base.package, "--market", market)
    span = time.monotonic() - t0
    for i, share in enumerate((0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)):
        X, y = domain_data(i + 1, 300, seed=50 + i)
        b = build_learnware(tmp_path / "kill", f"k-{i}", X, y, market=market, k=20)
        proc = spawn_lw("submit", b.package, "--market", market)
        time.sleep(share * span)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:          # it had finished
            pass
        proc.communicate(timeout=120)
        rep = api.market_verify(market)
        assert rep.ok, rep.problems                       # never a half-written learnware
        # the learnware is either wholly there (listed, verified) or not there at all
        lw_id = api.pack(b.model, b.spec, b.meta, tmp_path / "probe.lw").id
        listed = {r["id"] for r in api.market_ls(market)}
        assert (market / "learnwares" / lw_id).exists() == (lw_id in listed)
    # what the kills left in tmp/ is invisible, and submitting again completes
    assert api.submit(b.package, market).status in ("added", "exists")
    assert api.market_verify(market).ok


@pytest.mark.parametrize("victim", ["model.skops", "rkme.json", "learnware.toml", "record.json"])
def test_verify_catches_a_flipped_byte(market, tmp_path, victim):
    (b,) = _pkgs(tmp_path, 1)
    lw_id = api.submit(b.package, market).id
    f = market / "learnwares" / lw_id / victim
    data = bytearray(f.read_bytes())
    pos = len(data) // 2
    data[pos] ^= 0x01
    f.chmod(0o644)
    f.write_bytes(bytes(data))
    rep = api.market_verify(market)
    assert not rep.ok
    assert any(p["kind"] == "tampered" for p in rep.problems)
    proc = run_cli("market", "verify", "--market", market, check=5)
    assert "tampered" in proc.stdout


def test_verify_catches_missing_extra_files_and_a_corrupt_index(market, tmp_path):
    (b1,) = _pkgs(tmp_path, 1)
    lw_id = api.submit(b1.package, market).id
    assert api.market_verify(market).ok
    (market / "learnwares" / lw_id / "notes.txt").write_text("hi")
    kinds = {p["kind"] for p in api.market_verify(market).problems}
    assert "extra" in kinds
    (market / "learnwares" / lw_id / "notes.txt").unlink()
    gen = (market / "index" / "CURRENT").read_text().strip()
    npy = next((market / "index" / gen).glob("*.points.npy"))
    arr = np.load(npy)
    arr[0, 0, 0] += 1.0
    np.save(npy, arr)
    assert {p["kind"] for p in api.market_verify(market).problems} == {"index"}
    assert api.market_refresh(market, force=True)["changed"]
    assert api.market_verify(market).ok
    (market / "learnwares" / lw_id / "rkme.json").unlink()
    assert "missing" in {p["kind"] for p in api.market_verify(market).problems}


def test_refresh_is_idempotent_and_rebuilds_a_deleted_index(market, tmp_path):
    pk = _pkgs(tmp_path, 1)
    lw_id = api.submit(pk[0].package, market).id
    r1 = api.market_refresh(market)
    assert not r1["index_changed"]                # submit already kept the index current
    before = snapshot(market)
    assert not api.market_refresh(market)["changed"]
    assert snapshot(market) == before
    import shutil

    shutil.rmtree(market / "index")
    # search still works without an index, and says how to speed it up
    X, _ = domain_data(0, 100, seed=3)
    from conftest import write_user

    res = api.search(market, data=write_user(tmp_path / "u.csv", X))
    assert res.single[0]["id"] == lw_id and res.warnings
    r2 = api.market_refresh(market)
    assert r2["changed"] and r2["generation"] == r1["generation"]
    assert api.market_verify(market).ok


def test_island_metric_is_enforced_on_submit(market, tmp_path):
    a, b = _pkgs(tmp_path, 2, market=None)   # each spec fitted with its own data's metric
    api.submit(a.package, market)
    before = snapshot(market)
    with pytest.raises(MetricMismatchError, match="lw spec"):
        api.submit(b.package, market)
    assert snapshot(market) == before
    # refitted against the market, it is accepted
    X, y = domain_data(1, 300, seed=1)
    fixed = build_learnware(tmp_path / "fixed", "lw-1", X, y, market=market, k=20)
    assert api.submit(fixed.package, market).status == "added"


def test_pickle_needs_trust_at_pack_and_submit(market, tmp_path):
    from sklearn.linear_model import Ridge

    X, y = domain_data(0, 300, seed=0)
    with pytest.raises(UntrustedModelError):
        build_learnware(tmp_path, "pk", X, y, fmt="pickle", model=Ridge().fit(X, y))
    b = build_learnware(tmp_path, "pk2", X, y, fmt="pickle", model=Ridge().fit(X, y), trust=True)
    before = snapshot(market)
    with pytest.raises(UntrustedModelError, match="--trust"):
        api.submit(b.package, market)
    assert snapshot(market) == before
    res = api.submit(b.package, market, trust=True)
    assert res.status == "added"
    assert api.market_info(market, res.id)["record"]["trusted_load"] is True


def test_onnx_models_are_accepted(market, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("skl2onnx")
    X, y = domain_data(0, 300, seed=0)
    b = build_learnware(tmp_path, "ox", X, y, fmt="onnx")
    res = api.submit(b.package, market)
    assert res.status == "added" and res.qa["agreement"] > 0.95


def _trusted_bad_model(tmp_path, market, cls_name):
    import slow_model

    X, y = domain_data(0, 300, seed=0)
    from sklearn.linear_model import Ridge

    good = build_learnware(tmp_path, "good", X, y, fmt="pickle", model=Ridge().fit(X, y),
                           trust=True, market=market)
    bad = pickle.dumps(getattr(slow_model, cls_name)())
    from lwcli.market.package import build_package, read_package

    pkg = read_package(good.package)
    path = tmp_path / f"{cls_name}.lw"
    path.write_bytes(build_package(pkg.manifest, pkg.spec, bad))
    return path


@pytest.mark.system
@pytest.mark.parametrize("cls_name,match", [("SlowModel", "within"), ("CrashingModel", "crashed")])
def test_hanging_or_crashing_model_is_rejected_without_harm(market, tmp_path, monkeypatch,
                                                            cls_name, match):
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    monkeypatch.syspath_prepend(str(HERE))
    path = _trusted_bad_model(tmp_path, market, cls_name)
    before = snapshot(market)
    t0 = time.monotonic()
    with pytest.raises(ModelCheckError, match=match):
        api.submit(path, market, trust=True, timeout=2)
    assert time.monotonic() - t0 < 60
    assert snapshot(market) == before


def test_wrong_feature_count_model_fails_qa(market, tmp_path):
    from sklearn.linear_model import Ridge

    X, y = domain_data(0, 300, seed=0)
    b = build_learnware(tmp_path, "ok", X, y, market=market)
    import skops.io as sio

    wrong = Ridge().fit(X[:, :3], y)                   # expects 3 features, manifest says 4
    from lwcli.market.package import build_package, read_package

    pkg = read_package(b.package)
    path = tmp_path / "wrong.lw"
    path.write_bytes(build_package(pkg.manifest, pkg.spec, sio.dumps(wrong)))
    with pytest.raises(ModelCheckError, match="features"):
        api.submit(path, market)


def test_unknown_id_is_not_found(market):
    with pytest.raises(NotFoundError):
        api.market_info(market, "0123456789abcdef")
    with pytest.raises(NotFoundError):
        api.market_info(market, "../../etc")


def test_record_is_json_with_checksum(market, tmp_path):
    (b,) = _pkgs(tmp_path, 1)
    lw_id = api.submit(b.package, market).id
    rec = json.loads((market / "learnwares" / lw_id / "record.json").read_text())
    from lwcli.market.store import record_checksum

    assert rec["record_sha256"] == record_checksum(rec)
    assert set(rec["files"]) == {"learnware.toml", "rkme.json", "model.skops"}


def test_qa_agreement_is_a_rate_even_when_the_weights_sum_to_one_plus_rounding():
    """A perfect classifier on a spec whose weights sum to 1 plus rounding scored
    1.0000000000000002, which the market's own record check then refused as malformed (the
    submit failed as "damaged"). A spec's weights are on the simplex to 1e-6; the weighted
    accuracy is a rate in [0, 1] whatever they sum to within that."""
    from lwcli.engine.kernel import KernelMetric
    from lwcli.engine.rkme import RKME
    from lwcli.market.checks import agreement
    from lwcli.specfile import Spec

    beta = np.full(7, (1 + 7e-9) / 7)
    Y = np.eye(3)[np.arange(7) % 3]
    rkme = RKME(beta, np.hstack([np.arange(7.0)[:, None], Y]),
                KernelMetric((1.0, 1.0, 1.0, 1.0), 0.5, 1), 7, 0.0)
    spec = Spec(rkme, ("x",), "classification", ("a", "b", "c"), "model")
    value, metric = agreement(spec, Y)
    assert metric == "weighted_accuracy" and value == 1.0
