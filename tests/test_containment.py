"""Stored and submitted models run contained (issue 13, points 1 and 2).

Real processes throughout: hostile models are pickles of small classes written to a module in
the test's own folder (loaded only with --trust, the one path where a model may run code), so
the QA worker, the re-ranking and the anchors really run them. Time limits are small; the
waits below are generous guards, never measurements.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import build_learnware, domain_data, market_tree, snapshot, write_user
from lwcli import api
from lwcli.errors import ModelCheckError
from lwcli.market.contained import STDERR_KEEP, Item, _Tail, run_contained

LW = Path(sys.executable).parent / "lw"

pytestmark = pytest.mark.system

HOSTILE_MODULE = '''
import os, subprocess, sys, time
import numpy as np


class SpawnAndHang:
    """Starts a sleeping grandchild, records both pids, then hangs."""
    def __init__(self, pidfile):
        self.pidfile = pidfile

    def predict(self, X):
        child = subprocess.Popen(["sleep", "600"])
        with open(self.pidfile + ".tmp", "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
        os.replace(self.pidfile + ".tmp", self.pidfile)
        time.sleep(600)


class StderrFlood:
    """Writes ``mb`` MiB to stderr, then predicts zeros."""
    def __init__(self, mb):
        self.mb = mb

    def predict(self, X):
        chunk = b"x" * (1 << 20)
        for _ in range(self.mb):
            sys.stderr.buffer.write(chunk)
        sys.stderr.flush()
        return np.zeros(len(X))


class Reports:
    """Predicts one number for every row: its worker's parent pid ("ppid") or an environment
    variable's value."""
    def __init__(self, what):
        self.what = what

    def predict(self, X):
        v = os.getppid() if self.what == "ppid" else os.environ.get(self.what, "nan")
        return np.full(len(X), float(v))


class SpawnsThen:
    """Starts a sleeping grandchild (sharing the worker's stderr), records its pid, then
    returns X @ w, segfaults or stops its parent (lw's fork server)."""
    def __init__(self, pidfile, how, w=None):
        self.pidfile, self.how, self.w = pidfile, how, w

    def predict(self, X):
        child = subprocess.Popen(["sleep", "600"])
        with open(self.pidfile, "w") as f:
            f.write(str(child.pid))
        if self.how == "segv":
            os.kill(os.getpid(), 11)
        if self.how == "stop-server":
            os.kill(os.getppid(), 19)
        return np.asarray(X) @ self.w


class Random:
    """Predicts numpy's global random stream."""
    def predict(self, X):
        return np.random.rand(len(X))


class KillsItsParent:
    """SIGKILLs the process that forked it (lw's fork server), then waits to be killed."""
    def predict(self, X):
        os.kill(os.getppid(), 9)
        time.sleep(60)


class FineThenCrash:
    """A linear model that passes QA (64+ rows) but segfaults on fewer rows."""
    def __init__(self, w, rows, how="segv"):
        self.w, self.rows, self.how = w, rows, how

    def predict(self, X):
        if len(X) < self.rows:
            if self.how == "segv":
                os.kill(os.getpid(), 11)
            time.sleep(600)
        return np.asarray(X) @ self.w


class FineThenCrashOnMany(FineThenCrash):
    """Passes QA, segfaults on ``rows`` rows or more (the anchors' 512 probes)."""
    def predict(self, X):
        if len(X) >= self.rows:
            os.kill(os.getpid(), 11)
        return np.asarray(X) @ self.w
'''


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """The hostile classes, importable here and in every child lw starts."""
    d = tmp_path / "hostile_pkg"
    d.mkdir()
    (d / "hostile_models.py").write_text(HOSTILE_MODULE)
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(d)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    sys.modules.pop("hostile_models", None)
    import hostile_models

    return hostile_models


@pytest.fixture
def systmp(tmp_path, monkeypatch) -> Path:
    """The system temp dir, for lw and its children: where QA job folders go."""
    d = tmp_path / "systmp"
    d.mkdir()
    monkeypatch.setenv("TMPDIR", str(d))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return d


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_until(cond, limit: float = 30.0) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def package_with(tmp_path, market, model) -> Path:
    from lwcli.market.package import build_package, read_package

    X, y = domain_data(0, 200, seed=0)
    good = build_learnware(tmp_path, "good", X, y, market=market)
    pkg = read_package(good.package)
    man = dataclasses.replace(pkg.manifest, model_format="pickle", model_file="model.pkl")
    path = tmp_path / "hostile.lw"
    path.write_bytes(build_package(man, pkg.spec, pickle.dumps(model)))
    return path


def test_a_model_that_spawns_and_hangs_is_killed_with_its_children(tmp_path, market, hostile,
                                                                  systmp):
    pidfile = tmp_path / "pids"
    path = package_with(tmp_path, market, hostile.SpawnAndHang(str(pidfile)))
    before = snapshot(market)
    with pytest.raises(ModelCheckError, match="within"):
        api.submit(path, market, trust=True, timeout=8)
    pids = [int(p) for p in pidfile.read_text().split()]
    assert wait_until(lambda: not any(alive(p) for p in pids)), pids
    assert list(systmp.iterdir()) == []
    assert snapshot(market) == before


def test_lw_killed_during_qa_leaves_no_process_and_no_job_folder(tmp_path, market, hostile,
                                                                 systmp):
    pidfile = tmp_path / "pids"
    path = package_with(tmp_path, market, hostile.SpawnAndHang(str(pidfile)))
    before = snapshot(market)
    proc = subprocess.Popen([str(LW), "submit", str(path), "--market", str(market), "--trust",
                             "--timeout", "300"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, LW_DEVICE="cpu"))
    try:
        assert wait_until(pidfile.exists, 120), "the model never started"
        assert any(p.name.startswith("lw-qa-") for p in systmp.iterdir())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    pids = [int(p) for p in pidfile.read_text().split()]
    assert wait_until(lambda: not any(alive(p) for p in pids)), pids
    assert wait_until(lambda: list(systmp.iterdir()) == [])
    assert snapshot(market) == before


def test_a_flood_on_stderr_does_not_grow_lw(tmp_path, market, hostile, systmp):
    """300 MiB written to stderr by the model: lw keeps only the tail (the bounded reader is
    checked directly, and lw's peak RSS stays near that of a quiet run)."""
    r, w = os.pipe()
    tail = _Tail(os.fdopen(r, "rb"))
    tail.start()
    with os.fdopen(w, "wb") as out:
        for _ in range(64):
            out.write(b"y" * (1 << 20))
    tail.join(60)
    assert tail.total == 64 << 20 and len(tail.buf) == STDERR_KEEP

    def peak_rss_kib(model) -> int:
        path = package_with(tmp_path, market, model)
        proc = subprocess.Popen([str(LW), "submit", str(path), "--market", str(market),
                                 "--trust", "--timeout", "120"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, LW_DEVICE="cpu"))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode in (0, 4, 5, 7), proc.returncode
        return usage.ru_maxrss          # lw, or its largest waited-for child

    quiet = peak_rss_kib(hostile.StderrFlood(0))
    flood = peak_rss_kib(hostile.StderrFlood(300))
    assert flood - quiet < 150 * 1024, (quiet, flood)


def test_a_rejected_submit_leaves_a_market_without_tmp_byte_for_byte_unchanged(
        tmp_path, market, hostile, systmp):
    import shutil

    pidfile = tmp_path / "pids"
    path = package_with(tmp_path, market, hostile.SpawnAndHang(str(pidfile)))
    shutil.rmtree(market / "tmp", ignore_errors=True)    # markets keep no tmp/ between writes
    before = market_tree(market)
    with pytest.raises(ModelCheckError):
        api.submit(path, market, trust=True, timeout=2)
    assert market_tree(market) == before
    assert not (market / "tmp").exists()
    assert list(systmp.iterdir()) == []


# ---------------------------------------------------------------------------- batches

def test_a_batch_reports_the_crash_and_the_hang_and_runs_the_others(hostile, systmp):
    w = np.array([1.0, 2.0])
    X = np.arange(20.0).reshape(10, 2)

    def item(model):
        return Item(pickle.dumps(model), "pickle", ["a", "b"], "regression", ["y"], X,
                    mode="outputs")

    good = hostile.FineThenCrash(w, 0)
    res = run_contained([item(good), item(hostile.FineThenCrash(w, 100, "segv")), item(good),
                         item(hostile.FineThenCrash(w, 100, "hang")), item(good)],
                        trust=True, timeout=5)
    for i in (0, 2, 4):
        np.testing.assert_array_equal(res[i], (X @ w).reshape(-1, 1))
    assert isinstance(res[1], ModelCheckError) and "SIGSEGV" in res[1].message
    assert isinstance(res[3], ModelCheckError) and "within 5 s" in res[3].message
    assert list(systmp.iterdir()) == []


@pytest.fixture
def three(tmp_path, market):
    """Three skops learnwares on one island, and a labelled user's data."""
    from sklearn.tree import DecisionTreeRegressor

    ids = []
    for i, model in enumerate([None, DecisionTreeRegressor(max_depth=3, random_state=0), None]):
        X, y = domain_data(0, 300, seed=i)
        if model is not None:
            model.fit(X, y)
        b = build_learnware(tmp_path, f"lw{i}", X, y, market=market, model=model)
        ids.append(api.submit(b.package, market).id)
    X, y = domain_data(0, 120, seed=9)
    return ids, write_user(tmp_path / "user.csv", X, y)


def test_contained_rerank_and_anchors_equal_the_in_process_results(market, three):
    from lwcli.engine.search import requirement_loss, requirement_sample
    from lwcli.market.anchors import probe_outputs
    from lwcli.market.models import load_learnware_model, model_outputs
    from lwcli.market.store import Market

    ids, user = three
    spec = api.build_spec(user, target="y", market=market, k=30, seed=0)
    res = api.search(market, spec=spec, top=3)
    assert res.ranked_by == "requirement-loss"
    X, _, _ = requirement_sample(spec.rkme)
    for lw in api.load_learnwares(market, ids, with_specs=False):
        row = next(r for r in res.single if r["id"] == lw.id)
        loss = float(np.sqrt(requirement_loss(lw.predict_values(X), spec.rkme)))
        assert row["requirement_loss"] == loss

    mk = Market.open(market)
    manifests = {i: mk.manifest(i) for i in ids}
    P = np.random.default_rng(0).normal(size=(50, 4))
    outs, kept, failed = probe_outputs(mk, ids, P, False, manifests[ids[0]].island_id())
    assert kept == ids and failed == []
    for n, i in enumerate(ids):
        m = manifests[i]
        own = model_outputs(load_learnware_model(mk.model_bytes(i), m.model_format, m.features),
                            P, m.task, m.outputs)
        np.testing.assert_array_equal(outs[n], own)


def test_a_stored_model_that_crashes_or_hangs_is_reported_by_search_and_refresh(
        tmp_path, market, three, hostile, systmp, monkeypatch):
    from lwcli.market.package import build_package, read_package

    ids, user = three
    X, y = domain_data(0, 300, seed=5)
    base = build_learnware(tmp_path, "crashy", X, y, market=market)
    pkg = read_package(base.package)
    w = np.linalg.lstsq(X, y, rcond=None)[0]
    added = {}
    for how in ("segv", "hang"):
        man = dataclasses.replace(pkg.manifest, model_format="pickle", model_file="model.pkl",
                                  name=f"crashy-{how}")
        p = tmp_path / f"{how}.lw"
        p.write_bytes(build_package(man, pkg.spec, pickle.dumps(
            hostile.FineThenCrash(w, 64 if how == "segv" else 60, how))))
        added[how] = api.submit(p, market, trust=True, timeout=60).id
    monkeypatch.setenv("LW_QA_TIMEOUT", "5")
    res = api.search(market, data=user, target="y", top=5, trust=True, k=30)
    notes = " ".join(res.warnings)
    assert f"{added['segv']}: the model crashed its process (signal SIGSEGV)" in notes
    assert f"{added['hang']}: the model did not answer" in notes
    assert {r["id"] for r in res.single if "requirement_loss" in r} == set(ids)
    out = api.market_refresh(market, trust=True, force=True)
    assert out.anchors["skipped"] == []              # 512 probes: these two answer
    # one that crashes on the anchors' probes is reported and not run again: a stored model
    # never changes; only what is new runs
    man = dataclasses.replace(pkg.manifest, model_format="pickle", model_file="model.pkl",
                              name="crashy-many")
    p = tmp_path / "many.lw"
    p.write_bytes(build_package(man, pkg.spec, pickle.dumps(
        hostile.FineThenCrashOnMany(w, 400))))
    many = api.submit(p, market, trust=True, timeout=60).id
    out = api.market_refresh(market, trust=True).anchors
    assert out["models_run"] == 1
    (failed,) = out["skipped"]
    assert failed["id"] == many and failed["failed"] and "SIGSEGV" in failed["reason"]
    Xn, yn = domain_data(0, 300, seed=6)
    api.submit(build_learnware(tmp_path, "late", Xn, yn, market=market).package, market)
    again = api.market_refresh(market, trust=True).anchors
    assert again["models_run"] == 1 and again["skipped"] == out["skipped"]
    assert list(systmp.iterdir()) == []


def fresh_server(monkeypatch, path) -> None:
    """Make the next contained run start a new fork server (PYTHONPATH decides imports)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p] + [str(path)]))


def _linear_item(X):
    import skops.io as sio
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(X, X @ np.arange(1.0, X.shape[1] + 1))
    return Item(sio.dumps(model), "skops", [f"f{i}" for i in range(X.shape[1])], "regression",
                ["y"], X)


def test_a_lwcli_folder_in_the_working_directory_never_runs(tmp_path, monkeypatch):
    """Field report: ``python -m`` put the user's working directory first on the children's
    sys.path, so a ``lwcli/`` folder there ran without --trust. The children run in their job
    folder."""
    shadow = tmp_path / "shadow"
    pwned = tmp_path / "PWNED"
    for mod in ("lwcli/__init__.py", "lwcli/market/__init__.py", "lwcli/market/contained.py",
                "lwcli/market/probe.py"):
        (shadow / mod).parent.mkdir(parents=True, exist_ok=True)
        (shadow / mod).write_text(f"open({str(pwned)!r}, 'w').write('x')\n")
    monkeypatch.chdir(shadow)
    fresh_server(monkeypatch, tmp_path)
    X = np.random.default_rng(0).normal(size=(8, 3))
    (out,) = run_contained([_linear_item(X)], trust=False, timeout=60)
    np.testing.assert_allclose(out[:, 0], X @ [1.0, 2.0, 3.0], rtol=1e-9)
    assert not pwned.exists()


def test_job_folders_of_dead_lw_processes_are_collected_never_a_live_ones(tmp_path, monkeypatch):
    """An lw killed after its worker ended but before its own clean-up leaves its job folder;
    the next contained run removes it, unless a live process holds its owner lock or it is
    younger than STALE_S."""
    from filelock import FileLock

    from lwcli.market import contained

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old = time.time() - 2 * contained.STALE_S
    folders = {}
    for name in ("dead", "live", "young", "no-owner"):
        d = tmp_path / f"{contained.JOB_PREFIX}{name}"
        d.mkdir()
        (d / "model-0.bin").write_bytes(b"x")
        if name != "no-owner":
            (d / contained.OWNER).touch()
        folders[name] = d
    live = FileLock(folders["live"] / contained.OWNER)
    live.acquire()
    try:
        for name in ("dead", "live", "no-owner"):
            os.utime(folders[name], (old, old))
        run_contained([_linear_item(np.ones((4, 2)))], trust=False, timeout=60)
        left = sorted(p.name for p in tmp_path.glob(contained.JOB_PREFIX + "*"))
    finally:
        live.release()
    assert left == [f"{contained.JOB_PREFIX}live", f"{contained.JOB_PREFIX}young"]


# ---------------------------------------------------------------------------- the fork server

def _one(model, X=np.ones((3, 2))):
    (out,) = run_contained([Item(pickle.dumps(model), "pickle", ["a", "b"], "regression", ["y"],
                                 X)], trust=True, timeout=30)
    return out


def test_batches_share_a_fork_server_and_see_lws_environment_now(hostile, systmp,
                                                                  monkeypatch):
    """One warm server forks every batch's worker, also those of a process forked from lw; a
    worker sees lw's environment as it is when its batch starts; a change of PYTHONPATH (what
    the server could import) replaces the server, and the replaced one exits."""
    first = _one(hostile.Reports("ppid"))[0, 0]
    assert _one(hostile.Reports("ppid"))[0, 0] == first
    assert alive(int(first)) and int(first) != os.getpid()
    monkeypatch.setenv("LW_TEST_MARK", "7.5")
    assert _one(hostile.Reports("LW_TEST_MARK"))[0, 0] == 7.5
    monkeypatch.setenv("LW_TEST_MARK", "8.5")
    assert _one(hostile.Reports("LW_TEST_MARK"))[0, 0] == 8.5
    assert _one(hostile.Reports("ppid"))[0, 0] == first
    r, w = os.pipe()
    child = os.fork()                 # a process forked from lw shares its server
    if child == 0:
        try:
            os.write(w, repr(float(_one(hostile.Reports("ppid"))[0, 0])).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as got:
        assert float(got.read()) == first
    os.waitpid(child, 0)
    fresh_server(monkeypatch, systmp)
    second = _one(hostile.Reports("ppid"))[0, 0]
    assert second != first
    assert wait_until(lambda: not alive(int(first)))
    assert list(systmp.iterdir()) == []


def test_a_model_that_kills_the_fork_server_is_reported_and_the_next_batch_runs(
        hostile, systmp):
    X = np.arange(6.0).reshape(3, 2)
    server = _one(hostile.Reports("ppid"))[0, 0]
    with pytest.raises(ModelCheckError, match="crashed its process"):
        res = _one(hostile.KillsItsParent(), X)
        raise res if isinstance(res, Exception) else AssertionError(res)
    assert wait_until(lambda: not alive(int(server)))
    np.testing.assert_array_equal(_one(hostile.FineThenCrash(np.array([1.0, 2.0]), 0), X)[:, 0],
                                  X @ [1.0, 2.0])
    assert _one(hostile.Reports("ppid"))[0, 0] != server
    assert list(systmp.iterdir()) == []


def test_what_a_model_started_dies_with_its_batch_and_lw_does_not_wait_for_it(
        hostile, systmp, tmp_path):
    """Field report: a grandchild that kept the worker's stderr outlived a batch that ended
    normally (or crashed), and lw waited on the pipe for as long as it lived."""
    X, w = np.arange(6.0).reshape(3, 2), np.array([1.0, 2.0])
    for how in ("return", "segv"):
        pidfile = tmp_path / f"{how}.pid"
        t0 = time.monotonic()
        out = _one(hostile.SpawnsThen(str(pidfile), how, w), X)
        assert time.monotonic() - t0 < 300                    # (a guard: it hung for 600 s)
        if how == "return":
            np.testing.assert_array_equal(out[:, 0], X @ w)
        else:
            assert isinstance(out, ModelCheckError) and "SIGSEGV" in out.message
        grandchild = int(pidfile.read_text())
        assert wait_until(lambda: not alive(grandchild)), how
    assert list(systmp.iterdir()) == []


def test_a_stopped_fork_server_is_replaced(hostile, systmp, tmp_path, monkeypatch):
    """A model that SIGSTOPs its server: the next batch is not left waiting on it. The stopped
    server is killed and a fresh one runs the batch."""
    from lwcli.market import contained

    monkeypatch.setattr(contained, "START_S", 3.0)
    X, w = np.arange(6.0).reshape(3, 2), np.array([1.0, 2.0])
    server = _one(hostile.Reports("ppid"))[0, 0]
    np.testing.assert_array_equal(
        _one(hostile.SpawnsThen(str(tmp_path / "pid"), "stop-server", w), X)[:, 0], X @ w)
    assert _one(hostile.Reports("ppid"))[0, 0] != server
    assert wait_until(lambda: not alive(int(server)))
    assert list(systmp.iterdir()) == []


def test_workers_get_any_environment_a_fresh_random_stream_and_lw_may_hold_many_fds(
        hostile, systmp, monkeypatch):
    """Field reports: an environment over 64 KiB was refused; every worker drew the same
    numpy random numbers (a fork copies the generator); select() failed once lw held an fd
    numbered 1024 or more."""
    import resource

    for i in range(4):                       # (one string may hold at most 128 KiB on Linux)
        monkeypatch.setenv(f"LW_TEST_BIG{i}", "é" * 60_000)
    monkeypatch.setenv("LW_TEST_MARK", "3.25")
    assert _one(hostile.Reports("LW_TEST_MARK"))[0, 0] == 3.25
    assert _one(hostile.Random())[0, 0] != _one(hostile.Random())[0, 0]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert _one(hostile.Reports("LW_TEST_MARK"))[0, 0] == 3.25
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_one_labelled_search_in_a_fresh_process_starts_one_fork_server():
    """Field report: importing scikit-learn sets KMP_* variables in lw's environment, which
    made the server started before the requirement was fitted look stale: two servers booted
    per search."""
    script = textwrap.dedent("""
        import json, sys
        from lwcli import api
        from lwcli.market import forkserver
        started = []
        init = forkserver.ForkServer.__init__
        def counted(self, env):
            started.append(1)
            init(self, env)
        forkserver.ForkServer.__init__ = counted
        res = api.search("sample_market/market", target="PM2.5", top=3, rerank=3,
                         data="sample_market/user/wanshouxigong_200h.csv")
        print(json.dumps({"servers": len(started), "by": res.ranked_by}))
        """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, LW_DEVICE="cpu"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"servers": 1, "by": "requirement-loss"}, out
