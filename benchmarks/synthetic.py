"""Synthetic islands of 1,000 to 1,000,000 learnwares for the performance benchmark.

A market of a million real learnwares cannot be trained here, and the search cost does not
depend on what the models are: it depends on the island's size, K and dimension. So the
benchmark writes real market directories (``market.toml`` with one island, and an index
generation written by lw's own ``publish_index``: ids, stacked specs, self terms, sketches,
catalog rows and tags) whose specifications are drawn from a family with structure:

* ``n // 100`` groups (at least 10) with centres ``N(0, 1.5^2 I)`` in 13 coordinates
  (12 inputs and one output, like the sample market's PM2.5 island);
* each learnware a centre ``group + N(0, 0.5^2 I)``, a spread ``U(0.5, 1.0)`` and K = 100 reduced
  points ``centre + spread * N(0, I)`` with Dirichlet(1) weights, so every learnware has ~100
  near relatives: near-ties at the top are the rule, which is what makes shortlisting hard.

Queries come in three families: ``member`` (a learnware's own reduced set, slightly
perturbed), ``mixture`` (half the points of each of two learnwares of one group) and ``novel``
(a fresh learnware of an existing group, not in the market). ``learnwares/`` stays empty:
reranking by the requirement (which runs models) is off in these runs and says so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from lwcli.engine.kernel import KernelMetric
from lwcli.engine.rkme import RKME
from lwcli.engine.search import build_sketch, island_basis, stack_arrays
from lwcli.market.index import IslandTable, publish_index, sketch_seed
from lwcli.market.manifest import island_id_for
from lwcli.market.store import Island, Market, utcnow
from lwcli.specfile import Spec

D_IN, K = 12, 100
D = D_IN + 1
FEATURES = tuple(f"x{i}" for i in range(D_IN))
OUTPUT = "y"
CHUNK = 4096
FAMILIES = ("member", "mixture", "novel")
KEY = {"data_type": "table", "task": "regression", "objective": "rmse",
       "features": list(FEATURES), "outputs": [OUTPUT]}


def island_metric() -> KernelMetric:
    return KernelMetric(tuple([1.0] * D), 1.0 / (2 * D), D_IN)


class Family:
    """The generator of an island of ``n`` learnwares (deterministic in ``seed``)."""

    def __init__(self, n: int, seed: int = 0, jitter: float = 0.5) -> None:
        self.n, self.seed, self.jitter = n, seed, jitter
        self.groups = max(10, n // 100)
        self.group_centres = np.random.default_rng([seed, 1]).normal(
            size=(self.groups, D)).astype(np.float32) * 1.5

    def _draw(self, rng, groups: np.ndarray):
        m = len(groups)
        centres = self.group_centres[groups] + rng.normal(size=(m, D)).astype(np.float32) * self.jitter
        spread = rng.uniform(0.5, 1.0, size=(m, 1, 1)).astype(np.float32)
        pts = centres[:, None, :] + spread * rng.standard_normal((m, K, D), dtype=np.float32)
        beta = rng.dirichlet(np.ones(K), size=m).astype(np.float32)
        return pts, beta

    def chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = c * CHUNK, min(self.n, (c + 1) * CHUNK)
        return self._draw(np.random.default_rng([self.seed, 2, c]), np.arange(s, e) % self.groups)

    def learnware(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        pts, beta = self.chunk(i // CHUNK)
        return pts[i % CHUNK], beta[i % CHUNK]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        points = np.empty((self.n, K, D), dtype=np.float32)
        beta = np.empty((self.n, K), dtype=np.float32)
        for c in range(-(-self.n // CHUNK)):
            points[c * CHUNK:(c + 1) * CHUNK], beta[c * CHUNK:(c + 1) * CHUNK] = self.chunk(c)
        return points, beta

    def query(self, family: str, q: int) -> RKME:
        """The ``q``-th requirement of ``family`` (joint; ``.input_part()`` for inputs only)."""
        rng = np.random.default_rng([self.seed, 3, FAMILIES.index(family), q])
        if family == "member":
            p, b = self.learnware(int(rng.integers(self.n)))
            p = p + rng.normal(size=p.shape) * 0.05
        elif family == "mixture":
            i = int(rng.integers(self.n))
            j = (i + self.groups * int(rng.integers(1, 50))) % self.n      # same group
            (p1, b1), (p2, b2) = self.learnware(i), self.learnware(j)
            p = np.concatenate([p1[: K // 2], p2[: K // 2]])
            b = np.concatenate([b1[: K // 2] / b1[: K // 2].sum(), b2[: K // 2] / b2[: K // 2].sum()])
        else:
            pts, beta = self._draw(rng, np.array([int(rng.integers(self.groups))]))
            p, b = pts[0], beta[0]
        b = np.asarray(b, dtype=np.float64)
        return RKME(beta=b / b.sum(), points=np.asarray(p, dtype=np.float64), metric=island_metric(),
                    n_rows=1000, approx_error=0.0)


def requirement_spec(rkme: RKME, island: str) -> Spec:
    joint = rkme.metric.n_outputs > 0
    return Spec(rkme=rkme, features=FEATURES, task="regression",
                outputs=(OUTPUT,) if joint else (), output_source="target" if joint else None,
                island=island)


def build_market(root: Path, n: int, seed: int = 0, device=None, jitter: float = 0.5) -> tuple[Market, str, dict]:
    """Write a market of ``n`` synthetic learnwares at ``root``; (market, island, timings)."""
    import time

    timings = {}
    mk = Market.init(root)
    metric = island_metric()
    iid = island_id_for(KEY)
    ids = [f"{i:016x}" for i in range(n)]
    with mk.locked():
        mk.reload()
        if iid not in mk.islands():
            mk.add_island(Island(iid, KEY, metric, utcnow(), ids[0]))
    fam = Family(n, seed, jitter)
    t0 = time.perf_counter()
    points, beta = fam.arrays()
    timings["generate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stack = stack_arrays(metric, points, beta, device)
    timings["self_terms_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sketch = build_sketch(stack, island_basis(metric, sketch_seed(iid)), device)
    timings["sketch_s"] = time.perf_counter() - t0
    summaries = [{"id": i, "name": f"synthetic-{r}", "version": "1.0.0", "description": "",
                  "license": "CC0-1.0", "tags": [f"group-{r % fam.groups}"], "island": iid,
                  "task": "regression", "model_format": "skops", "k": K, "approx_error": 0.0,
                  "agreement": None, "submitted_at": None,
                  "spec_sha256": hashlib.sha256(f"{seed} {i}".encode()).hexdigest()}
                 for r, i in enumerate(ids)]
    t0 = time.perf_counter()
    with mk.locked():
        publish_index(mk, {iid: IslandTable(ids, summaries, stack, sketch)}, replace=True)
    timings["write_s"] = time.perf_counter() - t0
    return mk, iid, timings
