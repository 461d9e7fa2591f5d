"""A market on object storage, against a real local S3-compatible server (moto's, started here
on 127.0.0.1): every command, parallel submitters, a refresh racing a submit, search during a
refresh, kills during a submit, compare-and-swap conflicts retried, verify, clear errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import build_learnware, domain_data, read_json, run_cli, run_lw, spawn_lw
from lwcli import api

pytestmark = pytest.mark.system
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def s3_server():
    """The server, for the module; yields its environment (credentials, endpoint)."""
    proc = subprocess.Popen([sys.executable, str(HERE / "s3_server.py"), "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready"), line
        port = int(line.split()[1])
        yield {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3env(s3_server, monkeypatch, tmp_path):
    """This test's environment: the server's, and a cache of its own."""
    env = {**s3_server, "LW_CACHE_DIR": str(tmp_path / "cache")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _fs():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


@pytest.fixture
def url(s3env):
    """A fresh bucket and an empty market in it."""
    bucket = f"lw-{uuid.uuid4().hex[:12]}"
    _fs().mkdir(bucket)
    u = f"s3://{bucket}/market"
    api.market_init(u)
    return u


@pytest.fixture(scope="module")
def pkgs(world, tmp_path_factory):
    """Packages for the shared market's island (a, b and four more) and one for a new island."""
    w = tmp_path_factory.mktemp("s3pkgs")
    out = {"a": world["work"] / "work" / "a" / "pkg.lw", "b": world["pkg"]["same"],
           "new": world["pkg"]["new"]}
    for i in range(4):
        X, y = domain_data(i % 2, 200, seed=40 + i)
        out[f"p{i}"] = build_learnware(w, f"p{i}", X, y, market=world["base"], k=20).package
    return out


def _popen(*args, env: dict) -> subprocess.Popen:
    """A real ``lw`` process (several at once: the tests' warm launcher runs one at a time)."""
    return subprocess.Popen([str(Path(sys.executable).parent / "lw"), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env, "LW_DEVICE": "cpu",
                                 "PYTHONWARNINGS": "ignore"})


def _keys(url: str) -> list[str]:
    base = url.split("://", 1)[1]
    return sorted(k[len(base) + 1:] for k in _fs().find(base))


def test_every_command_on_s3(url, pkgs, world, s3env, tmp_path):
    a = read_json(run_cli("submit", pkgs["a"], "--market", url, "--json").stdout)
    assert a["status"] == "added" and a["island_created"]
    assert read_json(run_cli("submit", pkgs["a"], "--market", url, "--json").stdout)[
        "status"] == "exists"
    run_cli("submit", pkgs["b"], "--market", url)
    rows = read_json(run_cli("market", "ls", "--market", url, "--json").stdout)["learnwares"]
    assert len(rows) == 2
    keys = _keys(url)
    assert "market.toml" in keys and "index/CURRENT" in keys
    assert sum(k.endswith("/record.json") for k in keys) == 2
    ref = read_json(run_cli("market", "refresh", "--market", url, "--json").stdout)
    assert ref["anchors"]["changed"] and ref["anchors"]["models_run"] == 2
    again = read_json(run_cli("market", "refresh", "--market", url, "--json").stdout)
    assert again["changed"] is False
    found = read_json(run_cli("search", "--data", world["users"]["home"], "--target", "y",
                              "--market", url, "--json").stdout)
    assert found["single"][0]["id"] == a["id"]
    run_cli("anchor-eval", "--data", world["users"]["home"], "--target", "y", "--market", url,
            "-o", tmp_path / "r.json")
    out = tmp_path / "pred.csv"
    run_cli("reuse", a["id"], "--data", world["users"]["home"], "--market", url, "-o", out)
    assert out.read_text().count("\n") == 121
    info = read_json(run_cli("market", "info", "--market", url, "--json").stdout)
    assert info["islands"][0]["learnwares"] == 2
    assert read_json(run_cli("market", "verify", "--market", url, "--json").stdout)["ok"]
    # the island arrays were fetched once into the cache, and are read from there
    cached = list(Path(s3env["LW_CACHE_DIR"]).glob("markets/*/objects/index/gen-*/*.points.npy"))
    assert cached


def test_parallel_submitters_lose_nothing(url, pkgs, s3env):
    """Six processes at once: four packages, one of them twice (the same id from two
    writers), and b; every learnware is stored once and indexed, the market verifies."""
    api.submit(pkgs["a"], url)
    names = ["p0", "p1", "p2", "p3", "p0", "b"]
    procs = [_popen("submit", pkgs[n], "--market", url, "--json", env=s3env) for n in names]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    statuses = sorted(r["status"] for r, n in zip(results, names) if n == "p0")
    assert statuses == ["added", "exists"]
    rows = api.market_ls(url)
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    assert api.market_verify(url).ok


def test_a_refresh_racing_a_submit_and_searches_during_it(url, pkgs, world, s3env):
    for n in ("a", "b", "p0"):
        api.submit(pkgs[n], url)
    refresh = _popen("market", "refresh", "--market", url, "--force", env=s3env)
    submit = _popen("submit", pkgs["p1"], "--market", url, env=s3env)
    searched = 0
    while refresh.poll() is None or submit.poll() is None or searched == 0:
        res = api.search(url, data=world["users"]["home"], target="y")
        assert res.single
        searched += 1
    for p in (refresh, submit):
        assert p.wait(timeout=300) == 0, p.stderr.read()
    res = api.market_refresh(url)                       # the submit's learnware joins anchors
    assert res.learnwares == 4
    assert list(res.anchors["islands"].values())[0]["members"] == 4
    assert not api.market_refresh(url).changed
    assert len(api.market_ls(url)) == 4 and api.market_verify(url).ok


@pytest.mark.parametrize("crash", ["commit:staged", "submit:committed"])
def test_a_killed_submit(url, pkgs, s3env, crash):
    """Killed before its record is uploaded: nothing is visible; after: the learnware is stored
    and the next refresh indexes it. Either way the same submit again completes it."""
    api.submit(pkgs["a"], url)
    p = spawn_lw("submit", pkgs["b"], "--market", url, env={**s3env, "LW_CRASH_AT": crash})
    p.wait(timeout=300)
    assert p.returncode == -9
    ids = [r["id"] for r in api.market_ls(url)]
    assert len(ids) == 1
    rep = api.market_verify(url)
    if crash == "submit:committed":      # stored, not indexed: verify says so, refresh mends it
        assert [p["kind"] for p in rep.problems] == ["index"]
        assert "run lw market refresh" in rep.problems[0]["message"]
        res = api.market_refresh(url)
        assert res.index_changed and len(api.market_ls(url)) == 2
    else:
        assert rep.ok
    again = api.submit(pkgs["b"], url)
    assert again.status in ("added", "exists") and len(api.market_ls(url)) == 2
    assert api.market_verify(url).ok


def test_a_lost_compare_and_swap_is_retried(url, pkgs):
    """Writer A rebuilds the index while writer B submits: B swaps index/CURRENT first, so
    A's swap fails and A starts again from B's state; nothing of B's is lost."""
    from lwcli.market.index import build_index
    from lwcli.market.store import Market

    api.submit(pkgs["a"], url)
    mine = Market.open(url)
    calls = []

    def rebuild():
        calls.append(1)
        if len(calls) == 1:
            api.submit(pkgs["b"], url)          # another writer, another working copy
        return build_index(mine, force=True)

    mine.transact(rebuild)
    assert len(calls) == 2
    assert len(api.market_ls(url)) == 2 and api.market_verify(url).ok


def test_verify_catches_a_changed_object(url, pkgs):
    lw_id = api.submit(pkgs["a"], url).id
    api.market_ls(url)                                  # the cache holds the good copy
    base = url.split("://", 1)[1]
    model = next(k for k in _fs().find(f"{base}/learnwares/{lw_id}") if "model" in k)
    _fs().pipe_file(model, b"tampered")
    res = run_cli("market", "verify", "--market", url, "--json", check=5)
    problems = read_json(res.stdout)["problems"]
    assert any(p["path"] == f"s3://{model}" and "sha256" in p["message"] for p in problems)


def test_a_damaged_cache_is_fetched_again(url, pkgs, s3env, world, tmp_path):
    """A cached learnware file that no longer matches its record is fetched again from the
    store before anything is said: reuse and the anchors see the stored learnware."""
    lw_id = api.submit(pkgs["a"], url).id
    out = tmp_path / "p.csv"
    api.reuse(url, [lw_id], data=world["users"]["home"], out=out)
    cached = next(Path(s3env["LW_CACHE_DIR"]).glob(
        f"markets/*/objects/learnwares/{lw_id}/*.skops"))
    cached.write_bytes(b"damaged on this disk")
    api.reuse(url, [lw_id], data=world["users"]["home"], out=tmp_path / "q.csv")
    assert (tmp_path / "q.csv").read_bytes() == out.read_bytes()
    res = api.market_refresh(url, force=True)
    assert res.anchors["skipped"] == [] and res.anchors["models_run"] == 1


def test_clear_errors(s3env, url, tmp_path):
    bucket = url.split("/")[2]
    for bad in ("s3://", "s3:///m", "memory://x", "gs://b/m", f"s3://{bucket}/m/../x"):
        res = run_cli("market", "init", bad, check=2)
        assert res.stderr.count("\n") == 1, res.stderr
    res = run_cli("market", "ls", "--market", f"s3://no-such-{bucket}/m", check=3)
    assert "does not exist" in res.stderr and res.stderr.count("\n") == 1
    res = run_cli("market", "ls", "--market", f"s3://{bucket}/elsewhere", check=3)
    assert "is not an lw market" in res.stderr
    env = {k: v for k, v in s3env.items() if not k.startswith("AWS_ACCESS")
           and not k.startswith("AWS_SECRET")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for cmd in (["market", "ls", "--market", url], ["market", "init", url]):
        res = subprocess.run([str(Path(sys.executable).parent / "lw"), *cmd],
                             env={**clean, **env, "LW_DEVICE": "cpu"}, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 9 and "no credentials" in res.stderr, (cmd, res.stderr)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    for cmd in (["market", "ls", "--market", url], ["market", "init", url]):
        res = run_lw(*cmd, check=9, env={**s3env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                                          "AWS_MAX_ATTEMPTS": "1"})
        assert "could not" in res.stderr
    assert time.monotonic() - t0 < 120
