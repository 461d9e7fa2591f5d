"""Every setting lw takes from the environment, in one place: no other module of lw reads
``os.environ``. A flag given to a command wins over its variable.

    LW_MARKET          default market directory (``--market``)
    LW_DEVICE          auto | cpu | cuda | cuda:N (``--device``; checked in :mod:`lwcli.device`)
    LW_SCHEDULER       Dask scheduler address for batch work (``--scheduler``)
    LW_JOBS            local worker processes for batch work (``--jobs``)
    LW_CACHE_DIR       where lw keeps local copies of object-store markets (default
                       ``$XDG_CACHE_HOME/lw``, else ``~/.cache/lw``)
    LW_DEBUG           set and not empty: an internal error shows its traceback
    LW_QA_TIMEOUT      seconds a submitted model may take to load and predict (default 60)
    LW_MAX_MODEL_MB    largest model file a package may hold, in MiB (default 512)
    SOURCE_DATE_EPOCH  seconds since 1970 (UTC): pins the timestamps lw records, the
                       reproducible-builds convention
    LW_CRASH_AT        crash points, for lw's own tests (:mod:`lwcli.faults`)
    LW_FAIL_AT         injected write failures, for lw's own tests (:mod:`lwcli.faults`)

Each function reads the environment when it is called, so a test or a long-lived process that
changes a variable sees the change. An unset or empty variable means its default. A value
that cannot be used raises :class:`~lwcli.errors.UsageError` (exit 2), one line naming the
variable, what it holds and what to set instead.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from .errors import UsageError


def _raw(name: str) -> str | None:
    """The variable's value, or None when it is unset or empty."""
    return os.environ.get(name) or None


def _number(name: str, default: float) -> float:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number", f"unset {name} or set a number") from None
    if value <= 0:
        raise UsageError(f"{name}={raw!r} must be positive", f"unset {name} or set a positive value")
    return value


def market() -> str | None:
    """``LW_MARKET``: the market directory a command uses without ``--market``, or None."""
    return _raw("LW_MARKET")


def device() -> str | None:
    """``LW_DEVICE``: the device asked for without ``--device``, or None (``auto``). Returned
    as written; :func:`lwcli.device.resolve_device` checks it (a bad name is exit 6)."""
    return _raw("LW_DEVICE")


def scheduler() -> str | None:
    """``LW_SCHEDULER``: the address of the Dask scheduler (``tcp://host:8786``) that runs
    ``lw spec`` batches and ``lw market refresh``, or None (:mod:`lwcli.executor`)."""
    return _raw("LW_SCHEDULER")


def cache_dir() -> str:
    """``LW_CACHE_DIR``: the folder for local copies of object-store markets (their immutable
    files and live generations); default ``$XDG_CACHE_HOME/lw``, else ``~/.cache/lw``."""
    raw = _raw("LW_CACHE_DIR")
    if raw is not None:
        return raw
    base = _raw("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lw")


def jobs() -> int | None:
    """``LW_JOBS``: local worker processes for batch work (a whole number >= 1), or None."""
    raw = _raw("LW_JOBS")
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"LW_JOBS={raw!r} is not a whole number >= 1",
                         "unset LW_JOBS or set e.g. LW_JOBS=4")
    return int(raw)


def debug() -> bool:
    """``LW_DEBUG``: True when set to anything but the empty string; an internal error then
    raises with its traceback instead of printing one line."""
    return _raw("LW_DEBUG") is not None


def qa_timeout() -> float:
    """``LW_QA_TIMEOUT``: seconds (> 0) a model may take to load and predict, per model, in
    submit's quality assurance, search's re-ranking and anchors. Default 60."""
    return _number("LW_QA_TIMEOUT", 60.0)


def max_model_bytes() -> int:
    """``LW_MAX_MODEL_MB``: the largest model file a package or a saved reuser may hold, in
    bytes (the variable is in MiB, > 0). Default 512 MiB."""
    return int(_number("LW_MAX_MODEL_MB", 512) * (1 << 20))


def source_date_epoch() -> int | None:
    """``SOURCE_DATE_EPOCH``: an integer number of seconds since 1970-01-01 UTC that replaces
    "now" in every timestamp lw records, or None to use the clock."""
    raw = _raw("SOURCE_DATE_EPOCH")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={raw!r} is not a whole number of seconds",
                         "unset SOURCE_DATE_EPOCH or set seconds since 1970, e.g. 1767225600"
                         ) from None


#: the variables a piece of batch work takes along to the worker that runs it
_CARRIED_PREFIX = "LW_"
_CARRIED = ("SOURCE_DATE_EPOCH",)


def carried() -> dict[str, str]:
    """lw's settings as this process has them (every ``LW_*`` and ``SOURCE_DATE_EPOCH``): what
    a piece of batch work takes to the worker that runs it (:mod:`lwcli.executor`), so that
    it runs under the caller's settings, not the worker's."""
    return {k: v for k, v in os.environ.items() if k.startswith(_CARRIED_PREFIX) or k in _CARRIED}


@contextmanager
def adopted(values: dict[str, str]) -> Iterator[None]:
    """Run the block under ``values`` (from :func:`carried`) as lw's settings: lw's variables
    that ``values`` lacks are unset meanwhile; everything is restored after."""
    before = carried()
    if before == values:
        yield
        return
    try:
        for k in before:
            os.environ.pop(k, None)
        os.environ.update(values)
        yield
    finally:
        for k in carried():
            os.environ.pop(k, None)
        os.environ.update(before)


def crash_at() -> str:
    """``LW_CRASH_AT``: comma-separated crash points (``name`` or ``name@N``, the N-th time
    the point is reached) where the process SIGKILLs itself; "" for none. Tests only."""
    return _raw("LW_CRASH_AT") or ""


def fail_at() -> str:
    """``LW_FAIL_AT``: comma-separated points (``name``, ``name@N``, optionally ``=ERRNO``,
    e.g. ``index:staged=EROFS``) where a write fails with that ``OSError`` (default
    ``ENOSPC``), as the OS would; "" for none. Tests only."""
    return _raw("LW_FAIL_AT") or ""
