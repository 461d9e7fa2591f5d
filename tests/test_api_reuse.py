"""Reusers declare their options as data; make_reuser validates and builds; the saved-search
choice (ids and weights) is read by the API, not the CLI."""

from __future__ import annotations

import json

import pytest

from lwcli.api.reuse import _choose_learnwares, read_search_choice
from lwcli.engine.reuse import METHODS, REUSE_PARAMS, REUSERS, check_reuser_options
from lwcli.errors import InvalidInputError, NotFoundError, UsageError

OPTIONS = dict(voting="soft", random_state=3, cv=4)


def test_every_reuser_declares_known_options():
    for cls in REUSERS.values():
        assert set(cls.reuse_params) <= set(REUSE_PARAMS)
    assert [m for m in METHODS if "weights" in REUSERS[m].reuse_params] == \
        ["average", "job-selector"]


@pytest.mark.parametrize("method, expected", [
    ("single", {}),
    ("average", {"voting": "soft", "weights": [0.5, 0.5]}),
    ("job-selector", {"random_state": 3, "weights": [0.5, 0.5]}),
    ("with-user", {"random_state": 3, "cv": 4}),
    ("feature-augment", {"random_state": 3, "cv": 4}),
])
def test_each_method_gets_the_options_it_declares(method, expected):
    weights = (0.5, 0.5) if "weights" in expected else None
    assert check_reuser_options(method, weights=weights, **OPTIONS) == expected


def test_weights_for_a_method_without_them_is_the_same_usage_error():
    with pytest.raises(UsageError, match="--weights is for average and job-selector, not "
                                         "with-user"):
        check_reuser_options("with-user", weights=[1.0], **OPTIONS)


def test_unknown_methods_and_options_are_usage_errors():
    with pytest.raises(UsageError, match="unknown reuse method"):
        check_reuser_options("magic")
    with pytest.raises(UsageError, match="unknown reuse options"):
        check_reuser_options("single", depth=3)


def _saved(tmp_path, doc) -> str:
    p = tmp_path / "search.json"
    p.write_text(json.dumps(doc))
    return str(p)


MIX = {"single": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
       "mixture": {"ids": ["b", "a"], "weights": [0.7, 0.3]}}


def test_a_saved_search_gives_its_mixture_or_its_top(tmp_path):
    p = _saved(tmp_path, MIX)
    assert read_search_choice(p, None) == (["b", "a"], [0.7, 0.3])
    assert read_search_choice(p, 2) == (["a", "b"], None)


def test_a_one_member_mixture_is_applied_directly(tmp_path):
    p = _saved(tmp_path, {**MIX, "mixture": {"ids": ["b"], "weights": [1.0]}})
    assert _choose_learnwares([], None, p, None, None) == (["b"], None)
    assert _choose_learnwares([], None, p, None, "single") == (["b"], None)
    assert _choose_learnwares([], None, p, None, "average") == (["b"], [1.0])


def test_saved_search_errors(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        read_search_choice(tmp_path / "none.json", None)
    anchors = _saved(tmp_path, {"single": [{"id": "a"}], "mixture": None})
    with pytest.raises(InvalidInputError, match="ranking from anchor scores"):
        read_search_choice(anchors, None)
    with pytest.raises(UsageError, match="--from-search gives the ids and weights"):
        _choose_learnwares(["a"], None, anchors, None, None)
    with pytest.raises(UsageError, match="--top goes with --from-search"):
        _choose_learnwares(["a"], None, None, 2, None)
