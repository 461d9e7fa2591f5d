"""The search pipeline (lwcli.engine.search_pipeline.run_search) is the kernels of
lwcli.engine.search composed with lw's policy: same ranking, re-ranking and mixture."""

from __future__ import annotations

import functools

import numpy as np

from lwcli.engine.kernel import fit_metric
from lwcli.engine.rkme import fit_rkme
from lwcli.engine.search import (MIXTURE_CANDIDATES, Ranking, build_stack, mixture_search,
                                 rank_single, rerank)
from lwcli.engine.search_pipeline import run_search, uses_sketch


@functools.lru_cache(maxsize=1)
def _island(n_learnwares=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    metric = fit_metric(X, y[:, None], task="regression", seed=0)
    specs, coefs = [], []
    for i in range(n_learnwares):
        Xi = rng.normal(size=(120, 3)) + rng.normal(size=3)
        w = np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=3)
        coefs.append(w)
        specs.append(fit_rkme(np.hstack([Xi, (Xi @ w)[:, None]]), metric, k=10, seed=i))
    Xu = rng.normal(size=(60, 3)) + 0.5
    user = fit_rkme(np.hstack([Xu, (Xu @ np.array([1.0, -2.0, 0.5]))[:, None]]), metric, k=20)
    return build_stack(specs, metric), user, coefs


def test_the_pipeline_composes_the_kernels():
    stack, user, coefs = _island()

    def one(j, X):
        return (X @ coefs[j])[:, None]

    out = run_search(stack, user, top=3, rerank=8,
                     outputs_of=lambda idx, X: [one(j, X) for j in idx])
    ranking = rank_single(stack, user, keep=max(3, 8, MIXTURE_CANDIDATES))
    rr = rerank(ranking.order, user, one, 8)
    mix = mixture_search(stack, user, ranking)
    assert out.mode == "xy" and out.ranked_by == "requirement-loss"
    assert out.rkme_order.tolist() == ranking.order.tolist()
    assert out.order.tolist() == rr.order.tolist()
    assert out.losses == {int(j): float(v) for j, v in zip(rr.order, rr.losses)
                          if np.isfinite(v)}
    np.testing.assert_array_equal(out.scores, Ranking.score(ranking.mmd2))
    assert out.mixture.members.tolist() == mix.members.tolist()
    assert out.mixture.weights.tolist() == mix.weights.tolist()
    assert out.searched == {"learnwares": 24, "eligible": 24, "method": "exact",
                            "exact_mmd": 24, "sketch_candidates": None}


def test_no_rerank_without_a_runner_or_with_rerank_zero():
    stack, user, _ = _island()
    for kw in ({}, {"rerank": 0, "outputs_of": lambda idx, X: [None] * len(idx)}):
        out = run_search(stack, user, **kw)
        assert out.ranked_by == "rkme" and out.losses == {}
        assert out.order.tolist() == out.rkme_order.tolist()


def test_a_model_that_cannot_run_keeps_its_rkme_place_after_the_evaluated():
    stack, user, coefs = _island()
    out = run_search(stack, user, rerank=4, outputs_of=lambda idx, X: [
        None if k == 0 else (X @ coefs[j])[:, None] for k, j in enumerate(idx)])
    first = int(out.rkme_order[0])
    assert first not in out.losses and out.order.tolist().index(first) == 3


def test_the_allowed_mask_and_the_sketch_policy():
    stack, user, _ = _island()
    allowed = np.zeros(stack.n, dtype=bool)
    allowed[::3] = True
    out = run_search(stack, user, allowed=allowed)
    assert set(out.order.tolist()) <= set(np.flatnonzero(allowed).tolist())
    assert out.searched["eligible"] == allowed.sum()
    assert uses_sketch(10, False) and not uses_sketch(10**6, True)
    assert not uses_sketch(10, None) and uses_sketch(10**6, None)
