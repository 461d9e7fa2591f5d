"""The sketch index: RFF maths (hypothesis), partial and masked rankings, shortlisting,
the index format on disk, and sketch search through the API and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import build_learnware, domain_data, run_cli, snapshot, write_user
from lwcli import api
from lwcli.engine import search
from lwcli.engine.kernel import KernelMetric, mmd2_numpy
from lwcli.engine.rkme import RKME
from lwcli.engine.sketch import SketchBasis, sketch_norms, sketch_rkmes, sketch_user
from lwcli.errors import MarketError, UsageError


def _island(n: int, k: int = 8, d: int = 4, seed: int = 0, groups: int = 20):
    """An island of ``n`` related learnwares (``groups`` families) and its metric."""
    rng = np.random.default_rng(seed)
    metric = KernelMetric(tuple([1.0] * d), 0.2, d - 1)
    centres = rng.normal(size=(groups, d)) * 2.0
    specs = []
    for i in range(n):
        c = centres[i % groups] + rng.normal(size=d) * 0.4
        beta = rng.random(k) + 0.1
        specs.append(RKME(beta / beta.sum(), c + rng.normal(size=(k, d)) * 0.8, metric, 500, 0.0))
    return specs, metric


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 1.0))
def test_sketch_distance_estimates_mmd(seed, gamma):
    """||s_a - s_b||^2 is an unbiased estimate of MMD^2; with 4,096 pairs it is within 0.03."""
    rng = np.random.default_rng(seed)
    A, B = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + rng.normal(size=3)
    wa, wb = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(5))
    basis = SketchBasis(seed, 4096, 3, 2, gamma)
    sa, sb = sketch_user(A, wa, basis, "joint"), sketch_user(B, wb, basis, "joint")
    exact = mmd2_numpy(A, wa, B, wb, gamma)
    assert abs(float(((sa - sb) ** 2).sum()) - exact) < 0.03
    # a cloud's sketch norm estimates its squared RKHS norm, which is at most 1
    assert 0.0 < float(sa @ sa) < 1.0 + 0.05


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_stacked_and_single_sketches_agree_and_input_mode_ignores_outputs(seed):
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(3, 5, 4)).astype(np.float32)
    B = rng.dirichlet(np.ones(5), size=3).astype(np.float32)
    basis = SketchBasis(seed, 64, 4, 3, 0.3)
    for kind, dm in (("joint", 4), ("input", 3)):
        S = sketch_rkmes(P, B, basis, kind)
        for i in range(3):
            assert np.allclose(S[i], sketch_user(P[i, :, :dm], B[i], basis, kind), atol=1e-5)
        assert np.allclose(sketch_norms(S), (S.astype(np.float64) ** 2).sum(1))
    P2 = P.copy()
    P2[:, :, 3] += 10.0                       # outputs changed: input sketches do not move
    assert np.allclose(sketch_rkmes(P2, B, basis, "input"), sketch_rkmes(P, B, basis, "input"))
    assert not np.allclose(sketch_rkmes(P2, B, basis, "joint"), sketch_rkmes(P, B, basis, "joint"))


def test_basis_is_reproducible_from_its_record():
    b = SketchBasis(7, 32, 5, 4, 0.25)
    assert SketchBasis.from_dict(json.loads(json.dumps(b.to_dict()))) == b
    assert np.array_equal(b.omega("joint"), SketchBasis.from_dict(b.to_dict()).omega("joint"))
    assert np.array_equal(b.omega("input"), b.omega("joint")[:, :4])


def test_partial_and_masked_rankings_match_the_full_one():
    specs, metric = _island(400)
    stack = search.build_stack(specs, metric)
    user = specs[17]
    full = search.rank_single(stack, user)
    assert full.shortlist is None and sorted(full.order.tolist()) == list(range(400))
    top = search.rank_single(stack, user, keep=25)
    assert top.order.tolist() == full.order[:25].tolist()
    assert np.allclose(top.mmd2, full.mmd2)
    allowed = np.arange(400) % 3 == 0
    masked = search.rank_single(stack, user, allowed=allowed, keep=10)
    assert masked.order.tolist() == [j for j in full.order if allowed[j]][:10]
    with pytest.raises(UsageError, match="allowed"):
        search.rank_single(stack, user, allowed=allowed[:10])


def test_sketch_search_finds_the_exact_top_ten():
    """Shortlisting 10% of an island through 256-pair sketches keeps the exact top 10, in
    order, for members, for unlabelled requirements and under a tag mask; shortlisting
    everything is exact search."""
    specs, metric = _island(3000, seed=1)
    stack = search.build_stack(specs, metric)
    sk = search.build_sketch(stack, search.island_basis(metric, 5))
    allowed = np.arange(3000) % 2 == 1
    for q in range(0, 3000, 500):
        user = RKME(specs[q].beta, specs[q].points + 0.05, metric, 500, 0.0)
        for u in (user, user.input_part()):
            for mask in (None, allowed):
                ex = search.rank_single(stack, u, keep=10, allowed=mask)
                ap = search.rank_single(stack, u, keep=10, allowed=mask, sketch=sk,
                                        candidates=300)
                assert ap.shortlist == 300
                assert ap.order.tolist() == ex.order.tolist()
                assert np.allclose(ap.mmd2[ap.order], ex.mmd2[ex.order])
                assert np.isnan(ap.mmd2).sum() == 3000 - 300
    every = search.rank_single(stack, specs[3], sketch=sk, candidates=10_000)
    assert every.order.tolist() == search.rank_single(stack, specs[3]).order.tolist()


def test_mixture_from_a_sketch_ranking_is_the_exact_one():
    specs, metric = _island(2000, seed=2)
    stack = search.build_stack(specs, metric)
    sk = search.build_sketch(stack, search.island_basis(metric, 9))
    pts = np.concatenate([specs[10].points[:4], specs[30].points[:4]])
    user = RKME(np.full(8, 1 / 8), pts, metric, 500, 0.0)
    ex = search.mixture_search(stack, user, search.rank_single(stack, user))
    ap = search.mixture_search(stack, user, search.rank_single(stack, user, sketch=sk,
                                                               candidates=200, keep=16))
    assert ap.members.tolist() == ex.members.tolist()
    assert np.allclose(ap.weights, ex.weights) and np.isclose(ap.mmd2, ex.mmd2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; CI has none")
def test_cuda_sketch_search_matches_the_cpu_and_keeps_the_island_resident():
    specs, metric = _island(3000, seed=3)
    stack = search.build_stack(specs, metric)
    sk = search.build_sketch(stack, search.island_basis(metric, 5))
    sk_gpu = search.build_sketch(stack, search.island_basis(metric, 5), torch.device("cuda"))
    assert np.allclose(sk_gpu.xy, sk.xy, atol=1e-4)
    cuda = torch.device("cuda")
    for u in (specs[42], specs[42].input_part()):
        cpu = search.rank_single(stack, u, keep=10, sketch=sk, candidates=300)
        gpu = search.rank_single(stack, u, cuda, keep=10, sketch=sk, candidates=300)
        assert gpu.order.tolist() == cpu.order.tolist()
        assert np.allclose(gpu.mmd2[gpu.order], cpu.mmd2[cpu.order], atol=1e-5)
    assert any(k[0] == id(stack.points) for k in search._RESIDENT)     # copied once, kept
    n_resident = len(search._RESIDENT)
    search.rank_single(stack, specs[7], cuda, sketch=sk)
    assert len(search._RESIDENT) == n_resident


# ------------------------------------------------------------------ the index on disk

def submit_some(tmp_path, n, market, tags=None) -> list[str]:
    """Build and submit ``n`` learnwares of one island (the first fixes its metric)."""
    ids = []
    for i in range(n):
        X, y = domain_data(i, 300, seed=i)
        b = build_learnware(tmp_path / "work", f"lw-{i}", X, y, market=market if i else None,
                            k=20, tags=tags[i] if tags else ("synthetic",))
        ids.append(api.submit(b.package, market).id)
    return ids


def test_index_files_serve_rows_tags_and_sketches(market, tmp_path):
    ids = sorted(submit_some(tmp_path, 3, market, tags=[("a", "b"), ("b",), ("c",)]))
    from lwcli.market.index import load_index
    from lwcli.market.store import Market

    mk = Market.open(market)
    idx = load_index(mk)
    (iid,) = idx.islands()
    assert idx.ids(iid).tolist() == ids and idx.count() == idx.count(iid) == 3
    rows = idx.summaries(iid, [2, 0])
    assert [r["id"] for r in rows] == [ids[2], ids[0]]
    assert [r["id"] for r in idx.iter_summaries()] == ids
    assert idx.summary(ids[1])["id"] == ids[1] and idx.summary("0" * 16) is None
    tagged = {r["id"]: set(r["tags"]) for r in idx.iter_summaries()}
    assert idx.tag_mask(iid, ["b"]).tolist() == ["b" in tagged[i] for i in ids]
    assert idx.tag_mask(iid, ["a", "b"]).sum() == 1
    assert not idx.tag_mask(iid, ["nope"]).any()
    sk = idx.sketch(iid)
    assert sk.n == 3 and sk.basis.seed == idx.catalog["islands"][iid]["sketch"]["seed"]
    # submitted one by one (incremental inserts) = rebuilt from scratch, byte for byte
    gen = idx.path
    arrays = {p.name: p.read_bytes() for p in gen.iterdir()}
    api.market_refresh(market, force=True)
    assert {p.name: p.read_bytes() for p in load_index(Market.open(market)).path.iterdir()} \
        == arrays


def test_an_index_of_another_format_is_refused_then_rebuilt(market, tmp_path):
    submit_some(tmp_path, 1, market)
    gen = market / "index" / (market / "index" / "CURRENT").read_text().strip()
    cat = json.loads((gen / "catalog.json").read_text())
    cat["format"] = 1
    (gen / "catalog.json").write_text(json.dumps(cat))
    from lwcli.market.index import load_index
    from lwcli.market.store import Market

    with pytest.raises(MarketError, match="lw market refresh"):
        load_index(Market.open(market))
    assert not api.market_verify(market).ok
    X, y = domain_data(1, 300, seed=1)
    b2 = build_learnware(tmp_path / "work", "lw-1", X, y, market=market, k=20)
    api.submit(b2.package, market)                     # a submit rebuilds the whole index
    assert api.market_verify(market).ok


def test_search_through_the_sketch_via_api_and_cli(market, tmp_path):
    submit_some(tmp_path, 3, market)
    X, _ = domain_data(1, 200, seed=9)
    user = write_user(tmp_path / "u.csv", X)
    exact = api.search(market, data=user)
    sk = api.search(market, data=user, exact=False)
    assert exact.searched["method"] == "exact" and sk.searched["method"] == "sketch"
    assert [r["id"] for r in sk.single] == [r["id"] for r in exact.single]
    assert sk.mixture["ids"] == exact.mixture["ids"]
    before = snapshot(market)
    p = run_cli("search", "--market", market, "--data", user, "--sketch", "--json")
    out = json.loads(p.stdout)
    assert out["searched"] == {"learnwares": 3, "eligible": 3, "method": "sketch",
                               "exact_mmd": 3, "sketch_candidates": search.SKETCH_CANDIDATES}
    assert [r["id"] for r in out["single"]] == [r["id"] for r in exact.single]
    p = run_cli("search", "--market", market, "--data", user, "--sketch")
    assert "through the sketch index" in p.stdout
    p = run_cli("search", "--market", market, "--data", user, "--exact", "--json")
    assert json.loads(p.stdout)["searched"]["method"] == "exact"
    assert snapshot(market) == before


def test_a_view_survives_a_refresh_that_replaces_its_generation(market, tmp_path):
    """Cron refreshes while users search: a view opened before the swap keeps reading the
    generation it mapped, although the refresh deletes that folder."""
    ids = submit_some(tmp_path, 2, market)
    from lwcli.market.index import island_view, load_index
    from lwcli.market.store import Market

    mk = Market.open(market)
    (iid,) = load_index(mk).islands()
    view = island_view(mk, iid)
    old = view.index.path
    X, y = domain_data(2, 300, seed=2)
    b = build_learnware(tmp_path / "work", "lw-2", X, y, market=market, k=20)
    api.submit(b.package, market)                           # a new generation; the old is gone
    assert not old.exists()
    assert [r["id"] for r in view.summaries([1, 0])] == sorted(ids)[::-1]
    ranking = search.rank_single(view.stack, Market.open(market).spec(ids[0]).rkme)
    assert view.stack.n == 2 and ranking.order[0] == sorted(ids).index(ids[0])
    view.index.close()
