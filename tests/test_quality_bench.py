"""The quality benchmark, small: three user stations, 200 labelled hours, one seed."""

from __future__ import annotations

import json

import pytest

from conftest import load_benchmark


@pytest.mark.slow
def test_quick_quality_benchmark_top1_beats_a_random_learnware(tmp_path):
    quality = load_benchmark("quality")
    summary = quality.main(["--quick", "--out", str(tmp_path), "--jobs", "1"])
    m = summary[200]["methods"]
    assert m["top1"]["rmse"] < m["random"]["rmse"]          # RKME search beats chance
    assert m["oracle"]["rmse"] <= m["top1"]["rmse"]
    rows = json.loads((tmp_path / "quality-quick.json").read_text())["rows"]
    assert len(rows) == 3 and {r["station"] for r in rows} == {"Dongsi", "Huairou",
                                                               "Wanshouxigong"}
    assert all(r["candidates"] in (40, 44) for r in rows)  # the user's station left out
    for r in rows:
        for k in quality.METHODS:
            assert r[k] > 0
