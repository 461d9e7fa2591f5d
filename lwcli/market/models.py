"""Model loaders, one per format, and the one way every stored model is run. No torch here.

- ``skops`` (default, safe): loaded with ``skops.io``, but by lw's own exact lists, one per kind
  of skops node (:data:`SKOPS_ESTIMATORS`, :data:`SKOPS_PARTS`, :data:`SKOPS_REDUCED`,
  :data:`SKOPS_FUNCTIONS`, :data:`SKOPS_VALUE_TYPES`, :data:`SKOPS_DATA_NODES`), never skops's
  own defaults; any other type — a function such as ``builtins.eval``, ``builtins.str`` used as
  a function, a bound method — is refused (:class:`UntrustedModelError`, exit 8). The loaded
  content is then checked (:func:`check_loaded_model`: sub-estimator slots, stacking methods,
  tree node arrays; :class:`ModelCheckError`, exit 7). The same checks run at QA and at every
  load.
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
import json
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

# ---------------------------------------------------------------------------- skops trust

# lw decides itself what a skops file may hold: one explicit list per kind of skops node,
# exact names only, never skops's own default list (which trusts every scikit-learn estimator,
# every numpy/scipy ufunc and builtin types such as ``str`` anywhere). Reviewed rules:
#   - objects: only the estimators and internal parts below. Meta-estimators are checked
#     after loading (:func:`check_loaded_model`): every sub-estimator slot must hold one of
#     these estimators, and stacking may only call predict / predict_proba /
#     decision_function. Without that, a trusted StackingRegressor whose ``stack_method_``
#     names ``tofile`` on a stored array writes any file on predict (tests/test_trust.py).
#   - functions (``FunctionTransformer(func=...)``): pure numeric ufuncs only.
#   - types used as values: numeric scalar types only; ``builtins.str`` / ``int`` only as a
#     dict's key types (how skops records them).
#   - never: bound methods, functools.partial, operator helpers, constructors from
#     ``__reduce__``, defaultdict factories.
# Natively backed structures (decision trees, histogram-GBM predictors) are validated after
# loading so that a hostile index array is refused instead of crashing the interpreter.

SKOPS_ESTIMATORS = frozenset({
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.compose._target.TransformedTargetRegressor",
    "sklearn.cross_decomposition._pls.PLSRegression",
    "sklearn.decomposition._pca.PCA",
    "sklearn.decomposition._truncated_svd.TruncatedSVD",
    "sklearn.discriminant_analysis.LinearDiscriminantAnalysis",
    "sklearn.discriminant_analysis.QuadraticDiscriminantAnalysis",
    "sklearn.dummy.DummyClassifier",
    "sklearn.dummy.DummyRegressor",
    "sklearn.ensemble._bagging.BaggingClassifier",
    "sklearn.ensemble._bagging.BaggingRegressor",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.ensemble._forest.ExtraTreesRegressor",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn.ensemble._stacking.StackingClassifier",
    "sklearn.ensemble._stacking.StackingRegressor",
    "sklearn.ensemble._voting.VotingClassifier",
    "sklearn.ensemble._voting.VotingRegressor",
    "sklearn.gaussian_process._gpc.GaussianProcessClassifier",
    "sklearn.gaussian_process._gpc._BinaryGaussianProcessClassifierLaplace",
    "sklearn.gaussian_process._gpr.GaussianProcessRegressor",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.kernel_ridge.KernelRidge",
    "sklearn.linear_model._base.LinearRegression",
    "sklearn.linear_model._bayes.ARDRegression",
    "sklearn.linear_model._bayes.BayesianRidge",
    "sklearn.linear_model._coordinate_descent.ElasticNet",
    "sklearn.linear_model._coordinate_descent.ElasticNetCV",
    "sklearn.linear_model._coordinate_descent.Lasso",
    "sklearn.linear_model._coordinate_descent.LassoCV",
    "sklearn.linear_model._glm.glm.GammaRegressor",
    "sklearn.linear_model._glm.glm.PoissonRegressor",
    "sklearn.linear_model._glm.glm.TweedieRegressor",
    "sklearn.linear_model._huber.HuberRegressor",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._logistic.LogisticRegressionCV",
    "sklearn.linear_model._quantile.QuantileRegressor",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.linear_model._ridge.RidgeCV",
    "sklearn.linear_model._ridge.RidgeClassifier",
    "sklearn.linear_model._ridge.RidgeClassifierCV",
    "sklearn.linear_model._stochastic_gradient.SGDClassifier",
    "sklearn.linear_model._stochastic_gradient.SGDRegressor",
    "sklearn.naive_bayes.BernoulliNB",
    "sklearn.naive_bayes.GaussianNB",
    "sklearn.naive_bayes.MultinomialNB",
    "sklearn.neighbors._classification.KNeighborsClassifier",
    "sklearn.neighbors._regression.KNeighborsRegressor",
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._multilayer_perceptron.MLPRegressor",
    "sklearn.pipeline.FeatureUnion",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.MaxAbsScaler",
    "sklearn.preprocessing._data.MinMaxScaler",
    "sklearn.preprocessing._data.Normalizer",
    "sklearn.preprocessing._data.PowerTransformer",
    "sklearn.preprocessing._data.QuantileTransformer",
    "sklearn.preprocessing._data.RobustScaler",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._discretization.KBinsDiscretizer",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.preprocessing._polynomial.PolynomialFeatures",
    "sklearn.preprocessing._polynomial.SplineTransformer",
    "sklearn.svm._classes.LinearSVC",
    "sklearn.svm._classes.LinearSVR",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.tree._classes.ExtraTreeRegressor",
})

# compiled or helper parts of the estimators above
SKOPS_PARTS = frozenset({
    "numpy.dtype",
    "sklearn._loss.link.HalfLogitLink",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogLink",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.AbsoluteError",
    "sklearn._loss.loss.ExponentialLoss",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfGammaLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfPoissonLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.loss.HalfTweedieLoss",
    "sklearn._loss.loss.HalfTweedieLossIdentity",
    "sklearn._loss.loss.HuberLoss",
    "sklearn._loss.loss.PinballLoss",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.gaussian_process.kernels.ConstantKernel",
    "sklearn.gaussian_process.kernels.DotProduct",
    "sklearn.gaussian_process.kernels.Matern",
    "sklearn.gaussian_process.kernels.Product",
    "sklearn.gaussian_process.kernels.RBF",
    "sklearn.gaussian_process.kernels.RationalQuadratic",
    "sklearn.gaussian_process.kernels.Sum",
    "sklearn.gaussian_process.kernels.WhiteKernel",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.utils._bunch.Bunch",
})

# skops's compiled-loss node (LossNode) and tree node (TreeNode)
SKOPS_REDUCED = frozenset({
    "sklearn._loss._loss.CyAbsoluteError",
    "sklearn._loss._loss.CyExponentialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss._loss.CyHalfGammaLoss",
    "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfPoissonLoss",
    "sklearn._loss._loss.CyHalfSquaredError",
    "sklearn._loss._loss.CyHalfTweedieLoss",
    "sklearn._loss._loss.CyHalfTweedieLossIdentity",
    "sklearn._loss._loss.CyHuberLoss",
    "sklearn._loss._loss.CyPinballLoss",
    "sklearn.tree._tree.Tree",
})

# functions a FunctionTransformer (or a kernel) may hold: element-wise numeric ufuncs
SKOPS_FUNCTIONS = frozenset(f"numpy.{n}" for n in (
    "absolute", "arccos", "arccosh", "arcsin", "arcsinh", "arctan", "arctanh", "cbrt", "ceil",
    "cos", "cosh", "deg2rad", "degrees", "exp", "exp2", "expm1", "fabs", "floor", "log",
    "log10", "log1p", "log2", "negative", "positive", "rad2deg", "radians", "reciprocal",
    "rint", "sign", "sin", "sinh", "sqrt", "square", "tan", "tanh", "trunc")) | frozenset(
    f"scipy.special._ufuncs.{n}" for n in ("expit", "logit", "erf", "erfc"))

# types stored as values (an estimator's ``dtype=np.float64``): numeric scalar types only
SKOPS_VALUE_TYPES = frozenset({
    "builtins.bool", "builtins.float", "builtins.int", "numpy.bool", "numpy.float16",
    "numpy.float32", "numpy.float64", "numpy.int8", "numpy.int16", "numpy.int32",
    "numpy.int64", "numpy.uint8", "numpy.uint16", "numpy.uint32", "numpy.uint64"})

# types a dict's keys may have (skops records them as types)
SKOPS_KEY_TYPES = SKOPS_VALUE_TYPES | {"builtins.str", "numpy.str_"}

# nodes that only rebuild plain data: the class they name must be one of these
SKOPS_DATA_NODES = {
    "DictNode": {"builtins.dict", "collections.OrderedDict", "sklearn.utils._bunch.Bunch"},
    "ListNode": {"builtins.list"},
    "TupleNode": {"builtins.tuple"},
    "SetNode": {"builtins.set"},
    "SliceNode": {"builtins.slice"},
    "BytesNode": {"builtins.bytes"},
    "BytearrayNode": {"builtins.bytearray"},
    "JsonNode": {"builtins.str", "builtins.int", "builtins.float", "builtins.bool",
                 "builtins.NoneType", "builtins.list", "builtins.dict"},
    "DTypeNode": {"numpy.dtype"} | {f"numpy.dtypes.{n}" for n in (
        "Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType", "Int32DType",
        "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType", "BoolDType",
        "StrDType", "ObjectDType")},
    "RandomStateNode": {"numpy.random.mtrand.RandomState"},
    "RandomGeneratorNode": {"numpy.random._generator.Generator"},
    "SparseMatrixNode": {f"scipy.sparse._{f}.{f}_{k}" for f in ("csr", "csc")
                         for k in ("matrix", "array")},
}
SKOPS_NODE_LIMIT = 2_000_000     # nodes in one schema
SKOPS_DEPTH_LIMIT = 400          # nesting of nodes

# compatibility name (issue 12): the types beyond data nodes that lw loads
TRUSTED_TYPES = SKOPS_ESTIMATORS | SKOPS_PARTS | SKOPS_REDUCED


def _skops_schema(data: bytes) -> dict:
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            info = zf.getinfo("schema.json")
            if info.file_size > 256 << 20:
                raise ModelCheckError(f"the skops model's schema.json is {info.file_size} bytes",
                                      "save the model with skops.io.dump")
            schema = json.loads(zf.read(info))
    except ModelCheckError:
        raise
    except Exception as exc:
        raise ModelCheckError(f"the skops model file is unreadable: {type(exc).__name__}: {exc}",
                              "save the model with skops.io.dump") from None
    if not isinstance(schema, dict):
        raise ModelCheckError("the skops model file is unreadable: schema.json is not an object",
                              "save the model with skops.io.dump")
    return schema


def skops_untrusted(data: bytes) -> list[str]:
    """What a skops file holds that lw will not load, by lw's own lists (never skops's
    defaults): each entry names the type and, where it matters, how the file uses it."""
    schema = _skops_schema(data)
    bad: set[str] = set()
    stack = [(schema, False, 0)]
    count = 0
    while stack:
        node, in_keys, depth = stack.pop()
        count += 1
        if depth > SKOPS_DEPTH_LIMIT or count > SKOPS_NODE_LIMIT:
            raise ModelCheckError("the skops model file nests too deep or holds too many objects "
                                  f"(limits: depth {SKOPS_DEPTH_LIMIT}, {SKOPS_NODE_LIMIT} nodes)",
                                  "save a plain scikit-learn estimator with skops.io.dump")
        if isinstance(node, list):
            stack.extend((v, in_keys, depth + 1) for v in node)
            continue
        if not isinstance(node, dict):
            continue
        loader = node.get("__loader__")
        if loader is not None:
            name = f"{node.get('__module__')}.{node.get('__class__')}"
            if not _skops_node_ok(str(loader), name, in_keys):
                bad.add(name if loader in ("ObjectNode", "TreeNode", "LossNode")
                        else f"{name} (as {loader})")
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                stack.append((value, in_keys or key == "key_types", depth + 1))
    return sorted(bad)


def _skops_node_ok(loader: str, name: str, in_keys: bool) -> bool:
    if loader == "ObjectNode":
        return name in SKOPS_ESTIMATORS or name in SKOPS_PARTS
    if loader in ("TreeNode", "LossNode"):
        return name in SKOPS_REDUCED
    if loader == "FunctionNode":
        return name in SKOPS_FUNCTIONS
    if loader == "TypeNode":
        return name in (SKOPS_KEY_TYPES if in_keys else SKOPS_VALUE_TYPES)
    if loader in ("NdArrayNode", "MaskedArrayNode"):
        return name.startswith("numpy.") and name.count(".") == 1 and (
            name in ("numpy.ndarray", "numpy.ma.MaskedArray") or name in SKOPS_VALUE_TYPES
            or name in ("numpy.str_", "numpy.complex128", "numpy.float128", "numpy.longdouble"))
    if loader == "CachedNode":
        return True             # refers to an object loaded (and checked) earlier
    return name in SKOPS_DATA_NODES.get(loader, ())


def _load_skops(data: bytes):
    import skops.io as sio

    bad = skops_untrusted(data)
    if bad:
        raise UntrustedModelError(
            f"the skops model holds types lw does not trust: {bad[:5]}"
            f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}",
            "use the scikit-learn estimators lw has reviewed (SKOPS_ESTIMATORS in "
            "lwcli/market/models.py, listed in the README), or export the model to ONNX")
    try:
        model = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    except Exception as exc:
        raise ModelCheckError(f"the skops model file does not load: {type(exc).__name__}: "
                              f"{str(exc)[:200]}", "save the model with skops.io.dump") from None
    check_loaded_model(model)
    return model


# ---------------------------------------------------------------------------- after loading

STACK_METHODS = frozenset({"predict", "predict_proba", "decision_function"})
# attributes of meta-estimators whose values scikit-learn calls methods on
RECEIVER_ATTRS = ("steps", "transformer_list", "transformers", "transformers_", "estimators",
                  "estimators_", "final_estimator", "final_estimator_", "estimator",
                  "estimator_", "regressor", "regressor_", "transformer", "transformer_",
                  "init_", "remainder", "_remainder", "named_estimators_", "base_estimator_",
                  "_transformer", "_label_binarizer", "_label_encoder", "_predictors",
                  "_bin_mapper")
PLACEHOLDERS = frozenset({"drop", "passthrough", "zero"})


def _refuse(what: str) -> ModelCheckError:
    return ModelCheckError(f"the skops model's content is not what its estimator would hold: "
                           f"{what}", "save a model fitted by scikit-learn with skops.io.dump")


def _type_name(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _receivers(value, depth: int = 0):
    """The objects held in a sub-estimator slot (lists, tuples (name, est[, columns]),
    object arrays, Bunch/dict values)."""
    if depth > 6:
        return
    if isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[0], str):
        yield value[1]
        return
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype == object):
        for v in (value.ravel() if isinstance(value, np.ndarray) else value):
            yield from _receivers(v, depth + 1)
        return
    if isinstance(value, dict):
        for v in value.values():
            yield from _receivers(v, depth + 1)
        return
    yield value


def check_loaded_model(model) -> None:
    """Content checks on a loaded skops model (run at QA and at every load).

    Every sub-estimator slot holds a reviewed estimator or part (or a placeholder such as
    ``"drop"``); stacking calls only predict / predict_proba / decision_function; decision
    tree and histogram-GBM node arrays index only existing nodes, features and values.
    Raises :class:`ModelCheckError` otherwise.
    """
    allowed = SKOPS_ESTIMATORS | SKOPS_PARTS | SKOPS_REDUCED
    seen: set[int] = set()
    todo = [(model, None)]
    while todo:
        obj, owner = todo.pop()
        if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, np.generic)):
            continue
        seen.add(id(obj))
        name = _type_name(obj)
        if isinstance(obj, (list, tuple)) or (isinstance(obj, np.ndarray) and obj.dtype == object):
            todo.extend((v, owner) for v in (obj.ravel() if isinstance(obj, np.ndarray) else obj))
            continue
        if isinstance(obj, dict):
            todo.extend((v, owner) for v in obj.values())
            continue
        if name == "sklearn.tree._tree.Tree":
            _check_tree(obj)
            continue
        if name == "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor":
            _check_tree_predictor(obj, getattr(owner, "n_features_in_", None))
            continue
        if name in ("sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree"):
            _check_binary_tree(obj)
            continue
        if name not in allowed:
            continue
        state = getattr(obj, "__dict__", {})
        for attr in RECEIVER_ATTRS:
            if attr not in state:
                continue
            for r in _receivers(state[attr]):
                if r is None or (isinstance(r, str) and r in PLACEHOLDERS):
                    continue
                if attr in ("_predictors",) and isinstance(r, list):
                    continue
                if _type_name(r) not in allowed:
                    raise _refuse(f"{name.rsplit('.', 1)[-1]}.{attr} holds a "
                                  f"{_type_name(r)} where an estimator belongs")
        methods = state.get("stack_method_")
        if methods is not None:
            bad = [m for m in list(methods) if not (isinstance(m, str) and m in STACK_METHODS)]
            if bad:
                raise _refuse(f"{name.rsplit('.', 1)[-1]}.stack_method_ names {bad[:3]}; "
                              f"stacking calls only {sorted(STACK_METHODS)}")
        todo.extend((v, obj) for v in state.values())


def _check_tree(tree) -> None:
    try:
        st = tree.__getstate__()
        nodes, values = st["nodes"], np.asarray(st["values"])
        n_features, n_outputs = int(tree.n_features), int(tree.n_outputs)
        n_classes = np.asarray(tree.n_classes)
    except Exception as exc:
        raise _refuse(f"a decision tree's arrays are unreadable ({type(exc).__name__})") from None
    n = int(st["node_count"])
    if len(nodes) != n or n < 1:
        raise _refuse(f"a decision tree has {len(nodes)} nodes but says {n}")
    if values.shape != (n, n_outputs, int(n_classes.max()) if n_classes.size else 1):
        raise _refuse(f"a decision tree's values have shape {values.shape} for {n} nodes")
    left, right, feat = (nodes["left_child"].astype(np.int64), nodes["right_child"].astype(np.int64),
                         nodes["feature"].astype(np.int64))
    idx = np.arange(n)
    leaf = left == -1
    inner = ~leaf
    ok = (np.all(right[leaf] == -1)
          and np.all((left[inner] > idx[inner]) & (left[inner] < n))
          and np.all((right[inner] > idx[inner]) & (right[inner] < n))
          and np.all((feat[inner] >= 0) & (feat[inner] < n_features)))
    if not ok:
        raise _refuse("a decision tree's node arrays point outside the tree or its features")


def _check_binary_tree(tree) -> None:
    """KD / ball tree arrays: indices into the data and node ranges stay in bounds."""
    try:
        st = tree.__getstate__()
        data, idx, nodes, bounds = (np.asarray(st[0]), np.asarray(st[1]), st[2],
                                    np.asarray(st[3]))
        n_levels, weights = int(st[5]), st[12]
        start, end = nodes["idx_start"].astype(np.int64), nodes["idx_end"].astype(np.int64)
    except Exception as exc:
        raise _refuse(f"a neighbours tree's arrays are unreadable ({type(exc).__name__})") from None
    n = data.shape[0] if data.ndim == 2 else -1
    m = len(nodes)
    ok = (n >= 1 and idx.shape == (n,) and np.all((idx >= 0) & (idx < n))
          and 0 <= n_levels < 64 and m == 2 ** n_levels - 1
          and bounds.ndim == 3 and bounds.shape[1:] == (m, data.shape[1])
          and np.all((start >= 0) & (start <= end) & (end <= n))
          and (weights is None or np.asarray(weights).shape == (n,)))
    if not ok:
        raise _refuse("a neighbours tree's arrays point outside its data")


def _check_tree_predictor(pred, n_features) -> None:
    try:
        nodes = pred.nodes
        leaf = nodes["is_leaf"].astype(bool)
        left, right = nodes["left"].astype(np.int64), nodes["right"].astype(np.int64)
        feat = nodes["feature_idx"].astype(np.int64)
        cat = nodes["is_categorical"].astype(bool)
        bitset = nodes["bitset_idx"].astype(np.int64)
        n_bitsets = min(len(pred.binned_left_cat_bitsets), len(pred.raw_left_cat_bitsets))
    except Exception as exc:
        raise _refuse(f"a gradient-boosting tree's arrays are unreadable ({type(exc).__name__})"
                      ) from None
    n = len(nodes)
    idx = np.arange(n)
    inner = ~leaf
    ok = (n >= 1 and np.all((left[inner] > idx[inner]) & (left[inner] < n))
          and np.all((right[inner] > idx[inner]) & (right[inner] < n))
          and np.all(feat[inner] >= 0)
          and (n_features is None or np.all(feat[inner] < int(n_features)))
          and np.all(bitset[inner & cat] < n_bitsets))
    if not ok:
        raise _refuse("a gradient-boosting tree's node arrays point outside the tree or its "
                      "features")


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
