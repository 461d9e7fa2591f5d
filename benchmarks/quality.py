"""Does reuse pay? The seed's experiments (sec. 5, Figures 5 and 6) on the shipped market.

Leave-one-station-out users on the PM2.5 island of ``sample_market/market``: each of the 12
Beijing stations in turn is the user; her own station's learnwares are left out of the market
(Wanshouxigong has none: the market never saw it). She labels ``n`` hours (50 ... 8,000) drawn
from 10,000 of her station's 12,000 shipped hours, several seeds per size, and every hour she
did not label is her test set (at least 4,000: the 2,000 always held out plus the rest of
the 10,000). PM2.5 errors are heavy-tailed, so a small fixed test set decides "better or
worse" by a handful of smog hours; the largest test set available keeps that noise down.
Compared, by RMSE on her test set:

- ``user``: her own model, chosen by 5-fold cross-validation (ridge / random forest /
  gradient boosting, as :func:`lwcli.engine.reuse.user_model.select_user_model`);
- ``top1``: what ``lw search`` returns first for her label-aware RKME: the 20 nearest
  learnwares in RKHS distance, re-ranked by their loss on the requirement's reduced points;
- ``top1-rkme``: the learnware with the smallest RKHS distance alone (``--rerank 0``);
- ``top3``: the three best (re-ranked), averaged;
- ``top2+user``: the two best with her model, weights by cross-validation (``with-user``);
- ``job-selector``: the mixture's members (the top 3 when the mixture has one member),
  routed per row by a selector trained on their RKMEs, no labels used;
- ``feature-augment``: the top 3's outputs as extra features of her model type;
- ``anchor-top1``: the best learnware from an anchor report on at most 100 of her rows (anchors
  chosen without her station);
- ``oracle``: the best single learnware on her test set (not attainable: the target);
- ``random``: a random learnware (mean of 5 draws).

    python benchmarks/quality.py [--quick] [--out benchmarks/results] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MARKET = ROOT / "sample_market" / "market"
DATA = ROOT / "sample_market" / "data" / "beijing_air_quality_subset.csv.gz"
FEATURES = ["month", "hour", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP", "RAIN",
            "WSPM"]
TARGET = "PM2.5"
SIZES = [50, 100, 200, 500, 1000, 2000, 5000, 8000]
SEEDS = [0, 1, 2]
TEST_ROWS = 2000
ANCHOR_ROWS = 100
METHODS = ["user", "top1", "top1-rkme", "top3", "top2+user", "job-selector", "feature-augment",
           "anchor-top1", "oracle", "random"]


def rmse(pred, y) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, float).ravel() - y) ** 2)))


class Island:
    """The PM2.5 island, loaded once per worker: learnwares, stacked specs, probe outputs."""

    def __init__(self) -> None:
        import pandas as pd

        from lwcli import api
        from lwcli.market.anchors import load_anchor_set
        from lwcli.market.index import load_index
        from lwcli.market.store import Market

        mk = Market.open(MARKET)
        iid = next(i for i, isl in mk.islands().items() if isl.key["task"] == "regression")
        self.island = mk.island(iid)
        idx = load_index(mk)
        self.ids = idx.ids(iid).tolist()
        self.stack = idx.stack(iid)
        self.names = [s["name"] for s in idx.iter_summaries(iid)]
        self.station = [n.split("-")[1] for n in self.names]
        self.learnwares = api.load_learnwares(mk, self.ids)
        aset = load_anchor_set(mk, iid)
        pos = {i: j for j, i in enumerate(aset.members)}
        self.probe_outputs = np.asarray(aset.outputs(), dtype=np.float64)[[pos[i] for i in self.ids]]
        self.data = pd.read_csv(DATA)


def station_split(data, station: str):
    """One station's hours, ``(X, y, pool)``: ``pool`` indexes the rows a user may label (all
    but ``TEST_ROWS`` always held out); fixed by the station."""
    import zlib

    d = data[data.station == station]
    rng = np.random.default_rng(zlib.crc32(station.encode()))
    pool = np.sort(rng.permutation(len(d))[TEST_ROWS:])
    return d[FEATURES].to_numpy(float), d[TARGET].to_numpy(float), pool


def run_station(args) -> list[dict]:
    """Every size and seed for one user station."""
    station, sizes, seeds = args
    from lwcli.engine.anchors import choose_anchors, default_n_anchors, distances, \
        rank_from_anchors
    from lwcli.engine.kernel import fit_metric  # noqa: F401  (import cost outside timings)
    from lwcli.engine.reuse import FeatureAugmentReuser, JobSelectorReuser, WithUserReuser
    from lwcli.engine.reuse.user_model import fit_estimator, make_folds, select_user_model
    from lwcli.engine.rkme import fit_rkme
    from lwcli.engine.search import SpecStack
    from lwcli.engine.search_pipeline import run_search

    isl = _island()
    cand = np.array([j for j, s in enumerate(isl.station) if s != station.lower()])
    X_all, y_all, pool = station_split(isl.data, station)
    # every candidate's predictions on all of the station's hours, once
    pred_all = np.stack([isl.learnwares[j].predict_values(X_all)[:, 0] for j in cand])
    sub = SpecStack(isl.stack.metric, np.asarray(isl.stack.points)[cand],
                    np.asarray(isl.stack.beta)[cand], isl.stack.self_xy[cand],
                    isl.stack.self_x[cand])
    outs = isl.probe_outputs[cand]
    med = choose_anchors(outs, "rms", default_n_anchors(len(cand)))
    D = distances(outs, outs[med.index], "rms")
    rows = []
    for n in sizes:
        for seed in seeds:
            t0 = time.perf_counter()
            rng = np.random.default_rng(1000 * seed + n)
            take = pool[rng.choice(len(pool), size=n, replace=False)]
            X, y = X_all[take], y_all[take]
            test = np.setdiff1d(np.arange(len(y_all)), take)
            Xt, yt = X_all[test], y_all[test]
            pred_t = pred_all[:, test]
            test_rmse = np.sqrt(((pred_t - yt) ** 2).mean(1))
            r = {"station": station, "n": n, "seed": seed, "candidates": len(cand)}
            # the user's own model
            folds = make_folds(y, "regression", 5, seed)
            choice = select_user_model(X, y, "regression", [], folds, random_state=seed)
            user = fit_estimator(choice.estimator, X, y, "regression")
            r["user"] = rmse(user.predict(Xt), yt)
            r["user_model"] = choice.name
            # RKME search with a label-aware requirement
            Z = np.hstack([X, y[:, None]])
            req = fit_rkme(Z, isl.island.metric, k=min(100, n), seed=seed)
            # what lw search does: rank, re-rank the best 20 by their loss, the mixture
            found = run_search(sub, req, top=3, outputs_of=lambda idx, Z: [
                isl.learnwares[cand[j]].predict_values(Z) for j in idx])
            order = found.order
            r["top1"] = float(test_rmse[order[0]])
            r["top1-rkme"] = float(test_rmse[found.rkme_order[0]])
            r["top3"] = rmse(pred_t[order[:3]].mean(0), yt)
            lw = [isl.learnwares[j] for j in cand[order[:3]]]
            wu = WithUserReuser(lw[:2], user_model=choice.estimator, cv=5,
                                random_state=seed).fit(X, y)
            r["top2+user"] = rmse(wu.predict(Xt), yt)
            r["top2+user_weights"] = [float(w) for w in wu.weights_]
            mix = found.mixture
            if len(mix.members) >= 2:
                js_lw, js_w = [isl.learnwares[j] for j in cand[mix.members]], mix.weights
            else:
                js_lw, js_w = lw, None
            js = JobSelectorReuser(js_lw, weights=js_w, random_state=seed).fit()
            r["job-selector"] = rmse(js.predict(Xt), yt)
            fa = FeatureAugmentReuser(lw, final_model=choice.estimator, cv=5,
                                      random_state=seed).fit(X, y)
            r["feature-augment"] = rmse(fa.predict(Xt), yt)
            # anchors: scores on at most 100 labelled rows, nothing else
            a_rows = take[:ANCHOR_ROWS]
            a_loss = np.sqrt(((pred_all[med.index][:, a_rows] - y_all[a_rows]) ** 2).mean(1))
            rk = rank_from_anchors(D, a_loss, med.index)
            r["anchor-top1"] = float(test_rmse[rk.order[0]])
            r["oracle"] = float(test_rmse.min())
            r["random"] = float(np.mean(test_rmse[rng.choice(len(cand), 5, replace=False)]))
            r["seconds"] = time.perf_counter() - t0
            rows.append(r)
            print(f"{station:13s} n={n:5d} seed={seed} user {r['user']:6.2f} top1 "
                  f"{r['top1']:6.2f} top2+user {r['top2+user']:6.2f} oracle {r['oracle']:6.2f} "
                  f"({r['seconds']:.1f} s)", file=sys.stderr, flush=True)
    return rows


_ISLAND = None


def _island() -> Island:
    global _ISLAND
    if _ISLAND is None:
        _ISLAND = Island()
    return _ISLAND


def stations() -> list[str]:
    import pandas as pd

    return sorted(pd.read_csv(DATA, usecols=["station"]).station.unique())


def run(station_list, sizes, seeds, jobs: int, scheduler: str | None = None) -> list[dict]:
    """Every station's rows: one piece per station through lw's executor (``jobs`` local
    processes, or the Dask cluster at ``scheduler``; the rows are the same either way)."""
    from lwcli.errors import LwError
    from lwcli.executor import open_executor

    work = [(s, sizes, seeds) for s in station_list]
    with open_executor(jobs if scheduler is None else None, scheduler) as ex:
        done = ex.run(run_station, work)
    for w, rows in zip(work, done):
        if isinstance(rows, LwError):
            raise SystemExit(f"station {w[0]}: {rows}")
    return [r for rows in done for r in rows]


def summarise(rows: list[dict]) -> dict:
    """Per size: each method's RMSE and improvement over the user's model, averaged over
    stations per seed, then mean and spread (std) over seeds."""
    out = {}
    for n in sorted({r["n"] for r in rows}):
        at = [r for r in rows if r["n"] == n]
        seeds = sorted({r["seed"] for r in at})
        per = {}
        for m in METHODS:
            rm = [np.mean([r[m] for r in at if r["seed"] == s]) for s in seeds]
            imp = [np.mean([(r["user"] - r[m]) / r["user"] for r in at if r["seed"] == s])
                   for s in seeds]
            per[m] = {"rmse": float(np.mean(rm)), "rmse_std": float(np.std(rm)),
                      "improvement": float(np.mean(imp)), "improvement_std": float(np.std(imp))}
        def gap(m):
            g = [(r["random"] - r[m]) / (r["random"] - r["oracle"]) for r in at
                 if r["random"] > r["oracle"]]
            return float(np.mean(g)) if g else float("nan")

        worse = [(r["top2+user"] - r["user"]) / r["user"] for r in at]
        out[n] = {"methods": per, "runs": len(at), "top1_gap_closed": gap("top1"),
                  "top1_rkme_gap_closed": gap("top1-rkme"),
                  "top2+user_worst_vs_user": float(np.max(worse))}
    return out


def write_report(rows, summary, out: Path, elapsed: float, quick: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / ("quality-quick.json" if quick else "quality.json")).write_text(json.dumps(
        {"rows": rows, "summary": summary, "seconds": elapsed}, indent=1) + "\n")
    if quick:
        return
    sizes = sorted(summary)
    lines = ["# Does reuse pay? RMSE of PM2.5 for leave-one-station-out users",
             "",
             f"`make bench-quality` ({elapsed / 60:.1f} min on this machine). "
             f"{len({r['station'] for r in rows})} user stations x {len(SEEDS)} seeds per "
             f"labelled size; each user's own station is left out of the market "
             f"({rows[0]['candidates']}-44 candidate learnwares); test set: every hour of her "
             "station she did not label (4,000 to 12,000). Mean over stations, then mean ± std "
             "over seeds. `top1` is what `lw search` returns first (the 20 nearest in RKHS "
             "distance, re-ranked by their loss on the requirement's reduced points); "
             "`top1-rkme` is the nearest by RKHS distance alone.", "",
             "## RMSE (µg/m³)", "",
             "| labelled rows | " + " | ".join(METHODS) + " |",
             "|---|" + "---|" * len(METHODS)]
    for n in sizes:
        m = summary[n]["methods"]
        lines.append(f"| {n} | " + " | ".join(f"{m[k]['rmse']:.1f} ± {m[k]['rmse_std']:.1f}"
                                              for k in METHODS) + " |")
    lines += ["", "## Improvement over the user's own model (1 - RMSE / RMSE_user)", "",
              "| labelled rows | " + " | ".join(METHODS[1:]) + " |",
              "|---|" + "---|" * (len(METHODS) - 1)]
    for n in sizes:
        m = summary[n]["methods"]
        lines.append(f"| {n} | " + " | ".join(
            f"{100 * m[k]['improvement']:+.1f}% ± {100 * m[k]['improvement_std']:.1f}"
            for k in METHODS[1:]) + " |")
    lines += ["", "## Top-1 against the oracle and a random learnware", "",
              "| labelled rows | random | top1-rkme | top1 | oracle | gap closed: top1-rkme | "
              "gap closed: top1 | top2+user worst run vs user |",
              "|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        s, m = summary[n], summary[n]["methods"]
        lines.append(f"| {n} | {m['random']['rmse']:.1f} | {m['top1-rkme']['rmse']:.1f} | "
                     f"{m['top1']['rmse']:.1f} | {m['oracle']['rmse']:.1f} | "
                     f"{100 * s['top1_rkme_gap_closed']:.0f}% | "
                     f"{100 * s['top1_gap_closed']:.0f}% | "
                     f"{100 * s['top2+user_worst_vs_user']:+.1f}% |")
    gaps = [summary[n]["top1_gap_closed"] for n in sizes]
    rk = [summary[n]["top1_rkme_gap_closed"] for n in sizes]
    lines += ["", f"Mean gap closed over the sizes: top1 {100 * np.mean(gaps):.0f}%, "
                  f"top1-rkme {100 * np.mean(rk):.0f}%."]
    lines += ["", "![improvement](quality_improvement.png)", "",
              "![top1](quality_top1.png)", ""]
    (out / "quality.md").write_text("\n".join(lines))
    plot(summary, out)


def plot(summary, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(summary)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for m in ("top1", "top3", "top2+user", "job-selector", "feature-augment", "anchor-top1"):
        v = [100 * summary[n]["methods"][m]["improvement"] for n in sizes]
        e = [100 * summary[n]["methods"][m]["improvement_std"] for n in sizes]
        ax.errorbar(sizes, v, yerr=e, marker="o", capsize=3, label=m)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("user's labelled rows")
    ax.set_ylabel("improvement over the user's own model (%)")
    ax.set_title("Benefit from the learnware market (cf. the seed's Figure 5)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "quality_improvement.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for m, style in (("random", "s--"), ("top1-rkme", "x:"), ("top1", "o-"), ("oracle", "^-")):
        ax.plot(sizes, [summary[n]["methods"][m]["rmse"] for n in sizes], style, label=m)
    ax.set_xscale("log")
    ax.set_xlabel("user's labelled rows")
    ax.set_ylabel("RMSE on the user's test set")
    ax.set_title("Top-1 by RKME against the best and a random learnware (cf. Figure 6)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "quality_top1.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="the quality benchmark (seed sec. 5)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--quick", action="store_true",
                    help="3 stations, 200 labelled rows, one seed (the test suite's version)")
    ap.add_argument("--jobs", type=int, default=2, help="local worker processes")
    ap.add_argument("--scheduler", default=None,
                    help="run the stations on the Dask cluster at this address instead")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.quick:
        rows = run(["Dongsi", "Huairou", "Wanshouxigong"], [200], [0], args.jobs, args.scheduler)
    else:
        rows = run(stations(), SIZES, SEEDS, args.jobs, args.scheduler)
    summary = summarise(rows)
    write_report(rows, summary, args.out, time.perf_counter() - t0, args.quick)
    return summary


if __name__ == "__main__":
    main()
