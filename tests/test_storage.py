"""Storage faults and housekeeping: a full disk (a real 2 MiB tmpfs where the machine allows
it, and write failures injected at the OS boundary with ``LW_FAIL_AT``), a read-only market,
stale temporaries, and operations that must leave the market byte for byte unchanged.

Full disk and read-only runs happen in a new user and mount namespace (``unshare --user
--map-root-user --mount``), so no test needs real root; they are skipped where that is not
available.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lwcli import api, faults
from lwcli.errors import StorageError

from conftest import build_learnware, domain_data, fork_lw, market_tree, run_cli, run_lw


tree = market_tree


def _copy(world, tmp_path, name="m") -> Path:
    market = tmp_path / name
    shutil.copytree(world["base"], market)
    return market


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# ------------------------------------------------------------------ injected write failures

@pytest.mark.system
@pytest.mark.parametrize("where", [
    ("same", "submit:intent"), ("same", "commit:staged"), ("same", "commit:renamed"),
    ("same", "generation:staged"), ("same", "generation:renamed"),
    ("same", "atomic-write:written@2"), ("new", "submit:island"), ("new", "generation:staged")],
    ids=lambda w: f"{w[0]}-{w[1]}")
def test_a_full_disk_during_submit_is_exit_9_and_changes_nothing(world, tmp_path, where):
    kind, point = where
    market = _copy(world, tmp_path)
    before = tree(market)
    proc = fork_lw("submit", world["pkg"][kind], "--market", market, check=9,
                   env={"LW_FAIL_AT": point})
    line = _one_line(proc.stderr)
    assert line.startswith("lw: error: could not write ") and "no space left on device" in line
    assert proc.stdout == ""
    assert tree(market) == before
    if point == "generation:staged":               # and the same submit then works
        fork_lw("submit", world["pkg"][kind], "--market", market)
        assert api.market_verify(market).ok


@pytest.mark.system
@pytest.mark.parametrize("err,cause", [("ENOSPC", "no space left on device"),
                                       ("EDQUOT", "no space left on device"),
                                       ("EROFS", "read-only filesystem"),
                                       ("EACCES", "permission denied")])
def test_a_failed_forced_refresh_is_exit_9_naming_the_cause_and_changes_nothing(
        world, tmp_path, err, cause):
    market = _copy(world, tmp_path)
    before = tree(market)
    proc = fork_lw("market", "refresh", "--force", "--market", market, check=9,
                   env={"LW_FAIL_AT": f"generation:staged@1={err}"})
    assert cause in _one_line(proc.stderr)
    assert tree(market) == before


@pytest.mark.system
def test_a_refresh_that_fails_at_the_anchors_leaves_a_whole_market(world, tmp_path):
    market = _copy(world, tmp_path)
    fork_lw("market", "refresh", "--force", "--market", market, check=9,
            env={"LW_FAIL_AT": "generation:renamed@2"})
    assert not (market / "tmp").exists()
    rep = api.market_verify(market)
    assert rep.ok and rep.warnings == [], (rep.problems, rep.warnings)


def test_storage_errors_name_the_cause(tmp_path):
    short = OSError("58500 requested and 12256 written")            # numpy, no errno
    assert "no space left on device" in str(faults.storage_error(short, tmp_path / "x.npy"))
    assert str(tmp_path / "x.npy") in str(faults.storage_error(short, tmp_path / "x.npy"))
    for code, cause in ((errno.ENOSPC, "no space"), (errno.EFBIG, "no space"),
                        (errno.EROFS, "read-only"), (errno.EPERM, "permission denied")):
        err = faults.storage_error(OSError(code, os.strerror(code), "/m/f"))
        assert isinstance(err, StorageError) and err.exit_code == 9 and cause in str(err)
        assert "/m/f" in str(err) and "\n" not in str(err)
    assert faults.storage_error(OSError(errno.EIO, "I/O error")) is None
    assert faults.storage_error(ValueError("x")) is None


def test_a_stray_storage_oserror_is_exit_9_at_the_cli_boundary(capsys):
    import typer

    from lwcli.cli._errors import handle_errors

    @handle_errors
    def boom():
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/file")

    with pytest.raises(typer.Exit) as info:
        boom()
    assert info.value.exit_code == 9
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on device" in err and "/somewhere/file" in err


# ------------------------------------------------------------------ nothing created, nothing left

def test_rejected_and_successful_submits_leave_no_tmp_folder(world, tmp_path):
    market = _copy(world, tmp_path)
    assert not (market / "tmp").exists()
    before = tree(market)
    # a package fitted with another metric is refused, after reading the market only
    X, y = domain_data(1, 300, seed=3)
    other = build_learnware(tmp_path / "w", "other", X, y, k=20)      # its own metric
    run_cli("submit", other.package, "--market", market, check=5)
    assert tree(market) == before
    run_cli("submit", world["pkg"]["same"], "--market", market)
    assert not (market / "tmp").exists()
    assert api.market_verify(market).ok


@pytest.mark.system
def test_stale_temporaries_are_collected_but_never_one_in_use(world, tmp_path):
    market = _copy(world, tmp_path)
    tmp = market / "tmp"
    (tmp / "qa-old1234" / "job").mkdir(parents=True)                  # an older lw's QA folder
    (tmp / "qa-old1234" / "job" / "model.skops").write_bytes(b"x" * 100)
    (tmp / "stage-0123456789abcdef-deadbeef").mkdir()
    (tmp / ".market.toml.0a1b.incomplete").write_bytes(b"half")
    (tmp / "index-cafe").mkdir()
    (tmp / "live-job").mkdir()                                        # owned by a live process
    gen = market / "index" / "gen-0123456789abcdef0123"               # an unused generation
    gen.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from filelock import FileLock
            with FileLock({str(tmp / 'live-job.owner')!r}):
                print("held", flush=True)
                sys.stdin.read()
            """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        run_cli("market", "ls", "--market", market)      # a reader on a writable market tidies
        assert sorted(p.name for p in tmp.iterdir()) == ["live-job", "live-job.owner"]
        assert not gen.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    run_cli("submit", world["pkg"]["same"], "--market", market)               # the owner died: gone
    assert not tmp.exists()
    rep = api.market_verify(market)
    assert rep.ok and [w for w in rep.warnings if w["kind"] != "stale-anchors"] == []


@pytest.mark.system
def test_a_no_op_refresh_takes_no_lock_and_writes_nothing(world, tmp_path):
    from filelock import FileLock

    market = _copy(world, tmp_path)
    before = tree(market)
    with FileLock(market / ".lock"):              # a writer holds the lock: no need to wait
        res = json.loads(fork_lw("market", "refresh", "--market", market, "--json",
                                 timeout=120).stdout)
    assert res["changed"] is False
    assert tree(market) == before


def test_a_forced_refresh_switches_to_a_fresh_generation(world, tmp_path):
    market = _copy(world, tmp_path)
    old_index = (market / "index" / "CURRENT").read_text().strip()
    old_anchors = (market / "anchors" / "CURRENT").read_text().strip()
    res = api.market_refresh(market, force=True)
    assert res["changed"] and res["generation"] != old_index
    assert res["generation"].startswith(old_index + "-")      # same digest, fresh folder
    assert res["anchors"]["generation"].startswith(old_anchors + "-")
    assert sorted(p.name for p in (market / "index").iterdir()) == ["CURRENT", res["generation"]]
    again = api.market_refresh(market)                # digests compared, not folder names
    assert not again["changed"] and again["generation"] == res["generation"]
    assert api.market_verify(market).ok


# ------------------------------------------------------------------ real filesystems

def _namespaces() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    try:
        probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                                "mount -t tmpfs -o size=1m tmpfs /mnt"],
                               capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


needs_ns = pytest.mark.skipif(not _namespaces(), reason="unshare --user --mount is unavailable")

_NS_PRELUDE = textwrap.dedent("""
    import hashlib, json, os, subprocess, sys, warnings
    from pathlib import Path

    def lw(*args):
        # lw in this process, through the CLI's own error boundary (exit codes are real)
        from typer.testing import CliRunner
        from lwcli.cli.main import app

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = CliRunner().invoke(app, [str(a) for a in args])
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise res.exception
        return {"rc": res.exit_code, "out": res.stdout, "err": res.stderr}

    def tree(root):
        out = {}
        for p in sorted(Path(root).rglob("*")):
            rel = str(p.relative_to(root))
            out[rel] = ("dir" if p.is_dir() else "lock" if p.name == ".lock"
                        else hashlib.sha256(p.read_bytes()).hexdigest())
        return out
    """)


def _in_namespace(body: str, *args, timeout: float = 900) -> dict:
    env = dict(os.environ, LW_DEVICE="cpu", PYTHONWARNINGS="ignore")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable,
                           "-c", _NS_PRELUDE + textwrap.dedent(body), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.system
@needs_ns
def test_a_real_full_disk_is_exit_9_and_changes_nothing(world, tmp_path):
    """A 2 MiB tmpfs holding the market, filled so that only a little is free: each submit
    either succeeds whole or fails with exit 9 naming the full disk and changes nothing."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = _in_namespace("""
        mnt, base, pkg = map(Path, sys.argv[1:4])
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
        results = []
        for leave in (0, 16384, 131072, 1048576):
            m = mnt / "m"
            subprocess.run(["cp", "-a", str(base), str(m)], check=True)
            st = os.statvfs(mnt)
            free = st.f_bavail * st.f_frsize
            with open(mnt / "filler", "wb") as fh:
                try:
                    fh.write(b"\\0" * max(free - leave, 0))
                    fh.flush()
                except OSError:
                    pass
            before = tree(m)
            r = lw("submit", pkg, "--market", m)
            r["changed"] = tree(m) != before
            (mnt / "filler").unlink()
            r["verify"] = lw("market", "verify", "--market", m, "--json")["rc"]
            r["tmp_left"] = (m / "tmp").exists()
            results.append(r)
            subprocess.run(["rm", "-rf", str(m)], check=True)
        print(json.dumps(results))
        """, mnt, world["base"], world["pkg"]["same"])
    assert any(r["rc"] == 9 for r in res), res
    for r in res:
        assert r["rc"] in (0, 9), r
        if r["rc"] == 9:
            line = _one_line(r["err"])
            assert "no space left on device" in line and r["out"] == ""
            assert not r["changed"], r
        assert r["verify"] == 0 and not r["tmp_left"], r


@pytest.mark.system
@needs_ns
def test_a_read_only_market_reads_and_refuses_writes_with_exit_9(world, tmp_path):
    market = _copy(world, tmp_path)
    dead = _copy(world, tmp_path, "dead")          # a submit died in it before it went read-only
    fork_lw("submit", world["pkg"]["same"], "--market", dead, check=-9,
                   env={"LW_CRASH_AT": "commit:renamed"})
    out = tmp_path / "out"
    out.mkdir()
    res = _in_namespace("""
        market, dead, user, pkg, out, first = sys.argv[1:7]
        for m in (market, dead):
            subprocess.run(["mount", "--bind", m, m], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", m], check=True)
        before = {m: tree(m) for m in (market, dead)}
        r = {}
        for m in (market, dead):
            r[m] = {
                "ls": lw("market", "ls", "--market", m, "--json"),
                "info": lw("market", "info", first, "--market", m),
                "search": lw("search", "--data", user, "--target", "y", "--market", m),
                "verify": lw("market", "verify", "--market", m, "--json"),
                "anchor-eval": lw("anchor-eval", "--data", user, "--target", "y", "--market", m,
                                  "-o", Path(out) / "report.json"),
                "reuse": lw("reuse", first, "--data", user, "--target", "y", "--market", m,
                            "-o", Path(out) / "pred.csv"),
                "refresh": lw("market", "refresh", "--market", m),
                "refresh-force": lw("market", "refresh", "--force", "--market", m),
                "submit": lw("submit", pkg, "--market", m),
                "unchanged": None}
            r[m]["unchanged"] = tree(m) == before[m]
        print(json.dumps(r))
        """, market, dead, world["users"]["home"], world["pkg"]["new"], out, world["first"])
    ok = res[str(market)]
    for cmd in ("ls", "info", "search", "verify", "anchor-eval", "reuse", "refresh"):
        assert ok[cmd]["rc"] == 0, (cmd, ok[cmd])
    for cmd in ("refresh-force", "submit"):
        assert ok[cmd]["rc"] == 9, (cmd, ok[cmd])
        assert "read-only filesystem" in _one_line(ok[cmd]["err"])
    assert ok["unchanged"]
    hurt = res[str(dead)]                          # readers still work; verify names the damage
    for cmd in ("ls", "info", "search", "anchor-eval", "reuse"):
        assert hurt[cmd]["rc"] == 0, (cmd, hurt[cmd])
    assert hurt["verify"]["rc"] == 5 and "Traceback" not in hurt["verify"]["err"]
    assert hurt["submit"]["rc"] == 9 and hurt["unchanged"]
    # writable again: the next lw operation completes the dead submit
    fork_lw("market", "ls", "--market", dead)
    assert not (dead / "tmp").exists() and api.market_verify(dead).ok


@pytest.mark.system
@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_market_without_write_permission_reads_and_refuses_writes_with_exit_9(world,
                                                                                tmp_path):
    market = _copy(world, tmp_path)
    subprocess.run(["chmod", "-R", "a-w", str(market)], check=True)
    try:
        before = tree(market)
        for args in (("market", "ls"), ("market", "info", world["first"]),
                     ("search", "--data", world["users"]["home"], "--target", "y"),
                     ("market", "verify"), ("market", "refresh")):
            run_lw(*args, "--market", market)
        proc = run_lw("submit", world["pkg"]["new"], "--market", market, check=9)
        assert "permission denied" in _one_line(proc.stderr)
        assert tree(market) == before
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(market)], check=True)


def test_outputs_go_through_links_and_into_fifos_and_devices_never_replace_them(tmp_path):
    """Field report: ``-o`` onto /dev/full, a FIFO or a symbolic link replaced it with a
    regular file (the atomic rename), and ``-o`` onto a folder or into /proc was exit 1."""
    import stat
    import threading

    from lwcli.errors import NotFoundError, StorageError, UsageError
    from lwcli.market.store import write_output

    target = tmp_path / "target.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    write_output(link, b"new\n")
    assert link.is_symlink() and target.read_text() == "new\n"

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_output(fifo, b"through the pipe\n")
    reader.join(timeout=60)
    assert got == [b"through the pipe\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)

    if stat.S_ISCHR(os.stat(os.devnull).st_mode):
        write_output(os.devnull, b"x")
        assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    if os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode):
        with pytest.raises(StorageError, match="no space left on device"):
            write_output("/dev/full", b"x")
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)

    with pytest.raises(UsageError, match="is a folder"):
        write_output(tmp_path, b"x")
    with pytest.raises(NotFoundError, match="does not exist"):
        write_output(tmp_path / "no" / "such.csv", b"x")
    if os.path.isdir("/proc/self"):
        with pytest.raises(StorageError):
            write_output("/proc/pred.csv", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.csv", "target.csv"]
