"""Which score ranks an island from an anchor report, and the hope assessment
(lwcli.engine.anchors: anchor_metric, best_scored, assess_hope)."""

from __future__ import annotations

import pytest

from lwcli.engine.anchors import (HOPELESS_SKILL, anchor_metric, as_loss, assess_hope,
                                  best_scored, inconsistency_warning)


@pytest.mark.parametrize("task, objective, expected", [
    ("classification", "accuracy", ("accuracy", "disagreement")),
    ("classification", "f1", ("accuracy", "disagreement")),
    ("regression", "rmse", ("rmse", "rms")),
    ("regression", "r2", ("rmse", "rms")),
    ("regression", "mae", ("mae", "mae")),
])
def test_anchor_metric(task, objective, expected):
    assert anchor_metric(task, objective) == expected


SCORES = [{"id": "a", "name": "A", "scores": {"rmse": 1.0, "mae": 0.9}},
          {"id": "b", "name": "B", "scores": {"rmse": 1.2, "mae": 0.5}}]


def test_the_best_anchor_of_an_mae_island_is_the_best_by_mae():
    """An island whose objective is MAE is ranked by MAE (README: the bounds hold per
    metric), so its best anchor is the lowest MAE: here B, though A has the lower RMSE."""
    metric, _ = anchor_metric("regression", "mae")
    assert best_scored(SCORES, metric)["id"] == "b"
    assert best_scored(SCORES, anchor_metric("regression", "rmse")[0])["id"] == "a"


def test_the_cli_summary_names_the_mae_best(monkeypatch, tmp_path):
    """The CLI prints what the API chose: no second choice of metric in the CLI."""
    from typer.testing import CliRunner

    from lwcli import api
    from lwcli.api.anchors import AnchorEvalResult
    from lwcli.cli.main import app

    report = {"n_rows": 30, "scores": SCORES, "baseline": {"rmse": 2.0, "mae": 1.5},
              "task": "regression", "objective": "mae"}
    monkeypatch.setattr(api, "anchor_eval", lambda *a, **k: AnchorEvalResult(
        report, "mae", best_scored(SCORES, "mae")))
    res = CliRunner().invoke(app, ["anchor-eval", "--data", str(tmp_path / "u.csv"), "-t", "y",
                                   "-o", str(tmp_path / "r.json"), "--market", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "best B mae 0.5 (constant prediction: 1.5)" in " ".join(res.output.split())


def test_accuracy_is_read_as_a_loss():
    assert as_loss([0.75], "accuracy").tolist() == [0.25]
    assert as_loss([0.75], "rmse").tolist() == [0.75]
    assert best_scored([{"scores": {"accuracy": 0.6}}, {"scores": {"accuracy": 0.8}}],
                       "accuracy")["scores"]["accuracy"] == 0.8


def test_hope_is_low_below_the_threshold():
    names = {"a": "A", "b": "B"}
    low = assess_hope({"a": HOPELESS_SKILL / 2, "b": 0.0}, names)
    assert low["hope"] == "low" and low["best_anchor"] == "a"
    assert "little hope" in low["message"]
    ok = assess_hope({"a": 0.5, "b": 0.1}, names)
    assert ok == {"hope": "ok", "best_anchor": "a", "best_anchor_skill": 0.5,
                  "message": "the best anchor, A, is 50% better than a constant prediction"}


def test_inconsistency_warns_above_a_quarter():
    assert inconsistency_warning(0.25) is None
    assert "30% of the learnwares" in inconsistency_warning(0.3)
