"""A classification island on real data: UCI heart disease, one learnware per hospital."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lwcli import api
from lwcli.market.manifest import manifest_from_dict

from conftest import ROOT

COLS = "age sex cp trestbps chol fbs restecg thalach exang oldpeak slope ca thal num".split()
FEATURES = ["age", "sex", "cp", "trestbps", "thalach", "exang", "oldpeak"]
DATA = ROOT / "sample_market" / "data" / "heart_disease"


def hospital(name: str) -> pd.DataFrame:
    d = pd.read_csv(DATA / f"processed.{name}.data", header=None, names=COLS, na_values="?")
    d = d[FEATURES + ["num"]].dropna()
    d["disease"] = np.where(d.num > 0, "yes", "no")
    return d.drop(columns=["num"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def heart(tmp_path_factory):
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    work = tmp_path_factory.mktemp("heart")
    root = work / "market"
    api.market_init(root)
    ids, held_out = {}, {}
    for i, name in enumerate(("cleveland", "hungarian", "va")):
        d = hospital(name).sample(frac=1.0, random_state=i)
        cut = int(0.7 * len(d))
        train, held_out[name] = d.iloc[:cut], d.iloc[cut:]
        model = (make_pipeline(StandardScaler(), LogisticRegression()) if i % 2 == 0
                 else RandomForestClassifier(50, max_depth=5, random_state=0))
        model.fit(train[FEATURES].to_numpy(float), train["disease"].to_numpy())
        folder = work / name
        folder.mkdir()
        train[FEATURES].to_csv(folder / "train.csv", index=False)
        sio.dump(model, folder / "model.skops")
        meta = manifest_from_dict({
            "name": f"heart-{name}", "version": "1.0.0", "license": "CC-BY-4.0",
            "description": f"heart disease at the {name} hospital", "tags": ["heart"],
            "data_type": "table", "task": "classification", "objective": "accuracy",
            "input": {"features": FEATURES}, "output": {"classes": ["no", "yes"]},
            "model": {"format": "skops", "file": "model.skops"}})
        (folder / "learnware.toml").write_text(meta.to_toml())
        sp = api.build_spec(folder / "train.csv", model=folder / "model.skops",
                            meta=folder / "learnware.toml", market=root, k=40)
        api.write_spec(sp, folder / "rkme.json")
        api.pack(folder / "model.skops", folder / "rkme.json", folder / "learnware.toml",
                 folder / "pkg.lw")
        res = api.submit(folder / "pkg.lw", root)
        ids[name] = res.id
        assert res.qa["agreement_metric"] == "weighted_accuracy"
        assert res.qa["agreement"] > 0.75   # reduced points near the boundary may disagree
    return root, ids, held_out


def test_classification_spec_embeds_one_hot_outputs(heart):
    root, ids, _ = heart
    sp = api.market_info(root, ids["hungarian"])["spec"]
    assert sp["output_source"] == "model"
    from lwcli.specfile import read_spec

    spec = read_spec(Path(root) / "learnwares" / ids["hungarian"] / "rkme.json")
    assert spec.outputs == ("no", "yes") and spec.task == "classification"
    assert spec.rkme.points.shape[1] == len(FEATURES) + 2


@pytest.mark.parametrize("name", ["hungarian", "va"])
def test_labelled_user_finds_their_hospital(heart, tmp_path, name):
    root, ids, held_out = heart
    f = tmp_path / "user.csv"
    held_out[name].head(60).to_csv(f, index=False)
    res = api.search(root, data=f, target="disease")
    assert res.mode == "xy"
    assert res.single[0]["id"] == ids[name]


def test_labelled_search_reranks_by_the_brier_score_on_the_requirement(heart, tmp_path):
    root, ids, held_out = heart
    f = tmp_path / "user.csv"
    held_out["va"].head(60).to_csv(f, index=False)
    res = api.search(root, data=f, target="disease", top=len(ids))
    assert res.ranked_by == "requirement-loss" and res.requirement["loss_metric"] == "brier"
    losses = [r["requirement_loss"] for r in res.single]
    assert losses == sorted(losses) and losses[0] >= 0.0
    assert sorted(r["id"] for r in res.single) == sorted(ids.values())


def test_unknown_label_is_a_clear_error(heart, tmp_path):
    from lwcli.errors import DataError

    root, _, held_out = heart
    d = held_out["va"].head(30).copy()
    d.loc[d.index[0], "disease"] = "maybe"
    d.to_csv(tmp_path / "u.csv", index=False)
    with pytest.raises(DataError, match="maybe"):
        api.search(root, data=tmp_path / "u.csv", target="disease")


def test_anchors_and_reuse_on_the_classification_island(heart, tmp_path):
    import json

    from conftest import run_cli

    root, ids, held_out = heart
    refreshed = api.market_refresh(root)["anchors"]
    (isl,) = refreshed["islands"].values()
    assert isl["members"] == 3 and len(isl["anchors"]) == 2
    f = tmp_path / "user.csv"
    held_out["hungarian"].head(30).to_csv(f, index=False)
    run_cli("anchor-eval", "--data", f, "--target", "disease", "-o", tmp_path / "r.json",
           "--market", root)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["task"] == "classification" and rep["n_rows"] == 30
    assert set(rep["scores"][0]["scores"]) == {"accuracy", "f1", "log_loss"}
    assert 0.0 < rep["baseline"]["accuracy"] <= 1.0
    doc = json.loads(run_cli("search", "--anchor-report", tmp_path / "r.json", "--market", root,
                            "--json").stdout)
    assert doc["anchors"]["metric"] == "accuracy" and doc["anchors"]["distance"] == "disagreement"
    preds = [r["predicted"] for r in doc["single"]]
    assert preds == sorted(preds, reverse=True)          # accuracy: higher first
    for r in doc["single"]:
        assert 0.0 <= r["lower"] <= r["predicted"] <= r["upper"] <= 1.0
        if r["anchor"]:
            observed = next(s["scores"]["accuracy"] for s in rep["scores"] if s["id"] == r["id"])
            assert r["observed"] == r["predicted"] == observed
    out = run_cli("reuse", ids["hungarian"], ids["va"], "--data", f, "--target", "disease",
                 "--proba", "-o", tmp_path / "p.csv", "--market", root, "--json")
    res = json.loads(out.stdout)
    assert res["columns"] == ["prediction", "proba_no", "proba_yes"]
    frame = pd.read_csv(tmp_path / "p.csv")
    assert set(frame.prediction) <= {"no", "yes"}
    np.testing.assert_allclose(frame[["proba_no", "proba_yes"]].sum(axis=1), 1.0)
    assert res["scores"]["accuracy"] > 0.6
