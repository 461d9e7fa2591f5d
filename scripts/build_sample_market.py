"""Build sample_market/ from the shipped data subset, deterministically.

One learnware per Beijing monitoring station (PM2.5 regression from the other measurements
and the weather), with different model types, except Wanshouxigong: that station plays the
new user, whose 200 labelled hours (20 of them separately, for anchor-eval) and 1,000 other
hours to predict are written to sample_market/user/. The refresh at the end builds the index
and the anchors.
Also writes a ready-to-submit developer example to sample_market/developer/.
Reproducible: running it twice gives the same files, bit for bit (same ids, same index).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lwcli import api  # noqa: E402
from lwcli.market.manifest import manifest_from_dict  # noqa: E402

SM = ROOT / "sample_market"
DATA = SM / "data" / "beijing_air_quality_subset.csv.gz"
FEATURES = ["month", "hour", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP", "RAIN",
            "WSPM"]
TARGET = "PM2.5"
USER_STATION = "Wanshouxigong"
DEVELOPER_STATION = "Guanyuan"


def make_model(kind: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import Ridge
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "hgb":
        return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.08, random_state=seed)
    if kind == "rf":
        return RandomForestRegressor(n_estimators=25, max_depth=9, min_samples_leaf=3,
                                     random_state=seed, n_jobs=1)
    if kind == "ridge":
        return make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    if kind == "mlp":
        return make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(32, 16),
                                                            max_iter=400, random_state=seed))
    raise ValueError(kind)


KINDS = ["hgb", "rf", "ridge", "mlp"]


def manifest(station: str, kind: str) -> dict:
    return {
        "name": f"beijing-{station.lower()}-pm25-{kind}",
        "version": "1.0.0",
        "description": f"PM2.5 (ug/m3) at the {station} monitoring station, Beijing, predicted "
                       f"from the other pollutants and the weather ({kind} model).",
        "license": "CC-BY-4.0",
        "tags": ["air-quality", "beijing", "pm2.5", f"station:{station.lower()}"],
        "data_type": "table",
        "task": "regression",
        "objective": "rmse",
        "input": {"features": FEATURES},
        "output": {"dimension": 1, "names": [TARGET]},
        "model": {"format": "skops", "file": "model.skops"},
    }


def main() -> None:
    import os

    import skops.io as sio

    from lwcli.market.models import canonical_skops

    os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")   # 2026-01-01: reproducible records

    df = pd.read_csv(DATA)
    market = SM / "market"
    if market.exists():
        shutil.rmtree(market)
    api.market_init(market)
    stations = sorted(df.station.unique())
    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        i = 0
        for station in stations:
            if station in (USER_STATION, DEVELOPER_STATION):
                continue
            kind = KINDS[i % len(KINDS)]
            i += 1
            sub = df[df.station == station]
            model = make_model(kind, seed=i).fit(sub[FEATURES].to_numpy(float),
                                                 sub[TARGET].to_numpy(float))
            d = work / station
            d.mkdir()
            sub[FEATURES].to_csv(d / "train.csv", index=False)
            (d / "learnware.toml").write_text(manifest_from_dict(manifest(station, kind)).to_toml())
            sio.dump(model, d / "model.skops")
            sp = api.build_spec(d / "train.csv", model=d / "model.skops",
                                meta=d / "learnware.toml", market=market, k=100, seed=0)
            api.write_spec(sp, d / "rkme.json")
            api.pack(d / "model.skops", d / "rkme.json", d / "learnware.toml", d / "pkg.lw")
            res = api.submit(d / "pkg.lw", market)
            print(f"{res.id}  {station:14s} {kind:5s} agreement {res.qa['agreement']:.3f}")
    # the user: 200 labelled hours at a station the market has never seen, 20 of them for
    # anchor-eval, and 1,000 other hours to predict (labelled, so that reuse can be scored)
    station = df[df.station == USER_STATION]
    user = station.sample(n=200, random_state=7).sort_index()
    (SM / "user").mkdir(exist_ok=True)
    user[FEATURES + [TARGET]].to_csv(SM / "user" / "wanshouxigong_200h.csv", index=False)
    user[FEATURES].to_csv(SM / "user" / "wanshouxigong_200h_unlabelled.csv", index=False)
    user.sample(n=20, random_state=9).sort_index()[FEATURES + [TARGET]].to_csv(
        SM / "user" / "wanshouxigong_20h.csv", index=False)
    new = station.drop(user.index).sample(n=1000, random_state=8).sort_index()
    new[FEATURES + [TARGET]].to_csv(SM / "user" / "wanshouxigong_new_hours.csv", index=False)
    # a developer's ready-to-submit example
    dev = SM / "developer"
    dev.mkdir(exist_ok=True)
    sub = df[df.station == DEVELOPER_STATION]
    sub[FEATURES].to_csv(dev / "train.csv", index=False)
    model = make_model("hgb", seed=99).fit(sub[FEATURES].to_numpy(float),
                                           sub[TARGET].to_numpy(float))
    (dev / "model.skops").write_bytes(canonical_skops(sio.dumps(model)))
    (dev / "learnware.toml").write_text(manifest_from_dict(manifest(DEVELOPER_STATION, "hgb")).to_toml())
    print(api.market_refresh(market))


if __name__ == "__main__":
    main()
