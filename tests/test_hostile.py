"""Hostile and malformed input (issue 13, points 7 to 11): every one is a one-line exit 4
(never an internal error), leaves the market byte for byte unchanged, runs no code and
allocates nothing in proportion to what a file claims.

Packages are made by hand from one valid package: its three members, edited, re-zipped.
Commands run through the CLI's own entry point in-process (typer's runner; the exit code is
the one the real boundary maps each exception to).
"""

from __future__ import annotations

import copy
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from typer.testing import CliRunner

from conftest import domain_data, market_copy, market_tree, write_user
from lwcli.cli.main import app
from lwcli.validation import MAX_K

DOCUMENTED = {0, 2, 3, 4, 5, 6, 7, 8, 9}


def lw(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr


def refused(market: Path, *args, code: int = 4) -> str:
    """Run ``lw *args``; it must exit ``code`` with one line on stderr and leave ``market``
    as it was. Returns that line."""
    before = market_tree(market)
    rc, _, err = lw(*args)
    assert rc == code, (rc, err)
    assert len(err.strip().splitlines()) == 1, err
    assert "internal error" not in err and "Traceback" not in err
    assert market_tree(market) == before
    return err


@pytest.fixture(scope="module")
def base(world, tmp_path_factory):
    """A copy of the shared market (one learnware), the members of a second valid package and
    a user's labelled file."""
    work = tmp_path_factory.mktemp("hostile")
    root = market_copy(world, work / "market")
    b = world["same"]
    with zipfile.ZipFile(b.package) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    X, y = domain_data(1, 300, seed=1)
    write_user(work / "user.csv", X[:60], y[:60])
    return root, work, members, b


def _zip(files: dict[str, bytes], path: Path, method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for n, d in files.items():
            zf.writestr(n, d)
    return path


def _manifest(members) -> dict:
    import tomllib

    return tomllib.loads(members["learnware.toml"].decode())


def _with_manifest(members, m) -> dict:
    files = dict(members)
    files["learnware.toml"] = (m if isinstance(m, str) else tomli_w.dumps(m)).encode()
    return files


def _with_spec(members, s) -> dict:
    files = dict(members)
    files["rkme.json"] = s if isinstance(s, bytes) else (
        s if isinstance(s, str) else json.dumps(s)).encode()
    return files


def _set(d: dict, path: str, value) -> dict:
    d = copy.deepcopy(d)
    *head, last = path.split(".")
    node = d
    for k in head:
        node = node[k]
    node[last] = value
    return d


# ------------------------------------------------------------- 7. wrong types, deep nesting

MANIFEST_FIELDS = ["name", "version", "description", "license", "tags", "data_type", "task",
                   "objective", "input", "input.features", "output", "output.dimension",
                   "output.names", "model", "model.format", "model.file", "package"]


@pytest.mark.parametrize("field", MANIFEST_FIELDS)
def test_manifest_fields_of_the_wrong_type_are_exit_4(base, tmp_path, field):
    root, work, members, _ = base
    m = _manifest(members)
    for value in (1, 1.5, True, [1], {"a": 1}, [[1]], 10 ** 30):
        if field in ("package", "output.names") and isinstance(value, dict):
            continue                                   # a table there is allowed
        if field == "output.dimension" and value == 1 and type(value) is int:
            continue                                   # the valid value
        p = _zip(_with_manifest(members, _set(m, field, value)), tmp_path / "p.lw")
        refused(root, "submit", p, "--market", root)


@pytest.mark.parametrize("text", [
    "a = " + "[" * 5000 + "]" * 5000,                  # RecursionError in tomllib
    "a = " + "{b=" * 3000 + "1" + "}" * 3000,
    "a = " + "1" * 5000,                               # an integer past Python's digit limit
])
def test_deep_or_huge_toml_is_exit_4(base, tmp_path, text):
    root, work, members, b = base
    p = _zip(_with_manifest(members, text), tmp_path / "p.lw")
    assert "learnware.toml" in refused(root, "submit", p, "--market", root)
    (tmp_path / "learnware.toml").write_text(text)
    refused(root, "pack", "--model", b.model, "--spec", b.spec, "--meta",
            tmp_path / "learnware.toml", "-o", tmp_path / "x.lw")


def _spec(members) -> dict:
    return json.loads(members["rkme.json"])


SPEC_EDITS = {
    "beta strings": lambda s: _set(s, "beta", [str(b) for b in s["beta"]]),
    "beta bools": lambda s: _set(s, "beta", [True] + [False] * (len(s["beta"]) - 1)),
    "beta dict": lambda s: _set(s, "beta", {"a": 1}),
    "beta null": lambda s: _set(s, "beta", None),
    "points uneven": lambda s: _set(s, "points", [s["points"][0][:-1]] + s["points"][1:]),
    "points strings": lambda s: _set(s, "points", [[str(v) for v in r] for r in s["points"]]),
    "point over float32": lambda s: _set(s, "points", [[1e39] + r[1:] for r in s["points"]]),
    "point 1e308": lambda s: _set(s, "points", [[1e308] + r[1:] for r in s["points"]]),
    "metric list": lambda s: _set(s, "metric", [1]),
    "metric null": lambda s: _set(s, "metric", None),
    "scales strings": lambda s: _set(s, "metric.scales", ["1"] * len(s["metric"]["scales"])),
    "scale tiny": lambda s: _set(s, "metric.scales", [1e-300] * len(s["metric"]["scales"])),
    "gamma huge": lambda s: _set(s, "metric.gamma", 1e308),
    "n_inputs float": lambda s: _set(s, "metric.n_inputs", 1e308),
    "n_rows negative": lambda s: _set(s, "n_rows", -5),
    "n_rows huge float": lambda s: _set(s, "n_rows", 1e308),
    "seed float": lambda s: _set(s, "seed", 1e308),
    "approx_error bool": lambda s: _set(s, "approx_error", True),
    "approx_error string": lambda s: _set(s, "approx_error", "0.1"),
    "features dict": lambda s: _set(s, "features", {"f0": 1}),
    "outputs numbers": lambda s: _set(s, "outputs", [1]),
    "fit_info list": lambda s: _set(s, "fit_info", [1]),
    "kind wrong": lambda s: _set(s, "kind", "input"),
    "task wrong": lambda s: _set(s, "task", 5),
}


@pytest.mark.parametrize("edit", sorted(SPEC_EDITS))
def test_malformed_rkme_json_is_exit_4(base, tmp_path, edit):
    root, work, members, _ = base
    s = SPEC_EDITS[edit](_spec(members))
    p = _zip(_with_spec(members, s), tmp_path / "p.lw")
    refused(root, "submit", p, "--market", root)
    # the same file as a user's requirement
    (tmp_path / "req.json").write_text(json.dumps(s))
    refused(root, "search", "--spec", tmp_path / "req.json", "--market", root)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000,
                                  '{"format": "lw-rkme", "version": 1, "n_rows": ' + "1" * 5000 + "}",
                                  b"\xff\xfe{}"])
def test_deep_or_huge_json_is_exit_4(base, tmp_path, text):
    root, work, members, _ = base
    p = _zip(_with_spec(members, text), tmp_path / "p.lw")
    refused(root, "submit", p, "--market", root)


def _eocd_offset(b: bytes, delta: int) -> bytes:
    i = b.rfind(b"PK\x05\x06")
    off = struct.unpack("<I", b[i + 16:i + 20])[0]
    return b[:i + 16] + struct.pack("<I", (off + delta) & 0xFFFFFFFF) + b[i + 20:]


def _patch_headers(b: bytes, *, flag: int = 0, method: int | None = None) -> bytes:
    b = bytearray(b)
    for sig, flag_at, method_at in ((b"PK\x01\x02", 8, 10), (b"PK\x03\x04", 6, 8)):
        i = b.find(sig)
        while i >= 0:
            f = struct.unpack("<H", b[i + flag_at:i + flag_at + 2])[0] | flag
            b[i + flag_at:i + flag_at + 2] = struct.pack("<H", f)
            if method is not None:
                b[i + method_at:i + method_at + 2] = struct.pack("<H", method)
            i = b.find(sig, i + 4)
    return bytes(b)


ZIP_DAMAGE = {
    "central directory past its place": lambda b: _eocd_offset(b, 100),
    "central directory before its place": lambda b: _eocd_offset(b, -10),
    "central directory offset huge": lambda b: _eocd_offset(b, 10 ** 9),
    "member flagged encrypted": lambda b: _patch_headers(b, flag=1),
    "unknown compression method": lambda b: _patch_headers(b, method=99),
    "bzip2 claimed": lambda b: _patch_headers(b, method=12),
    "lzma claimed": lambda b: _patch_headers(b, method=14),
    "truncated": lambda b: b[: len(b) // 2],
    "empty": lambda b: b"",
}


@pytest.mark.parametrize("damage", sorted(ZIP_DAMAGE))
def test_malformed_zips_are_exit_4(base, tmp_path, damage):
    root, work, members, b = base
    p = tmp_path / "p.lw"
    p.write_bytes(ZIP_DAMAGE[damage](b.package.read_bytes()))
    refused(root, "submit", p, "--market", root)


def test_saved_reuser_with_a_malformed_zip_is_exit_4(base, tmp_path):
    root, work, members, b = base
    p = tmp_path / "r.lwr"
    p.write_bytes(_patch_headers(b.package.read_bytes(), flag=1))
    refused(root, "reuse", "--model", p, "--data", work / "user.csv", "-o", tmp_path / "o.csv")


def test_a_data_file_holding_1e308_is_one_line_exit_4(base, tmp_path):
    root, work, _, _ = base
    frame = pd.read_csv(work / "user.csv")
    frame.iloc[3, 1] = 1e308
    frame.to_csv(tmp_path / "big.csv", index=False)
    err = refused(root, "search", "--data", tmp_path / "big.csv", "--target", "y", "--market",
                  root)
    assert "float32" in err and "RuntimeWarning" not in err
    refused(root, "spec", tmp_path / "big.csv", "--k", "10", "-o", tmp_path / "s.json")
    frame.iloc[3, 1] = 0.0
    frame["f1"] = 1e30                        # fits float32, but its square does not
    frame.to_csv(tmp_path / "const.csv", index=False)
    refused(root, "spec", tmp_path / "const.csv", "--k", "10", "-o", tmp_path / "s.json")


# -------------------------------------------------------------------- 8. silently accepted

def test_duplicate_csv_columns_are_refused_by_every_reader(base, tmp_path):
    root, work, _, _ = base
    lines = (work / "user.csv").read_text().splitlines()
    lines[0] = lines[0].replace("f2", "f1")                   # f0,f1,f1,f3,y
    (tmp_path / "dup.csv").write_text("\n".join(lines) + "\n")
    lw_id = next(p.name for p in (root / "learnwares").iterdir())
    for args in (["spec", tmp_path / "dup.csv", "--k", "10", "-o", tmp_path / "s.json"],
                 ["search", "--data", tmp_path / "dup.csv", "--target", "y", "--market", root],
                 ["reuse", lw_id, "--data", tmp_path / "dup.csv", "--market", root, "-o",
                  tmp_path / "o.csv"],
                 ["anchor-eval", "--data", tmp_path / "dup.csv", "--target", "y", "--market",
                  root, "-o", tmp_path / "a.json"]):
        assert "duplicate column" in refused(root, *args), args


# -------------------------------------------------------------------- 9. bounded resources

def test_a_specification_over_the_k_limit_is_refused_before_any_kernel(base, tmp_path):
    root, work, members, _ = base
    s = _spec(members)
    d = len(s["metric"]["scales"])
    rng = np.random.default_rng(0)
    k = MAX_K + 1
    s["beta"] = [1.0 / k] * k                                  # a valid simplex
    s["points"] = rng.normal(size=(k, d)).round(3).tolist()
    s["k"] = k
    p = _zip(_with_spec(members, s), tmp_path / "p.lw")
    assert str(MAX_K) in refused(root, "submit", p, "--market", root)


def test_manifest_lists_and_strings_are_bounded(base, tmp_path):
    root, work, members, _ = base
    m = _manifest(members)
    for edit in (_set(m, "tags", [f"t{i}" for i in range(1000)]),
                 _set(m, "description", "x" * 1_000_000),
                 _set(m, "version", "1" * 1000),
                 _set(m, "output.dimension", 10 ** 6)):
        p = _zip(_with_manifest(members, edit), tmp_path / "p.lw")
        refused(root, "submit", p, "--market", root)


def test_self_norms_in_row_blocks_equal_the_dense_ones(monkeypatch):
    """A large K never builds the K x K Gram matrix at once; same values as the dense sum."""
    import lwcli.engine.kernel as kernel
    import lwcli.engine.search as search

    rng = np.random.default_rng(3)
    points = rng.normal(size=(3, 40, 5)).astype(np.float32)
    beta = rng.dirichlet(np.ones(40), size=3).astype(np.float32)
    dense = search._self_terms(points, beta, 0.3, None)
    monkeypatch.setattr(kernel, "CHUNK_ELEMENTS", 64)          # 40 x 40 > 64: row blocks
    blocked = search._self_terms(points, beta, 0.3, None)
    np.testing.assert_allclose(blocked, dense, rtol=1e-5)


# ------------------------------------------------------------------- 10. name collisions

@pytest.mark.parametrize("name", ["record.json", "RECORD.JSON", "Rkme.json", "learnware.toml",
                                  ".hidden.skops", "m\x1b[2J.skops", "a/b.skops", "..skops",
                                  "model.pkl", "x" * 200 + ".skops", "model.skops "])
def test_model_file_names_that_collide_or_are_odd_are_refused(base, tmp_path, name):
    root, work, members, b = base
    m = _set(_manifest(members), "model.file", name)
    files = _with_manifest(members, m)
    files[name] = files.pop("model.skops")
    p = _zip(files, tmp_path / "p.lw")
    refused(root, "submit", p, "--market", root)
    if name == "model.pkl":
        return                    # lw pack names the model file model.skops itself
    (tmp_path / "learnware.toml").write_text(tomli_w.dumps(m))
    refused(root, "pack", "--model", b.model, "--spec", b.spec, "--meta",
            tmp_path / "learnware.toml", "-o", tmp_path / "x.lw")


# --------------------------------------------------------------- 11. text shown raw

def test_escape_sequences_from_a_package_never_reach_the_terminal(base, tmp_path):
    root, work, members, _ = base
    evil = "evil \x1b]0;PWNED\x07 \x1b[2J [bold red]x[/] \x9b31m \u202eabc"
    m = _set(_manifest(members), "description", evil)
    p = _zip(_with_manifest(members, m), tmp_path / "evil.lw")
    code, out, err = lw("submit", p, "--market", root)
    assert code == 0, err
    lw_id = out.strip()
    code, out, err = lw("market", "info", lw_id, "--market", root)
    assert code == 0, err
    shown = out + err
    for ch in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert ch not in shown
    assert "\\x1b]0;PWNED\\x07" in out and "[bold red]x[/]" in out   # visible, not markup
    code, out, _ = lw("market", "info", lw_id, "--market", root, "--json")
    doc = json.loads(out)
    assert doc["manifest"]["description"] == evil                     # JSON stays exact
    assert "\x1b" not in out and "\x9b" not in out and len(out.splitlines()) > 1
    code, out, _ = lw("market", "ls", "--market", root, "--format", "jsonl")
    assert all(json.loads(line) for line in out.splitlines())


def test_safe_text_escapes_every_control_character():
    from lwcli.cli._output import safe_text

    raw = "".join(chr(c) for c in (*range(0, 0x20), *range(0x7f, 0xa0), 0x202E, 0x2066)) + "ok é"
    shown = safe_text(raw)
    assert shown.endswith("ok é") and shown.isprintable()
    assert safe_text("a\tb\nc", lines=True) == "a\tb\nc"


def test_a_negative_or_huge_seed_is_a_usage_error(base, tmp_path):
    root, work, _, _ = base
    for seed in ("-3", "99999999999999999999"):
        refused(root, "spec", work / "user.csv", "--k", "5", "--seed", seed, "-o",
                tmp_path / "s.json", code=2)


def test_deeply_nested_search_results_and_anchor_reports_are_exit_4(base, tmp_path):
    root, work, _, _ = base
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    refused(root, "reuse", "--from-search", deep, "--data", work / "user.csv", "--market", root,
            "-o", tmp_path / "o.csv")
    refused(root, "search", "--anchor-report", deep, "--market", root)
