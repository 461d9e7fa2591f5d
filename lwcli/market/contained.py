"""Run stored or submitted models contained: in a child process, never in lw's own.

QA, search re-ranking and anchor computation run models through :func:`run_contained`. The
worker is forked by lw's fork server (:mod:`lwcli.market.forkserver`), a warm process that has
already imported scikit-learn and skops::

    lw ──> fork server (own session) ──> worker (own session: lwcli.market.probe.run)
                                           └─ anything the model spawns (same process group)

- Each item has a time limit (``LW_QA_TIMEOUT``). When an item runs past it, or the worker
  crashes (a segfault included), lw kills the worker's whole process group (SIGKILL), reports
  that item and runs the remaining ones in a fresh worker.
- lw kills the worker's process group on every exit path (errors, Ctrl-C). If lw itself is
  killed (SIGKILL), the fork server sees lw's end of the batch close, kills the worker's group
  and removes the job folder; the worker also dies with the fork server (PR_SET_PDEATHSIG).
- The worker's stderr is drained in a thread and only its last :data:`STDERR_KEEP` bytes are
  kept: a model writing gigabytes to stderr does not grow lw's memory.
- Job folders are made in the system temp dir (``lw-qa-*``), never in the market, and removed
  on every exit path. lw holds an owner lock on each (``.owner``, released by the kernel when
  lw dies), so one left by an lw killed between its worker's end and its own clean-up is
  removed by the next contained run, never one that a live lw still uses.
- The worker runs in the job folder, and nothing in lw's working directory is importable by
  the fork server (a ``lwcli/`` folder there must not run).
- The worker runs with no core dumps and a file-size limit
  (:data:`lwcli.market.forkserver.MAX_FILE_BYTES`).

A process that leaves the worker's process group on purpose (``setsid``) is out of reach of a
process-group kill; lw does not promise to contain a model that does so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from filelock import FileLock

from ..errors import LwError, MissingExtraError, ModelCheckError, UntrustedModelError
from ..locks import held_by_another

STDERR_KEEP = 8192               # bytes of the children's stderr kept for error messages
POLL_S = 0.05
JOB_PREFIX = "lw-qa-"
OWNER = ".owner"                 # lw's owner lock in a job folder
STALE_S = 60.0                   # a job folder younger than this is never collected
START_S = 30.0                   # for a fork server that has done its imports to fork a worker
MODES = ("qa", "outputs", "values", "proba")


@dataclass
class Item:
    """One model to run on ``X``. ``mode``: ``qa`` (island encoding + class-order check),
    ``outputs`` (island encoding), ``values`` / ``proba`` (as a reuse Learnware gives them)."""

    model_bytes: bytes
    fmt: str
    features: Sequence[str]
    task: str
    outputs: Sequence[str]
    X: np.ndarray
    mode: str = "outputs"
    id: str = ""
    name: str = ""
    class_values: Sequence = field(default_factory=tuple)


class _Tail(threading.Thread):
    """Drains a pipe, keeping only its last ``keep`` bytes, and closes it at its end (never
    closed under a blocked read: a writer that escaped the process group keeps it open)."""

    def __init__(self, pipe, keep: int = STDERR_KEEP) -> None:
        super().__init__(daemon=True)
        self.pipe, self.keep, self.buf, self.total = pipe, keep, b"", 0

    def run(self) -> None:
        try:
            while True:
                chunk = self.pipe.read1(65536) if hasattr(self.pipe, "read1") else \
                    self.pipe.read(65536)
                if not chunk:
                    break
                self.total += len(chunk)
                self.buf = (self.buf + chunk)[-self.keep:]
        except (OSError, ValueError):
            pass
        finally:
            try:
                self.pipe.close()
            except OSError:
                pass

    def last_line(self) -> str:
        lines = self.buf.decode(errors="replace").strip().splitlines()
        return lines[-1][:200] if lines else ""


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def worker_env() -> dict:
    """The environment of contained workers: lw's, with one BLAS / OpenMP thread."""
    return dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _describe_exit(rc: int | None) -> str:
    if rc is None:
        return "killed"
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit {rc}"


def run_contained(items: Sequence[Item], *, trust: bool, timeout: float) -> list:
    """Each item's outputs (an array), or the :class:`LwError` that stopped it."""
    items = list(items)
    if not items:
        return []
    _collect_stale_jobs()
    job = Path(tempfile.mkdtemp(prefix=JOB_PREFIX))
    owner = FileLock(job / OWNER, mode=0o600)
    try:
        owner.acquire()
        (job / "job.json").write_text(json.dumps({"trust": bool(trust), "items": [
            {"format": it.fmt, "features": [str(f) for f in it.features], "task": it.task,
             "outputs": list(it.outputs), "mode": it.mode, "id": it.id, "name": it.name,
             "class_values": list(it.class_values)} for it in items]}))
        for i, it in enumerate(items):
            if it.mode not in MODES:
                raise ValueError(f"unknown mode {it.mode!r}")
            (job / f"model-{i}.bin").write_bytes(it.model_bytes)
            np.save(job / f"inputs-{i}.npy", np.ascontiguousarray(it.X, dtype=np.float64),
                    allow_pickle=False)
        results: list = [None] * len(items)
        start, restarts = 0, 0
        while start < len(items):
            started, stuck, rc, tail = _run_batch(job, start, len(items), timeout)
            if not started:                 # the server never forked it: once more, afresh
                restarts += 1
                if restarts > 1:
                    raise LwError("lw's model worker could not be started (its fork server "
                                  "did not answer)", "check that `python -c 'import "
                                  "lwcli.market.probe'` works in this environment")
                continue
            nxt = len(items)
            for i in range(start, len(items)):
                out, err = job / f"out-{i}.npy", job / f"err-{i}.json"
                if err.is_file():
                    results[i] = _error_from(err)
                elif out.is_file():
                    results[i] = np.load(out, allow_pickle=False)
                else:
                    if stuck == i:
                        results[i] = ModelCheckError(
                            f"the model did not answer {len(items[i].X)} rows within {timeout:g} s",
                            "make prediction faster, or raise --timeout (LW_QA_TIMEOUT)")
                    else:
                        last = tail.last_line()
                        results[i] = ModelCheckError(
                            f"the model crashed its process ({_describe_exit(rc)})"
                            f"{': ' + last if last else ''}",
                            "check that the model loads and predicts")
                    nxt = i + 1
                    break
            start = nxt
        return results
    finally:
        shutil.rmtree(job, ignore_errors=True)
        owner.release()


def _collect_stale_jobs() -> None:
    """Remove ``lw-qa-*`` folders of lw processes that died before removing them: older than
    :data:`STALE_S` and with no live owner lock. Never fails."""
    try:
        root = Path(tempfile.gettempdir())
        now = time.time()
        for p in root.glob(JOB_PREFIX + "*"):
            try:
                if not p.is_dir() or p.is_symlink() or now - p.stat().st_mtime < STALE_S:
                    continue
                if (p / OWNER).exists() and held_by_another(p / OWNER):
                    continue
                shutil.rmtree(p, ignore_errors=True)
            except OSError:
                continue
    except OSError:
        pass


def _error_from(path: Path) -> LwError:
    try:
        err = json.loads(path.read_text())
        cls = {"UntrustedModelError": UntrustedModelError,
               "MissingExtraError": MissingExtraError}.get(err.get("type"), ModelCheckError)
        return cls(str(err.get("message"))[:2000], err.get("hint"))
    except (OSError, ValueError, AttributeError):
        return ModelCheckError("the model's process left an unreadable error report",
                               "check that the model loads and predicts")


def _run_batch(job: Path, start: int, n: int, timeout: float):
    """Run items ``start..n`` in one worker. Returns (whether the worker started, index of the
    item that ran past the time limit or None, the worker's exit status (None when killed),
    stderr tail)."""
    from .forkserver import start_batch

    (job / "progress").unlink(missing_ok=True)
    batch = start_batch(job, start, worker_env())
    tail = _Tail(batch.stderr)
    tail.start()
    stuck = None
    try:
        current, t0 = None, time.monotonic()
        began = t0
        while not batch.wait(POLL_S):
            if not batch.started and batch.server_ready and time.monotonic() - began > START_S:
                break                                   # the server does not fork: replaced
            now = _read_int(job / "progress")
            if now != current:
                current, t0 = now, time.monotonic()
            elif time.monotonic() - t0 > (timeout if current is not None else timeout + 60.0):
                stuck = start if current is None else current     # (start-up: a guard only)
                break
    finally:
        batch.kill()
        if batch.started:
            batch.wait(10.0)
        batch.close()
        tail.join(timeout=2)
    return batch.started, stuck, (None if stuck is not None else batch.status), tail


