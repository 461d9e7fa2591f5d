"""Exclusive file locks between lw processes, on top of :mod:`filelock`.

One helper for the two locks lw takes: the market's writers' lock (``<market>/.lock``) and a
spec folder's state lock (``<folder>/.lw-specs.json.lock``). ``filelock.FileLock`` is
``flock`` on Unix and ``LockFileEx`` on Windows, so lw imports and locks on both. The lock
file is kept on release (``preserve_lock_file``), as a plain ``flock`` left it: waiters share
one inode and the market's layout keeps its ``.lock``. A lock held past ``timeout`` seconds
raises :class:`~lwcli.errors.LockTimeoutError` (exit code 5).

Opening the lock file can fail for storage reasons (a read-only filesystem, no permission):
that is :class:`~lwcli.errors.StorageError` (exit code 9), naming the lock file.

A lock object is re-entrant, but each call here makes a new one: taking the same lock again
from the same process (even the same thread) waits for the first holder like any other.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from .errors import LockTimeoutError
from .faults import storage_error

# Seconds a writer waits for a lock before giving up (the market's and a spec folder's).
DEFAULT_TIMEOUT = 120.0


@contextmanager
def exclusive(path: str | Path, timeout: float | None = None, *,
              hint: str = "another lw process holds it; retry later") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing, mode 0644), waiting up to
    ``timeout`` seconds (default :data:`DEFAULT_TIMEOUT`); then :class:`LockTimeoutError`
    ``could not lock PATH within T s``."""
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    path = Path(path)
    lock = FileLock(path, timeout=timeout, mode=0o644, preserve_lock_file=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise LockTimeoutError(f"could not lock {path} within {timeout:g} s", hint) from None
    except OSError as exc:
        err = storage_error(exc, path)
        if err is None:
            raise
        raise err from exc
    try:
        yield
    finally:
        lock.release()


def held_by_another(path: str | Path) -> bool:
    """Whether another process (or another lock object of this one) holds the lock on
    ``path`` now: one non-blocking attempt. An owner lock that a process took on what it
    creates is released by the kernel when the process dies, so a held one marks a live user.
    A lock file that cannot be opened counts as held (never remove what may be in use)."""
    lock = FileLock(Path(path), timeout=0, mode=0o644, preserve_lock_file=True)
    try:
        lock.acquire()
    except Timeout:
        return True
    except OSError:
        return True
    lock.release()
    return False
