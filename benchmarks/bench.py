"""lw performance benchmark: RKME generation, search latency, CLI start-up.

Writes <out>/performance.json (raw figures) and <out>/performance.md (tables). Figures are
medians over repeats with min and max. Run with `make bench`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lwcli.device import resolve_device  # noqa: E402
from lwcli.engine.kernels import KernelMetric, fit_metric  # noqa: E402
from lwcli.engine.rkme import RKME, fit_rkme  # noqa: E402
from lwcli.engine.search import SpecStack, _self_terms, mixture_search, rank_single  # noqa: E402

# The reference implementation (learnware 0.4.0.post1) on this 2-core machine, from the issue.
REFERENCE = {"rkme_10000x50_s": 0.41, "rkme_50000x20_s": 4.7,
             "search_1000_single_ms": 178, "search_1000_mixture_ms": 211}


def timed(fn, repeats: int):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times),
            "repeats": repeats}, out


def data(m: int, d: int, seed: int = 0) -> np.ndarray:
    """A skewed mixture with features on very different scales (a realistic table)."""
    rng = np.random.default_rng(seed)
    comp = rng.integers(0, 5, size=m)
    centres = rng.normal(size=(5, d)) * 2
    X = centres[comp] + rng.normal(size=(m, d)) * rng.uniform(0.3, 1.5, size=d)
    return X * rng.uniform(0.01, 1000, size=d)


def exact_error(X: np.ndarray, r: RKME, device) -> float:
    """Exact RKHS distance between an RKME and the data's empirical KME (chunked)."""
    from lwcli.engine.kernels import mmd2

    s = np.asarray(r.metric.scales)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
    w = np.full(len(X), 1.0 / len(X))
    return float(mmd2(t(r.points / s), t(r.beta), t(X / s), t(w), r.metric.gamma)) ** 0.5


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


def bench_rkme(device, sizes, repeats):
    rows = []
    for m, d in sizes:
        X = data(m, d)
        metric = fit_metric(X)
        fit_rkme(X[:2000], metric, k=100, device=device)  # warm-up
        stats, r = timed(lambda: fit_rkme(X, metric, k=100, seed=0, device=device), repeats)
        mem = extra_peak_memory(lambda: fit_rkme(X, metric, k=100, seed=0, device=device)) \
            if device.type == "cpu" else None
        row = {"rows": m, "features": d, "k": 100, "time_s": stats, "approx_error": r.approx_error,
               "error_estimate": r.fit_info["error_estimate"], "extra_peak_gib": mem}
        if m <= 50_000:
            row["exact_error"] = exact_error(X, r, device)
        rows.append(row)
        print(f"rkme {m}x{d}: {stats['median']:.3f} s, error {r.approx_error:.4f}", flush=True)
    return rows


def synthetic_stack(n: int, k: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    metric = KernelMetric(tuple([1.0] * d), 1.0 / (2 * d), d - 1)
    centres = rng.normal(size=(n, 1, d)) * 1.5
    points = (centres + rng.normal(size=(n, k, d)) * 0.7).astype(np.float32)
    beta = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
    selfs_xy = _self_terms(points, beta, metric.gamma, torch.device("cpu"))
    selfs_x = _self_terms(np.ascontiguousarray(points[:, :, : d - 1]), beta, metric.gamma,
                          torch.device("cpu"))
    stack = SpecStack(metric, points, beta, selfs_xy, selfs_x)
    target = 3
    user = RKME(beta=beta[target].astype(np.float64) / beta[target].sum(),
                points=points[target].astype(np.float64) + rng.normal(size=(k, d)) * 0.05,
                metric=metric, n_rows=200, approx_error=0.0)
    return stack, user


def bench_search(device, sizes, repeats):
    rows = []
    for n in sizes:
        stack, user = synthetic_stack(n, 100, 13)
        rank_single(stack, user, device)  # warm-up
        single, ranking = timed(lambda: rank_single(stack, user, device), repeats)
        mix, _ = timed(lambda: mixture_search(stack, user, ranking, device=device), repeats)
        assert ranking.order[0] == 3
        rows.append({"learnwares": n, "k": 100, "dim": 13, "single_ms": _ms(single),
                     "mixture_step_ms": _ms(mix)})
        print(f"search {n}: single {single['median']*1e3:.1f} ms, mixture +{mix['median']*1e3:.1f} ms",
              flush=True)
    return rows


def _ms(s):
    return {k: (v * 1e3 if k != "repeats" else v) for k, v in s.items()}


def bench_help(repeats):
    lw = Path(sys.executable).parent / "lw"
    if not lw.exists():            # lw not installed in this interpreter (a bare GPU machine)
        print(f"lw --help: skipped, no {lw}", flush=True)
        return None
    stats, _ = timed(lambda: subprocess.run([str(lw), "--help"], capture_output=True, check=True),
                     repeats)
    print(f"lw --help: {stats['median']:.3f} s", flush=True)
    return stats


def write_md(res, path: Path):
    L = ["# lw performance", "",
         f"Machine: {res['machine']}; device {res['device']}"
         f"{' (' + res['gpu'] + ')' if res.get('gpu') else ''}; torch {res['torch']}.",
         "Figures are medians over repeats, with min and max. Reference figures are those of",
         "the `learnware` package 0.4.0.post1 on this 2-core machine, as given in the issue.", "",
         "## RKME generation (K = 100)", "",
         "| rows x features | time (s) median [min, max] | extra peak memory (GiB) | approx. error (stored) | exact error | reference (s) |",
         "|---|---|---|---|---|---|"]
    for r in res["rkme"]:
        t = r["time_s"]
        ref = REFERENCE.get(f"rkme_{r['rows']}x{r['features']}_s", "")
        mem = "n/a" if r["extra_peak_gib"] is None else f"{r['extra_peak_gib']:.2f}"
        L.append(f"| {r['rows']:,} x {r['features']} | {t['median']:.3f} [{t['min']:.3f}, {t['max']:.3f}] "
                 f"| {mem} | {r['approx_error']:.4f} ({r['error_estimate']}) | "
                 f"{r.get('exact_error', float('nan')):.4f} | {ref} |")
    L += ["", "## Search in one island (K = 100 per learnware, 13 coordinates, user K = 100)", "",
          "| learnwares | single ranking (ms) | mixture step adds (ms) | reference single / mixture (ms) |",
          "|---|---|---|---|"]
    for r in res["search"]:
        s, m = r["single_ms"], r["mixture_step_ms"]
        ref = "178 / 211" if r["learnwares"] == 1000 else ""
        L.append(f"| {r['learnwares']:,} | {s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}] | "
                 f"{m['median']:.2f} [{m['min']:.2f}, {m['max']:.2f}] | {ref} |")
    h = res["help_s"]
    L += ["", "Exact error: the RKHS distance to all rows, computed in full (not run at 1e6 rows).",
          "Stored error: exact up to 4,096 rows, else lw's random-Fourier-feature estimate.",
          "Against the reference at the same kernel and K: see reference_rkme.md",
          "(`make bench-reference`, run in one session side by side)."]
    L += ["", "## CLI start-up", ""]
    L += [f"`lw --help`: {h['median']:.3f} s [{h['min']:.3f}, {h['max']:.3f}] (target < 0.5 s; "
          "torch is not imported).", ""] if h else ["`lw --help`: not measured (lw is not "
                                                    "installed in this interpreter).", ""]
    path.write_text("\n".join(L))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    a = ap.parse_args()
    device = resolve_device(a.device)
    sizes = [(10_000, 50), (50_000, 20)] if not a.quick else [(2_000, 10)]
    if not a.quick:
        sizes.append((1_000_000, 50))   # data held as float64: 381 MiB before lw starts
    searches = [1_000, 10_000] if not a.quick else [200]
    res = {"machine": f"{platform.processor() or platform.machine()}, "
                      f"{torch.get_num_threads()} threads",
           "device": str(device), "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           # search first: the 1e6-row fit leaves a large, fragmented heap behind it
           "search": bench_search(device, searches, a.repeats * 4),
           "rkme": bench_rkme(device, sizes, a.repeats if not a.quick else 1),
           "help_s": bench_help(a.repeats)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if device.type == "cpu" else f"-{device.type}"
    (out / f"performance{suffix}.json").write_text(json.dumps(res, indent=1))
    write_md(res, out / f"performance{suffix}.md")
    print(f"wrote {out}/performance{suffix}.md")


if __name__ == "__main__":
    main()
