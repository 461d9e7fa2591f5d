"""The shipped sample market: consistent, current, and the user's story in the README holds."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd

from lwcli import api
from lwcli.engine.reuse.user_model import fit_estimator, make_folds, select_user_model

from conftest import ROOT, snapshot

MARKET = ROOT / "sample_market" / "market"
USER = ROOT / "sample_market" / "user"


def test_the_committed_market_verifies_and_its_derived_data_are_current(tmp_path):
    assert api.market_verify(MARKET).ok
    copy = tmp_path / "market"
    shutil.copytree(MARKET, copy)
    before = snapshot(copy)
    res = api.market_refresh(copy)
    assert res["changed"] is False and snapshot(copy) == before
    (island,) = res["anchors"]["islands"].values()
    assert island["members"] == 10 and 2 <= len(island["anchors"]) <= 8


def test_reuse_beats_the_users_own_model_on_new_hours():
    train = pd.read_csv(USER / "wanshouxigong_200h.csv")
    new = pd.read_csv(USER / "wanshouxigong_new_hours.csv")
    found = api.search(MARKET, data=USER / "wanshouxigong_200h.csv", target="PM2.5")
    top3 = api.reuse(MARKET, [r["id"] for r in found.single[:3]],
                     data=USER / "wanshouxigong_new_hours.csv", target="PM2.5")
    feats = [c for c in train.columns if c != "PM2.5"]
    X, y = train[feats].to_numpy(float), train["PM2.5"].to_numpy(float)
    choice = select_user_model(X, y, "regression", [], make_folds(y, "regression", 5, 0))
    own = fit_estimator(choice.estimator, X, y, "regression").predict(new[feats].to_numpy(float))
    own_rmse = float(np.sqrt(np.mean((own - new["PM2.5"]) ** 2)))
    assert top3.scores["rmse"] < 0.85 * own_rmse


def test_twenty_labelled_hours_rank_the_market_through_its_anchors():
    report = api.anchor_eval(MARKET, USER / "wanshouxigong_20h.csv", "PM2.5")
    res = api.search(MARKET, anchor_report=report)
    assert res.mode == "anchors" and len(res.single) == 10
    assert res.assessment["hope"] == "ok"
    preds = [r["predicted"] for r in res.single]
    assert preds == sorted(preds)
