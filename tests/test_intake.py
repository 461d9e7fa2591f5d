"""Real tables in: columns taken by name, the rest listed; missing values by policy; columns
that were never measured; every count reported (issue 15, point 1)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT, build_classifier, run_cli, snapshot
from lwcli import api
from lwcli.engine.conditional import Reference, conditional_mean, ordinary_zeros
from lwcli.errors import DataError, NotFoundError, UsageError
from lwcli.io import read_table

SAMPLE = ROOT / "sample_market" / "market"
RAW = ROOT / "sample_market" / "data" / "wanshouxigong_raw_2016-10.csv"
ISLAND = "table-regression-aa9f758cb3"
RAW_IGNORED = [("No", "row number"), ("year", f"not an input of island {ISLAND}"),
               ("day", f"not an input of island {ISLAND}"), ("wd", "text"), ("station", "text")]


def _ignored(doc: dict) -> list[tuple[str, str]]:
    return [(c["column"], c["reason"]) for c in doc["ignored_columns"]]


# ---------------------------------------------------------------- the raw Beijing station file
def test_a_raw_station_file_is_searched_by_name_and_its_gaps_counted():
    """The issue's user: the source's own file (row number, date parts, wind direction as
    text, station name, 6 rows with gaps) was refused twice; now it is searched, and what was
    left is said."""
    proc = run_cli("search", "--data", RAW, "--target", "PM2.5", "--market", SAMPLE, "--json",
                   "--rerank", "0")
    doc = json.loads(proc.stdout)
    assert _ignored(doc) == RAW_IGNORED
    rows = doc["input_rows"]
    # 3 rows lack PM2.5 (those also lack PM10); the other 3 rows with a gap lack only 'wd'
    assert (rows["read"], rows["dropped"], rows["dropped_unlabelled"], rows["used"]) == \
        (300, 3, 3, 297)
    assert rows["incomplete_columns"] == {"PM10": 3, "SO2": 1, "NO2": 1, "CO": 1, "O3": 1}
    assert doc["requirement"]["n_rows"] == 297 and doc["island"] == ISLAND
    assert "ignored 5 columns: 'No' (row number)" in proc.stderr
    assert "dropped 3 of 300 rows with a missing value (3 without a label" in proc.stderr


def test_a_raw_station_file_is_reused_one_prediction_per_row(tmp_path):
    """Reuse never drops a row: gaps are estimated from the learnware's specification, rows
    without a label are predicted and not scored; --missing error refuses, drop is no option."""
    before = snapshot(SAMPLE)
    out = tmp_path / "pred.csv"
    doc = json.loads(run_cli("reuse", "0e69c50c61789ec0", "--data", RAW, "--target", "PM2.5",
                             "-o", out, "--market", SAMPLE, "--json").stdout)
    pred = pd.read_csv(out)
    assert len(pred) == doc["n_rows"] == 300 and pred["prediction"].notna().all()
    rows = doc["input_rows"]
    assert (rows["imputed"], rows["cells_imputed"], rows["unscored"], rows["dropped"]) == \
        (3, 7, 3, 0)
    assert _ignored(doc)[0] == ("No", "row number") and len(doc["ignored_columns"]) == 5
    assert any("predicted, not scored" in w for w in doc["warnings"])
    # the scores are those of the 297 labelled rows
    raw = pd.read_csv(RAW)
    labelled = raw["PM2.5"].notna().to_numpy()
    rmse = float(np.sqrt(np.mean((pred["prediction"][labelled] - raw["PM2.5"][labelled]) ** 2)))
    assert doc["scores"]["rmse"] == pytest.approx(rmse, rel=1e-9)
    proc = run_cli("reuse", "0e69c50c61789ec0", "--data", RAW, "-o", tmp_path / "e.csv",
                   "--market", SAMPLE, "--missing", "error", check=4)
    assert proc.stderr.count("\n") == 1 and "rows with NaN (missing) values" in proc.stderr
    assert "(pass --missing impute, or fill those cells)" in proc.stderr   # never drop here
    proc = run_cli("reuse", "0e69c50c61789ec0", "--data", RAW, "-o", tmp_path / "d.csv",
                   "--market", SAMPLE, "--missing", "drop", check=2)
    assert "predicts every input row" in proc.stderr
    assert not (tmp_path / "e.csv").exists() and not (tmp_path / "d.csv").exists()
    assert snapshot(SAMPLE) == before


def test_a_raw_station_file_makes_a_spec_and_an_anchor_report(tmp_path):
    doc = json.loads(run_cli("spec", RAW, "--target", "PM2.5", "--market", SAMPLE, "-o",
                             tmp_path / "req.json", "--json").stdout)
    assert _ignored(doc) == RAW_IGNORED and doc["n_rows"] == 297
    assert doc["input_rows"]["dropped"] == 3 and doc["island"] == ISLAND
    doc = json.loads(run_cli("anchor-eval", "--data", RAW, "--target", "PM2.5", "--market",
                             SAMPLE, "-o", tmp_path / "r.json", "--json").stdout)
    assert doc["n_rows"] == 297 and _ignored(doc) == RAW_IGNORED
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert "ignored_columns" not in on_disk and "input_rows" not in on_disk   # scores only
    # the --json output, saved, still reads as a report
    (tmp_path / "printed.json").write_text(json.dumps(doc))
    run_cli("search", "--anchor-report", tmp_path / "printed.json", "--market", SAMPLE)


def test_a_developer_training_file_keeps_its_label_and_ids_out_of_the_spec(tmp_path):
    """A developer's file holds the label column, an id and a date: the spec takes the
    manifest's features by name and lists the rest."""
    dev = ROOT / "sample_market" / "developer"
    train = pd.read_csv(dev / "train.csv")
    train.insert(0, "record_id", np.arange(1, len(train) + 1))
    train["date"] = "2015-03-01"
    train["PM2.5"] = 50.0              # the developer's label column
    train.to_csv(tmp_path / "train.csv", index=False)
    sp = api.build_spec(tmp_path / "train.csv", model=dev / "model.skops",
                        meta=dev / "learnware.toml", k=10)
    ref = api.build_spec(dev / "train.csv", model=dev / "model.skops",
                         meta=dev / "learnware.toml", k=10)
    assert np.array_equal(sp.rkme.points, ref.rkme.points)
    reasons = dict(sp.intake.ignored)
    assert set(reasons) == {"record_id", "date", "PM2.5"}
    assert reasons["record_id"] == "row number" and reasons["date"] == "dates or times"
    assert reasons["PM2.5"].startswith("not an input of the model")


# ---------------------------------------------------------------------------------- policies
def _gappy(tmp_path, n: int = 40):
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                       "label": rng.integers(0, 3, size=n)})
    df["c"] = 2 * df["a"] + rng.normal(scale=0.01, size=n)
    df.loc[[2, 5], "c"] = np.nan
    df.loc[7, "label"] = np.nan             # pandas now holds the labels as floats
    p = tmp_path / "g.csv"
    df.to_csv(p, index=False)
    return p, df


def test_the_three_policies_on_one_file(tmp_path):
    p, df = _gappy(tmp_path)
    with pytest.raises(DataError, match=r"2 rows with NaN \(missing\) values \(columns \['c'\]; "
                                        r"first: data row 3\)"):
        read_table(p, target="label", missing="error", features=["a", "c"])
    t = read_table(p, target="label", missing="drop", features=["a", "c"])
    assert t.n_rows == 37 and t.intake.rows_dropped == 3 and t.intake.rows_unlabelled == 1
    assert t.y.dtype == np.int64            # the labels keep their type despite the gap
    assert t.intake.ignored == (("b", "not taken"),)
    t = read_table(p, target="label", missing="impute", features=["a", "c"])
    assert t.n_rows == 39 and t.n_missing == 2 and t.intake.rows_dropped == 1
    with pytest.raises(UsageError, match="--missing 'keep'"):
        read_table(p, missing="keep")


def test_spec_imputes_from_the_files_own_complete_rows(tmp_path):
    """``c`` is ``2a``: the estimate of a gap follows the other rows' relation."""
    p, df = _gappy(tmp_path)
    sp = api.build_spec(p, missing="impute", k=5)
    assert sp.intake.cells_imputed == 3 and sp.intake.rows_imputed == 3   # 'label' is a feature
    assert sp.rkme.n_rows == 40 and sp.features == ("a", "b", "label", "c")
    from lwcli.api.spec import impute_from_own_rows

    t = impute_from_own_rows(read_table(p, missing="impute", features=["a", "c"]))
    est = t.X[[2, 5], 1]
    assert np.abs(est - 2 * df["a"].to_numpy()[[2, 5]]).max() < 0.35
    with pytest.raises(DataError, match="too few to impute"):
        impute_from_own_rows(read_table(pd.DataFrame({"a": [1.0, np.nan], "b": [np.nan, 2.0]}),
                                        missing="impute"))


def test_missing_value_markers_and_integer_labels_with_gaps(tmp_path):
    """Field case 04's '?' is a missing value under a policy; integer labels with a gap stay
    integers (pandas reads them as floats), so a class '1' never becomes '1.0'."""
    p = tmp_path / "h.csv"
    p.write_text("age,chol,num\n" + "".join(f"{40 + i},{200 + i},{i % 2}\n" for i in range(12))
                 + "50,?,1\n51,230,?\n")
    t = read_table(p, target="num", missing="drop")
    assert t.n_rows == 12 and t.y.dtype == np.int64 and set(t.y) == {0, 1}
    assert dict(t.intake.incomplete) == {"chol": 1} and t.intake.rows_unlabelled == 1


# --------------------------------------------------------------- columns that were not measured
def _heart(name: str) -> pd.DataFrame:
    cols = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
            "oldpeak", "slope", "ca", "thal", "num"]
    df = pd.read_csv(ROOT / "sample_market" / "data" / "heart_disease" / f"processed.{name}.data",
                     header=None, names=cols, na_values="?")
    df["disease"] = np.where(df.pop("num") > 0, "yes", "no")
    return df


def test_switzerlands_cholesterol_is_not_measured_not_zero(tmp_path):
    """Switzerland recorded chol as 0 for every patient: never taken as data. A heart
    learnware that does not use it still serves the file, and says what it left."""
    sw = _heart("switzerland")
    assert (sw["chol"] == 0).all()
    sw.to_csv(tmp_path / "sw.csv", index=False)
    res = api.search(SAMPLE, data=tmp_path / "sw.csv", target="disease", rerank=0)
    reasons = dict(res.intake.ignored)
    assert reasons["chol"] == "0 or empty in every row: not measured"
    assert "chol" in res.intake.unmeasured and "chol" in res.to_dict()["input_rows"][
        "unmeasured_columns"]
    heart = ["age", "sex", "cp", "trestbps", "thalach", "exang", "oldpeak"]
    assert res.intake.rows_dropped == int(sw[heart].isna().any(axis=1).sum()) > 0
    # a model that needs it: the column is estimated (reuse) or refused (spec, drop)
    t = read_table(tmp_path / "sw.csv", target="disease", features=["age", "chol"],
                   missing="impute")
    assert t.intake.unmeasured == ("chol",) and np.isnan(t.X[:, 1]).all()
    with pytest.raises(DataError, match="column 'chol' is 0 in every data row, so --missing "
                                        "drop leaves no row"):
        read_table(tmp_path / "sw.csv", target="disease", features=["age", "chol"],
                   missing="drop")
    with pytest.raises(DataError, match="'chol' is 0 in every one of the 123 data rows: it "
                                        "was not measured"):
        read_table(tmp_path / "sw.csv", target="disease", features=["age", "chol"])


VA = ["age", "sex", "cp", "chol", "fbs", "restecg"]     # what VA Long Beach measured


@pytest.fixture(scope="module")
def va_market(tmp_path_factory) -> tuple:
    """A market with one learnware over VA's measured features (fbs: 0 for most patients).
    VA recorded 0 for the cholesterol of a quarter of its patients; this developer left them
    out (with them, 0 would be an ordinary cholesterol in the market's eyes)."""
    tmp = tmp_path_factory.mktemp("va")
    va = _heart("va").dropna(subset=VA)
    va = va[va.chol > 0]
    market = tmp / "market"
    api.market_init(market)
    b = build_classifier(tmp, "heart-va", va[VA].to_numpy(float), va["disease"], ["no", "yes"],
                         market=market, features=VA)
    lid = api.submit(b.package, market).id
    api.market_refresh(market)
    return market, lid


def test_an_all_zero_indicator_is_data_where_the_market_knows_zero(va_market, tmp_path):
    """40 Hungarian patients without high fasting blood sugar: fbs is 0 in every row, and
    0 is what most of the market's patients have. It is data, not "not measured": the search
    reaches the island that takes it, and reuse feeds the zeros. Cholesterol 0 in every row
    (no patient has it) is still not measured."""
    market, lid = va_market
    hu = _heart("hungarian").dropna(subset=VA)
    user = hu[hu.fbs == 0].head(40)[[*VA, "disease"]]
    res = api.search(market, data=user, target="disease")
    assert res.single[0]["id"] == lid and res.intake.zeros == ("fbs",)
    assert res.intake.unmeasured == () and res.to_dict()["input_rows"]["zero_columns"] == ["fbs"]
    assert any("'fbs' is 0 in every row: taken as data" in w for w in res.warnings)
    used = api.reuse(market, [lid], data=user, target="disease")
    assert used.intake.zeros == ("fbs",) and used.intake.cells_imputed == 0
    no_chol = user.assign(chol=0)
    got = api.reuse(market, [lid], data=no_chol, target="disease")
    assert got.intake.unmeasured == ("chol",) and got.intake.cells_imputed == 40
    with pytest.raises(NotFoundError, match="also needs 1 column \\['chol'\\]") as e:
        api.search(market, data=no_chol, target="disease")
    assert "pass --island ID --missing impute" in e.value.hint
    # asked for by name, the island is searched with chol estimated from its specifications
    island = api.search(market, data=user, target="disease").island
    res = api.search(market, data=no_chol, target="disease", island=island, missing="impute")
    (got,) = res.islands
    assert res.single[0]["id"] == lid and got["input_rows"]["absent_columns"] == ["chol"]
    assert got["input_rows"]["cells_imputed"] == 40
    with pytest.raises(DataError, match="so --missing drop leaves no row"):   # not by default
        api.search(market, data=no_chol, target="disease", island=island)
    lacking = user.drop(columns="chol")          # the column absent: the same, either way
    with pytest.raises(DataError, match="lacks 1 of the 6 columns of island .*'chol'") as e:
        api.search(market, data=lacking, target="disease", island=island)
    assert "or pass --missing impute to have them estimated" in e.value.hint
    res = api.search(market, data=lacking, target="disease", island=island, missing="impute")
    assert res.islands[0]["input_rows"]["absent_columns"] == ["chol"]




def test_a_named_island_is_checked_like_any_other(va_market):
    """--island with --missing impute estimates the columns the file lacks, but the labels
    must still fit the island, and --task must agree with it (usage error otherwise)."""
    market, lid = va_market
    hu = _heart("hungarian").dropna(subset=VA)
    user = hu.head(40)[[*VA, "disease"]]
    island = api.search(market, data=user, target="disease").island
    odd = user.drop(columns="chol").assign(disease=["maybe"] + list(user.disease[1:]))
    with pytest.raises(DataError, match="'maybe'.*not among the classes|not among the classes"):
        api.search(market, data=odd, target="disease", island=island, missing="impute")
    for missing in ("drop", "impute"):
        with pytest.raises(UsageError, match="--task regression conflicts with --island"):
            api.search(market, data=user, target="disease", island=island, task="regression",
                       missing=missing)
    # a column empty in every row is not measured either, like one of zeros
    got = api.reuse(market, [lid], data=user.assign(chol=np.nan), target="disease")
    assert got.intake.unmeasured == ("chol",) and got.intake.cells_imputed == 40


def test_the_named_island_errors_through_the_cli(va_market, tmp_path):
    """Each new refusal: one line, its documented exit code, the market unchanged."""
    market, lid = va_market
    user = _heart("hungarian").dropna(subset=VA).head(40)[[*VA, "disease"]]
    island = api.search(market, data=user, target="disease").island
    user.drop(columns="chol").to_csv(tmp_path / "lack.csv", index=False)
    before = snapshot(market)
    base = ["search", "--data", tmp_path / "lack.csv", "--target", "disease", "--market",
            market]
    for extra, code, needle in (
            ([], 3, "or pass --island ID --missing impute"),
            (["--island", island], 4, "lacks 1 of the 6 columns of island"),
            (["--island", island, "--task", "regression"], 2, "--task regression conflicts"),
            (["--island", island, "--missing", "impute", "--task", "regression"], 2,
             "--task regression conflicts")):
        proc = run_cli(*base, *extra, check=code)
        assert needle in proc.stderr and proc.stderr.count("\n") == 1 and proc.stdout == ""
    proc = run_cli(*base, "--island", island, "--missing", "impute", "--json")
    doc = json.loads(proc.stdout)
    assert doc["single"][0]["id"] == lid
    assert doc["islands"][0]["input_rows"]["absent_columns"] == ["chol"]
    assert snapshot(market) == before


def test_a_target_of_zeros_is_said(tmp_path):
    user = pd.read_csv(ROOT / "sample_market" / "user" / "wanshouxigong_200h.csv")
    res = api.search(SAMPLE, data=user.assign(**{"PM2.5": 0.0}), target="PM2.5", rerank=0)
    assert any("the target is 0 in every row" in w for w in res.warnings)
    res = api.search(SAMPLE, data=user, target="PM2.5", rerank=0)
    assert not any("the target is 0" in w for w in res.warnings)


def test_zero_is_ordinary_where_the_specifications_put_weight_at_it():
    rng = np.random.default_rng(0)
    pts = np.c_[rng.integers(0, 2, 100) * (rng.random(100) < 0.5),    # an indicator, 75% 0
                rng.normal(240, 50, 100),                               # cholesterol
                rng.normal(0, 1, 100)]                                  # centred, continuous
    ref = Reference(("fbs", "chol", "z"), pts, np.full(100, 0.01), np.array([0.4, 50, 1.0]), 0.5)
    assert ordinary_zeros([ref], ["fbs", "chol", "z", "absent"]) == ["fbs"]
    assert ordinary_zeros([], ["fbs"]) == []


def test_reuse_estimates_an_unmeasured_input_from_the_specification(world, tmp_path):
    """The learnware takes f2; the user's site recorded 0 for it in every row."""
    X = np.random.default_rng(4).normal(size=(30, 4))
    df = pd.DataFrame(X, columns=["f0", "f1", "f2", "f3"]).assign(f2=0.0)
    df.to_csv(tmp_path / "u.csv", index=False)
    res = api.reuse(world["base"], [world["first"]], data=tmp_path / "u.csv")
    assert res.n_rows == 30 and res.intake.unmeasured == ("f2",)
    assert res.intake.cells_imputed == 30
    assert any("'f2' is 0 (or empty) in every row: taken as not measured" in w
               for w in res.warnings)
    spec = api.load_learnwares(world["base"], [world["first"]])[0].rkme
    filled = conditional_mean(np.c_[X[:, :2], np.full(30, np.nan), X[:, 3]],
                              ["f0", "f1", "f2", "f3"],
                              [Reference.of_rkme(spec, ["f0", "f1", "f2", "f3"])])[0]
    lo, hi = spec.points[:, 2].min(), spec.points[:, 2].max()
    assert ((filled[:, 2] >= lo) & (filled[:, 2] <= hi)).all()     # a convex combination


def test_a_saved_reuser_carries_the_specifications_it_imputes_from(world, tmp_path):
    X = np.random.default_rng(5).normal(size=(20, 4))
    df = pd.DataFrame(X, columns=["f0", "f1", "f2", "f3"])
    df.loc[3, "f1"] = np.nan
    df.to_csv(tmp_path / "u.csv", index=False)
    first = api.reuse(world["base"], [world["first"]], data=tmp_path / "u.csv",
                      save_model=tmp_path / "r.lwr")
    again = api.reuse(data=tmp_path / "u.csv", model=tmp_path / "r.lwr")
    assert again.intake.cells_imputed == 1
    np.testing.assert_allclose(again.predictions["prediction"], first.predictions["prediction"])


def test_a_search_that_reaches_no_island_names_what_the_nearest_lacks(world, tmp_path):
    X = np.random.default_rng(6).normal(size=(30, 4))
    pd.DataFrame(X[:, :3], columns=["f0", "f1", "f2"]).assign(
        f3="x", note="free text").to_csv(tmp_path / "u.csv", index=False)
    before = snapshot(world["base"])
    proc = run_cli("search", "--data", tmp_path / "u.csv", "--market", world["base"], check=4)
    assert "non-numeric feature columns ['f3']" in proc.stderr
    pd.DataFrame(X[:, :3], columns=["f0", "f1", "f2"]).to_csv(tmp_path / "v.csv", index=False)
    proc = run_cli("search", "--data", tmp_path / "v.csv", "--market", world["base"], check=3)
    assert "also needs 1 column ['f3']" in proc.stderr and proc.stderr.count("\n") == 1
    assert "or pass --island ID --missing impute to have them estimated" in proc.stderr
    assert snapshot(world["base"]) == before


# ------------------------------------------------------------------- the conditional mean maths
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(0, 2 ** 31 - 1))
def test_the_conditional_mean_is_a_weighted_average_of_the_reduced_points(k, seed):
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(k, 3)) * [1.0, 5.0, 0.1]
    beta = rng.dirichlet(np.ones(k))
    ref = Reference(("a", "b", "c"), P, beta, np.array([1.0, 5.0, 0.1]), 0.3)
    X = rng.normal(size=(6, 3))
    X[:, 1] = np.nan
    X[0, :] = np.nan
    F, cells, rows = conditional_mean(X, ["a", "b", "c"], [ref])
    assert cells == 8 and rows == 6 and not np.isnan(F).any()
    assert np.all(F[:, 1] >= P[:, 1].min() - 1e-9) and np.all(F[:, 1] <= P[:, 1].max() + 1e-9)
    np.testing.assert_allclose(F[0], beta @ P, rtol=1e-9, atol=1e-12)   # nothing observed
    np.testing.assert_array_equal(F[1:, [0, 2]], X[1:, [0, 2]])          # observed untouched


def test_the_conditional_mean_follows_a_relation_between_columns():
    rng = np.random.default_rng(0)
    a = rng.normal(size=300)
    P = np.c_[a, 3 * a + 1]
    ref = Reference(("a", "b"), P, np.full(300, 1 / 300), np.array([1.0, 3.0]), 0.25)
    F = conditional_mean(np.c_[np.linspace(-1.5, 1.5, 7), np.full(7, np.nan)], ["a", "b"],
                         [ref])[0]
    np.testing.assert_allclose(F[:, 1], 3 * F[:, 0] + 1, atol=0.25)
    # a column no reference knows stays missing, for the caller to refuse
    G, cells, _ = conditional_mean(np.array([[0.0, np.nan, np.nan]]), ["a", "b", "z"], [ref])
    assert cells == 1 and np.isnan(G[0, 2])


def test_the_exact_approximation_error_survives_cancellation():
    """The raw station file's input spec: ||Phi_R||^2, <Phi_R, Phi_data> and ||Phi_data||^2
    are each about 0.75 and cancel to about 1e-5, below float32's resolution of kernel
    values: lw spec reported an approximation error of exactly 0 (true: 0.0032). It is
    computed in float64 and equals the float64 oracle."""
    from lwcli.engine.kernel import mmd2_numpy

    sp = api.build_spec(RAW, market=SAMPLE)
    r, m = sp.rkme, sp.rkme.metric
    X = read_table(RAW, features=sp.features, missing="drop").X
    oracle = np.sqrt(mmd2_numpy(m.scale(X), np.full(len(X), 1 / len(X)), m.scale(r.points),
                                r.beta, m.gamma))
    assert r.approx_error > 0.002
    assert r.approx_error == pytest.approx(oracle, rel=1e-4)
