"""Model loaders, one per format, and the one way every stored model is run. No torch here.

- ``skops`` (default, safe): loaded with ``skops.io``. A file may hold only skops's own default
  trusted types plus the explicit list :data:`TRUSTED_TYPES` (scikit-learn internals that lw has
  tested); any other type — a function such as ``builtins.eval`` included — is refused.
- ``onnx`` (safe): run by onnxruntime (the optional extra ``lwcli[onnx]``).
- ``pickle`` / ``joblib``: loading runs arbitrary code, so it happens only with ``trust=True``.

A learnware's model is always called through :class:`BoundModel`, which receives rows whose
columns follow the manifest's ``input.features`` and feeds the model *by name*, as its own
format declares its inputs: a DataFrame in the order of ``feature_names_in_`` for estimators
fitted on named columns, one tensor per named ONNX input, each in its declared element type.
A model whose declared input names differ from ``input.features`` is refused when it is bound
(at pack, at submit and at every load), never fed by position. Inference runs on one BLAS /
OpenMP thread (threadpoolctl): per-row model calls gain nothing from threads, and on a busy
machine idle threads spinning cost 10-100x.
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import MissingExtraError, ModelCheckError, UntrustedModelError
from ..labels import encode_outputs, label_str
from ..validation import nfc
from .manifest import TRUST_FORMATS

# Types a skops file may hold beyond skops's own default trusted list: scikit-learn's compiled
# or helper parts of the estimators lw has tested (trees, forests, gradient boosting,
# neighbours, MLPs, Gaussian processes, voting/stacking, column transformers). Exact names,
# never prefixes, and never a function: see tests/test_trust.py.
TRUSTED_TYPES = frozenset({
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.gaussian_process.kernels.ConstantKernel",
    "sklearn.gaussian_process.kernels.DotProduct",
    "sklearn.gaussian_process.kernels.Matern",
    "sklearn.gaussian_process.kernels.Product",
    "sklearn.gaussian_process.kernels.RBF",
    "sklearn.gaussian_process.kernels.Sum",
    "sklearn.gaussian_process.kernels.WhiteKernel",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",
})


def skops_untrusted(data: bytes) -> list[str]:
    """Types in a skops file that lw will not load: those skops does not trust by default and
    that are not in :data:`TRUSTED_TYPES`."""
    import skops.io as sio

    try:
        types = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ModelCheckError(f"the skops model file is unreadable: {exc}",
                              "save the model with skops.io.dump") from exc
    return [t for t in types if t not in TRUSTED_TYPES]


def _load_skops(data: bytes):
    import skops.io as sio

    bad = skops_untrusted(data)
    if bad:
        raise UntrustedModelError(
            f"the skops model holds types lw does not trust: {bad[:5]}",
            "use scikit-learn estimators only (see TRUSTED_TYPES in the README), or export "
            "the model to ONNX")
    return sio.loads(data, trusted=sio.get_untrusted_types(data=data))


# ---------------------------------------------------------------------------- ONNX

ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OnnxModel:
    """predict / predict_proba over an onnxruntime session, fed as the graph declares.

    One 2-D input takes every column in ``features`` order; several inputs must be named after
    the features (one column each). Each input gets its declared element type; integer inputs
    receive values rounded to the nearest integer (reduced points and probes are continuous).
    """

    def __init__(self, session, features: Sequence[str]) -> None:
        self.session = session
        self.features = tuple(nfc(f) for f in features)
        ins = session.get_inputs()
        bad = [f"{i.name}: {i.type}" for i in ins if i.type not in ONNX_DTYPES]
        if bad:
            raise ModelCheckError(f"the ONNX model has inputs of types lw cannot feed: {bad[:3]}",
                                  f"export it with inputs of {', '.join(ONNX_DTYPES)}")
        if len(ins) == 1 and len(self.features) == 1 and len(ins[0].shape or []) == 1:
            self._feed = [(ins[0].name, ONNX_DTYPES[ins[0].type], (0, 1))]   # [N], one feature
        elif len(ins) == 1:
            shape = list(ins[0].shape or [])
            width = shape[-1] if len(shape) == 2 else None
            if len(shape) != 2 or (isinstance(width, int) and width != len(self.features)):
                raise ModelCheckError(
                    f"the ONNX model's input {ins[0].name!r} has shape {shape}, expected "
                    f"[N, {len(self.features)}] for the {len(self.features)} declared features",
                    "export the model with one input of shape [None, n_features], or one input "
                    "per feature named after it")
            self._feed = [(ins[0].name, ONNX_DTYPES[ins[0].type], None)]
        else:
            names = [nfc(i.name) for i in ins]
            _check_names(names, self.features, "the ONNX model's inputs")
            pos = {f: j for j, f in enumerate(self.features)}
            feed = []
            for i, n in zip(ins, names):
                shape = list(i.shape or [])
                if not (len(shape) == 1 or len(shape) == 2 and not isinstance(shape[1], int)
                        or len(shape) == 2 and shape[1] == 1):
                    raise ModelCheckError(f"the ONNX model's input {i.name!r} has shape {shape}; "
                                          "a per-feature input must be [N] or [N, 1]",
                                          "export one column per named input")
                feed.append((i.name, ONNX_DTYPES[i.type], (pos[n], len(shape))))
            self._feed = feed

    def _inputs(self, X: np.ndarray) -> dict:
        out = {}
        for name, dtype, col in self._feed:
            v = X if col is None else X[:, col[0]].reshape((-1, 1) if col[1] == 2 else (-1,))
            if np.issubdtype(dtype, np.integer):
                v = np.rint(v)
            out[name] = np.ascontiguousarray(v, dtype=dtype)
        return out

    def _run(self, X: np.ndarray):
        return self.session.run(None, self._inputs(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(self._run(X)[0])
        return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        outs = self._run(X)
        if len(outs) < 2:
            raise ModelCheckError("the ONNX model has no probability output",
                                  "export it with a probability output (skl2onnx default)")
        proba = outs[1]
        if isinstance(proba, list):  # ZipMap output: a list of {label: p}
            keys = list(proba[0].keys())
            proba = np.array([[row[k] for k in keys] for row in proba])
            self.classes_ = np.array(keys)
        return np.asarray(proba, dtype=np.float64)


def onnx_class_labels(data: bytes):
    """The class labels an ONNX classifier's graph declares, in its probability columns' order
    (the ``classlabels_*`` attribute of its ``ai.onnx.ml`` classifier or ZipMap node), or None
    when the graph declares none, or several different lists."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        graph = onnx.load_model_from_string(data).graph
    except Exception:        # onnxruntime reports an unloadable model with its own words
        return None
    found = set()
    for node in graph.node:
        for a in node.attribute:
            if node.domain == "ai.onnx.ml" and a.name.startswith("classlabels_"):
                values = ([s.decode() for s in a.strings] if a.strings else list(a.ints))
                if values:
                    found.add(tuple(values))
    return list(found.pop()) if len(found) == 1 else None


def _load_onnx(data: bytes, features: Sequence[str]):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingExtraError("this learnware's model is ONNX, and onnxruntime is not installed",
                                "pip install 'lwcli[onnx]'") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelCheckError(f"onnxruntime cannot load the model: {exc}",
                              "export the model again with a supported opset") from exc
    model = OnnxModel(sess, features)
    labels = onnx_class_labels(data)
    if labels is not None:      # probability columns by the graph's own labels, as sklearn's
        model.classes_ = np.asarray(labels)
    return model


# ---------------------------------------------------------------------------- binding

def _check_names(have: Sequence[str], declared: Sequence[str], what: str) -> None:
    missing = [f for f in declared if f not in set(have)]
    extra = [f for f in have if f not in set(declared)]
    if missing or extra:
        raise ModelCheckError(
            f"{what} are named {list(have)[:8]}{'...' if len(have) > 8 else ''}, which differ "
            f"from input.features (not given to the model: {missing[:5]}; unknown to the "
            f"manifest: {extra[:5]})",
            "list in input.features exactly the columns the model was fitted on (any order)")


@lru_cache(maxsize=1)
def _threads():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def one_thread():
    """Run model inference on one BLAS / OpenMP thread."""
    with _threads().limit(limits=1):
        yield


def declared_names(model):
    """The column names a fitted model takes: its ``feature_names_in_``, or for a Pipeline
    whose first steps are ``"passthrough"`` (or None) those of its first real step."""
    names = getattr(model, "feature_names_in_", None)
    steps = getattr(model, "steps", None)
    if names is None and isinstance(steps, list):
        for _, step in steps:
            if step is not None and not (isinstance(step, str) and step == "passthrough"):
                return declared_names(step)
    return names


class BoundModel:
    """A loaded model that takes rows with columns in ``features`` order (the manifest's) and
    feeds it by name. ``predict_proba`` and ``classes_`` exist when the model has them."""

    def __init__(self, model, features: Sequence[str]) -> None:
        self.model = model
        self.features = tuple(nfc(f) for f in features)
        self._columns = None                 # model column order -> positions in ``features``
        names = declared_names(model)
        if names is not None and not isinstance(model, OnnxModel):
            names = [nfc(n) for n in names]
            _check_names(names, self.features, "the columns the model was fitted on")
            pos = {f: j for j, f in enumerate(self.features)}
            self._names = [str(n) for n in declared_names(model)]
            self._columns = np.asarray([pos[n] for n in names])
        else:
            n_in = getattr(model, "n_features_in_", None)
            if isinstance(n_in, (int, np.integer)) and n_in != len(self.features):
                raise ModelCheckError(
                    f"the model was fitted on {int(n_in)} columns, but input.features declares "
                    f"{len(self.features)}", "list exactly the model's input columns in "
                    "input.features, in the order it was fitted on")

    def _input(self, X: np.ndarray):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ModelCheckError(f"the model was given inputs of shape {X.shape}, expected "
                                  f"(n, {len(self.features)})", "pass the declared features")
        if self._columns is None:
            return X
        import pandas as pd

        return pd.DataFrame(X[:, self._columns], columns=self._names)

    def _call(self, method: str, X: np.ndarray):
        with one_thread(), warnings.catch_warnings():
            # an estimator inside the model was fitted on named columns that the model does
            # not declare at its top level (a meta-estimator over such a pipeline): lw cannot
            # know which column is which, and scikit-learn would only warn
            warnings.filterwarnings("error", message=".*was fitted with feature names",
                                    category=UserWarning)
            try:
                return getattr(self.model, method)(self._input(X))
            except UserWarning as exc:
                raise ModelCheckError(
                    f"part of the model was fitted on named columns that the model does not "
                    f"declare ({exc}); lw feeds models by name and cannot tell which column is "
                    "which", "fit the model on an array in input.features order, or so that "
                    "its top level has feature_names_in_") from None

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._call("predict", X)

    @property
    def predict_proba(self):
        if not hasattr(self.model, "predict_proba"):
            raise AttributeError("predict_proba")
        return lambda X: self._call("predict_proba", X)

    @property
    def classes_(self):
        return getattr(self.model, "classes_")


def load_model(data: bytes, fmt: str, *, trust: bool = False):
    """Load a model from its bytes, unbound (lw's own fitted parts of a saved reuser). Pickle
    and joblib need ``trust=True``."""
    return _load(data, fmt, trust, None)


def load_learnware_model(data: bytes, fmt: str, features: Sequence[str], *,
                         trust: bool = False) -> BoundModel:
    """Load a learnware's model and bind it to its manifest's ``input.features``.

    Raises :class:`ModelCheckError` when the model's own input names (``feature_names_in_``,
    ONNX input names) or its input count differ from ``features``.
    """
    return BoundModel(_load(data, fmt, trust, features), features)


def _load(data: bytes, fmt: str, trust: bool, features):
    if fmt in TRUST_FORMATS and not trust:
        raise UntrustedModelError(
            f"model format {fmt!r} runs arbitrary code when loaded, and trust was not given",
            "pass --trust only if you trust the model's author, or repackage it as skops/ONNX",
        )
    if fmt == "skops":
        return _load_skops(data)
    if fmt == "onnx":
        if features is None:
            raise ModelCheckError("an ONNX model needs its declared features to be run",
                                  "load it with load_learnware_model")
        return _load_onnx(data, features)
    if fmt == "pickle":
        import pickle

        return pickle.loads(data)  # noqa: S301 - only reached with explicit trust
    if fmt == "joblib":
        import joblib

        return joblib.load(io.BytesIO(data))
    raise ModelCheckError(f"unknown model format {fmt!r}", "use skops, onnx, pickle or joblib")


def model_outputs(model, X: np.ndarray, task: str, outputs: Sequence[str]) -> np.ndarray:
    """The model's outputs on ``X`` in the island's encoding (one-hot classes or values)."""
    try:
        pred = model.predict(X)
    except ModelCheckError:
        raise
    except Exception as exc:
        raise ModelCheckError(f"the model failed to predict on {X.shape[0]} x {X.shape[1]} inputs:"
                              f" {type(exc).__name__}: {exc}",
                              "check that the model takes the declared input features") from exc
    pred = np.asarray(pred)
    if pred.shape[0] != X.shape[0]:
        raise ModelCheckError(f"the model returned {pred.shape[0]} predictions for {X.shape[0]} rows",
                              "the model must return one prediction per row")
    if task == "classification":
        labels = [label_str(v) for v in pred.ravel()]
        unknown = sorted(set(labels) - set(outputs))
        if unknown:
            raise ModelCheckError(f"the model predicted labels {unknown[:5]} outside the declared "
                                  f"classes {list(outputs)}", "declare every class in output.classes")
        return encode_outputs(np.array(labels, dtype=object), task, outputs, "model output")
    Y = pred.astype(np.float64).reshape(len(X), -1)
    if Y.shape[1] != len(outputs):
        raise ModelCheckError(f"the model returned {Y.shape[1]} output columns, the manifest declares "
                              f"{len(outputs)}", "fix output.dimension")
    if not np.all(np.isfinite(Y)):
        raise ModelCheckError("the model returned NaN or infinite outputs",
                              "fix the model so that it returns finite values")
    return Y


def check_class_order(model, X: np.ndarray, labels_onehot: np.ndarray,
                      outputs: Sequence[str]) -> None:
    """Probability columns must follow the class order the model itself reports.

    Where a model gives both labels and probabilities, the class of each probability column
    is read off the labels: the label predicted on most of the rows where that column is the
    largest. A model with ``classes_`` is aligned by it; one without (an ONNX graph with a
    plain probability tensor) is taken in the manifest's declared order, so that order must
    be what the labels say. Raises :class:`ModelCheckError` naming the right order.
    """
    if not hasattr(model, "predict_proba"):
        return
    try:
        P = np.asarray(model.predict_proba(X), dtype=np.float64)
    except ModelCheckError:
        raise
    except Exception as exc:
        raise ModelCheckError(f"the model failed in predict_proba: {type(exc).__name__}: {exc}",
                              "fix predict_proba or export the model without it") from exc
    own = getattr(model, "classes_", None)
    have = [label_str(c) for c in own] if own is not None else list(outputs)
    if P.ndim != 2 or P.shape != (len(X), len(have)):
        raise ModelCheckError(f"the model's probabilities have shape {P.shape}, expected "
                              f"({len(X)}, {len(have)})", "declare every class the model knows")
    lab = np.argmax(labels_onehot, axis=1)          # index into ``outputs``
    top = np.argmax(P, axis=1)
    said = {}
    for j in range(P.shape[1]):
        rows = lab[top == j]
        if rows.size:
            counts = np.bincount(rows, minlength=len(outputs))
            if counts.max() >= 0.8 * rows.size:
                said[j] = outputs[int(np.argmax(counts))]
    wrong = {have[j]: c for j, c in said.items() if c != have[j]}
    if wrong:
        fixed = [said.get(j, have[j]) for j in range(len(have))]
        where = "classes_" if own is not None else "output.classes"
        first = next(iter(wrong))
        if sorted(fixed) == sorted(have):
            seen = f"its own labels say column order {fixed}"
            fix = (f"declare output.classes in the order {fixed}" if own is None else
                   "fix the model's classes_ or its probability output")
        else:
            seen = f"its own labels disagree for columns {sorted(wrong)}"
            fix = "check the class order of the model's probability output"
        raise ModelCheckError(
            f"the model's probability columns are not in the order of its {where} {have}: "
            f"{seen} (where the column of {first!r} is largest it predicts {wrong[first]!r})",
            fix)


def canonical_skops(data: bytes) -> bytes:
    """Rewrite a skops file so that the same model always gives the same bytes.

    skops names array members after Python object ids (memory addresses), so dumping one model
    twice gives different files, and a content-derived learnware id would change each time.
    Members and object memo ids are renumbered in order of first appearance in ``schema.json``
    and zipped with fixed timestamps. The result loads exactly like the original.
    """
    import re
    import zipfile

    try:
        src = zipfile.ZipFile(io.BytesIO(data))
        schema = src.read("schema.json").decode()
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        raise ModelCheckError(f"the skops model file is unreadable: {exc}",
                              "save the model with skops.io.dump") from exc
    names = [n for n in src.namelist() if n != "schema.json"]
    order = []
    for m in re.finditer(r'"([^"/\\]+\.npy)"', schema):
        if m.group(1) in names and m.group(1) not in order:
            order.append(m.group(1))
    order += sorted(n for n in names if n not in order)
    rename = {old: f"a{i:06d}{Path(old).suffix}" for i, old in enumerate(order)}
    schema = re.sub(r'"([^"/\\]+\.npy)"',
                    lambda m: f'"{rename.get(m.group(1), m.group(1))}"', schema)
    memo: dict[str, int] = {}  # object memo ids are addresses too: renumber consistently
    schema = re.sub(r'"__id__": (\d+)',
                    lambda m: f'"__id__": {memo.setdefault(m.group(1), len(memo) + 1)}', schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, payload in [("schema.json", schema.encode())] + \
                [(rename[o], src.read(o)) for o in order]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, payload)
    return out.getvalue()
