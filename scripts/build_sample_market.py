"""Build sample_market/ from the shipped data, deterministically (bit for bit on the same CPU model).

Two islands:
- **PM2.5 at Beijing monitoring stations** (regression from the other pollutants and the
  weather): one learnware per station and year (March to February, 2013/14 to 2016/17), five
  model types (gradient boosting, random forest, ridge, k-nearest neighbours, a small MLP) —
  44 learnwares from 11 stations. The twelfth station, Wanshouxigong, plays the new user: her
  200 labelled hours (20 of them separately, for anchor-eval) and 1,000 other hours to predict
  are written to ``user/``.
- **Heart disease at four hospitals** (classification): one learnware per hospital.

Also writes a ready-to-submit developer example to ``developer/``; the refresh at the end
builds the index and the anchors.

Reproducible: one thread everywhere and the baseline (SSE) code paths of torch, MKL and
OpenBLAS, with the library versions of constraints.txt (the script re-executes itself with
that environment when started without it). On the CPU model recorded in BUILD.json it gives
the same files and the same ids. On another CPU the data, the user's and the developer's
files, every manifest and every trained model are still the same bytes, but the RKME fits
are not: MKL's float32 kernels round differently per CPU (measured: even on one CPU,
MKL_CBWR=COMPATIBLE vs AVX2 moves reduced points by up to 87 units), and the fit's Adam
steps carry rounding-level differences to different reduced sets of the same quality.

    python scripts/build_sample_market.py [--out DIR]     # default: sample_market/
"""

from __future__ import annotations

import os
import sys

DETERMINISTIC_ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OPENBLAS_CORETYPE": "Prescott",
    "SOURCE_DATE_EPOCH": "1767225600",          # 2026-01-01: the timestamps lw records
    "PYTHONHASHSEED": "0", "LW_DEVICE": "cpu",
}
if any(os.environ.get(k) != v for k, v in DETERMINISTIC_ENV.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **DETERMINISTIC_ENV})

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lwcli import api  # noqa: E402
from lwcli.market.manifest import manifest_from_dict  # noqa: E402

DATA = ROOT / "sample_market" / "data"
FEATURES = ["month", "hour", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP", "RAIN",
            "WSPM"]
TARGET = "PM2.5"
USER_STATION = "Wanshouxigong"
DEVELOPER_STATION = "Guanyuan"
YEARS = ["2013-14", "2014-15", "2015-16", "2016-17"]
KINDS = ["hgb", "rf", "ridge", "knn", "mlp"]
HEART_COLS = "age sex cp trestbps chol fbs restecg thalach exang oldpeak slope ca thal num".split()
HEART_FEATURES = ["age", "sex", "cp", "trestbps", "thalach", "exang", "oldpeak"]
HOSPITALS = ["cleveland", "hungarian", "switzerland", "va"]


def make_model(kind: str, seed: int):
    from sklearn.ensemble import (HistGradientBoostingRegressor, RandomForestClassifier,
                                  RandomForestRegressor)
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsRegressor
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
    if kind == "knn":
        return make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=15,
                                                                   weights="distance"))
    if kind == "mlp":
        return make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(32, 16),
                                                            max_iter=300, random_state=seed))
    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    if kind == "rf-clf":
        return RandomForestClassifier(n_estimators=50, max_depth=5, random_state=seed, n_jobs=1)
    raise ValueError(kind)


def season(frame: pd.DataFrame) -> np.ndarray:
    """0 for March 2013 to February 2014, ..., 3 for March 2016 to February 2017."""
    return ((frame.year - 2013) - (frame.month < 3)).to_numpy()


def air_manifest(station: str, year: str, kind: str) -> dict:
    return {
        "name": f"beijing-{station.lower()}-{year}-pm25-{kind}",
        "version": "1.0.0",
        "description": f"PM2.5 (ug/m3) at the {station} monitoring station, Beijing, March "
                       f"{year[:4]} to February 20{year[-2:]}, predicted from the other "
                       f"pollutants and the weather ({kind} model).",
        "license": "CC-BY-4.0",
        "tags": ["air-quality", "beijing", "pm2.5", f"station:{station.lower()}",
                 f"year:{year}", f"model:{kind}"],
        "data_type": "table",
        "task": "regression",
        "objective": "rmse",
        "input": {"features": FEATURES},
        "output": {"dimension": 1, "names": [TARGET]},
        "model": {"format": "skops", "file": "model.skops"},
    }


def heart_manifest(hospital: str, kind: str) -> dict:
    return {
        "name": f"heart-{hospital}-{kind}", "version": "1.0.0", "license": "CC-BY-4.0",
        "description": f"Heart disease (angiographic, any vessel narrowed) at the {hospital} "
                       f"hospital, from age, sex, chest pain, blood pressure, heart rate, "
                       f"exercise angina and ST depression ({kind} model).",
        "tags": ["health", "heart", f"hospital:{hospital}", f"model:{kind}"],
        "data_type": "table", "task": "classification", "objective": "accuracy",
        "input": {"features": HEART_FEATURES}, "output": {"classes": ["no", "yes"]},
        "model": {"format": "skops", "file": "model.skops"},
    }


def heart_hospital(name: str) -> pd.DataFrame:
    d = pd.read_csv(DATA / "heart_disease" / f"processed.{name}.data", header=None,
                    names=HEART_COLS, na_values="?")
    d = d[HEART_FEATURES + ["num"]].dropna()
    d["disease"] = np.where(d.num > 0, "yes", "no")
    return d.drop(columns=["num"]).reset_index(drop=True)


def add_learnware(work: Path, market: Path, name: str, X: pd.DataFrame, y, meta: dict, model):
    import skops.io as sio

    d = work / name
    d.mkdir()
    model.fit(X.to_numpy(float), np.asarray(y))
    X.to_csv(d / "train.csv", index=False)
    (d / "learnware.toml").write_text(manifest_from_dict(meta).to_toml())
    sio.dump(model, d / "model.skops")
    sp = api.build_spec(d / "train.csv", model=d / "model.skops", meta=d / "learnware.toml",
                        market=market, k=100, seed=0)
    api.write_spec(sp, d / "rkme.json")
    api.pack(d / "model.skops", d / "rkme.json", d / "learnware.toml", d / "pkg.lw")
    res = api.submit(d / "pkg.lw", market)
    print(f"{res.id}  {meta['name']:44s} {res.qa['agreement_metric']} "
          f"{res.qa['agreement']:.3f}", flush=True)
    return res.id


def build(out: Path) -> None:
    import skops.io as sio
    import sklearn

    from lwcli.market.models import canonical_skops

    df = pd.read_csv(DATA / "beijing_air_quality_subset.csv.gz")
    market = out / "market"
    if market.exists():
        shutil.rmtree(market)
    api.market_init(market)
    stations = [s for s in sorted(df.station.unique()) if s != USER_STATION]
    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        for i, station in enumerate(stations):
            sub = df[df.station == station]
            for j, year in enumerate(YEARS):
                part = sub[season(sub) == j]
                kind = KINDS[(i + j) % len(KINDS)]
                add_learnware(work, market, f"{station}-{year}", part[FEATURES], part[TARGET],
                              air_manifest(station, year, kind), make_model(kind, seed=i * 4 + j))
        for k, hospital in enumerate(HOSPITALS):
            d = heart_hospital(hospital)
            kind = "logistic" if k % 2 == 0 else "rf-clf"
            add_learnware(work, market, f"heart-{hospital}", d[HEART_FEATURES], d["disease"],
                          heart_manifest(hospital, kind), make_model(kind, seed=k))
    # the user: a station the market has never seen
    station = df[df.station == USER_STATION]
    user = station.sample(n=200, random_state=7).sort_index()
    udir = out / "user"
    udir.mkdir(parents=True, exist_ok=True)
    user[FEATURES + [TARGET]].to_csv(udir / "wanshouxigong_200h.csv", index=False)
    user[FEATURES].to_csv(udir / "wanshouxigong_200h_unlabelled.csv", index=False)
    user.sample(n=20, random_state=9).sort_index()[FEATURES + [TARGET]].to_csv(
        udir / "wanshouxigong_20h.csv", index=False)
    new = station.drop(user.index).sample(n=1000, random_state=8).sort_index()
    new[FEATURES + [TARGET]].to_csv(udir / "wanshouxigong_new_hours.csv", index=False)
    # a developer's ready-to-submit example
    dev = out / "developer"
    dev.mkdir(parents=True, exist_ok=True)
    sub = df[df.station == DEVELOPER_STATION]
    sub[FEATURES].to_csv(dev / "train.csv", index=False)
    model = make_model("hgb", seed=99).fit(sub[FEATURES].to_numpy(float),
                                           sub[TARGET].to_numpy(float))
    (dev / "model.skops").write_bytes(canonical_skops(sio.dumps(model)))
    (dev / "learnware.toml").write_text(manifest_from_dict(
        {**air_manifest(DEVELOPER_STATION, "2013-17", "hgb"),
         "name": "beijing-guanyuan-pm25-hgb",
         "description": "PM2.5 at the Guanyuan station, from the other pollutants and the "
                        "weather."}).to_toml())
    print(api.market_refresh(market).to_dict())
    versions = {m: __import__(m).__version__ for m in ("numpy", "scipy", "pandas", "torch",
                                                        "skops")}
    versions["scikit-learn"] = sklearn.__version__
    (out / "BUILD.json").write_text(json.dumps(
        {"built_with": versions, "environment": DETERMINISTIC_ENV, "cpu": cpu_signature(),
         "command": "make sample-market"}, indent=1, sort_keys=True) + "\n")


def cpu_signature() -> dict:
    """The CPU the build ran on: its RKME fits are bit-for-bit reproducible on the same CPU
    model only (see the README, "Reproducing the sample market")."""
    import platform

    info = {"machine": platform.machine(), "vendor": None, "model": platform.processor() or None,
            "simd": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    info.update(vendor=fields.get("vendor_id"), model=fields.get("model name"),
                simd=[f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in flags])
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "sample_market",
                    help="folder to build into (default: sample_market/)")
    args = ap.parse_args()
    build(args.out)


if __name__ == "__main__":
    main()
