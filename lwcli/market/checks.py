"""Quality assurance on submit, and the market's self-check (``lw market verify``).

QA loads the model *in a contained child process* (:mod:`lwcli.market.contained`) with a time
limit, feeds it probe inputs drawn from its own RKME and the RKME's reduced points, and checks the outputs' shape and finiteness. It
also measures how well the model's outputs at the reduced points agree with the output part of
the specification: a specification that belongs to the model agrees closely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import LwError, ManifestError, ModelCheckError, SpecError
from .layout import MANIFEST_NAME, SPEC_NAME
from .manifest import Manifest
from .package import Package

#: inputs drawn from a submitted learnware's own RKME for QA (anchors use their own, more)
QA_PROBES = 64
LOW_AGREEMENT = 0.5


def check_consistency(manifest: Manifest, spec) -> None:
    """The specification must describe the manifest's inputs and outputs, and the market must
    be able to serve the learnware (at pack and at submit)."""
    if manifest.task == "regression" and len(manifest.outputs) > 1:
        raise ManifestError(
            f"learnware.toml declares {len(manifest.outputs)} regression outputs "
            f"{list(manifest.outputs)[:4]}; lw serves single-output models only (labelled "
            "search, anchor-eval and scored reuse take one target column)",
            "package one learnware per output, each with output.dimension = 1")
    if spec.kind != "joint":
        raise SpecError("the package's specification embeds inputs only; a learnware's spec must "
                        "embed (x, y_hat)", "build it with lw spec DATA --model MODEL --meta ...")
    if tuple(spec.features) != tuple(manifest.features):
        raise SpecError(f"the specification's features {list(spec.features)[:6]}... do not match "
                        f"input.features {list(manifest.features)[:6]}... (names and order)",
                        "rebuild the spec from data with exactly the declared feature columns")
    if spec.task != manifest.task:
        raise SpecError(f"the specification is for task {spec.task!r}, the manifest declares "
                        f"{manifest.task!r}", "rebuild the spec with --meta learnware.toml")
    if tuple(spec.outputs) != tuple(manifest.outputs):
        raise SpecError(f"the specification's outputs {list(spec.outputs)} do not match the "
                        f"manifest's {list(manifest.outputs)}",
                        "rebuild the spec with --meta learnware.toml")


def run_model_in_child(model_bytes: bytes, fmt: str, trust: bool, X: np.ndarray, task: str,
                       outputs, features, timeout: float) -> np.ndarray:
    """Outputs of the model on ``X`` (columns in ``features`` order; island encoding),
    computed in a contained child process (:mod:`lwcli.market.contained`: its own process
    group, killed on timeout and on every exit path, stderr read bounded, job folder in the
    system temp dir) that also checks the model's input names and, for classes, its
    probability column order (:func:`lwcli.market.models.check_class_order`). Nothing is
    written in the market.

    ``X``: (n, d) inputs; returns (n, len(outputs)) floats. Errors: the child's
    :class:`~lwcli.errors.LwError` (a model that fails to load, crashes, times out, or names
    its inputs or classes otherwise), raised here."""
    from .contained import Item, run_contained

    (res,) = run_contained([Item(model_bytes, fmt, features, task, outputs, X, mode="qa")],
                           trust=trust, timeout=timeout)
    if isinstance(res, LwError):
        raise res
    return res


def agreement(spec, Y_model: np.ndarray) -> tuple[float, str]:
    """How well the model's outputs at the reduced points match the spec's output part.

    ``Y_model``: (K, outputs), the model's outputs at the spec's K reduced points. Returns
    (value, metric): the beta-weighted accuracy of the argmax for classification, else the
    beta-weighted R^2 (0.0 when the spec's outputs do not vary)."""
    r = spec.rkme
    w = r.beta
    Y_spec = r.points[:, r.metric.n_inputs:]
    if spec.task == "classification":
        hit = np.argmax(Y_model, 1) == np.argmax(Y_spec, 1)
        # beta is on the simplex to 1e-6 only: a perfect model can score 1.0000000000000002
        return min(max(float(w @ hit), 0.0), 1.0), "weighted_accuracy"
    mean = w @ Y_spec
    ss_res = float(w @ ((Y_model - Y_spec) ** 2).sum(1))
    ss_tot = float(w @ ((Y_spec - mean) ** 2).sum(1))
    return (1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0), "weighted_r2"


@dataclass(frozen=True)
class QAReport:
    probes: int
    agreement: float
    agreement_metric: str
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"probes": self.probes, "agreement": self.agreement,
                "agreement_metric": self.agreement_metric, "warnings": list(self.warnings)}


def quality_check(pkg: Package, *, trust: bool, timeout: float | None = None,
                  seed: int = 0) -> QAReport:
    """Run a package's model on :data:`QA_PROBES` inputs sampled from its RKME's input part
    plus the RKME's K reduced points (seeded by ``seed``), in a contained child
    (:func:`run_model_in_child`, ``timeout`` seconds, default ``LW_QA_TIMEOUT``), and measure
    its agreement with its own specification (:func:`agreement`).

    Errors: :func:`check_consistency`'s; :class:`ModelCheckError` when the outputs are not
    (QA_PROBES + K, outputs) or not finite; the child's :class:`LwError`. A low agreement is
    a warning in the report, not an error."""
    from ..settings import qa_timeout

    man, spec = pkg.manifest, pkg.spec
    check_consistency(man, spec)
    timeout = timeout or qa_timeout()
    r = spec.rkme
    rng = np.random.default_rng(seed)
    probes = r.input_part().sample(QA_PROBES, rng)
    X = np.vstack([probes, r.points[:, : r.metric.n_inputs]])
    Y = run_model_in_child(pkg.model_bytes, man.model_format, trust, X, man.task, man.outputs,
                           man.features, timeout)
    if Y.shape != (len(X), len(man.outputs)):
        raise ModelCheckError(f"the model's outputs have shape {Y.shape}, expected "
                              f"{(len(X), len(man.outputs))}", "fix the model's output shape")
    if not np.all(np.isfinite(Y)):
        raise ModelCheckError("the model returned NaN or infinite outputs on probe inputs",
                              "fix the model so that it returns finite values")
    agree, metric = agreement(spec, Y[QA_PROBES:])
    warnings = []
    if agree < LOW_AGREEMENT:
        warnings.append(f"the model agrees poorly with its own specification ({metric} "
                        f"{agree:.2f}); was the spec built with this model?")
    return QAReport(QA_PROBES, agree, metric, tuple(warnings))


def recheck_learnwares(market, ids: list[str], *, trust: bool = False, executor=None,
                       progress=None) -> dict:
    """QA again, on the stored learnwares ``ids``, in this environment (after an upgrade of
    scikit-learn, onnxruntime, lw...): each model loaded and run on the same probes as at its
    submit (:func:`quality_check`, same seed), contained. Chunks of ids are pieces of
    ``executor`` (:mod:`lwcli.executor`). Stored records are never changed (a learnware is
    immutable): the result says what no longer passes.

    Returns ``{"checked", "failed": [{"id", "reason"}], "changed": [{"id", "recorded",
    "now"}], "skipped": [{"id", "reason"}]}``: ``failed`` no longer loads or runs,
    ``changed`` passes with an agreement that moved by more than :data:`RECHECK_TOLERANCE`,
    ``skipped`` are pickle/joblib models without ``trust``."""
    from ..executor import InProcess, chunks, counting
    from .manifest import TRUST_FORMATS

    ex = executor or InProcess()
    out = {"checked": 0, "failed": [], "changed": [], "skipped": []}
    run = []
    for lw_id in ids:
        if market.manifest(lw_id).model_format in TRUST_FORMATS and not trust:
            out["skipped"].append({"id": lw_id, "reason": "pickle/joblib model: needs --trust"})
        else:
            run.append(lw_id)
    parts = chunks(run, ex.width)
    results = ex.run(_recheck_piece, [(market.location, part, trust) for part in parts],
                     counting(progress, f"QA re-check ({len(run)} models)", len(parts)))
    for part, res in zip(parts, results):
        if isinstance(res, LwError):
            out["failed"] += [{"id": i, "reason": res.message} for i in part]
            continue
        for row in res:
            out["checked"] += 1
            if "reason" in row:
                out["failed"].append(row)
            elif abs(row["now"] - row["recorded"]) > RECHECK_TOLERANCE:
                out["changed"].append(row)
    return out


#: an agreement that moved by more than this at a re-check is reported
RECHECK_TOLERANCE = 1e-6


def _recheck_piece(job: tuple) -> list[dict]:
    """One chunk of a re-check, in whatever process the executor chose."""
    from .store import Market

    location, ids, trust = job
    market = Market.open(location, recover=False)
    rows = []
    for lw_id in ids:
        try:
            files = market.learnware_files(lw_id)
            man = market.manifest(lw_id)
            pkg = Package(man, market.spec(lw_id), files[man.model_file], files[MANIFEST_NAME],
                          files[SPEC_NAME])
            rep = quality_check(pkg, trust=trust)
            recorded = market.record(lw_id).get("qa", {}).get("agreement")
            rows.append({"id": lw_id, "recorded": recorded if recorded is not None
                         else rep.agreement, "now": rep.agreement})
        except LwError as exc:
            rows.append({"id": lw_id, "reason": exc.message})
    return rows


# lw market verify lives in lwcli.market.verify; lwcli.api imports it from this module
from .verify import VerifyReport, verify_market  # noqa: E402


__all__ = ["quality_check", "recheck_learnwares", "verify_market", "QAReport", "VerifyReport", "check_consistency",
           "run_model_in_child"]
