"""Properties of the RKME maths, with hypothesis, against a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from lwcli.engine.kernel import KernelMetric, fit_metric, mmd2, mmd2_numpy
from lwcli.engine.qp import simplex_qp
from lwcli.engine.rkme import RKME, _kmeanspp, _points_grad, fit_rkme
from lwcli.errors import DataError, UsageError


def t(a):
    return torch.as_tensor(a, dtype=torch.float64)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 9), st.integers(0, 10_000))
def test_simplex_qp_is_optimal(n, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n + 1))
    G, c = A @ A.T, rng.normal(size=n)
    w = simplex_qp(G, c)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    f = lambda x: x @ G @ x - 2 * c @ x  # noqa: E731
    # no random point of the simplex does better
    for x in rng.dirichlet(np.ones(n), size=300):
        assert f(w) <= f(x) + 1e-9
    # KKT: the gradient is equal on the support and not smaller off it
    g = G @ w - c
    on = w > 1e-12
    assert np.ptp(g[on]) < 1e-7
    assert (g[~on] >= g[on].min() - 1e-7).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(0, 10_000), st.booleans())
def test_simplex_qp_from_a_starting_point_reaches_the_same_minimum(n, seed, sparse):
    """Warm starts (the uniform vector, a random feasible point) change the path, not the
    answer: the minimiser is unique (G is positive definite here)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n + 3))
    G = A @ A.T
    c = G @ rng.dirichlet(np.ones(n)) + rng.normal(size=n) * (3.0 if sparse else 0.1)
    cold = simplex_qp(G, c)
    w0 = rng.dirichlet(np.ones(n)) * (rng.random(n) < 0.5)
    w0[rng.integers(n)] = 1.0
    for start in (np.full(n, 1.0 / n), w0):
        np.testing.assert_allclose(simplex_qp(G, c, w0=start), cold, atol=1e-7)


def test_simplex_qp_rejects_an_infeasible_start():
    G, c = np.eye(3), np.zeros(3)
    for bad in (np.array([1.0, -0.5, 0.5]), np.zeros(3), np.ones(2), np.array([np.nan, 1, 1])):
        with pytest.raises(UsageError, match="w0"):
            simplex_qp(G, c, w0=bad)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(5, 60), st.integers(0, 10_000),
       st.floats(0.05, 2.0))
def test_rkme_points_gradient_is_the_objectives(k, d, m, seed, gamma):
    """The analytic gradient of the RKME objective in the points equals autograd's (float64)."""
    rng = np.random.default_rng(seed)
    T = torch.as_tensor(rng.normal(size=(k, d)))
    Z = torch.as_tensor(rng.normal(size=(m, d)))
    beta = torch.as_tensor(rng.dirichlet(np.ones(k)))
    Tp = T.clone().requires_grad_(True)
    K = torch.exp(-gamma * ((Tp[:, None] - Tp[None]) ** 2).sum(-1))
    C = torch.exp(-gamma * ((Tp[:, None] - Z[None]) ** 2).sum(-1))
    (beta @ K @ beta - 2.0 / m * (beta @ C.sum(1))).backward()
    got = _points_grad(T, beta[:, None], Z, (Z * Z).sum(1), gamma)
    np.testing.assert_allclose(got.numpy(), Tp.grad.numpy(), rtol=1e-7, atol=1e-10)


def test_kmeanspp_picks_distinct_rows_deterministically():
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.normal(size=(500, 4)), dtype=torch.float32)
    a = _kmeanspp(X, 50, torch.Generator().manual_seed(7))
    b = _kmeanspp(X, 50, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    rows = {tuple(r) for r in X.numpy().tolist()}
    assert all(tuple(r) in rows for r in a.numpy().tolist())
    assert len({tuple(r) for r in a.numpy().tolist()}) == 50
    # only 3 distinct rows: the seeding still returns k rows, drawn from them
    few = X[torch.as_tensor(rng.integers(0, 3, size=200))]
    c = _kmeanspp(few, 10, torch.Generator().manual_seed(1))
    assert len({tuple(r) for r in c.numpy().tolist()}) == 3


def _two_blobs(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    X[: n // 2] += 3.0
    return X


def test_rkme_beta_on_simplex_and_deterministic():
    X = _two_blobs()
    m = fit_metric(X)
    a = fit_rkme(X, m, k=20, seed=3)
    b = fit_rkme(X, m, k=20, seed=3)
    assert a.beta.min() >= 0 and a.beta.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.beta, b.beta)
    assert a.fit_info["error_estimate"] == "exact"


def test_rkme_approximation_error_is_exact_and_falls_with_k():
    X = _two_blobs()
    m = fit_metric(X)
    errors = []
    for k in (5, 20, 80):
        r = fit_rkme(X, m, k=k, seed=0)
        Zs, P = X / np.asarray(m.scales), r.points / np.asarray(m.scales)
        ref = mmd2_numpy(P, r.beta, Zs, np.full(len(X), 1 / len(X)), m.gamma) ** 0.5
        assert r.approx_error == pytest.approx(ref, rel=1e-3, abs=1e-4)
        errors.append(r.approx_error)
    assert errors[0] > errors[1] > errors[2]


def test_rkme_large_data_uses_unbiased_estimate_close_to_exact():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6000, 3))
    m = fit_metric(X)
    r = fit_rkme(X, m, k=30, seed=0)
    assert r.fit_info["error_estimate"].startswith("rff")
    Zs, P = X / np.asarray(m.scales), r.points / np.asarray(m.scales)
    exact = float(mmd2(t(P), t(r.beta), t(Zs), t(np.full(len(X), 1 / len(X))), m.gamma)) ** 0.5
    assert r.approx_error == pytest.approx(exact, rel=0.15)


def test_rkme_rejects_k_above_rows():
    X = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(DataError, match="reduced points"):
        fit_rkme(X, fit_metric(X), k=11)


def test_metric_scales_features_so_none_dominates():
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=500), 1000 * rng.normal(size=500) + 5000]
    m = fit_metric(X)
    Zs = m.scale(X)
    np.testing.assert_allclose(Zs.std(0), 1.0, rtol=1e-6)
    # round trip and digest stability
    assert KernelMetric.from_dict(m.to_dict()).digest() == m.digest()


def test_metric_output_block_weighs_like_the_inputs():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(400, 9)), rng.normal(size=400) * 50
    m = fit_metric(X, y[:, None], task="regression")
    Z = m.scale(np.c_[X, y])
    # output variance equals the summed input variance (output_weight = 1)
    assert Z[:, -1].var() == pytest.approx(Z[:, :-1].var(0).sum(), rel=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; CI has none")
def test_cuda_matches_cpu():
    X = _two_blobs()
    m = fit_metric(X)
    r = fit_rkme(X, m, k=20, seed=0)
    A, w = t(r.points / np.asarray(m.scales)), t(r.beta)
    B, wb = t(X[:300] / np.asarray(m.scales)), t(np.full(300, 1 / 300))
    cpu = float(mmd2(A, w, B, wb, m.gamma))
    gpu = float(mmd2(A.cuda(), w.cuda(), B.cuda(), wb.cuda(), m.gamma))
    assert gpu == pytest.approx(cpu, rel=1e-9)
    rg = fit_rkme(X, m, k=20, seed=0, device=torch.device("cuda"))
    assert rg.approx_error == pytest.approx(r.approx_error, rel=0.2, abs=5e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; CI has none")
def test_cuda_search_ranks_like_the_cpu(monkeypatch):
    """A stack of 3,000 learnwares, searched in several GPU blocks and in one CPU pass."""
    from lwcli.engine import search

    rng = np.random.default_rng(0)
    metric = KernelMetric(tuple([1.0] * 5), 0.3, 4)
    specs = []
    for i in range(3000):
        beta = rng.random(10) + 0.1
        specs.append(RKME(beta / beta.sum(), rng.normal(size=(10, 5)) + (i % 7), metric, 100,
                          0.0))
    stack = search.build_stack(specs, metric)
    user = specs[1234]
    cpu = search.rank_single(stack, user, torch.device("cpu"))
    monkeypatch.setattr(search, "SEARCH_BLOCK_ELEMENTS_GPU", 10 * 10 * 700)   # 5 blocks
    gpu = search.rank_single(stack, user, torch.device("cuda"))
    assert np.allclose(gpu.mmd2, cpu.mmd2, atol=1e-5)
    assert gpu.order[0] == cpu.order[0] == 1234


def _requirement(seed: int, k: int = 12, d_in: int = 3, d_out: int = 1):
    rng = np.random.default_rng(seed)
    beta = rng.random(k) + 0.05
    metric = KernelMetric(tuple([1.0] * (d_in + d_out)), 0.5, d_in)
    return RKME(beta / beta.sum(), rng.normal(size=(k, d_in + d_out)), metric, 50, 0.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 3))
def test_requirement_loss_is_the_weighted_squared_error_on_the_reduced_points(seed, d_out):
    from lwcli.engine.search import requirement_loss, requirement_sample

    req = _requirement(seed, d_out=d_out)
    X, Y, beta = requirement_sample(req)
    F = np.random.default_rng(seed + 1).normal(size=Y.shape)
    want = sum(b * float(((f - y) ** 2).sum()) for b, f, y in zip(beta, F, Y))
    assert requirement_loss(F, req) == pytest.approx(want, rel=1e-12)
    assert requirement_loss(Y, req) == 0.0
    # a permutation of the reduced set is the same requirement
    p = np.random.default_rng(seed + 2).permutation(len(beta))
    req_p = RKME(beta[p], req.points[p], req.metric, req.n_rows, 0.0)
    assert requirement_loss(F[p], req_p) == pytest.approx(want, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12), st.integers(0, 14))
def test_rerank_is_a_permutation_sorted_by_loss_within_the_shortlist(seed, n, shortlist):
    from lwcli.engine.search import rerank

    rng = np.random.default_rng(seed)
    req = _requirement(seed)
    order = rng.permutation(n)
    bias = rng.normal(size=n) * 2                     # model j predicts y + bias_j
    unrunnable = set(rng.choice(n, size=rng.integers(0, n + 1), replace=False).tolist())
    Y = req.points[:, 3:]
    rr = rerank(order, req, lambda j, X: None if j in unrunnable else Y + bias[j], shortlist)
    assert sorted(rr.order.tolist()) == list(range(n))                  # a permutation
    head = order[:shortlist].tolist()
    ran = [j for j in head if j not in unrunnable]
    assert rr.order[:len(ran)].tolist() == sorted(ran, key=lambda j: (bias[j] ** 2,
                                                                        head.index(j)))
    assert rr.order[len(ran):].tolist() == [j for j in head if j in unrunnable] + \
        order[shortlist:].tolist()                                      # RKME order kept
    assert np.allclose(rr.losses[:len(ran)], [bias[j] ** 2 for j in rr.order[:len(ran)]])
    assert np.isnan(rr.losses[len(ran):]).all()
    assert sorted(rr.skipped.tolist()) == sorted(j for j in head if j in unrunnable)


def test_inputs_only_requirement_cannot_be_evaluated():
    from lwcli.engine.search import requirement_loss
    from lwcli.errors import SpecError

    req = _requirement(0)
    x_only = RKME(req.beta, req.points[:, :3], req.metric.input_metric(), 50, 0.0)
    with pytest.raises(SpecError, match="inputs only"):
        requirement_loss(np.zeros((len(req.beta), 1)), x_only)
