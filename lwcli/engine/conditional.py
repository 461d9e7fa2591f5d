"""Estimating features a row lacks from specifications: the kernel conditional mean.

A reduced set ``(T, beta)`` fitted under a Gaussian kernel with per-coordinate scales ``s``
and bandwidth ``gamma`` (seed sec. 3.3, eq. 1) is, smoothed by its own kernel, the Gaussian
mixture ``p(x) = sum_j beta_j N(x; t_j, diag(s^2) / (2 gamma))``. For a row whose coordinates
``O`` are observed and ``M`` missing, the mixture's conditional mean is

    E[x_M | x_O] = sum_j w_j t_jM,
    w_j ∝ beta_j prod_{o in O} (sqrt(2 gamma) / s_o) exp(-gamma ((x_o - t_jo) / s_o)^2),

the reduced points averaged with weights by kernel similarity on the shared coordinates
(Nadaraya-Watson on the reduced set). The RKME's own bandwidth (the median heuristic) smooths
far too much for this: on the Beijing sample it pulls estimates most of the way to the mean.
So the bandwidth is sharpened, per reference and per pattern of observed coordinates, by the
factor of :data:`SHARPEN` whose leave-one-out error over the reduced points themselves is
lowest (each point predicted from the others; squared errors in scaled units, weighted by
``beta``); factor 1 is the mixture above. Several references (several learnwares' specifications)
form one mixture, each weighted equally. A row that shares no observed coordinate with the
references gets their weighted mean. This is how ``lw reuse`` fills a user's missing inputs
and, for island bridging (seed sec. 5, Figure 3), estimates X2 from X1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernel import sqdist

ROWS_PER_BLOCK = 4096
#: the bandwidth factors tried (``gamma`` times each), chosen by leave-one-out error
SHARPEN = (1.0, 4.0, 16.0, 64.0, 256.0)


@dataclass(frozen=True)
class Reference:
    """One weighted reduced set over named coordinates: ``points`` (K, d) raw coordinates,
    ``beta`` (K,) on the simplex, ``scales`` (d,) and ``gamma`` as the kernel metric has them
    (:class:`lwcli.engine.kernel.KernelMetric`), ``names`` the d coordinates' names."""

    names: tuple[str, ...]
    points: np.ndarray
    beta: np.ndarray
    scales: np.ndarray
    gamma: float

    @classmethod
    def of_rkme(cls, rkme, names) -> "Reference":
        """The input part of an RKME (its first ``metric.n_inputs`` coordinates) as a
        reference over the feature ``names``."""
        m = rkme.metric
        d = m.n_inputs
        return cls(tuple(names), np.asarray(rkme.points[:, :d], np.float64),
                   np.asarray(rkme.beta, np.float64), np.asarray(m.scales[:d], np.float64),
                   float(m.gamma))


def conditional_mean(X: np.ndarray, names, references) -> tuple[np.ndarray, int, int]:
    """``X`` (n, d) float64 with NaN where a value is missing, over the columns ``names``;
    returns ``(filled copy, cells filled, rows filled)``.

    A missing cell whose column no reference knows stays NaN (the caller refuses it). Each
    row pattern of missing columns is computed once, ``ROWS_PER_BLOCK`` rows at a time; the
    weights are formed in log space so that far rows never underflow to 0/0.
    """
    X = np.array(X, dtype=np.float64, copy=True)
    gaps = np.isnan(X)
    if not gaps.any() or not references:
        return X, 0, 0
    names = list(names)
    known = {n for r in references for n in r.names}
    patterns, inverse = np.unique(gaps, axis=0, return_inverse=True)
    before = int(gaps.sum())
    for p, pattern in enumerate(patterns):
        missing = [names[j] for j in np.flatnonzero(pattern) if names[j] in known]
        if not missing:
            continue
        rows = np.flatnonzero(inverse.ravel() == p)
        observed = [names[j] for j in np.flatnonzero(~pattern)]
        for lo in range(0, len(rows), ROWS_PER_BLOCK):
            block = rows[lo : lo + ROWS_PER_BLOCK]
            est = _estimate(X[np.ix_(block, [names.index(o) for o in observed])], observed,
                            missing, references)
            X[np.ix_(block, [names.index(m) for m in missing])] = est
    still = np.isnan(X)
    return X, before - int(still.sum()), int((gaps & ~still).any(1).sum())


def _estimate(Xo: np.ndarray, observed: list[str], missing: list[str], references) -> np.ndarray:
    """(rows, len(missing)): the mixture's conditional mean; a missing column that only some
    references know is averaged over those."""
    logs, values = [], []
    for r in references:
        pos = {n: i for i, n in enumerate(r.names)}
        shared = [o for o in observed if o in pos]
        cols = [pos[o] for o in shared]
        logw = np.log(np.maximum(r.beta, 1e-300)) - np.log(len(references))
        logw = np.broadcast_to(logw, (len(Xo), len(r.beta))).copy()
        if shared:
            s = r.scales[cols]
            T = r.points[:, cols] / s
            known_m = [pos[m] for m in missing if m in pos]
            g = r.gamma * sharpening(T, r.points[:, known_m] / r.scales[known_m], r.beta,
                                     r.gamma)
            A = Xo[:, [observed.index(o) for o in shared]] / s
            logw -= g * sqdist(A, T)
            logw -= np.log(s / np.sqrt(2.0 * g)).sum()
        V = np.full((len(r.beta), len(missing)), np.nan)
        for k, m in enumerate(missing):
            if m in pos:
                V[:, k] = r.points[:, pos[m]]
        logs.append(logw)
        values.append(V)
    L = np.concatenate(logs, axis=1)
    V = np.concatenate(values, axis=0)
    out = np.empty((len(Xo), len(missing)))
    for k in range(len(missing)):
        ok = ~np.isnan(V[:, k])
        Lk = L[:, ok]
        w = np.exp(Lk - Lk.max(axis=1, keepdims=True))
        out[:, k] = (w @ V[ok, k]) / w.sum(axis=1)
    return out


def sharpening(T: np.ndarray, V: np.ndarray, beta: np.ndarray, gamma: float) -> float:
    """The factor of :data:`SHARPEN` with the lowest leave-one-out error predicting the
    reduced points' scaled values ``V`` (K, m) from their scaled observed coordinates ``T``
    (K, o), weights ``beta`` (K,): sum_i beta_i ||v_i - sum_{j != i} w_ij v_j||^2."""
    if V.shape[1] == 0 or len(T) < 3:
        return 1.0
    D = sqdist(T, T)
    logb = np.log(np.maximum(beta, 1e-300))
    best, best_err = 1.0, np.inf
    for f in SHARPEN:
        L = logb[None, :] - gamma * f * D
        np.fill_diagonal(L, -np.inf)
        W = np.exp(L - L.max(axis=1, keepdims=True))
        W /= W.sum(axis=1, keepdims=True)
        err = float(beta @ ((W @ V - V) ** 2).sum(axis=1))
        if err < best_err - 1e-12 * abs(best_err if np.isfinite(best_err) else 0):
            best, best_err = f, err
    return best


#: 0 is an ordinary value of a feature when the specifications put at least this share of
#: their weight within ``ZERO_WIDTH`` scales of it
ZERO_SHARE = 0.10
ZERO_WIDTH = 0.10


def ordinary_zeros(references, columns) -> list[str]:
    """Of ``columns``, those for which 0 is an ordinary value under ``references``: on
    average over the references that hold the column, at least ``ZERO_SHARE`` of the reduced
    set's weight lies within ``ZERO_WIDTH`` of the column's scale (the kernel metric's, a
    standard deviation in the feature's units) of 0. Measured on the sample market: rain
    (0.88), an exercise-angina indicator (0.54), ST depression (0.32) and sex (0.16) pass;
    PM10 (0.04), temperature (0.07), the hour (0.03) and cholesterol (0) do not.

    :mod:`lwcli.intake` takes a column that is 0 in every row of a table as not measured; for
    a column where 0 is ordinary that would be wrong (40 patients without high fasting blood
    sugar are 40 zeros), so such a column stays data. Columns no reference holds are not
    returned (no evidence either way).
    """
    out = []
    for c in columns:
        shares = []
        for r in references:
            if c in r.names:
                j = list(r.names).index(c)
                near = np.abs(np.asarray(r.points)[:, j]) <= ZERO_WIDTH * float(r.scales[j])
                shares.append(float(np.asarray(r.beta)[near].sum()))
        if shares and np.mean(shares) >= ZERO_SHARE:
            out.append(c)
    return out


__all__ = ["Reference", "conditional_mean", "ordinary_zeros", "ZERO_SHARE",
           "ZERO_WIDTH", "sharpening", "SHARPEN", "ROWS_PER_BLOCK"]
