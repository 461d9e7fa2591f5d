"""lw performance benchmark: RKME generation, search at 1e3..1e6 learnwares, market open.

Writes <out>/performance.json (raw figures), <out>/performance.md (tables) and
<out>/performance_search.png (log-log plot); with ``--device cuda`` the files get a ``-cuda``
suffix. Figures are medians over repeats with min and max. Run with ``make bench``; with
``--ref-python`` (``make bench-reference``) the reference package runs on the same inputs in
the same run and the report gives ratios.

Every goal is declared once, in :data:`TARGETS`; each run checks every one of them and writes
the outcome into ``performance.json`` (``"targets"``) and the report: met / MISSED with the
measured figure, "not measured" when the run did not reach that size, and beside it the figure
of the committed run for the same device (``benchmarks/results``), so a regression shows.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lwcli.device import resolve_device  # noqa: E402
from lwcli.engine.kernel import fit_metric, mmd2  # noqa: E402
from lwcli.engine.rkme import EXACT_ERROR_ROWS as RKME_EXACT_ERROR_ROWS  # noqa: E402
from lwcli.engine.rkme import RFF_FEATURES as RKME_RFF_FEATURES  # noqa: E402
from lwcli.engine.rkme import RKME, fit_rkme  # noqa: E402
from lwcli.engine.search import (SKETCH_CANDIDATES, SKETCH_MIN_LEARNWARES, mixture_search,  # noqa: E402
                                 rank_single)
from lwcli.engine.sketch import SKETCH_PAIRS  # noqa: E402
from lwcli.market.index import island_view  # noqa: E402
from lwcli.market.layout import Layout  # noqa: E402
from lwcli.api import write_spec  # noqa: E402
from synthetic import FAMILIES, Family, build_market, requirement_spec  # noqa: E402

COMMITTED = ROOT / "benchmarks" / "results"    # the figures of the last committed run
EXACT_ROWS = 10_000          # RKME error: exact up to this many rows, else an independent RFF
ERROR_RFF = 8192
REF_TIMEOUT_S = 900


def summary(times: list[float], scale: float = 1.0) -> dict:
    return {"median": statistics.median(times) * scale, "min": min(times) * scale,
            "max": max(times) * scale, "repeats": len(times)}


def timed(fn, repeats: int, scale: float = 1.0):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return summary(times, scale), out


def data(m: int, d: int, seed: int = 0) -> np.ndarray:
    """A skewed mixture with features on very different scales (a realistic table)."""
    rng = np.random.default_rng(seed)
    comp = rng.integers(0, 5, size=m)
    centres = rng.normal(size=(5, d)) * 2
    X = centres[comp] + rng.normal(size=(m, d)) * rng.uniform(0.3, 1.5, size=d)
    return X * rng.uniform(0.01, 1000, size=d)


def rkme_error(X: np.ndarray, r: RKME, device) -> tuple[float, str]:
    """RKHS distance between an RKME and all rows: exact up to EXACT_ROWS rows, else an
    unbiased random-Fourier-feature estimate with its own frequencies (not the fit's)."""
    s = np.asarray(r.metric.scales)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
    if len(X) <= EXACT_ROWS:
        w = np.full(len(X), 1.0 / len(X))
        return float(mmd2(t(r.points / s), t(r.beta), t(X / s), t(w), r.metric.gamma)) ** 0.5, "exact"
    g = torch.Generator().manual_seed(20261127)
    W = (torch.randn(X.shape[1], ERROR_RFF, generator=g, dtype=torch.float64)
         * math.sqrt(2 * r.metric.gamma)).to(device)
    cs = torch.zeros(ERROR_RFF, dtype=torch.float64, device=device)
    sn = torch.zeros_like(cs)
    for a in range(0, len(X), 8192):
        P = t(X[a:a + 8192] / s) @ W
        cs += torch.cos(P).sum(0)
        sn += torch.sin(P).sum(0)
    P = t(r.points / s) @ W
    b = t(r.beta)
    dc, ds = b @ torch.cos(P) - cs / len(X), b @ torch.sin(P) - sn / len(X)
    return float((dc * dc + ds * ds).mean()) ** 0.5, f"rff-{ERROR_RFF}"


def _status_bytes(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def extra_peak_memory(fn) -> float | None:
    """Peak resident memory added by ``fn`` (GiB): resets the kernel's high-water mark first."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    base = _status_bytes("VmRSS:")
    fn()
    return (_status_bytes("VmHWM:") - base) / 2**30


# ------------------------------------------------------------------ the reference package

REF_SCRIPT = r"""
import json, sys, time, numpy as np
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0
t0 = time.perf_counter()
from learnware.specification import RKMETableSpecification
import_s = time.perf_counter() - t0
Xs = np.load(sys.argv[1]); gamma = float(sys.argv[2]); repeats = int(sys.argv[3])
times, mem = [], None
for r in range(repeats):
    spec = RKMETableSpecification(gamma=gamma, cuda_idx=-1)
    if r == repeats - 1:
        open("/proc/self/clear_refs", "w").write("5"); base = status("VmRSS:")
    t0 = time.perf_counter()
    spec.generate_stat_spec_from_data(X=Xs, K=100)
    times.append(time.perf_counter() - t0)
    if r == repeats - 1:
        mem = (status("VmHWM:") - base) / 2**30
np.save(sys.argv[4], np.asarray(spec.get_z(), dtype=np.float64))
np.save(sys.argv[5], np.asarray(spec.get_beta(), dtype=np.float64).ravel())
print(json.dumps({"times": times, "extra_peak_gib": mem, "import_s": import_s}))
"""


REF_SEARCH_SCRIPT = r"""
import json, sys, time, numpy as np, torch
t0 = time.perf_counter()
from learnware.learnware import Learnware
from learnware.market.base import BaseUserInfo
from learnware.market.easy.searcher import EasyStatSearcher
from learnware.specification import RKMETableSpecification, Specification
import_s = time.perf_counter() - t0
P, B = np.load(sys.argv[1]), np.load(sys.argv[2])
U, bu = np.load(sys.argv[3]), np.load(sys.argv[4])
gamma, repeats = float(sys.argv[5]), int(sys.argv[6])
def rkme(z, b):
    r = RKMETableSpecification(gamma=gamma, cuda_idx=-1)
    r.z = torch.from_numpy(np.asarray(z, dtype=np.float64))
    r.beta = torch.from_numpy(np.asarray(b, dtype=np.float64).reshape(1, -1))
    r.num_points = len(b)
    return r
lws = [Learnware(str(i), {}, Specification(stat_spec={"RKMETableSpecification": rkme(P[i], B[i])}),
                 "") for i in range(len(P))]
user = BaseUserInfo(stat_info={"RKMETableSpecification": rkme(U, bu)})
searcher = EasyStatSearcher(organizer=None)
searcher.stat_spec_type = "RKMETableSpecification"
single, full = [], []
for _ in range(repeats):
    t0 = time.perf_counter()
    dists, ranked = searcher._search_by_rkme_spec_single(lws, user.stat_info["RKMETableSpecification"])
    single.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    searcher(lws, user, max_search_num=5, search_method="greedy")
    full.append(time.perf_counter() - t0)
print(json.dumps({"single": single, "with_mixture": full, "import_s": import_s,
                  "top10": [int(l.id) for l in ranked[:10]]}))
"""


def run_reference_search(ref_python: str, stack, user, repeats: int, td: Path) -> dict:
    """The reference's EasyStatSearcher (single ranking; and its whole search with the greedy
    mixture) over the same stacked specifications, in scaled coordinates, same gamma."""
    np.save(td / "P.npy", np.asarray(stack.points))
    np.save(td / "B.npy", np.asarray(stack.beta))
    np.save(td / "U.npy", user.points / np.asarray(user.metric.scales))
    np.save(td / "bu.npy", user.beta)
    (td / "refsearch.py").write_text(REF_SEARCH_SCRIPT)
    try:
        out = subprocess.run([ref_python, str(td / "refsearch.py")] +
                             [str(td / f) for f in ("P.npy", "B.npy", "U.npy", "bu.npy")] +
                             [repr(stack.metric.gamma), str(repeats)], capture_output=True,
                             text=True, check=True, timeout=REF_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {REF_TIMEOUT_S} s"}
    except subprocess.CalledProcessError as exc:
        return {"error": (exc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {"single_ms": summary(got["single"], 1e3),
            "with_mixture_ms": summary(got["with_mixture"], 1e3),
            "import_s": got["import_s"], "top10": got["top10"]}


def run_reference(ref_python: str, X: np.ndarray, metric, repeats: int, td: Path) -> dict:
    s = np.asarray(metric.scales)
    np.save(td / "xs.npy", (X / s).astype(np.float32))
    (td / "ref.py").write_text(REF_SCRIPT)
    try:
        out = subprocess.run([ref_python, str(td / "ref.py"), str(td / "xs.npy"),
                              repr(metric.gamma), str(repeats), str(td / "z.npy"),
                              str(td / "b.npy")], capture_output=True, text=True, check=True,
                             timeout=REF_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {REF_TIMEOUT_S} s"}
    except subprocess.CalledProcessError as exc:
        return {"error": (exc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    got = json.loads(out.stdout.strip().splitlines()[-1])
    z, b = np.load(td / "z.npy"), np.load(td / "b.npy")
    bp = np.clip(b, 0, None)
    rk = RKME(beta=bp / bp.sum(), points=z * s, metric=metric, n_rows=len(X), approx_error=0.0)
    err, how = rkme_error(X, rk, torch.device("cpu"))
    return {"time_s": summary(got["times"]), "extra_peak_gib": got["extra_peak_gib"],
            "error": err, "error_method": how, "beta_negative_mass": float(-b[b < 0].sum()),
            "import_s": got["import_s"]}


# ------------------------------------------------------------------ RKME generation

def bench_rkme(device, sizes, repeats, ref_python=None):
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for m, d in sizes:
            X = data(m, d)
            metric = fit_metric(X)
            fit_rkme(X[:2000], metric, k=100, device=device)  # warm-up
            reps = repeats if m < 1_000_000 else max(1, min(repeats, 3))
            stats, r = timed(lambda: fit_rkme(X, metric, k=100, seed=0, device=device), reps)
            if device.type == "cpu":
                mem = extra_peak_memory(lambda: fit_rkme(X, metric, k=100, seed=0, device=device))
            else:                   # on a GPU: peak device memory of one fit
                torch.cuda.reset_peak_memory_stats(device)
                fit_rkme(X, metric, k=100, seed=0, device=device)
                mem = torch.cuda.max_memory_allocated(device) / 2**30
            err, how = rkme_error(X, r, device)
            row = {"rows": m, "features": d, "k": 100, "time_s": stats, "extra_peak_gib": mem,
                   "error": err, "error_method": how, "stored_error": r.approx_error,
                   "stored_error_method": r.fit_info["error_estimate"]}
            msg = f"rkme {m}x{d}: {stats['median']:.3f} s, error {err:.4f} ({how})"
            if ref_python:
                # the reference is single-threaded numpy: one run at 1e6 rows, at most 3 below
                ref_reps = 1 if m >= 1_000_000 else min(reps, 3)
                row["reference"] = run_reference(ref_python, X, metric, ref_reps, Path(td))
                ref = row["reference"]
                msg += (f"; reference {ref['time_s']['median']:.3f} s, error {ref['error']:.4f}"
                        if "time_s" in ref else f"; reference: {ref['error']}")
            rows.append(row)
            print(msg, flush=True)
    return rows


# ------------------------------------------------------------------ search at scale

OPEN_SCRIPT = r"""
import json, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
t0 = time.perf_counter()
from lwcli.market.store import Market
from lwcli.market.index import load_index
import_s = time.perf_counter() - t0
before = rss()
t0 = time.perf_counter()
mk = Market.open(sys.argv[1])
idx = load_index(mk)
for iid in idx.islands():
    idx.ids(iid); idx.stack(iid); idx.sketch(iid)
open_s = time.perf_counter() - t0
print(json.dumps({"import_s": import_s, "open_s": open_s, "rss_bytes": rss(),
                  "rss_added_bytes": rss() - before}))
"""


def bench_open(root: Path, repeats: int) -> dict:
    runs = [json.loads(subprocess.run([sys.executable, "-c", OPEN_SCRIPT, str(root)],
                                      capture_output=True, text=True, check=True,
                                      cwd=ROOT).stdout) for _ in range(repeats)]
    return {"open_s": summary([r["open_s"] for r in runs]),
            "rss_gib": max(r["rss_bytes"] for r in runs) / 2**30,
            "rss_added_gib": max(r["rss_added_bytes"] for r in runs) / 2**30,
            "index_bytes": sum(p.stat().st_size for p in Layout(root).index.rglob("*")
                               if p.is_file())}


def bench_process(root: Path, specs: dict, repeats: int) -> dict | None:
    lw = Path(sys.executable).parent / "lw"
    if not lw.exists():
        return None
    out = {}
    for mode, spec in specs.items():
        cmd = [str(lw), "search", "--market", str(root), "--spec", str(spec), "--json",
               "--top", "10", "--device", "cpu"] + (["--rerank", "0"] if mode == "xy" else [])
        subprocess.run(cmd, capture_output=True, check=True)       # page cache warm
        out[mode], res = timed(lambda: subprocess.run(cmd, capture_output=True, check=True),
                               repeats)
        out[mode]["method"] = json.loads(res.stdout)["searched"]["method"]
    return out


def recall_at(exact_order, approx_order, k=10) -> float:
    return len(set(exact_order[:k].tolist()) & set(approx_order[:k].tolist())) / k


def sketch_recall(stack, sketch, fam, device, queries: int) -> tuple[dict, list[float]]:
    """Recall@10 of sketch search against exact search per query family and mode (mean,
    worst, queries), and the exact searches' times (s)."""
    recall, exact_times = {}, []
    for f in FAMILIES:
        for mode in ("xy", "x"):
            vals = []
            for q in range(queries):
                u = fam.query(f, q)
                u = u if mode == "xy" else u.input_part()
                t = time.perf_counter()
                ex = rank_single(stack, u, device, keep=10)
                exact_times.append(time.perf_counter() - t)
                ap = rank_single(stack, u, device, keep=10, sketch=sketch)
                vals.append(recall_at(ex.order, ap.order))
            recall[f"{f}/{mode}"] = {"mean": float(np.mean(vals)), "min": float(np.min(vals)),
                                     "queries": len(vals)}
    return recall, exact_times


REF_SEARCH_MAX = 10_000      # the reference scans learnwares in a Python loop: larger islands
                             # would dominate the run's time without adding information


def bench_search_size(n: int, device, work: Path, repeats: int, queries: int,
                      ref_python: str | None = None) -> dict:
    t0 = time.perf_counter()
    mk, iid, build = build_market(work / f"market-{n}", n, device=device)
    build["total_s"] = time.perf_counter() - t0
    root = mk.root
    row = {"learnwares": n, "k": 100, "dim": 13, "build": build,
           "open": bench_open(root, repeats)}
    view = island_view(mk, iid, device)
    stack, sketch = view.stack, view.sketch
    fam = Family(n)
    user = fam.query("member", 0)
    exact_reps = repeats * 4 if n <= 10_000 else (repeats if n <= 100_000 else 0)
    run = lambda **kw: rank_single(stack, user, device, keep=16, **kw)  # noqa: E731
    run()                                                                 # warm-up, page cache
    if exact_reps:
        row["exact_ms"], rk = timed(run, exact_reps, 1e3)
        row["exact_mixture_ms"], _ = timed(lambda: mixture_search(stack, user, run(),
                                                                  device=device), exact_reps, 1e3)
    run(sketch=sketch)
    sk_reps = repeats * 4 if n <= 100_000 else repeats * 2
    row["sketch_ms"], _ = timed(lambda: run(sketch=sketch), sk_reps, 1e3)
    row["sketch_mixture_ms"], _ = timed(lambda: mixture_search(stack, user, run(sketch=sketch),
                                                               device=device), sk_reps, 1e3)
    if n >= 10_000:
        row["recall_at_10"], exact_times = sketch_recall(stack, sketch, fam, device, queries)
        if not exact_reps:
            row["exact_ms"] = summary(exact_times, 1e3)
    if ref_python and n <= REF_SEARCH_MAX:
        with tempfile.TemporaryDirectory() as td:
            ref = run_reference_search(ref_python, stack, user, 3 if n <= 1_000 else 1, Path(td))
        if "top10" in ref:
            ours = rank_single(stack, user, device, keep=10).order.tolist()
            ref["top10_agreement"] = len(set(ours) & set(ref.pop("top10"))) / 10
        row["reference"] = ref
    with tempfile.TemporaryDirectory() as td:
        specs = {"xy": Path(td) / "xy.json", "x": Path(td) / "x.json"}
        write_spec(requirement_spec(user, iid), specs["xy"])
        write_spec(requirement_spec(user.input_part(), iid), specs["x"])
        row["process_s"] = bench_process(root, specs, repeats)
    del view, stack, sketch
    shutil.rmtree(root, ignore_errors=True)
    msg = (f"search {n}: exact {row['exact_ms']['median']:.1f} ms, sketch "
           f"{row['sketch_ms']['median']:.1f} ms, open {row['open']['open_s']['median']*1e3:.0f} ms"
           f" / {row['open']['rss_gib']:.2f} GiB")
    if row["process_s"]:
        msg += f", lw search {row['process_s']['x']['median']:.2f} s"
    if "recall_at_10" in row:
        msg += f", recall@10 min {min(v['min'] for v in row['recall_at_10'].values()):.2f}"
    print(msg, flush=True)
    return row


# ------------------------------------------------------------------ report

def _mmm(s, fmt="{:.2f}") -> str:
    return f"{fmt.format(s['median'])} [{fmt.format(s['min'])}, {fmt.format(s['max'])}]"


def plot(res, path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:            # a bare GPU machine: the tables still get written
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["search"]
    n = [r["learnwares"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.loglog(n, [r["exact_ms"]["median"] for r in rows], "o-", label="exact, single ranking")
    ax.loglog(n, [r["sketch_ms"]["median"] for r in rows], "s-", label="sketch, single ranking")
    ax.loglog(n, [r["sketch_mixture_ms"]["median"] for r in rows], "^--",
              label="sketch, with mixture")
    ax.loglog(n, [r["open"]["open_s"]["median"] * 1e3 for r in rows], "d:", label="market open")
    if all(r.get("process_s") for r in rows):
        ax.loglog(n, [r["process_s"]["x"]["median"] * 1e3 for r in rows], "v-.",
                  label="whole `lw search --json` process")
    refs, when = _reference_search(res)
    if refs:
        ax.loglog([r["learnwares"] for r in refs],
                  [r["reference"]["with_mixture_ms"]["median"] for r in refs], "kx-", ms=8,
                  label=f"reference (learnware 0.4.0.post1), with mixture, {when}")
    ax.set_xlabel("learnwares on the island")
    ax.set_ylabel("milliseconds (median)")
    ax.set_title(f"lw search latency, {res['device']}"
                 f"{' (' + res['gpu'] + ')' if res.get('gpu') else ''}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _reference_search(res: dict) -> tuple[list[dict], str]:
    """Search rows with the reference's figures: this run's, else the committed CPU run's
    (the reference runs on the CPU only)."""
    refs = [r for r in res["search"] if "single_ms" in r.get("reference", {})]
    if refs:
        return refs, "same run"
    committed = load_committed("cpu") or {"search": []}
    refs = [r for r in committed["search"] if "single_ms" in r.get("reference", {})]
    return refs, f"committed run of {committed.get('date')}"


def write_md(res, path: Path, png: str | None) -> None:
    """The Markdown report of a run: one section per part of the benchmark, then the targets."""
    L = ["# lw performance", "",
         f"Machine: {res['machine']}; device {res['device']}"
         f"{' (' + res['gpu'] + ')' if res.get('gpu') else ''}; torch {res['torch']}; "
         f"{res['date']}. Written by `benchmarks/bench.py` in {res['wall_s'] / 60:.1f} min.",
         "Figures are medians over repeats, with [min, max].", ""]
    L += _md_rkme(res) + _md_search(res) + _md_reference_search(res) + _md_recall(res)
    L += _md_open(res)
    L += ["", f"![search latency]({png})" if png else "(no plot: matplotlib is not installed)", ""]
    if res.get("help_s"):
        h = res["help_s"]
        L += ["## CLI start-up", "", f"`lw --help`: {_mmm(h, '{:.3f}')} s (torch is not imported).",
              ""]
    L += _md_targets(res) + _md_small_rkme(res)
    path.write_text("\n".join(L) + "\n")


def _md_rkme(res) -> list[str]:
    gpu = res["device"] != "cpu"
    L = ["## RKME generation (K = 100)", "",
         "Error: the RKHS distance between the reduced set and all rows, exact up to "
         f"{EXACT_ROWS:,} rows, above that an unbiased random-Fourier-feature estimate "
         f"({ERROR_RFF:,} frequencies of its own).", ""]
    ref = any("reference" in r for r in res["rkme"])
    head = (f"| rows x features | time (s) | {'peak GPU memory' if gpu else 'extra peak memory'} "
            "(GiB) | error |")
    sep = "|---|---|---|---|"
    if ref:
        head += " reference time (s) | reference peak (GiB) | reference error | speed-up | error ratio |"
        sep += "---|---|---|---|---|"
    L += [head, sep]
    for r in res["rkme"]:
        mem = "n/a" if r["extra_peak_gib"] is None else f"{r['extra_peak_gib']:.2f}"
        line = (f"| {r['rows']:,} x {r['features']} | {_mmm(r['time_s'], '{:.3f}')} | {mem} | "
                f"{r['error']:.4f} ({r['error_method']}) |")
        if ref:
            rf = r.get("reference", {})
            if "time_s" in rf:
                rm = "n/a" if rf["extra_peak_gib"] is None else f"{rf['extra_peak_gib']:.2f}"
                line += (f" {_mmm(rf['time_s'], '{:.3f}')} | {rm} | {rf['error']:.4f} | "
                         f"{rf['time_s']['median'] / r['time_s']['median']:.1f}x | "
                         f"{rf['error'] / r['error']:.1f}x |")
            else:
                line += f" {rf.get('error', 'not run')} | | | | |"
        L.append(line)
    if ref:
        L += ["", "Side by side in one run: the reference (`learnware` 0.4.0.post1, "
              "`RKMETableSpecification`, CPU) fits the same rows, already scaled by lw's metric, "
              "with lw's gamma, so both errors are under the same kernel. Speed-up and error "
              "ratio are reference / lw."]
    return L


def _search_limit(res, n: int) -> str:
    """The search target at ``n`` learnwares that applies on this run's device, or ""."""
    kind = _device_kind(res)
    t = next((t for t in TARGETS if t.key.startswith(f"search_{n}_") and t.device == kind),
             None)
    return f"{t.limit:g}" if t else ""


def _md_search(res) -> list[str]:
    L = ["", "## Search in one island (K = 100 per learnware, 13 coordinates, requirement "
         "K = 100)", "",
         f"Synthetic islands (`benchmarks/synthetic.py`): real market directories written by "
         f"lw's own index writer. Sketch index: {SKETCH_PAIRS} sin/cos pairs per mode, "
         f"{SKETCH_CANDIDATES:,} shortlisted learnwares re-ranked by exact MMD; lw uses it by "
         f"default above {SKETCH_MIN_LEARNWARES:,} learnwares. In-process: the index is open "
         "and its pages are in the page cache.", "",
         "| learnwares | exact single (ms) | exact + mixture (ms) | sketch single (ms) | "
         "sketch + mixture (ms) | target (ms) |", "|---|---|---|---|---|---|"]
    for r in res["search"]:
        ex = r["exact_ms"]
        em = _mmm(r["exact_mixture_ms"]) if "exact_mixture_ms" in r else "not run"
        L.append(f"| {r['learnwares']:,} | {_mmm(ex)} | {em} | {_mmm(r['sketch_ms'])} | "
                 f"{_mmm(r['sketch_mixture_ms'])} | {_search_limit(res, r['learnwares'])} |")
    L += ["", "Exact single ranking at 1,000,000: timed over the recall queries below (one each)."]
    return L


def _md_reference_search(res) -> list[str]:
    refs = [r for r in res["search"] if "reference" in r]
    if not refs:
        return []
    L = ["", "### Side by side with the reference (same stacked specifications, same gamma, "
         "same run)", "",
         "The reference's `EasyStatSearcher` (learnware 0.4.0.post1, CPU): its single "
         "ranking (`_search_by_rkme_spec_single`, a Python loop over learnwares) and its "
         "whole search with the greedy mixture. Ratios are reference / lw, against lw's "
         "exact search and, from 100,000 learnwares on, the sketch search it uses there.", "",
         "| learnwares | reference single (ms) | reference with mixture (ms) | lw single (ms) "
         "| lw with mixture (ms) | single speed-up | with mixture speed-up | top-10 agreement |",
         "|---|---|---|---|---|---|---|---|"]
    for r in refs:
        rf = r["reference"]
        if "single_ms" not in rf:
            L.append(f"| {r['learnwares']:,} | {rf.get('error')} | | | | | | |")
            continue
        ls, lm = r["exact_ms"]["median"], r["exact_mixture_ms"]["median"]
        L.append(f"| {r['learnwares']:,} | {_mmm(rf['single_ms'], '{:.1f}')} | "
                 f"{_mmm(rf['with_mixture_ms'], '{:.1f}')} | {ls:.2f} | {lm:.2f} | "
                 f"{rf['single_ms']['median'] / ls:.0f}x | "
                 f"{rf['with_mixture_ms']['median'] / lm:.0f}x | "
                 f"{rf['top10_agreement']:.1f} |")
    r1, big = refs[0], _search_row(res, 1_000_000)
    if "single_ms" in r1["reference"] and big is not None:
        L += ["", f"lw searches 1,000,000 learnwares (sketch, with mixture) in "
              f"{big['sketch_mixture_ms']['median']:.0f} ms; the reference searches "
              f"{r1['learnwares']:,} in {r1['reference']['with_mixture_ms']['median']:.0f} ms "
              f"(its import alone: {r1['reference']['import_s']:.1f} s)."]
    return L


def _md_recall(res) -> list[str]:
    L = ["", "### Recall@10 of sketch search against exact search", "",
         "Mean [worst query] share of the exact top 10 that the sketch search returns, per "
         "query family (`member`: a learnware's own data, perturbed; `mixture`: half from each "
         "of two related learnwares; `novel`: a new learnware of a known group) and mode "
         "(`xy`: labelled requirement, `x`: inputs only).", ""]
    rec_rows = [r for r in res["search"] if "recall_at_10" in r]
    if rec_rows:
        keys = list(rec_rows[0]["recall_at_10"])
        L += ["| learnwares | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for r in rec_rows:
            rc = r["recall_at_10"]
            L.append(f"| {r['learnwares']:,} | " + " | ".join(
                f"{rc[k]['mean']:.3f} [{rc[k]['min']:.1f}]" for k in keys) + " |")
    return L


def _md_open(res) -> list[str]:
    L = ["", "## Market open, index size and whole-process search", "",
         "Open: `Market.open` + the index catalog + memory-mapping the island's ids, stack and "
         "sketch, in a fresh process (after imports). Resident: the process's RSS after opening.",
         "Whole process: `lw search --market M --spec REQ --json --top 10`, from start to "
         "output (interpreter start and imports included). A labelled (`xy`) requirement runs "
         "with `--rerank 0`: the synthetic learnwares have no models to run; an inputs-only "
         "(`x`) requirement never re-ranks.", "",
         "| learnwares | open (ms) | resident after open (GiB) | index on disk (GiB) | "
         "index build (s) | lw search, x (s) | lw search, xy (s) | method |",
         "|---|---|---|---|---|---|---|---|"]
    for r in res["search"]:
        o, p = r["open"], r.get("process_s")
        px = _mmm(p["x"]) if p else "n/a"
        pxy = _mmm(p["xy"]) if p else "n/a"
        ms = {k: (v * 1e3 if k != "repeats" else v) for k, v in o["open_s"].items()}
        L.append(f"| {r['learnwares']:,} | {_mmm(ms, '{:.1f}')} | "
                 f"{o['rss_gib']:.3f} | {o['index_bytes'] / 2**30:.2f} | "
                 f"{r['build']['total_s']:.1f} | {px} | {pxy} | "
                 f"{p['x']['method'] if p else ''} |")
    return L


def _md_targets(res) -> list[str]:
    L = ["## Targets", "",
         "Every target `benchmarks/bench.py` declares, checked on this run; \"committed run\" is "
         "the figure in the committed results for the same device.", "",
         "| target | limit | measured | status | committed run |", "|---|---|---|---|---|"]
    for t in res["targets"]:
        L.append(f"| {t['what']} ({t['device']}) | {t['op']} {_fig(t['limit'], t['unit'])} | "
                 f"{_fig(t['measured'], t['unit'])} | {t['status']} | "
                 f"{_fig(t['committed'], t['unit'])} |")
    return L


def _md_small_rkme(res) -> list[str]:
    """Why small RKME fits are not 2x faster than the reference, where a run shows it."""
    small = [r for r in res["rkme"] if "time_s" in r.get("reference", {})
             and r["reference"]["time_s"]["median"] < 2 * r["time_s"]["median"]]
    if not small:
        return []
    fit = inspect.signature(fit_rkme).parameters
    alternations, steps = fit["n_alternations"].default, fit["steps"].default
    sizes = ", ".join(f"{r['rows']:,} x {r['features']}" for r in small)
    return ["", f"Where RKME generation is not 2x faster than the reference ({sizes}): what "
            "bounds lw on few rows is fixed per-fit work the reference does not do: "
            f"{alternations * steps} Adam steps on the reduced points and {alternations + 1} "
            "exact active-set QP solves for beta (small linear solves, Python-overhead bound "
            f"at K = 100), then measuring the fit's own error (exact up to "
            f"{RKME_EXACT_ERROR_ROWS:,} rows, {RKME_RFF_FEATURES:,} random features above). "
            "That work is what buys the lower error column at the same K; where the rows "
            "dominate, the speed-up column shows the difference."]


# ------------------------------------------------------------------ targets

@dataclass(frozen=True)
class Target:
    """One goal. ``figure(res)`` is what a run ``res`` measured (None: not measured there);
    it must be ``op`` (``"<"``, ``">="`` or ``">"``) ``limit``. ``device``: where the goal
    applies, ``"cpu"``, ``"cuda"`` or ``"any"``."""

    key: str
    what: str
    device: str
    op: str
    limit: float
    unit: str
    figure: Callable[[dict], "float | None"]


def _search_row(res: dict, n: int) -> dict | None:
    return next((r for r in res.get("search") or [] if r["learnwares"] == n), None)


def _search_ms(n: int) -> Callable[[dict], "float | None"]:
    """Median single ranking at ``n`` learnwares, by the method lw uses there by default."""
    key = "sketch_ms" if n > SKETCH_MIN_LEARNWARES else "exact_ms"

    def figure(res: dict) -> float | None:
        r = _search_row(res, n)
        return r[key]["median"] if r and key in r else None
    return figure


def _worst_recall_1e6(res: dict) -> float | None:
    r = _search_row(res, 1_000_000)
    return min(v["mean"] for v in r["recall_at_10"].values()) if r and "recall_at_10" in r \
        else None


def _process_10k_s(res: dict) -> float | None:
    r = _search_row(res, 10_000)
    p = r.get("process_s") if r else None
    return max(v["median"] for v in p.values() if isinstance(v, dict)) if p else None


def _open_1e6(field: str) -> Callable[[dict], "float | None"]:
    def figure(res: dict) -> float | None:
        r = _search_row(res, 1_000_000)
        return None if r is None else (r["open"]["open_s"]["median"] if field == "s"
                                       else r["open"]["rss_gib"])
    return figure


def _rkme_1e6x50(field: str) -> Callable[[dict], "float | None"]:
    def figure(res: dict) -> float | None:
        r = next((r for r in res.get("rkme") or [] if (r["rows"], r["features"]) ==
                  (1_000_000, 50)), None)
        return None if r is None else (r["time_s"]["median"] if field == "s"
                                       else r["extra_peak_gib"])
    return figure


def _vs_reference(ratio: Callable[[dict, dict], float]) -> Callable[[dict], "float | None"]:
    """The smallest ``ratio(row, reference)`` over the RKME sizes the reference ran."""
    def figure(res: dict) -> float | None:
        got = [ratio(r, r["reference"]) for r in res.get("rkme") or []
               if "time_s" in r.get("reference", {})]
        return min(got) if got else None
    return figure


TARGETS = (
    *(Target(f"search_{n}_ms", f"search {n:,} "
             f"({'sketch' if n > SKETCH_MIN_LEARNWARES else 'exact'})", "cpu", "<", lim, "ms",
             _search_ms(n))
      for n, lim in ((1_000, 10), (10_000, 100), (100_000, 1_000), (1_000_000, 300))),
    Target("search_1000000_ms_gpu", "GPU search 1,000,000 (sketch)", "cuda", "<", 20, "ms",
           _search_ms(1_000_000)),
    Target("recall_1000000", "recall@10 at 1,000,000, worst family mean", "any", ">=", 0.99,
           "", _worst_recall_1e6),
    Target("process_10000_s", "whole lw search at 10,000 (slower of x, xy)", "any", "<", 2.5,
           "s", _process_10k_s),
    Target("open_1000000_s", "market open at 1,000,000", "any", "<", 1.0, "s", _open_1e6("s")),
    Target("open_1000000_gib", "resident after market open at 1,000,000", "any", "<", 4.0,
           "GiB", _open_1e6("gib")),
    Target("rkme_1e6x50_s", "RKME 1e6 x 50", "cpu", "<", 30, "s", _rkme_1e6x50("s")),
    Target("rkme_1e6x50_s_gpu", "RKME 1e6 x 50 on the GPU", "cuda", "<", 2.0, "s",
           _rkme_1e6x50("s")),
    Target("rkme_1e6x50_gib", "RKME 1e6 x 50, extra peak memory", "cpu", "<", 2.0, "GiB",
           _rkme_1e6x50("gib")),
    Target("rkme_reference_speedup", "RKME speed-up over the reference, smallest over sizes",
           "any", ">=", 2, "x",
           _vs_reference(lambda r, rf: rf["time_s"]["median"] / r["time_s"]["median"])),
    Target("rkme_reference_error_ratio", "RKME error ratio reference / lw, smallest over sizes",
           "any", ">", 1, "x", _vs_reference(lambda r, rf: rf["error"] / r["error"])),
)
_OPS = {"<": lambda a, b: a < b, ">=": lambda a, b: a >= b, ">": lambda a, b: a > b}


def _device_kind(res: dict) -> str:
    return "cpu" if res["device"] == "cpu" else "cuda"


def load_committed(device_kind: str, folder: Path = COMMITTED) -> dict | None:
    """The committed run's results for ``device_kind`` (``"cpu"`` or ``"cuda"``), or None."""
    path = folder / f"performance{'' if device_kind == 'cpu' else '-cuda'}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def check_targets(res: dict, committed: dict | None = None) -> list[dict]:
    """Every target of :data:`TARGETS`, checked against the run ``res``: its limit, the
    measured figure and a status (``met``, ``MISSED``, ``not measured`` where the run did not
    reach that size, ``other device``), with the figure of the ``committed`` run beside it."""
    out = []
    for t in TARGETS:
        applies = t.device in ("any", _device_kind(res))
        got = t.figure(res) if applies else None
        status = ("other device" if not applies else "not measured" if got is None
                  else "met" if _OPS[t.op](got, t.limit) else "MISSED")
        out.append({"key": t.key, "what": t.what, "device": t.device, "op": t.op,
                    "limit": t.limit, "unit": t.unit, "measured": got, "status": status,
                    "committed": t.figure(committed) if committed and applies else None})
    return out


def _fig(v: float | None, unit: str) -> str:
    return "n/a" if v is None else f"{v:.4g}{' ' + unit if unit else ''}"


def verdict_line(t: dict) -> str:
    """One target's outcome as a line of text."""
    line = (f"{t['what']}: {_fig(t['measured'], t['unit'])} vs {t['op']} "
            f"{_fig(t['limit'], t['unit'])}: {t['status']}")
    return line + (f" (committed run: {_fig(t['committed'], t['unit'])})"
                   if t["committed"] is not None else "")


def bench_help(repeats):
    lw = Path(sys.executable).parent / "lw"
    if not lw.exists():            # lw not installed in this interpreter (a bare GPU machine)
        return None
    stats, _ = timed(lambda: subprocess.run([str(lw), "--help"], capture_output=True, check=True),
                     repeats)
    return stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--queries", type=int, default=4, help="recall queries per family and mode")
    ap.add_argument("--ref-python", help="the reference package's interpreter (.venv-ref)")
    ap.add_argument("--work", help="scratch folder for the synthetic markets (default: a temp "
                                   "folder; the 1e6 island needs ~10 GiB)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--skip-rkme", action="store_true")
    ap.add_argument("--render", help="only rewrite the report and plot from this JSON")
    a = ap.parse_args()
    if a.render:
        res = json.loads(Path(a.render).read_text())
        res.pop("verdicts", None)            # the plain-text outcomes older runs stored
        write_report(res, Path(a.out))
        return
    device = resolve_device(a.device)
    t_start = time.perf_counter()
    if a.quick:
        rkme_sizes, search_sizes = [(2_000, 10), (20_000, 10)], [1_000, 10_000]
    else:
        rkme_sizes = [(m, d) for m in (1_000, 10_000, 100_000, 1_000_000) for d in (10, 50)]
        search_sizes = [1_000, 10_000, 100_000, 1_000_000]
    res = {"machine": f"{platform.processor() or platform.machine()}, "
                      f"{torch.get_num_threads()} threads",
           "device": str(device), "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "date": time.strftime("%Y-%m-%d")}
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="lw-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        res["search"] = [bench_search_size(n, device, work, a.repeats, a.queries, a.ref_python)
                         for n in search_sizes]
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    res["rkme"] = [] if a.skip_rkme else bench_rkme(device, rkme_sizes, a.repeats, a.ref_python)
    res["help_s"] = bench_help(a.repeats)
    res["wall_s"] = time.perf_counter() - t_start
    write_report(res, Path(a.out))


def write_report(res: dict, out: Path, committed: dict | None = None) -> None:
    """Check every target (against ``committed``, by default the committed run for the same
    device, read before anything in ``out`` is replaced), then write the JSON, the Markdown
    report and the plot into ``out``."""
    committed = committed if committed is not None else load_committed(_device_kind(res))
    res["targets"] = check_targets(res, committed)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if res["device"] == "cpu" else f"-{res['device'].split(':')[0]}"
    png = f"performance_search{suffix}.png"
    png = png if plot(res, out / png) else None
    (out / f"performance{suffix}.json").write_text(json.dumps(res, indent=1))
    write_md(res, out / f"performance{suffix}.md", png)
    print("\n".join(verdict_line(t) for t in res["targets"]))
    print(f"wrote {out}/performance{suffix}.md")


if __name__ == "__main__":
    main()
