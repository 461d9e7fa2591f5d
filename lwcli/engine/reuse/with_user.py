"""Learnwares together with a model trained on the user's labels (the seed's "Top-2 + user
model"), weighted by cross-validation so that the blend is never clearly worse than the user
model alone.

Components: the user model's out-of-fold outputs and each learnware's outputs on the user's
rows. Weights on the simplex minimise the quadratic loss (MSE, or the Brier score for
classes): one QP. A second, outer cross-validation checks the *choice* of weights: weights
fitted on K-1 folds are scored on the held-out fold; if that honest blend loss is above the
user model's own out-of-fold loss, the reuser keeps the user model alone.
"""

from __future__ import annotations

import numpy as np

from ..qp import simplex_qp
from .base import Reuser
from .user_model import (estimator_output, fit_estimator, make_folds, quadratic_loss,
                         select_user_model, targets)


def blend_weights(F: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Simplex weights minimising ``|| sum_a w_a F_a - T ||^2`` (F: components x rows x cols)."""
    n = T.shape[0]
    G = np.einsum("anw,bnw->ab", F, F) / n
    c = np.einsum("anw,nw->a", F, T) / n
    return simplex_qp(G, c)


def cross_validated_blend_loss(F: np.ndarray, T: np.ndarray, folds) -> float:
    """Loss of weights fitted on the other folds, scored on each held-out fold."""
    total = 0.0
    for train, test in folds:
        w = blend_weights(F[:, train], T[train])
        total += ((np.tensordot(w, F[:, test], axes=1) - T[test]) ** 2).sum()
    return float(total / T.shape[0])


class WithUserReuser(Reuser):
    """Blend of learnwares and the user's own model, weights by cross-validation.

    ``user_model``: a scikit-learn estimator, or ``None`` to choose among ridge/logistic,
    random forest and gradient boosting by cross-validation. ``weights_[0]`` is the user
    model's weight, then one per learnware.
    """

    method = "with-user"
    needs_labels = True
    _state_attrs = ("weights_", "cv_losses_", "user_model_name_", "fallback_")
    _estimator_attrs = ("user_model_",)

    def __init__(self, learnwares=(), user_model=None, cv=5, random_state=0):
        self.learnwares = learnwares
        self.user_model = user_model
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y=None):
        lws, X, y = self._fit_labelled(X, y)
        classes = list(getattr(self, "classes_", []))
        folds = make_folds(y, self.task_, self.cv, self.random_state)
        choice = select_user_model(X, y, self.task_, classes, folds, estimator=self.user_model,
                                   random_state=self.random_state)
        T = targets(y, self.task_, classes)
        F = np.stack([choice.oof, *self.learnware_outputs(X)])
        w = blend_weights(F, T)
        user_loss = quadratic_loss(choice.oof, T)
        blend_cv = cross_validated_blend_loss(F, T, folds)
        self.fallback_ = bool(blend_cv > user_loss)
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
        user = estimator_output(self.user_model_, X, self.task_, list(getattr(self, "classes_", [])))
        return sum(w * P for w, P in zip(self.weights_, [user, *outs]))
