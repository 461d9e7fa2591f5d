"""The heterogeneous-world benchmark, small: one user station, one size, one hospital."""

from __future__ import annotations

import json

import pytest

from conftest import load_benchmark


@pytest.mark.slow
def test_quick_hetero_benchmark_serves_a_user_from_two_islands(tmp_path):
    hetero = load_benchmark("hetero")
    got = hetero.main(["--quick", "--out", str(tmp_path), "--jobs", "1"])
    res = json.loads((tmp_path / "hetero-quick.json").read_text())
    (a,) = res["figure7"]
    # (a) both islands answer one search, each with its own Top-1, in one ranking
    assert a["islands"] == 2 and a["top1_island"] in ("pollutants", "weather")
    for m in hetero.FIG7:
        assert a[m] > 0
    assert a["top1"] in (a["top1-pollutants"], a["top1-weather"])
    # (b) before merging a one-block user reaches her own island only; after, the spanning
    # island too, through the link
    for r in res["merge"]:
        assert r["before"]["islands"] == 1 and r["after"]["islands"] == 2
    # (c) Hungary (no slope, ca, thal) is served by the islands whose features she measured
    (h,) = res["hospitals"]
    assert "not_served" not in h and h["features"] == 10 and 0 <= h["top1"] <= 1
    # (d) both timings measured, and the targets are all stated
    assert {t["case"] for t in res["timing"]} == {
        "sample market, labelled", "sample market, unlabelled",
        "(a)'s market, labelled, both blocks"}
    assert got["targets"] and all(("met" in t) or ("MISSED" in t) for t in got["targets"])
