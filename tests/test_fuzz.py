"""Fuzzing every input lw takes from strangers: package bytes, rkme.json, learnware.toml,
requirement specifications and data files, through the CLI's own entry point (in-process, for
speed; the exit code is the one the real boundary maps each exception to).

For every example: the exit code is a documented one and never 1 (an internal error), no
traceback is printed, a failing command writes one line on stderr, and leaves the market byte
for byte as it was (names and contents).

``make test`` runs a few examples per input, derandomized (the same ones every run);
``make fuzz`` runs the hypothesis profile ``fuzz`` (registered in conftest.py) for about ten
minutes, with fresh random examples.
"""

from __future__ import annotations

import copy
import io
import json
import math
import zipfile
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import domain_data, market_copy, market_tree, write_user
from lwcli import api
from lwcli.cli.main import app

DOCUMENTED = {0, 2, 3, 4, 5, 6, 7, 8, 9}
FUZZ = settings.get_current_profile_name() == "fuzz"
HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
          HealthCheck.data_too_large, HealthCheck.filter_too_much]
# make test: a handful of fixed examples per input; make fuzz: the profile decides
fuzz_settings = (settings(deadline=None, suppress_health_check=HEALTH) if FUZZ else
                 settings(max_examples=12, deadline=None, derandomize=True, database=None,
                          suppress_health_check=HEALTH))


market_state = market_tree


def check(root: Path, *args) -> int:
    before = market_state(root)
    res = CliRunner().invoke(app, [str(a) for a in args])
    err = res.stderr
    assert res.exit_code in DOCUMENTED, (res.exit_code, err, args)
    assert "Traceback" not in err and "internal error" not in err, err
    if res.exit_code != 0:
        assert len(err.strip().splitlines()) <= 1, err
        assert market_state(root) == before, f"a failed lw {args[0]} changed the market: {err}"
    return res.exit_code


@pytest.fixture(scope="module")
def fx(world, tmp_path_factory):
    """A copy of the shared market (one learnware), a second valid package (bytes, members,
    its folder's files), a user's CSV and a requirement fitted from it."""
    work = tmp_path_factory.mktemp("fuzz")
    root = market_copy(world, work / "market")
    b = world["same"]
    with zipfile.ZipFile(b.package) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    X, y = domain_data(1, 300, seed=1)
    user = write_user(work / "user.csv", X[:40], y[:40])
    req = work / "req.json"
    api.write_spec(api.build_spec(user, target="y", market=root, k=10, seed=0), req)
    return {"root": root, "work": work, "package": b.package.read_bytes(), "members": members,
            "csv": user.read_text(), "req": json.loads(req.read_text()), "built": b}


# ------------------------------------------------------------------------ strategies

SPECIAL_FLOATS = st.sampled_from([0.0, -0.0, 1e308, -1e308, 1e39, -3.5e38, 1e-320, 5e-324,
                                  math.inf, -math.inf, math.nan, 1e15, 1e16])
LEAF = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | SPECIAL_FLOATS
        | st.floats(allow_nan=True) | st.text(max_size=8))
JSON = st.recursive(LEAF, lambda c: st.lists(c, max_size=4)
                    | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=12)
TOML_LEAF = (st.booleans() | st.integers(-2 ** 63, 2 ** 63 - 1) | SPECIAL_FLOATS
             | st.text(max_size=8))
TOML_VALUE = st.recursive(TOML_LEAF, lambda c: st.lists(c, max_size=4)
                          | st.dictionaries(st.text(min_size=1, max_size=6), c, max_size=4),
                          max_leaves=10)


def mutate_tree(data, tree, leaf, times: int = 3):
    """``tree`` with up to ``times`` nodes replaced by a drawn value or deleted."""
    tree = copy.deepcopy(tree)
    for _ in range(data.draw(st.integers(1, times))):
        node, path = tree, []
        while isinstance(node, (dict, list)) and node and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(node) if isinstance(node, dict)
                                            else range(len(node))))
            path.append(key)
            node = node[key]
        if not path:
            continue
        parent = tree
        for k in path[:-1]:
            parent = parent[k]
        if data.draw(st.integers(0, 4)) == 0:
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(leaf)
    return tree


def zip_members(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for n, d in files.items():
            zf.writestr(n, d)
    return buf.getvalue()


def mutate_bytes(data, blob: bytes) -> bytes:
    b = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "zero"]))
        if not b:
            break
        i = data.draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "truncate":
            del b[i:]
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            b[i:i + 4] = b"\0\0\0\0"
    return bytes(b)


# ------------------------------------------------------------------------ the fuzz tests

@fuzz_settings
@given(data=st.data())
def test_fuzz_package_bytes(fx, tmp_path_factory, data):
    blob = fx["package"]
    how = data.draw(st.sampled_from(["bytes", "swap", "drop", "extra"]))
    m = dict(fx["members"])
    if how == "bytes":
        blob = mutate_bytes(data, blob)
    elif how == "swap":                    # one member's content under another's name
        a, b = data.draw(st.permutations(sorted(m)))[:2]
        m[a], m[b] = m[b], m[a]
        blob = zip_members(m)
    elif how == "drop":
        m.pop(data.draw(st.sampled_from(sorted(m))))
        blob = zip_members(m)
    else:
        m[data.draw(st.sampled_from(["record.json", "../x", "a/b", ".x", "model.onnx"]))] = b"x"
        blob = zip_members(m)
    p = tmp_path_factory.mktemp("p") / "p.lw"
    p.write_bytes(blob)
    check(fx["root"], "submit", p, "--market", fx["root"])


@fuzz_settings
@given(data=st.data())
def test_fuzz_rkme_json(fx, tmp_path_factory, data):
    m = dict(fx["members"])
    spec = mutate_tree(data, json.loads(m["rkme.json"]), JSON)
    m["rkme.json"] = json.dumps(spec).encode()
    p = tmp_path_factory.mktemp("p") / "p.lw"
    p.write_bytes(zip_members(m))
    check(fx["root"], "submit", p, "--market", fx["root"])


@fuzz_settings
@given(data=st.data())
def test_fuzz_learnware_toml(fx, tmp_path_factory, data):
    import tomllib

    m = dict(fx["members"])
    if data.draw(st.booleans()):
        man = mutate_tree(data, tomllib.loads(m["learnware.toml"].decode()), TOML_VALUE)
        try:
            text = tomli_w.dumps(man)
        except (TypeError, ValueError):
            return
    else:                                  # raw text edits: syntax errors, odd characters
        text = mutate_bytes(data, m["learnware.toml"]).decode("utf-8", errors="replace")
    m["learnware.toml"] = text.encode()
    d = tmp_path_factory.mktemp("p")
    (d / "p.lw").write_bytes(zip_members(m))
    check(fx["root"], "submit", d / "p.lw", "--market", fx["root"])
    (d / "learnware.toml").write_text(text)
    b = fx["built"]
    check(fx["root"], "pack", "--model", b.model, "--spec", b.spec,
          "--meta", d / "learnware.toml", "-o", d / "x.lw")


@fuzz_settings
@given(data=st.data())
def test_fuzz_requirement_spec(fx, tmp_path_factory, data):
    req = mutate_tree(data, fx["req"], JSON)
    p = tmp_path_factory.mktemp("r") / "req.json"
    p.write_text(json.dumps(req))
    check(fx["root"], "search", "--spec", p, "--market", fx["root"], "--rerank",
          data.draw(st.sampled_from(["0", "3"])))


CELLS = (st.sampled_from(["", "nan", "NaN", "1e308", "-1e308", "1e39", "inf", "-inf", "abc",
                          "1,5", '"', "1e-320", "0x10", " 3 ", "TRUE", "1e30", "?", "y",
                          "f1", "PM10"])
         | st.text(max_size=6) | st.floats(allow_nan=False).map(repr))


@fuzz_settings
@given(data=st.data())
def test_fuzz_data_files(fx, tmp_path_factory, data):
    rows = [line.split(",") for line in fx["csv"].splitlines()]
    for _ in range(data.draw(st.integers(1, 5))):
        op = data.draw(st.sampled_from(["cell", "column", "header", "drop", "truncate"]))
        i = data.draw(st.integers(0, len(rows) - 1))
        if op == "cell" and rows[i]:
            rows[i][data.draw(st.integers(0, len(rows[i]) - 1))] = data.draw(CELLS)
        elif op == "column" and rows[0]:   # one value in a whole column (constant, huge)
            j = data.draw(st.integers(0, len(rows[0]) - 1))
            v = data.draw(CELLS)
            for r in rows[1:]:
                if j < len(r):
                    r[j] = v
        elif op == "header" and rows[0]:   # duplicate or odd column names
            rows[0][data.draw(st.integers(0, len(rows[0]) - 1))] = data.draw(CELLS)
        elif op == "drop" and len(rows) > 1:
            del rows[i]
        elif op == "truncate" and rows[i]:
            del rows[i][data.draw(st.integers(0, len(rows[i]) - 1)):]
    p = tmp_path_factory.mktemp("d") / "d.csv"
    p.write_text("\n".join(",".join(r) for r in rows) + "\n")
    root = fx["root"]
    if data.draw(st.booleans()):
        check(root, "spec", p, "--k", "5", "--clamp-k", "-o", p.with_suffix(".json"),
              *(["--target", "y"] if data.draw(st.booleans()) else []))
    else:
        check(root, "search", "--data", p, "--market", root, "--rerank", "3",
              *(["--target", "y"] if data.draw(st.booleans()) else []))
