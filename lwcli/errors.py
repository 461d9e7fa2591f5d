"""Every error lw raises on purpose.

Each class carries the process exit code the CLI maps it to and a hint that says how to fix
the problem. Messages follow "expected / got / fix". Only the CLI boundary turns these into
exit codes; library users catch :class:`LwError` (or a subclass).

Exit codes (documented in the README):
    0  success
    1  internal error (a bug: please report it)
    2  usage error (bad flags or flag combinations)
    3  not found (file, learnware id, island)
    4  invalid input (malformed data, manifest, spec or package)
    5  market conflict or corruption (metric mismatch, verify failures, a lock held too long)
    6  device or optional extra unavailable
    7  model rejected by quality assurance (crash, timeout, wrong outputs)
    8  untrusted model format refused (pickle/joblib without --trust)
    9  storage: the market or an output file cannot be written (disk full, read-only
       filesystem, permission denied); nothing was changed
"""

from __future__ import annotations


class LwError(Exception):
    """Base class. ``str(err)`` is a single line: the problem, then the fix."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        # one line, whatever a library's text it quotes holds (pandas ends some with "\n")
        message = " ".join(str(message).split())
        hint = " ".join(str(hint).split()) if hint else hint
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def __reduce__(self):
        # pickled whole (hint included) when it comes back from a worker process
        return (self.__class__, (self.message, self.hint))


class UsageError(LwError):
    exit_code = 2


class NotFoundError(LwError):
    exit_code = 3


class InvalidInputError(LwError):
    exit_code = 4


class DataError(InvalidInputError):
    """User or developer data is unusable (shape, NaN, non-numeric, wrong columns)."""


class ManifestError(InvalidInputError):
    """learnware.toml is malformed or fails validation."""


class SpecError(InvalidInputError):
    """An RKME specification file is malformed or inconsistent."""


class PackageError(InvalidInputError):
    """A learnware package is corrupt, truncated, oversized or unsafe."""


class ReportError(InvalidInputError):
    """An anchor report (``lw anchor-eval`` output) is malformed or was edited."""


class ReuserFileError(InvalidInputError):
    """A saved reuser (``lw reuse --save-model``) is corrupt, truncated, tampered with or of
    another format."""


class MarketError(LwError):
    """The market directory is inconsistent, corrupt or conflicts with the request."""

    exit_code = 5


class MetricMismatchError(MarketError):
    """A specification was fitted with a kernel metric other than its island's."""


class ConcurrentWriteError(MarketError):
    """Another writer changed an object-store market's pointer first (compare-and-swap lost)
    too many times in a row."""


class LockTimeoutError(MarketError):
    """Another lw process held a lock (the market's writers' lock, a spec folder's state
    lock) past the timeout: a conflict, exit code 5."""


class DeviceError(LwError):
    exit_code = 6


class MissingExtraError(DeviceError):
    """An optional dependency (e.g. onnxruntime) is not installed."""


class SchedulerError(DeviceError):
    """The Dask scheduler asked for (``--scheduler``, ``LW_SCHEDULER``) cannot be reached or
    cannot run lw."""


class WorkerLostError(DeviceError):
    """A piece of batch work killed its worker process every time it ran."""


class ModelCheckError(LwError):
    """The model failed quality assurance: did not load, crashed, hung or gave bad outputs."""

    exit_code = 7


class UntrustedModelError(LwError):
    exit_code = 8


class StorageError(LwError):
    """A write failed for a reason outside lw and the input: no space left (ENOSPC, EDQUOT,
    a short write), a read-only filesystem (EROFS) or no permission (EACCES, EPERM). What was
    being written is left as it was before (writes are atomic)."""

    exit_code = 9
