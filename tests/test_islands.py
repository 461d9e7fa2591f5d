"""Search across the specification world: a user whose columns reach several islands
(issue 15, point 3). Two islands over different feature blocks, learnwares on each, a user
with both blocks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import Ridge

from conftest import regression_meta, run_cli, snapshot
from lwcli import api

A, B = ["a0", "a1", "a2"], ["b0", "b1"]


def _data(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 5)) + shift, columns=A + B)
    df["y"] = 2 * df.a0 - df.a1 + 1.5 * df.b0 + 0.1 * rng.normal(size=n)
    return df


def _learnware(work, market, name: str, df: pd.DataFrame, features, alpha: float = 1.0):
    d = work / name
    d.mkdir(parents=True)
    df[features].to_csv(d / "train.csv", index=False)
    meta = regression_meta(name, features=features)
    (d / "learnware.toml").write_text(meta.to_toml())
    sio.dump(Ridge(alpha=alpha).fit(df[features].to_numpy(), df.y), d / "model.skops")
    api.write_spec(api.build_spec(d / "train.csv", model=d / "model.skops",
                                  meta=d / "learnware.toml", market=market, k=20), d / "s.json")
    api.pack(d / "model.skops", d / "s.json", d / "learnware.toml", d / "pkg.lw")
    return api.submit(d / "pkg.lw", market)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    work = tmp_path_factory.mktemp("islands")
    market = work / "market"
    api.market_init(market)
    ids = {"A-near": _learnware(work, market, "A-near", _data(300, 1), A),
           "A-far": _learnware(work, market, "A-far", _data(300, 2, shift=2.0), A),
           "B-near": _learnware(work, market, "B-near", _data(300, 3), B),
           "B-weak": _learnware(work, market, "B-weak", _data(300, 4), B, alpha=1e4)}
    user = _data(150, 9).assign(site_id=np.arange(150) * 7 % 13, station="x")
    user.to_csv(work / "user.csv", index=False)
    user.drop(columns="y").to_csv(work / "unlabelled.csv", index=False)
    return market, {k: r.id for k, r in ids.items()}, {k: r.island for k, r in ids.items()}, work


def test_a_user_with_both_blocks_gets_one_ranking_from_both_islands(two):
    market, ids, islands, work = two
    before = snapshot(market)
    doc = json.loads(run_cli("search", "--data", work / "user.csv", "--target", "y",
                             "--market", market, "--json").stdout)
    assert doc["ranked_by"] == "requirement-loss"
    assert {r["island"] for r in doc["single"]} == {islands["A-near"], islands["B-near"]}
    losses = [r["requirement_loss"] for r in doc["single"]]
    assert losses == sorted(losses)                          # one ranking, by one loss
    for r in doc["single"]:
        assert r["features"] == (A if r["island"] == islands["A-near"] else B)
    assert [i["island"] for i in doc["islands"]] == [islands["A-near"], islands["B-near"]]
    assert doc["island"] == doc["single"][0]["island"]       # the mixture is the lead island's
    assert set(doc["mixture"]["ids"]) <= {r["id"] for r in doc["islands"][0 if doc["island"]
                                          == islands["A-near"] else 1]["single"]}
    # what no island took is listed; each island's intake is in islands
    assert [c["column"] for c in doc["ignored_columns"]] == ["site_id", "station"]
    assert doc["islands"][1]["input_rows"]["used"] == 150
    assert snapshot(market) == before


def test_without_labels_one_island_ranks_and_the_warning_says_why(two):
    market, ids, islands, work = two
    res = api.search(market, data=work / "unlabelled.csv")
    assert res.ranked_by == "rkme" and res.island == islands["A-near"]   # 3 features, not 2
    assert {r["island"] for r in res.single} == {islands["A-near"]}
    assert any("not comparable" in w for w in res.warnings)
    assert [a["island"] for a in res.islands] == [islands["A-near"], islands["B-near"]]
    assert res.islands[1]["single"][0]["id"] in (ids["B-near"], ids["B-weak"])
    # --island still searches one island only
    one = api.search(market, data=work / "unlabelled.csv", island=islands["B-near"])
    assert {r["island"] for r in one.single} == {islands["B-near"]} and len(one.islands) == 1


def test_the_table_names_the_island_of_each_match(two):
    market, ids, islands, work = two
    out = run_cli("search", "--data", work / "user.csv", "--target", "y", "--market", market,
                  "--format", "tsv").stdout.splitlines()
    header = out[0].split("\t")
    assert header[:4] == ["rank", "id", "name", "island"]
    assert {line.split("\t")[3] for line in out[1:]} == {islands["A-near"], islands["B-near"]}
    table = run_cli("search", "--data", work / "user.csv", "--target", "y", "--market",
                    market).stdout
    assert "2 islands — matched on inputs and labels" in table


# ------------------------------------------------------------------ reuse across islands
@pytest.mark.parametrize("method", ["average", "with-user", "job-selector", "feature-augment"])
def test_every_method_reuses_learnwares_of_different_islands_together(two, method):
    """Each learnware gets its own columns by name from the one user table (seed sec. 5:
    the single-modality models together, and with the user's own model)."""
    market, ids, islands, work = two
    train = work / "user.csv"
    labelled = method in ("with-user", "feature-augment")
    res = api.reuse(market, [ids["A-near"], ids["B-near"]], data=work / "unlabelled.csv",
                    method=method, train=train if labelled else None,
                    target="y" if labelled else None)
    assert res.n_rows == 150 and np.isfinite(res.predictions["prediction"]).all()
    assert res.intake.ignored_columns() == ["site_id", "station"]
    if method == "average":
        lws = api.load_learnwares(market, [ids["A-near"], ids["B-near"]])
        df = pd.read_csv(work / "unlabelled.csv")
        want = np.mean([lw.predict_values(df[list(lw.features)].to_numpy())[:, 0]
                        for lw in lws], axis=0)
        np.testing.assert_allclose(res.predictions["prediction"], want, rtol=1e-10)


def test_a_learnware_none_of_whose_inputs_the_file_holds_is_refused(two, tmp_path):
    """The user has only block A; learnware B-near takes only b0, b1. Estimating both from
    its own specification, with nothing to condition on, would give one constant for every
    row: refused (exit 4), with what it needs. A learnware over both blocks is fine (see the
    merging tests below); a partly covered one gets the rest estimated."""
    market, ids, islands, work = two
    only_a = pd.read_csv(work / "user.csv")[A + ["y"]]
    only_a.to_csv(tmp_path / "a.csv", index=False)
    proc = run_cli("reuse", ids["A-near"], ids["B-near"], "--data", tmp_path / "a.csv", "-o",
                   tmp_path / "p.csv", "--market", market, check=4)
    assert f"holds none of the input columns of learnware {ids['B-near']} (['b0', 'b1'])" \
        in proc.stderr and proc.stderr.count("\n") == 1 and not (tmp_path / "p.csv").exists()
    pd.read_csv(work / "user.csv")[A + ["b0", "y"]].to_csv(tmp_path / "ab0.csv", index=False)
    doc = json.loads(run_cli("reuse", ids["B-near"], "--data", tmp_path / "ab0.csv", "-o",
                             tmp_path / "q.csv", "--market", market, "--json").stdout)
    assert doc["n_rows"] == 150 and doc["input_rows"]["absent_columns"] == ["b1"]
    proc = run_cli("reuse", ids["B-near"], "--data", tmp_path / "ab0.csv", "-o",
                   tmp_path / "r.csv", "--market", market, "--missing", "error", check=4)
    assert "lacks 1 of the 2 columns of learnware" in proc.stderr


# ------------------------------------------------------------------ island merging (Figure 3)
@pytest.fixture(scope="module")
def merged(two, tmp_path_factory):
    """``two``'s market plus a learnware over both blocks: it links island A and island B."""
    import shutil

    market, ids, islands, work = two
    root = tmp_path_factory.mktemp("merged")
    shutil.copytree(market, root / "market")
    before = api.market_world(root / "market")
    span = _learnware(root, root / "market", "AB-span", _data(300, 5), A + B)
    return root / "market", {**ids, "AB": span.id}, {**islands, "AB": span.island}, work, before


def test_a_learnware_over_both_blocks_links_the_islands(merged):
    market, ids, islands, work, before = merged
    assert before.links == [] and before.groups == []
    world = api.market_world(market)
    assert [(ln["island"], ln["to"], ln["estimated"]) for ln in world.links] == [
        (islands["A-near"], islands["AB"], B), (islands["B-near"], islands["AB"], A)]
    assert world.groups == [[islands["A-near"], islands["B-near"], islands["AB"]]]
    assert api.market_refresh(market).changed is True
    assert api.market_refresh(market).changed is False          # idempotent
    assert api.market_world(market).links == world.links
    text = run_cli("market", "info", "--market", market).stdout
    assert f"linked: island {islands['A-near']} -> {islands['AB']} through its 1 learnwares " \
           "(b0, b1 estimated for the first's users)" in text


def test_a_one_block_user_is_matched_across_the_link(merged, tmp_path):
    """The user has only block A: she reaches island A directly and the spanning island
    through the link, her b0, b1 estimated from its specifications; with labels, one
    ranking holds learnwares of both."""
    market, ids, islands, work, _ = merged
    pd.read_csv(work / "user.csv")[A + ["y"]].to_csv(tmp_path / "a.csv", index=False)
    res = api.search(market, data=tmp_path / "a.csv", target="y")
    assert [a["island"] for a in res.islands] == [islands["A-near"], islands["AB"]]
    bridged = res.islands[1]
    assert bridged["input_rows"]["absent_columns"] == ["b0", "b1"]
    assert bridged["input_rows"]["cells_imputed"] == 300
    assert {r["island"] for r in res.single} == {islands["A-near"], islands["AB"]}
    assert any("2 input columns not in the file (or without data), estimated for every row from the "
               f"specifications of 1 learnwares on island {islands['AB']}" in w
               for w in res.warnings), res.warnings
    # and she reuses the spanning learnware, b0 and b1 estimated from its specification
    out = api.reuse(market, [ids["AB"]], data=tmp_path / "a.csv", target="y")
    assert out.n_rows == 150 and out.intake.absent == ("b0", "b1")


# ------------------------------------------------------------------ found by breaking it
@pytest.fixture(scope="module")
def tasks(merged, tmp_path_factory):
    """``merged``'s market plus a classifier over block A with integer classes 0, 2, 5."""
    import shutil

    from sklearn.linear_model import LogisticRegression

    from conftest import classification_meta

    market, ids, islands, work, _ = merged
    root = tmp_path_factory.mktemp("tasks")
    shutil.copytree(market, root / "market")
    df = _data(300, 6)
    y = np.array([0, 2, 5])[np.digitize(df.a0, [-0.5, 0.5])]
    d = root / "INT"
    d.mkdir()
    df[A].to_csv(d / "train.csv", index=False)
    meta = classification_meta("INT", [0, 2, 5], features=A)
    (d / "learnware.toml").write_text(meta.to_toml())
    sio.dump(LogisticRegression(max_iter=500).fit(df[A].to_numpy(), y), d / "model.skops")
    api.write_spec(api.build_spec(d / "train.csv", model=d / "model.skops",
                                  meta=d / "learnware.toml", market=root / "market", k=20),
                   d / "s.json")
    api.pack(d / "model.skops", d / "s.json", d / "learnware.toml", d / "pkg.lw")
    cls = api.submit(d / "pkg.lw", root / "market")
    user = _data(120, 7)
    user["y"] = np.array([0, 2, 5])[np.digitize(user.a0, [-0.5, 0.5])]
    user.to_csv(root / "int.csv", index=False)
    user.assign(y=user.y.astype(object).where(user.index > 1, "?")).to_csv(root / "int_q.csv",
                                                                         index=False)
    return root / "market", cls.island, islands, root


def test_a_brier_score_and_an_rmse_are_never_ranked_together(tasks):
    """Integer labels 0, 2, 5 fit the classifier's classes and, as numbers, the regression
    islands' target y: they are one task's (classes: few integers that repeat), and the note
    names the islands left out. A '?' among them is no label, not a class."""
    market, cls_island, islands, root = tasks
    for f in ("int.csv", "int_q.csv"):
        res = api.search(market, data=root / f, target="y")
        assert {r["island"] for r in res.single} == {cls_island}, f
        assert res.requirement["loss_metric"] == "brier"
        assert any("your labels look like a classification target; also reachable for the "
                   "other task" in w for w in res.warnings), res.warnings
    floats = _data(120, 8)
    floats.to_csv(root / "float.csv", index=False)
    res = api.search(market, data=root / "float.csv", target="y")
    assert cls_island not in {r["island"] for r in res.single}


def test_links_follow_the_policy_and_the_island_option(merged, tmp_path):
    """--missing error estimates nothing, so no island is reached through a link; --island
    names an island reached through a link, and gets it."""
    market, ids, islands, work, _ = merged
    pd.read_csv(work / "user.csv")[A + ["y"]].to_csv(tmp_path / "a.csv", index=False)
    strict = api.search(market, data=tmp_path / "a.csv", target="y", missing="error")
    assert [a["island"] for a in strict.islands] == [islands["A-near"]]
    one = api.search(market, data=tmp_path / "a.csv", target="y", island=islands["AB"])
    assert [a["island"] for a in one.islands] == [islands["AB"]]
    assert one.islands[0]["input_rows"]["absent_columns"] == ["b0", "b1"]


def test_a_column_without_data_is_as_if_absent_for_matching(two, tmp_path):
    """b1 is 0 in every row: island B (which needs it) is not matched on it, island A is,
    and nothing tells the user to impute what cannot be imputed."""
    market, ids, islands, work = two
    pd.read_csv(work / "user.csv").assign(b1=0.0).to_csv(tmp_path / "z.csv", index=False)
    res = api.search(market, data=tmp_path / "z.csv", target="y")
    assert [a["island"] for a in res.islands] == [islands["A-near"]]
    assert ("b1", "0 or empty in every row: not measured") in res.intake.ignored
    pd.read_csv(work / "user.csv")[B + ["y"]].assign(b1=0.0).to_csv(tmp_path / "zb.csv",
                                                                      index=False)
    proc = run_cli("search", "--data", tmp_path / "zb.csv", "--target", "y", "--market",
                   market, check=3)
    assert "also needs 1 column ['b1'] ('b1': 0 or empty in every row: not measured)" in proc.stderr
