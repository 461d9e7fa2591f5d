"""Anchor learnwares (seed sec. 3.3 and 6): choose them, and rank an island from their scores.

**Functional space.** The market feeds the same *probe inputs* to every learnware of an island
(drawn from the island's reduced sets: the market has no data, but it can generate inputs,
sec. 3.1) and compares the outputs. The distance between two learnwares is measured in the
units of a loss, so that it bounds how differently they can score on any user's task:

- ``rms``: root-mean-square difference of predictions. By the triangle inequality in L2,
  ``|RMSE_i - RMSE_a| <= RMS(f_i - f_a)`` on the same rows.
- ``mae``: mean absolute difference; ``|MAE_i - MAE_a| <= mean |f_i - f_a|``.
- ``disagreement``: the share of inputs on which the predicted labels differ;
  ``|acc_i - acc_a| <= P(f_i(x) != f_a(x))``.

**Anchors** are medoids of the island in that space (k-medoids with PAM swaps), so they cover
every family of functions the market holds.

**Ranking from a report.** A user scores the anchors on her own labelled rows and sends back
only the scores. For every learnware ``i`` the bounds above give an interval
``[max_a (L_a - d_ia), min_a (L_a + d_ia)]`` for its loss; the estimate is a kernel-weighted
average of the anchors' losses (close anchors count most), clipped to the interval. The
distances are measured on the island's probes, not on the user's rows, so the interval is an
approximation; where it is empty (the bounds contradict each other) the user's data lie away
from the probes and the confidence drops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .kernel import CHUNK_ELEMENTS, sqdist
from .rkme import RKME

DISTANCES = ("rms", "mae", "disagreement")
PAM_MAX_POINTS = 2000          # above, k-medoids runs on a sample (CLARA) and assigns the rest


def default_n_anchors(n: int) -> int:
    """About sqrt(N) anchors, at least 2 (when there are 2 learnwares), at most 8."""
    return 0 if n == 0 else min(n, max(2, min(8, math.ceil(math.sqrt(n)))))


def probe_inputs(rkmes: list[RKME], n_probes: int, seed: int,
                 jitter_stds: float = 0.1) -> np.ndarray:
    """``n_probes`` inputs (n_probes, n_inputs), raw coordinates, spread over the island: equal
    shares from every learnware's reduced set (points drawn by ``beta``, jittered by Gaussian
    noise of ``jitter_stds`` feature standard deviations, the metric's scales).

    With more learnwares than probes, a random subset of learnwares contributes one each.
    """
    if not rkmes:
        raise UsageError("no specifications to draw probes from", "submit learnwares first")
    rng = np.random.default_rng(seed)
    n = len(rkmes)
    counts = np.full(n, n_probes // n)
    counts[rng.permutation(n)[: n_probes - counts.sum()]] += 1
    out = []
    for r, c in zip(rkmes, counts):
        if c == 0:
            continue
        x = r.input_part()
        idx = rng.choice(x.k, size=int(c), p=x.beta / x.beta.sum())
        out.append(x.points[idx] + rng.normal(size=(int(c), x.metric.dim)) * jitter_stds
                   * np.asarray(x.metric.scales))
    return np.vstack(out)


def distances(A: np.ndarray, B: np.ndarray, kind: str) -> np.ndarray:
    """Functional distances between the learnwares of two output stacks.

    ``A``: (N, P, C) outputs of N learnwares on the same P probes (values for ``rms``/``mae``,
    one-hot or probability rows for ``disagreement``); ``B``: (M, P, C). Returns (N, M).
    """
    if kind not in DISTANCES:
        raise UsageError(f"unknown distance {kind!r}", f"use one of {', '.join(DISTANCES)}")
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    N, P, C = A.shape
    if kind == "rms":
        a = A.reshape(N, -1)
        b = B.reshape(len(B), -1)
        return np.sqrt(sqdist(a, b) / (P * C))
    if kind == "disagreement":
        agree = _label_one_hot(A) @ _label_one_hot(B).T
        return np.clip(1.0 - agree / P, 0.0, 1.0)
    out = np.empty((N, len(B)))
    step = max(1, CHUNK_ELEMENTS // max(1, len(B) * P * C))
    for s in range(0, N, step):
        out[s : s + step] = np.abs(A[s : s + step, None] - B[None]).mean(axis=(2, 3))
    return out


def _label_one_hot(S: np.ndarray) -> np.ndarray:
    """(N, P, C) outputs -> (N, P*C) one-hot rows of each probe's predicted label."""
    N, P, C = S.shape
    out = np.zeros((N, P * C))
    out[np.arange(N)[:, None], np.arange(P)[None, :] * C + np.argmax(S, axis=2)] = 1.0
    return out


@dataclass(frozen=True)
class Medoids:
    index: np.ndarray        # positions of the medoids, sorted by cluster size (largest first)
    assignment: np.ndarray   # (N,) position in ``index`` of each point's nearest medoid
    cost: float              # sum of distances to the nearest medoid


def k_medoids(D: np.ndarray, k: int, *, max_swaps: int = 200) -> Medoids:
    """k-medoids of a distance matrix: greedy BUILD, then PAM swaps until none improves.

    Deterministic (ties broken by position). ``D`` must be square, symmetric, non-negative.
    """
    D = np.asarray(D, dtype=np.float64)
    n = D.shape[0]
    if D.ndim != 2 or D.shape != (n, n):
        raise UsageError(f"k_medoids needs a square distance matrix, got {D.shape}", "pass N x N")
    if not 1 <= k <= n:
        raise UsageError(f"k={k} medoids asked for {n} points", f"use 1 <= k <= {n}")
    # BUILD: the most central point, then each time the point that lowers the cost most
    med = [int(np.argmin(D.sum(0)))]
    near = D[:, med[0]].copy()
    while len(med) < k:
        gain = np.maximum(near[:, None] - D, 0.0).sum(0)
        gain[med] = -1.0
        j = int(np.argmax(gain))
        med.append(j)
        near = np.minimum(near, D[:, j])
    med = np.asarray(med)
    for _ in range(max_swaps):
        Dm = D[:, med]                                   # (n, k)
        order = np.argsort(Dm, axis=1, kind="stable")
        first = Dm[np.arange(n), order[:, 0]]
        second = Dm[np.arange(n), order[:, 1]] if k > 1 else np.full(n, np.inf)
        cost = first.sum()
        best = (0.0, -1, -1)
        for slot in range(k):
            mine = order[:, 0] == slot                   # points whose nearest medoid is `slot`
            # new cost for every candidate h replacing medoid `slot`
            alt = np.where(mine[:, None], np.minimum(D, second[:, None]),
                           np.minimum(D, first[:, None]))
            delta = alt.sum(0) - cost
            delta[med] = np.inf
            h = int(np.argmin(delta))
            if delta[h] < best[0] - 1e-12 * max(cost, 1.0):
                best = (float(delta[h]), slot, h)
        if best[1] < 0:
            break
        med = med.copy()
        med[best[1]] = best[2]
    assign = np.argmin(D[:, med], axis=1)
    sizes = np.bincount(assign, minlength=k)
    order = np.lexsort((med, -sizes))
    med = med[order]
    assign = np.argmin(D[:, med], axis=1)
    return Medoids(med, assign, float(D[np.arange(n), med[assign]].sum()))


def choose_anchors(outputs: np.ndarray, kind: str, k: int, *, seed: int = 0) -> Medoids:
    """Anchors among N learnwares from their probe outputs (N, P, C).

    Up to ``PAM_MAX_POINTS`` learnwares, exact k-medoids on the full distance matrix; above,
    k-medoids on a seeded sample, then every learnware is assigned to its nearest medoid.
    """
    N = outputs.shape[0]
    if N <= PAM_MAX_POINTS:
        return k_medoids(distances(outputs, outputs, kind), k)
    sample = np.sort(np.random.default_rng(seed).choice(N, PAM_MAX_POINTS, replace=False))
    sub = k_medoids(distances(outputs[sample], outputs[sample], kind), k)
    med = sample[sub.index]
    D = distances(outputs, outputs[med], kind)
    assign = np.argmin(D, axis=1)
    return Medoids(med, assign, float(D[np.arange(N), assign].sum()))


@dataclass(frozen=True)
class AnchorRanking:
    """Predicted loss of every learnware of an island, from anchor scores alone."""

    predicted: np.ndarray     # (N,) estimated loss (lower is better)
    lower: np.ndarray         # (N,) triangle-inequality bounds on the loss
    upper: np.ndarray
    confidence: np.ndarray    # (N,) in [0, 1]; 1 for an anchor (its loss was observed)
    order: np.ndarray         # best first
    bandwidth: float
    inconsistent: float       # share of learnwares whose bounds cross (lower > upper): high
                              # when the user's data lie away from the island's probes


def rank_from_anchors(D: np.ndarray, anchor_loss: np.ndarray, anchor_pos: np.ndarray,
                      *, bandwidth: float | None = None) -> AnchorRanking:
    """Rank N learnwares by their predicted loss on the user's task.

    ``D``: (N, A) functional distances from every learnware to the A anchors (loss units);
    ``anchor_loss``: (A,) the losses the user observed; ``anchor_pos``: (A,) the anchors'
    positions among the N learnwares.

    The estimate weighs anchor ``a`` by ``exp(-(d_ia / h)^2)`` with ``h`` (``bandwidth``) by
    default the median distance of the other learnwares to their nearest anchor: an anchor's
    score carries to the learnwares it stands for, not across the island. Confidence is
    ``exp(-(d_near / s)^2)`` with ``s`` the median spacing between anchors: near an anchor
    whose score was seen, relative to how far apart the anchors are.
    """
    D = np.asarray(D, dtype=np.float64)
    L = np.asarray(anchor_loss, dtype=np.float64)
    pos = np.asarray(anchor_pos, dtype=int)
    N, A = D.shape
    if L.shape != (A,) or not np.all(np.isfinite(L)) or (L < 0).any():
        raise UsageError(f"anchor losses must be {A} finite non-negative numbers",
                         "rerun lw anchor-eval")
    if not np.all(np.isfinite(D)) or (D < 0).any() or pos.shape != (A,):
        raise UsageError("anchor distances must be finite and non-negative, one column per "
                         "anchor", "rebuild the anchors with lw market refresh")
    near = np.argmin(D, axis=1)
    dmin = D[np.arange(N), near]
    is_anchor = np.zeros(N, dtype=bool)
    is_anchor[pos] = True
    spacing = D[pos][~np.eye(A, dtype=bool)] if A > 1 else np.array([])
    spacing = float(np.median(spacing[spacing > 0])) if (spacing > 0).any() else 0.0
    if bandwidth is None:
        radius = dmin[~is_anchor]
        radius = radius[radius > 0]
        bandwidth = float(np.median(radius)) if radius.size else (spacing / 4 or 1.0)
    h = max(float(bandwidth), 1e-12)
    s = max(spacing, h)
    lower = np.maximum((L[None, :] - D).max(1), 0.0)
    upper = (L[None, :] + D).min(1)
    W = np.exp(-((D / h) ** 2))
    Ws = W.sum(1)
    est = np.where(Ws > 1e-300, (W * L[None, :]).sum(1) / np.maximum(Ws, 1e-300), L[near])
    ok = lower <= upper + 1e-12
    est = np.where(ok, np.clip(est, lower, upper), est)
    conf = np.exp(-((dmin / s) ** 2))
    conf = np.where(ok, conf, conf * 0.5)
    est[pos], lower[pos], upper[pos], conf[pos] = L, L, L, 1.0
    order = np.lexsort((-conf, est))
    return AnchorRanking(est, lower, upper, conf, order, h, float(1.0 - ok.mean()))


__all__ = ["DISTANCES", "default_n_anchors", "probe_inputs", "distances", "k_medoids",
           "choose_anchors", "Medoids", "AnchorRanking", "rank_from_anchors"]


# ------------------------------------------------ which score ranks an island; is there hope

HOPELESS_SKILL = 0.1        # the best anchor beats a constant prediction by less than 10%
INCONSISTENT_SHARE = 0.25   # warn when the bounds cross for more than this share of learnwares


def anchor_metric(task: str, objective: str) -> tuple[str, str]:
    """``(score, distance)`` for an island: the report score that ranks it, and the functional
    distance that bounds that score (module docstring; seed sec. 3.3). Classification:
    accuracy and disagreement; regression: MAE and mean absolute difference when the island's
    objective is ``"mae"``, else RMSE and RMS difference (R² is ranked as RMSE: same order on
    the same rows)."""
    if task == "classification":
        return "accuracy", "disagreement"
    return ("mae", "mae") if objective == "mae" else ("rmse", "rms")


def as_loss(values, metric: str) -> np.ndarray:
    """Scores of ``metric`` as losses (lower is better), float64 of the same shape:
    ``1 - accuracy`` for accuracy, the values themselves for RMSE and MAE."""
    v = np.asarray(values, dtype=np.float64)
    return 1.0 - v if metric == "accuracy" else v


def best_scored(scores: list[dict], metric: str) -> dict:
    """The entry of ``scores`` (``{"scores": {metric: value}, ...}`` each, as in an anchor
    report) with the best ``metric``: the highest accuracy, the lowest RMSE or MAE; the first
    one on ties."""
    sign = -1.0 if metric == "accuracy" else 1.0
    return min(scores, key=lambda s: sign * s["scores"][metric])


def assess_hope(skills: dict[str, float], names: dict[str, str]) -> dict:
    """Is there hope in this market for the user's task? ``skills``: anchor id -> its skill
    over the constant prediction (:func:`lwcli.engine.metrics.skill`, 1 is perfect, 0 no
    better than a constant); ``names``: anchor id -> name. Hope is ``"low"`` when even the
    best anchor's skill is under :data:`HOPELESS_SKILL` (seed sec. 3.3: the anchors tell the
    user early that the market may hold nothing for her)."""
    best = max(skills, key=skills.get)
    pct = f"{100 * skills[best]:.0f}%"
    if skills[best] < HOPELESS_SKILL:
        return {"hope": "low", "best_anchor": best, "best_anchor_skill": skills[best],
                "message": f"every anchor performs poorly on your task (the best, {names[best]},"
                           f" is {pct} better than a constant prediction): there may be little "
                           "hope in this market for this task"}
    return {"hope": "ok", "best_anchor": best, "best_anchor_skill": skills[best],
            "message": f"the best anchor, {names[best]}, is {pct} better than a constant "
                       "prediction"}


def inconsistency_warning(inconsistent: float) -> str | None:
    """A warning when more than :data:`INCONSISTENT_SHARE` of an island's learnwares have
    crossing bounds (:attr:`AnchorRanking.inconsistent`), else ``None``."""
    if inconsistent <= INCONSISTENT_SHARE:
        return None
    return (f"for {100 * inconsistent:.0f}% of the learnwares the anchors' scores contradict "
            "their functional distances: your data may lie away from the island's probe "
            "inputs; trust the ranking less")


__all__ += ["HOPELESS_SKILL", "INCONSISTENT_SHARE", "anchor_metric", "as_loss", "best_scored",
            "assess_hope", "inconsistency_warning"]
