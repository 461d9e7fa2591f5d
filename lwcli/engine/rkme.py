"""Reduced kernel mean embedding (the seed's eq. 1).

``min_{beta, T} || (1/m) sum_i k(z_i, .) - sum_j beta_j k(t_j, .) ||^2`` with ``beta`` on the
simplex. Recipe: k-means++ initialisation of ``T`` on (a sample of) the data; then alternate
(a) ``beta`` from the simplex QP given the exact kernel mean of all the data at ``T`` (warm
started: from the uniform weights, then from the last ``beta``) and (b) Adam steps on ``T``
with the analytic gradient (on a fixed random sample of at most ``grad_rows`` rows, for speed),
with a step of 0.02 kernel bandwidths (tuned on exact errors: 0.1 overshoots, and Lloyd
iterations after the seeding no longer help at this step size).
Data passes are chunked, so memory stays bounded; the data are held once, scaled, in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError, SpecError
from ..validation import (MAX_K, MAX_SCALED_COORD, check_fill_values, check_float32_range,
                          check_seed)
from .kernel import CHUNK_ELEMENTS, KernelMetric, gram, kernel_inner, kernel_sums
from .qp import simplex_qp

EXACT_ERROR_ROWS = 4096   # up to this many rows the approximation error is exact
RFF_FEATURES = 2048       # above it, an unbiased random-Fourier-feature estimate (1-3% rel.)


@dataclass(frozen=True)
class RKME:
    """A weighted reduced set in raw coordinates plus the metric it was fitted under.

    ``points`` has ``metric.n_inputs`` input columns, then the output columns (if any).
    ``approx_error`` is the RKHS distance (MMD, not squared) between this RKME and the empirical
    KME of the data it summarises.
    """

    beta: np.ndarray
    points: np.ndarray
    metric: KernelMetric
    n_rows: int
    approx_error: float
    seed: int = 0
    fit_info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        b, P = self.beta, self.points
        if b.ndim != 1 or P.ndim != 2 or P.shape[0] != b.shape[0]:
            raise SpecError(f"RKME has {b.shape} weights for points of shape {P.shape}",
                            "rebuild the specification with lw spec")
        if P.shape[1] != self.metric.dim:
            raise SpecError(f"RKME points have {P.shape[1]} coordinates, its metric has "
                            f"{self.metric.dim}", "rebuild the specification with lw spec")
        if not (np.all(np.isfinite(b)) and np.all(np.isfinite(P))):
            raise SpecError("RKME contains NaN or infinite values",
                            "rebuild the specification with lw spec")
        if (b < -1e-9).any() or abs(b.sum() - 1.0) > 1e-6:
            raise SpecError(f"RKME weights must lie on the simplex (sum {b.sum():.6g})",
                            "rebuild the specification with lw spec")

    @property
    def k(self) -> int:
        return int(self.beta.shape[0])

    def input_part(self) -> "RKME":
        """The embedding of the input marginal: project the points onto ``x``.

        With a product Gaussian kernel this is exactly the marginal of the weighted cloud.
        """
        m = self.metric.input_metric()
        return RKME(self.beta, self.points[:, : m.dim].copy(), m, self.n_rows,
                    float("nan"), self.seed, dict(self.fit_info))

    def sample(self, n: int, rng: np.random.Generator,
               jitter_bandwidths: float = 0.5) -> np.ndarray:
        """Draw ``n`` points (n, dim) from the kernel-smoothed RKME, in raw coordinates.

        Picks reduced points with probability ``beta`` and adds Gaussian noise whose standard
        deviation is ``jitter_bandwidths`` kernel bandwidths ``1 / sqrt(2 gamma)`` (in the
        metric's coordinates).
        """
        idx = rng.choice(self.k, size=n, p=self.beta / self.beta.sum())
        sigma = jitter_bandwidths / math.sqrt(2.0 * self.metric.gamma)
        scales = np.asarray(self.metric.scales)
        return self.points[idx] + rng.normal(size=(n, self.metric.dim)) * sigma * scales


def _kmeanspp(Zs, k: int, gen):
    """k-means++ seeding (D^2 sampling) on scaled points ``Zs`` (torch).

    Squared distances come from one matrix-vector product per centre; a centre is drawn by
    inverting the cumulative sum of ``D^2`` at a uniform variate (all ``k`` drawn up front on
    the CPU generator, so the draw does not depend on the device's random stream).
    """
    import torch

    n = Zs.shape[0]
    u = torch.rand(k, generator=gen, device="cpu", dtype=torch.float64).tolist()
    sq = (Zs * Zs).sum(1)

    def dist2(i: int):
        return (sq - 2.0 * (Zs @ Zs[i]) + sq[i]).clamp_min_(0.0)

    centers = [min(int(u[0] * n), n - 1)]
    d2 = dist2(centers[0])
    d2[centers[0]] = 0.0
    for i in range(1, k):
        cum = torch.cumsum(d2, 0, dtype=torch.float64)
        total = float(cum[-1])
        if total <= 0:  # all remaining points coincide with a center
            choice = min(int(u[i] * n), n - 1)
        else:
            at = torch.tensor([u[i] * total], dtype=torch.float64, device=Zs.device)
            choice = min(int(torch.searchsorted(cum, at, right=True)), n - 1)
        centers.append(choice)
        d2 = torch.minimum(d2, dist2(choice))
        d2[choice] = 0.0
    return Zs[centers].clone()


def _kernel_mean_at(T, Zs, gamma: float):
    """``(1/m) sum_i k(t_j, z_i)`` for every reduced point ``T`` (k, d) over the data ``Zs``
    (m, d), in one chunked pass: (k,) float64 (torch). The linear term of seed eq. 1."""
    return kernel_sums(T, Zs, gamma) / Zs.shape[0]


def _points_grad(T, bt, Zg, zn, gamma: float):
    """Gradient in ``T`` (k, d) of ``beta' K_TT beta - (2/m) sum_j beta_j sum_i k(t_j, z_i)``
    (seed eq. 1 up to its constant), over the rows ``Zg`` (m, d); ``zn``: their squared norms
    (m,); ``bt``: ``beta`` as a (k, 1) column. (k, d) in ``T``'s dtype (torch).

    For the Gaussian kernel ``d k(t, z) / d t = -2 gamma (t - z) k(t, z)``, so the gradient is
    two Gram blocks and two matrix products, no autograd graph.
    """
    W = gram(T, T, gamma) * bt.T                      # W_jl = k(t_j, t_l) beta_l
    pull = T * W.sum(1, keepdim=True) - W @ T         # sum_l W_jl (t_j - t_l)
    mass, first = kernel_sums(T, Zg, gamma, b_sq=zn, moments=True)
    return (-4.0 * gamma) * bt * (pull - (T * mass[:, None] - first) / Zg.shape[0])


def _adam_on_points(T, beta, Zg, gamma: float, *, steps: int, step_size: float):
    """``steps`` Adam steps on the reduced points ``T`` for fixed weights ``beta`` (torch).

    Adam's update is torch's (``betas=(0.9, 0.999)``, ``eps=1e-8``), written out: the
    optimiser's own bookkeeping cost as much as the gradient at 1,000 rows.
    """
    import torch

    T = T.clone()
    bt = torch.as_tensor(beta, dtype=T.dtype, device=T.device)[:, None]
    zn = (Zg * Zg).sum(1)
    m1, m2 = torch.zeros_like(T), torch.zeros_like(T)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        grad = _points_grad(T, bt, Zg, zn, gamma)
        m1.mul_(b1).add_(grad, alpha=1.0 - b1)
        m2.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        denom = (m2 / (1.0 - b2 ** t)).sqrt_().add_(eps)
        T.addcdiv_(m1, denom, value=-step_size / (1.0 - b1 ** t))
    return T


def _approx_error2(T, beta, Zs, gamma: float, gen) -> tuple[float, str]:
    """Squared MMD between the RKME ``(T, beta)`` and the data's empirical KME.

    Exact (in float64) up to EXACT_ERROR_ROWS rows. Above, an unbiased random-Fourier-feature estimate of
    the whole difference, ``mean_w |psi_R(w) - psi_data(w)|^2`` with ``w ~ N(0, 2 gamma I)``:
    its error is relative to the (small) MMD itself, unlike estimating the data's self term.
    """
    import torch

    m, d = Zs.shape
    if m <= EXACT_ERROR_ROWS:
        # in float64: the three terms are each near ||Phi||^2 (~0.7) and cancel to ~1e-5, below
        # what float32 kernel values resolve (a good fit on 300 rows came out as exactly 0)
        T64, Z64 = T.double(), Zs.double()
        G64 = gram(T64, T64, gamma).cpu().numpy()
        b64 = (kernel_sums(T64, Z64, gamma) / m).cpu().numpy()
        tot = float(kernel_inner(Z64, None, Z64, None, gamma))
        return float(beta @ G64 @ beta - 2 * beta @ b64 + tot / (m * m)), "exact"
    W = torch.randn(d, RFF_FEATURES, generator=gen, device="cpu", dtype=torch.float64)
    W = (W * math.sqrt(2.0 * gamma)).to(Zs.device, Zs.dtype)
    # cache-sized blocks on a CPU (sin and cos re-read each block), large ones on a GPU
    rows = max(1, (CHUNK_ELEMENTS if Zs.is_cuda else 1 << 19) // RFF_FEATURES)
    cs = torch.zeros(RFF_FEATURES, dtype=torch.float64, device=Zs.device)
    sn = torch.zeros_like(cs)
    for s in range(0, m, rows):
        proj = Zs[s : s + rows] @ W
        cs += torch.cos(proj).sum(0).double()
        sn += torch.sin(proj).sum(0).double()
    bt = torch.as_tensor(beta, dtype=torch.float64, device=Zs.device)
    proj = (T @ W).double()
    dc = bt @ torch.cos(proj) - cs / m
    ds = bt @ torch.sin(proj) - sn / m
    return float((dc * dc + ds * ds).mean()), f"rff-{RFF_FEATURES}"


def _check_scaled_range(Z: np.ndarray, metric: KernelMetric) -> None:
    """Refuse data whose coordinates, divided by the metric's scales, are so large that their
    squares overflow float32 (a constant column of 1e30 keeps scale 1; a user's values far
    outside an island's range): the kernel would see NaN. Checked before any computation."""
    inv = 1.0 / np.asarray(metric.scales, dtype=np.float64)
    for j in range(Z.shape[1]):                 # one column at a time: no n x d temporary
        top = float(np.max(np.abs(Z[:, j]))) * inv[j] if Z.shape[0] else 0.0
        if not top <= MAX_SCALED_COORD:
            raise DataError(
                f"data column {j + 1} holds values {top:.3g} kernel scales from 0 (scale "
                f"{metric.scales[j]:.3g}); lw computes in float32, where their squares overflow",
                "subtract a constant from the column (centre it) or rescale it")


def _check_fit_data(Z, metric: KernelMetric, k: int, seed: int) -> np.ndarray:
    """``Z`` as an (m, d) array fit to summarise by ``k`` points under ``metric``, or a
    DataError saying what is wrong and how to fix it."""
    Z = np.asarray(Z)
    if Z.ndim != 2:
        raise DataError(f"data must be 2-D (rows x columns), got shape {Z.shape}", "reshape it")
    m, d = Z.shape
    if m == 0:
        raise DataError("data has no rows", "pass at least as many rows as reduced points (--k)")
    if d != metric.dim:
        raise DataError(f"data has {d} columns, the kernel metric expects {metric.dim}",
                        "use the island's feature columns")
    check_seed(seed)
    if k > MAX_K:
        raise DataError(f"--k {k} reduced points asked for, over the limit of {MAX_K} (indexing "
                        "a specification costs K x K kernel values)", f"use --k {MAX_K} or fewer")
    if not 1 <= k <= m:
        raise DataError(f"--k {k} reduced points asked for, but the data has {m} rows",
                        f"use --k {min(m, 100)} or fewer, or pass more rows")
    check_float32_range(Z, None, "data")   # the data passes are float32
    check_fill_values(Z, None, "data")      # their squares too
    _check_scaled_range(Z, metric)
    return Z


def _scaled_float32(Z: np.ndarray, metric: KernelMetric, device):
    """The data in the metric's coordinates, once, as one float32 (m, d) tensor on ``device``,
    converted 65,536 rows at a time. The data passes are float32; ``beta``, errors and the
    stored points are float64."""
    import torch

    dtype = torch.float32
    m, d = Z.shape
    inv = torch.as_tensor(1.0 / np.asarray(metric.scales), dtype=dtype)
    Zs = torch.empty((m, d), dtype=dtype, device=device)
    step_rows = 1 << 16
    for s in range(0, m, step_rows):
        chunk = torch.as_tensor(Z[s : s + step_rows], dtype=dtype)
        Zs[s : s + step_rows] = (chunk * inv).to(device)
    return Zs


def fit_rkme(
    Z: np.ndarray,
    metric: KernelMetric,
    *,
    k: int = 100,
    seed: int = 0,
    device=None,
    n_alternations: int = 2,
    steps: int = 12,
    lr: float = 0.02,
    grad_rows: int = 16384,
    init_rows: int = 20000,
) -> RKME:
    """Fit the reduced set of ``Z`` (m x d raw coordinates) under ``metric``: seed eq. 1 by
    the recipe in this module's docstring.

    Returns an :class:`RKME` of ``k`` points (k, d) in raw coordinates, weights on the simplex
    and its approximation error (an RKHS distance). ``lr`` is the Adam step in kernel
    bandwidths; ``grad_rows`` / ``init_rows`` bound the rows the gradient and the k-means++
    seeding see. ``device``: a ``torch.device`` (resolved by the caller; default CPU).
    Deterministic for a given ``seed``, data and device. DataError for unusable data or ``k``.
    """
    import torch

    Z = _check_fit_data(Z, metric, k, seed)
    m, d = Z.shape
    device = device or torch.device("cpu")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rng = np.random.default_rng(seed)
    gamma = metric.gamma
    Zs = _scaled_float32(Z, metric, device)

    init_idx = rng.choice(m, init_rows, replace=False) if m > init_rows else np.arange(m)
    T = _kmeanspp(Zs[torch.as_tensor(init_idx, device=device)], k, gen)
    grad_idx = rng.choice(m, grad_rows, replace=False) if m > grad_rows else None
    Zg = Zs[torch.as_tensor(grad_idx, device=device)] if grad_idx is not None else Zs

    def solve_beta(T, w0):
        b = _kernel_mean_at(T, Zs, gamma).cpu().numpy()
        G = gram(T, T, gamma).double().cpu().numpy()
        return simplex_qp(G, b, w0=w0)

    beta = solve_beta(T, np.full(k, 1.0 / k))
    bandwidth = 1.0 / math.sqrt(2.0 * gamma)
    for _ in range(n_alternations):
        T = _adam_on_points(T, beta, Zg, gamma, steps=steps, step_size=lr * bandwidth)
        beta = solve_beta(T, beta)

    err2, how = _approx_error2(T, beta, Zs, gamma, gen)
    approx_error = math.sqrt(max(err2, 0.0))
    points = T.double().cpu().numpy() * np.asarray(metric.scales)
    beta = np.clip(beta, 0.0, None)
    beta = beta / beta.sum()
    if not math.isfinite(approx_error):      # the guards above should make this unreachable
        raise DataError("the RKME fit did not converge to finite values (approximation error "
                        f"{approx_error})", "check the data for extreme values")
    return RKME(beta=beta, points=points, metric=metric, n_rows=m, approx_error=approx_error,
                seed=seed, fit_info={"error_estimate": how, "alternations": n_alternations,
                                     "steps": steps, "device": str(device)})
