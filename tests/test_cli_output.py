"""The CLI's output contracts on the shipped sample market: a closed pipe, the row formats for
scripts, damaged stored learnwares, and the versioned JSON documents with their schemas. A
closed pipe and $COLUMNS need the real entry point (``system``); the rest runs in process."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, run_lw
from lwcli import api

SAMPLE = ROOT / "sample_market"
USER = SAMPLE / "user"
DEV = SAMPLE / "developer"
SCHEMAS = ROOT / "schemas"
ID = re.compile(r"\b[0-9a-f]{16}\b")


@pytest.fixture(scope="module")
def sm(tmp_path_factory) -> Path:
    """A copy of the sample market that the tests of this module only read."""
    root = tmp_path_factory.mktemp("sample") / "market"
    shutil.copytree(SAMPLE / "market", root)
    return root


@pytest.fixture(scope="module")
def req(sm, tmp_path_factory) -> Path:
    """The sample user's labelled requirement (fitted once: searches with it are quicker)."""
    path = tmp_path_factory.mktemp("req") / "req.json"
    api.write_spec(api.build_spec(USER / "wanshouxigong_200h.csv", target="PM2.5", market=sm,
                                  seed=0), path)
    return path


@pytest.fixture
def damaged(tmp_path) -> Path:
    """A copy of the sample market of one's own, to break."""
    root = tmp_path / "market"
    shutil.copytree(SAMPLE / "market", root)
    return root


def _lw(args, **kw) -> subprocess.Popen:
    """``python -m lwcli.cli.main ARGS``: the lw of this checkout."""
    env = {**os.environ, "LW_DEVICE": "cpu", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "lwcli.cli.main", *map(str, args)],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **kw)


# ------------------------------------------------------------------------- a closed pipe

@pytest.mark.system
@pytest.mark.parametrize("extra", [[], ["--json"]], ids=["table", "json"])
def test_market_ls_into_head_exits_141_quietly(sm, extra):
    """`lw market ls | head -c 1`: the reader takes one byte and goes away."""
    import fcntl

    r, w = os.pipe()
    fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)  # the output is far larger
    proc = _lw(["market", "ls", "--market", sm, *extra], stdout=w)
    os.close(w)
    try:
        assert len(os.read(r, 1)) == 1
    finally:
        os.close(r)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 141, stderr
    assert stderr == b""                            # no traceback, no "internal error"


def _into_closed_pipe(args) -> tuple[int, str]:
    """Run lw with a stdout whose reader is already gone: its first write breaks the pipe."""
    r, w = os.pipe()
    os.close(r)
    proc = _lw(args, stdout=w, text=True)
    os.close(w)
    _, stderr = proc.communicate(timeout=300)
    return proc.returncode, stderr


def _search_args(sm, req):
    return ["search", "--spec", req, "--market", sm, "--top", "5", "--rerank", "2"]


CLOSED_PIPE = [
    ("help", lambda sm: ["--help"]),                 # written by typer, outside lw's boundary
    ("market help", lambda sm: ["market", "--help"]),
    ("ls table", lambda sm: ["market", "ls", "--market", sm]),
    ("ls tsv", lambda sm: ["market", "ls", "--market", sm, "--format", "tsv"]),
    ("ls csv", lambda sm: ["market", "ls", "--market", sm, "--format", "csv"]),
    ("ls jsonl", lambda sm: ["market", "ls", "--market", sm, "--format", "jsonl"]),
    ("ls -q", lambda sm: ["market", "ls", "--market", sm, "-q"]),
    ("info", lambda sm: ["market", "info", sorted(os.listdir(sm / "learnwares"))[0],
                         "--market", sm]),
    ("info json", lambda sm: ["market", "info", sorted(os.listdir(sm / "learnwares"))[0],
                              "--market", sm, "--json"]),
    ("search table", lambda sm, req: _search_args(sm, req)),
    ("search json", lambda sm, req: [*_search_args(sm, req), "--json"]),
    ("search tsv", lambda sm, req: [*_search_args(sm, req), "--format", "tsv"]),
    ("search -q", lambda sm, req: [*_search_args(sm, req), "-q"]),
    ("reuse csv to stdout", lambda sm: ["reuse", sorted(os.listdir(sm / "learnwares"))[0],
                                        "--data", USER / "wanshouxigong_new_hours.csv",
                                        "--target", "PM2.5", "--market", sm, "-o", "-"]),
]


@pytest.mark.system
@pytest.mark.parametrize("label,args", CLOSED_PIPE, ids=[c[0] for c in CLOSED_PIPE])
def test_every_output_into_a_closed_pipe_exits_141(sm, req, label, args):
    code, stderr = _into_closed_pipe(args(sm, req) if label.startswith("search") else args(sm))
    assert code == 141, stderr
    assert "error" not in stderr and "Traceback" not in stderr, stderr
    if not label.startswith("reuse"):          # reuse logs its summary on stderr, as always
        assert stderr == ""


# ------------------------------------------------------------------------- formats for scripts

def _out(args, check=0) -> str:
    return run_cli(*args, check=check).stdout


def test_market_ls_formats_give_exactly_the_ids(sm):
    rows = api.market_ls(sm)
    ids = [r["id"] for r in rows]
    assert len(ids) == 48
    ls = ["market", "ls", "--market", sm]
    assert _out([*ls, "-q"]).splitlines() == ids
    assert _out([*ls, "--quiet"]).splitlines() == ids
    tsv = [line.split("\t") for line in _out([*ls, "--format", "tsv"]).splitlines()]
    assert tsv[0] == ["id", "island", "name", "version", "model_format", "task", "tags"]
    assert [t[0] for t in tsv[1:]] == ids
    assert all(len(t) == 7 for t in tsv)
    assert tsv[1][6] == ",".join(rows[0]["tags"])
    parsed = list(csv.DictReader(io.StringIO(_out([*ls, "--format", "csv"]))))
    assert [p["id"] for p in parsed] == ids
    assert [p["name"] for p in parsed] == [r["name"] for r in rows]
    jsonl = [json.loads(line) for line in _out([*ls, "--format", "jsonl"]).splitlines()]
    assert jsonl == rows                              # the rows of --json, one per line
    assert [r["id"] for r in json.loads(_out([*ls, "--json"]))["learnwares"]] == ids
    only = _out([*ls, "--island", rows[0]["island"], "-q"]).splitlines()
    assert only == [r["id"] for r in rows if r["island"] == rows[0]["island"]]


@pytest.mark.system
def test_piped_tables_never_fold_an_id(sm):
    """Not a terminal: the table is as wide as its content, whatever $COLUMNS says."""
    rows = api.market_ls(sm)
    for columns in ("40", "200"):
        table = run_lw("market", "ls", "--market", sm, env={"COLUMNS": columns}).stdout
        lines = [line for line in table.splitlines() if ID.search(line)]
        assert [ID.search(line).group(0) for line in lines] == [r["id"] for r in rows]
        for line, r in zip(lines, rows):               # one line per learnware, whole
            assert r["name"] in line and ", ".join(r["tags"]) in line


@pytest.mark.slow
def test_search_formats_give_the_search_result_ids(sm, req):
    res = api.search(sm, spec=req, top=6, rerank=8)
    assert res.ranked_by == "requirement-loss"
    ids = [r["id"] for r in res.single]
    base = ["search", "--spec", req, "--market", sm, "--top", "6", "--rerank", "8"]
    assert _out([*base, "-q"]).splitlines() == ids
    tsv = [line.split("\t") for line in _out([*base, "--format", "tsv"]).splitlines()]
    assert tsv[0] == ["rank", "id", "name", "island", "mmd2", "score", "requirement_loss"]
    assert [t[1] for t in tsv[1:]] == ids and [t[0] for t in tsv[1:]] == ["1", "2", "3", "4",
                                                                          "5", "6"]
    assert float(tsv[1][6]) == pytest.approx(res.single[0]["requirement_loss"])
    parsed = list(csv.DictReader(io.StringIO(_out([*base, "--format", "csv"]))))
    assert [p["id"] for p in parsed] == ids
    assert [float(p["score"]) for p in parsed] == pytest.approx([r["score"] for r in res.single])
    jsonl = [json.loads(line) for line in _out([*base, "--format", "jsonl"]).splitlines()]
    assert [j.pop("rank") for j in jsonl] == list(range(1, 7))
    assert jsonl == res.single


@pytest.mark.system
def test_a_piped_search_table_shows_the_search_result_ids(sm, req):
    """Not a terminal: every id of the table whole, whatever $COLUMNS says."""
    ids = [r["id"] for r in api.search(sm, spec=req, top=6, rerank=8).single]
    base = ["search", "--spec", req, "--market", sm, "--top", "6", "--rerank", "8"]
    table = run_lw(*base, env={"COLUMNS": "40"}).stdout
    assert [m for m in ID.findall(table) if m in ids][:6] == ids and "mixture" in table


def test_format_flags_that_conflict_are_usage_errors(sm):
    ls = ["market", "ls", "--market", sm]
    for extra in (["--json", "-q"], ["--json", "--format", "csv"], ["-q", "--format", "tsv"]):
        proc = run_cli(*ls, *extra, check=2)
        assert proc.stdout == "" and proc.stderr.startswith("lw: error:"), extra
    assert "xml" in run_cli(*ls, "--format", "xml", check=2).stderr


# ------------------------------------------------------------------------- damaged learnwares

def _island_ids(root: Path, task: str) -> list[str]:
    return [r["id"] for r in api.market_ls(root) if r["task"] == task]


def test_market_info_of_a_learnware_without_its_spec_is_exit_5(damaged):
    lw_id = _island_ids(damaged, "regression")[0]
    (damaged / "learnwares" / lw_id / "rkme.json").unlink()
    for extra in ([], ["--json"]):
        proc = run_cli("market", "info", lw_id, "--market", damaged, *extra, check=5)
        assert proc.stdout == ""
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"lw: error: learnware {lw_id} is damaged: its rkme.json is "
                               "missing")
        assert str(damaged / "learnwares" / lw_id / "rkme.json") in line
        assert "lw market verify" in line
    assert run_cli("market", "verify", "--market", damaged, check=5).stdout


def test_reuse_of_a_learnware_without_its_model_is_exit_5(damaged, tmp_path):
    lw_id = _island_ids(damaged, "regression")[0]
    (damaged / "learnwares" / lw_id / "model.skops").unlink()
    proc = run_cli("reuse", lw_id, "--data", USER / "wanshouxigong_new_hours.csv", "--target",
                  "PM2.5", "--market", damaged, "-o", tmp_path / "p.csv", check=5)
    assert "model.skops is missing" in proc.stderr and "lw market verify" in proc.stderr
    assert "internal error" not in proc.stderr
    assert not (tmp_path / "p.csv").exists()


def test_damaged_manifest_and_record_are_exit_5(damaged):
    a, b = _island_ids(damaged, "regression")[:2]
    (damaged / "learnwares" / a / "learnware.toml").write_bytes(b"\xff\xfe not toml")
    proc = run_cli("market", "info", a, "--market", damaged, check=5)
    # checked against its recorded sha256 before it is parsed
    assert "learnware.toml does not match its recorded sha256" in proc.stderr
    assert "lw market verify" in proc.stderr and len(proc.stderr.splitlines()) == 1
    (damaged / "learnwares" / b / "record.json").unlink()
    proc = run_cli("market", "info", b, "--market", damaged, check=5)
    assert "record.json is missing" in proc.stderr


def test_search_that_reranks_a_learnware_without_its_model_is_exit_5(damaged):
    for lw_id in _island_ids(damaged, "regression"):
        (damaged / "learnwares" / lw_id / "model.skops").unlink()
    proc = run_cli("search", "--data", USER / "wanshouxigong_200h.csv", "--target", "PM2.5",
                  "--market", damaged, "--json", check=5)
    assert proc.stdout == ""                            # --json: nothing on stdout on error
    assert "is damaged: its model.skops is missing" in proc.stderr
    assert "lw market verify" in proc.stderr


# ------------------------------------------------------------------------- JSON and schemas

def _validator(name: str):
    from jsonschema import Draft202012Validator

    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _check(name: str, stdout: str) -> dict:
    doc = json.loads(stdout)
    assert doc["schema_version"] == 1 and list(doc)[0] == "schema_version"
    errors = sorted(_validator(name).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, (name, [f"{list(e.path)}: {e.message}" for e in errors[:5]])
    return doc


def test_the_schemas_are_the_json_outputs():
    from lwcli.cli._output import SCHEMAS as NAMES

    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == \
        sorted(f"{n}.schema.json" for n in NAMES)
    for n in NAMES:
        v = _validator(n)
        assert not v.is_valid({"schema_version": 2}) and not v.is_valid([])


@pytest.mark.slow
def test_every_json_output_validates_against_its_schema(tmp_path):
    from lwcli.cli._output import SCHEMAS as NAMES

    mk = tmp_path / "market"
    shutil.copytree(SAMPLE / "market", mk)
    seen: dict[str, dict] = {}

    def lw(name, *args, check=0):
        doc = _check(name, run_cli(*args, "--json", check=check).stdout)
        seen.setdefault(name, doc)
        return doc

    assert lw("market-init", "market", "init", tmp_path / "new")["learnwares"] == 0
    ls = lw("market-ls", "market", "ls", "--market", mk)
    assert len(ls["learnwares"]) == 48
    lw("market-ls", "market", "ls", "--market", tmp_path / "new")
    lw("market-info", "market", "info", ls["learnwares"][0]["id"], "--market", mk)
    lw("market-info", "market", "info", ls["learnwares"][-1]["id"], "--market", mk)
    world = lw("market-world", "market", "info", "--market", mk)
    assert sorted(len(i["features"]) for i in world["islands"]) == [7, 12]
    assert world["features"]["PM10"]["island"] == "table-regression-aa9f758cb3"
    assert world["misaligned"] == {}
    lw("spec", "spec", USER / "wanshouxigong_200h.csv", "--target", "PM2.5", "--market", mk,
       "-o", tmp_path / "req.json")
    (tmp_path / "reqs").mkdir()
    batch = lw("spec-batch", "spec", USER / "wanshouxigong_200h.csv",
               USER / "wanshouxigong_20h.csv", USER / "wanshouxigong_200h_unlabelled.csv",
               "--target", "PM2.5", "--market", mk, "--clamp-k", "--out-dir",
               tmp_path / "reqs", check=4)
    assert len(batch["written"]) == 2 and len(batch["failed"]) == 1    # no PM2.5 column
    run_cli("spec", DEV / "train.csv", "--model", DEV / "model.skops", "--meta",
           DEV / "learnware.toml", "--market", mk, "--k", "30", "-o", tmp_path / "rkme.json")
    pkg = lw("pack", "pack", "--model", DEV / "model.skops", "--spec", tmp_path / "rkme.json",
             "--meta", DEV / "learnware.toml", "-o", tmp_path / "g.lw")
    assert lw("submit", "submit", tmp_path / "g.lw", "--market", mk)["id"] == pkg["id"]
    assert _check("submit", run_cli("submit", tmp_path / "g.lw", "--market", mk,
                                   "--json").stdout)["status"] == "exists"
    search = lw("search", "search", "--data", USER / "wanshouxigong_200h.csv", "--target",
                "PM2.5", "--market", mk)
    (tmp_path / "search.json").write_text(json.dumps(search))
    lw("search", "search", "--data", USER / "wanshouxigong_200h_unlabelled.csv", "--market", mk)
    lw("search", "search", "--spec", tmp_path / "reqs" / "wanshouxigong_20h.rkme.json",
       "--market", mk, "--rerank", "0")
    lw("market-refresh", "market", "refresh", "--market", mk)
    lw("market-verify", "market", "verify", "--market", mk)
    report = run_cli("anchor-eval", "--data", USER / "wanshouxigong_20h.csv", "--target",
                    "PM2.5", "--market", mk, "-o", tmp_path / "report.json", "--json").stdout
    seen["anchor-eval"] = _check("anchor-eval", report)
    (tmp_path / "printed.json").write_text(report)   # the --json output is a report too
    ranked = _check("search", run_cli("search", "--anchor-report", tmp_path / "printed.json",
                                     "--market", mk, "--json").stdout)
    assert ranked["mode"] == "anchors"
    tsv = run_cli("search", "--anchor-report", tmp_path / "report.json", "--market", mk,
                 "--format", "tsv").stdout.splitlines()
    assert tsv[0].split("\t")[:3] == ["rank", "id", "name"]
    assert [t.split("\t")[1] for t in tsv[1:]] == [r["id"] for r in ranked["single"]]
    lw("reuse", "reuse", "--from-search", tmp_path / "search.json", "--top", "2", "--data",
       USER / "wanshouxigong_new_hours.csv", "--target", "PM2.5", "--market", mk, "-o",
       tmp_path / "p.csv")
    assert set(seen) == set(NAMES)
    # a failure: stdout stays empty, so `lw ... --json | jq` never reads half a document
    proc = run_cli("search", "--data", tmp_path / "absent.csv", "--market", mk, "--json",
                  check=3)
    assert proc.stdout == "" and proc.stderr.startswith("lw: error:")
    shutil.rmtree(mk / "learnwares" / pkg["id"])
    (mk / "learnwares" / ls["learnwares"][0]["id"] / "learnware.toml").unlink()
    proc = run_cli("market", "verify", "--market", mk, "--json", check=5)
    assert not _check("market-verify", proc.stdout)["ok"]      # verify's report is its output


@pytest.mark.system
def test_readme_output_for_scripts_examples_run():
    text = (ROOT / "README.md").read_text()
    part = text[text.index("### Output for scripts"):text.index("### JSON output")]
    blocks = re.findall(r"```sh\n(.*?)```", part, re.S)
    assert blocks
    env = {**os.environ, "LW_DEVICE": "cpu",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", "set -eu\n" + "\n".join(blocks)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert ID.fullmatch(lines[0]) and lines[3] == "48" and json.loads(lines[4])["id"]
