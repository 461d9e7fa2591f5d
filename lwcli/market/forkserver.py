"""The fork server of contained model runs: one warm process per lw process, which has already
imported what loading and running a model needs (numpy, pandas, scikit-learn, skops) and forks
one fresh worker per batch (:mod:`lwcli.market.contained`).

A worker started as a new interpreter spends seconds importing scikit-learn and skops before it
loads a model that takes milliseconds; a fork of a warm process starts in about 0.1 s. Every lw
command that runs models starts one server on its first batch; a long-lived process (a library
user, a service, the test suite) keeps it::

    lw ──control socket──> fork server (own session, cwd /, started on first use)
     │                        └─ fork ─> worker (own session; PR_SET_PDEATHSIG; limits)
     └──one reply socket per batch: {"pid"}, then {"status"}   └─ what the model spawns

- Each batch gets its own stderr pipe (lw keeps its tail) and lw's environment *at the time of
  the batch* (handed over in memory, any size). The server itself is replaced when a variable
  read at import time changes (:data:`IMPORT_PREFIXES`: ``PYTHON*``, ``LD_*``, the numeric
  libraries'), so a worker imports what a fresh child would. numpy's global random stream is
  reseeded in each worker, as a fresh interpreter's would be.
- The server runs in ``/`` with ``-c``'s working-directory entry removed from ``sys.path``
  before it imports anything: nothing in lw's working directory can run there.
- When a worker ends (or crashes) the server kills its whole process group: nothing the model
  started outlives its batch. When lw closes a batch's reply socket (every exit path of lw,
  lw's death included) the server kills the group too; if lw's owner lock on the job folder is
  free then (lw is gone), the server removes the folder as well.
- A server that had done its imports but does not fork a requested worker within
  ``contained.START_S`` (a model stopped it, say) is killed and replaced; the batch runs again
  on the new one.
- The server exits once lw has closed the control socket (lw exited, or replaced the server)
  and its batches have ended. A worker dies with the server (``PR_SET_PDEATHSIG``).
- A process forked from lw (a ``multiprocessing`` pool, say) shares lw's server; its batches
  are its own, and are killed when it dies.

Not :mod:`multiprocessing`'s forkserver: that one is a process-wide singleton shared with the
user's own multiprocessing (its preload list too), keeps the environment of its first start, and
gives a child neither its own stderr pipe, session and limits before any model code runs, nor a
raw wait status to report.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import LwError

#: What the server imports before it forks anything (missing ones are skipped).
PRELOAD = ("numpy", "pandas", "threadpoolctl", "sklearn.base", "skops.io",
           "lwcli.market.models", "lwcli.market.probe", "lwcli.engine.reuse")
MAX_FILE_BYTES = 1 << 30         # RLIMIT_FSIZE of a worker
#: Variables read when a module is imported (Python's own, the dynamic linker's, the numeric
#: libraries'): a server is reused only while these are unchanged. Not ``KMP_*``: importing
#: scikit-learn sets two of them in lw's own environment.
IMPORT_PREFIXES = ("PYTHON", "LD_", "SKLEARN_", "NUMPY_", "SCIPY_", "OMP_", "MKL_",
                   "OPENBLAS_")
_MSG = 4096                      # largest control message (a job folder and an item index)
_BOOT = ("import sys; sys.path[:1] == [''] and sys.path.pop(0); "
         "from lwcli.market.forkserver import serve; serve(int(sys.argv[1]))")


def import_environment(env: dict) -> dict:
    """The variables that decide what a Python process imports: a server is reused only while
    these are unchanged."""
    return {k: v for k, v in env.items() if k.startswith(IMPORT_PREFIXES)}


# ---------------------------------------------------------------------------- lw's side

class Batch:
    """One worker run, seen from lw: its pid once the server has forked it (``started``), then
    its exit status (``os.waitstatus_to_exitcode``: negative for a signal; None when the server
    went away before reporting it)."""

    def __init__(self, server: "ForkServer", reply: socket.socket, stderr,
                 server_ready: bool) -> None:
        self.server, self.reply, self.stderr = server, reply, stderr
        self.server_ready = server_ready         # it had finished its imports when asked
        self.pid: int | None = None
        self.ended = False
        self.status: int | None = None
        self._poll = select.poll()               # (select() fails on fds >= 1024)
        self._poll.register(reply, select.POLLIN)

    @property
    def started(self) -> bool:
        return self.pid is not None

    def wait(self, timeout: float) -> bool:
        """Whether the worker has ended (or the server has gone), waiting at most ``timeout``
        seconds."""
        while not self.ended:
            if not self._poll.poll(max(0, int(timeout * 1000))):
                return False
            try:
                data = self.reply.recv(4096)
            except OSError:
                data = b""
            if not data:
                self.ended = True
                break
            msg = json.loads(data)
            self.pid = msg.get("pid", self.pid)
            if "status" in msg:
                self.status, self.ended = msg["status"], True
            timeout = 0.0
        return True

    def kill(self) -> None:
        """SIGKILL the worker's process group (no-op once it has ended: the server has killed
        what was left of it)."""
        if self.pid and not self.ended:
            _kill_group(self.pid)

    def close(self) -> None:
        """Give the batch up: the server kills what is left of it. A batch that never started
        means a server that no longer forks (stopped, say): it is killed and replaced."""
        self.reply.close()
        if not self.started:
            discard(self.server)


class ForkServer:
    """lw's handle on one server process (see the module's docstring)."""

    def __init__(self, env: dict) -> None:
        self.env, self.owner = import_environment(env), os.getpid()
        self._lock = threading.Lock()
        self.ready = False                       # the server said it has done its imports
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, env=env, cwd="/")
        finally:
            theirs.close()
        self.ctrl = ours

    def usable(self, env: dict) -> bool:
        """Whether batches with lw's environment ``env`` may run here. A server that died is
        found out when a request to it fails (:func:`start_batch` then starts another)."""
        return self.ctrl.fileno() != -1 and self.env == import_environment(env)

    def start(self, job: Path, start: int, env: dict) -> Batch:
        """Ask for a worker that runs items ``start..`` of ``job`` with environment ``env``
        (handed over in memory, any size). Raises OSError when the server is gone."""
        reply, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        err_r, err_w = os.pipe()
        env_fd = _memory_file(json.dumps(env).encode())
        try:
            msg = json.dumps({"job": str(job), "start": int(start)}).encode()
            if len(msg) > _MSG:
                raise LwError(f"the job folder's path is too long ({len(msg)} bytes)",
                              "set TMPDIR to a shorter path")
            with self._lock:
                self._note_ready()
                ready = self.ready
                socket.send_fds(self.ctrl, [msg], [theirs.fileno(), err_w, env_fd],
                                socket.MSG_NOSIGNAL)
        except BaseException:
            reply.close()
            os.close(err_r)
            raise
        finally:
            theirs.close()
            os.close(err_w)
            os.close(env_fd)
        return Batch(self, reply, os.fdopen(err_r, "rb"), ready)

    def _note_ready(self) -> None:
        """Read the server's "ready" (sent once, after its imports), if it has come."""
        if not self.ready:
            try:
                self.ready = self.ctrl.recv(16, socket.MSG_DONTWAIT) == b"ready"
            except (BlockingIOError, InterruptedError):
                pass

    def kill(self) -> None:
        """SIGKILL the server (one that no longer forks); its workers die with it."""
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def retire(self) -> None:
        """Close the control socket: the server exits once its batches have ended (a stopped
        one is resumed, so that it can)."""
        self.ctrl.close()
        if self.owner == os.getpid():
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except (ProcessLookupError, PermissionError):
                pass


def _memory_file(data: bytes) -> int:
    """A readable fd holding ``data``, in memory where the OS allows (never a named file)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("lw-worker-env", os.MFD_CLOEXEC)
    else:
        import tempfile

        fd = os.dup(tempfile.TemporaryFile().fileno())
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


_servers_lock = threading.Lock()
_current: ForkServer | None = None
_retired: list[ForkServer] = []          # replaced servers of this process, to be reaped


def _after_fork_in_child() -> None:
    """A process forked from lw (a multiprocessing pool, say) shares lw's server: its batches
    are its own (their reply sockets close when it dies). Locks another thread held at the
    fork are replaced; the replaced servers are the parent's to reap."""
    global _servers_lock
    _servers_lock = threading.Lock()
    if _current is not None:
        _current._lock = threading.Lock()
    _retired.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def warm_up(env: dict | None = None) -> None:
    """Start this process's fork server now (with ``env``, default lw's worker environment),
    so that the first contained run does not wait for its imports: for a long-lived process
    that will run models."""
    if env is None:
        from .contained import worker_env

        env = worker_env()
    _server_for(env)


def _server_for(env: dict) -> ForkServer:
    global _current
    with _servers_lock:
        server = _current
        if server is not None and not server.usable(env):
            _replace(server)
            server = None
        _retired[:] = [s for s in _retired if s.proc.poll() is None]
        if server is None:
            server = _current = ForkServer(env)
        return server


def start_batch(job: Path, start: int, env: dict) -> Batch:
    """A worker for items ``start..`` of ``job``, forked by this process's server (started, or
    replaced, as needed)."""
    global _current
    for attempt in (0, 1):
        server = _server_for(env)
        try:
            return server.start(job, start, env)
        except OSError:
            if attempt:
                raise LwError("lw's model worker could not be started (its fork server is "
                              "gone)", "check that `python -c 'import lwcli.market.probe'` "
                              "works in this environment")
            with _servers_lock:
                if _current is server:
                    _replace(server)
                    _current = None
    raise AssertionError("unreachable")


def discard(server: ForkServer) -> None:
    """Kill ``server`` (it accepted a batch and never started it) and stop using it."""
    global _current
    server.kill()
    with _servers_lock:
        if _current is server:
            _current = None
        _replace(server)


def _at_exit() -> None:
    """lw exits: its servers see the control socket close (a stopped one is resumed first)."""
    for server in [_current, *_retired]:
        if server is not None:
            server.retire()


atexit.register(_at_exit)


def _replace(server: ForkServer) -> None:
    """Stop using ``server`` (the caller holds the lock); this process reaps it if it started
    it."""
    server.retire()
    if server.owner == os.getpid() and server not in _retired:
        _retired.append(server)


# ---------------------------------------------------------------------------- server side

def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):       # the group, and the pid before its setsid()
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _worker_limits() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:
        pass
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        cap = MAX_FILE_BYTES if hard == resource.RLIM_INFINITY else min(hard, MAX_FILE_BYTES)
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
    except (ImportError, ValueError, OSError):
        pass


@dataclass
class _Job:
    reply: socket.socket
    folder: Path
    abandoned: bool = False


def exit_after(body) -> None:
    """End a forked child with ``body()``'s exit status (1, with the traceback on stderr, when
    it raises), after flushing stdout and stderr; never returns into the parent's code."""
    code = 1
    try:
        code = body()
    except BaseException:                        # report, never return into the forking code
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _worker(req: dict, err_w: int, env_fd: int, inherited: list, server: int) -> int:
    """The forked child's work as the batch's worker (run under :func:`exit_after`)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for s in inherited:
        s.close() if hasattr(s, "close") else os.close(s)
    os.setsid()
    _worker_limits()
    if os.getppid() != server:              # the server died before PDEATHSIG was set
        return 1
    os.dup2(err_w, 2)
    os.close(err_w)
    os.environ.clear()
    os.environ.update(json.loads(_read_all(env_fd)))
    import tempfile

    tempfile.tempdir = None                  # TMPDIR as lw has it now
    import numpy as np

    np.random.seed()                         # fresh, as a new interpreter's (random does so)
    os.chdir(req["job"])
    from .probe import run

    return run(Path(req["job"]), int(req["start"]))


def _fork_worker(ctrl: socket.socket, wake: tuple, jobs: dict) -> bool:
    """Take one request from lw; False when lw has closed the control socket."""
    try:
        msg, fds, _, _ = socket.recv_fds(ctrl, _MSG, 3)
    except OSError:          # ECONNRESET: lw died with the server's "ready" still unread
        return False
    if not msg or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return bool(msg)
    req = json.loads(msg)
    reply, err_w, env_fd = socket.socket(fileno=fds[0]), fds[1], fds[2]
    sys.stderr.flush()
    server = os.getpid()
    pid = os.fork()
    if pid == 0:
        exit_after(lambda: _worker(req, err_w, env_fd, [ctrl, reply, *wake,
                                                         *(j.reply for j in jobs.values())],
                                   server))
    os.close(err_w)
    os.close(env_fd)
    jobs[pid] = _Job(reply, Path(req["job"]))
    try:
        reply.send(json.dumps({"pid": pid}).encode(), socket.MSG_NOSIGNAL)
    except OSError:
        jobs[pid].abandoned = True
        _kill_group(pid)
    return True


def _reap(jobs: dict) -> None:
    from ..locks import held_by_another

    while jobs:
        try:
            ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if ended is None or ended.si_pid == 0:
            return
        pid = ended.si_pid
        _kill_group(pid)             # what the model started (its pid is not reused until reaped)
        _, status = os.waitpid(pid, 0)
        job = jobs.pop(pid, None)
        if job is None:
            continue
        if job.abandoned:
            owner = job.folder / ".owner"
            if owner.exists() and not held_by_another(owner):     # lw is gone
                import shutil

                shutil.rmtree(job.folder, ignore_errors=True)
        else:
            try:
                job.reply.send(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode(),
                               socket.MSG_NOSIGNAL)
            except OSError:
                pass
        job.reply.close()


def serve(ctrl_fd: int) -> None:
    """The server's loop (run by ``python -c`` :data:`_BOOT`): lw's requests, lw's departures
    and the workers' exits, in one ``select``."""
    import importlib

    ctrl = socket.socket(fileno=ctrl_fd)
    os.chdir("/")
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    try:
        ctrl.send(b"ready", socket.MSG_NOSIGNAL)
    except OSError:
        pass
    jobs: dict[int, _Job] = {}
    listening = True
    while listening or jobs:
        watch = [wake_r] + [j.reply for j in jobs.values() if not j.abandoned]
        ready = select.select(watch + ([ctrl] if listening else []), [], [], 5.0)[0]
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
        for pid, job in list(jobs.items()):
            if job.reply in ready and not job.abandoned:
                try:
                    gone = not job.reply.recv(64)
                except OSError:
                    gone = True
                if gone:                             # lw gave the batch up, or died
                    job.abandoned = True
                    _kill_group(pid)
        _reap(jobs)
        if listening and ctrl in ready:
            listening = _fork_worker(ctrl, (wake_r, wake_w), jobs)
    ctrl.close()
