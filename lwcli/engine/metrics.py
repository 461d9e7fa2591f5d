"""Scores of predictions against labels: what anchor reports and reuse evaluations contain.

Only aggregate numbers come out of here, never rows.
"""

from __future__ import annotations

import numpy as np

from ..labels import label_str

REGRESSION_METRICS = ("rmse", "mae", "r2")
CLASSIFICATION_METRICS = ("accuracy", "f1", "log_loss")
LOWER_IS_BETTER = {"rmse", "mae", "log_loss"}


def regression_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    pred = np.asarray(pred, dtype=np.float64).reshape(len(y), -1)
    err = pred - y
    ss_tot = float(((y - y.mean(0)) ** 2).sum())
    ss_res = float((err ** 2).sum())
    return {"rmse": float(np.sqrt((err ** 2).mean())), "mae": float(np.abs(err).mean()),
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0}


def classification_scores(y, pred, proba: np.ndarray | None = None,
                          classes=None) -> dict[str, float]:
    """Accuracy, macro F1 over the labels present, and log loss when probabilities (columns in
    ``classes`` order) are given."""
    y = np.asarray([label_str(v) for v in np.asarray(y).ravel()], dtype=object)
    pred = np.asarray([label_str(v) for v in np.asarray(pred).ravel()], dtype=object)
    out = {"accuracy": float((y == pred).mean())}
    f1s = []
    for c in sorted(set(y) | set(pred)):
        tp = float(((pred == c) & (y == c)).sum())
        fp = float(((pred == c) & (y != c)).sum())
        fn = float(((pred != c) & (y == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0)
    out["f1"] = float(np.mean(f1s))
    if proba is not None and classes is not None:
        idx = {c: i for i, c in enumerate(classes)}
        p = np.array([proba[r, idx[c]] if c in idx else 0.0 for r, c in enumerate(y)])
        out["log_loss"] = float(-np.log(np.clip(p, 1e-15, 1.0)).mean())
    return out


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
