"""Learnwares together with a model trained on the user's labels (the seed's "Top-2 + user
model"), weighted by cross-validation so that the blend is never clearly worse than the user
model alone.

Components: the user model's out-of-fold outputs and each learnware's outputs on the user's
rows. Weights on the simplex minimise the quadratic loss (MSE, or the Brier score for
classes): one QP. A second, outer cross-validation checks the *choice* of weights: weights
fitted on K-1 folds are scored on the held-out fold. The blend is kept only if that honest
loss beats the user model's own out-of-fold loss, *and* the gain does not rest on a handful
of rows: on the rows left after dropping the 1% where the user model errs most, the blend
must still win by at least one standard error (:func:`trimmed_gain_z`). Squared errors are
heavy-tailed (on the PM2.5 benchmark the worst 1% of hours carry about a third of them), and
a gain found only on a few extreme rows did not carry over to new rows there.
"""

from __future__ import annotations

import numpy as np

from ..qp import simplex_qp
from .base import Reuser
from .user_model import (estimator_output, fit_estimator, make_folds, quadratic_loss,
                         row_losses, select_user_model, targets)


def blend_weights(F: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Simplex weights minimising ``|| sum_a w_a F_a - T ||^2`` (F: components x rows x cols)."""
    n = T.shape[0]
    G = np.einsum("anw,bnw->ab", F, F) / n
    c = np.einsum("anw,nw->a", F, T) / n
    return simplex_qp(G, c)


def cross_validated_blend_rows(F: np.ndarray, T: np.ndarray, folds) -> np.ndarray:
    """Per-row loss of weights fitted on the other folds, scored on each held-out fold."""
    out = np.empty(T.shape[0])
    for train, test in folds:
        w = blend_weights(F[:, train], T[train])
        out[test] = row_losses(np.tensordot(w, F[:, test], axes=1), T[test])
    return out


TRIM = 0.01          # share of rows, the user model's worst, that the guard leaves out
MIN_GAIN_Z = 1.0     # the blend must win on the rest by at least this many standard errors


def trimmed_gain_z(user_rows: np.ndarray, blend_rows: np.ndarray, trim: float = TRIM) -> float:
    """How many standard errors the blend's per-row gain over the user model is above zero,
    on the rows left after dropping the ``trim`` share where the user model's loss is largest.

    ``inf`` when the gain is positive and constant, ``0`` when there is none to measure.
    """
    user_rows, blend_rows = np.asarray(user_rows, float), np.asarray(blend_rows, float)
    keep = user_rows <= np.quantile(user_rows, 1.0 - trim)
    d = (user_rows - blend_rows)[keep]
    if len(d) < 2:
        return 0.0
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return float("inf") if d.mean() > 0 else 0.0
    return float(d.mean() / (sd / np.sqrt(len(d))))


class WithUserReuser(Reuser):
    """Blend of learnwares and the user's own model, weights by cross-validation.

    ``user_model``: a scikit-learn estimator, or ``None`` to choose among ridge/logistic,
    random forest and gradient boosting by cross-validation. ``weights_[0]`` is the user
    model's weight, then one per learnware.
    """

    method = "with-user"
    needs_labels = True
    _state_attrs = ("weights_", "cv_losses_", "user_model_name_", "fallback_")
    # blend_gain_z_ (the guard's statistic) is a fit diagnostic, not needed to predict: it is
    # not saved, so reusers saved before it existed still load
    _estimator_attrs = ("user_model_",)
    _detail_attrs = ("cv_losses_", "user_model_name_", "fallback_", "blend_gain_z_")
    reuse_params = ("random_state", "cv")

    def weight_names(self) -> list[str]:
        """``weights_[0]`` weighs the user's model, then one per learnware."""
        return ["user_model", *self.learnware_ids_]

    def comparison_model(self):
        return self.user_model_

    def __init__(self, learnwares=(), user_model=None, cv=5, random_state=0):
        self.learnwares = learnwares
        self.user_model = user_model
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y=None):
        lws, X, y = self._fit_labelled(X, y)
        classes = list(getattr(self, "class_keys_", []))
        folds = make_folds(y, self.task_, self.cv, self.random_state)
        choice = select_user_model(X, y, self.task_, classes, folds, estimator=self.user_model,
                                   random_state=self.random_state)
        T = targets(y, self.task_, classes)
        F = np.stack([choice.oof, *self.learnware_outputs(X)])
        w = blend_weights(F, T)
        user_rows = row_losses(choice.oof, T)
        blend_rows = cross_validated_blend_rows(F, T, folds)
        user_loss, blend_cv = float(user_rows.mean()), float(blend_rows.mean())
        self.blend_gain_z_ = trimmed_gain_z(user_rows, blend_rows)
        self.fallback_ = bool(blend_cv > user_loss or self.blend_gain_z_ < MIN_GAIN_Z)
        if self.fallback_:
            w = np.zeros(len(F))
            w[0] = 1.0
        self.weights_ = w
        self.cv_losses_ = {"user_model": user_loss, "blend": blend_cv,
                           **{lw.id: quadratic_loss(F[i + 1], T) for i, lw in enumerate(lws)}}
        self.user_model_name_ = choice.name
        self.user_model_ = fit_estimator(choice.estimator, X, y, self.task_)
        return self

    def _combine(self, X) -> np.ndarray:
        outs = self.learnware_outputs(X)
        X = self._check_X(X)
        user = estimator_output(self.user_model_, X, self.task_, list(getattr(self, "class_keys_", [])))
        return sum(w * P for w, P in zip(self.weights_, [user, *outs]))
