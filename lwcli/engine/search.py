"""Search inside one island: the single ranking and the mixture (seed sec. 3.3, eq. 3).

An island's specifications are stacked once (:class:`SpecStack`): every reduced set padded to
the island's largest K with zero weights, scaled by the island metric. A query then costs one
batched kernel evaluation between all stacked points and the user's points — no Python loop
over learnwares.

Two kinds of requirement, as of specifications: ``"joint"`` (it embeds inputs *and* labels,
matched against the learnwares' (x, y_hat) specifications) and ``"input"`` (inputs only, matched
against the input marginals); output names them by :data:`~.sketch.MODE_NAMES` (``"xy"`` /
``"x"``). The kernel factorises over coordinates, so the input marginal of a stacked spec is
its points with the output columns dropped.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from ..errors import MetricMismatchError, SpecError, UsageError
from .kernel import (KernelMetric, kernel_inner, stack_cross_inner, stack_inner_matrix,
                     stack_self_inner)
from .qp import simplex_qp
from .rkme import RKME
from .sketch import (MODE_NAMES, SKETCH_PAIRS, SketchBasis, check_kind, sketch_norms,
                     sketch_rkmes, sketch_user)

# Kernel block of one search step on a CPU: 1 Mi float32 = 4 MiB stays in cache (16 MiB blocks
# make a 1,000-learnware query about 1.6x slower).
SEARCH_BLOCK_ELEMENTS = 1 << 20
# On a GPU a block is one kernel launch and one copy back, so blocks are large: 128 Mi float32
# (512 MiB) makes a 10,000-learnware query about 3.5x faster than the CPU's block size.
SEARCH_BLOCK_ELEMENTS_GPU = 1 << 27
# Above this many learnwares an island is searched through its sketch index (when it has one):
# exact search of 100,000 learnwares takes about 0.8 s on two CPU cores.
SKETCH_MIN_LEARNWARES = 100_000
# Sketch search: how many of the nearest sketches get an exact MMD (see the benchmark's recall).
SKETCH_CANDIDATES = 2048
# The mixture is chosen among this many best single matches.
MIXTURE_CANDIDATES = 16
MIN_REQUIREMENT_ROWS = 20     # fewer rows: an RKME says little about the user's distribution


def requirement_notes(n_rows: int, labelled: bool) -> list[str]:
    """Warnings about a requirement too small to rank by (field reports: a 1-row search
    returned a confident-looking ranking)."""
    if n_rows >= MIN_REQUIREMENT_ROWS:
        return []
    fix = ("rank the market from your labels through its anchors (lw anchor-eval, then lw search "
           "--anchor-report)" if labelled else "pass more rows, or label a few and use lw "
           "anchor-eval")
    return [f"the requirement summarises only {n_rows} row{'s' if n_rows != 1 else ''}, too few "
            f"for its RKME to describe your data (fewer than {MIN_REQUIREMENT_ROWS}); the "
            f"ranking means little: {fix}"]



@dataclass(frozen=True)
class IslandSketch:
    """An island's sketch index: per learnware a ``2 * pairs`` vector for each kind.

    ``xy`` / ``x``: (N, 2 * pairs) float32 (typically memory-mapped); ``norms``: (2, N) their
    squared norms, float64.
    """

    basis: SketchBasis
    xy: np.ndarray
    x: np.ndarray
    norms: np.ndarray

    @property
    def n(self) -> int:
        return int(self.xy.shape[0])

    def matrix(self, kind: str) -> np.ndarray:
        """The (N, 2 * pairs) sketches of ``kind`` ("joint" or "input")."""
        return self.xy if check_kind(kind) == "joint" else self.x

    def norms_of(self, kind: str) -> np.ndarray:
        """The (N,) squared norms of :meth:`matrix`'s rows."""
        return self.norms[0 if check_kind(kind) == "joint" else 1]


@dataclass(frozen=True)
class SpecStack:
    """All specifications of one island, ready for batched queries.

    ``points``: (N, K, d) scaled coordinates; ``beta``: (N, K) with zero padding;
    ``self_xy`` / ``self_x``: each spec's squared RKHS norm, joint / input-only (the index's
    names, :data:`~.sketch.MODE_NAMES`).
    """

    metric: KernelMetric
    points: np.ndarray
    beta: np.ndarray
    self_xy: np.ndarray
    self_x: np.ndarray

    @property
    def n(self) -> int:
        return int(self.points.shape[0])

    def selfs(self, kind: str) -> np.ndarray:
        """The (N,) squared RKHS norms of ``kind`` ("joint" or "input")."""
        return self.self_xy if check_kind(kind) == "joint" else self.self_x

    def dims(self, kind: str) -> int:
        """How many leading coordinates of the stacked points ``kind`` compares."""
        return self.metric.dim if check_kind(kind) == "joint" else self.metric.n_inputs


def _self_terms(points: np.ndarray, beta: np.ndarray, gamma: float, device) -> np.ndarray:
    """Each stacked spec's squared RKHS norm (N,) float64, computed on ``device`` in the
    stack's dtype; ``points`` (N, K, d) and ``beta`` (N, K) may be memory-mapped."""
    import torch

    def load(lo: int, hi: int):
        P = torch.from_numpy(np.array(points[lo:hi])).to(device)
        return P, torch.from_numpy(np.array(beta[lo:hi])).to(device, P.dtype)

    N, K, _ = points.shape
    return stack_self_inner(load, N, K, gamma)


def build_stack(specs: list[RKME], metric: KernelMetric, device=None,
                dtype=np.float32) -> SpecStack:
    """Stack the joint specifications of one island (all fitted under ``metric``): points
    scaled and zero-padded to the largest K in ``dtype``, self terms computed on ``device``.
    MetricMismatchError if a specification was fitted under another metric."""
    import torch

    device = device or torch.device("cpu")
    d = metric.dim
    kmax = max((s.k for s in specs), default=1)
    N = len(specs)
    points = np.zeros((N, kmax, d), dtype=dtype)
    beta = np.zeros((N, kmax), dtype=dtype)
    inv = 1.0 / np.asarray(metric.scales)
    for i, s in enumerate(specs):
        if s.metric.digest() != metric.digest():
            raise MetricMismatchError(
                f"specification {i} was fitted with metric {s.metric.digest()}, the island "
                f"uses {metric.digest()}", "refit it with lw spec --market")
        points[i, : s.k] = s.points * inv
        beta[i, : s.k] = s.beta
    return stack_arrays(metric, points, beta, device)


def stack_arrays(metric: KernelMetric, points: np.ndarray, beta: np.ndarray,
                 device=None) -> SpecStack:
    """A stack from already scaled, padded ``points`` (N, K, d) and ``beta`` (N, K): computes
    both kinds' self terms ``||Phi_i||^2`` (the self terms of the MMD), float64 (N,) each."""
    self_xy = _self_terms(points, beta, metric.gamma, device)
    self_x = _self_terms(np.ascontiguousarray(points[:, :, : metric.n_inputs]), beta,
                         metric.gamma, device)
    return SpecStack(metric, points, beta, self_xy, self_x)


def island_basis(metric: KernelMetric, seed: int, pairs: int = SKETCH_PAIRS) -> SketchBasis:
    """The sketch frequencies of an island with ``metric`` (seed recorded with the index)."""
    return SketchBasis(int(seed), int(pairs), metric.dim, metric.n_inputs, metric.gamma)


def build_sketch(stack: SpecStack, basis: SketchBasis, device=None) -> IslandSketch:
    """Both kinds' sketches of a stacked island, (N, 2 * pairs) float32 each, and their
    squared norms (2, N) float64 (Rahimi & Recht 2007; see :mod:`.sketch`)."""
    xy = sketch_rkmes(stack.points, stack.beta, basis, "joint", device)
    x = sketch_rkmes(stack.points, stack.beta, basis, "input", device)
    return IslandSketch(basis, xy, x, np.stack([sketch_norms(xy), sketch_norms(x)]))


def _user_kind(stack: SpecStack, user: RKME) -> str:
    """"joint" or "input": which of the island's metrics the requirement was fitted under."""
    m = stack.metric
    if user.metric.digest() == m.digest():
        return "joint"
    if user.metric.digest() == m.input_metric().digest():
        return "input"
    raise MetricMismatchError(
        f"the requirement was fitted with kernel metric {user.metric.digest()}, but this island "
        f"uses {m.digest()} (or {m.input_metric().digest()} for inputs only)",
        "rebuild the requirement with lw spec --market (or let lw search --data build it)",
    )


@dataclass(frozen=True)
class Ranking:
    kind: str                 # "joint" (label-aware) or "input" (inputs only)
    mmd2: np.ndarray          # (N,) squared RKHS distances, user to each learnware
    cross: np.ndarray         # (N,) <Phi_user, Phi_i>
    self_user: float
    order: np.ndarray         # indices, best first (only the best ``keep`` when asked)
    shortlist: int | None = None   # sketch search: how many got an exact MMD (None: all)

    @staticmethod
    def score(mmd2: np.ndarray | float) -> np.ndarray:
        """Absolute similarity in [0, 1]: ``1 - MMD / sqrt(2)`` (sqrt(2) is the largest
        possible RKHS distance for a normalised kernel). Comparable across queries."""
        return 1.0 - np.sqrt(np.clip(mmd2, 0.0, 2.0) / 2.0)

    @property
    def mode(self) -> str:
        """The kind as output names it: "xy" or "x"."""
        return MODE_NAMES[self.kind]


def _scaled_user(stack: SpecStack, user: RKME, kind: str):
    m = stack.metric if kind == "joint" else stack.metric.input_metric()
    return user.points / np.asarray(m.scales), user.beta


def rank_single(stack: SpecStack, user: RKME, device=None, *, sketch: "IslandSketch | None" = None,
                keep: int | None = None, allowed: np.ndarray | None = None,
                candidates: int = SKETCH_CANDIDATES) -> Ranking:
    """Squared MMD (the seed's RKHS distance, sec. 3.3 and eq. 6) from the user's requirement to
    the island's learnwares, batched: ``Ranking.mmd2`` (N,) float64, in squared RKHS units.

    The requirement's metric picks the kind: the island's metric is label-aware ("joint"), its
    input metric inputs only ("input"); MetricMismatchError for any other. UsageError if
    ``allowed`` or ``sketch`` do not fit the stack.

    Exact by default: every learnware. With ``sketch``, the ``candidates`` learnwares nearest
    by sketch distance are shortlisted first and only they get an exact MMD (the others are
    NaN in ``mmd2`` and ``cross``). ``allowed`` (a boolean mask) restricts the ranking, e.g. to
    learnwares carrying some tags; ``keep`` orders only the best ``keep`` (a partial sort).
    """
    import torch

    device = device or torch.device("cpu")
    kind = _user_kind(stack, user)
    gamma = stack.metric.gamma
    N, K, d = stack.points.shape
    U, bu = _scaled_user(stack, user, kind)
    dt = torch.float32 if stack.points.dtype == np.float32 else torch.float64
    Ud = torch.as_tensor(U, dtype=torch.float64, device=device)
    bud = torch.as_tensor(bu, dtype=torch.float64, device=device)
    self_user = float(kernel_inner(Ud, bud, Ud, bud, gamma))
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != (N,):
            raise UsageError(f"allowed has shape {allowed.shape}, the island has {N} learnwares",
                             "pass one boolean per learnware of the island")
    rows = None
    if sketch is not None:
        if sketch.n != N or sketch.basis.dim != d:
            raise UsageError(f"the sketch ({sketch.n} x {sketch.basis.dim} coordinates) does not "
                             f"match the island's stack ({N} x {d})",
                             "pass the sketch built from this stack")
        rows = _sketch_shortlist(sketch, kind, U, bu, candidates, allowed, device)
    cross_rows = _cross_terms(stack, Ud.to(dt), bud.to(dt), gamma, stack.dims(kind), device, rows)
    selfs = stack.selfs(kind)
    if rows is None:
        cross = cross_rows
        mmd2 = np.maximum(selfs + self_user - 2.0 * cross, 0.0)
        pool = np.arange(N) if allowed is None else np.flatnonzero(allowed)
    else:
        cross = np.full(N, np.nan)
        cross[rows] = cross_rows
        mmd2 = np.full(N, np.nan)
        mmd2[rows] = np.maximum(selfs[rows] + self_user - 2.0 * cross_rows, 0.0)
        pool = rows
    return Ranking(kind, mmd2, cross, self_user, _best(mmd2, pool, keep),
                   None if rows is None else len(rows))


def _best(values: np.ndarray, pool: np.ndarray, keep: int | None) -> np.ndarray:
    """``pool`` ordered by ``values`` (ties by index), or only its best ``keep``."""
    v = values[pool]
    if keep is not None and keep < len(pool):
        part = np.argpartition(v, max(keep - 1, 0))[:keep]
        return pool[part[np.lexsort((pool[part], v[part]))]]
    return pool[np.argsort(v, kind="stable")]


# Device copies of an index's arrays, kept for the life of the (memory-mapped) array, so that
# repeated queries on a GPU do not copy the island over PCIe each time (a 1e6-learnware stack
# is 5 GiB: ~0.2 s per copy, ten times the whole query).
_RESIDENT: dict = {}


def _resident(arr: np.ndarray, device):
    """``arr`` on ``device``, copied once per array object; None if it would not fit."""
    import torch

    key = (id(arr), str(device))
    hit = _RESIDENT.get(key)
    if hit is not None and hit[0]() is arr:
        return hit[1]
    free, _ = torch.cuda.mem_get_info(device)
    if arr.nbytes > 0.6 * free:
        return None
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    _RESIDENT[key] = (weakref.ref(arr), t)
    weakref.finalize(arr, _RESIDENT.pop, key, None)
    return t


def _cross_terms(stack: SpecStack, Ut, but, gamma: float, dm: int, device,
                 rows: np.ndarray | None = None) -> np.ndarray:
    """``<Phi_user, Phi_i>`` for every learnware (or those in ``rows``), float64.

    Blocks of whole learnwares; each block is one matmul, one in-place ``exp`` and one
    matrix-vector product. On a GPU the island stays resident between queries.
    """
    import torch

    N, K, d = stack.points.shape
    Pt = Bt = None
    if device.type == "cuda":
        Pt, Bt = _resident(stack.points, device), _resident(stack.beta, device)
    if Pt is not None and Bt is not None:
        if rows is not None:
            idx = torch.as_tensor(rows, device=device)
            Pt, Bt = Pt[idx], Bt[idx]

        def block(s: int, e: int):
            return Pt[s:e], Bt[s:e]
    else:
        pts = stack.points if rows is None else stack.points[rows]
        bet = stack.beta if rows is None else stack.beta[rows]

        def block(s: int, e: int):
            return (torch.from_numpy(np.ascontiguousarray(pts[s:e])).to(device),
                    torch.from_numpy(np.ascontiguousarray(bet[s:e])).to(device))
    n = N if rows is None else len(rows)
    size = SEARCH_BLOCK_ELEMENTS if device.type == "cpu" else SEARCH_BLOCK_ELEMENTS_GPU
    out = stack_cross_inner(block, n, K, Ut, but, gamma, dims=dm, block_elements=size)
    return out.cpu().numpy()


def _sketch_shortlist(sketch: "IslandSketch", kind: str, U: np.ndarray, bu: np.ndarray,
                      candidates: int, allowed: np.ndarray | None, device) -> np.ndarray:
    """Indices (sorted) of the ``candidates`` learnwares nearest by sketch distance."""
    import torch

    su = sketch_user(U, bu, sketch.basis, kind)
    S, norms = sketch.matrix(kind), sketch.norms_of(kind)
    pool = sketch.n if allowed is None else int(allowed.sum())
    c = max(1, min(int(candidates), pool))
    if pool == 0:
        return np.empty(0, dtype=np.int64)
    St = nt = None
    if device.type == "cuda":
        St, nt = _resident(S, device), _resident(np.asarray(norms), device)
    if St is not None and nt is not None:
        approx = nt - 2.0 * (St @ torch.as_tensor(su, dtype=St.dtype, device=device)).double()
        if allowed is not None:
            approx[~torch.as_tensor(allowed, device=device)] = float("inf")
        idx = torch.topk(approx, c, largest=False).indices.cpu().numpy()
    else:
        proj = (torch.from_numpy(S) @ torch.as_tensor(su, dtype=torch.float32)).numpy()
        approx = norms - 2.0 * proj
        if allowed is not None:
            approx = np.where(allowed, approx, np.inf)
        idx = np.argpartition(approx, c - 1)[:c] if c < len(approx) else np.arange(len(approx))
    return np.sort(idx.astype(np.int64))


def _greedy_support(H: np.ndarray, c: np.ndarray, su: float, floor: float, max_members: int,
                    min_gain: float) -> tuple[list[int], np.ndarray, float]:
    """Greedy forward selection for :func:`mixture_search`: ``H`` (M, M) inner products of
    the candidates' embeddings, ``c`` (M,) theirs with the user's, ``su`` the user's squared
    norm. Returns the chosen positions, their simplex weights and the squared MMD reached."""

    def objective(idx: list[int]) -> tuple[np.ndarray, float]:
        w = simplex_qp(H[np.ix_(idx, idx)], c[idx])
        val = float(w @ H[np.ix_(idx, idx)] @ w - 2 * w @ c[idx] + su)
        return w, max(val, 0.0)

    M = len(c)
    chosen = [0]
    w, cur = objective(chosen)
    while len(chosen) < max_members:
        best = None
        for j in range(M):
            if j in chosen:
                continue
            wj, vj = objective(chosen + [j])
            if best is None or vj < best[2]:
                best = (j, wj, vj)
        if best is None:
            break
        gain = cur - best[2]
        if gain <= max(min_gain * cur, floor):
            break
        chosen.append(best[0])
        w, cur = best[1], best[2]
        keep = w > 1e-12
        chosen = [i for i, k in zip(chosen, keep) if k]
        w = w[keep] / w[keep].sum()
    return chosen, w, cur


@dataclass(frozen=True)
class Mixture:
    members: np.ndarray       # indices into the stack
    weights: np.ndarray       # on the simplex, same order
    mmd2: float
    noise_floor: float


def mixture_search(
    stack: SpecStack,
    user: RKME,
    ranking: Ranking,
    *,
    candidates: int = MIXTURE_CANDIDATES,
    max_members: int = 5,
    min_gain: float = 0.1,
    device=None,
) -> Mixture:
    """Weights on the simplex minimising ``|| Phi_u - sum_i w_i Phi_i ||`` (seed eq. 3).

    Greedy forward selection over the ``candidates`` best single matches: a learnware joins
    only if it lowers the distance by more than ``min_gain`` of the current value *and* by more
    than the sampling-noise floor of the user's requirement, ``(1 - ||Phi_u||^2) / n_u``
    (the expected squared MMD between ``n_u`` samples and their own distribution). A user whose
    data come from one learnware therefore gets that learnware alone, not a spurious blend.
    Weights are then solved exactly on the chosen support.
    """
    import torch

    device = device or torch.device("cpu")
    cand = ranking.order[: min(candidates, stack.n)]
    M = len(cand)
    dm = stack.dims(ranking.kind)
    # float32 Gram through the one-matmul form; H's absolute error (~1e-6) sits far below the
    # sampling-noise floor (~1e-3) that decides membership.
    P = torch.from_numpy(np.ascontiguousarray(stack.points[cand][:, :, :dm], dtype=np.float32)
                         ).to(device)
    B = torch.from_numpy(np.ascontiguousarray(stack.beta[cand], dtype=np.float32)).to(device)
    H = stack_inner_matrix(P, B, stack.metric.gamma)
    su = ranking.self_user
    floor = max(1.0 - su, 0.0) / max(user.n_rows, 1)
    chosen, w, cur = _greedy_support(H, ranking.cross[cand], su, floor, min(max_members, M),
                                     min_gain)
    order = np.argsort(-w, kind="stable")
    members = cand[np.asarray(chosen)[order]]
    return Mixture(members=members, weights=w[order], mmd2=cur, noise_floor=floor)


# ---------------------------------------------------------- re-ranking by the requirement

RERANK_SHORTLIST = 20     # measured on the sample market: 20 keeps the whole gain of all 40-44


@dataclass(frozen=True)
class Reranked:
    order: np.ndarray         # indices, best first: evaluated by loss, then the rest by MMD
    losses: np.ndarray        # loss of each ``order[i]`` on the requirement; NaN if not evaluated
    skipped: np.ndarray       # shortlisted indices that could not be evaluated


def requirement_sample(user: RKME) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A label-aware requirement's reduced set read as a small weighted labelled sample:
    ``(inputs, outputs, weights)`` in raw coordinates (outputs: values, or class indicators)."""
    if user.metric.n_outputs == 0:
        raise SpecError("the requirement embeds inputs only: it carries no labels to evaluate "
                        "a model on", "build it with --target")
    n_in = user.metric.n_inputs
    return user.points[:, :n_in], user.points[:, n_in:], user.beta


def requirement_loss(outputs: np.ndarray, user: RKME) -> float:
    """Weighted squared error of a model's ``outputs`` on the requirement's reduced points:
    ``sum_j beta_j ||f(z_x_j) - z_y_j||^2`` (MSE for values, the Brier score for classes).

    The reduced set is fitted so that kernel means under it match those under the user's
    data, so this estimates the model's quadratic loss on her data from her specification
    alone (the seed's sec. 3.2 idea of synthetic data fed to models, applied to the
    requirement the user already sends).
    """
    _, Y, beta = requirement_sample(user)
    F = np.asarray(outputs, dtype=np.float64).reshape(Y.shape)
    return float(beta @ ((F - Y) ** 2).sum(1))


def rerank(order: np.ndarray, user: RKME, outputs_of, shortlist: int = RERANK_SHORTLIST
           ) -> Reranked:
    """Re-rank the ``shortlist`` best RKME matches by :func:`requirement_loss`.

    RKHS distance finds learnwares whose data look like the user's; it cannot tell a strong
    model from a weak one trained on similar data. Running the shortlisted models on the
    requirement's reduced inputs and scoring them against its reduced labels can.
    ``outputs_of(index, inputs)`` returns that model's outputs, or ``None`` when it cannot be
    run (it then keeps its RKME place after the evaluated ones). Ties keep the RKME order.
    """
    X, _, _ = requirement_sample(user)
    order = np.asarray(order, dtype=np.int64)
    k = max(0, int(shortlist))
    done, loss, skipped = [], [], []
    for j in order[:k]:
        out = outputs_of(int(j), X)
        if out is None:
            skipped.append(int(j))
        else:
            done.append(int(j))
            loss.append(requirement_loss(out, user))
    by = np.argsort(np.asarray(loss), kind="stable")
    ranked = np.asarray(done, dtype=np.int64)[by]
    rest = np.concatenate([np.asarray(skipped, dtype=np.int64), order[k:]])
    losses = np.concatenate([np.asarray(loss, dtype=np.float64)[by], np.full(len(rest), np.nan)])
    return Reranked(np.concatenate([ranked, rest]), losses, np.asarray(skipped, dtype=np.int64))


__all__ = ["SpecStack", "IslandSketch", "build_stack", "stack_arrays", "build_sketch",
           "island_basis", "rank_single", "mixture_search", "Ranking", "Mixture", "Reranked", "rerank", "requirement_loss", "requirement_sample",
           "RERANK_SHORTLIST", "SKETCH_MIN_LEARNWARES", "SKETCH_CANDIDATES",
           "MIXTURE_CANDIDATES"]
