"""Learnwares as feature augmentors (seed sec. 3.2): their outputs on each row are appended
to the row's features, and a model trained on the user's labels learns from both."""

from __future__ import annotations

import numpy as np

from .base import Reuser
from .user_model import fit_estimator, make_folds, select_user_model


class FeatureAugmentReuser(Reuser):
    """``final_model``: a scikit-learn estimator, or ``None`` to choose one by cross-validation
    (ridge/logistic, random forest, gradient boosting) on the augmented features."""

    method = "feature-augment"
    needs_labels = True
    _state_attrs = ("cv_losses_", "final_model_name_")
    _detail_attrs = ("cv_losses_", "final_model_name_")
    reuse_params = ("random_state", "cv")
    _estimator_attrs = ("final_model_",)

    def __init__(self, learnwares=(), final_model=None, cv=5, random_state=0):
        self.learnwares = learnwares
        self.final_model = final_model
        self.cv = cv
        self.random_state = random_state

    def augment(self, X) -> np.ndarray:
        """``X`` with every learnware's outputs appended (values, or aligned probabilities)."""
        X = self._check_X(X)
        return np.hstack([X, *self.learnware_outputs(X)])

    def fit(self, X, y=None):
        _, X, y = self._fit_labelled(X, y)
        Z = self.augment(X)
        classes = list(getattr(self, "class_keys_", []))
        folds = make_folds(y, self.task_, self.cv, self.random_state)
        choice = select_user_model(Z, y, self.task_, classes, folds, estimator=self.final_model,
                                   random_state=self.random_state)
        self.cv_losses_ = choice.losses
        self.final_model_name_ = choice.name
        self.final_model_ = fit_estimator(choice.estimator, Z, y, self.task_)
        return self

    def _combine(self, X) -> np.ndarray:
        from .user_model import estimator_output

        return estimator_output(self.final_model_, self.augment(X), self.task_,
                                list(getattr(self, "class_keys_", [])))
