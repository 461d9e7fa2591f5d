"""The CLI: output contracts and every error path, in process (``run_cli``); the entry point
itself (``run_lw``) for the version, exit code 3 and the README examples."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


from conftest import ROOT, build_learnware, domain_data, run_cli, run_lw, snapshot, write_user


@pytest.fixture(scope="module")
def mk(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    root = work / "market"
    run_cli("market", "init", root)
    ids = []
    for dom in range(3):
        X, y = domain_data(dom, 400, seed=dom)
        b = build_learnware(work, f"d{dom}", X, y, market=root, k=20)
        ids.append(run_cli("submit", b.package, "--market", root).stdout.strip())
    return root, ids, work


@pytest.mark.system
def test_help_does_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from lwcli.cli.main import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert run_lw("--version").stdout.startswith("lw ")


def test_every_command_has_help():
    for cmd in (["spec"], ["pack"], ["submit"], ["search"], ["reuse"], ["anchor-eval"],
                ["market"], ["market", "init"],
                ["market", "ls"], ["market", "info"], ["market", "refresh"], ["market", "verify"]):
        assert "Usage" in run_cli(*cmd, "--help").stdout


def test_submit_prints_only_the_id_and_is_idempotent(mk):
    root, ids, work = mk
    out = run_cli("submit", work / "d0" / "pkg.lw", "--market", root)
    assert out.stdout.strip() == ids[0]
    assert "already" in out.stderr


def test_search_json_is_the_documented_object(mk, tmp_path):
    root, ids, _ = mk
    X, y = domain_data(1, 150, seed=11)
    f = write_user(tmp_path / "u.csv", X, y)
    out = run_cli("search", "--data", f, "--target", "y", "--market", root, "--json")
    doc = json.loads(out.stdout)                         # stdout is JSON and nothing else
    assert set(doc) >= {"island", "mode", "ranked_by", "single", "mixture", "requirement"}
    assert doc["ranked_by"] == "requirement-loss" and doc["requirement"]["loss_metric"] == "rmse"
    assert set(doc["single"][0]) == {"id", "name", "island", "features", "mmd2", "score",
                                     "requirement_loss"}
    assert set(doc["mixture"]) >= {"ids", "weights", "mmd2"}
    assert doc["single"][0]["id"] == ids[1]
    assert doc["mixture"]["ids"] == [ids[1]]
    plain = json.loads(run_cli("search", "--data", f, "--target", "y", "--market", root,
                              "--rerank", "0", "--json").stdout)
    assert plain["ranked_by"] == "rkme"
    assert set(plain["single"][0]) == {"id", "name", "island", "features", "mmd2", "score"}


def test_search_uses_lw_market_env_and_prints_a_table(mk, tmp_path):
    root, ids, _ = mk
    X, _ = domain_data(2, 150, seed=12)
    out = run_cli("search", "--data", write_user(tmp_path / "u.csv", X), env={"LW_MARKET": str(root)})
    assert ids[2] in out.stdout and "mixture" in out.stdout


def test_spec_then_search_with_spec(mk, tmp_path):
    root, ids, _ = mk
    X, y = domain_data(0, 150, seed=13)
    f = write_user(tmp_path / "u.csv", X, y)
    run_cli("spec", f, "--target", "y", "--market", root, "--k", "50", "-o", tmp_path / "req.json")
    doc = json.loads(run_cli("search", "--spec", tmp_path / "req.json", "--market", root,
                            "--json").stdout)
    assert doc["single"][0]["id"] == ids[0]


def test_market_ls_info_refresh_verify_json(mk):
    root, ids, _ = mk
    listing = json.loads(run_cli("market", "ls", "--market", root, "--json").stdout)
    assert listing["schema_version"] == 1               # an object, not a bare list
    assert sorted(r["id"] for r in listing["learnwares"]) == sorted(ids)
    info = json.loads(run_cli("market", "info", ids[0], "--market", root, "--json").stdout)
    assert info["manifest"]["name"] == "d0"
    first = json.loads(run_cli("market", "refresh", "--market", root, "--json").stdout)
    assert first["index_changed"] is False          # submit keeps the index current
    assert len(first["anchors"]["islands"]) == 1    # anchors are chosen on refresh
    ref = json.loads(run_cli("market", "refresh", "--market", root, "--json").stdout)
    assert ref["changed"] is False                  # nothing new: nothing written
    ver = json.loads(run_cli("market", "verify", "--market", root, "--json").stdout)
    assert ver["ok"] and ver["checked"] == 3


def test_developer_flow_through_the_cli(mk, tmp_path):
    root, _, work = mk
    X, y = domain_data(5, 300, seed=5)
    b = build_learnware(tmp_path, "dev", X, y, market=root)
    run_cli("spec", b.train, "--model", b.model, "--meta", b.meta, "--market", root, "--k", "20",
           "-o", tmp_path / "rkme.json")
    pid = run_cli("pack", "--model", b.model, "--spec", tmp_path / "rkme.json", "--meta", b.meta,
                 "-o", tmp_path / "dev.lw").stdout.strip()
    fresh = tmp_path / "fresh"
    run_cli("market", "init", fresh)
    assert run_cli("submit", tmp_path / "dev.lw", "--market", fresh).stdout.strip() == pid


# ------------------------------------------------------------------------- error paths

def _bad_csv(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def _zip(tmp_path, name, members: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    p = tmp_path / name
    p.write_bytes(buf.getvalue())
    return p


def _user(tmp_path, mutate):
    X, y = domain_data(0, 50, seed=1)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(4)])
    df["y"] = y
    df = mutate(df)
    p = tmp_path / "bad.csv"
    df.to_csv(p, index=False)
    return p


SEARCH_ERRORS = [
    ("missing file", lambda t: t / "nope.csv", 3, "does not exist"),
    ("bad extension", lambda t: _bad_csv(t, "x.txt", "a,b\n1,2\n"), 4, "extension"),
    ("malformed csv", lambda t: _bad_csv(t, "m.csv", 'f0,f1,f2,f3,y\n1,2,"3\n'), 4, "parsed"),
    ("empty", lambda t: _bad_csv(t, "e.csv", ""), 4, "empty"),
    ("header only", lambda t: _bad_csv(t, "h.csv", "f0,f1,f2,f3,y\n"), 4, "rows"),
    ("inf", lambda t: _user(t, lambda d: d.assign(f2=np.where(d.index == 2, np.inf, d.f2))), 4,
     "infinite"),
    ("non numeric", lambda t: _user(t, lambda d: d.assign(f0="abc")), 4, "non-numeric"),
    ("wrong feature count", lambda t: _user(t, lambda d: d.drop(columns=["f3"])), 3,
     "no island"),
    ("wrong names", lambda t: _user(t, lambda d: d.rename(columns={"f1": "g1"})), 3, "no island"),
]


@pytest.mark.parametrize("label,make,code,needle", SEARCH_ERRORS, ids=[e[0] for e in SEARCH_ERRORS])
def test_search_bad_data(mk, tmp_path, label, make, code, needle):
    root, _, _ = mk
    before = snapshot(root)
    proc = run_cli("search", "--data", make(tmp_path), "--target", "y", "--market", root,
                  "--json", check=code)
    assert proc.stdout == ""                               # --json: nothing on stdout on error
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lw: error:") and needle in lines[0], lines
    assert snapshot(root) == before


def test_search_missing_values_follow_the_policy(mk, tmp_path):
    """A gap is dropped and counted by default, refused with --missing error (exit 4, market
    unchanged), and estimated from the file's complete rows with --missing impute."""
    root, _, _ = mk
    data = _user(tmp_path, lambda d: d.assign(f1=d.f1.where(d.index != 3)))
    before = snapshot(root)
    proc = run_cli("search", "--data", data, "--target", "y", "--market", root, "--json",
                   "--missing", "error", check=4)
    assert proc.stdout == "" and "1 rows with NaN (missing) values (columns ['f1']; first: " \
        "data row 4)" in proc.stderr and "--missing drop" in proc.stderr
    proc = run_cli("search", "--data", data, "--target", "y", "--market", root, "--json")
    doc = json.loads(proc.stdout)
    assert doc["input_rows"]["dropped"] == 1 and doc["input_rows"]["used"] == 49
    assert doc["input_rows"]["incomplete_columns"] == {"f1": 1}
    assert doc["requirement"]["n_rows"] == 49
    assert "dropped 1 of 50 rows with a missing value (--missing drop); missing inputs: 'f1' x1" \
        in proc.stderr
    doc = json.loads(run_cli("search", "--data", data, "--target", "y", "--market", root,
                             "--json", "--missing", "impute").stdout)
    assert doc["input_rows"]["imputed"] == 1 and doc["requirement"]["n_rows"] == 50
    run_cli("search", "--data", data, "--market", root, "--missing", "bogus", check=2)
    assert snapshot(root) == before


def test_spec_k_larger_than_rows(tmp_path):
    X, _ = domain_data(0, 30, seed=0)
    proc = run_cli("spec", write_user(tmp_path / "u.csv", X), "--k", "31", "-o", tmp_path / "s.json",
                  check=4)
    assert "--k 31" in proc.stderr and "30 rows" in proc.stderr
    assert not (tmp_path / "s.json").exists()


def test_usage_errors(mk, tmp_path):
    root, _, _ = mk
    proc = run_cli("search", "--market", root, check=2)
    assert "exactly one of --data, --spec and --anchor-report" in proc.stderr
    run_cli("search", "--data", "x.csv", "--bogus", check=2)
    run_cli("search", "--data", "x.csv", "--top", "0", "--market", root, check=2)
    run_cli("search", "--data", "x.csv", "--rerank", "-1", "--market", root, check=2)


@pytest.mark.system
def test_unknown_id_and_missing_market(mk, tmp_path):
    root, _, _ = mk
    assert "no learnware" in run_lw("market", "info", "0123456789abcdef", "--market", root,
                                    check=3).stderr
    assert "not a learnware id" in run_lw("market", "info", "zzz", "--market", root, check=3).stderr
    assert "lw market init" in run_lw("market", "ls", "--market", tmp_path / "none", check=3).stderr
    assert "LW_MARKET" in run_lw("market", "ls", check=3).stderr


def test_cuda_without_cuda_is_a_clear_error(mk, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    root, _, _ = mk
    X, _ = domain_data(0, 50, seed=0)
    proc = run_cli("search", "--data", write_user(tmp_path / "u.csv", X), "--market", root,
                  "--device", "cuda", check=6)
    assert "no CUDA device" in proc.stderr
    assert "unknown device" in run_cli("search", "--data", tmp_path / "u.csv", "--market", root,
                                      "--device", "tpu", check=6).stderr


def _pkg_members(work):
    from lwcli.market.package import read_package

    return read_package(work / "d0" / "pkg.lw").files


PACKAGE_ERRORS = [
    ("truncated zip", lambda t, w: _write(t / "trunc.lw", (w / "d0" / "pkg.lw").read_bytes()[:-200]),
     4, "truncated"),
    ("not a zip", lambda t, w: _write(t / "junk.lw", b"hello"), 4, "not a valid package"),
    ("path escape", lambda t, w: _zip(t, "esc.lw", {**_pkg_members(w), "../evil.txt": b"x"}), 4,
     "escapes"),
    ("absolute path", lambda t, w: _zip(t, "abs.lw", {**_pkg_members(w), "/etc/x": b"x"}), 4,
     "escapes"),
    ("extra member", lambda t, w: _zip(t, "extra.lw", {**_pkg_members(w), "x.py": b"x"}), 4,
     "unexpected"),
    ("missing spec", lambda t, w: _zip(t, "nospec.lw", {k: v for k, v in _pkg_members(w).items()
                                                          if k != "rkme.json"}), 4, "no rkme.json"),
    ("bad manifest", lambda t, w: _zip(t, "badman.lw", {**_pkg_members(w),
                                                         "learnware.toml": b"name = 3"}), 4,
     "learnware.toml"),
    ("corrupt spec", lambda t, w: _zip(t, "badspec.lw", {**_pkg_members(w), "rkme.json": b"{"}), 4,
     "JSON"),
    ("missing package", lambda t, w: t / "absent.lw", 3, "does not exist"),
]


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("label,make,code,needle", PACKAGE_ERRORS, ids=[e[0] for e in PACKAGE_ERRORS])
def test_submit_bad_packages(mk, tmp_path, label, make, code, needle):
    root, _, work = mk
    before = snapshot(root)
    proc = run_cli("submit", make(tmp_path, work), "--market", root, "--json", check=code)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert snapshot(root) == before


def test_oversized_member_is_refused(mk, tmp_path):
    root, _, work = mk
    members = _pkg_members(work)
    members["model.skops"] = b"\0" * (3 << 20)          # 3 MiB of zeros, compresses to ~3 KiB
    p = _zip(tmp_path, "big.lw", members)
    before = snapshot(root)
    proc = run_cli("submit", p, "--market", root, check=4, env={"LW_MAX_MODEL_MB": "1"})
    assert "limit" in proc.stderr
    assert snapshot(root) == before


def test_manifest_validation_names_the_field(tmp_path):
    from lwcli.errors import ManifestError
    from lwcli.market.manifest import manifest_from_text

    good = (ROOT / "sample_market" / "developer" / "learnware.toml").read_text()
    manifest_from_text(good)
    for bad, needle in ((good.replace('task = "regression"', 'task = "ranking"'),
                         "task = 'ranking' is not allowed; expected one of classification, regression"),
                        (good.replace('objective = "rmse"', 'objective = "accuracy"'), "objective"),
                        (good.replace('format = "skops"', 'format = "exe"'), "model.format"),
                        (good.replace('name = "', 'name = "../'), "name")):
        with pytest.raises(ManifestError, match=needle.split(" ")[0]) as ei:
            manifest_from_text(bad)
        assert needle in str(ei.value)


def test_readme_documents_every_command():
    readme = (ROOT / "README.md").read_text()
    for cmd in ("lw spec", "lw pack", "lw submit", "lw search", "lw reuse", "lw anchor-eval",
                "lw search --anchor-report", "lw market init", "lw market ls",
                "lw market info", "lw market refresh", "lw market verify", "make demo", "make test"):
        assert cmd in readme, cmd
    for code in (0, 1, 2, 3, 4, 5, 6, 7, 8):
        assert f"| {code} " in readme


@pytest.mark.system
def test_readme_python_examples_run(monkeypatch, capsys):
    """Each ```python block of the README, run as a script would be (its own namespace, from
    the repository root), in this process: its models run in this process's fork server."""
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(ROOT)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    capsys.readouterr()


@pytest.mark.system
def test_readme_shell_examples_run(tmp_path):
    """The user's and the developer's journeys in the README, command by command."""
    import os
    import re

    text = (ROOT / "README.md").read_text()
    part = text[text.index("## A user's search"):text.index("### The semantic specification")]
    blocks = re.findall(r"```sh\n(.*?)```", part, re.S)
    assert len(blocks) >= 4
    script = "set -eu\nrm -rf /tmp/mymarket\n" + "\n".join(blocks)   # as a Makefile would
    env = {**os.environ, "LW_DEVICE": "cpu", "PATH": f"{Path(sys.executable).parent}:"
           f"{os.environ['PATH']}"}
    env.pop("LW_MARKET", None)
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
