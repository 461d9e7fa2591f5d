"""RKME side by side with the reference implementation (learnware 0.4.0.post1).

Both fit K = 100 reduced points to the same data under the *same* kernel: the reference gets
the data already scaled by lw's metric and lw's gamma, so the approximation errors compare
like for like. The error of each is the exact RKHS distance to all rows.

    python benchmarks/compare_reference.py --ref-python .venv-ref/bin/python --out benchmarks/results

The reference runs in its own virtual environment (see `make bench-reference`, issue 5).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import data, exact_error  # noqa: E402
from lwcli.engine.kernels import fit_metric  # noqa: E402
from lwcli.engine.rkme import RKME, fit_rkme  # noqa: E402

REF_SCRIPT = r"""
import json, sys, time, numpy as np
from learnware.specification import RKMETableSpecification
Xs = np.load(sys.argv[1]); gamma = float(sys.argv[2]); repeats = int(sys.argv[3])
times = []
for _ in range(repeats):
    spec = RKMETableSpecification(gamma=gamma, cuda_idx=-1)
    t0 = time.perf_counter()
    spec.generate_stat_spec_from_data(X=Xs, K=100)
    times.append(time.perf_counter() - t0)
np.save(sys.argv[4], np.asarray(spec.get_z(), dtype=np.float64))
np.save(sys.argv[5], np.asarray(spec.get_beta(), dtype=np.float64).ravel())
print(json.dumps(times))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref-python", required=True)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cpu = torch.device("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        (td / "ref.py").write_text(REF_SCRIPT)
        for m, d in ((10_000, 50), (50_000, 20)):
            X = data(m, d)
            metric = fit_metric(X)
            s = np.asarray(metric.scales)
            np.save(td / "xs.npy", (X / s).astype(np.float32))
            out = subprocess.run([a.ref_python, str(td / "ref.py"), str(td / "xs.npy"),
                                  repr(metric.gamma), str(a.repeats), str(td / "z.npy"),
                                  str(td / "b.npy")], capture_output=True, text=True, check=True)
            ref_times = json.loads(out.stdout.strip().splitlines()[-1])
            z, b = np.load(td / "z.npy"), np.load(td / "b.npy")
            ref_rkme = RKME(beta=np.clip(b, 0, None) / np.clip(b, 0, None).sum(), points=z * s,
                            metric=metric, n_rows=m, approx_error=0.0)
            fit_rkme(X[:2000], metric, k=100)
            ours_times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                ours = fit_rkme(X, metric, k=100, seed=0)
                ours_times.append(time.perf_counter() - t0)
            row = {"rows": m, "features": d, "k": 100,
                   "ours_s": statistics.median(ours_times), "ref_s": statistics.median(ref_times),
                   "ours_error": exact_error(X, ours, cpu),
                   "ref_error": exact_error(X, ref_rkme, cpu),
                   "ref_beta_negative_mass": float(-b[b < 0].sum())}
            rows.append(row)
            print(row, flush=True)
    out = Path(a.out)
    (out / "reference_rkme.json").write_text(json.dumps(rows, indent=1))
    lines = ["# RKME: lw vs the reference (learnware 0.4.0.post1), same data, same kernel, K = 100",
             "", "Exact RKHS distance between each reduced set and all rows; medians of "
             f"{a.repeats} runs on this machine, in one session.", "",
             "| rows x features | lw time (s) | reference time (s) | speed-up | lw error | reference error |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['rows']:,} x {r['features']} | {r['ours_s']:.3f} | {r['ref_s']:.3f} | "
                     f"{r['ref_s'] / r['ours_s']:.1f}x | {r['ours_error']:.4f} | {r['ref_error']:.4f} |")
    (out / "reference_rkme.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
