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

from .engine.kernels import KernelMetric
from .engine.rkme import RKME
from .errors import NotFoundError, SpecError
from .validation import nfc_all

FORMAT = "lw-rkme"
VERSION = 1
MAX_SPEC_BYTES = 64 * 1024 * 1024


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
    extra: dict = field(default_factory=dict)

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


def spec_from_dict(d: dict, source: str = "specification") -> Spec:
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise SpecError(f"{source} is not an lw RKME specification (format != {FORMAT!r})",
                        "build one with lw spec")
    if d.get("version") != VERSION:
        raise SpecError(f"{source} has format version {d.get('version')!r}, expected {VERSION}",
                        "rebuild it with this version of lw spec")
    try:
        metric = KernelMetric.from_dict(d["metric"])
        beta = np.asarray(d["beta"], dtype=np.float64)
        points = np.asarray(d["points"], dtype=np.float64)
        features = tuple(nfc_all(d["features"]))
        task = d.get("task")
        outputs = tuple(str(o) for o in d.get("outputs") or ())
        if task == "regression":   # output names; class labels are kept as written
            outputs = tuple(nfc_all(outputs))
        rkme = RKME(beta=beta, points=points.reshape(len(beta), -1) if beta.size else points,
                    metric=metric, n_rows=int(d["n_rows"]), approx_error=float(d["approx_error"]),
                    seed=int(d.get("seed", 0)), fit_info=dict(d.get("fit_info") or {}))
    except SpecError as exc:
        raise SpecError(f"{source}: {exc.message}", exc.hint) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"{source} is malformed: {exc!r}", "rebuild it with lw spec") from exc
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
    return Spec(rkme=rkme, features=features, task=task, outputs=outputs,
                output_source=d.get("output_source"), island=d.get("island"))


def spec_from_bytes(data: bytes, source: str = "specification") -> Spec:
    try:
        d = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"{source} is not valid JSON: {exc}", "rebuild it with lw spec") from exc
    return spec_from_dict(d, source)


def read_spec(path: str | Path) -> Spec:
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"specification file {p} does not exist", "check the path")
    if p.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"{p} is {p.stat().st_size} bytes: larger than the {MAX_SPEC_BYTES} "
                        "allowed for a specification", "rebuild it with a smaller --k")
    return spec_from_bytes(p.read_bytes(), str(p))
