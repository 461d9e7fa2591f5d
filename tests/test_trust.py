"""What a skops file may hold: lw's own exact lists, never skops's defaults (issue 13, point 1).

lw checks every node of a skops file's schema against one explicit list per kind of node
(estimators and their parts, numeric ufuncs as functions, numeric types as values), then
checks the loaded content: sub-estimator slots hold reviewed estimators, stacking calls only
predict-like methods, tree node arrays stay in range. The exploits below are built from real
objects with ``skops.io.dumps``; each is shown to work against skops's own default trust (in a
separate process) and to be refused by lw without running anything.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import build_learnware, domain_data, market_tree, run_lw
from lwcli.errors import ModelCheckError, UntrustedModelError
from lwcli.market.models import (SKOPS_ESTIMATORS, SKOPS_FUNCTIONS, SKOPS_PARTS, SKOPS_REDUCED,
                                 SKOPS_VALUE_TYPES, TRUSTED_TYPES, load_model, skops_untrusted)

HOSTILE = ["builtins.eval", "builtins.exec", "builtins.getattr", "builtins.setattr",
           "builtins.compile", "builtins.__import__", "builtins.open", "builtins.breakpoint",
           "builtins.method_descriptor", "builtins.globals", "builtins.vars", "builtins.str",
           "builtins.list", "builtins.map", "builtins.tuple", "numpy.str_", "numpy.object_",
           "os.system", "subprocess.Popen", "numpy.ndarray.tofile", "numpy.load",
           "numpy.fromfile", "scipy.io.loadmat", "sklearn.utils._joblib.load",
           "collections.namedtuple", "pickle.loads", "operator.attrgetter", "functools.partial",
           "sklearn.preprocessing._function_transformer.FunctionTransformer"]
X4 = np.random.default_rng(0).normal(size=(60, 4))
Y4 = X4[:, 0] - 2 * X4[:, 1]


@pytest.fixture(scope="module")
def base_file() -> bytes:
    """A reviewed pipeline whose first step holds a function (numpy.log1p): the slot to edit."""
    import skops.io as sio
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X = np.arange(12.0).reshape(6, 2)
    model = make_pipeline(FunctionTransformer(np.log1p), Ridge()).fit(X, X[:, 0])
    data = sio.dumps(model)
    assert skops_untrusted(data) == []
    return data


def with_type(data: bytes, qualname: str, loader: str = "FunctionNode") -> bytes:
    """The same file with its function slot naming ``qualname`` (module.name), loaded by
    ``loader``."""
    module, _, name = qualname.rpartition(".")
    src = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(src.read("schema.json"))

    def edit(node):
        if isinstance(node, dict):
            if node.get("__class__") == "log1p" and node.get("__module__") == "numpy":
                node["__class__"], node["__module__"] = name, module
                node["__loader__"] = loader
                return True
            return any(edit(v) for v in node.values())
        if isinstance(node, list):
            return any(edit(v) for v in node)
        return False

    assert edit(schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for n in src.namelist():
            zf.writestr(n, json.dumps(schema) if n == "schema.json" else src.read(n))
    return out.getvalue()


@pytest.mark.parametrize("loader", ["FunctionNode", "TypeNode", "ObjectNode"])
@pytest.mark.parametrize("name", HOSTILE)
def test_functions_types_and_objects_that_run_code_are_refused(base_file, name, loader):
    data = with_type(base_file, name, loader)
    if loader == "ObjectNode" and name in SKOPS_ESTIMATORS:
        return                      # a reviewed estimator in an estimator slot
    assert any(b.startswith(name) for b in skops_untrusted(data))
    with pytest.raises(UntrustedModelError) as err:
        load_model(data, "skops")
    assert err.value.exit_code == 8 and name in str(err.value)


module_part = st.sampled_from(["builtins", "numpy", "scipy", "sklearn", "collections",
                               "sklearn.tree._tree", "sklearn.utils", "numpy.lib", "os",
                               "scipy.sparse", "sklearn.ensemble._hist_gradient_boosting",
                               "scipy.special._ufuncs"])
name_part = st.one_of(
    st.sampled_from(["eval", "exec", "getattr", "Tree", "TreePredictor", "dtype", "Bunch",
                     "KDTree", "tofile", "system", "load", "partial", "method_descriptor",
                     "log1p", "sqrt", "expit", "str", "float64", "int"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True))
type_name = st.one_of(st.sampled_from(sorted(TRUSTED_TYPES | SKOPS_FUNCTIONS) + HOSTILE),
                      st.builds(lambda m, n: f"{m}.{n}", module_part, name_part))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=type_name, loader=st.sampled_from(["FunctionNode", "TypeNode"]))
def test_a_callable_slot_takes_only_the_reviewed_numeric_functions_and_types(base_file, name,
                                                                              loader):
    """Property: over any name a skops file can put where a function goes, lw accepts exactly
    the reviewed numeric ufuncs (as functions) and numeric scalar types (as types)."""
    data = with_type(base_file, name, loader)
    allowed = SKOPS_FUNCTIONS if loader == "FunctionNode" else SKOPS_VALUE_TYPES
    assert (skops_untrusted(data) == []) == (name in allowed)
    if name not in allowed:
        with pytest.raises(UntrustedModelError):
            load_model(data, "skops")


def test_the_explicit_lists_name_classes_and_ufuncs_only():
    """No prefix, no builtin function: every estimator or part imports as a class, every
    function is a numpy ufunc."""
    for qualname in sorted(SKOPS_ESTIMATORS | SKOPS_PARTS | SKOPS_REDUCED):
        module, _, name = qualname.rpartition(".")
        assert not module.startswith("builtins")
        obj = getattr(importlib.import_module(module), name)
        assert isinstance(obj, type), f"{qualname} is not a class"
    for qualname in sorted(SKOPS_FUNCTIONS):
        module, _, name = qualname.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), name), np.ufunc), qualname


def _fitted_models():
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.ensemble import (ExtraTreesRegressor, GradientBoostingRegressor,
                                  HistGradientBoostingClassifier, HistGradientBoostingRegressor,
                                  RandomForestClassifier, StackingClassifier, StackingRegressor,
                                  VotingRegressor)
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    from sklearn.tree import DecisionTreeRegressor

    reg = [HistGradientBoostingRegressor(max_iter=5), KNeighborsRegressor(),
           MLPRegressor(max_iter=20, random_state=0), GradientBoostingRegressor(n_estimators=5),
           ExtraTreesRegressor(n_estimators=3, random_state=0),
           StackingRegressor([("r", Ridge()), ("t", DecisionTreeRegressor())]),
           VotingRegressor([("r", Ridge()), ("t", DecisionTreeRegressor())]),
           make_pipeline(StandardScaler(), FunctionTransformer(np.tanh), Ridge()),
           TransformedTargetRegressor(Ridge(), func=np.sinh, inverse_func=np.arcsinh),
           make_pipeline(ColumnTransformer([("s", StandardScaler(), [0, 1])],
                                           remainder="passthrough"), Ridge())]
    clf = [RandomForestClassifier(n_estimators=3, random_state=0), LogisticRegression(),
           HistGradientBoostingClassifier(max_iter=5), KNeighborsClassifier(),
           MLPClassifier(max_iter=20, random_state=0),
           StackingClassifier([("l", LogisticRegression()), ("k", KNeighborsClassifier())])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # MLP convergence
        return [m.fit(X4, Y4) for m in reg] + [m.fit(X4, Y4 > 0) for m in clf]


def test_the_estimators_lw_has_reviewed_load_without_trust_and_predict_the_same():
    import skops.io as sio

    for model in _fitted_models():
        data = sio.dumps(model)
        assert skops_untrusted(data) == [], type(model).__name__
        loaded = load_model(data, "skops")
        np.testing.assert_array_equal(loaded.predict(X4), model.predict(X4))


def test_every_sample_market_and_field_case_model_loads():
    root = Path(__file__).resolve().parents[1] / "sample_market"
    files = sorted(root.rglob("*.skops"))
    assert len(files) >= 40
    for f in files:
        load_model(f.read_bytes(), "skops")


# ---------------------------------------------------------------------------- exploits

def _stack(obj, method):
    """A fitted StackingRegressor whose one base 'estimator' is ``obj``, called by ``method``."""
    from sklearn.ensemble import StackingRegressor
    from sklearn.linear_model import Ridge

    s = StackingRegressor([("r", Ridge())], final_estimator=Ridge(), cv=2).fit(X4, Y4)
    s.estimators_, s.stack_method_ = [obj], [method]
    return s


def file_writer(payload: bytes, name: str = "pwned"):
    """A pipeline of skops-default-trusted types only whose predict writes ``payload`` to
    the file ``[['<name>']]`` in the working directory: a stacking step returns a stored
    array by calling its ``__deepcopy__`` (any method name goes), ``str`` turns it into a
    path, and a second stacking step calls ``tofile`` on a stored byte array."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    return Pipeline([("a", _stack(np.array([[name]]), "__deepcopy__")),
                     ("b", FunctionTransformer(func=str)),
                     ("c", _stack(np.array([payload]), "tofile"))])


def _skops_default_run(data: bytes, cwd: Path) -> subprocess.CompletedProcess:
    """Load ``data`` as skops alone trusts it and call predict, in a separate process."""
    code = ("import sys, numpy as np, skops.io as sio\n"
            "d = open(sys.argv[1], 'rb').read()\n"
            "m = sio.loads(d, trusted=sio.get_untrusted_types(data=d))\n"
            "m.predict(np.zeros((5, 4)))\n")
    (cwd / "model.skops").write_bytes(data)
    return subprocess.run([sys.executable, "-c", code, str(cwd / "model.skops")], cwd=cwd,
                          capture_output=True, timeout=120)


@pytest.mark.system
def test_a_skops_default_trusted_pipeline_writes_files_and_lw_refuses_it(tmp_path):
    import skops.io as sio

    data = sio.dumps(file_writer(b"import os  # any Python, e.g. in a .pth file\n"))
    # skops itself reports nothing beyond what lw trusted before (Bunch): the exploit is real
    assert set(sio.get_untrusted_types(data=data)) <= {"sklearn.utils._bunch.Bunch"}
    _skops_default_run(data, tmp_path)
    assert (tmp_path / "[['pwned']]").read_bytes().startswith(b"import os")
    (tmp_path / "[['pwned']]").unlink()
    with pytest.raises(UntrustedModelError, match=r"builtins\.str \(as TypeNode\)") as err:
        load_model(data, "skops")
    assert err.value.exit_code == 8
    assert not (tmp_path / "[['pwned']]").exists()


@pytest.mark.parametrize("obj,method,match", [
    (np.array([b"x"]), "tofile", "where an estimator belongs"),
    (np.array([b"x"]), "predict", "where an estimator belongs"),
    ("text", "format", "where an estimator belongs"),
    ("ridge", "__setstate__", "stack_method_"),
    ("ridge", "fit", "stack_method_"),
])
def test_meta_estimator_slots_hold_estimators_and_call_only_predict_methods(obj, method, match):
    import skops.io as sio
    from sklearn.linear_model import Ridge

    if isinstance(obj, str) and obj == "ridge":
        obj = Ridge().fit(X4, Y4)
    data = sio.dumps(_stack(obj, method))
    assert skops_untrusted(data) == []          # every type is reviewed; the content is not
    with pytest.raises(ModelCheckError, match=match) as err:
        load_model(data, "skops")
    assert err.value.exit_code == 7


def test_a_pipeline_step_that_is_not_an_estimator_is_refused():
    import skops.io as sio
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    p = make_pipeline(StandardScaler(), Ridge()).fit(X4, Y4)
    p.steps[0] = ("standardscaler", np.array([1.0, 2.0]))
    with pytest.raises(ModelCheckError, match="where an estimator belongs"):
        load_model(sio.dumps(p), "skops")


def hostile_tree():
    from sklearn.tree import DecisionTreeRegressor

    m = DecisionTreeRegressor(max_depth=3, random_state=0).fit(X4, Y4)
    state = m.tree_.__getstate__()
    nodes = state["nodes"].copy()
    nodes["feature"][0] = 10 ** 9
    state["nodes"] = nodes
    m.tree_.__setstate__(state)
    return m


def hostile_hgb():
    from sklearn.ensemble import HistGradientBoostingRegressor

    h = HistGradientBoostingRegressor(max_iter=3).fit(X4, Y4)
    h._predictors[0][0].nodes["left"][0] = 10 ** 6
    return h


@pytest.mark.system
@pytest.mark.parametrize("make", [hostile_tree, hostile_hgb])
def test_tree_node_arrays_out_of_range_are_refused_instead_of_crashing(tmp_path, make):
    import skops.io as sio

    data = sio.dumps(make())
    proc = _skops_default_run(data, tmp_path)
    assert proc.returncode != 0                 # a segfault (or an error) under skops alone
    with pytest.raises(ModelCheckError, match="point outside") as err:
        load_model(data, "skops")
    assert err.value.exit_code == 7


def _package_with_model(tmp_path, market, model_bytes: bytes) -> Path:
    from lwcli.market.package import build_package, read_package

    X, y = domain_data(0, 200, seed=0)
    good = build_learnware(tmp_path, "good", X, y, market=market)
    pkg = read_package(good.package)
    path = tmp_path / "hostile.lw"
    path.write_bytes(build_package(pkg.manifest, pkg.spec, model_bytes))
    return path


@pytest.mark.system
def test_submit_refuses_the_exploits_and_leaves_the_market_unchanged(tmp_path, market):
    import skops.io as sio

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for model, code in [(file_writer(b"owned\n"), 8), (hostile_tree(), 7)]:
        path = _package_with_model(tmp_path, market, sio.dumps(model))
        before = market_tree(market)
        proc = subprocess.run([str(Path(sys.executable).parent / "lw"), "submit", str(path),
                               "--market", str(market)], cwd=cwd, capture_output=True,
                              text=True, timeout=300, env=dict(os.environ, LW_DEVICE="cpu"),
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == code, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert market_tree(market) == before      # no folder made either (tmp/ included)
        assert list(cwd.iterdir()) == []
    run_lw("market", "verify", "--market", market)


def hostile_kdtree():
    from sklearn.neighbors import KNeighborsRegressor

    m = KNeighborsRegressor(algorithm="kd_tree").fit(X4, Y4)
    state = list(m._tree.__getstate__())
    state[1] = state[1].copy()
    state[1][0] = 10 ** 9                     # an index far past the data
    m._tree.__setstate__(tuple(state))
    return m


def test_a_neighbours_tree_pointing_outside_its_data_is_refused():
    import skops.io as sio

    with pytest.raises(ModelCheckError, match="neighbours tree") as err:
        load_model(sio.dumps(hostile_kdtree()), "skops")
    assert err.value.exit_code == 7
