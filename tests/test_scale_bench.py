"""The scale benchmark, small (make bench-scale --quick): a no-op refresh of 10,000 learnwares
that reads none of them, one new learnware on an island of 2,000 that is the only model run,
and a batch of specs byte-identical in-process, in local processes and on Dask."""

from __future__ import annotations

import json

import pytest

from conftest import load_benchmark


@pytest.mark.slow
def test_quick_scale_benchmark(tmp_path):
    scale = load_benchmark("scale")
    res = scale.main(["--quick", "--out", str(tmp_path)])
    assert res["noop"]["learnwares"] == 10_000
    add = res["add"]
    assert add["models_run"] == 1 and add["learnwares"] == 2_000
    assert add["refresh_s"] < add["full_refresh_estimate_s"]
    assert res["batch"]["byte_identical"] is True
    saved = json.loads((tmp_path / "scale-quick.json").read_text())
    assert saved["batch"]["files"] == 6
