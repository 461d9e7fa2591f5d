"""Settings from the environment, in one place. Flags given to a command win over these.

    LW_MARKET        default market directory (--market)
    LW_DEVICE        auto | cpu | cuda | cuda:N (--device)
    LW_QA_TIMEOUT    seconds a submitted model may take to load and predict (default 60)
    LW_MAX_MODEL_MB  largest model file a package may hold, in MiB (default 512)
"""

from __future__ import annotations

import os

from .errors import UsageError


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number", f"unset {name} or set a number") from None
    if value <= 0:
        raise UsageError(f"{name}={raw!r} must be positive", f"unset {name} or set a positive value")
    return value


def qa_timeout() -> float:
    return _number("LW_QA_TIMEOUT", 60.0)


def max_model_bytes() -> int:
    return int(_number("LW_MAX_MODEL_MB", 512) * (1 << 20))


# -- fault injection, for lw's own crash and storage tests (see lwcli/faults.py) ------------
#
#    LW_CRASH_AT      comma-separated crash points (name or name@N: the N-th time the point is
#                     reached); the process SIGKILLs itself there. Tests only.
#    LW_FAIL_AT       comma-separated points (name, name@N, optionally =ERRNO, e.g.
#                     index:staged=EROFS) where a write fails with that OSError (default
#                     ENOSPC), as the OS would. Tests only.

def _points(name: str) -> str:
    return os.environ.get(name, "")


def crash_at() -> str:
    return _points("LW_CRASH_AT")


def fail_at() -> str:
    return _points("LW_FAIL_AT")
