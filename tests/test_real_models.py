"""Real models and real labels (issue 12, points 1-3): inputs reach every model by name, as
its own format declares them; labels keep the user's type; probability columns are checked
against the model's own labels at QA.

Each test builds the situation a user reported, submits it to a real temporary market and
asserts the right value, not just the absence of a crash.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lwcli import api
from lwcli.errors import DataError, ModelCheckError
from lwcli.market.manifest import manifest_from_dict
from lwcli.market.package import build_package
from lwcli.specfile import read_spec

FEATURES = ["f0", "f1", "f2", "f3"]


def frame(n: int, seed: int, features=FEATURES) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, len(features))) * [1, 10, 100, 1000][: len(features)],
                        columns=features)


def meta(name: str, *, fmt="skops", features=FEATURES, task="regression", classes=None):
    out = {"classes": classes} if task == "classification" else {"dimension": 1, "names": ["y"]}
    return manifest_from_dict({
        "name": name, "version": "1.0.0", "description": f"test {name}", "license": "MIT",
        "tags": ["t"], "data_type": "table", "task": task,
        "objective": "accuracy" if task == "classification" else "rmse",
        "input": {"features": list(features)}, "output": out,
        "model": {"format": fmt, "file": f"model.{fmt}"}})


def publish(tmp_path, market, name, train: pd.DataFrame, model_bytes: bytes, man,
            *, pack: bool = True):
    """Spec, pack (or package by hand, bypassing pack's checks) and submit one learnware."""
    d = tmp_path / name
    d.mkdir()
    train.to_csv(d / "train.csv", index=False)
    (d / "learnware.toml").write_text(man.to_toml())
    (d / man.model_file).write_bytes(model_bytes)
    if pack:
        sp = api.build_spec(d / "train.csv", model=d / man.model_file, meta=d / "learnware.toml",
                            market=market, k=20, seed=0)
        api.write_spec(sp, d / "rkme.json")
        api.pack(d / man.model_file, d / "rkme.json", d / "learnware.toml", d / "pkg.lw")
        return api.submit(d / "pkg.lw", market)
    return d


def skops_bytes(model) -> bytes:
    import skops.io as sio

    return sio.dumps(model)


# ----------------------------------------------------------------------------- inputs by name

def test_a_model_fitted_on_permuted_columns_is_fed_by_name(tmp_path, market):
    """Fitted on [f3, f1, f0, f2], declared [f0, f1, f2, f3]: every path feeds it by name."""
    from sklearn.linear_model import Ridge

    train = frame(300, 0)
    y = train["f0"] * 3 - train["f3"] / 100
    order = ["f3", "f1", "f0", "f2"]
    model = Ridge(alpha=1e-6).fit(train[order], y)
    res = publish(tmp_path, market, "permuted", train, skops_bytes(model), meta("permuted"))
    assert res.qa["agreement"] > 0.98           # QA ran it by name too (by position: < 0)

    user = frame(50, 1)
    user.to_csv(tmp_path / "user.csv", index=False)
    out = api.reuse(market, [res.id], data=tmp_path / "user.csv")
    np.testing.assert_allclose(out.predictions["prediction"], model.predict(user[order]),
                               rtol=1e-12)
    # a DataFrame in yet another order reaches the reuser by name, as in scikit-learn
    r = api.load_learnwares(market, [res.id])
    from lwcli.engine.reuse import make_reuser

    reuser = make_reuser("single", r).fit()
    np.testing.assert_allclose(reuser.predict(user[["f2", "f3", "f0", "f1"]]),
                               model.predict(user[order]), rtol=1e-12)
    with pytest.raises(DataError, match="missing"):
        reuser.predict(user[["f0", "f1", "f2"]].assign(g=1.0))
    with pytest.raises(DataError, match=r"non-numeric columns \['f1'\]"):   # as a file would be
        reuser.predict(user.assign(f1=user["f1"] > 0))


def test_a_model_whose_columns_differ_from_the_manifest_is_refused_at_pack_and_submit(
        tmp_path, market):
    from sklearn.linear_model import Ridge

    train = frame(100, 0)
    fitted = train.rename(columns={"f3": "g3"})
    model = Ridge().fit(fitted, train["f0"])
    man = meta("renamed")
    d = publish(tmp_path, market, "renamed", train, skops_bytes(model), man, pack=False)
    with pytest.raises(ModelCheckError) as err:
        api.build_spec(d / "train.csv", model=d / man.model_file, meta=d / "learnware.toml")
    assert "g3" in str(err.value) and "f3" in str(err.value) and err.value.exit_code == 7
    # a spec made elsewhere: pack refuses, and a package made by hand is refused at submit
    good = Ridge().fit(train, train["f0"])
    (d / "good.skops").write_bytes(skops_bytes(good))
    sp = api.build_spec(d / "train.csv", model=d / "good.skops", meta=d / "learnware.toml",
                        k=20)
    api.write_spec(sp, d / "rkme.json")
    with pytest.raises(ModelCheckError, match="g3"):
        api.pack(d / man.model_file, d / "rkme.json", d / "learnware.toml", d / "pkg.lw")
    (d / "pkg.lw").write_bytes(build_package(man, read_spec(d / "rkme.json"),
                                             skops_bytes(model)))
    with pytest.raises(ModelCheckError, match="g3"):
        api.submit(d / "pkg.lw", market)
    assert api.market_ls(market) == []


def test_a_pipeline_whose_column_transformer_selects_by_name_runs(tmp_path, market):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = frame(400, 2)
    y = np.sin(train["f0"]) + train["f2"] / 100
    model = make_pipeline(
        ColumnTransformer([("s", StandardScaler(), ["f2", "f0"]),
                           ("p", "passthrough", ["f3", "f1"])]),
        HistGradientBoostingRegressor(max_iter=30, random_state=0)).fit(train, y)
    res = publish(tmp_path, market, "ct", train, skops_bytes(model), meta("ct"))
    user = frame(40, 3)[["f3", "f2", "f1", "f0"]]          # the user's own column order
    user.to_csv(tmp_path / "user.csv", index=False)
    out = api.reuse(market, [res.id], data=tmp_path / "user.csv")
    np.testing.assert_allclose(out.predictions["prediction"], model.predict(user), rtol=1e-12)


def _onnx_linear(inputs, w: np.ndarray, *, cast: bool = False) -> bytes:
    """y = concat(inputs) @ w, built with onnx.helper (inputs: [(name, elem_type, width)])."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, names = [], []
    for name, elem, _ in inputs:
        if cast:
            nodes.append(helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT))
            names.append(f"{name}_f")
        else:
            names.append(name)
    if len(names) > 1:
        nodes.append(helper.make_node("Concat", names, ["x"], axis=1))
        x = "x"
    else:
        x = names[0]
    nodes.append(helper.make_node("MatMul", [x, "w"], ["variable"]))
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info(n, e, [None, k]) for n, e, k in inputs],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(w.astype(np.float32).reshape(-1, 1), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def test_an_onnx_model_with_one_named_input_per_column_is_fed_by_name(tmp_path, market):
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto

    graph_order = ["f2", "f0", "f3", "f1"]
    w = np.array([0.5, 2.0, 0.001, -0.1])               # weights in graph order
    data = _onnx_linear([(f, TensorProto.FLOAT, 1) for f in graph_order], w)
    train = frame(200, 4)
    res = publish(tmp_path, market, "percol", train, data, meta("percol", fmt="onnx"))
    assert res.qa["agreement"] > 0.98
    user = frame(30, 5)
    user.to_csv(tmp_path / "user.csv", index=False)
    out = api.reuse(market, [res.id], data=tmp_path / "user.csv")
    expected = user[graph_order].to_numpy(np.float32) @ w.astype(np.float32)
    np.testing.assert_allclose(out.predictions["prediction"], expected, rtol=1e-5)


def test_an_onnx_model_with_int64_inputs_gets_integers(tmp_path, market):
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto

    w = np.array([1.0, 100.0])
    data = _onnx_linear([("X", TensorProto.INT64, 2)], w, cast=True)
    rng = np.random.default_rng(6)
    train = pd.DataFrame({"month": rng.integers(1, 13, 300), "hour": rng.integers(0, 24, 300)})
    res = publish(tmp_path, market, "ints", train, data,
                  meta("ints", fmt="onnx", features=["month", "hour"]))
    user = train.iloc[:25]
    user.to_csv(tmp_path / "user.csv", index=False)
    out = api.reuse(market, [res.id], data=tmp_path / "user.csv")
    np.testing.assert_array_equal(out.predictions["prediction"],
                                  user["month"] + 100.0 * user["hour"])


def test_an_onnx_model_whose_inputs_are_named_otherwise_is_refused(tmp_path, market):
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto

    data = _onnx_linear([(f, TensorProto.FLOAT, 1) for f in ["f0", "f1", "f2", "x3"]],
                        np.ones(4))
    man = meta("bad-onnx", fmt="onnx")
    d = publish(tmp_path, market, "bad-onnx", frame(150, 0), data, man, pack=False)
    with pytest.raises(ModelCheckError, match="x3"):
        api.build_spec(d / "train.csv", model=d / man.model_file, meta=d / "learnware.toml")


# ----------------------------------------------------------------------------- labels by type

def _rain(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"temp": rng.normal(20, 5, n), "humidity": rng.uniform(30, 100, n),
                      "wind": rng.gamma(2.0, 2.0, n)})
    y = (X["humidity"] + rng.normal(0, 12, n)) > 70
    return X, y.to_numpy()


@pytest.mark.parametrize("declared", [[False, True], ["False", "True"], [0, 1]])
def test_boolean_labels_round_trip_in_the_users_type(tmp_path, market, declared):
    """A classifier with boolean classes; the user's labels are True/False."""
    from sklearn.metrics import accuracy_score
    from sklearn.tree import DecisionTreeClassifier

    X, y = _rain(400, 0)
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X.to_numpy(), y)
    res = publish(tmp_path, market, "rain", X, skops_bytes(model),
                  meta("rain", task="classification", classes=declared,
                       features=list(X.columns)))
    Xu, yu = _rain(120, 1)
    Xu.assign(rain=yu).to_csv(tmp_path / "user.csv", index=False)
    truth = accuracy_score(yu, model.predict(Xu.to_numpy()))
    assert truth > 0.7
    out = api.reuse(market, [res.id], data=tmp_path / "user.csv", target="rain")
    assert out.scores["accuracy"] == pytest.approx(truth)
    assert out.predictions["prediction"].dtype == bool
    assert accuracy_score(yu, out.predictions["prediction"]) == pytest.approx(truth)
    found = api.search(market, data=tmp_path / "user.csv", target="rain")   # labelled search
    assert found.single[0]["id"] == res.id


def test_integer_labels_come_back_as_integers(tmp_path, market):
    """sklearn.metrics on the user's integer labels works on what a reuser predicts."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score

    train = frame(300, 7)
    y = np.digitize(train["f0"], [-0.5, 0.5])                 # classes 0, 1, 2 (ints)
    model = LogisticRegression(max_iter=2000).fit(train.to_numpy(), y)
    res = publish(tmp_path, market, "ints", train, skops_bytes(model),
                  meta("ints", task="classification", classes=[0, 1, 2]))
    user = frame(80, 8)
    yu = np.digitize(user["f0"], [-0.5, 0.5])
    from lwcli.engine.reuse import make_reuser

    reuser = make_reuser("single", api.load_learnwares(market, [res.id])).fit()
    pred = reuser.predict(user)
    assert pred.dtype == np.int64 and list(reuser.classes_) == [0, 1, 2]
    assert accuracy_score(yu, pred) == pytest.approx(accuracy_score(yu, model.predict(user.to_numpy())))


# ----------------------------------------------------------------------------- class order

def _onnx_classifier(declared, tmp_path, market):
    pytest.importorskip("onnxruntime")
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    train = frame(300, 9, ["age", "bp", "hr"])
    y = np.where(train["age"] + train["bp"] / 10 > 0, "yes", "no")
    model = LogisticRegression(max_iter=2000).fit(train.to_numpy(), y)
    data = to_onnx(model, train.to_numpy()[:1].astype(np.float32),
                   options={id(model): {"zipmap": False}}).SerializeToString()
    man = meta("cardio", fmt="onnx", task="classification", classes=declared,
               features=["age", "bp", "hr"])
    return train, y, model, data, man


@pytest.mark.parametrize("declared", [["yes", "no"], ["no", "yes"]])
def test_onnx_probabilities_follow_the_graphs_own_class_labels(tmp_path, market, declared):
    """zipmap=False: a plain probability tensor whose columns are ["no", "yes"] (the graph's
    classlabels), under a manifest in either order: aligned by the graph's labels, as a
    scikit-learn model's by its classes_ (field case 14 gave accuracy 0.25, swapped)."""
    train, y, model, data, man = _onnx_classifier(declared, tmp_path, market)
    res = publish(tmp_path, market, "cardio", train, data, man)
    user = frame(60, 10, ["age", "bp", "hr"])
    user.to_csv(tmp_path / "user.csv", index=False)
    out = api.reuse(market, [res.id], data=tmp_path / "user.csv", proba=True)
    np.testing.assert_allclose(out.predictions[["proba_no", "proba_yes"]],
                               model.predict_proba(user.to_numpy()), atol=1e-5)


def test_rare_classes_of_an_onnx_graph_are_never_swapped(tmp_path, market):
    """Five classes, two of them rare (never the most likely on QA's probes): a permuted
    manifest used to pass QA with their probability columns swapped."""
    pytest.importorskip("onnxruntime")
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    train = frame(400, 23, ["a", "b", "c"])
    rng = np.random.default_rng(23)
    y = np.where(train["a"] > 0, "A", "B").astype(object)
    y[rng.choice(400, 12, replace=False)] = "C"
    y[rng.choice(400, 12, replace=False)] = "D"
    y[train["b"] > 15] = "E"
    model = LogisticRegression(max_iter=3000).fit(train.to_numpy(), y)
    data = to_onnx(model, train.to_numpy()[:1].astype(np.float32),
                   options={id(model): {"zipmap": False}}).SerializeToString()
    man = meta("five", fmt="onnx", task="classification", classes=["A", "B", "D", "C", "E"],
               features=["a", "b", "c"])
    res = publish(tmp_path, market, "five", train, data, man)
    user = frame(80, 24, ["a", "b", "c"])
    user.to_csv(tmp_path / "user.csv", index=False)
    out = api.reuse(market, [res.id], data=tmp_path / "user.csv", proba=True)
    P = model.predict_proba(user.to_numpy())
    for j, c in enumerate(model.classes_):
        np.testing.assert_allclose(out.predictions[f"proba_{c}"], P[:, j], atol=1e-5)


def _labelless_onnx_classifier() -> bytes:
    """A graph with a label output and a plain probability tensor, and no classlabels
    attribute anywhere: column 0 is P("no"), column 1 P("yes"); labels "no"/"yes"."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Sigmoid", ["x"], ["p_yes"]),
        helper.make_node("Neg", ["x"], ["minus_x"]),
        helper.make_node("Sigmoid", ["minus_x"], ["p_no"]),
        helper.make_node("Concat", ["p_no", "p_yes"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["top"], axis=1, keepdims=0),
        helper.make_node("LabelEncoder", ["top"], ["label"], domain="ai.onnx.ml",
                         keys_int64s=[0, 1], values_strings=["no", "yes"]),
    ]
    graph = helper.make_graph(
        nodes, "labelless",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("label", TensorProto.STRING, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("ai.onnx.ml", 2)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_graph_without_class_labels_is_checked_against_its_own_labels_at_qa(tmp_path,
                                                                               market):
    pytest.importorskip("onnxruntime")
    train = frame(200, 25, ["x"])
    man = meta("labelless", fmt="onnx", task="classification", classes=["yes", "no"],
               features=["x"])
    d = publish(tmp_path, market, "labelless", train, _labelless_onnx_classifier(), man,
                pack=False)
    sp = api.build_spec(d / "train.csv", model=d / man.model_file, meta=d / "learnware.toml",
                        k=20)
    api.write_spec(sp, d / "rkme.json")
    api.pack(d / man.model_file, d / "rkme.json", d / "learnware.toml", d / "pkg.lw")
    with pytest.raises(ModelCheckError) as err:
        api.submit(d / "pkg.lw", market)
    assert "order ['no', 'yes']" in str(err.value) and err.value.exit_code == 7
    assert api.market_ls(market) == []


# ----------------------------------------------------------------------------- multi-output

def test_multi_output_regression_is_refused_at_pack_and_at_submit(tmp_path, market):
    """lw serves one target per learnware: a 2-output regressor is refused up front, with the
    cause, instead of entering the market where no labelled search could use it."""
    from lwcli.errors import ManifestError
    from sklearn.linear_model import Ridge

    train = frame(150, 11)
    Y = np.c_[train["f0"], train["f1"]]
    man = manifest_from_dict({**meta("two").to_dict(),
                              "output": {"dimension": 2, "names": ["PM2.5", "PM10"]}})
    d = publish(tmp_path, market, "two", train, skops_bytes(Ridge().fit(train, Y)), man,
                pack=False)
    sp = api.build_spec(d / "train.csv", model=d / man.model_file, meta=d / "learnware.toml",
                        k=20)
    api.write_spec(sp, d / "rkme.json")
    with pytest.raises(ManifestError, match="2 regression outputs") as err:
        api.pack(d / man.model_file, d / "rkme.json", d / "learnware.toml", d / "pkg.lw")
    assert err.value.exit_code == 4 and "one learnware per output" in str(err.value)
    (d / "pkg.lw").write_bytes(build_package(man, sp, skops_bytes(Ridge().fit(train, Y))))
    with pytest.raises(ManifestError, match="2 regression outputs"):
        api.submit(d / "pkg.lw", market)
    assert api.market_ls(market) == []


# ----------------------------------------------------------------------------- the library

def test_the_library_takes_dataframes_and_arrays_wherever_it_takes_a_file(tmp_path):
    """api.search(data=<DataFrame>) raised a raw TypeError; every API call that reads a file
    takes a DataFrame (and a 2-D array) too, with the same results as the file."""
    from conftest import ROOT

    market = ROOT / "sample_market" / "market"
    path = ROOT / "sample_market" / "user" / "wanshouxigong_200h.csv"
    df = pd.read_csv(path)
    shuffled = df[list(reversed(df.columns))]               # columns by name, any order
    by_file = api.search(market, data=path, target="PM2.5", rerank=0)
    by_frame = api.search(market, data=shuffled, target="PM2.5", rerank=0)
    assert by_frame.single == by_file.single and by_frame.mixture == by_file.mixture
    assert api.build_spec(df, target="PM2.5", market=market).to_bytes() == \
        api.build_spec(path, target="PM2.5", market=market).to_bytes()
    ids = [r["id"] for r in by_file.single[:2]]
    new = ROOT / "sample_market" / "user" / "wanshouxigong_new_hours.csv"
    a = api.reuse(market, ids, data=new, target="PM2.5")
    b = api.reuse(market, ids, data=pd.read_csv(new), target="PM2.5")
    assert a.scores == b.scores
    report = api.anchor_eval(market, df.iloc[:20], "PM2.5")
    assert report["n_rows"] == 20
    with pytest.raises(DataError, match="DataFrame, or a 2-D numpy array|a pandas DataFrame"):
        api.search(market, data=df.to_dict())
    feats = [c for c in df.columns if c != "PM2.5"]
    arr = api.build_spec(df[feats].to_numpy())                  # columns x0, x1, ...
    assert arr.features == tuple(f"x{i}" for i in range(len(feats)))


# ----------------------------------------------------------------------------- found by trying it

def test_the_same_model_data_and_manifest_give_one_learnware(tmp_path, market):
    """A spec fitted before its island existed (island null) and one fitted after (the
    island's id) used to give two packages, two ids and a duplicate in the market."""
    from sklearn.linear_model import Ridge

    train = frame(200, 12)
    res = publish(tmp_path, market, "dup", train,
                  skops_bytes(Ridge().fit(train.to_numpy(), train["f0"])), meta("dup"))
    d = tmp_path / "dup"
    sp = api.build_spec(d / "train.csv", model=d / "model.skops", meta=d / "learnware.toml",
                        market=market, k=20, seed=0)        # now the island exists
    assert sp.island == res.island
    api.write_spec(sp, d / "again.json")
    again = api.pack(d / "model.skops", d / "again.json", d / "learnware.toml", d / "again.lw")
    assert again.id == res.id
    assert api.submit(d / "again.lw", market).status == "exists"
    assert len(api.market_ls(market)) == 1


def test_scoring_labels_the_learnwares_do_not_have_is_refused(tmp_path, market):
    """Labels 0/1 scored against classes "no"/"yes" gave accuracy 0 at exit 0."""
    from sklearn.linear_model import LogisticRegression

    train = frame(200, 13)
    y = np.where(train["f0"] > 0, "yes", "no")
    res = publish(tmp_path, market, "yn", train, skops_bytes(
        LogisticRegression().fit(train.to_numpy(), y)),
        meta("yn", task="classification", classes=["no", "yes"]))
    user = frame(50, 14)
    user.assign(disease=(user["f0"] > 0).astype(int)).to_csv(tmp_path / "u.csv", index=False)
    with pytest.raises(DataError, match=r"labels \['0', '1'\] that are not among"):
        api.reuse(market, [res.id], data=tmp_path / "u.csv", target="disease")
    with pytest.raises(DataError, match="share no class"):
        api.reuse(market, [res.id], data=tmp_path / "u.csv", target="disease",
                  method="with-user", train=tmp_path / "u.csv")


def test_listing_an_unknown_island_is_not_found(market):
    from lwcli.errors import NotFoundError

    with pytest.raises(NotFoundError, match="no island 'nope'"):
        api.market_ls(market, island="nope")


def test_a_label_column_left_in_the_data_of_reuse_is_named(tmp_path, market):
    from sklearn.linear_model import Ridge

    train = frame(150, 15)
    res = publish(tmp_path, market, "lab", train,
                  skops_bytes(Ridge().fit(train.to_numpy(), train["f0"])), meta("lab"))
    train.assign(y=1.0).to_csv(tmp_path / "u.csv", index=False)
    out = api.reuse(market, [res.id], data=tmp_path / "u.csv")
    assert out.n_rows == 150 and out.intake.ignored_columns() == ["y"]
    assert any("pass --target y to score the predictions" in w for w in out.warnings)


# ----------------------------------------------------------------------------- found by breaking it

def test_a_pipeline_that_starts_with_passthrough_is_fed_by_its_first_steps_names(tmp_path,
                                                                                market):
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline

    train = frame(200, 16)
    order = ["f3", "f2", "f1", "f0"]
    model = Pipeline([("p", "passthrough"), ("m", LinearRegression())]).fit(
        train[order], train["f3"] / 100 + train["f0"])
    res = publish(tmp_path, market, "pt", train, skops_bytes(model), meta("pt"))
    user = frame(30, 17)
    user.to_csv(tmp_path / "u.csv", index=False)
    out = api.reuse(market, [res.id], data=tmp_path / "u.csv")
    np.testing.assert_allclose(out.predictions["prediction"], model.predict(user[order]),
                               rtol=1e-12)


def test_a_model_with_undeclared_inner_names_is_refused(tmp_path):
    """A VotingRegressor over such a pipeline declares no names at all: scikit-learn only
    warns, lw refuses (exit 7) instead of feeding it by position."""
    from sklearn.ensemble import VotingRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline

    train = frame(200, 18)
    model = VotingRegressor([("a", Pipeline([("p", "passthrough"),
                                             ("m", LinearRegression())]))]).fit(
        train[["f3", "f2", "f1", "f0"]], train["f0"])
    man = meta("vote")
    d = publish(tmp_path, tmp_path / "nomarket", "vote", train, skops_bytes(model), man,
                pack=False)
    with pytest.raises(ModelCheckError, match="fitted on named columns") as err:
        api.build_spec(d / "train.csv", model=d / man.model_file, meta=d / "learnware.toml",
                       k=20)
    assert err.value.exit_code == 7


def test_fill_values_are_refused_not_fitted_into_a_nan_spec(tmp_path):
    """A NetCDF fill value (9.96921e36) fits float32 but its square does not: the spec came
    out NaN at exit 0, or founded an island with a useless bandwidth."""
    from conftest import ROOT

    user = pd.read_csv(ROOT / "sample_market" / "user" / "wanshouxigong_20h.csv")
    for fill in (9.96921e36, 1e30, -3e38):
        bad = user.copy()
        bad.loc[0, "PRES"] = fill
        bad.to_csv(tmp_path / "b.csv", index=False)
        for market in (ROOT / "sample_market" / "market", None):
            with pytest.raises(DataError, match="column 'PRES', data row 1, holds .*fill or "
                                                "no-data value") as err:
                api.build_spec(tmp_path / "b.csv", target="PM2.5", market=market, k=10)
            assert err.value.exit_code == 4
    with pytest.raises(DataError, match="fill or no-data"):   # arrays from Python too
        from lwcli.engine.kernel import fit_metric
        from lwcli.engine.rkme import fit_rkme

        Z = np.random.default_rng(0).normal(size=(50, 3))
        metric = fit_metric(Z)
        Z[3, 1] = 1e30
        fit_rkme(Z, metric, k=5)


def test_a_non_numeric_regression_target_is_invalid_input(tmp_path):
    from conftest import ROOT

    user = pd.read_csv(ROOT / "sample_market" / "user" / "wanshouxigong_20h.csv")
    user["PM2.5"] = user["PM2.5"].astype(object)
    user.loc[2, "PM2.5"] = "<5"
    user.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(DataError, match="holds '<5', not a number"):
        api.build_spec(tmp_path / "b.csv", target="PM2.5", market=ROOT / "sample_market" /
                       "market", k=10)


def test_zero_padded_and_decimal_class_labels_are_one_class(tmp_path, market):
    """Classes "01"/"02" in the manifest; the user's CSV holds 01/02, read as 1 and 2."""
    from sklearn.tree import DecisionTreeClassifier

    train = frame(200, 19)
    y = np.where(train["f0"] > 0, "02", "01")
    model = DecisionTreeClassifier(max_depth=2, random_state=0).fit(train.to_numpy(), y)
    res = publish(tmp_path, market, "padded", train, skops_bytes(model),
                  meta("padded", task="classification", classes=["01", "02"]))
    user = frame(60, 20)
    yu = np.where(user["f0"] > 0, "02", "01")
    user.assign(code=yu).to_csv(tmp_path / "u.csv", index=False)    # written 01 / 02
    out = api.reuse(market, [res.id], data=tmp_path / "u.csv", target="code")
    truth = float((model.predict(user.to_numpy()) == yu).mean())
    assert out.scores["accuracy"] == pytest.approx(truth) and truth > 0.9


def test_single_reuse_returns_the_models_own_labels(tmp_path, market):
    """Labels are the model's predict, not the argmax of its probabilities (k-NN ties)."""
    from sklearn.neighbors import KNeighborsClassifier

    train = frame(200, 21)
    y = np.where(train["f0"] + train["f1"] / 10 > 0, "yes", "no")
    model = KNeighborsClassifier(4).fit(train.to_numpy(), y)
    res = publish(tmp_path, market, "knn", train, skops_bytes(model),
                  meta("knn", task="classification", classes=["yes", "no"]))
    user = frame(200, 22)
    user.to_csv(tmp_path / "u.csv", index=False)
    out = api.reuse(market, [res.id], data=tmp_path / "u.csv")
    assert list(out.predictions["prediction"]) == list(model.predict(user.to_numpy()))


def test_probability_columns_are_named_in_the_users_type(tmp_path, market):
    from sklearn.linear_model import LogisticRegression

    X, y = _rain(300, 3)
    res = publish(tmp_path, market, "rain", X, skops_bytes(
        LogisticRegression(max_iter=1000).fit(X.to_numpy(), y)),
        meta("rain", task="classification", classes=[False, True], features=list(X.columns)))
    Xu, yu = _rain(50, 4)
    Xu.assign(rain=yu.astype(int)).to_csv(tmp_path / "u.csv", index=False)    # 0/1
    out = api.reuse(market, [res.id], data=tmp_path / "u.csv", target="rain", proba=True)
    assert list(out.predictions.columns) == ["prediction", "proba_0", "proba_1"]
    assert out.predictions["prediction"].dtype == np.int64


def test_a_few_integral_readings_are_a_regression_target(tmp_path):
    """20 PM2.5 readings, all integers, 19 distinct: not 19 classes."""
    from conftest import ROOT

    sp = api.build_spec(ROOT / "sample_market" / "user" / "wanshouxigong_20h.csv",
                        target="PM2.5", k=10)
    assert sp.task == "regression" and sp.outputs == ("PM2.5",)
    labels = pd.DataFrame({"a": np.arange(40.0) % 7 * 1.5, "y": np.arange(40) % 3})
    assert api.build_spec(labels, target="y", k=10).task == "classification"
