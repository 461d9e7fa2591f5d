"""The user's own model, chosen by cross-validation, and the folds and losses reuse shares.

``select_user_model`` tries a few well-understood candidates (a scaled ridge / logistic
regression with a tuned penalty, a random forest and, from 200 rows, gradient boosting) on
the same folds and keeps the one with the lowest cross-validated loss. Its out-of-fold
predictions come back too, so a reuser can weigh the user model against learnwares without
fitting anything twice.

Losses are proper and quadratic, so weights over several predictors are one simplex QP:
mean squared error for regression, the Brier score (squared error of one-hot labels) for
classification.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import clone

from ...errors import DataError
from ...labels import align_columns, label_str

MIN_LABELLED = 5        # fewer labelled rows than this cannot be cross-validated honestly


def make_folds(y, task: str, cv: int, random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled K folds (stratified when every class has at least K rows)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(y)
    if n < MIN_LABELLED:
        raise DataError(f"{n} labelled rows given: cross-validation needs at least {MIN_LABELLED}",
                        "pass more labelled rows, or use a method that needs no labels")
    k = max(2, min(int(cv), n))
    if task == "classification":
        _, counts = np.unique(np.asarray(y, dtype=object).astype(str), return_counts=True)
        if counts.min() >= k:
            split = StratifiedKFold(k, shuffle=True, random_state=random_state)
            return list(split.split(np.zeros(n), np.asarray(y).astype(str)))
    return list(KFold(k, shuffle=True, random_state=random_state).split(np.zeros(n)))


def targets(y, task: str, classes) -> np.ndarray:
    """The quadratic-loss target: values (n, d), or one-hot rows over ``classes``."""
    if task == "classification":
        from ...labels import one_hot

        return one_hot(np.asarray(y), list(classes), "user labels")
    return np.asarray(y, dtype=np.float64).reshape(len(y), -1)


def row_losses(P: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Each row's squared error summed over columns (squared error x d, or Brier)."""
    return ((P - T) ** 2).sum(1)


def quadratic_loss(P: np.ndarray, T: np.ndarray) -> float:
    """Mean over rows of the squared error summed over columns (MSE x d, or Brier)."""
    return float(row_losses(P, T).mean())


def estimator_output(est, X: np.ndarray, task: str, classes) -> np.ndarray:
    """A fitted scikit-learn estimator's output in the quadratic-loss space."""
    if task == "classification":
        have = [label_str(c) for c in est.classes_]
        return align_columns(np.asarray(est.predict_proba(X), dtype=np.float64), have,
                             list(classes))
    return np.asarray(est.predict(X), dtype=np.float64).reshape(len(X), -1)


def _fit_target(y, task: str):
    return np.asarray(y, dtype=object).astype(str) if task == "classification" else \
        (np.asarray(y, dtype=np.float64) if np.ndim(y) == 1 or np.shape(y)[1] > 1
         else np.asarray(y, dtype=np.float64).ravel())


RF_MAX_ROWS = 2000      # rows each forest tree is grown on (bootstrap), at most


def candidates(task: str, n_rows: int, random_state: int) -> dict:
    """The user-model candidates for ``n_rows`` labelled rows.

    Each random-forest tree grows on a bootstrap of at most ``RF_MAX_ROWS`` rows: beyond that
    gradient boosting wins the selection anyway (measured: every run from 5,000 rows in the
    quality benchmark), and unbounded trees would make the forest the slowest part of reuse.
    """
    from sklearn.ensemble import (HistGradientBoostingClassifier, HistGradientBoostingRegressor,
                                  RandomForestClassifier, RandomForestRegressor)
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rf_rows = None if n_rows <= RF_MAX_ROWS else RF_MAX_ROWS / n_rows
    if task == "classification":
        out = {"logistic": make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)),
               "random-forest": RandomForestClassifier(n_estimators=100, min_samples_leaf=2,
                                                       max_samples=rf_rows,
                                                       random_state=random_state, n_jobs=1)}
        if n_rows >= 200:
            out["gradient-boosting"] = HistGradientBoostingClassifier(random_state=random_state)
        return out
    out = {"ridge": make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))),
           "random-forest": RandomForestRegressor(n_estimators=100, min_samples_leaf=2,
                                                  max_samples=rf_rows,
                                                  random_state=random_state, n_jobs=1)}
    if n_rows >= 200:
        out["gradient-boosting"] = HistGradientBoostingRegressor(random_state=random_state)
    return out


def _fit(est, X: np.ndarray, yt: np.ndarray, task: str):
    """A clone of ``est`` fitted on ``(X, yt)``; labels of one class (a fold of 20 patients of
    whom 19 are ill, or a user whose labels are all one class) give the model that predicts
    that class, as no classifier can learn a boundary from them."""
    if task == "classification" and len(np.unique(yt)) < 2:
        from sklearn.dummy import DummyClassifier

        return DummyClassifier(strategy="prior").fit(X, yt)
    return clone(est).fit(X, yt)


def out_of_fold(est, X: np.ndarray, y, task: str, classes, folds) -> np.ndarray:
    """Out-of-fold outputs of ``est`` (cloned per fold) in the quadratic-loss space."""
    yt = _fit_target(y, task)
    width = len(classes) if task == "classification" else targets(y, task, classes).shape[1]
    out = np.zeros((len(X), width))
    for train, test in folds:
        fitted = _fit(est, X[train], yt[train], task)
        out[test] = estimator_output(fitted, X[test], task, classes)
    return out


@dataclass(frozen=True)
class UserModelChoice:
    name: str
    estimator: object            # unfitted
    oof: np.ndarray              # out-of-fold outputs (quadratic-loss space)
    losses: dict                 # name -> cross-validated quadratic loss


def select_user_model(X: np.ndarray, y, task: str, classes, folds, *, estimator=None,
                      random_state: int = 0) -> UserModelChoice:
    """The candidate (or the given ``estimator``) with the lowest cross-validated loss; for
    labels of one class, ``"one-class"``: the model that predicts it."""
    T = targets(y, task, classes)
    pool = {"custom": estimator} if estimator is not None else \
        candidates(task, len(X), random_state)
    if task == "classification" and len(np.unique(_fit_target(y, task))) < 2:
        from sklearn.dummy import DummyClassifier

        pool = {"one-class": DummyClassifier(strategy="prior")}   # nothing else to learn
    best = None
    losses = {}
    for name, est in pool.items():
        oof = out_of_fold(est, X, y, task, classes, folds)
        losses[name] = quadratic_loss(oof, T)
        if best is None or losses[name] < losses[best[0]]:
            best = (name, est, oof)
    return UserModelChoice(best[0], best[1], best[2], losses)


def fit_estimator(est, X: np.ndarray, y, task: str):
    return _fit(est, X, _fit_target(y, task), task)
