"""Scores of predictions against labels: what anchor reports and reuse evaluations contain.

Only aggregate numbers come out of here, never rows. The scores are scikit-learn's
(:mod:`sklearn.metrics`), with these choices:

- several regression outputs: RMSE and MAE over all entries (``multioutput="uniform_average"``
  of the per-output MSE, then the root; of the per-output MAE), R² is
  ``multioutput="variance_weighted"``, i.e. ``1 - sum(ss_res) / sum(ss_tot)`` over the outputs
  that vary. A constant target gives R² 1 for an exact prediction, else 0 (scikit-learn's
  ``force_finite``); fewer than two rows give R² 0 (scikit-learn's is NaN).
- class labels are compared by :func:`~lwcli.labels.label_str` (``1``, ``1.0``, ``True`` and
  ``"1"`` are one class); F1 is the macro average over the labels in ``y`` or ``pred``.
- log loss is scikit-learn's: probabilities clipped to ``[eps, 1 - eps]`` (float64 machine
  epsilon), rows not renormalised. A true label that is not among ``classes`` has probability 0.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

from ..labels import label_str

REGRESSION_METRICS = ("rmse", "mae", "r2")
CLASSIFICATION_METRICS = ("accuracy", "f1", "log_loss")
LOWER_IS_BETTER = {"rmse", "mae", "log_loss"}


def regression_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    pred = np.asarray(pred, dtype=np.float64).reshape(len(y), -1)
    r2 = skm.r2_score(y, pred, multioutput="variance_weighted") if len(y) >= 2 else 0.0
    return {"rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
            "mae": float(skm.mean_absolute_error(y, pred)), "r2": float(r2)}


def _labels(v) -> np.ndarray:
    return np.asarray([label_str(x) for x in np.asarray(v, dtype=object).ravel()], dtype=object)


def classification_scores(y, pred, proba: np.ndarray | None = None,
                          classes=None) -> dict[str, float]:
    """Accuracy, macro F1 over the labels present, and log loss when probabilities (columns in
    ``classes`` order) are given."""
    y, pred = _labels(y), _labels(pred)
    out = {"accuracy": float(skm.accuracy_score(y, pred)),
           "f1": float(skm.f1_score(y, pred, labels=sorted(set(y) | set(pred)),
                                    average="macro", zero_division=0.0))}
    if proba is not None and classes is not None:
        out["log_loss"] = _log_loss(y, proba, _labels(classes))
    return out


def _log_loss(y: np.ndarray, proba, classes: np.ndarray) -> float:
    """scikit-learn's log loss with the columns of ``proba`` labelled ``classes``; true labels
    outside ``classes`` get a column of zeros. scikit-learn reads the columns in sorted label
    order and needs two labels at least: the columns are sorted, and a lone class gets a zero
    column beside it (neither changes the loss)."""
    P = np.clip(np.asarray(proba, dtype=np.float64).reshape(len(y), -1), 0.0, 1.0)
    labels = list(classes) + sorted(set(y) - set(classes))
    if len(labels) < 2:
        labels.append(labels[0] + "\0" if labels else "\0")
    P = np.hstack([P, np.zeros((len(y), len(labels) - P.shape[1]))])
    order = sorted(range(len(labels)), key=labels.__getitem__)
    with warnings.catch_warnings():     # float32 models' rows miss 1 by ~1e-7: not news
        warnings.filterwarnings("ignore", message=".*do not sum to one", category=UserWarning)
        return float(skm.log_loss(y, P[:, order], labels=[labels[i] for i in order]))


def baseline_scores(y, task: str) -> dict[str, float]:
    """Scores of the best constant prediction: the mean (RMSE, R²), the median (MAE), or the
    majority class. An anchor that does not beat these has no skill on the task."""
    if task == "classification":
        labels = np.asarray([label_str(v) for v in np.asarray(y).ravel()], dtype=object)
        values, counts = np.unique(labels.astype(str), return_counts=True)
        return {"accuracy": float(counts.max() / counts.sum())}
    Y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    return {"rmse": float(np.sqrt(((Y - Y.mean(0)) ** 2).mean())),
            "mae": float(np.abs(Y - np.median(Y, 0)).mean()), "r2": 0.0}


def skill(score: float, baseline: float, metric: str) -> float:
    """How much better than the constant baseline: 1 - loss/baseline_loss (R²-like), with
    accuracy read as the loss 1 - accuracy. 1 is perfect, 0 no better than a constant."""
    if metric in ("accuracy", "f1"):
        score, baseline = 1.0 - score, 1.0 - baseline
    if baseline <= 0:
        return 0.0 if score > 0 else 1.0
    return 1.0 - score / baseline
