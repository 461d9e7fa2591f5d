"""The specification world: one scale per feature across the market, founding islands with
--market, markets made before that rule (issue 15, point 2)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from conftest import build_learnware, domain_data, market_copy, run_cli, snapshot, write_user
from lwcli import api
from lwcli.errors import MetricMismatchError
from lwcli.market.store import Market
from lwcli.market.world import feature_scales, misaligned, output_scales
from lwcli.specfile import read_spec


def _island_of(market, name_or_meta):
    from lwcli.market.manifest import read_manifest

    return Market.open(market).island(read_manifest(name_or_meta).island_id())


def test_a_founding_spec_takes_the_markets_scales(world):
    """Learnware "c" founds an island over f0, f1, f2, which the market already measures
    (island of "a"): its spec measures them (and the output y) at the market's scales, and
    fits only its own bandwidth."""
    base = Market.open(world["base"]).islands()
    (a_island,) = base.values()
    c = read_spec(world["new"].spec).rkme.metric
    np.testing.assert_allclose(c.scales[:3], a_island.metric.scales[:3], rtol=1e-12)
    y_std = lambda m: m.scales[m.n_inputs] * math.sqrt(m.output_weight * m.n_inputs)  # noqa: E731
    assert y_std(c) == pytest.approx(y_std(a_island.metric), rel=1e-12)
    assert c.gamma != a_island.metric.gamma              # its own bandwidth (3 features, not 4)
    # without the market, the same data gives other scales: that spec would not be comparable
    own = api.build_spec(world["new"].train, model=world["new"].model, meta=world["new"].meta,
                         k=20).rkme.metric
    assert not np.allclose(own.scales[:3], a_island.metric.scales[:3])


def test_submit_refuses_a_founding_spec_that_measures_a_known_feature_otherwise(world, tmp_path):
    market = market_copy(world, tmp_path / "m")
    odd = build_learnware(tmp_path / "work", "odd", *domain_data(2, 200, seed=3, d=3), k=10)
    before = snapshot(market)
    with pytest.raises(MetricMismatchError, match=r"founds island .* measures feature 'f0' at "
                                                  r"scale [\d.]+, the market at [\d.]+ \(island"):
        api.submit(odd.package, market)
    proc = run_cli("submit", odd.package, "--market", market, check=5)
    assert proc.stderr.count("\n") == 1 and f"lw spec ... --market {market}" in proc.stderr
    assert snapshot(market) == before
    # rebuilt with --market it is accepted, and founds the island
    good = build_learnware(tmp_path / "work2", "odd", *domain_data(2, 200, seed=3, d=3), k=10,
                           market=market)
    res = api.submit(good.package, market)
    assert res.island_created and misaligned(Market.open(market).islands()) == {}


def test_market_info_without_an_id_shows_the_world(world, tmp_path):
    market = market_copy(world, tmp_path / "m")
    api.submit(world["pkg"]["new"], market)
    doc = json.loads(run_cli("market", "info", "--market", market, "--json").stdout)
    by_size = {len(i["features"]): i for i in doc["islands"]}
    assert sorted(by_size) == [3, 4] and [i["learnwares"] for i in doc["islands"]] == [1, 1]
    first = by_size[4]["id"]            # "a"'s island fixed the scales: "c" took them
    assert set(doc["features"]) == {"f0", "f1", "f2", "f3"}
    assert all(m["island"] == first for m in doc["features"].values())
    assert doc["outputs"]["y"]["island"] == first and doc["misaligned"] == {}
    text = run_cli("market", "info", "--market", market).stdout
    assert f"island {first}: 1 learnwares; regression of y from 4 features (f0, f1, f2, f3)" \
        in text


def test_a_market_made_before_one_scale_per_feature_loses_nothing(world, tmp_path):
    """An older lw let two islands measure f0..f2 at their own scales. Opened by this lw, the
    market keeps every learnware, id, spec and search; the later island is reported as
    misaligned (never silently compared), and refresh is idempotent."""
    old = tmp_path / "old"
    api.market_init(old)
    first = api.submit(build_learnware(tmp_path / "w", "a", *domain_data(0, 200, seed=0),
                                       k=10).package, old)
    other = tmp_path / "other"
    api.market_init(other)
    b = build_learnware(tmp_path / "w", "b", *domain_data(2, 200, seed=2, d=3), k=10)
    second = api.submit(b.package, other)
    # what an older lw wrote: b's island and learnware beside a's, each island its own scales
    shutil.copytree(other / "learnwares" / second.id, old / "learnwares" / second.id)
    mk = Market.open(old)
    with mk.writing():
        mk.add_island(Market.open(other).island(second.island))
    files = {p.relative_to(old): p.read_bytes() for p in (old / "learnwares").rglob("*")
             if p.is_file()}
    islands = Market.open(old).islands()
    bad = misaligned(islands)
    assert list(bad) == [second.island] and bad[second.island][0].startswith("feature 'f0'")
    assert feature_scales(islands)["f0"].island == first.island       # the earlier island
    assert output_scales(islands)["y"].island == first.island
    r1 = api.market_refresh(old)
    assert r1.changed and not api.market_refresh(old).changed           # idempotent
    doc = json.loads(run_cli("market", "info", "--market", old, "--json").stdout)
    assert doc["misaligned"] == bad
    warned = run_cli("market", "info", "--market", old)
    assert f"island {second.island} measures feature 'f0'" in warned.stderr
    # nothing lost: the same files, ids and searches on each island
    assert files == {p.relative_to(old): p.read_bytes() for p in (old / "learnwares").rglob("*")
                     if p.is_file()}
    assert sorted(r["id"] for r in api.market_ls(old)) == sorted([first.id, second.id])
    user = write_user(tmp_path / "u.csv", *domain_data(2, 60, seed=9, d=3))
    res = api.search(old, data=user, target="y", rerank=0)
    assert res.island == second.island and res.single[0]["id"] == second.id
