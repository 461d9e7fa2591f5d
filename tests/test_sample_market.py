"""The shipped sample market: consistent, current, reproducible bit for bit, and the user's
story in the README holds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

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
    islands = {i: d["members"] for i, d in res["anchors"]["islands"].items()}
    assert sorted(islands.values()) == [4, 44]        # 4 hospitals; 11 stations x 4 years
    names = [r["name"] for r in api.market_ls(MARKET)]
    assert len({n.split("-pm25-")[1] for n in names if "-pm25-" in n}) == 5   # model types
    assert not any("wanshouxigong" in n for n in names)                       # the user's


def test_make_sample_market_rebuilds_it_bit_for_bit(tmp_path):
    """Same files, same ids. Needs the library versions of constraints.txt (make install)."""
    built = json.loads((ROOT / "sample_market" / "BUILD.json").read_text())["built_with"]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_sample_market.py"),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    now = json.loads((tmp_path / "BUILD.json").read_text())["built_with"]
    assert now == built, "library versions differ from the committed build's"
    for part in ("market", "user", "developer"):
        fresh, committed = snapshot(tmp_path / part), snapshot(ROOT / "sample_market" / part)
        differ = sorted(k for k in set(fresh) | set(committed)
                        if fresh.get(k) != committed.get(k))
        assert not differ, f"{part}: {len(differ)} files differ, e.g. {differ[:5]}"


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
    assert top3.scores["rmse"] < 0.93 * own_rmse      # measured: 28.4 against 35.6


def test_twenty_labelled_hours_rank_the_market_through_its_anchors():
    report = api.anchor_eval(MARKET, USER / "wanshouxigong_20h.csv", "PM2.5")
    res = api.search(MARKET, anchor_report=report)
    assert res.mode == "anchors" and len(res.single) == 10
    assert res.assessment["hope"] == "ok"
    preds = [r["predicted"] for r in res.single]
    assert preds == sorted(preds)
