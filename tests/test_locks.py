"""The writers' locks (filelock): the market's ``.lock`` and a spec folder's state lock.

A second holder waits, then fails with :class:`LockTimeoutError` (a MarketError, exit code 5)
and a message naming the lock file. Short timeouts keep these tests fast.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from filelock import FileLock

from lwcli import api, locks
from lwcli.errors import LockTimeoutError, MarketError
from lwcli.market.layout import Layout
from lwcli.market.store import market_lock
from lwcli.specbatch import STATE, SpecFolder

from conftest import ROOT, domain_data, write_user


def _times_out(ctx, timeout: float) -> LockTimeoutError:
    t0 = time.monotonic()
    with pytest.raises(LockTimeoutError) as info:
        with ctx:
            pytest.fail("the lock was taken while another holder had it")
    waited = time.monotonic() - t0
    assert timeout <= waited < timeout + 5, waited
    return info.value


def test_market_lock_waits_then_fails_with_a_typed_error(market):
    lay = Layout(market)
    with FileLock(lay.lock):                      # another holder: a separate lock object
        err = _times_out(market_lock(lay, timeout=0.3), 0.3)
    assert isinstance(err, MarketError) and err.exit_code == 5
    assert str(err) == (f"could not lock {lay.lock} within 0.3 s "
                        "(another lw process is writing; retry later)")
    with market_lock(lay, timeout=0.3):           # free again
        pass
    assert lay.lock.is_file()                     # the lock file stays, as with flock


def test_market_lock_is_not_reentrant_across_calls(market):
    """Each market_lock call is a new lock: nested calls in one thread wait like two processes
    (as the flock on a fresh descriptor did), they do not silently share the hold."""
    lay = Layout(market)
    with market_lock(lay, timeout=0.3):
        _times_out(market_lock(lay, timeout=0.3), 0.3)


@pytest.mark.system
def test_market_lock_held_by_another_process(market):
    lay = Layout(market)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from lwcli.market.layout import Layout
            from lwcli.market.store import market_lock
            with market_lock(Layout(Path({str(market)!r}))):
                print("held", flush=True)
                sys.stdin.read()
            """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        _times_out(market_lock(lay, timeout=0.3), 0.3)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    with market_lock(lay, timeout=5):             # released when the holder exits
        pass


def test_cli_exits_5_when_the_market_lock_is_held(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lwcli.cli.main import app

    monkeypatch.setattr(locks, "DEFAULT_TIMEOUT", 0.3)
    market = tmp_path / "new-market"          # creating it needs the lock; another holds it
    market.mkdir()
    with FileLock(Layout(market).lock):
        res = CliRunner().invoke(app, ["market", "init", str(market)])
    assert res.exit_code == 5, res.output
    assert f"lw: error: could not lock {Layout(market).lock} within 0.3 s" in res.output
    assert not (market / "market.toml").exists() and not (market / "tmp").exists()
    # an existing market needs no lock to be "initialised" again (read-only markets too)
    with FileLock(Layout(market).lock):
        pass
    api.market_init(market)
    with FileLock(Layout(market).lock):
        res = CliRunner().invoke(app, ["market", "init", str(market)])
    assert res.exit_code == 0, res.output


def test_spec_folder_lock_waits_then_fails_with_a_typed_error(tmp_path):
    folder = SpecFolder(tmp_path, lock_timeout=0.3)
    with FileLock(tmp_path / (STATE + ".lock")):
        err = _times_out(folder._locked(), 0.3)
    assert err.exit_code == 5
    assert str(err) == (f"could not lock {tmp_path / (STATE + '.lock')} within 0.3 s "
                        "(another lw spec run is writing to this folder; retry later)")
    with folder._locked():
        pass


def test_spec_batch_reports_a_held_folder_lock_as_a_failure_with_exit_code_5(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(locks, "DEFAULT_TIMEOUT", 0.3)
    data = tmp_path / "u.csv"
    write_user(data, *domain_data(0, 80, seed=1))
    out = tmp_path / "specs"
    out.mkdir()
    with FileLock(out / (STATE + ".lock")):
        res = api.build_specs([data], out, target="y", k=10)
    assert res.written == [] and len(res.failed) == 1
    assert res.failed[0]["exit_code"] == 5
    assert res.failed[0]["error"].startswith(f"could not lock {out / (STATE + '.lock')}")
    assert not (out / "u.rkme.json").exists()
    assert api.build_specs([data], out, target="y", k=10).written       # free again


@pytest.mark.system
def test_lw_imports_without_fcntl():
    """Neither lock imports fcntl: lw imports where there is none (Windows)."""
    code = ("import sys; sys.modules['fcntl'] = None; "
            "import lwcli.market.store, lwcli.specbatch, lwcli.api, lwcli.cli.main")
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for mod in ("lwcli/market/store.py", "lwcli/specbatch.py", "lwcli/locks.py"):
        assert "fcntl" not in (ROOT / mod).read_text()
