"""Anchors on real temporary markets: choice, anchor-eval reports, anchor-guided search."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lwcli import api
from lwcli.errors import NotFoundError

from conftest import build_learnware, domain_data, run_cli, snapshot, write_user

FAMILIES = {0: "A", 1: "B"}


@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    """Two clearly different families of learnwares (domain 0 and domain 1 functions), three
    learnwares each: ridge, a random forest, and ridge on another sample."""
    from sklearn.ensemble import RandomForestRegressor

    work = tmp_path_factory.mktemp("anchors")
    root = work / "market"
    api.market_init(root)
    family = {}
    for dom in (0, 1):
        for j, kind in enumerate(("ridge", "rf", "ridge2")):
            X, y = domain_data(dom, 400, seed=10 * dom + j)
            model = RandomForestRegressor(30, random_state=0).fit(X, y) if kind == "rf" else None
            b = build_learnware(work, f"{FAMILIES[dom]}-{kind}", X, y, market=root, k=20,
                                model=model)
            family[api.submit(b.package, root).id] = FAMILIES[dom]
    refreshed = api.market_refresh(root)
    return root, family, work, refreshed


def test_anchors_cover_both_families(fam):
    root, family, _, refreshed = fam
    (iid, d), = refreshed["anchors"]["islands"].items()
    assert d["members"] == 6 and len(d["anchors"]) == 3          # about sqrt(6)
    assert {family[i] for i in d["anchors"]} == {"A", "B"}
    two = api.market_refresh(root, n_anchors=2)["anchors"]["islands"][iid]["anchors"]
    assert sorted(family[i] for i in two) == ["A", "B"]          # one medoid per family
    api.market_refresh(root)                                     # back to the default set


def test_refresh_is_idempotent_and_anchors_are_rebuildable(fam, tmp_path):
    import shutil

    root, _, _, _ = fam
    before = snapshot(root)
    again = api.market_refresh(root)
    assert again["changed"] is False and again["anchors"]["changed"] is False
    assert snapshot(root) == before
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "anchors")
    api.market_refresh(copy)                                      # derived: rebuilt the same
    assert {k: v for k, v in snapshot(copy).items() if k.startswith("anchors/")} == \
        {k: v for k, v in before.items() if k.startswith("anchors/")}


@pytest.mark.parametrize("dom", [0, 1])
def test_a_user_is_pointed_to_her_family_from_an_anchor_report_alone(fam, tmp_path, dom):
    root, family, _, _ = fam
    X, y = domain_data(dom, 20, seed=99)                        # 20 labelled rows
    report = api.anchor_eval(root, write_user(tmp_path / "u.csv", X, y), "y",
                             out=tmp_path / "report.json")
    res = api.search(root, anchor_report=tmp_path / "report.json")
    assert res.mode == "anchors" and res.mixture is None
    ranked = [family[r["id"]] for r in res.single]
    assert ranked == [FAMILIES[dom]] * 3 + [FAMILIES[1 - dom]] * 3
    top = res.single[0]
    assert top["lower"] <= top["predicted"] <= top["upper"] and 0 <= top["confidence"] <= 1
    assert res.assessment["hope"] == "ok"
    assert report["n_rows"] == 20 and len(report["scores"]) == 3


def test_the_report_holds_scores_only(fam, tmp_path):
    root, _, _, _ = fam
    X, y = domain_data(0, 25, seed=7)
    rep = api.anchor_eval(root, write_user(tmp_path / "u.csv", X, y), "y",
                          out=tmp_path / "r.json")
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk == json.loads(json.dumps(rep.report))
    assert rep.to_dict() == {**rep.report, **rep.intake.to_dict()}   # --json adds the intake
    assert set(on_disk) == {"format", "version", "created_with", "island", "anchor_set", "task",
                            "objective", "n_rows", "metrics", "baseline", "scores"}
    numbers = []

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, float):
            numbers.append(v)

    walk(on_disk)
    assert len(numbers) == 3 * 3 + 3                        # 3 metrics x 3 anchors + baseline
    data_values = set(np.round(np.r_[X.ravel(), y], 9))
    assert not data_values & set(np.round(numbers, 9))       # no value of any row is in it
    for s in on_disk["scores"]:
        assert set(s) == {"id", "name", "scores"} and set(s["scores"]) == {"rmse", "mae", "r2"}


def test_when_every_anchor_is_poor_the_user_is_told(fam, tmp_path):
    root, _, _, _ = fam
    X, _ = domain_data(0, 40, seed=3)
    noise = np.random.default_rng(0).normal(size=40) * 50    # labels no learnware can predict
    f = write_user(tmp_path / "u.csv", X, noise)
    run_cli("anchor-eval", "--data", f, "--target", "y", "-o", tmp_path / "r.json",
           "--market", root)
    proc = run_cli("search", "--anchor-report", tmp_path / "r.json", "--market", root, "--json")
    doc = json.loads(proc.stdout)
    assert doc["assessment"]["hope"] == "low"
    assert "little hope" in doc["assessment"]["message"]
    assert "little hope" in proc.stderr


def test_anchor_search_through_the_cli(fam, tmp_path):
    root, family, _, _ = fam
    X, y = domain_data(1, 30, seed=5)
    f = write_user(tmp_path / "u.csv", X, y)
    out = run_cli("anchor-eval", "--data", f, "--target", "y", "-o", tmp_path / "r.json",
                 "--market", root, "--json")
    printed = json.loads(out.stdout)
    assert printed.pop("schema_version") == 1                # the file is the report alone
    assert printed.pop("ignored_columns") == [] and printed.pop("input_rows")["used"] == 30
    assert printed == json.loads((tmp_path / "r.json").read_text())
    doc = json.loads(run_cli("search", "--anchor-report", tmp_path / "r.json", "--market", root,
                            "--json", "--top", "2").stdout)
    assert [family[r["id"]] for r in doc["single"]] == ["B", "B"]
    assert set(doc["single"][0]) == {"id", "name", "predicted", "lower", "upper", "confidence",
                                     "anchor", "observed"}
    table = run_cli("search", "--anchor-report", tmp_path / "r.json", "--market", root)
    assert "anchor" in table.stdout and "rmse" in table.stdout


def test_new_learnwares_wait_for_the_next_refresh(fam, tmp_path):
    import shutil

    root, family, work, _ = fam
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    X, y = domain_data(0, 20, seed=1)
    f = write_user(tmp_path / "u.csv", X, y)
    api.anchor_eval(copy, f, "y", out=tmp_path / "r.json")
    Xn, yn = domain_data(0, 300, seed=77)
    b = build_learnware(tmp_path, "A-late", Xn, yn, market=copy, k=20)
    late = api.submit(b.package, copy).id
    res = api.search(copy, anchor_report=tmp_path / "r.json")
    assert late not in [r["id"] for r in res.single]
    assert any("run lw market refresh" in w for w in res.warnings)
    api.market_refresh(copy)
    # the report names anchors that are still members: it stays usable after the refresh
    res = api.search(copy, anchor_report=tmp_path / "r.json")
    assert late in [r["id"] for r in res.single][:4]


def test_pickle_learnwares_join_the_anchors_only_with_trust(tmp_path):
    root = tmp_path / "m"
    api.market_init(root)
    for i in range(2):
        X, y = domain_data(i, 200, seed=i)
        api.submit(build_learnware(tmp_path, f"s{i}", X, y, market=root, k=20).package, root)
    X, y = domain_data(1, 200, seed=5)
    b = build_learnware(tmp_path, "p", X, y, market=root, fmt="pickle", trust=True, k=20)
    pid = api.submit(b.package, root, trust=True).id
    res = api.market_refresh(root)["anchors"]
    assert [s["id"] for s in res["skipped"]] == [pid]
    assert list(res["islands"].values())[0]["members"] == 2
    res = api.market_refresh(root, trust=True)["anchors"]
    assert res["skipped"] == [] and list(res["islands"].values())[0]["members"] == 3


def test_anchor_eval_before_any_refresh_says_what_to_do(tmp_path):
    root = tmp_path / "m"
    api.market_init(root)
    X, y = domain_data(0, 200, seed=0)
    api.submit(build_learnware(tmp_path, "a", X, y, market=root, k=20).package, root)
    with pytest.raises(NotFoundError, match="lw market refresh"):
        api.anchor_eval(root, write_user(tmp_path / "u.csv", X[:20], y[:20]), "y")


def test_verify_accepts_a_market_with_anchors(fam):
    root, _, _, _ = fam
    rep = api.market_verify(root)
    assert rep.ok, rep.problems


# --------------------------------------------------------------------------- error paths

def _edit(tmp_path, report, fn, name):
    doc = json.loads(report.read_text())
    fn(doc)
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def _set(key, value):
    def f(doc):
        doc[key] = value
    return f


REPORT_ERRORS = [
    ("not json", lambda t, r: _write(t / "x.json", "{"), 4, "not valid JSON"),
    ("not a report", lambda t, r: _write(t / "x.json", '{"format": "other"}'), 4,
     "not an lw anchor report"),
    ("rows smuggled in", lambda t, r: _edit(t, r, _set("rows", [[1, 2]]), "x.json"), 4,
     "unexpected fields ['rows']"),
    ("nan score", lambda t, r: _edit(t, r, lambda d: d["scores"][0]["scores"].update(
        rmse=float("nan")), "x.json"), 4, "finite"),
    ("unknown island", lambda t, r: _edit(t, r, _set("island", "table-regression-0000000000"),
                                          "x.json"), 3, "no island"),
    ("foreign anchors", lambda t, r: _edit(t, r, lambda d: d["scores"][0].update(
        id="0123456789abcdef"), "x.json"), 5, "not among"),
    ("missing report", lambda t, r: t / "none.json", 3, "does not exist"),
]


def _write(p, text):
    p.write_text(text)
    return p


@pytest.mark.parametrize("label,make,code,needle", REPORT_ERRORS,
                         ids=[e[0] for e in REPORT_ERRORS])
def test_search_with_a_bad_report(fam, tmp_path, label, make, code, needle):
    root, _, _, _ = fam
    X, y = domain_data(0, 20, seed=2)
    good = tmp_path / "good.json"
    api.anchor_eval(root, write_user(tmp_path / "u.csv", X, y), "y", out=good)
    before = snapshot(root)
    proc = run_cli("search", "--anchor-report", make(tmp_path, good), "--market", root, "--json",
                  check=code)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lw: error:") and needle in lines[0], lines
    assert snapshot(root) == before


ANCHOR_EVAL_ERRORS = [
    ("no target column", lambda t: ["--data", t["unlabelled"], "--target", "y"], 4,
     "no target column"),
    ("too few rows", lambda t: ["--data", t["tiny"], "--target", "y"], 4, "at least 5"),
    ("wrong columns", lambda t: ["--data", t["three"], "--target", "y"], 3, "no island"),
    ("nan", lambda t: ["--data", t["nan"], "--target", "y", "--missing", "error"], 4, "NaN"),
    ("missing file", lambda t: ["--data", t["dir"] / "none.csv", "--target", "y"], 3,
     "does not exist"),
    ("no output folder", lambda t: ["--data", t["ok"], "--target", "y", "-o",
                                    t["dir"] / "no" / "r.json"], 3, "does not exist"),
]


@pytest.mark.parametrize("label,args,code,needle", ANCHOR_EVAL_ERRORS,
                         ids=[e[0] for e in ANCHOR_EVAL_ERRORS])
def test_anchor_eval_errors(fam, tmp_path, label, args, code, needle):
    root, _, _, _ = fam
    X, y = domain_data(0, 30, seed=4)
    files = {"dir": tmp_path, "ok": write_user(tmp_path / "ok.csv", X, y),
             "unlabelled": write_user(tmp_path / "unl.csv", X),
             "tiny": write_user(tmp_path / "tiny.csv", X[:3], y[:3]),
             "three": write_user(tmp_path / "three.csv", X[:, :3], y),
             "nan": _write(tmp_path / "nan.csv", "f0,f1,f2,f3,y\n" + "1,2,3,4,5\n" * 6
                           + "1,,3,4,5\n")}
    a = args(files)
    if "-o" not in a:
        a += ["-o", tmp_path / "r.json"]
    before = snapshot(root)
    proc = run_cli("anchor-eval", *a, "--market", root, "--json", check=code)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "r.json").exists()
    assert snapshot(root) == before


def test_search_takes_one_kind_of_requirement(fam, tmp_path):
    root, _, _, _ = fam
    X, y = domain_data(0, 20, seed=2)
    f = write_user(tmp_path / "u.csv", X, y)
    api.anchor_eval(root, f, "y", out=tmp_path / "r.json")
    proc = run_cli("search", "--data", f, "--anchor-report", tmp_path / "r.json", "--market", root,
                  check=2)
    assert "exactly one of --data, --spec and --anchor-report" in proc.stderr


def test_verify_catches_damaged_anchors_and_refresh_repairs_them(fam, tmp_path):
    import shutil

    root, _, _, _ = fam
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    gen = (copy / "anchors" / "CURRENT").read_text().strip()
    (dist,) = (copy / "anchors" / gen).glob("*.rms.npy")
    dist.write_bytes(dist.read_bytes()[:40])
    rep = api.market_verify(copy)
    assert not rep.ok and rep.problems[0]["kind"] == "anchors"
    proc = run_cli("market", "verify", "--market", copy, check=5)
    assert "anchors" in proc.stdout
    api.market_refresh(copy, force=True)
    assert api.market_verify(copy).ok
