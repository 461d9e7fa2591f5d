"""The one simplex-constrained quadratic program lw solves, wrapped in one function.

``minimise w^T G w - 2 c^T w  subject to  w >= 0, sum(w) = 1``

It gives the RKME weights ``beta`` (G = Gram of the reduced points, c = kernel mean of the data
at them) and the mixture weights of search (G = Gram of learnware embeddings, c = their inner
products with the user's). A primal active-set method: exact, and unused members get weight
exactly 0, not a spurious 1e-9 blend.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import UsageError


def _solve_on_support(G: np.ndarray, c: np.ndarray, S: list[int]) -> np.ndarray:
    """Minimiser of the QP restricted to support ``S`` with only the sum constraint."""
    s = len(S)
    A = np.empty((s + 1, s + 1))
    A[:s, :s] = 2.0 * G[np.ix_(S, S)]
    A[:s, s] = 1.0
    A[s, :s] = 1.0
    A[s, s] = 0.0
    rhs = np.empty(s + 1)
    rhs[:s] = 2.0 * c[S]
    rhs[s] = 1.0
    try:
        sol = np.linalg.solve(A, rhs)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(A, rhs, rcond=None)[0]
    return sol[:s]


def _minimise_on_working_set(G: np.ndarray, c: np.ndarray, w: np.ndarray, S: list[int],
                             first: int) -> list[int]:
    """Minimise over the working set ``S``, dropping blocking members until the minimiser is
    feasible (each drop keeps ``w`` feasible and does not increase the objective). Updates
    ``w`` (n,) in place; returns the new working set (``[first]``, the best vertex, if
    rounding empties it)."""
    while True:
        z = _solve_on_support(G, c, S)
        if np.all(z > 0):
            w[:] = 0.0
            w[S] = z
            return S
        wS = w[S]
        neg = np.flatnonzero(z <= 0)
        ratios = wS[neg] / (wS[neg] - z[neg])
        block = int(neg[np.argmin(ratios)])
        wS = wS + float(ratios.min()) * (z - wS)
        wS[block] = 0.0
        keep = wS > 1e-15
        w[:] = 0.0
        w[S] = np.where(keep, wS, 0.0)
        S = [i for i, k in zip(S, keep) if k]
        if not S:
            w[first] = 1.0
            return [first]


@lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def simplex_qp(G: np.ndarray, c: np.ndarray, *, w0: np.ndarray | None = None,
               tol: float = 1e-12, max_iter: int | None = None) -> np.ndarray:
    """Solve the simplex QP below on one BLAS thread.

    Its systems are small (one row per member), so threads do not pay; and worse, OpenBLAS's
    idle threads spin for a while after each call and starve torch's own threads, which run the
    kernel sums between two solves: on 2 cores that made an RKME fit's gradient steps 5x slower.
    """
    with _blas_controller().limit(limits=1, user_api="blas"):
        return _simplex_qp(G, c, w0=w0, tol=tol, max_iter=max_iter)


def _simplex_qp(G: np.ndarray, c: np.ndarray, *, w0: np.ndarray | None,
                tol: float, max_iter: int | None) -> np.ndarray:
    """Solve the simplex QP above (float64). ``G`` must be symmetric positive semi-definite.

    ``w0``: a feasible starting point (non-negative; it is normalised) whose support is the
    first working set. Without it the solver starts from the best vertex and adds members one at
    a time, which suits sparse solutions (a search's mixture). When most coordinates end up
    positive (an RKME's weights) or a previous solution is at hand, start from it: the uniform
    vector or the last ``beta`` takes a handful of support solves instead of one per member.
    """
    G = np.asarray(G, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    n = c.shape[0]
    if n == 1:
        return np.ones(1)
    G = 0.5 * (G + G.T)
    # A tiny ridge keeps the support systems solvable when points (nearly) coincide.
    G = G + np.eye(n) * (1e-10 * max(float(np.mean(np.diag(G))), 1e-300))
    scale = max(float(np.abs(G).max()), float(np.abs(c).max()), 1e-300)
    first = int(np.argmin(np.diag(G) - 2.0 * c))
    w = np.zeros(n)
    if w0 is not None:
        w0 = np.asarray(w0, dtype=np.float64)
        if w0.shape != (n,) or not np.all(np.isfinite(w0)) or (w0 < 0).any() or w0.sum() <= 0:
            raise UsageError(f"w0 must be a non-negative vector of length {n} with a positive "
                             f"sum, got shape {w0.shape}", "start from a point of the simplex")
        w = w0 / w0.sum()
        S = [int(i) for i in np.flatnonzero(w > 0)]
    else:
        w[first] = 1.0
        S = [first]
    for _ in range(max_iter or 20 * n + 20):
        S = _minimise_on_working_set(G, c, w, S, first)
        # Optimality: the member with the most negative reduced gradient joins the working set.
        g = G @ w - c
        mu = float(g[S].mean())
        viol = g - mu
        viol[S] = np.inf
        j = int(np.argmin(viol))
        if viol[j] >= -tol * scale:
            break
        S.append(j)
    w = np.clip(w, 0.0, None)
    return w / w.sum()
