"""Identification on a real temporary market of 12 learnwares from clearly different domains."""

from __future__ import annotations

import numpy as np
import pytest

from lwcli import api
from lwcli.errors import MetricMismatchError

from conftest import build_learnware, domain_data, write_user

N_DOMAINS = 12


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
    work = tmp_path_factory.mktemp("twelve")
    root = work / "market"
    api.market_init(root)
    ids = []
    for dom in range(N_DOMAINS):
        X, y = domain_data(dom, 800, seed=dom)
        b = build_learnware(work, f"domain-{dom}", X, y, market=root, k=30,
                            tags=("synthetic", "even" if dom % 2 == 0 else "odd"))
        ids.append(api.submit(b.package, root).id)
    return root, ids, work


@pytest.mark.parametrize("dom", [0, 5, 11])
@pytest.mark.parametrize("labelled", [True, False])
def test_user_sample_from_one_learnware_ranks_it_first_alone(twelve, dom, labelled, tmp_path):
    root, ids, _ = twelve
    X, y = domain_data(dom, 200, seed=1000 + dom)
    f = write_user(tmp_path / "user.csv", X, y if labelled else None)
    res = api.search(root, data=f, target="y" if labelled else None, top=5)
    assert res.mode == ("xy" if labelled else "x")
    assert res.ranked_by == ("requirement-loss" if labelled else "rkme")
    assert res.single[0]["id"] == ids[dom]
    assert res.mixture["ids"] == [ids[dom]]
    assert res.mixture["weights"] == [1.0]
    assert res.single[0]["score"] > max(r["score"] for r in res.single[1:])


@pytest.mark.parametrize("labelled", [True, False])
def test_fifty_fifty_blend_gets_exactly_those_two(twelve, labelled, tmp_path):
    root, ids, _ = twelve
    Xa, ya = domain_data(2, 100, seed=7)
    Xb, yb = domain_data(9, 100, seed=8)
    f = write_user(tmp_path / "blend.csv", np.vstack([Xa, Xb]), np.r_[ya, yb] if labelled else None)
    res = api.search(root, data=f, target="y" if labelled else None)
    assert sorted(res.mixture["ids"]) == sorted([ids[2], ids[9]])
    assert all(abs(w - 0.5) < 0.1 for w in res.mixture["weights"])
    assert res.mixture["mmd2"] < res.single[0]["mmd2"]


def test_scores_are_absolute_not_rescaled(twelve, tmp_path):
    root, ids, _ = twelve
    X, _ = domain_data(3, 200, seed=5)
    r1 = api.search(root, data=write_user(tmp_path / "a.csv", X), top=12)
    far = np.random.default_rng(0).normal(size=(200, 4)) * 0.1 + 40.0   # far from every domain
    r2 = api.search(root, data=write_user(tmp_path / "b.csv", far), top=12)
    assert r1.single[0]["score"] > 0.9
    assert r2.single[0]["score"] < 0.2          # a min-max rescale would say 1.0
    for r in r1.single:
        assert r["score"] == pytest.approx(1 - np.sqrt(r["mmd2"] / 2))


def test_tag_filter_restricts_single_and_mixture(twelve, tmp_path):
    root, ids, _ = twelve
    X, y = domain_data(4, 200, seed=3)
    res = api.search(root, data=write_user(tmp_path / "u.csv", X, y), target="y", tags=["odd"])
    odd = {ids[i] for i in range(1, N_DOMAINS, 2)}
    assert {r["id"] for r in res.single} <= odd
    assert set(res.mixture["ids"]) <= odd


def test_precomputed_requirement_equals_search_from_data(twelve, tmp_path):
    root, ids, _ = twelve
    X, y = domain_data(6, 200, seed=9)
    f = write_user(tmp_path / "u.csv", X, y)
    sp = api.build_spec(f, target="y", market=root, k=100, clamp_k=True)
    api.write_spec(sp, tmp_path / "req.json")
    a = api.search(root, data=f, target="y")
    b = api.search(root, spec=tmp_path / "req.json")
    assert [r["id"] for r in a.single] == [r["id"] for r in b.single]
    assert a.single[0]["mmd2"] == pytest.approx(b.single[0]["mmd2"], rel=1e-9)


def test_requirement_with_a_foreign_metric_is_refused(twelve, tmp_path):
    root, _, _ = twelve
    X, _ = domain_data(1, 200, seed=2)
    f = write_user(tmp_path / "u.csv", X)
    sp = api.build_spec(f, k=50)                     # no --market: its own metric
    with pytest.raises(MetricMismatchError, match="metric"):
        api.search(root, spec=sp)


def test_label_aware_search_matches_the_function_not_only_the_inputs(tmp_path):
    """Two 'cities' with the same inputs but very different price levels."""
    from sklearn.linear_model import Ridge

    root = tmp_path / "m"
    api.market_init(root)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 4)) + 10
    w = np.array([1.0, 2.0, -1.0, 0.5])
    cheap, dear = X @ w, 3.0 * (X @ w) + 40.0
    ids = {}
    for name, y in (("cheap", cheap), ("dear", dear)):
        b = build_learnware(tmp_path, name, X, y, market=root, model=Ridge().fit(X, y))
        ids[name] = api.submit(b.package, root).id
    Xu = rng.normal(size=(60, 4)) + 10
    f = write_user(tmp_path / "u.csv", Xu, 3.0 * (Xu @ w) + 40.0)
    res = api.search(root, data=f, target="y")
    assert res.single[0]["id"] == ids["dear"]
    assert res.single[1]["mmd2"] > 10 * res.single[0]["mmd2"]
    # on inputs alone the two are indistinguishable
    res_x = api.search(root, data=write_user(tmp_path / "ux.csv", Xu))
    a, b = res_x.single
    assert abs(a["mmd2"] - b["mmd2"]) < 0.2 * max(a["mmd2"], b["mmd2"]) + 1e-3


def _noisy_line(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, X @ np.array([1.0, -2.0, 0.5, 1.5]) + 2.0 * rng.normal(size=n)


@pytest.fixture(scope="module")
def strong_and_weak(tmp_path_factory):
    """The same data, two models: a ridge (the truth is linear) and a 1-nearest-neighbour that
    repeats its noisy training labels, which makes its (x, f(x)) look like noisy user data."""
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KNeighborsRegressor

    work = tmp_path_factory.mktemp("strongweak")
    root = work / "market"
    api.market_init(root)
    X, y = _noisy_line(600, 0)
    ids = {}
    for name, model, fmt in (("ridge", Ridge(alpha=0.1), "skops"),
                             ("nn1", KNeighborsRegressor(1), "skops"),
                             ("nn1-pickled", KNeighborsRegressor(1), "pickle")):
        b = build_learnware(work, name, X, y, market=root, model=model.fit(X, y), fmt=fmt,
                            trust=fmt == "pickle")
        ids[name] = api.submit(b.package, root, trust=fmt == "pickle").id
    Xu, yu = _noisy_line(300, 1)
    return root, ids, write_user(work / "user.csv", Xu, yu)


def test_rerank_puts_the_stronger_model_on_similar_data_first(strong_and_weak):
    root, ids, user = strong_and_weak
    res = api.search(root, data=user, target="y", trust=True)
    assert res.ranked_by == "requirement-loss"
    assert res.requirement["loss_metric"] == "rmse"
    assert res.single[0]["id"] == ids["ridge"]
    loss = {r["id"]: r["requirement_loss"] for r in res.single}
    assert loss[ids["ridge"]] < 0.8 * loss[ids["nn1"]]
    plain = api.search(root, data=user, target="y", rerank=0)
    assert plain.ranked_by == "rkme"
    assert all("requirement_loss" not in r for r in plain.single)
    assert "loss_metric" not in plain.requirement
    assert sorted(r["id"] for r in plain.single) == sorted(r["id"] for r in res.single)
    assert plain.mixture == res.mixture              # the mixture is the RKME one either way


def test_rerank_leaves_pickled_models_unrun_without_trust(strong_and_weak):
    root, ids, user = strong_and_weak
    res = api.search(root, data=user, target="y")
    last = res.single[-1]
    assert last["id"] == ids["nn1-pickled"] and "requirement_loss" not in last
    assert any("pickled" in w and "--trust" in w for w in res.warnings)
    trusted = api.search(root, data=user, target="y", trust=True)
    assert all("requirement_loss" in r for r in trusted.single)
    assert not any("pickled" in w for w in trusted.warnings)


def test_rerank_needs_a_non_negative_shortlist(strong_and_weak):
    from lwcli.errors import UsageError

    root, _, user = strong_and_weak
    with pytest.raises(UsageError, match="--rerank"):
        api.search(root, data=user, target="y", rerank=-1)


def test_a_requirement_of_a_few_rows_comes_with_a_warning(tmp_path):
    """Field case 09: a 1-row search gave a confident-looking ranking and no word about it."""
    import pandas as pd

    from conftest import ROOT

    user = pd.read_csv(ROOT / "sample_market" / "user" / "wanshouxigong_200h.csv")
    market = ROOT / "sample_market" / "market"
    user.iloc[:1].to_csv(tmp_path / "one.csv", index=False)
    one = api.search(market, data=tmp_path / "one.csv", target="PM2.5", rerank=0)
    assert one.requirement["n_rows"] == 1
    assert any("only 1 row," in w and "lw anchor-eval" in w for w in one.warnings)
    user.iloc[:, :-1].to_csv(tmp_path / "many.csv", index=False)   # 200 rows, no labels
    many = api.search(market, data=tmp_path / "many.csv")
    assert not any("too few" in w for w in many.warnings)


def test_a_label_column_left_among_the_features_is_named(tmp_path):
    """A labelled file searched without --target: an input-only search, and a warning that
    names the column to pass for a label-aware one."""
    from conftest import ROOT

    data = ROOT / "sample_market" / "user" / "wanshouxigong_200h.csv"
    res = api.search(ROOT / "sample_market" / "market", data=data)
    assert res.mode == "x" and res.intake.ignored_columns() == ["PM2.5"]
    assert any("pass --target PM2.5 for a label-aware" in w for w in res.warnings)
