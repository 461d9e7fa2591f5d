"""Faults: named crash points and injected write failures for lw's own tests, and what an
OS write fault means to a user (:func:`storage_error`).

``crash_point("submit:renamed")`` does nothing unless ``LW_CRASH_AT`` (read in
:mod:`lwcli.settings`) names that point: then the process SIGKILLs itself there, as a power cut
or the OOM killer would stop it (no ``finally``, no ``atexit``). ``name@N`` fires on the N-th
time the point is reached in the process, ``name@once:MARKER`` the first time in any process
(the one that creates the file MARKER). ``LW_FAIL_AT`` names points where a write raises
``OSError`` instead (``ENOSPC`` unless ``=ERRNO`` is given, e.g. ``=EROFS``), as a full disk
or a read-only filesystem would. :data:`POINTS` lists every point, for the tests.
"""

from __future__ import annotations

import errno
import os
import re
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import settings
from .errors import StorageError

#: Every crash point lw has, in the order a submit or a refresh reaches them.
POINTS = (
    "submit:locked",           # holds the writers' lock, nothing written yet
    "submit:intent",           # the intent record is written
    "submit:island",           # market.toml records the new island
    "commit:staged",           # the learnware's files are written and fsynced in tmp/
    "commit:renamed",          # learnwares/<id> renamed in, its folder not yet fsynced
    "submit:committed",        # the learnware is visible, not yet indexed
    "generation:staged",       # a new index/anchors generation is written in tmp/
    "generation:renamed",      # ... renamed into index/ or anchors/, CURRENT not switched
    "generation:switched",     # CURRENT names the new generation, old ones not yet removed
    "atomic-write:written",    # a file's new content is fsynced under a temporary name
    "submit:indexed",          # the index holds the learnware, the intent is still there
    "refresh:locked",          # refresh holds the writers' lock
    "refresh:indexed",         # the index is rebuilt, anchors not yet
    "refresh:planned",         # anchors computed, not yet published
    "refresh:published",       # anchors published, lock still held
    "recover:collected",       # housekeeping removed stale temporaries
)

_hits: dict[str, int] = {}


#: Reached by every piece of batch work in the process that runs it (:mod:`lwcli.executor`),
#: to kill a worker mid-batch; with ``@once:MARKER`` it fires in the first process only.
#: ``piece:<i>`` is reached by the i-th piece (from 0) of a batch only.
PIECE_POINT = "piece"


def _parse(raw: str) -> dict[str, tuple[int | str, str]]:
    out = {}
    for item in filter(None, (s.strip() for s in raw.split(","))):
        item, _, err = item.partition("=")
        name, _, nth = item.partition("@")
        out[name] = (nth if nth.startswith("once:") else int(nth) if nth.isdigit() else 1,
                     err or "ENOSPC")
    return out


def _reached(name: str, raw: str) -> str | None:
    """The errno name when this reach of ``name`` fires: the N-th in this process
    (``name@N``), or the first across processes (``name@once:MARKER``: whoever creates the
    file MARKER first)."""
    wanted = _parse(raw).get(name)
    if wanted is None:
        return None
    if isinstance(wanted[0], str):
        try:
            os.close(os.open(wanted[0][len("once:"):], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return None
        return wanted[1]
    key = f"{raw}\0{name}"
    _hits[key] = _hits.get(key, 0) + 1
    return wanted[1] if _hits[key] == wanted[0] else None


def crash_point(name: str) -> None:
    """SIGKILL this process here if ``LW_CRASH_AT`` names ``name`` (tests only)."""
    raw = settings.crash_at()
    if raw and _reached(name, raw) is not None:
        os.kill(os.getpid(), signal.SIGKILL)


def fail_point(name: str, path: str | Path | None = None) -> None:
    """Raise the ``OSError`` a full disk (or the given errno) gives, if ``LW_FAIL_AT`` names
    ``name`` (tests only)."""
    raw = settings.fail_at()
    if not raw:
        return
    err = _reached(name, raw)
    if err is not None:
        code = getattr(errno, err, errno.ENOSPC)
        raise OSError(code, os.strerror(code), str(path) if path is not None else None)


def point(name: str, path: str | Path | None = None) -> None:
    """A crash point that is also a place where a write may fail."""
    crash_point(name)
    fail_point(name, path)


# ------------------------------------------------------------------ OS faults -> exit 9

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
READ_ONLY = frozenset({errno.EROFS})
NO_PERMISSION = frozenset({errno.EACCES, errno.EPERM})
# numpy's tofile/save reports a short write without an errno: "58500 requested and 12256 written"
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def storage_cause(exc: BaseException) -> str | None:
    """"no space left on device", "read-only filesystem", "permission denied", or None when
    ``exc`` is not a storage fault."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno in NO_SPACE or (exc.errno is None and _SHORT_WRITE.search(str(exc))):
        return "no space left on device"
    if exc.errno in READ_ONLY:
        return "read-only filesystem"
    if exc.errno in NO_PERMISSION:
        return "permission denied"
    return None


def storage_error(exc: BaseException, path: str | Path | None = None, *,
                  verb: str = "could not write") -> StorageError | None:
    """The :class:`StorageError` (exit 9) an OS write fault means, naming the cause and the
    path, or None when ``exc`` is something else."""
    cause = storage_cause(exc)
    if cause is None:
        return None
    where = getattr(exc, "filename", None) or path
    where = f" {where}" if where else ""
    hint = {"no space left on device": "free space on that filesystem, then retry",
            "read-only filesystem": "remount it read-write or use a writable copy, then retry",
            "permission denied": "run lw as a user who may write there, or fix the "
                                 "permissions, then retry"}[cause]
    return StorageError(f"{verb}{where}: {cause}", f"{hint}; nothing was changed")


@contextmanager
def storage_guard(path: str | Path | None = None) -> Iterator[None]:
    """Turn an OS write fault inside the block into :class:`StorageError` (exit 9)."""
    try:
        yield
    except OSError as exc:
        err = storage_error(exc, path)
        if err is None:
            raise
        raise err from exc


__all__ = ["POINTS", "crash_point", "fail_point", "point", "storage_cause", "storage_error",
           "storage_guard"]
