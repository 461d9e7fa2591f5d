"""The skops trust list: exact type names, never prefixes, never functions (issue 12, point 6).

A skops file names every type it needs; lw loads it without ``--trust`` only when each of them
is trusted by skops's own default list or is in :data:`TRUSTED_TYPES`. These tests craft files
that name any type at all (by editing a real file's ``schema.json``), so they never run the
hostile code they describe.
"""

from __future__ import annotations

import importlib
import io
import json
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lwcli.errors import UntrustedModelError
from lwcli.market.models import TRUSTED_TYPES, load_model, skops_untrusted

HOSTILE = ["builtins.eval", "builtins.exec", "builtins.getattr", "builtins.setattr",
           "builtins.compile", "builtins.__import__", "builtins.open", "builtins.breakpoint",
           "builtins.method_descriptor", "builtins.globals", "builtins.vars",
           "os.system", "subprocess.Popen", "numpy.ndarray.tofile", "numpy.load",
           "numpy.fromfile", "scipy.io.loadmat", "sklearn.utils._joblib.load",
           "collections.namedtuple", "pickle.loads", "operator.attrgetter", "functools.partial"]


@pytest.fixture(scope="module")
def base_file() -> bytes:
    """A trusted pipeline whose first step holds a function (numpy.log1p): the slot to edit."""
    import skops.io as sio
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X = np.arange(12.0).reshape(6, 2)
    model = make_pipeline(FunctionTransformer(np.log1p), Ridge()).fit(X, X[:, 0])
    data = sio.dumps(model)
    assert skops_untrusted(data) == []
    return data


def with_type(data: bytes, qualname: str) -> bytes:
    """The same file with its function slot naming ``qualname`` (module.name) instead."""
    module, _, name = qualname.rpartition(".")
    src = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(src.read("schema.json"))

    def edit(node):
        if isinstance(node, dict):
            if node.get("__class__") == "log1p" and node.get("__module__") == "numpy":
                node["__class__"], node["__module__"] = name, module
                node["__loader__"] = "TypeNode"
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


def skops_default_untrusted(data: bytes) -> set[str]:
    import skops.io as sio

    return set(sio.get_untrusted_types(data=data))


@pytest.mark.parametrize("name", HOSTILE)
def test_functions_that_run_code_or_reach_attributes_are_refused(base_file, name):
    data = with_type(base_file, name)
    assert name in skops_untrusted(data)
    with pytest.raises(UntrustedModelError) as err:
        load_model(data, "skops")
    assert err.value.exit_code == 8 and name in str(err.value)


module_part = st.sampled_from(["builtins", "numpy", "scipy", "sklearn", "collections",
                               "sklearn.tree._tree", "sklearn.utils", "numpy.lib", "os",
                               "scipy.sparse", "sklearn.ensemble._hist_gradient_boosting"])
name_part = st.one_of(
    st.sampled_from(["eval", "exec", "getattr", "Tree", "TreePredictor", "dtype", "Bunch",
                     "KDTree", "tofile", "system", "load", "partial", "method_descriptor"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True))
type_name = st.one_of(st.sampled_from(sorted(TRUSTED_TYPES) + HOSTILE),
                      st.builds(lambda m, n: f"{m}.{n}", module_part, name_part))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=type_name)
def test_only_skops_defaults_and_the_explicit_list_load_without_trust(base_file, name):
    """Property: over any type name a skops file can report, lw refuses exactly the names
    that skops does not trust by default and that are not in TRUSTED_TYPES."""
    data = with_type(base_file, name)
    reported = skops_default_untrusted(data)
    refused = set(skops_untrusted(data))
    assert refused == {t for t in reported if t not in TRUSTED_TYPES}
    if name in reported and name not in TRUSTED_TYPES:
        with pytest.raises(UntrustedModelError):
            load_model(data, "skops")


def test_the_explicit_list_names_classes_only():
    """No prefix, no function, no builtin: every entry imports as a class."""
    for qualname in sorted(TRUSTED_TYPES):
        module, _, name = qualname.rpartition(".")
        assert not module.startswith("builtins")
        obj = getattr(importlib.import_module(module), name)
        assert isinstance(obj, type), f"{qualname} is not a class"


def test_the_estimators_lw_has_tested_load_without_trust():
    """The list covers the model types of the sample market and the usual scikit-learn
    families: their files load without --trust."""
    import skops.io as sio
    from sklearn.ensemble import (HistGradientBoostingRegressor, RandomForestClassifier,
                                  StackingRegressor)
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.neural_network import MLPRegressor
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), rng.normal(size=60)
    for model in (HistGradientBoostingRegressor(max_iter=5), KNeighborsRegressor(),
                  MLPRegressor(max_iter=20), RandomForestClassifier(n_estimators=3),
                  StackingRegressor([("r", Ridge()), ("t", DecisionTreeRegressor())])):
        target = (y > 0) if isinstance(model, RandomForestClassifier) else y
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # MLP convergence
            model.fit(X, target)
        loaded = load_model(sio.dumps(model), "skops")
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X))

