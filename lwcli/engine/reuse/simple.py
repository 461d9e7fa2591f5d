"""Reusers that need no labels: one learnware directly, or several averaged."""

from __future__ import annotations

import numpy as np

from ...errors import UsageError
from .base import Reuser, normalise_weights

VOTING = ("soft", "hard")


class SingleReuser(Reuser):
    """Apply one learnware directly to the user's data (the seed's "Top-1")."""

    method = "single"

    def __init__(self, learnwares=()):
        self.learnwares = learnwares

    def fit(self, X=None, y=None):
        lws = self._learnware_list()
        if len(lws) != 1:
            raise UsageError(f"the single method takes one learnware, got {len(lws)}",
                             "pass one id, or use --method average")
        self._setup(lws)
        if X is not None:
            self._check_X(X, fitted=False)
        return self

    def _combine(self, X) -> np.ndarray:
        return self.learnware_outputs(X)[0]

    def predict(self, X) -> np.ndarray:
        """The learnware's own ``predict``: its labels, not the argmax of its probabilities,
        which differ on ties (k-NN, forests) and for models like SVC whose labels are not
        the argmax of their probabilities."""
        if self.task_ != "classification":
            return super().predict(X)
        X = self._check_X(X)
        (lw,) = self.learnwares_
        labels = lw.predict_labels(X[:, self._columns(lw)])
        index = {k: i for i, k in enumerate(self.class_keys_)}
        return self.classes_[[index[k] for k in labels]]


class AverageReuser(Reuser):
    """Average several learnwares: the mean for regression; for classification the mean
    probability (``voting="soft"``) or a vote (``"hard"``). ``weights`` (e.g. the mixture
    weights that search returns) weigh the average; uniform by default."""

    method = "average"
    _state_attrs = ("weights_",)
    reuse_params = ("weights", "voting")

    def __init__(self, learnwares=(), weights=None, voting="soft"):
        self.learnwares = learnwares
        self.weights = weights
        self.voting = voting

    def fit(self, X=None, y=None):
        lws = self._learnware_list()
        if self.voting not in VOTING:
            raise UsageError(f"voting={self.voting!r}: expected one of {', '.join(VOTING)}",
                             "use soft or hard")
        self._setup(lws)
        self.weights_ = normalise_weights(self.weights, len(lws))
        if X is not None:
            self._check_X(X, fitted=False)
        return self

    def _combine(self, X) -> np.ndarray:
        outs = self.learnware_outputs(X)
        if self.task_ == "classification" and self.voting == "hard":
            votes = np.zeros_like(outs[0])
            rows = np.arange(len(votes))
            for w, P in zip(self.weights_, outs):
                votes[rows, np.argmax(P, axis=1)] += w
            return votes
        return sum(w * P for w, P in zip(self.weights_, outs))

    def predict_proba(self, X) -> np.ndarray:
        if getattr(self, "voting", "soft") == "hard":
            raise UsageError("hard voting gives labels, not probabilities",
                             "use voting='soft' (lw reuse --voting soft) for probabilities")
        return super().predict_proba(X)
