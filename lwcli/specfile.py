"""RKME specification files: a readable JSON document with a type check on load.

Floats are written with Python's shortest round-trip repr, so beta and the points survive a
write/read cycle bit for bit in float64. No raw data rows are ever stored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .engine.kernel import KernelMetric
from .engine.rkme import RKME
from .errors import NotFoundError, SpecError
from .validation import (FLOAT32_MAX, MAX_FEATURES, MAX_K, MAX_NAME_CHARS, MAX_OUTPUTS,
                         MAX_ROWS, MAX_SCALED_COORD, MAX_SPEC_BYTES, nfc_all)

FORMAT = "lw-rkme"
VERSION = 1


@dataclass(frozen=True)
class Spec:
    """An RKME plus what its coordinates mean.

    ``kind``: ``"input"`` (x only: a user's unlabelled requirement) or ``"joint"`` (x, y).
    ``outputs``: the output coordinates' names: the target's name for regression, the class
    labels (as strings, in the island's order) for classification.
    ``output_source``: ``"model"`` (a learnware: y_hat from its model) or ``"target"``
    (a user's labelled requirement).
    """

    rkme: RKME
    features: tuple[str, ...]
    task: str | None = None
    outputs: tuple[str, ...] = ()
    output_source: str | None = None
    island: str | None = None
    intake: object = field(default=None, compare=False, repr=False)   # not stored

    @property
    def kind(self) -> str:
        return "joint" if self.outputs else "input"

    def to_dict(self) -> dict:
        r = self.rkme
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "features": list(self.features),
            "task": self.task,
            "outputs": list(self.outputs),
            "output_source": self.output_source,
            "island": self.island,
            "metric": r.metric.to_dict(),
            "metric_digest": r.metric.digest(),
            "k": r.k,
            "n_rows": r.n_rows,
            "seed": r.seed,
            "approx_error": r.approx_error,
            "fit_info": r.fit_info,
            "beta": [float(b) for b in r.beta],
            "points": [[float(v) for v in row] for row in r.points],
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=1) + "\n").encode()

    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bad(source: str, what: str) -> SpecError:
    return SpecError(f"{source} is malformed: {what}", "rebuild it with lw spec")


def _names(v, field_name: str, source: str, limit: int) -> list[str]:
    """A list of at most ``limit`` non-empty strings of at most MAX_NAME_CHARS characters."""
    if not isinstance(v, list):
        raise _bad(source, f"{field_name} must be a list of names, got {type(v).__name__}")
    if len(v) > limit:
        raise SpecError(f"{source} has {len(v)} {field_name}, over the limit of {limit}",
                        "use fewer columns")
    for x in v:
        if not isinstance(x, str) or not x or len(x) > MAX_NAME_CHARS:
            raise _bad(source, f"{field_name} must hold names of 1 to {MAX_NAME_CHARS} "
                               f"characters, got {type(x).__name__} {str(x)[:40]!r}")
    return v


def _vector(v, source: str) -> np.ndarray:
    """beta: a non-empty list of at most MAX_K numbers (JSON numbers only: no strings, no
    booleans), as float64."""
    if not isinstance(v, list) or not v:
        raise _bad(source, f"beta must be a non-empty list of numbers, got {type(v).__name__}")
    if len(v) > MAX_K:
        raise SpecError(f"{source} has {len(v)} reduced points, over the limit of {MAX_K}",
                        f"rebuild it with lw spec --k {MAX_K} or fewer")
    if not all(_num(x) for x in v):
        odd = next(x for x in v if not _num(x))
        raise _bad(source, f"beta must hold numbers only, got {type(odd).__name__} "
                           f"{str(odd)[:40]!r}")
    return _floats(v, source, "beta")


def _floats(v, source: str, what: str) -> np.ndarray:
    try:
        with np.errstate(all="ignore"):
            return np.asarray(v, dtype=np.float64)
    except OverflowError:   # an integer beyond float64's range
        raise _bad(source, f"{what} holds a number beyond float64's range") from None


def _matrix(v, rows: int, cols: int, source: str) -> np.ndarray:
    """points: ``rows`` lists of ``cols`` numbers each."""
    if not isinstance(v, list) or len(v) != rows:
        got = f"{len(v)} rows" if isinstance(v, list) else type(v).__name__
        raise _bad(source, f"points must be a list of {rows} rows (one per weight), got {got}")
    for i, row in enumerate(v):
        if not isinstance(row, list) or len(row) != cols or not all(_num(x) for x in row):
            raise _bad(source, f"points row {i} must be a list of {cols} numbers "
                               f"(the metric's coordinates)")
    return _floats(v, source, "points").reshape(rows, cols)


def spec_from_dict(d: dict, source: str = "specification") -> Spec:
    """A specification from its JSON form. Every field is checked for its type and range
    before use (numbers are numbers, not strings or booleans; points fit float32, the type
    the engine computes in), so a malformed or hostile file is a :class:`SpecError`."""
    metric = _header(d, source)
    features, task, outputs = _meaning(d, source)
    beta, points, n_rows, seed, err, fit_info = _numbers(d, source, metric)
    try:
        rkme = RKME(beta=beta, points=points, metric=metric, n_rows=n_rows,
                    approx_error=float(err), seed=seed, fit_info=dict(fit_info or {}))
    except SpecError as exc:
        raise SpecError(f"{source}: {exc.message}", exc.hint) from exc
    except OverflowError:
        raise _bad(source, "approx_error is beyond float64's range") from None
    _check_consistent(d, source, rkme, features, task, outputs)
    return Spec(rkme=rkme, features=features, task=task, outputs=outputs,
                output_source=d.get("output_source"), island=d.get("island"))


def _header(d, source: str) -> KernelMetric:
    """Check the format, the version and that the required fields are there; the metric."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise SpecError(f"{source} is not an lw RKME specification (format != {FORMAT!r})",
                        "build one with lw spec")
    if d.get("version") != VERSION or isinstance(d.get("version"), bool):
        raise SpecError(f"{source} has format version {str(d.get('version'))[:20]!r}, expected "
                        f"{VERSION}", "rebuild it with this version of lw spec")
    for key in ("metric", "beta", "points", "features", "n_rows", "approx_error"):
        if key not in d:
            raise _bad(source, f"field {key!r} is missing")
    try:
        metric = KernelMetric.from_dict(d["metric"])
    except SpecError as exc:
        raise SpecError(f"{source}: {exc.message}", exc.hint) from exc
    return metric


def _meaning(d: dict, source: str) -> tuple[tuple[str, ...], str | None, tuple[str, ...]]:
    """``(features, task, outputs)``, after checking them and the other descriptive fields
    (output_source, kind, island, metric_digest's type)."""
    features = tuple(nfc_all(_names(d["features"], "features", source, MAX_FEATURES)))
    task = d.get("task")
    if task not in (None, "classification", "regression"):
        raise _bad(source, f"task must be 'classification', 'regression' or null, got "
                           f"{str(task)[:40]!r}")
    outputs = tuple(_names(d.get("outputs") or [], "outputs", source, MAX_OUTPUTS))
    if task == "regression":   # output names; class labels are kept as written
        outputs = tuple(nfc_all(outputs))
    for key, allowed in (("output_source", (None, "model", "target")),
                         ("kind", (None, "joint" if outputs else "input"))):
        if d.get(key) not in allowed:
            raise _bad(source, f"{key} must be one of {[a for a in allowed if a]}, got "
                               f"{str(d.get(key))[:40]!r}")
    island = d.get("island")
    if island is not None and (not isinstance(island, str) or len(island) > MAX_NAME_CHARS):
        raise _bad(source, "island must be an island id or null")
    if d.get("metric_digest") is not None and not isinstance(d.get("metric_digest"), str):
        raise _bad(source, "metric_digest must be a string")
    return features, task, outputs


def _numbers(d: dict, source: str, metric: KernelMetric):
    """``(beta, points, n_rows, seed, approx_error, fit_info)``, each checked for its type and
    range: points finite, within float32 and MAX_SCALED_COORD kernel scales."""
    n_rows, seed, err = d["n_rows"], d.get("seed", 0), d["approx_error"]
    if not isinstance(n_rows, int) or isinstance(n_rows, bool) or not 1 <= n_rows <= MAX_ROWS:
        raise _bad(source, f"n_rows must be an integer from 1 to {MAX_ROWS}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
        raise _bad(source, "seed must be a non-negative 64-bit integer")
    if not _num(err):
        raise _bad(source, f"approx_error must be a number, got {type(err).__name__}")
    fit_info = d.get("fit_info")
    if fit_info is not None and not isinstance(fit_info, dict):
        raise _bad(source, "fit_info must be an object")
    beta = _vector(d["beta"], source)
    if d.get("k") is not None and d.get("k") != len(beta):
        raise _bad(source, f"k is {str(d.get('k'))[:20]}, but beta has {len(beta)} weights")
    points = _matrix(d["points"], len(beta), metric.dim, source)
    with np.errstate(all="ignore"):
        if not (np.isfinite(beta).all() and np.isfinite(points).all()):
            raise SpecError(f"{source} holds NaN or infinite weights or points",
                            "rebuild it with lw spec")
        scaled = np.abs(points) / np.asarray(metric.scales)
    if (np.abs(points) > FLOAT32_MAX).any() or (scaled > MAX_SCALED_COORD).any():
        raise SpecError(f"{source} holds points beyond the range lw computes in (float32, "
                        f"and at most {MAX_SCALED_COORD:g} kernel scales from 0)",
                        "rebuild it with lw spec from data without extreme values")
    return beta, points, n_rows, seed, err, fit_info


def _check_consistent(d: dict, source: str, rkme: RKME, features, task, outputs) -> None:
    """The fit succeeded, and names, task and metric digest agree with the metric."""
    metric = rkme.metric
    if np.isinf(rkme.approx_error) or rkme.approx_error < 0:   # NaN: not known (synthetic)
        raise SpecError(f"{source} has approximation error {rkme.approx_error}: the fit that "
                        "made it failed", "rebuild it with lw spec")
    if len(features) != metric.n_inputs:
        raise SpecError(f"{source} names {len(features)} features, its metric has "
                        f"{metric.n_inputs} inputs", "rebuild it with lw spec")
    if len(outputs) != metric.n_outputs:
        raise SpecError(f"{source} names {len(outputs)} outputs, its metric has "
                        f"{metric.n_outputs}", "rebuild it with lw spec")
    if outputs and task not in ("classification", "regression"):
        raise SpecError(f"{source} has outputs but task {task!r}", "rebuild it with lw spec")
    if d.get("metric_digest") not in (None, metric.digest()):
        raise SpecError(f"{source}: metric digest does not match its metric (file edited?)",
                        "rebuild it with lw spec")


def spec_from_bytes(data: bytes, source: str = "specification") -> Spec:
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{source} is {len(data)} bytes: larger than the {MAX_SPEC_BYTES} "
                        "allowed for a specification", "rebuild it with a smaller --k")
    try:
        d = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:   # JSONDecodeError, an over-long integer
        raise SpecError(f"{source} is not valid JSON: {exc}", "rebuild it with lw spec") from exc
    except RecursionError:
        raise SpecError(f"{source} is not an lw specification: JSON nested too deeply",
                        "rebuild it with lw spec") from None
    return spec_from_dict(d, source)


def read_spec(path: str | Path) -> Spec:
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"specification file {p} does not exist", "check the path")
    if p.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"{p} is {p.stat().st_size} bytes: larger than the {MAX_SPEC_BYTES} "
                        "allowed for a specification", "rebuild it with a smaller --k")
    return spec_from_bytes(p.read_bytes(), str(p))
