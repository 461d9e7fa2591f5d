"""Where lw's batch work runs: the independent pieces of a batch through one executor.

``lw spec --out-dir`` (one piece per data file), ``lw market refresh`` (one piece per island's
index table, per chunk of learnwares run on an island's anchor probes) and the quality
benchmark hand their pieces to an :class:`Executor` and keep everything else (deciding what
is up to date, writing, publishing) in the calling process:

- :class:`InProcess` (the default) runs the pieces here, one after the other;
- :class:`ProcessPool` (``--jobs N``, ``LW_JOBS``) runs them in N local processes
  (:mod:`concurrent.futures`, started by ``forkserver``);
- :class:`DaskExecutor` (``--scheduler ADDRESS``, ``LW_SCHEDULER``) runs them on an existing
  Dask cluster (``pip install 'lwcli[dask]'``), whose workers must reach the same files (data,
  market) under the same paths.

A piece is a picklable top-level function and its argument, run under the caller's lw
settings (``LW_*``, :func:`lwcli.settings.carried`), not the worker's; its result comes back to the
caller, which alone writes, so nothing half-written is ever published. The results are the
same bytes whichever executor ran them: every piece runs single-threaded
(:func:`single_threaded`), wherever it runs, and pieces never share state.

Failures. A piece that raises an :class:`~lwcli.errors.LwError` (bad data, a model that
fails) is *reported*: its result is that error and the other pieces go on. A worker that
dies (killed, out of memory) loses nothing: its pieces are run again on another worker, up to
:data:`MAX_ATTEMPTS` times in all, and a piece that kills its worker every time is reported as
a :class:`~lwcli.errors.WorkerLostError`. Any other exception is a bug in lw and propagates.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import LwError, MissingExtraError, SchedulerError, UsageError, WorkerLostError

#: times a piece is started before a worker death is blamed on it (Dask's default too)
MAX_ATTEMPTS = 3
#: seconds to wait for a Dask scheduler to answer
CONNECT_TIMEOUT = 10.0
DASK_EXTRA = "pip install 'lwcli[dask]'"

OnResult = Callable[[int, Any], None]


def _call(fn: Callable, item: Any, env: dict[str, str], i: int = 0) -> Any:
    """Run piece ``i`` single-threaded under the caller's lw settings ``env``
    (:func:`lwcli.settings.carried`); an :class:`LwError` is its result (reported), not a
    failure of the run."""
    from .faults import PIECE_POINT, crash_point
    from .settings import adopted

    with adopted(env):
        crash_point(PIECE_POINT)
        crash_point(f"{PIECE_POINT}:{i}")
        with single_threaded():
            try:
                return fn(item)
            except LwError as exc:
                return exc


#: bytes below which glibc may hand freed memory back to the OS / serve a block by mmap
MALLOC_THRESHOLD = 256 << 20


def tune_malloc() -> bool:
    """Let glibc keep large freed blocks (``M_TRIM_THRESHOLD`` and ``M_MMAP_THRESHOLD`` at
    :data:`MALLOC_THRESHOLD`). Why: Dask's nanny starts workers with
    ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap threshold, so every
    large temporary of a fit is a fresh ``mmap`` whose pages fault in again: lw's pieces ran
    2x slower there (measured: 1.5 s against 0.75 s per 50,000-row spec). The price: a worker
    hands less freed memory back to the OS. True when applied (glibc only)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-1, MALLOC_THRESHOLD)) and \
            bool(libc.mallopt(-3, MALLOC_THRESHOLD))
    except (OSError, AttributeError):
        return False


def _marked_call(fn: Callable, item: Any, env: dict[str, str], i: int, mark: str) -> Any:
    """:func:`_call` in a local worker, with ``mark`` (a file) present while the piece runs:
    after a worker death, the marks left name the pieces that were running."""
    Path(mark).touch()
    res = _call(fn, item, env, i)
    Path(mark).unlink()
    return res


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with one torch thread and one BLAS/OpenMP thread (restored after).

    Why: torch's and the BLAS's float32 results depend on how many threads computed them
    (a 100 x 100 Gram matrix differs in its last bits between 1 and 8 threads, and an RKME fit
    amplifies that), so a piece is computed the same way wherever it runs: here, in a local
    worker or on a Dask worker of any size. Parallelism comes from running pieces side by
    side (``--jobs``, ``--scheduler``)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


class Executor:
    """Runs the pieces of a batch: ``run(fn, items)`` returns ``[fn(item) ...]`` in item
    order, an :class:`LwError` a piece raised in its place. ``on_result(i, result)`` is
    called here, in the calling process, as each piece finishes (in completion order): the
    place to write results so that a batch stopped half-way keeps what it finished.

    Use as a context manager (``with open_executor(...) as ex``) so that workers and
    connections it started are released."""

    kind = "in-process"
    #: pieces the executor runs at once (chunking callers split work into at least this many)
    width = 1

    def run(self, fn: Callable, items: Sequence, on_result: OnResult | None = None) -> list:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor started (nothing for the in-process one)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcess(Executor):
    """The pieces run here, one after the other (the default)."""

    def run(self, fn: Callable, items: Sequence, on_result: OnResult | None = None) -> list:
        from .settings import carried

        out, env = [], carried()
        for i, item in enumerate(items):
            res = _call(fn, item, env, i)
            out.append(res)
            if on_result is not None:
                on_result(i, res)
        return out


class ProcessPool(Executor):
    """The pieces run in ``jobs`` local worker processes (``--jobs N``). Workers are started
    by ``forkserver`` (never ``fork``: lw's process may hold threads and torch state) when the
    first batch runs; each runs one piece at a time, single-threaded."""

    kind = "processes"

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise UsageError(f"--jobs must be >= 1, got {jobs}", "pass a positive number")
        self.width = jobs
        self._pool = None

    def _fresh_pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.close()
        self._pool = ProcessPoolExecutor(self.width,
                                         mp_context=multiprocessing.get_context("forkserver"))
        return self._pool

    def run(self, fn: Callable, items: Sequence, on_result: OnResult | None = None) -> list:
        """Long because a dead worker breaks the whole pool (every worker is stopped): the
        unfinished pieces are resubmitted to a fresh one. The pieces that were running (each
        marks its start in a scratch folder) are suspects: each runs again alone, so a death
        is blamed on the piece that caused it, never on its neighbours."""
        import shutil
        import tempfile
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        from .settings import carried

        env = carried()
        out: list = [None] * len(items)
        todo = set(range(len(items)))
        attempts = dict.fromkeys(todo, 0)
        suspects: set[int] = set()
        marks = Path(tempfile.mkdtemp(prefix="lw-pieces-"))

        def finish(i: int, res: Any) -> None:
            out[i] = res
            todo.discard(i)
            suspects.discard(i)
            if on_result is not None:
                on_result(i, res)

        try:
            while todo:
                alone = sorted(suspects & todo)[:1]
                batch = alone or sorted(todo)
                pool = self._pool or self._fresh_pool()
                futures = {pool.submit(_marked_call, fn, items[i], env, i, str(marks / str(i))): i
                           for i in batch}
                pending, broken = set(futures), False
                while pending and not broken:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        try:
                            res = f.result()
                        except BrokenProcessPool:
                            broken = True
                            continue
                        finish(futures[f], res)
                if not broken:
                    continue
                self.close()
                for i in batch:
                    if i in todo and (marks / str(i)).exists():    # it was running
                        (marks / str(i)).unlink()
                        attempts[i] += 1
                        suspects.add(i)
                        if alone and attempts[i] >= MAX_ATTEMPTS:
                            finish(i, WorkerLostError(
                                f"piece {i + 1} of {len(items)}: its worker process died "
                                f"{attempts[i]} times while running it",
                                "it may need more memory than a worker has, or crash its "
                                "process"))
        finally:
            shutil.rmtree(marks, ignore_errors=True)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor(Executor):
    """The pieces run on a Dask cluster: ``scheduler`` is its address
    (``tcp://host:8786``) or a connected ``distributed.Client`` (left open on close).

    The scheduler re-runs the pieces of a worker that dies (its ``allowed-failures``
    setting, :data:`MAX_ATTEMPTS` by default); a piece it gives up on (``KilledWorker``) is
    reported as :class:`WorkerLostError`. The workers must run this lw version."""

    kind = "dask"

    def __init__(self, scheduler: Any) -> None:
        _require_dask()
        import distributed

        if isinstance(scheduler, distributed.Client):
            self.client, self._own = scheduler, False
        else:
            address = _checked_address(str(scheduler))
            try:
                self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT,
                                                 set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise SchedulerError(
                    f"could not reach the Dask scheduler at {address} within "
                    f"{CONNECT_TIMEOUT:g} s ({type(exc).__name__}: {exc})",
                    "start one (dask scheduler; dask worker ADDRESS) or check --scheduler / "
                    "LW_SCHEDULER") from None
            self._own = True
        self._checked = False

    @property
    def width(self) -> int:
        info = self.client.scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def _check_workers(self) -> None:
        """Every worker must import this lw: a different version would compute other bytes."""
        if self._checked:
            return
        from . import __version__

        try:
            seen = self.client.run(_lw_version)
        except Exception as exc:          # noqa: BLE001 -- any failure here means "cannot use"
            raise SchedulerError(f"the Dask workers of {self.client.scheduler.address} cannot "
                                 f"run lw "
                                 f"({type(exc).__name__}: {exc})",
                                 "install this lwcli in the workers' environment") from None
        if not seen:
            raise SchedulerError(f"the Dask scheduler at {self.client.scheduler.address} has "
                                 "no workers",
                                 "start some: dask worker ADDRESS")
        bad = {w: v for w, v in seen.items() if v != __version__}
        if bad:
            w, v = next(iter(bad.items()))
            raise SchedulerError(f"Dask worker {w} runs lw {v}, this is lw {__version__}",
                                 "install the same lwcli on every worker")
        from ._dask_plugin import MallocTuning

        self.client.register_plugin(MallocTuning())      # once per worker, restarts included
        self._checked = True

    def run(self, fn: Callable, items: Sequence, on_result: OnResult | None = None) -> list:
        from distributed import KilledWorker, as_completed

        if not items:
            return []
        from .settings import carried

        self._check_workers()
        n = len(items)
        futures = self.client.map(_call, [fn] * n, list(items), [carried()] * n, range(n),
                                  pure=False)
        where = {f.key: i for i, f in enumerate(futures)}
        out: list = [None] * len(items)
        try:
            for f in as_completed(futures, loop=self.client.loop):
                i = where[f.key]
                try:
                    res = f.result()
                except KilledWorker as exc:
                    res = WorkerLostError(f"piece {i + 1} of {len(items)}: Dask gave up on it "
                                          f"after its workers died ({exc})",
                                          "it may need more memory than a worker has, or "
                                          "crash its process")
                out[i] = res
                if on_result is not None:
                    on_result(i, res)
        finally:
            self.client.cancel([f for f in futures if not f.done()])
        return out

    def close(self) -> None:
        if self._own:
            self.client.close()


class Deferred(Executor):
    """An executor opened on first use: a refresh that finds nothing to do never starts
    worker processes nor connects to a scheduler (a quiet cron run)."""

    def __init__(self, opener: Callable[[], Executor], kind: str) -> None:
        self._opener, self._inner, self.kind = opener, None, kind

    def _get(self) -> Executor:
        if self._inner is None:
            self._inner = self._opener()
        return self._inner

    @property
    def width(self) -> int:
        return self._get().width

    def run(self, fn: Callable, items: Sequence, on_result: OnResult | None = None) -> list:
        return self._get().run(fn, items, on_result)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


def _checked_address(address: str) -> str:
    """A scheduler address Dask can parse (``tcp://host:port``, ``host:port``), else a
    :class:`UsageError` at once (Dask would try for its whole timeout)."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    try:
        scheme, loc = parse_address(address, strict=False)
        if scheme not in ("tcp", "tls", "ws", "wss"):
            raise ValueError(f"protocol {scheme!r}: lw takes tcp, tls, ws or wss")
        port = parse_host_port(loc)[1]
        if not 0 < int(port) < 65536:
            raise ValueError(f"port {port} is out of range")
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--scheduler {address!r} is not a Dask scheduler address ({exc})",
                         "give one like tcp://10.0.0.5:8786 (what `dask scheduler` prints)"
                         ) from None
    return address


def _lw_version() -> str:
    from . import __version__

    return __version__


def open_executor(jobs: int | None = None, scheduler: Any = None, *,
                  deferred: bool = False) -> Executor:
    """The executor for a batch: ``scheduler`` (an address or a ``distributed.Client``;
    default ``LW_SCHEDULER``) runs it on Dask; else ``jobs`` > 1 (default ``LW_JOBS``) on
    that many local processes; else here. Giving both is a :class:`UsageError`; an
    :class:`Executor` passed as ``scheduler`` is returned as it is. ``deferred``: check the
    arguments (and that Dask is installed) now, start workers or connect on first use.

    Raises :class:`MissingExtraError` (exit 6) when Dask is asked for and not installed and
    :class:`SchedulerError` (exit 6) when the scheduler cannot be reached."""
    from . import settings

    if isinstance(scheduler, Executor):
        return scheduler
    if scheduler is not None and jobs is not None and jobs > 1:
        raise UsageError("both --jobs and --scheduler given",
                         "--jobs N runs local processes, --scheduler a Dask cluster: pick one")
    if scheduler is None and jobs is None:
        scheduler = settings.scheduler()
        if scheduler is not None and (settings.jobs() or 1) > 1:
            raise UsageError("both LW_JOBS and LW_SCHEDULER are set",
                             "LW_JOBS runs local processes, LW_SCHEDULER a Dask cluster: "
                             "unset one (or pass --jobs or --scheduler)")
    if scheduler is not None:
        if not deferred:
            return DaskExecutor(scheduler)
        _require_dask()
        return Deferred(lambda: DaskExecutor(scheduler), DaskExecutor.kind)
    if jobs is None:
        jobs = settings.jobs()
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}", "pass a positive number")
    if jobs is None or jobs == 1:
        return InProcess()
    return Deferred(lambda: ProcessPool(jobs), ProcessPool.kind) if deferred else ProcessPool(jobs)


def _require_dask() -> None:
    import importlib

    try:
        importlib.import_module("distributed")
    except ImportError:
        raise MissingExtraError("--scheduler runs lw's batch work on Dask, which is not "
                                "installed", f"install it with {DASK_EXTRA}") from None


def counting(progress: Callable[[str, int, int], None] | None, stage: str,
             total: int) -> OnResult | None:
    """An ``on_result`` that reports ``progress(stage, done, total)`` as pieces finish
    (None when there is no ``progress``)."""
    if progress is None:
        return None
    done = 0
    progress(stage, 0, total)

    def tick(i: int, result: Any) -> None:
        nonlocal done
        done += 1
        progress(stage, done, total)

    return tick


def chunks(seq: Sequence, width: int, *, most: int = 64) -> list[list]:
    """``seq`` cut in order into about ``4 * width`` chunks of at most ``most`` items (one
    chunk when ``width`` is 1): enough pieces to keep every worker busy, few enough that each
    piece's start-up cost stays small."""
    seq = list(seq)
    if not seq:
        return []
    if width <= 1:
        return [seq]
    size = max(1, min(most, math.ceil(len(seq) / (4 * width))))
    return [seq[s:s + size] for s in range(0, len(seq), size)]
