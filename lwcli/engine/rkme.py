"""Reduced kernel mean embedding (the seed's eq. 1).

``min_{beta, T} || (1/m) sum_i k(z_i, .) - sum_j beta_j k(t_j, .) ||^2`` with ``beta`` on the
simplex. Recipe: k-means++ initialisation of ``T`` on (a sample of) the data; then alternate
(a) ``beta`` from the simplex QP given the exact kernel mean of all the data at ``T`` and
(b) Adam steps on ``T`` (on a fixed random sample of at most ``grad_rows`` rows, for speed),
with a step of 0.02 kernel bandwidths (tuned on exact errors: 0.1 overshoots, and Lloyd
iterations after the seeding no longer help at this step size).
Data passes are chunked, so memory stays bounded; the data are held once, scaled, in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError, SpecError
from .kernels import CHUNK_ELEMENTS, KernelMetric, gram
from .qp import simplex_qp

EXACT_ERROR_ROWS = 4096   # up to this many rows the approximation error is exact
RFF_FEATURES = 4096       # above it, an unbiased random-Fourier-feature estimate (~5% rel.)


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

    @property
    def is_joint(self) -> bool:
        return self.metric.n_outputs > 0

    def input_part(self) -> "RKME":
        """The embedding of the input marginal: project the points onto ``x``.

        With a product Gaussian kernel this is exactly the marginal of the weighted cloud.
        """
        m = self.metric.input_metric()
        return RKME(self.beta, self.points[:, : m.dim].copy(), m, self.n_rows,
                    float("nan"), self.seed, dict(self.fit_info))

    def sample(self, n: int, rng: np.random.Generator, noise: float = 0.5) -> np.ndarray:
        """Draw ``n`` points from the kernel-smoothed RKME (raw coordinates).

        Picks reduced points with probability ``beta`` and adds Gaussian noise of ``noise``
        kernel bandwidths (in the metric's coordinates).
        """
        idx = rng.choice(self.k, size=n, p=self.beta / self.beta.sum())
        sigma = noise / math.sqrt(2.0 * self.metric.gamma)
        scales = np.asarray(self.metric.scales)
        return self.points[idx] + rng.normal(size=(n, self.metric.dim)) * sigma * scales


def _kmeanspp(Zs, k: int, gen):
    """k-means++ seeding (D^2 sampling) on scaled points ``Zs`` (torch)."""
    import torch

    n = Zs.shape[0]
    first = int(torch.randint(n, (1,), generator=gen, device="cpu"))
    centers = [first]
    d2 = ((Zs - Zs[first]) ** 2).sum(1)
    for _ in range(1, k):
        probs = d2.clamp_min(0).double()
        total = probs.sum()
        if total <= 0:  # all remaining points coincide with a center
            choice = int(torch.randint(n, (1,), generator=gen, device="cpu"))
        else:
            choice = int(torch.multinomial((probs / total).cpu(), 1, generator=gen))
        centers.append(choice)
        d2 = torch.minimum(d2, ((Zs - Zs[choice]) ** 2).sum(1))
    return Zs[centers].clone()


def _kernel_mean_at(T, Zs, gamma: float):
    """``(1/m) sum_i k(t_j, z_i)`` for every reduced point, in one chunked pass (float64)."""
    import torch

    m = Zs.shape[0]
    rows = max(1, CHUNK_ELEMENTS // max(1, T.shape[0]))
    acc = torch.zeros(T.shape[0], dtype=torch.float64, device=T.device)
    for s in range(0, m, rows):
        acc += gram(T, Zs[s : s + rows], gamma).sum(1).double()
    return acc / m


def _approx_error2(T, beta, G, b, Zs, gamma: float, gen) -> tuple[float, str]:
    """Squared MMD between the RKME ``(T, beta)`` and the data's empirical KME.

    Exact up to EXACT_ERROR_ROWS rows. Above, an unbiased random-Fourier-feature estimate of
    the whole difference, ``mean_w |psi_R(w) - psi_data(w)|^2`` with ``w ~ N(0, 2 gamma I)``:
    its error is relative to the (small) MMD itself, unlike estimating the data's self term.
    """
    import torch

    m, d = Zs.shape
    if m <= EXACT_ERROR_ROWS:
        rows = max(1, CHUNK_ELEMENTS // m)
        tot = 0.0
        for s in range(0, m, rows):
            tot += float(gram(Zs[s : s + rows], Zs, gamma).sum(dtype=torch.float64))
        return float(beta @ G @ beta - 2 * beta @ b + tot / (m * m)), "exact"
    W = torch.randn(d, RFF_FEATURES, generator=gen, device="cpu", dtype=torch.float64)
    W = (W * math.sqrt(2.0 * gamma)).to(Zs.device, Zs.dtype)
    rows = max(1, CHUNK_ELEMENTS // RFF_FEATURES)
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
    """Fit the reduced set of ``Z`` (m x d raw coordinates) under ``metric``.

    ``device``: a ``torch.device`` (resolved by the caller; default CPU). Deterministic for a
    given ``seed``, data and device.
    """
    import torch

    Z = np.asarray(Z)
    if Z.ndim != 2:
        raise DataError(f"data must be 2-D (rows x columns), got shape {Z.shape}", "reshape it")
    m, d = Z.shape
    if m == 0:
        raise DataError("data has no rows", "pass at least as many rows as reduced points (--k)")
    if d != metric.dim:
        raise DataError(f"data has {d} columns, the kernel metric expects {metric.dim}",
                        "use the island's feature columns")
    if not 1 <= k <= m:
        raise DataError(f"--k {k} reduced points asked for, but the data has {m} rows",
                        f"use --k {min(m, 100)} or fewer, or pass more rows")
    device = device or torch.device("cpu")
    dtype = torch.float32  # data passes; beta, errors and the stored points are float64
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rng = np.random.default_rng(seed)
    gamma = metric.gamma

    # The data, scaled once, as one float32 tensor on the device (chunked conversion).
    inv = torch.as_tensor(1.0 / np.asarray(metric.scales), dtype=dtype)
    Zs = torch.empty((m, d), dtype=dtype, device=device)
    step_rows = 1 << 16
    for s in range(0, m, step_rows):
        Zs[s : s + step_rows] = (torch.as_tensor(Z[s : s + step_rows], dtype=dtype) * inv).to(device)

    init_idx = rng.choice(m, init_rows, replace=False) if m > init_rows else np.arange(m)
    T = _kmeanspp(Zs[torch.as_tensor(init_idx, device=device)], k, gen)
    grad_idx = rng.choice(m, grad_rows, replace=False) if m > grad_rows else None
    Zg = Zs[torch.as_tensor(grad_idx, device=device)] if grad_idx is not None else Zs

    def solve_beta(T, w0=None):
        b = _kernel_mean_at(T, Zs, gamma).cpu().numpy()
        G = gram(T, T, gamma).double().cpu().numpy()
        return simplex_qp(G, b), G, b

    beta, G, b = solve_beta(T)
    bandwidth = 1.0 / math.sqrt(2.0 * gamma)
    for _ in range(n_alternations):
        Tp = T.clone().requires_grad_(True)
        opt = torch.optim.Adam([Tp], lr=lr * bandwidth)
        bt = torch.as_tensor(beta, dtype=dtype, device=device)
        mg = Zg.shape[0]
        rows = max(1, CHUNK_ELEMENTS // k)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = bt @ gram(Tp, Tp, gamma) @ bt
            loss.backward()
            for s in range(0, mg, rows):
                cross = -2.0 / mg * (bt @ gram(Tp, Zg[s : s + rows], gamma).sum(1))
                cross.backward()
            opt.step()
        T = Tp.detach()
        beta, G, b = solve_beta(T, w0=beta)

    err2, how = _approx_error2(T, beta, G, b, Zs, gamma, gen)
    approx_error = math.sqrt(max(err2, 0.0))
    points = T.double().cpu().numpy() * np.asarray(metric.scales)
    beta = np.clip(beta, 0.0, None)
    beta = beta / beta.sum()
    return RKME(beta=beta, points=points, metric=metric, n_rows=m, approx_error=approx_error,
                seed=seed, fit_info={"error_estimate": how, "alternations": n_alternations,
                                     "steps": steps, "device": str(device)})
