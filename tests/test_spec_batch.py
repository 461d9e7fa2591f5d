"""`lw spec` over many files: through the CLI (in process), on real folders and a real market."""

from __future__ import annotations

import json
import os

import pytest

from conftest import domain_data, read_json, run_cli, write_user


@pytest.fixture
def folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for dom in range(3):
        X, y = domain_data(dom, 120, seed=dom)
        write_user(data / f"site{dom}.csv", X, y)
    (data / "notes.txt").write_text("not data")               # ignored: not a data file
    extra = tmp_path / "extra"
    extra.mkdir()
    X, y = domain_data(4, 80, seed=4)
    write_user(extra / "late.csv", X, y)
    out = tmp_path / "specs"
    out.mkdir()
    return data, extra / "late.csv", out


def batch(*args, check=0):
    return run_cli("spec", *args, "--target", "y", "--k", "20", "--json", check=check)


def snapshot(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.rkme.json"))}


def test_batch_writes_every_spec_then_skips_them(folder, tmp_path):
    data, late, out = folder
    lst = tmp_path / "list.txt"
    lst.write_text(f"# more files\n\n{os.path.relpath(late, tmp_path)}\n")
    doc = read_json(batch(data, "--from-list", lst, "--out-dir", out).stdout)
    assert sorted(os.path.basename(w["output"]) for w in doc["written"]) == \
        ["late.rkme.json", "site0.rkme.json", "site1.rkme.json", "site2.rkme.json"]
    assert doc["skipped"] == [] and doc["failed"] == []
    # byte for byte what the one-file form writes
    run_cli("spec", data / "site1.csv", "--target", "y", "--k", "20", "-o", tmp_path / "one.json")
    assert (out / "site1.rkme.json").read_bytes() == (tmp_path / "one.json").read_bytes()
    before = snapshot(out)
    again = read_json(batch(data, "--from-list", lst, "--out-dir", out).stdout)
    assert again["written"] == [] and len(again["skipped"]) == 4       # a cron rerun: nothing
    assert snapshot(out) == before


def test_batch_refits_exactly_what_changed(folder):
    data, _, out = folder
    batch(data, "--out-dir", out)
    before = snapshot(out)
    os.utime(data / "site0.csv", ns=(1, 1))                           # touched, same bytes
    X, y = domain_data(7, 90, seed=7)
    write_user(data / "site1.csv", X, y)                              # new content
    (out / "site2.rkme.json").write_text("edited by hand")            # a damaged spec
    doc = read_json(batch(data, "--out-dir", out).stdout)
    assert sorted(os.path.basename(w["data"]) for w in doc["written"]) == ["site1.csv",
                                                                            "site2.csv"]
    assert [os.path.basename(s["data"]) for s in doc["skipped"]] == ["site0.csv"]
    after = snapshot(out)
    assert after["site0.rkme.json"] == before["site0.rkme.json"]
    assert after["site2.rkme.json"] == before["site2.rkme.json"]      # restored
    assert after["site1.rkme.json"] != before["site1.rkme.json"]
    # other parameters, or --force: everything again
    k30 = read_json(run_cli("spec", data, "--target", "y", "--k", "30", "--out-dir", out,
                           "--json").stdout)
    assert len(k30["written"]) == 3
    forced = read_json(batch(data, "--out-dir", out, "--force").stdout)
    assert len(forced["written"]) == 3


def test_batch_goes_on_past_a_bad_file_and_exits_with_its_code(folder):
    data, _, out = folder
    (data / "broken.csv").write_text("a,b\n1,x\n")
    proc = batch(data, "--out-dir", out, check=4)
    doc = read_json(proc.stdout)
    assert [os.path.basename(f["data"]) for f in doc["failed"]] == ["broken.csv"]
    assert "no target column 'y'" in doc["failed"][0]["error"]
    assert len(doc["written"]) == 3
    assert "broken.csv" in proc.stderr
    assert not (out / "broken.rkme.json").exists()


def test_batch_usage_errors(folder, tmp_path):
    data, late, out = folder
    assert "--out-dir" in run_cli("spec", data, "--target", "y", "-o", tmp_path / "x.json",
                                 check=2).stderr
    run_cli("spec", data / "site0.csv", data / "site1.csv", "-o", tmp_path / "x.json", check=2)
    run_cli("spec", data / "site0.csv", "--out-dir", out, "-o", tmp_path / "x.json", check=2)
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "site0.csv").write_bytes((data / "site0.csv").read_bytes())
    proc = batch(data, twin / "site0.csv", "--out-dir", out, check=2)
    assert "would all write site0.rkme.json" in proc.stderr and proc.stdout == ""
    batch(data, "--out-dir", tmp_path / "missing", check=3)
    batch(tmp_path / "nothing-here", "--out-dir", out, check=3)
    assert snapshot(out) == {}                                        # nothing written


def test_batch_with_a_market_fits_under_the_island_metric_and_skips_on_rerun(tmp_path):
    from lwcli import api

    from conftest import build_learnware

    root = tmp_path / "market"
    api.market_init(root)
    X, y = domain_data(0, 300, seed=0)
    api.submit(build_learnware(tmp_path, "d0", X, y, market=root, k=20).package, root)
    data = tmp_path / "data"
    data.mkdir()
    write_user(data / "u.csv", *domain_data(0, 100, seed=5))
    out = tmp_path / "specs"
    out.mkdir()
    doc = read_json(batch(data, "--market", root, "--out-dir", out).stdout)
    assert doc["written"][0]["island"]
    assert json.loads((out / "u.rkme.json").read_text())["island"] == doc["written"][0]["island"]
    assert read_json(batch(data, "--market", root, "--out-dir", out).stdout)["skipped"]


def test_build_specs_takes_build_spec_options_only(folder):
    from lwcli import api
    from lwcli.errors import UsageError

    data, _, out = folder
    with pytest.raises(UsageError, match="unknown spec options"):
        api.build_specs([data], out, targte="y")
    res = api.build_specs([data / "site0.csv"], out, target="y", k=10)
    assert [w["k"] for w in res.written] == [10] and res.failed == []


def test_compressed_csv_files_are_found_and_named_by_their_stem(folder, tmp_path):
    import gzip

    from lwcli.io import data_stem
    from lwcli.specbatch import expand_inputs, output_names

    data, _, out = folder
    (data / "site3.csv.gz").write_bytes(gzip.compress((data / "site2.csv").read_bytes()))
    (data / "site2.csv").unlink()
    assert output_names(expand_inputs([data])) == \
        ["site0.rkme.json", "site1.rkme.json", "site3.rkme.json"]
    assert data_stem("x.CSV.GZ") == "x" and data_stem("a.b.parquet") == "a.b"
    doc = read_json(batch(data, "--out-dir", out).stdout)
    assert sorted(os.path.basename(w["output"]) for w in doc["written"]) == \
        ["site0.rkme.json", "site1.rkme.json", "site3.rkme.json"]
