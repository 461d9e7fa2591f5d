"""The performance benchmark, small: its synthetic island is a real market that `lw search`
reads through the sketch index, and its report renders. No timing is asserted."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, run_lw

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench  # noqa: E402
import synthetic  # noqa: E402
from lwcli import api  # noqa: E402


@pytest.mark.system
def test_synthetic_island_is_a_market_searched_like_any_other(tmp_path):
    mk, iid, timings = synthetic.build_market(tmp_path / "m", 600)
    assert set(timings) == {"generate_s", "self_terms_s", "sketch_s", "write_s"}
    assert api.market_ls(mk.root, island=iid)[0]["name"].startswith("synthetic-")
    fam = synthetic.Family(600)
    user = fam.query("member", 1)
    spec = tmp_path / "req.json"
    api.write_spec(synthetic.requirement_spec(user.input_part(), iid), spec)
    exact = api.search(mk.root, spec=spec, top=5)
    sketch = json.loads(run_lw("search", "--market", mk.root, "--spec", spec, "--sketch",
                               "--top", "5", "--json").stdout)
    assert sketch["searched"]["method"] == "sketch" and exact.searched["method"] == "exact"
    assert [r["id"] for r in sketch["single"]] == [r["id"] for r in exact.single]
    # the member query's own learnware comes first
    member = int(np.random.default_rng([0, 3, 0, 1]).integers(600))
    assert exact.single[0]["id"] == f"{member:016x}"


@pytest.mark.slow
def test_report_renders_from_a_small_run(tmp_path):
    cpu = torch.device("cpu")
    row = bench.bench_search_size(1_000, cpu, tmp_path, repeats=1, queries=1)
    assert row["process_s"]["x"]["method"] == "exact" and row["open"]["rss_gib"] > 0
    res = {"machine": "test", "device": "cpu", "torch": torch.__version__, "gpu": None,
           "date": "today", "wall_s": 1.0, "search": [row],
           "rkme": bench.bench_rkme(cpu, [(300, 4)], 1), "help_s": None}
    bench.write_report(res, tmp_path / "out")
    md = (tmp_path / "out" / "performance.md").read_text()
    assert "| 1,000 |" in md and "search 1,000 (exact)" in md and "## Targets" in md
    doc = json.loads((tmp_path / "out" / "performance.json").read_text())
    assert doc["search"][0]["learnwares"] == 1_000
    targets = {t["key"]: t for t in doc["targets"]}
    assert list(targets) == [t.key for t in bench.TARGETS]      # every target, in the report too
    assert all(f"| {t['what']} ({t['device']}) |" in md for t in doc["targets"])
    small = targets["search_1000_ms"]
    assert small["status"] in ("met", "MISSED") and small["measured"] == row["exact_ms"]["median"]
    assert small["committed"] == bench.load_committed("cpu")["search"][0]["exact_ms"]["median"]
    assert targets["open_1000000_s"]["status"] == "not measured"
    assert targets["search_1000000_ms_gpu"]["status"] == "other device"


def test_every_declared_target_is_checked_on_the_committed_runs():
    """Each target is measured by the committed CPU or GPU run, so none is silently ignored;
    a slower figure than its limit is MISSED, with the committed figure beside it."""
    runs = {kind: bench.load_committed(kind) for kind in ("cpu", "cuda")}
    checked = {kind: {t["key"]: t for t in bench.check_targets(res, res)}
               for kind, res in runs.items()}
    for t in bench.TARGETS:
        kinds = ("cpu", "cuda") if t.device == "any" else (t.device,)
        measured = [checked[k][t.key] for k in kinds if checked[k][t.key]["measured"] is not None]
        assert measured, f"{t.key} is measured by no committed run"
        assert all(m["status"] in ("met", "MISSED") and m["committed"] == m["measured"]
                   for m in measured)
    slow = json.loads(json.dumps(runs["cpu"]))
    slow["search"][0]["exact_ms"]["median"] = 10 * 10.0
    t = {t["key"]: t for t in bench.check_targets(slow, runs["cpu"])}["search_1000_ms"]
    assert t["status"] == "MISSED" and t["measured"] == 100.0
    assert t["committed"] == runs["cpu"]["search"][0]["exact_ms"]["median"]
    assert "MISSED (committed run:" in bench.verdict_line(t)
