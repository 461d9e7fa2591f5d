"""Route each instance to the learnware whose distribution it comes from (seed eq. (8)).

The selector ``g`` is a classifier trained, without any user labels, on points sampled from
the selected learnwares' RKMEs: reduced points drawn with probability ``beta`` and jittered by
``noise`` feature standard deviations (the island metric's scales), each learnware's sample
weighted by its mixture weight (the task's assumed share ``w_i`` of eq. (3)). The final model
is ``f(x) = f_{g(x)}(x)`` (``routing="hard"``) or ``sum_i P(i | x) f_i(x)`` (``"soft"``).

The default jitter, half a standard deviation, spreads the sample over the learnware's data
rather than its ``k`` reduced points. At 0.1, rows in the gaps between reduced points were
routed by axis-aligned splits placed for the sample: in the tests 3% of rows 2 units from their
own domain's centre (8 from the other) went to the wrong learnware; at 0.5, 0.3%. On the
quality benchmark's users the two are within a point of each other.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone

from ...errors import UsageError
from ..conditional import Reference, conditional_mean
from .base import Reuser, normalise_weights

ROUTING = ("hard", "soft")


class JobSelectorReuser(Reuser):
    method = "job-selector"
    _state_attrs = ("weights_",)
    reuse_params = ("weights", "random_state")
    _estimator_attrs = ("selector_",)

    def __init__(self, learnwares=(), weights=None, n_samples=4000, noise=0.5, classifier=None,
                 routing="hard", random_state=0):
        self.learnwares = learnwares
        self.weights = weights
        self.n_samples = n_samples
        self.noise = noise
        self.classifier = classifier
        self.routing = routing
        self.random_state = random_state

    def sample_training_set(self, rng: np.random.Generator):
        """Points drawn from each learnware's RKME (in ``feature_names_in_`` order), their
        learnware index and their sample weight. Learnwares over different features (of
        different islands): a point's features its learnware does not take are estimated
        from the others' specifications given the ones it has (the kernel conditional mean,
        :func:`lwcli.engine.conditional.conditional_mean`), so the selector learns in the
        whole input space the user's rows live in."""
        active = np.flatnonzero(self.weights_ > 0)
        per = max(50, int(self.n_samples) // len(active))
        pts, lab, sw = [], [], []
        for i in active:
            lw = self.learnwares_[i]
            r = lw.rkme.input_part()
            idx = rng.choice(r.k, size=per, p=r.beta / r.beta.sum())
            S = r.points[idx] + rng.normal(size=(per, r.metric.dim)) * self.noise * \
                np.asarray(r.metric.scales)
            S_user = np.full((per, self.n_features_in_), np.nan)
            S_user[:, self._columns(lw)] = S
            pts.append(S_user)
            lab.append(np.full(per, i))
            sw.append(np.full(per, self.weights_[i] * len(active)))
        P = np.vstack(pts)
        if np.isnan(P).any():
            names = [str(f) for f in self.feature_names_in_]
            refs = [Reference.of_rkme(lw.rkme, lw.features) for lw in self.learnwares_]
            P = conditional_mean(P, names, refs)[0]
        return P, np.concatenate(lab), np.concatenate(sw)

    def fit(self, X=None, y=None):
        from sklearn.dummy import DummyClassifier
        from sklearn.ensemble import HistGradientBoostingClassifier

        lws = self._learnware_list()
        if self.routing not in ROUTING:
            raise UsageError(f"routing={self.routing!r}: expected one of {', '.join(ROUTING)}",
                             "use hard or soft")
        if not (self.noise >= 0 and self.n_samples >= 1):
            raise UsageError("noise must be >= 0 and n_samples >= 1", "fix the parameters")
        missing = [lw.id for lw in lws if lw.rkme is None]
        if missing:
            raise UsageError(f"the job selector samples from the learnwares' RKMEs, and "
                             f"{missing[:3]} come without one", "load learnwares with their specs")
        self._setup(lws)
        if X is not None:
            self._check_X(X, fitted=False)
        self.weights_ = normalise_weights(self.weights, len(lws))
        P, lab, sw = self.sample_training_set(np.random.default_rng(self.random_state))
        if len(np.unique(lab)) == 1:
            clf = DummyClassifier(strategy="most_frequent")
        else:
            clf = clone(self.classifier) if self.classifier is not None else \
                HistGradientBoostingClassifier(max_iter=100, random_state=self.random_state)
        self.selector_ = clf.fit(P, lab, sample_weight=sw)
        return self

    def route_proba(self, X) -> np.ndarray:
        """P(learnware i | x), columns in ``learnware_ids_`` order."""
        X = self._check_X(X)
        P = self.selector_.predict_proba(X)
        out = np.zeros((len(X), len(self.learnwares_)))
        out[:, np.asarray(self.selector_.classes_, dtype=int)] = P
        return out

    def route(self, X) -> np.ndarray:
        """Index (into ``learnware_ids_``) of the learnware each row is sent to."""
        return np.argmax(self.route_proba(X), axis=1)

    def _combine(self, X) -> np.ndarray:
        R = self.route_proba(X)
        outs = self.learnware_outputs(X)
        if self.routing == "hard":
            pick = np.argmax(R, axis=1)
            R = np.zeros_like(R)
            R[np.arange(len(R)), pick] = 1.0
        return sum(R[:, [i]] * P for i, P in enumerate(outs))
