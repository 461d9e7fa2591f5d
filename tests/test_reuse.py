"""Reuse on real temporary markets: the five reusers, label alignment, saving, and the CLI."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from lwcli import api
from lwcli.engine.reuse import (AverageReuser, FeatureAugmentReuser, JobSelectorReuser,
                                SingleReuser, WithUserReuser)
from lwcli.engine.reuse.user_model import fit_estimator, make_folds, select_user_model
from lwcli.reusefile import load_reuser

from conftest import (build_classifier, build_learnware, domain_data, run_cli, snapshot,
                      three_class_data, write_user)


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    """Two regression domains, two learnwares each (ridge and a random forest)."""
    from sklearn.ensemble import RandomForestRegressor

    work = tmp_path_factory.mktemp("reuse")
    root = work / "market"
    api.market_init(root)
    ids = {}
    for dom in (0, 1):
        X, y = domain_data(dom, 400, seed=dom)
        for kind in ("ridge", "rf"):
            model = RandomForestRegressor(30, random_state=0).fit(X, y) if kind == "rf" else None
            b = build_learnware(work, f"d{dom}-{kind}", X, y, market=root, k=20, model=model)
            ids[(dom, kind)] = api.submit(b.package, root).id
    return root, ids, work


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    """Classifiers declaring their classes in different orders and sets (three islands)."""
    from sklearn.ensemble import RandomForestClassifier

    work = tmp_path_factory.mktemp("reuse-clf")
    root = work / "market"
    api.market_init(root)
    X, y = three_class_data(600, seed=0)
    ids = {}
    ids["abc"] = api.submit(build_classifier(work, "abc", X, y, ["a", "b", "c"],
                                             market=root).package, root).id
    ids["cba"] = api.submit(build_classifier(
        work, "cba", X, y, ["c", "b", "a"], market=root,
        model=RandomForestClassifier(30, random_state=0).fit(X, y)).package, root).id
    keep = y != "c"   # knows only two classes, declared in non-sorted order
    ids["ba"] = api.submit(build_classifier(work, "ba", X[keep], y[keep], ["b", "a"],
                                            market=root).package, root).id
    return root, ids, work


def _user_files(tmp_path, dom=0, n=80, seed=5):
    X, y = domain_data(dom, n, seed=seed)
    return (write_user(tmp_path / "train.csv", X, y), write_user(tmp_path / "new.csv", X),
            write_user(tmp_path / "new_labelled.csv", X, y), X, y)


# ----------------------------------------------------------------------------- every reuser

@pytest.mark.parametrize("method", ["single", "average", "with-user", "job-selector",
                                    "feature-augment"])
def test_each_reuser_predicts_every_row_and_leaves_the_market_alone(reg, tmp_path, method):
    root, ids, _ = reg
    train, new, labelled, X, y = _user_files(tmp_path)
    chosen = [ids[(0, "ridge")]] if method == "single" else [ids[(0, "ridge")], ids[(0, "rf")]]
    before = snapshot(root)
    labels = {"train": train} if method in ("with-user", "feature-augment") else {}
    res = api.reuse(root, chosen, data=labelled, method=method, out=tmp_path / "p.csv",
                    target="y", **labels)
    pred = pd.read_csv(tmp_path / "p.csv")
    assert list(pred.columns) == ["prediction"] and len(pred) == len(X)
    assert np.all(np.isfinite(pred.prediction))
    assert res.method == method and res.ids == chosen and res.n_rows == len(X)
    assert res.scores["rmse"] == pytest.approx(rmse(pred.prediction, y))
    assert res.scores["r2"] > 0.9                       # domain-0 learnwares on domain-0 rows
    assert snapshot(root) == before


def test_single_is_the_learnware_itself(reg, tmp_path):
    root, ids, _ = reg
    _, new, _, X, _ = _user_files(tmp_path)
    (lw,) = api.load_learnwares(root, [ids[(0, "rf")]])
    res = api.reuse(root, [ids[(0, "rf")]], data=new)
    np.testing.assert_array_equal(res.predictions.prediction.to_numpy(), lw.model.predict(X))


def test_average_weights_are_the_mixture_weights(reg, tmp_path):
    root, ids, _ = reg
    _, _, _, X, _ = _user_files(tmp_path)
    lws = api.load_learnwares(root, [ids[(0, "ridge")], ids[(1, "ridge")]])
    a, b = (lw.model.predict(X) for lw in lws)
    r = AverageReuser(lws, weights=[3, 1]).fit()
    np.testing.assert_allclose(r.weights_, [0.75, 0.25])
    np.testing.assert_allclose(r.predict(X), 0.75 * a + 0.25 * b)
    np.testing.assert_allclose(AverageReuser(lws).fit().predict(X), 0.5 * (a + b))


def test_job_selector_routes_each_instance_to_its_learnware(reg):
    root, ids, _ = reg
    lws = api.load_learnwares(root, [ids[(0, "ridge")], ids[(1, "ridge")]])
    X0, y0 = domain_data(0, 150, seed=21)
    X1, y1 = domain_data(1, 150, seed=22)
    X = np.vstack([X0, X1])
    truth = np.r_[np.zeros(150), np.ones(150)]
    r = JobSelectorReuser(lws).fit()                     # no user labels, no user data
    routed = r.route(X)
    assert (routed == truth).mean() >= 0.99              # chance is 0.5
    P = r.route_proba(X)
    np.testing.assert_allclose(P.sum(1), 1.0)
    # routing to the right learnware is what makes the job selector good on a mixed task
    y = np.r_[y0, y1]
    assert rmse(r.predict(X), y) < 0.2 * rmse(AverageReuser(lws).fit().predict(X), y)


def test_job_selector_weights_move_the_boundary(reg):
    root, ids, _ = reg
    lws = api.load_learnwares(root, [ids[(0, "ridge")], ids[(1, "ridge")]])
    r = JobSelectorReuser(lws, weights=[1.0, 0.0]).fit()
    X1, _ = domain_data(1, 50, seed=3)
    assert (r.route(X1) == 0).all()                      # a zero-weight learnware gets nothing


def test_with_user_is_not_worse_than_the_user_model_when_learnwares_are_useless(reg):
    root, ids, _ = reg
    lws = api.load_learnwares(root, [ids[(0, "ridge")], ids[(1, "rf")]])
    X, y = domain_data(2, 600, seed=31)                 # a third domain: another function
    Xtr, ytr, Xte, yte = X[:300], y[:300], X[300:], y[300:]
    r = WithUserReuser(lws, cv=5, random_state=0).fit(Xtr, ytr)
    assert r.weights_[0] > 0.95                          # the user model carries the blend
    folds = make_folds(ytr, "regression", 5, 0)
    choice = select_user_model(Xtr, ytr, "regression", [], folds)
    alone = fit_estimator(choice.estimator, Xtr, ytr, "regression")
    assert rmse(r.predict(Xte), yte) <= 1.01 * rmse(alone.predict(Xte), yte)
    assert r.cv_losses_["blend"] <= r.cv_losses_["user_model"] * 1.0001 or r.fallback_


def test_with_user_leans_on_good_learnwares_when_labels_are_few(reg):
    root, ids, _ = reg
    lws = api.load_learnwares(root, [ids[(0, "ridge")], ids[(1, "ridge")]])
    X, y = domain_data(0, 420, seed=41)
    r = WithUserReuser(lws, random_state=0).fit(X[:20], y[:20])
    assert r.weights_[1] > 0.8 and r.weights_[2] < 0.1   # the domain-0 learnware dominates
    assert rmse(r.predict(X[20:]), y[20:]) < 1.0


def test_feature_augment_learns_from_learnware_outputs(reg):
    root, ids, _ = reg
    lws = api.load_learnwares(root, [ids[(0, "ridge")]])
    X, y = domain_data(0, 300, seed=51)
    y2 = 2.0 * y + 5.0                                   # the user's target: a rescaled task
    r = FeatureAugmentReuser(lws, random_state=0).fit(X[:100], y2[:100])
    assert r.augment(X[:3]).shape == (3, X.shape[1] + 1)
    assert rmse(r.predict(X[100:]), y2[100:]) < 0.2 * np.std(y2)


def test_labels_needed_is_said_in_python_too(reg):
    from lwcli.errors import UsageError

    root, ids, _ = reg
    lws = api.load_learnwares(root, [ids[(0, "ridge")]])
    for cls in (WithUserReuser, FeatureAugmentReuser):
        with pytest.raises(UsageError, match="needs the user's labelled data"):
            cls(lws).fit(np.zeros((10, 4)))


def test_reusers_follow_the_estimator_contract(reg):
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    root, ids, _ = reg
    lws = api.load_learnwares(root, [ids[(0, "ridge")]])
    r = AverageReuser(lws, weights=[1.0])
    assert clone(r).get_params()["weights"] == [1.0]
    assert not hasattr(r, "weights_")
    with pytest.raises(NotFittedError):
        r.predict(np.zeros((2, 4)))
    assert r.fit() is r and r.n_features_in_ == 4


# ------------------------------------------------------------------ classification, alignment

def _by_name(lw, X, classes):
    P = lw.model.predict_proba(X)
    out = np.zeros((len(X), len(classes)))
    for j, c in enumerate(lw.model.classes_):
        out[:, classes.index(str(c))] = P[:, j]
    return out


def test_class_probabilities_are_aligned_by_label_not_position(clf):
    root, ids, _ = clf
    lws = api.load_learnwares(root, [ids["abc"], ids["cba"], ids["ba"]])
    X, _ = three_class_data(50, seed=9)
    r = AverageReuser(lws).fit()
    classes = list(r.classes_)
    assert classes == ["a", "b", "c"]                    # union, first-seen order
    expected = sum(_by_name(lw, X, classes) for lw in lws) / 3
    np.testing.assert_allclose(r.predict_proba(X), expected, atol=1e-12)
    assert (expected[:, 2] < 1).all()                    # 'ba' never puts mass on 'c'
    # the declared order of a single learnware does not change which column is which
    for key in ("cba", "ba"):
        (lw,) = api.load_learnwares(root, [ids[key]])
        s = SingleReuser([lw]).fit()
        np.testing.assert_allclose(s.predict_proba(X), _by_name(lw, X, list(s.classes_)))


@pytest.mark.parametrize("method", ["single", "average", "with-user", "job-selector",
                                    "feature-augment"])
def test_classification_probabilities_sum_to_one(clf, tmp_path, method):
    root, ids, _ = clf
    X, y = three_class_data(120, seed=3)
    pd.DataFrame(X, columns=[f"f{i}" for i in range(4)]).assign(label=y).to_csv(
        tmp_path / "lab.csv", index=False)
    chosen = [ids["cba"]] if method == "single" else [ids["abc"], ids["ba"]]
    labels = {"train": tmp_path / "lab.csv"} if method in ("with-user", "feature-augment") else {}
    res = api.reuse(root, chosen, data=tmp_path / "lab.csv", target="label", method=method,
                    proba=True, **labels)
    frame = res.predictions
    cols = [c for c in frame.columns if c.startswith("proba_")]
    assert len(cols) == 3 and {c[6:] for c in cols} == {"a", "b", "c"}
    np.testing.assert_allclose(frame[cols].sum(axis=1), 1.0)
    assert (frame[cols].to_numpy() >= 0).all()
    assert set(frame.prediction) <= {"a", "b", "c"}
    assert res.scores["accuracy"] > 0.6                  # chance is 1/3


@pytest.mark.parametrize("method", ["with-user", "feature-augment"])
def test_the_users_model_learns_from_folds_and_labels_of_one_class(clf, tmp_path, method):
    """20 patients of whom one is 'b': some folds' training rows hold one class, and no
    classifier fits on one class. Those folds' model predicts it; a user whose labels are all
    one class gets that model as her own ("one-class"). Not an internal error."""
    root, ids, _ = clf
    X, _ = three_class_data(20, seed=4)
    for labels, name in ((["a"] * 19 + ["b"], None), (["a"] * 20, "one-class")):
        pd.DataFrame(X, columns=[f"f{i}" for i in range(4)]).assign(label=labels).to_csv(
            tmp_path / "lab.csv", index=False)
        res = api.reuse(root, [ids["abc"], ids["ba"]], data=tmp_path / "lab.csv",
                        train=tmp_path / "lab.csv", target="label", method=method, proba=True)
        assert res.n_rows == 20 and set(res.predictions.prediction) <= {"a", "b", "c"}
        cols = [c for c in res.predictions.columns if c.startswith("proba_")]
        np.testing.assert_allclose(res.predictions[cols].sum(axis=1), 1.0)
        said = any("every label is 'a'" in w for w in res.warnings)
        assert said == (name is not None)
        if name is not None and method == "with-user":
            assert res.details["user_model_name"] == name


def test_hard_voting_counts_votes(clf):
    root, ids, _ = clf
    lws = api.load_learnwares(root, [ids["abc"], ids["cba"], ids["ba"]])
    X, _ = three_class_data(40, seed=4)
    r = AverageReuser(lws, voting="hard").fit()
    votes = np.stack([r.classes_[np.argmax(P, 1)] for P in r.learnware_outputs(X)])
    for i, pred in enumerate(r.predict(X)):
        assert (votes[:, i] == pred).sum() == max((votes[:, i] == c).sum() for c in "abc")


# ---------------------------------------------------------------------------- saved reusers

@pytest.mark.parametrize("method", ["average", "with-user", "job-selector", "feature-augment"])
def test_saved_reuser_predicts_exactly_the_same(reg, tmp_path, method):
    root, ids, _ = reg
    train, new, _, X, _ = _user_files(tmp_path)
    chosen = [ids[(0, "ridge")], ids[(1, "rf")]]
    labels = {"train": train, "target": "y"} if method in ("with-user", "feature-augment") else {}
    first = api.reuse(root, chosen, data=new, method=method, save_model=tmp_path / "r.lwr",
                      **labels)
    again = api.reuse(data=new, model=tmp_path / "r.lwr")      # no market needed
    np.testing.assert_array_equal(first.predictions.to_numpy(), again.predictions.to_numpy())
    assert again.method == method and again.ids == chosen
    with zipfile.ZipFile(tmp_path / "r.lwr") as zf:
        names = zf.namelist()
    assert not any(n.endswith((".pkl", ".pickle", ".joblib")) for n in names)


def test_saved_reuser_is_deterministic(reg, tmp_path):
    root, ids, _ = reg
    train, new, _, _, _ = _user_files(tmp_path)
    for name in ("a.lwr", "b.lwr"):
        api.reuse(root, [ids[(0, "ridge")], ids[(0, "rf")]], data=new, method="with-user",
                  train=train, target="y", save_model=tmp_path / name)
    assert (tmp_path / "a.lwr").read_bytes() == (tmp_path / "b.lwr").read_bytes()


def test_saved_reuser_with_a_pickle_learnware_needs_trust(tmp_path):
    from lwcli.errors import UntrustedModelError

    root = tmp_path / "m"
    api.market_init(root)
    X, y = domain_data(0, 200, seed=0)
    b = build_learnware(tmp_path, "p", X, y, market=root, fmt="pickle", trust=True)
    lw_id = api.submit(b.package, root, trust=True).id
    new = write_user(tmp_path / "new.csv", X[:10])
    with pytest.raises(UntrustedModelError):
        api.reuse(root, [lw_id], data=new)
    api.reuse(root, [lw_id], data=new, trust=True, save_model=tmp_path / "r.lwr")
    with pytest.raises(UntrustedModelError):
        load_reuser(tmp_path / "r.lwr")
    assert len(load_reuser(tmp_path / "r.lwr", trust=True).predict(X[:10])) == 10


# ------------------------------------------------------------------------------- the CLI

def test_cli_reuse_writes_csv_json_and_stdout(reg, tmp_path):
    root, ids, _ = reg
    train, new, labelled, X, _ = _user_files(tmp_path)
    out = run_cli("reuse", ids[(0, "ridge")], ids[(0, "rf")], "--method", "with-user",
                 "--train", train, "--target", "y", "--data", labelled, "-o", tmp_path / "p.csv",
                 "--save-model", tmp_path / "r.lwr", "--market", root, "--json")
    doc = json.loads(out.stdout)
    assert doc["method"] == "with-user" and doc["n_rows"] == len(X)
    assert set(doc["details"]["weights"]) == {"user_model", ids[(0, "ridge")], ids[(0, "rf")]}
    assert doc["scores"]["rmse"] > 0
    own = doc["details"]["user_model_scores"]               # the comparison on the same rows
    assert set(own) == {"rmse", "mae", "r2"} and own["rmse"] > 0
    assert "your model alone" in run_cli(
        "reuse", ids[(0, "ridge")], "--method", "with-user", "--train", train, "--target", "y",
        "--data", labelled, "-o", tmp_path / "q.csv", "--market", root).stderr
    piped = run_cli("reuse", "--model", tmp_path / "r.lwr", "--data", new, "-o", "-")
    assert piped.stdout == (tmp_path / "p.csv").read_text()      # stdout: the CSV only
    assert piped.stderr.strip().startswith("with-user: ")


def test_cli_reuse_from_a_saved_search(reg, tmp_path):
    root, ids, _ = reg
    Xa, ya = domain_data(0, 150, seed=8)
    Xb, yb = domain_data(1, 150, seed=9)
    user = write_user(tmp_path / "u.csv", np.vstack([Xa, Xb]), np.r_[ya, yb])   # 50/50 blend
    s = run_cli("search", "--data", user, "--target", "y", "--market", root, "--json")
    (tmp_path / "s.json").write_text(s.stdout)
    doc = json.loads(s.stdout)
    mix = doc["mixture"]
    assert len(mix["ids"]) == 2
    out = json.loads(run_cli("reuse", "--from-search", tmp_path / "s.json", "--data", user,
                            "--target", "y", "-o", tmp_path / "p.csv", "--market", root,
                            "--json").stdout)
    assert out["method"] == "average" and out["ids"] == mix["ids"]
    assert list(out["details"]["weights"].values()) == pytest.approx(mix["weights"])
    top = json.loads(run_cli("reuse", "--from-search", tmp_path / "s.json", "--top", "3",
                            "--data", user, "--target", "y", "-o", tmp_path / "p.csv",
                            "--market", root, "--json").stdout)
    assert top["ids"] == [r["id"] for r in doc["single"][:3]]
    assert list(top["details"]["weights"].values()) == pytest.approx([1 / 3] * 3)
    # a one-member mixture is that learnware, applied directly
    doc["mixture"] = {**mix, "ids": mix["ids"][:1], "weights": [1.0]}
    (tmp_path / "one.json").write_text(json.dumps(doc))
    one = json.loads(run_cli("reuse", "--from-search", tmp_path / "one.json", "--data", user,
                            "--target", "y", "-o", tmp_path / "p.csv", "--market", root,
                            "--json").stdout)
    assert one["method"] == "single" and one["ids"] == mix["ids"][:1]


def _write_bad(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def _tampered(tmp_path, reg):
    root, ids, _ = reg
    train, new, _, _, _ = _user_files(tmp_path)
    api.reuse(root, [ids[(0, "ridge")]], data=new, save_model=tmp_path / "ok.lwr")
    with zipfile.ZipFile(tmp_path / "ok.lwr") as zin, \
            zipfile.ZipFile(tmp_path / "bad.lwr", "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("learnware.toml"):
                data = data.replace(b"test learnware", b"edited learnware")
            zout.writestr(info, data)
    return tmp_path / "bad.lwr"


# (label, args builder, exit code, needle in the one stderr line)
REUSE_ERRORS = [
    ("unknown id", lambda t, i, f: ["0123456789abcdef", "--data", f["new"]], 3, "no learnware"),
    ("malformed id", lambda t, i, f: ["nope", "--data", f["new"]], 3, "not a learnware id"),
    ("no ids", lambda t, i, f: ["--data", f["new"]], 2, "no learnware ids"),
    ("labels needed", lambda t, i, f: [i[(0, "ridge")], "--method", "with-user", "--data",
                                       f["new"]], 2, "learns from your labels"),
    ("train without target", lambda t, i, f: [i[(0, "ridge")], "--method", "feature-augment",
                                              "--train", f["train"], "--data", f["new"]], 2,
     "learns from your labels"),
    ("train unused", lambda t, i, f: [i[(0, "ridge")], "--train", f["train"], "--target", "y",
                                      "--data", f["new"]], 2, "uses no labelled data"),
    ("single takes one", lambda t, i, f: [i[(0, "ridge")], i[(0, "rf")], "--method", "single",
                                          "--data", f["new"]], 2, "takes one learnware"),
    ("unknown method", lambda t, i, f: [i[(0, "ridge")], "--method", "magic", "--data",
                                        f["new"]], 2, "unknown method"),
    ("weights count", lambda t, i, f: [i[(0, "ridge")], i[(0, "rf")], "--weights", "1",
                                       "--data", f["new"]], 2, "1 weights given for 2"),
    ("weights text", lambda t, i, f: [i[(0, "ridge")], "--weights", "a,b", "--data", f["new"]],
     2, "comma-separated"),
    ("negative weights", lambda t, i, f: [i[(0, "ridge")], i[(0, "rf")], "--weights", "1,-1",
                                          "--data", f["new"]], 2, "non-negative"),
    ("weights unused", lambda t, i, f: [i[(0, "ridge")], "--method", "with-user", "--weights",
                                        "1", "--train", f["train"], "--target", "y", "--data",
                                        f["new"]], 2, "--weights is for"),
    ("proba on regression", lambda t, i, f: [i[(0, "ridge")], "--proba", "--data", f["new"]],
     2, "--proba is for classification"),
    ("model and ids", lambda t, i, f: [i[(0, "ridge")], "--model", f["saved"], "--data",
                                       f["new"]], 2, "--model applies a saved reuser"),
    ("missing data", lambda t, i, f: [i[(0, "ridge")], "--data", t / "none.csv"], 3,
     "does not exist"),
    ("missing column", lambda t, i, f: [i[(0, "ridge")], "--data", f["three"], "--missing",
                                        "error"], 4, "lacks 1 of the 4 columns"),
    ("nan", lambda t, i, f: [i[(0, "ridge")], "--data", f["nan"], "--missing", "error"], 4,
     "NaN"),
    ("drop", lambda t, i, f: [i[(0, "ridge")], "--data", f["nan"], "--missing", "drop"], 2,
     "predicts every input row"),
    ("few labels", lambda t, i, f: [i[(0, "ridge")], "--method", "with-user", "--train",
                                    f["tiny"], "--target", "y", "--data", f["new"]], 4,
     "at least 5"),
    ("not a saved reuser", lambda t, i, f: ["--model", f["junk"], "--data", f["new"]], 4,
     "not a saved lw reuser"),
    ("tampered saved reuser", lambda t, i, f: ["--model", f["tampered"], "--data", f["new"]], 4,
     "sha256"),
    ("missing saved reuser", lambda t, i, f: ["--model", t / "none.lwr", "--data", f["new"]], 3,
     "does not exist"),
    ("missing search json", lambda t, i, f: ["--from-search", t / "none.json", "--data",
                                             f["new"]], 3, "does not exist"),
    ("bad search json", lambda t, i, f: ["--from-search", f["junk"], "--data", f["new"]], 4,
     "not the JSON of lw search"),
]


@pytest.mark.parametrize("label,args,code,needle", REUSE_ERRORS, ids=[e[0] for e in REUSE_ERRORS])
def test_cli_reuse_errors(reg, tmp_path, label, args, code, needle):
    root, ids, _ = reg
    train, new, _, X, y = _user_files(tmp_path)
    files = {"train": train, "new": new,
             "three": write_user(tmp_path / "three.csv", X[:, :3]),
             "nan": _write_bad(tmp_path, "nan.csv", "f0,f1,f2,f3\n1,2,3,4\n1,,3,4\n"),
             "tiny": write_user(tmp_path / "tiny.csv", X[:4], y[:4]),
             "junk": _write_bad(tmp_path, "junk.lwr", "not a zip"),
             "saved": tmp_path / "saved.lwr"}
    if label == "tampered saved reuser":
        files["tampered"] = _tampered(tmp_path, reg)
    before = snapshot(root)
    proc = run_cli("reuse", *args(tmp_path, ids, files), "-o", tmp_path / "out.csv",
                  "--market", root, "--json", check=code)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lw: error:") and needle in lines[0], lines
    assert not (tmp_path / "out.csv").exists()
    assert snapshot(root) == before


def test_cli_reuse_mixed_tasks_and_output_folder(reg, tmp_path):
    root, ids, _ = reg
    _, new, _, _, _ = _user_files(tmp_path)
    proc = run_cli("reuse", ids[(0, "ridge")], "--data", new, "-o", tmp_path / "no" / "p.csv",
                  "--market", root, check=3)
    assert "does not exist" in proc.stderr
    proc = run_cli("reuse", ids[(0, "ridge")], "--data", new, "-o", "-", "--json",
                  "--market", root, check=2)
    assert proc.stdout == ""
    # learnwares of different tasks cannot be reused together (different markets here, so
    # add a classifier to a copy of the regression market first: its spec built for that
    # market, which measures f0..f3 already)
    import shutil

    from conftest import build_classifier, three_class_data

    mixed = tmp_path / "mixed"
    shutil.copytree(root, mixed)
    built = build_classifier(tmp_path / "work", "abc", *three_class_data(200, seed=0),
                             ["a", "b", "c"], market=mixed)
    cid = api.submit(built.package, mixed).id
    proc = run_cli("reuse", ids[(0, "ridge")], cid, "--data", new, "-o", tmp_path / "p.csv",
                  "--market", mixed, check=4)
    assert "reuse learnwares of one task together" in proc.stderr


def test_each_learnware_gets_its_columns_by_name(reg):
    """A learnware whose manifest lists the features in another order still gets the right
    column for each feature."""
    from dataclasses import replace

    root, ids, _ = reg
    (lw,) = api.load_learnwares(root, [ids[(0, "ridge")]])
    order = [3, 1, 0, 2]

    class Permuted:                                      # the same model, other column order
        def predict(self, Xp):
            Xo = np.empty_like(Xp)
            Xo[:, order] = Xp
            return lw.model.predict(Xo)

    moved = replace(lw, id="f" * 16, model=Permuted(),
                    features=tuple(lw.features[j] for j in order))
    X, _ = domain_data(0, 30, seed=6)
    r = AverageReuser([lw, moved]).fit()
    np.testing.assert_allclose(r.predict(X), lw.model.predict(X))
    js = JobSelectorReuser([lw, moved]).fit()           # samples are re-ordered by name too
    np.testing.assert_allclose(js.predict(X), lw.model.predict(X))
