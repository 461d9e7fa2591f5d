"""The heterogeneous-world benchmark, small: one user station, one size, two hospitals."""

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
    # (c) Hungary (no slope, ca, thal) is served by the islands whose features she measured;
    # Switzerland (no cholesterol, fbs, ca, thal) by none as she is: refused, with the way
    # out, and served when she names the nearest island
    hu, sw = res["hospitals"]
    assert "refused" not in hu and hu["features"] == 10 and 0 <= hu["top1"] <= 1
    assert "--island ID --missing impute" not in sw["refused"]      # the message; the hint:
    assert sw["features"] == 9 and "no island of this market takes" in sw["refused"]
    assert any("estimated" in i for i in sw["islands"]) and 0 <= sw["top1"] <= 1
    # (d) both timings measured, and the targets are all stated
    assert {t["case"] for t in res["timing"]} == {
        "sample market, labelled", "sample market, unlabelled",
        "(a)'s market, labelled, both blocks"}
    assert got["targets"] and all(("met" in t) or ("MISSED" in t) for t in got["targets"])
