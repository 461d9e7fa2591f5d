"""Running at scale: the cron refresh, one new learnware on a large island, and batch specs on
Dask workers (``make bench-scale``; figures in ``benchmarks/results/scale.{md,json}``).

**(a) No-op refresh of a market of ``--noop`` learnwares (default 1,000,000).** A real market
directory: ``market.toml`` with one island, ``learnwares/`` holding one folder per id, and the
index and anchor generations lw writes, each recording the source digest of those ids. The
folders are empty and the index holds only its catalog: a no-op refresh never reads either
(that is what is measured; ``lw market verify`` is what reads them). Timed: ``market_refresh``
in one process (median of 3), and ``lw market refresh`` as cron runs it (a fresh process).
For comparison, what the refresh did before it recorded its source: read every learnware's
manifest and record (measured per learnware on the sample market).

**(b) One new learnware on an island of ``--island`` learnwares (default 100,000).** A
synthetic island (:mod:`benchmarks.synthetic`: real index generation, stacked specs and
sketches) with an anchor generation whose probes and outputs cover every member, as if
refreshed before. A developer then fits a real model (gradient boosting on the island's 12
features), builds its spec against the market, packs and submits it; the refresh that follows
runs that model alone on the island's stored probes and chooses the anchors again from all
the outputs. Compared with what a full refresh costs: every member's model run on the probes
(the per-model cost measured by a forced refresh of the sample market, whose 48 real models
run contained exactly as here) plus rebuilding the island's index.

**(c) Batch spec of ``--files`` files of ``--rows`` rows (default 200 x 50,000).** Rows drawn
from the shipped Beijing subset (real data; a different sample per file), written as Parquet,
specified against the sample market's PM2.5 island: in-process (the default executor), with
``--jobs 2`` and on a Dask ``LocalCluster`` of 2 worker processes (1 thread each); the specs
must be byte-identical. Also, for reference, one ``api.build_spec`` per file using every core
(what a loop of ``lw spec -o`` does).

**(d) Search on object storage:** the sample market's objects on a local S3-compatible server
against the same market on disk, after the first query filled the cache.

    python benchmarks/scale.py [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
SAMPLE = ROOT / "sample_market" / "market"
AIR = ROOT / "sample_market" / "data" / "beijing_air_quality_subset.csv.gz"
AIR_FEATURES = ["month", "hour", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP",
                "RAIN", "WSPM"]
LW = Path(sys.executable).parent / "lw"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _make_id_folders(root: Path, ids) -> float:
    t0 = time.perf_counter()
    lw = root / "learnwares"
    lw.mkdir(exist_ok=True)
    for i in ids:
        os.mkdir(lw / i)
    return time.perf_counter() - t0


def _publish_catalog_only(mk, ids) -> None:
    """An index generation holding its catalog (with the source digest) and nothing else,
    and an anchor generation recording the same source: what a no-op refresh looks at."""
    from lwcli.market.anchors import anchor_params, anchors_source
    from lwcli.market.index import INDEX_FORMAT, source_digest
    from lwcli.market.layout import ANCHORS_JSON, CATALOG
    from lwcli.market.store import publish_generation, write_file_synced

    islands = mk.islands()
    src = source_digest(islands, ids)
    name = "gen-" + src[:20]
    catalog = {"format": INDEX_FORMAT, "digest": name, "learnwares": len(ids), "source": src,
               "islands": {}}
    doc = {"format": 1, "generation": name, "params": anchor_params(), "islands": {},
           "skipped": [], "source": anchors_source(islands, ids, False, anchor_params())}
    lay = mk.layout
    with mk.locked():
        publish_generation(lay.index, name, lambda st: write_file_synced(
            st / CATALOG, json.dumps(catalog).encode()), lay.tmp)
        publish_generation(lay.anchors, name, lambda st: write_file_synced(
            st / ANCHORS_JSON, json.dumps(doc).encode()), lay.tmp)
    shutil.rmtree(lay.tmp, ignore_errors=True)


def old_noop_per_learnware(repeats: int = 3) -> float:
    """Seconds per learnware of the check a no-op refresh made before recording its source:
    every manifest and record read and hashed (``index_state``) and every manifest again for
    the anchors, on a copy of the sample market."""
    from lwcli.market.index import index_state
    from lwcli.market.store import Market

    with tempfile.TemporaryDirectory() as td:
        root = Path(td) / "m"
        shutil.copytree(SAMPLE, root)
        best = float("inf")
        for _ in range(repeats):
            mk = Market.open(root)
            t0 = time.perf_counter()
            index_state(mk)
            for i in mk.ids():
                mk.manifest(i)
            best = min(best, time.perf_counter() - t0)
        return best / len(mk.ids())


def bench_noop(n: int, work: Path) -> dict:
    from lwcli import api
    from lwcli.market.store import Island, Market, utcnow

    from synthetic import KEY, island_metric

    root = work / "noop"
    mk = Market.init(root)
    ids = [f"{i:016x}" for i in range(n)]
    with mk.locked():
        mk.add_island(Island("table-regression-synthetic0", KEY, island_metric(), utcnow(),
                             ids[0]))
    log(f"(a) {n:,} learnware folders ...")
    mkdir_s = _make_id_folders(root, ids)
    _publish_catalog_only(Market.open(root), ids)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        res = api.market_refresh(root)
        times.append(time.perf_counter() - t0)
        assert not res.changed and res.learnwares == n, res
    t0 = time.perf_counter()
    proc = subprocess.run([str(LW), "market", "refresh", "--market", str(root)],
                          capture_output=True, text=True, env=dict(os.environ, LW_DEVICE="cpu"))
    cli_s = time.perf_counter() - t0
    assert proc.returncode == 0 and "already up to date" in proc.stderr, proc.stderr
    per = old_noop_per_learnware()
    shutil.rmtree(root)
    return {"learnwares": n, "refresh_s": statistics.median(times), "refresh_runs_s": times,
            "cli_s": cli_s, "setup_mkdir_s": mkdir_s, "before_per_learnware_ms": per * 1e3,
            "before_estimate_s": per * n}


def _new_learnware(market: Path, work: Path, seed: int = 0) -> tuple[str, dict]:
    """A developer's real learnware for the synthetic island: gradient boosting on its 12
    features, spec fitted against the market, packed and submitted. Returns (id, timings)."""
    import pandas as pd
    import skops.io as sio
    from sklearn.ensemble import HistGradientBoostingRegressor

    from lwcli import api
    from lwcli.market.manifest import manifest_from_dict

    from synthetic import FEATURES, OUTPUT

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(scale=1.5, size=(2000, len(FEATURES))), columns=list(FEATURES))
    y = X.to_numpy() @ rng.normal(size=len(FEATURES)) + rng.normal(scale=0.1, size=len(X))
    d = work / "developer"
    d.mkdir()
    model = HistGradientBoostingRegressor(max_iter=50, random_state=0).fit(X, y)
    X.to_csv(d / "train.csv", index=False)
    man = {"name": "new-arrival", "version": "1.0.0", "description": "gradient boosting",
           "license": "CC0-1.0", "tags": ["new"], "data_type": "table", "task": "regression",
           "objective": "rmse", "input": {"features": list(FEATURES)},
           "output": {"dimension": 1, "names": [OUTPUT]},
           "model": {"format": "skops", "file": "model.skops"}}
    (d / "learnware.toml").write_text(manifest_from_dict(man).to_toml())
    sio.dump(model, d / "model.skops")
    t = {}
    t0 = time.perf_counter()
    spec = api.build_spec(d / "train.csv", model=d / "model.skops", meta=d / "learnware.toml",
                          market=market, k=100, seed=0)
    api.write_spec(spec, d / "rkme.json")
    api.pack(d / "model.skops", d / "rkme.json", d / "learnware.toml", d / "pkg.lw")
    t["spec_pack_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lw_id = api.submit(d / "pkg.lw", market).id
    t["submit_s"] = time.perf_counter() - t0
    return lw_id, t


def _prior_anchors(mk, iid: str, ids: list[str]) -> float:
    """An anchor generation covering every member of the synthetic island, as a previous
    refresh would have left it: probes drawn like lw's (from the island's scale), outputs of
    N smooth functions of them. Returns the seconds the anchor choice over N took."""
    from lwcli.market.anchors import (AnchorPlan, _digest, _island_anchors, anchor_params,
                                      anchors_source, publish_anchors)

    isl = mk.islands()[iid]
    rng = np.random.default_rng(1)
    d = isl.metric.n_inputs
    X = rng.normal(scale=1.5, size=(512, d)) * np.asarray(isl.metric.scales[:d])
    W = rng.normal(size=(len(ids), d)).astype(np.float32)
    outs = (W @ X.T.astype(np.float32))[:, :, None]                      # (N, P, 1)
    params = anchor_params()
    doc = {"format": 1, "params": params, "islands": {}, "skipped": [],
           "source": anchors_source(mk.islands(), ids, False, params)}
    arrays: dict = {}
    t0 = time.perf_counter()
    sha = _island_anchors(doc, arrays, isl, iid, ids, dict(zip(ids, outs)), X,
                          {"reason": "the island's first anchors", "drawn_from": len(ids)},
                          None)
    choose_s = time.perf_counter() - t0
    doc["generation"] = name = _digest({iid: ids}, params, {iid: sha})
    with mk.locked():
        publish_anchors(mk, AnchorPlan(name, doc, arrays, True, len(ids)))
    shutil.rmtree(mk.layout.tmp, ignore_errors=True)
    return choose_s


def model_run_cost() -> dict:
    """Seconds per model of a forced anchor refresh of the sample market (48 real models,
    contained, as every refresh runs them), and of its index rebuild per learnware."""
    from lwcli import api

    with tempfile.TemporaryDirectory() as td:
        root = Path(td) / "m"
        shutil.copytree(SAMPLE, root)
        t0 = time.perf_counter()
        res = api.market_refresh(root, force=True)
        total = time.perf_counter() - t0
        n = res.anchors["models_run"]
        shutil.rmtree(root / "anchors")
        t0 = time.perf_counter()
        api.market_refresh(root, force=True)        # index again + anchors from scratch
        return {"models": n, "force_refresh_s": total, "per_model_s": total / n,
                "second_run_s": time.perf_counter() - t0}


def bench_add(n: int, work: Path) -> dict:
    from lwcli import api
    from lwcli.market.store import Market

    from synthetic import build_market

    root = work / "island"
    log(f"(b) a synthetic island of {n:,} learnwares ...")
    t0 = time.perf_counter()
    mk, iid, timings = build_market(root, n)
    index_build_s = time.perf_counter() - t0
    ids = [f"{i:016x}" for i in range(n)]
    _make_id_folders(root, ids)
    choose_s = _prior_anchors(Market.open(root), iid, ids)
    before = api.market_refresh(root)
    assert not before.changed, before
    lw_id, dev = _new_learnware(root, work)
    t0 = time.perf_counter()
    res = api.market_refresh(root)
    refresh_s = time.perf_counter() - t0
    a = res.anchors
    assert not res.index_changed and a["changed"] and a["models_run"] == 1, res
    assert a["islands"][iid]["members"] == n + 1
    t0 = time.perf_counter()
    again = api.market_refresh(root)
    noop_s = time.perf_counter() - t0
    assert not again.changed
    cost = model_run_cost()
    full_s = (n + 1) * cost["per_model_s"] + index_build_s
    shutil.rmtree(root)
    return {"learnwares": n, "new": lw_id, "refresh_s": refresh_s, "models_run": 1,
            "noop_after_s": noop_s, "index_build_s": index_build_s,
            "index_timings": timings, "anchor_choice_s": choose_s, **dev,
            "model_cost": cost, "full_refresh_estimate_s": full_s,
            "fraction_of_full": refresh_s / full_s}


def _batch_files(folder: Path, files: int, rows: int) -> None:
    import pandas as pd

    air = pd.read_csv(AIR).dropna(subset=AIR_FEATURES + ["PM2.5"])
    folder.mkdir()
    for f in range(files):
        take = air.sample(n=rows, replace=len(air) < rows, random_state=f)
        take[AIR_FEATURES + ["PM2.5"]].to_parquet(folder / f"part{f:03d}.parquet", index=False)


def _digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("*.rkme.json"))}


def bench_batch(files: int, rows: int, work: Path) -> dict:
    from distributed import LocalCluster

    from lwcli import api

    data = work / "data"
    log(f"(c) {files} files of {rows:,} rows ...")
    _batch_files(data, files, rows)
    runs, digests = {}, {}

    def run(name: str, **kw) -> None:
        out = work / name
        out.mkdir()
        t0 = time.perf_counter()
        res = api.build_specs([data], out, target="PM2.5", market=SAMPLE, **kw)
        runs[name] = time.perf_counter() - t0
        assert len(res.written) == files and not res.failed, res.failed[:1]
        digests[name] = _digests(out)
        log(f"    {name}: {runs[name]:.1f} s")

    run("in-process")
    run("jobs-2", jobs=2)
    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=50) as c:
        start_s = time.perf_counter() - t0
        run("dask-2", scheduler=c.scheduler_address)
    same = digests["in-process"] == digests["jobs-2"] == digests["dask-2"]
    t0 = time.perf_counter()
    for p in sorted(data.iterdir()):
        api.build_spec(p, target="PM2.5", market=SAMPLE)
    runs["one-file loop, all cores"] = time.perf_counter() - t0
    shutil.rmtree(data)
    return {"files": files, "rows": rows, "seconds": runs, "cluster_start_s": start_s,
            "byte_identical": same,
            "speedup_dask": runs["in-process"] / runs["dask-2"],
            "speedup_jobs": runs["in-process"] / runs["jobs-2"],
            "speedup_dask_vs_loop": runs["one-file loop, all cores"] / runs["dask-2"]}


def bench_s3(work: Path, repeats: int = 15) -> dict:
    """Search the sample market on a local S3-compatible server (moto's, as the tests run it)
    against the same market on local disk, in one process, after a first query has filled
    the cache: medians of ``repeats`` queries each (each query opens the market: it reads the
    pointers afresh from the store)."""
    import s3fs

    from lwcli import api

    user = ROOT / "sample_market" / "user" / "wanshouxigong_200h.csv"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "s3_server.py"), "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                                             "LW_CACHE_DIR")}
    try:
        port = int(proc.stdout.readline().split()[1])
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                          AWS_DEFAULT_REGION="us-east-1",
                          AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
                          LW_CACHE_DIR=str(work / "cache"))
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir("lw-bench")
        for p in sorted(SAMPLE.rglob("*")):
            if p.is_file() and p.name != ".lock":
                fs.pipe_file(f"lw-bench/market/{p.relative_to(SAMPLE).as_posix()}",
                             p.read_bytes())
        url = "s3://lw-bench/market"
        spec = api.build_spec(user, target="PM2.5", market=SAMPLE)
        out = {}
        for name, where in (("local disk", SAMPLE), ("S3 (local server)", url)):
            t0 = time.perf_counter()
            first = api.search(where, spec=spec)
            first_s = time.perf_counter() - t0
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = api.search(where, spec=spec)
                times.append(time.perf_counter() - t0)
            assert res.single[0]["id"] == first.single[0]["id"]
            out[name] = {"first_s": first_s, "median_s": statistics.median(times)}
        out["ratio"] = out["S3 (local server)"]["median_s"] / out["local disk"]["median_s"]
        out["same_top1"] = True
        return out
    finally:
        proc.terminate()
        proc.wait(10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_report(res: dict, out: Path, quick: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = "scale-quick" if quick else "scale"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    if quick:
        return
    a, b, c, d = res["noop"], res["add"], res["batch"], res["s3"]
    mc = b["model_cost"]
    lines = [
        "# Running at scale", "",
        f"`make bench-scale` on {res['machine']} ({res['minutes']:.1f} min).", "",
        "## (a) No-op cron refresh", "",
        f"A market of **{a['learnwares']:,}** learnwares (one folder per id; index and anchors "
        "recording their source digest):", "",
        "| | seconds |", "|---|---|",
        f"| `market_refresh` in one process (median of 3) | {a['refresh_s']:.2f} |",
        f"| `lw market refresh` as cron runs it (new process) | {a['cli_s']:.2f} |",
        f"| before the source digest: every manifest and record read, "
        f"{a['before_per_learnware_ms']:.2f} ms each (estimate) | {a['before_estimate_s']:.0f} |",
        "", f"Target: under 5 s. **{'Met' if a['cli_s'] < 5 else 'Missed'}.**", "",
        "## (b) One new learnware on a large island", "",
        f"An island of **{b['learnwares']:,}** learnwares with anchors on 512 stored probes; "
        "a developer submits one more (gradient boosting), then the cron refresh runs:", "",
        "| | seconds |", "|---|---|",
        f"| spec + pack (developer) | {b['spec_pack_s']:.1f} |",
        f"| submit (QA: one contained model run; the island's index rewritten with the new "
        f"row) | {b['submit_s']:.1f} |",
        f"| **refresh**: index already current, 1 model run on the stored probes, anchors "
        f"chosen again over {b['learnwares'] + 1:,} | **{b['refresh_s']:.1f}** |",
        f"| the next refresh (no-op) | {b['noop_after_s']:.2f} |",
        f"| a full refresh (estimate): {b['learnwares'] + 1:,} models x "
        f"{mc['per_model_s']:.3f} s + the island's index ({b['index_build_s']:.0f} s) | "
        f"{b['full_refresh_estimate_s']:,.0f} |", "",
        f"The per-model cost is a forced refresh of the sample market ({mc['models']} real "
        f"models, contained, {mc['force_refresh_s']:.1f} s). The incremental refresh costs "
        f"**{100 * b['fraction_of_full']:.3f}%** of a full one. Target: under 1%. "
        f"**{'Met' if b['fraction_of_full'] < 0.01 else 'Missed'}.**", "",
        "## (c) Batch spec", "",
        f"{c['files']} Parquet files of {c['rows']:,} rows (Beijing, 12 features + PM2.5), "
        "`lw spec --out-dir` against the sample market:", "",
        "| executor | seconds | vs in-process |", "|---|---|---|"]
    for name, s in c["seconds"].items():
        lines.append(f"| {name} | {s:.1f} | {c['seconds']['in-process'] / s:.2f}x |")
    lines += [
        "", f"Specs byte-identical in-process, with `--jobs 2` and on Dask: "
        f"**{c['byte_identical']}**. Starting the LocalCluster took {c['cluster_start_s']:.1f} s "
        "(not counted). Target: 2 Dask workers at least 1.6x faster than in-process: "
        f"**{'met' if c['speedup_dask'] >= 1.6 else 'missed'}** ({c['speedup_dask']:.2f}x).",
        "", "## (d) Search on object storage", "",
        "`lw search --spec` of the sample market's 200-hour user, the sample market on local "
        "disk and the same objects on a local S3-compatible server (moto, single-threaded, "
        "127.0.0.1), in one process; each query opens the market (the pointers are read "
        "afresh from the store; the generations come from the cache after the first):", "",
        "| market | first query (s) | median of the next (s) |", "|---|---|---|"]
    for name in ("local disk", "S3 (local server)"):
        lines.append(f"| {name} | {d[name]['first_s']:.3f} | {d[name]['median_s']:.3f} |")
    lines += [
        "", f"S3 / local: **{d['ratio']:.2f}x**. Target: within 2x. "
        f"**{'Met' if d['ratio'] <= 2 else 'Missed'}.**", ""]
    (out / f"{stem}.md").write_text("\n".join(lines))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="running at scale (make bench-scale)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--quick", action="store_true",
                    help="10,000 / 2,000 learnwares and 6 files of 5,000 rows (the tests')")
    ap.add_argument("--noop", type=int, default=1_000_000)
    ap.add_argument("--island", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--rows", type=int, default=50_000)
    args = ap.parse_args(argv)
    if args.quick:
        args.noop, args.island, args.files, args.rows = 10_000, 2_000, 6, 5_000
    os.environ.setdefault("LW_DEVICE", "cpu")
    t0 = time.perf_counter()
    res = {"machine": f"{os.cpu_count()} cores, {platform.machine()}, Python "
                      f"{platform.python_version()}"}
    with tempfile.TemporaryDirectory(prefix="lw-scale-") as td:
        work = Path(td)
        res["noop"] = bench_noop(args.noop, work)
        res["add"] = bench_add(args.island, work)
        res["batch"] = bench_batch(args.files, args.rows, work)
        res["s3"] = bench_s3(work, 3 if args.quick else 15)
    res["minutes"] = (time.perf_counter() - t0) / 60
    write_report(res, args.out, args.quick)
    log(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1)[:3000])
    return res


if __name__ == "__main__":
    main()
