"""What every reuser shares: the learnware view, aligned outputs, input checks, saved state.

A :class:`Learnware` is a loaded model plus what its manifest declares (features in order,
task, classes or output names) and, optionally, its RKME. Reusers never look at positions:
a learnware's inputs are picked from the user's columns *by name*, and its class
probabilities are placed into the reuser's class list *by label* — two learnwares that
declare ``["no", "yes"]`` and ``["yes", "no"]``, or a model whose ``classes_`` are ordered
differently from its manifest, all line up.

Pure: no files, no printing. Models are called in-process (they were loaded by format by the
caller: skops and ONNX by default, pickle only with explicit trust).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ...errors import DataError, ModelCheckError, UsageError
from ...labels import (align_columns, label_str, label_values, one_hot, plain_label,
                       union_classes, values_array)
from ...validation import check_float32_range, nfc
from ..rkme import RKME

TASKS = ("classification", "regression")
# the options of lw reuse that a reuser may take (see ``Reuser.reuse_params``)
REUSE_PARAMS = ("weights", "voting", "random_state", "cv")


@dataclass(frozen=True, eq=False)
class Learnware:
    """A learnware ready to be reused: its model and its declared interface."""

    id: str
    name: str
    model: Any
    task: str
    features: tuple[str, ...]
    outputs: tuple[str, ...]          # class keys (classification) or output names
    rkme: RKME | None = None
    class_values: tuple = ()          # the classes as the manifest declares them (typed)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"learnware {self.id}: task {self.task!r} is not one of {TASKS}",
                            "check its learnware.toml")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.outputs if self.task == "classification" else ()

    def predict_values(self, X: np.ndarray) -> np.ndarray:
        """Regression outputs, shape (n, n_outputs), finite."""
        pred = _call(self, "predict", X)
        Y = np.asarray(pred, dtype=np.float64).reshape(len(X), -1)
        if Y.shape[1] != len(self.outputs):
            raise ModelCheckError(f"learnware {self.id} returned {Y.shape[1]} output columns, its "
                                  f"manifest declares {len(self.outputs)}", "fix the learnware")
        if not np.all(np.isfinite(Y)):
            raise ModelCheckError(f"learnware {self.id} returned NaN or infinite outputs",
                                  "check the input data, or leave this learnware out")
        return Y

    def predict_labels(self, X: np.ndarray) -> list[str]:
        """The model's own predicted labels, as class keys; each one a declared class."""
        labels = [label_str(v) for v in np.asarray(_call(self, "predict", X)).ravel()]
        unknown = sorted(set(labels) - set(self.classes))
        if len(labels) != len(X) or unknown:
            raise ModelCheckError(f"learnware {self.id} predicted {len(labels)} labels for "
                                  f"{len(X)} rows, {unknown[:5]} outside its classes "
                                  f"{list(self.classes)}", "fix the learnware")
        return labels

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities in the manifest's declared class order, shape (n, n_classes).

        The model's own column order (``classes_`` where it has one) decides which column is
        which class; a model without ``predict_proba`` gives one-hot rows of its predictions.
        """
        declared = self.classes
        if not hasattr(self.model, "predict_proba"):
            labels = np.asarray(_call(self, "predict", X)).ravel()
            return one_hot(labels, declared, f"learnware {self.id}'s predictions")
        P = np.asarray(_call(self, "predict_proba", X), dtype=np.float64)
        own = getattr(self.model, "classes_", None)   # read after the call (ONNX sets it then)
        have = [label_str(c) for c in own] if own is not None else list(declared)
        if P.ndim != 2 or P.shape != (len(X), len(have)):
            raise ModelCheckError(f"learnware {self.id} returned probabilities of shape "
                                  f"{P.shape}, expected ({len(X)}, {len(have)})",
                                  "fix the learnware's predict_proba")
        if not np.all(np.isfinite(P)):
            raise ModelCheckError(f"learnware {self.id} returned NaN or infinite probabilities",
                                  "check the input data, or leave this learnware out")
        unknown = [c for c in have if c not in declared]
        if unknown:
            raise ModelCheckError(f"learnware {self.id}'s model knows classes {unknown[:5]} that "
                                  f"its manifest does not declare ({list(declared)})",
                                  "declare every class in output.classes")
        P = align_columns(np.clip(P, 0.0, None), have, declared)
        s = P.sum(1, keepdims=True)
        return np.divide(P, s, out=np.full_like(P, 1.0 / P.shape[1]), where=s > 0)


def _call(lw: Learnware, method: str, X: np.ndarray):
    try:
        return getattr(lw.model, method)(X)
    except Exception as exc:   # the model's own code may raise anything
        raise ModelCheckError(f"learnware {lw.id} failed in {method} on {X.shape[0]} x "
                              f"{X.shape[1]} inputs: {type(exc).__name__}: {exc}",
                              "check that the data has the learnware's input features") from exc


def union_features(learnwares: Sequence[Learnware]) -> list[str]:
    """Every input feature of ``learnwares``: the first's in its order, then each new one in
    the order the others declare it."""
    names: list[str] = []
    for lw in learnwares:
        names += [f for f in lw.features if f not in names]
    return names


def check_learnwares(learnwares: Sequence[Learnware]) -> list[Learnware]:
    """Learnwares that can be reused together: same task, same outputs. Their input features
    may differ (learnwares of different islands, seed sec. 5): a reuser takes the union
    (:func:`union_features`) and feeds each learnware its own columns by name."""
    lws = list(learnwares)
    if not lws:
        raise UsageError("no learnwares given", "pass at least one learnware id")
    if not all(isinstance(lw, Learnware) for lw in lws):
        raise UsageError("learnwares must be lwcli Learnware objects",
                         "load them with lwcli.api.load_learnwares")
    ids = [lw.id for lw in lws]
    if len(set(ids)) != len(ids):
        raise UsageError(f"learnware ids repeat: {ids}", "pass each id once")
    first = lws[0]
    for lw in lws[1:]:
        if lw.task != first.task:
            raise DataError(f"learnware {lw.id} is for {lw.task}, {first.id} for {first.task}",
                            "reuse learnwares of one task together")
        if first.task == "regression" and len(lw.outputs) != len(first.outputs):
            raise DataError(f"learnware {lw.id} has {len(lw.outputs)} outputs, {first.id} has "
                            f"{len(first.outputs)}", "reuse learnwares with the same outputs")
    return lws


class Reuser(BaseEstimator, metaclass=ABCMeta):
    """Base class: parameters in ``__init__``; ``fit`` returns self; fitted names end in ``_``.

    ``X`` columns follow ``feature_names_in_`` (the union of the learnwares' features, the
    first learnware's declared order first: :func:`union_features`); each
    learnware receives its own columns by name. For classification ``class_keys_`` holds the
    union of the learnwares' declared classes (and, for methods that use labels, the user's)
    as canonical keys (:func:`lwcli.labels.label_str`), and ``classes_`` the same classes in
    the user's own type: as in the labels given to ``fit`` where they occur there, else as the
    learnwares' manifests declare them. ``predict`` returns values of ``classes_``, so
    ``accuracy_score(y, reuser.predict(X))`` compares like with like.
    """

    method: str = ""
    needs_labels: bool = False
    # fitted attributes saved with a reuser (JSON-able) and fitted scikit-learn parts (skops)
    _state_attrs: tuple[str, ...] = ()
    _estimator_attrs: tuple[str, ...] = ()
    # which of lw reuse's options this method takes, by parameter name (a subset of
    # :data:`REUSE_PARAMS`): ``make_reuser`` passes these and refuses a stray ``weights``
    reuse_params: tuple[str, ...] = ()
    # fitted attributes that :meth:`details` reports, in this order
    _detail_attrs: tuple[str, ...] = ()

    # ------------------------------------------------------------------ report
    def weight_names(self) -> list[str]:
        """What each entry of ``weights_`` weighs: the learnware ids, in order."""
        return list(self.learnware_ids_)

    def details(self) -> dict:
        """What the fit decided, JSON-able: ``weights`` (by :meth:`weight_names`) where the
        method has weights, then each of ``_detail_attrs`` that is set, named without its
        trailing ``_`` (a non-finite float is ``None``)."""
        d: dict = {}
        if hasattr(self, "weights_"):
            d["weights"] = dict(zip(self.weight_names(), [float(w) for w in self.weights_]))
        for a in self._detail_attrs:
            if hasattr(self, a):
                v = getattr(self, a)
                d[a.rstrip("_")] = None if isinstance(v, float) and not np.isfinite(v) else v
        return d

    def comparison_model(self):
        """The user's own fitted model, for methods that blend one in (its scores are shown
        next to the reuser's); ``None`` otherwise."""
        return None

    # ------------------------------------------------------------------ set-up
    def _learnware_list(self) -> list[Learnware]:
        return check_learnwares(self.learnwares)

    def _setup(self, lws: list[Learnware], labels: Sequence = ()) -> None:
        first = lws[0]
        self.task_ = first.task
        self.learnware_ids_ = [lw.id for lw in lws]
        names = union_features(lws)
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = len(names)
        if self.task_ == "classification":
            keys = union_classes(*(lw.classes for lw in lws), labels)
            self.class_keys_ = np.asarray(keys, dtype=object)
            self.classes_ = values_array(label_values(
                keys, labels, *(lw.class_values or lw.classes for lw in lws)))
        else:
            self.output_names_ = list(first.outputs)
        self.learnwares_ = lws

    def _fit_labelled(self, X, y) -> tuple[list[Learnware], np.ndarray, np.ndarray]:
        """Common start of ``fit`` for methods that learn from the user's labels."""
        lws = self._learnware_list()
        if X is None or y is None:
            raise UsageError(f"the {self.method} method needs the user's labelled data",
                             "pass labelled rows (lw reuse --train FILE --target COL)")
        labels = np.asarray(y).ravel() if lws[0].task == "classification" else ()
        if len(labels):
            declared = {c for lw in lws for c in lw.classes}
            keys = sorted({label_str(v) for v in labels})
            if not declared & set(keys):
                raise DataError(f"your labels {keys[:5]} share no class with the learnwares' "
                                f"classes {sorted(declared)[:5]}",
                                "encode your labels as the learnwares' manifests declare them")
        self._setup(lws, labels)
        X = self._check_X(X, fitted=False)
        return lws, X, self._check_y(X, y)

    def _columns(self, lw: Learnware) -> np.ndarray:
        pos = {f: i for i, f in enumerate(self.feature_names_in_)}
        return np.asarray([pos[f] for f in lw.features])

    def _check_X(self, X, *, fitted: bool = True) -> np.ndarray:
        if fitted:
            check_is_fitted(self, "learnwares_")
        X = self._by_name(X)
        if X.ndim != 2:
            raise DataError(f"X must be 2-D (rows x features), got shape {X.shape}", "reshape it")
        if X.shape[1] != self.n_features_in_:
            raise DataError(f"X has {X.shape[1]} features, but the reuser is expecting "
                            f"{self.n_features_in_} features as input "
                            f"({list(self.feature_names_in_)[:6]}...)",
                            "pass the learnwares' input columns")
        if X.shape[0] == 0:
            raise DataError("X has no rows", "pass at least one row")
        if not np.all(np.isfinite(X)):
            raise DataError("X has NaN or infinite values", "drop or impute those rows")
        check_float32_range(X, None, "X")
        return X

    def _by_name(self, X) -> np.ndarray:
        """A DataFrame's columns are taken by name into ``feature_names_in_`` order (as
        scikit-learn does, a frame whose names differ is refused); arrays are positional."""
        cols = getattr(X, "columns", None)
        if cols is None:
            return np.asarray(X, dtype=np.float64)
        names = [nfc(c) for c in cols]
        want = [nfc(f) for f in self.feature_names_in_]
        missing = [f for f in want if f not in names]
        unseen = [c for c in names if c not in want]
        if missing or unseen or len(set(names)) != len(names):
            raise DataError(f"X has columns {names[:8]}{'...' if len(names) > 8 else ''}, but the "
                            f"reuser takes {want[:8]}{'...' if len(want) > 8 else ''} (missing "
                            f"{missing[:5]}, unexpected {unseen[:5]})",
                            "pass a DataFrame with exactly the learnwares' input columns "
                            "(any order), or an array in feature_names_in_ order")
        pos = [names.index(f) for f in want]
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        odd = [names[p] for p in pos
               if not is_numeric_dtype(X.dtypes.iloc[p]) or is_bool_dtype(X.dtypes.iloc[p])]
        if odd:   # as files are: no silent bool -> 0/1 or text -> number conversions
            raise DataError(f"X has non-numeric columns {odd[:5]} "
                            f"({', '.join(str(X.dtypes.iloc[names.index(c)]) for c in odd[:3])})",
                            "encode every input column as numbers")
        return np.asarray(X.iloc[:, pos], dtype=np.float64)

    def check_labels(self, y, what: str = "y") -> None:
        """Refuse labels outside ``classes_``: no prediction could ever match them, so a
        score over them would be silently wrong (an accuracy of 0 for labels 0/1 scored
        against classes "no"/"yes")."""
        check_is_fitted(self, "learnwares_")
        unknown = sorted({label_str(v) for v in np.asarray(y).ravel()} - set(self.class_keys_))
        if unknown:
            raise DataError(f"{what} has labels {unknown[:5]} that are not among the "
                            f"learnwares' classes {list(self.class_keys_)[:8]}",
                            "use labels as the learnwares' manifests declare them")

    def _check_y(self, X: np.ndarray, y) -> np.ndarray:
        if y is None:
            raise UsageError(f"the {self.method} method needs the user's labels",
                             "pass labelled data (lw reuse --train FILE --target COL)")
        y = np.asarray(y)
        if y.shape[0] != X.shape[0]:
            raise DataError(f"X has {X.shape[0]} rows but y has {y.shape[0]}",
                            "pass one label per row")
        if self.task_ == "classification":
            return np.asarray([label_str(v) for v in y.ravel()], dtype=object)
        Y = np.asarray(y, dtype=np.float64).reshape(len(X), -1)
        if not np.all(np.isfinite(Y)):
            raise DataError("y has NaN or infinite values", "drop those rows")
        return Y

    # ------------------------------------------------------------------ outputs
    def learnware_outputs(self, X) -> list[np.ndarray]:
        """Each learnware's outputs on ``X``: values (n, n_outputs) for regression, or
        probabilities (n, len(classes_)) aligned by class name for classification."""
        X = self._check_X(X)
        outs = []
        for lw in self.learnwares_:
            Xi = X[:, self._columns(lw)]
            if self.task_ == "classification":
                outs.append(align_columns(lw.predict_proba(Xi), lw.classes,
                                          list(self.class_keys_)))
            else:
                outs.append(lw.predict_values(Xi))
        return outs

    @abstractmethod
    def _combine(self, X) -> np.ndarray:
        """Combined outputs on ``X``: values (n, n_outputs) or class scores (n, n_classes)."""

    def predict(self, X) -> np.ndarray:
        """Labels (classification) or values (regression; 1-D for one output)."""
        out = self._combine(X)
        if self.task_ == "classification":
            return self.classes_[np.argmax(out, axis=1)]
        return out[:, 0] if out.shape[1] == 1 else out

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in ``classes_`` order; rows sum to one."""
        check_is_fitted(self, "learnwares_")
        if self.task_ != "classification":
            raise UsageError("predict_proba is for classification, and these learnwares do "
                             "regression", "use predict")
        P = np.clip(self._combine(X), 0.0, None)
        s = P.sum(1, keepdims=True)
        return np.divide(P, s, out=np.full_like(P, 1.0 / P.shape[1]), where=s > 0)

    # ------------------------------------------------------------------ saved state
    def get_state(self) -> tuple[dict, dict]:
        """(JSON-able parameters and fitted values, fitted scikit-learn parts) for saving."""
        check_is_fitted(self, "learnwares_")
        params = {k: v for k, v in self.get_params(deep=False).items()
                  if k != "learnwares" and not hasattr(v, "fit")}
        state = {"method": self.method, "params": _jsonable(params),
                 "task": self.task_, "learnware_ids": list(self.learnware_ids_),
                 "feature_names": [str(f) for f in self.feature_names_in_],
                 "fitted": {a: _jsonable(getattr(self, a)) for a in self._state_attrs}}
        if self.task_ == "classification":
            state["classes"] = [str(c) for c in self.class_keys_]
            state["class_values"] = [plain_label(c) for c in self.classes_]
        else:
            state["output_names"] = list(self.output_names_)
        return state, {a: getattr(self, a) for a in self._estimator_attrs}

    @classmethod
    def from_state(cls, learnwares: Sequence[Learnware], state: dict,
                   estimators: dict) -> "Reuser":
        """Rebuild a fitted reuser saved with :meth:`get_state`."""
        by_id = {lw.id: lw for lw in learnwares}
        lws = [by_id[i] for i in state["learnware_ids"]]
        obj = cls(learnwares=lws, **state["params"])
        obj._setup(lws)
        obj.feature_names_in_ = np.asarray(state["feature_names"], dtype=object)
        if obj.task_ == "classification":
            obj.class_keys_ = np.asarray(state["classes"], dtype=object)
            obj.classes_ = values_array(state.get("class_values", state["classes"]))
        for a in cls._state_attrs:
            setattr(obj, a, _from_json(state["fitted"][a]))
        for a in cls._estimator_attrs:
            setattr(obj, a, estimators[a])
        return obj


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return {"__array__": v.tolist(), "dtype": str(v.dtype)}
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _from_json(v):
    if isinstance(v, dict) and "__array__" in v:
        return np.asarray(v["__array__"], dtype=v["dtype"] if v["dtype"] != "object" else object)
    if isinstance(v, dict):
        return {k: _from_json(x) for k, x in v.items()}
    return v


def normalise_weights(weights, n: int, what: str = "weights") -> np.ndarray:
    """Non-negative weights summing to one (uniform when ``None``)."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape[0] != n:
        raise UsageError(f"{w.shape[0]} {what} given for {n} learnwares", "give one per learnware")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise UsageError(f"{what} must be non-negative with a positive sum, got {w.tolist()}",
                         "pass weights such as the mixture weights lw search returns")
    return w / w.sum()
