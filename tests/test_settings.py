"""Settings from the environment: read in lwcli/settings.py only, each with its default, and
an unusable value is a one-line usage error (exit 2) naming the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lwcli import settings
from lwcli.cli.main import app
from lwcli.errors import UsageError
from lwcli.market.store import utcnow

PACKAGE = Path(settings.__file__).parent
READS = re.compile(r"os\.environ|getenv|environ\[|envvar\s*=")
#: Places that hand the whole environment on to a child process: they read no setting.
PASS_THROUGH = {"market/contained.py": ["dict(os.environ, OMP_NUM_THREADS="],
                "market/forkserver.py": ["os.environ.clear()", "os.environ.update(json.loads("]}


def test_only_settings_reads_the_environment():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "settings.py":
            continue
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if READS.search(line) and not any(ok in line for ok in PASS_THROUGH.get(rel, [])):
                found.append(f"{rel}:{no}: {line.strip()}")
    assert not found, "read the environment through lwcli.settings:\n" + "\n".join(found)


def test_unset_and_empty_mean_the_defaults(monkeypatch):
    for name in ("LW_MARKET", "LW_DEVICE", "LW_DEBUG", "LW_QA_TIMEOUT", "LW_MAX_MODEL_MB",
                 "LW_CRASH_AT", "LW_FAIL_AT", "SOURCE_DATE_EPOCH"):
        monkeypatch.setenv(name, "")
    assert settings.market() is None and settings.device() is None
    assert settings.debug() is False
    assert settings.qa_timeout() == 60.0 and settings.max_model_bytes() == 512 << 20
    assert settings.crash_at() == "" and settings.fail_at() == ""
    assert settings.source_date_epoch() is None
    monkeypatch.delenv("LW_DEVICE")
    assert settings.device() is None


def test_values_are_read_when_asked(monkeypatch):
    monkeypatch.setenv("LW_MARKET", "/some/market")
    monkeypatch.setenv("LW_DEVICE", "cuda:1")
    monkeypatch.setenv("LW_DEBUG", "1")
    monkeypatch.setenv("LW_QA_TIMEOUT", "2.5")
    monkeypatch.setenv("LW_MAX_MODEL_MB", "1")
    monkeypatch.setenv("LW_CRASH_AT", "submit:locked@2")
    monkeypatch.setenv("LW_FAIL_AT", "index:staged=EROFS")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    assert settings.market() == "/some/market" and settings.device() == "cuda:1"
    assert settings.debug() is True
    assert settings.qa_timeout() == 2.5 and settings.max_model_bytes() == 1 << 20
    assert settings.crash_at() == "submit:locked@2"
    assert settings.fail_at() == "index:staged=EROFS"
    assert settings.source_date_epoch() == 1767225600
    assert utcnow() == "2026-01-01T00:00:00+00:00"
    monkeypatch.setenv("LW_QA_TIMEOUT", "7")
    assert settings.qa_timeout() == 7.0


@pytest.mark.parametrize("name,value,read", [
    ("LW_QA_TIMEOUT", "soon", settings.qa_timeout),
    ("LW_QA_TIMEOUT", "-1", settings.qa_timeout),
    ("LW_MAX_MODEL_MB", "0", settings.max_model_bytes),
    ("LW_MAX_MODEL_MB", "big", settings.max_model_bytes),
    ("SOURCE_DATE_EPOCH", "2026-01-01", settings.source_date_epoch),
])
def test_an_unusable_value_is_a_one_line_usage_error(monkeypatch, name, value, read):
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError) as info:
        read()
    text = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in text
    assert f"{name}={value!r}" in text and f"unset {name}" in text


def test_the_cli_takes_market_and_device_from_settings(monkeypatch, tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["market", "init", str(tmp_path / "m")]).exit_code == 0
    monkeypatch.setenv("LW_MARKET", str(tmp_path / "m"))
    res = runner.invoke(app, ["market", "ls", "--json"])
    assert res.exit_code == 0 and '"learnwares": []' in res.stdout
    monkeypatch.setenv("LW_MARKET", str(tmp_path / "elsewhere"))
    res = runner.invoke(app, ["market", "ls", "--market", str(tmp_path / "m"), "--json"])
    assert res.exit_code == 0, "a flag wins over its variable"
    monkeypatch.delenv("LW_MARKET")
    res = runner.invoke(app, ["market", "ls"])
    assert res.exit_code == 3 and "set LW_MARKET" in res.stderr
    monkeypatch.setenv("LW_DEVICE", "tpu")
    res = runner.invoke(app, ["market", "verify", "--market", str(tmp_path / "m")])
    assert res.exit_code == 6 and "LW_DEVICE" in res.stderr


def test_help_names_the_variables():
    text = CliRunner().invoke(app, ["market", "verify", "--help"], env={"COLUMNS": "200"}).stdout
    assert "$LW_MARKET" in text and "$LW_DEVICE" in text


def test_a_bad_source_date_epoch_is_exit_2_not_an_internal_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    res = CliRunner().invoke(app, ["market", "init", str(tmp_path / "m")])
    assert res.exit_code == 2 and "SOURCE_DATE_EPOCH='yesterday'" in res.stderr


def test_the_library_takes_the_market_from_lw_market_as_the_cli_does(monkeypatch, tmp_path):
    """api calls with market=None used to say "set LW_MARKET" while it was set."""
    from lwcli import api

    api.market_init(tmp_path / "m")
    monkeypatch.setenv("LW_MARKET", str(tmp_path / "m"))
    assert api.market_ls(None) == []
    assert api.market_verify(None).to_dict()["ok"] is True
    monkeypatch.delenv("LW_MARKET")
    from lwcli.errors import NotFoundError

    with pytest.raises(NotFoundError, match="set LW_MARKET"):
        api.market_ls(None)
