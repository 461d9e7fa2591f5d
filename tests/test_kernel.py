"""The kernel routine family (lwcli.engine.kernel) against a plain numpy oracle: each routine,
chunked and unchunked, in numpy and torch, and the MMDs search prints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import lwcli.engine.kernel as K
from lwcli import api
from lwcli.engine.kernel import (KernelMetric, gram, kernel_inner, kernel_sums, mmd2,
                                 mmd2_numpy, sqdist, stack_cross_inner, stack_inner_matrix,
                                 stack_self_inner)
from lwcli.engine.rkme import RKME
from lwcli.engine.search import rank_single, stack_arrays
from lwcli.market.store import Market
from lwcli.specfile import Spec

from conftest import ROOT

FIXED = settings(max_examples=25, deadline=None, derandomize=True)


def oracle_gram(A, B, gamma):
    """``exp(-gamma ||a - b||^2)`` from broadcast differences, float64."""
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    return np.exp(-gamma * ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1))


def clouds(seed: int, n: int, m: int, d: int, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    A, B = rng.normal(size=(n, d)) * spread, rng.normal(size=(m, d)) * spread + 0.3
    wa, wb = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(m))
    return A, wa, B, wb


def both(*arrays):
    """The arrays as they are and as float64 torch tensors."""
    return [arrays, [torch.as_tensor(a, dtype=torch.float64) for a in arrays]]


def value(x):
    return np.asarray(x.cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)


@FIXED
@given(st.integers(0, 10_000), st.integers(1, 25), st.integers(1, 25), st.integers(1, 6),
       st.floats(0.01, 3.0))
def test_each_routine_matches_the_oracle_in_numpy_and_torch(seed, n, m, d, gamma):
    A, wa, B, wb = clouds(seed, n, m, d)
    G = oracle_gram(A, B, gamma)
    for (a, ta, b, tb) in both(A, wa, B, wb):
        dist = value(sqdist(a, b))
        assert (dist >= 0).all()
        assert dist == pytest.approx(((A[:, None] - B[None]) ** 2).sum(-1), abs=1e-9)
        assert value(gram(a, b, gamma)) == pytest.approx(G, abs=1e-12)
        assert float(kernel_inner(a, ta, b, tb, gamma)) == pytest.approx(wa @ G @ wb, abs=1e-12)
        assert float(kernel_inner(a, None, b, None, gamma)) == pytest.approx(G.sum(), rel=1e-12)
        assert value(kernel_sums(a, b, gamma)) == pytest.approx(G.sum(1), abs=1e-12)
        mass, first = kernel_sums(a, b, gamma, moments=True)
        assert value(mass) == pytest.approx(G.sum(1), abs=1e-12)
        assert value(first) == pytest.approx(G @ B, abs=1e-10)
        assert float(mmd2(a, ta, b, tb, gamma)) == pytest.approx(
            mmd2_numpy(A, wa, B, wb, gamma), abs=1e-12)


def test_float32_inputs_stay_float32_and_on_their_library():
    A, wa, B, wb = clouds(1, 7, 5, 3)
    a32, b32 = A.astype(np.float32), B.astype(np.float32)
    assert gram(a32, b32, 0.5).dtype == np.float32
    assert gram(torch.from_numpy(a32), torch.from_numpy(b32), 0.5).dtype == torch.float32
    assert kernel_sums(a32, b32, 0.5).dtype == np.float64
    assert isinstance(kernel_inner(torch.from_numpy(a32), None, torch.from_numpy(b32), None, 0.5),
                      torch.Tensor)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_chunked_equals_unchunked(monkeypatch, lib):
    A, wa, B, wb = clouds(2, 300, 50, 4)
    args = both(A, wa, B, wb)[lib == "torch"]
    a, ta, b, tb = args
    full = (float(kernel_inner(a, ta, b, tb, 0.3)), value(kernel_sums(a, b, 0.3)),
            value(kernel_sums(b, a, 0.3, moments=True)[1]))
    monkeypatch.setattr(K, "CHUNK_ELEMENTS", 64)            # one or two rows per chunk
    assert float(kernel_inner(a, ta, b, tb, 0.3)) == pytest.approx(full[0], rel=1e-12)
    assert value(kernel_sums(a, b, 0.3)) == pytest.approx(full[1], rel=1e-12)
    assert value(kernel_sums(b, a, 0.3, moments=True)[1]) == pytest.approx(full[2], rel=1e-12)


def random_stack(seed: int, n: int, k: int, d: int):
    """``n`` reduced sets of up to ``k`` points, zero-weight padded: (n, k, d), (n, k)."""
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(n, k, d)) + rng.normal(size=(n, 1, d))
    beta = np.zeros((n, k))
    for i in range(n):
        size = int(rng.integers(1, k + 1))
        beta[i, :size] = rng.dirichlet(np.ones(size))
    return P, beta


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("chunk", [None, 50])
def test_stacked_inner_products_match_the_oracle(monkeypatch, lib, chunk):
    P, beta = random_stack(3, 9, 6, 3)
    U, bu = clouds(4, 11, 1, 3)[:2]
    gamma = 0.4
    if chunk:
        monkeypatch.setattr(K, "CHUNK_ELEMENTS", chunk)     # 1 set per block, then row blocks
    conv = (lambda a: torch.as_tensor(a)) if lib == "torch" else np.asarray

    def load(lo, hi):
        return conv(P[lo:hi]), conv(beta[lo:hi])

    selfs = stack_self_inner(load, 9, 6, gamma)
    cross = value(stack_cross_inner(load, 9, 6, conv(U), conv(bu), gamma, dims=3,
                                    block_elements=chunk or 1 << 20))
    cross_x = value(stack_cross_inner(load, 9, 6, conv(U[:, :2]), conv(bu), gamma, dims=2,
                                      block_elements=chunk or 1 << 20))
    H = stack_inner_matrix(conv(P), conv(beta), gamma)
    for i in range(9):
        assert selfs[i] == pytest.approx(beta[i] @ oracle_gram(P[i], P[i], gamma) @ beta[i],
                                         abs=1e-12)
        assert cross[i] == pytest.approx(beta[i] @ oracle_gram(P[i], U, gamma) @ bu, abs=1e-12)
        assert cross_x[i] == pytest.approx(
            beta[i] @ oracle_gram(P[i, :, :2], U[:, :2], gamma) @ bu, abs=1e-12)
        for j in range(9):
            assert H[i, j] == pytest.approx(beta[i] @ oracle_gram(P[i], P[j], gamma) @ beta[j],
                                            abs=1e-12)


def metric_for(d: int, n_inputs: int, gamma: float) -> KernelMetric:
    scales = tuple(float(s) for s in np.linspace(0.5, 2.0, d))
    return KernelMetric(scales, gamma, n_inputs)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(1, 12), st.integers(2, 5),
       st.floats(0.05, 1.5), st.sampled_from([np.float32, np.float64]))
def test_search_mmds_equal_the_oracle_in_both_modes(seed, n, k, d, gamma, dtype):
    """rank_single's exact MMDs (what lw search prints) against mmd2_numpy, label-aware (all
    coordinates) and input-only (the first n_inputs)."""
    metric = metric_for(d, d - 1, gamma)
    P, beta = random_stack(seed, n, k, d)
    stack = stack_arrays(metric, P.astype(dtype), beta.astype(dtype))
    rng = np.random.default_rng(seed + 1)
    raw = rng.normal(size=(k + 3, d)) * np.asarray(metric.scales)
    user = RKME(rng.dirichlet(np.ones(k + 3)), raw, metric, 50, 0.0)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    for req, dims in ((user, d), (user.input_part(), d - 1)):
        ranking = rank_single(stack, req)
        assert ranking.mode == ("xy" if dims == d else "x")
        U = req.points / np.asarray(req.metric.scales)
        for i in range(n):
            w = beta[i].astype(dtype).astype(np.float64)
            truth = mmd2_numpy(P[i, :, :dims].astype(dtype).astype(np.float64), w, U, req.beta,
                               gamma)
            assert ranking.mmd2[i] == pytest.approx(truth, abs=tol)


def cloud(n, d):
    return st.tuples(arrays(np.float64, (n, d), elements=st.floats(-5, 5)),
                     arrays(np.float64, (n,), elements=st.floats(0.01, 1.0)))


def t(a):
    return torch.as_tensor(a, dtype=torch.float64)


@settings(max_examples=40, deadline=None)
@given(cloud(6, 3), st.floats(0.05, 2.0))
def test_mmd_of_a_cloud_with_itself_is_zero(c, gamma):
    A, w = c
    w = w / w.sum()
    assert float(mmd2(t(A), t(w), t(A), t(w), gamma)) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(cloud(5, 3), cloud(7, 3), st.floats(0.05, 2.0))
def test_mmd_is_symmetric_and_matches_numpy(a, b, gamma):
    (A, wa), (B, wb) = a, b
    wa, wb = wa / wa.sum(), wb / wb.sum()
    ab = float(mmd2(t(A), t(wa), t(B), t(wb), gamma))
    ba = float(mmd2(t(B), t(wb), t(A), t(wa), gamma))
    assert ab == pytest.approx(ba, abs=1e-12)
    assert ab == pytest.approx(mmd2_numpy(A, wa, B, wb, gamma), abs=1e-10)
    assert 0.0 <= ab <= 2.0 + 1e-12


MARKET = ROOT / "sample_market" / "market"


@pytest.mark.parametrize("labelled", [True, False])
def test_sample_market_search_prints_the_oracle_mmds(labelled):
    """The mmd2 values `lw search --json` prints on the sample market, for a learnware's own
    specification as the requirement (label-aware) and for its input part (inputs only).

    The index holds float32 points and search forms ``-gamma ||p - u||^2`` by expansion, whose
    rounding grows with ``|p|^2``: a few 1e-5 absolute on this market's scaled coordinates."""
    mk = Market.open(MARKET)
    first = next(r["id"] for r in api.market_ls(MARKET) if "-pm25-" in r["name"])   # 44 of them
    spec = mk.spec(first)
    if not labelled:
        spec = Spec(spec.rkme.input_part(), spec.features, spec.task, island=spec.island)
    res = api.search(MARKET, spec=spec, top=100, rerank=0)
    assert res.mode == ("xy" if labelled else "x")
    m = spec.rkme.metric
    for row in res.single:
        other = mk.spec(row["id"]).rkme
        pts = other.points[:, : m.dim]
        truth = mmd2_numpy(m.scale(spec.rkme.points), spec.rkme.beta, m.scale(pts), other.beta,
                           m.gamma)
        assert row["mmd2"] == pytest.approx(truth, abs=1e-4)
    assert len(res.single) == 44
