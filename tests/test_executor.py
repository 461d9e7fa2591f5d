"""Batch work through one executor (lwcli.executor): here, in local processes (--jobs) and on a
real Dask cluster (distributed.LocalCluster, worker processes on 127.0.0.1). Whatever ran the
pieces, the specs, index and anchors written are the same bytes; a worker killed mid-batch
loses nothing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import domain_data, market_tree, read_json, run_cli, write_user
from lwcli import api
from lwcli.errors import SchedulerError, UsageError
from lwcli.executor import (DaskExecutor, Deferred, InProcess, ProcessPool, chunks,
                            open_executor, single_threaded)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_market" / "market"


def _square(x):
    return x * x


def _fails_on_three(x):
    from lwcli.errors import DataError

    if x == 3:
        raise DataError("three is bad", "use another number")
    return x


def _threads(_):
    import torch

    return torch.get_num_threads()


def _setting(_):
    from lwcli.settings import qa_timeout

    return qa_timeout()


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded Dask worker processes on 127.0.0.1, for the module."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=50) as c:
        yield c.scheduler_address


@pytest.fixture
def data_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for dom in range(5):
        X, y = domain_data(dom % 3, 150 + 20 * dom, seed=dom)
        write_user(data / f"site{dom}.csv", X, y)
    return data


def _specs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.rkme.json"))}


# ------------------------------------------------------------------ choosing an executor

def test_open_executor_picks_from_flags_and_settings(monkeypatch):
    assert isinstance(open_executor(), InProcess)
    assert isinstance(open_executor(jobs=1), InProcess)
    with open_executor(jobs=2) as ex:
        assert isinstance(ex, ProcessPool) and ex.width == 2
    monkeypatch.setenv("LW_JOBS", "3")
    with open_executor() as ex:
        assert isinstance(ex, ProcessPool) and ex.width == 3
    assert isinstance(open_executor(jobs=1), InProcess)          # the flag wins
    with pytest.raises(UsageError, match="LW_JOBS='x'"):
        monkeypatch.setenv("LW_JOBS", "x")
        open_executor()
    monkeypatch.delenv("LW_JOBS")
    with pytest.raises(UsageError, match="both --jobs and --scheduler"):
        open_executor(jobs=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(UsageError, match="--jobs must be >= 1"):
        open_executor(jobs=0)
    # deferred: nothing is started or connected until there is work
    ex = open_executor(scheduler="tcp://127.0.0.1:1", deferred=True)
    assert isinstance(ex, Deferred) and ex.kind == "dask" and ex._inner is None
    ex.close()


def test_chunks_cover_everything_in_order():
    assert chunks([], 4) == []
    assert chunks(range(5), 1) == [[0, 1, 2, 3, 4]]
    parts = chunks(range(100), 2)
    assert [x for p in parts for x in p] == list(range(100)) and len(parts) == 8
    assert max(len(p) for p in chunks(range(10_000), 2, most=64)) == 64


@pytest.mark.parametrize("make", [InProcess, lambda: ProcessPool(2)], ids=["here", "jobs2"])
def test_results_in_order_errors_reported_single_threaded(make):
    seen = []
    with make() as ex:
        out = ex.run(_fails_on_three, list(range(6)), lambda i, r: seen.append(i))
        assert out[:3] == [0, 1, 2] and out[4:] == [4, 5]
        assert type(out[3]).__name__ == "DataError" and out[3].hint == "use another number"
        assert sorted(seen) == list(range(6))
        assert ex.run(_threads, [0, 1]) == [1, 1]     # pieces run single-threaded everywhere
        assert ex.run(_square, []) == []


def test_single_threaded_restores_the_thread_count():
    import torch

    before = torch.get_num_threads()
    with single_threaded():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_pieces_run_under_the_callers_settings(monkeypatch):
    monkeypatch.setenv("LW_QA_TIMEOUT", "7")
    with ProcessPool(2) as ex:
        assert ex.run(_setting, [0, 1]) == [7.0, 7.0]
        monkeypatch.setenv("LW_QA_TIMEOUT", "9")          # a long-lived process changes it
        assert ex.run(_setting, [0]) == [9.0]


# ------------------------------------------------------------------ clear errors

def test_missing_dask_extra_is_a_clear_error(tmp_path, data_folder):
    """Without the extra installed (its import blocked, as on a machine without it), asking
    for a scheduler names the extra; exit 6, nothing written."""
    out = tmp_path / "specs"
    out.mkdir()
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('distributed', 'dask'):\n"
            "            raise ImportError('blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from lwcli.cli.main import main\n"
            "sys.argv = ['lw'] + sys.argv[1:]\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code, "spec", str(data_folder), "--target", "y",
                           "--out-dir", str(out), "--scheduler", "tcp://127.0.0.1:8786"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, LW_DEVICE="cpu", PYTHONWARNINGS="ignore"))
    assert proc.returncode == 6, proc.stderr
    assert "pip install 'lwcli[dask]'" in proc.stderr and proc.stderr.count("\n") == 1
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_unreachable_scheduler_is_a_clear_error(tmp_path, data_folder):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                   # nothing listens there now
    out = tmp_path / "specs"
    out.mkdir()
    res = run_cli("spec", data_folder, "--target", "y", "--out-dir", out, "--scheduler",
                  f"tcp://127.0.0.1:{port}", check=6)
    assert f"could not reach the Dask scheduler at tcp://127.0.0.1:{port}" in res.stderr
    assert res.stderr.count("\n") == 1 and list(out.iterdir()) == []
    with pytest.raises(SchedulerError):
        DaskExecutor(f"tcp://127.0.0.1:{port}")


def test_a_malformed_scheduler_address_is_a_usage_error_at_once(tmp_path, data_folder):
    out = tmp_path / "specs"
    out.mkdir()
    for bad in ("notanaddress", "tcp://host-without-port", "garbage://x"):
        res = run_cli("spec", data_folder, "--target", "y", "--out-dir", out, "--scheduler",
                      bad, check=2)
        assert "is not a Dask scheduler address" in res.stderr
        assert res.stderr.count("\n") == 1
    assert list(out.iterdir()) == []


def test_both_settings_set_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("LW_JOBS", "2")
    monkeypatch.setenv("LW_SCHEDULER", "tcp://127.0.0.1:8786")
    with pytest.raises(UsageError, match="both LW_JOBS and LW_SCHEDULER"):
        open_executor()
    assert isinstance(open_executor(jobs=1), InProcess)        # a flag decides


def test_flags_are_checked_before_the_output_folder(tmp_path, data_folder):
    res = run_cli("spec", data_folder, "--target", "y", "--out-dir", tmp_path / "missing",
                  "--jobs", "2", "--scheduler", "tcp://127.0.0.1:1", check=2)
    assert "both --jobs and --scheduler" in res.stderr


def test_jobs_for_one_file_is_a_usage_error(tmp_path, data_folder):
    res = run_cli("spec", data_folder / "site0.csv", "--target", "y", "-o", tmp_path / "a.json",
                  "--jobs", "2", check=2)
    assert "--jobs given for one file" in res.stderr


# ------------------------------------------------------------------ same bytes everywhere

@pytest.mark.system
def test_spec_batch_same_bytes_here_in_processes_and_on_dask(tmp_path, data_folder, cluster):
    outs = {}
    for name, extra in [("here", []), ("jobs", ["--jobs", "2"]),
                        ("dask", ["--scheduler", cluster])]:
        out = tmp_path / name
        out.mkdir()
        doc = read_json(run_cli("spec", data_folder, "--target", "y", "--k", "20",
                                "--out-dir", out, "--json", *extra).stdout)
        assert len(doc["written"]) == 5 and doc["failed"] == []
        # reported in the files' order whatever order the pieces finished in
        assert [Path(w["data"]).name for w in doc["written"]] == \
            [f"site{i}.csv" for i in range(5)]
        outs[name] = _specs(out)
    assert outs["here"] == outs["jobs"] == outs["dask"] and len(outs["here"]) == 5
    # and the one-file form, run single-threaded as a piece is, writes the same bytes
    with single_threaded():
        one = api.build_spec(data_folder / "site3.csv", target="y", k=20)
    assert one.to_bytes() == outs["here"]["site3.rkme.json"]


@pytest.mark.system
def test_relative_paths_reach_the_workers(tmp_path, data_folder, cluster, monkeypatch):
    """Dask workers run in their own working folder: the batch sends them absolute paths
    (data, market, model), and reports the paths as given."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").mkdir()
    res = api.build_specs(["data"], "rel", target="y", k=20, scheduler=cluster)
    assert len(res.written) == 5 and res.failed == []
    assert res.written[0]["data"] == "data/site0.csv"


@pytest.mark.system
def test_refresh_same_index_and_anchors_here_in_processes_and_on_dask(tmp_path, cluster):
    trees = {}
    for name, kw in [("here", {}), ("jobs", {"jobs": 2}), ("dask", {"scheduler": cluster})]:
        mk = tmp_path / name
        shutil.copytree(SAMPLE, mk)
        shutil.rmtree(mk / "index")
        shutil.rmtree(mk / "anchors")
        stages = []
        res = api.market_refresh(mk, progress=lambda s, d, t: stages.append((s, d, t)), **kw)
        assert res.changed and res.learnwares == 48 and not res.anchors["skipped"]
        assert ("index: islands", 2, 2) in stages
        assert any(s.startswith("anchors: table-regression") and d == t for s, d, t in stages)
        trees[name] = {k: v for k, v in market_tree(mk).items()
                       if k.startswith(("index", "anchors"))}
    assert trees["here"] == trees["jobs"] == trees["dask"]


# ------------------------------------------------------------------ a worker dies mid-batch

@pytest.mark.system
@pytest.mark.parametrize("where", ["jobs", "dask"])
def test_a_worker_killed_mid_batch_loses_nothing(tmp_path, data_folder, cluster, monkeypatch,
                                                 where):
    """The first piece to start SIGKILLs its worker process (``LW_CRASH_AT=piece@once:...``,
    carried to the worker with the piece); the piece runs again elsewhere and the batch
    writes every spec, the same bytes as an undisturbed run."""
    clean = tmp_path / "clean"
    clean.mkdir()
    api.build_specs([data_folder], clean, target="y", k=20)
    out = tmp_path / "out"
    out.mkdir()
    marker = tmp_path / "crashed"
    monkeypatch.setenv("LW_CRASH_AT", f"piece@once:{marker}")
    kw = {"jobs": 2} if where == "jobs" else {"scheduler": cluster}
    res = api.build_specs([data_folder], out, target="y", k=20, **kw)
    assert marker.exists()                       # a worker did die
    assert len(res.written) == 5 and res.failed == []
    assert _specs(out) == _specs(clean)
    assert not [p for p in out.iterdir() if p.name.startswith(".") and "tmp" in p.name]


@pytest.mark.system
@pytest.mark.parametrize("where", ["jobs", "dask"])
def test_a_piece_that_kills_every_worker_is_reported(tmp_path, data_folder, cluster,
                                                     monkeypatch, where):
    """A piece that kills its worker each time it runs (``LW_CRASH_AT=piece:2``: the third
    piece, in every process that runs it) is reported after 3 tries (exit 6); the others
    are written."""
    monkeypatch.setenv("LW_CRASH_AT", "piece:2")
    out = tmp_path / "out"
    out.mkdir()
    kw = {"jobs": 2} if where == "jobs" else {"scheduler": cluster}
    res = api.build_specs([data_folder], out, target="y", k=20, **kw)
    assert [Path(f["data"]).name for f in res.failed] == ["site2.csv"]
    assert res.failed[0]["exit_code"] == 6
    assert len(res.written) == 4 and len(_specs(out)) == 4
