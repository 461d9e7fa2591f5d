"""The one simplex-constrained quadratic program lw solves, wrapped in one function.

``minimise w^T G w - 2 c^T w  subject to  w >= 0, sum(w) = 1``

It gives the RKME weights ``beta`` (G = Gram of the reduced points, c = kernel mean of the data
at them) and the mixture weights of search (G = Gram of learnware embeddings, c = their inner
products with the user's). A primal active-set method: exact, and unused members get weight
exactly 0, not a spurious 1e-9 blend.
"""

from __future__ import annotations

import numpy as np


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


def simplex_qp(G: np.ndarray, c: np.ndarray, *, tol: float = 1e-12,
               max_iter: int | None = None) -> np.ndarray:
    """Solve the simplex QP above (float64). ``G`` must be symmetric positive semi-definite."""
    G = np.asarray(G, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    n = c.shape[0]
    if n == 1:
        return np.ones(1)
    G = 0.5 * (G + G.T)
    # A tiny ridge keeps the support systems solvable when points (nearly) coincide.
    G = G + np.eye(n) * (1e-10 * max(float(np.mean(np.diag(G))), 1e-300))
    scale = max(float(np.abs(G).max()), float(np.abs(c).max()), 1e-300)
    w = np.zeros(n)
    first = int(np.argmin(np.diag(G) - 2.0 * c))
    w[first] = 1.0
    S = [first]
    for _ in range(max_iter or 20 * n + 20):
        g = G @ w - c
        mu = float(g[S].mean())
        viol = g - mu
        viol[S] = np.inf
        j = int(np.argmin(viol))
        if viol[j] >= -tol * scale:
            break
        S.append(j)
        while True:
            z = _solve_on_support(G, c, S)
            wS = w[S]
            if np.all(z > 0):
                w[:] = 0.0
                w[S] = z
                break
            neg = z <= 0
            alpha = float(np.min(wS[neg] / (wS[neg] - z[neg])))
            wS = wS + alpha * (z - wS)
            keep = wS > 1e-15
            # the blocking coordinate leaves the support
            wS[~keep] = 0.0
            w[:] = 0.0
            w[S] = wS
            S = [i for i, k in zip(S, keep) if k]
            if not S:  # numerically degenerate: fall back to the best vertex
                w[first] = 1.0
                S = [first]
                break
    w = np.clip(w, 0.0, None)
    return w / w.sum()
