"""Gaussian kernel under an island's metric, and MMD between weighted point clouds.

A :class:`KernelMetric` fixes how raw coordinates are compared: every coordinate is divided by
its scale, then ``k(a, b) = exp(-gamma * ||a - b||^2)``. MMD values are comparable only under
one metric, so an island records its metric once and every specification on it uses it.

The torch functions follow their inputs' dtype and device; none of them chooses a device.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import SpecError

# Above this many rows x columns of one Gram block, kernel sums are computed in chunks.
CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class KernelMetric:
    """Per-coordinate scales and the Gaussian bandwidth ``gamma``.

    The first ``n_inputs`` coordinates are the model's inputs ``x``; the rest (if any) are its
    outputs ``y``. ``input_metric()`` gives the metric restricted to ``x``, which is how a user
    without labels is matched against the input part of a joint specification.
    """

    scales: tuple[float, ...]
    gamma: float
    n_inputs: int
    output_weight: float = 1.0
    method: str = "std-scales+median-gamma"

    def __post_init__(self) -> None:
        if not self.scales or any(not (s > 0 and math.isfinite(s)) for s in self.scales):
            raise SpecError("kernel metric scales must be positive and finite",
                            "refit the specification")
        if not (self.gamma > 0 and math.isfinite(self.gamma)):
            raise SpecError(f"kernel gamma must be positive and finite, got {self.gamma}",
                            "refit the specification")
        if not 0 < self.n_inputs <= len(self.scales):
            raise SpecError(f"metric has {len(self.scales)} scales but n_inputs={self.n_inputs}",
                            "refit the specification")

    @property
    def dim(self) -> int:
        return len(self.scales)

    @property
    def n_outputs(self) -> int:
        return self.dim - self.n_inputs

    def input_metric(self) -> "KernelMetric":
        return KernelMetric(self.scales[: self.n_inputs], self.gamma, self.n_inputs,
                            self.output_weight, self.method)

    def scale(self, Z: np.ndarray) -> np.ndarray:
        """Raw coordinates -> the metric's coordinates (a new array)."""
        if Z.shape[-1] != self.dim:
            raise SpecError(f"points have {Z.shape[-1]} coordinates, the metric expects {self.dim}",
                            "use data with the island's feature columns")
        return Z / np.asarray(self.scales, dtype=np.float64)

    def to_dict(self) -> dict:
        return {
            "kernel": "gaussian",
            "method": self.method,
            "gamma": float(self.gamma),
            "n_inputs": int(self.n_inputs),
            "output_weight": float(self.output_weight),
            "scales": [float(s) for s in self.scales],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "KernelMetric":
        """A metric from its JSON form, every field type- and range-checked: scales and
        ``gamma`` must be positive normal float32 numbers (the engine computes in float32)."""
        if not isinstance(d, dict):
            raise SpecError(f"malformed kernel metric: expected an object, got "
                            f"{type(d).__name__}", "refit the specification")
        if d.get("kernel", "gaussian") != "gaussian":
            raise SpecError(f"unsupported kernel {str(d.get('kernel'))[:40]!r}: expected "
                            "'gaussian'", "refit the specification with lw spec")
        scales = d.get("scales")
        if not isinstance(scales, list) or not scales:
            raise SpecError("malformed kernel metric: scales must be a non-empty list of numbers",
                            "refit the specification")
        from ..validation import MAX_FEATURES, MAX_OUTPUTS

        if len(scales) > MAX_FEATURES + MAX_OUTPUTS:
            raise SpecError(f"kernel metric has {len(scales)} scales, over the limit of "
                            f"{MAX_FEATURES + MAX_OUTPUTS} coordinates", "use fewer features")
        vals = [_f32_positive(v, "scale") for v in scales]
        gamma = _f32_positive(d.get("gamma"), "gamma")
        n_inputs = d.get("n_inputs")
        if not isinstance(n_inputs, int) or isinstance(n_inputs, bool):
            raise SpecError(f"malformed kernel metric: n_inputs must be an integer, got "
                            f"{type(n_inputs).__name__}", "refit the specification")
        ow = d.get("output_weight", 1.0)
        if not _is_number(ow) or not (0 < ow < 1e30):
            raise SpecError("malformed kernel metric: output_weight must be a positive number",
                            "refit the specification")
        method = d.get("method", "std-scales+median-gamma")
        if not isinstance(method, str) or len(method) > 256:
            raise SpecError("malformed kernel metric: method must be a short string",
                            "refit the specification")
        return cls(scales=tuple(vals), gamma=gamma, n_inputs=n_inputs,
                   output_weight=float(ow), method=method)

    def digest(self) -> str:
        """A short fingerprint: two metrics are the same iff their digests are."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)


def _f32_positive(v, what: str) -> float:
    """``v`` as a float that is a positive, normal float32 number, or a SpecError."""
    if not _is_number(v):
        raise SpecError(f"malformed kernel metric: {what} must be a number, got "
                        f"{type(v).__name__}", "refit the specification")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not (_F32_TINY <= f <= _F32_MAX):
        raise SpecError(f"kernel metric {what} {f:g} is not a positive float32 number "
                        f"({_F32_TINY:.3g} to {_F32_MAX:.3g})", "refit the specification")
    return f


def fit_metric(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    *,
    task: str | None = None,
    output_weight: float = 1.0,
    seed: int = 0,
    max_rows: int = 2000,
) -> KernelMetric:
    """Choose a metric from data: per-feature standard deviations, median-heuristic ``gamma``.

    Inputs are scaled to unit variance (a feature in the thousands no longer dominates). The
    output block ``Y`` (regression targets, or one-hot classes) is scaled so that, at
    ``output_weight=1``, a typical difference in outputs counts as much as a typical difference
    in all inputs together: the specification then tells models apart by their *function*.
    """
    from ..validation import check_seed

    check_seed(seed)
    X = np.asarray(X, dtype=np.float64)
    d_x = X.shape[1]
    sx = X.std(axis=0)
    sx = np.where(sx > 1e-12 * (1 + np.abs(X).max(axis=0)), sx, 1.0)
    scales = [*sx.tolist()]
    Z = X / sx
    if Y is not None:
        Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
        d_y = Y.shape[1]
        if task == "classification":
            sy = np.full(d_y, 1.0 / math.sqrt(output_weight * d_x / 2.0))
        else:
            std = Y.std(axis=0)
            std = np.where(std > 1e-12 * (1 + np.abs(Y).max(axis=0)), std, 1.0)
            sy = std / math.sqrt(output_weight * d_x / d_y)
        scales += sy.tolist()
        Z = np.hstack([Z, Y / sy])
    rng = np.random.default_rng(seed)
    if len(Z) > max_rows:
        Z = Z[rng.choice(len(Z), max_rows, replace=False)]
    sq = np.maximum(
        (Z * Z).sum(1)[:, None] + (Z * Z).sum(1)[None, :] - 2 * Z @ Z.T, 0.0
    )
    off = sq[np.triu_indices(len(Z), 1)]
    med = float(np.median(off)) if off.size else 0.0
    gamma = 1.0 / med if med > 1e-12 else 1.0 / Z.shape[1]
    return KernelMetric(tuple(scales), gamma, d_x, output_weight)


# ---------------------------------------------------------------- torch kernel sums

def sqdist(A, B):
    """Squared Euclidean distances between rows, clamped at zero. (torch)"""
    d = (A * A).sum(-1)[..., :, None] + (B * B).sum(-1)[..., None, :] - 2.0 * A @ B.transpose(-1, -2)
    return d.clamp_min_(0.0)


def gram(A, B, gamma: float):
    """Gaussian Gram matrix ``exp(-gamma * ||a - b||^2)`` of already-scaled points. (torch)"""
    return sqdist(A, B).mul_(-gamma).exp_()


def kernel_inner(A, wa, B, wb, gamma: float):
    """``sum_ij wa_i wb_j k(a_i, b_j)``: the RKHS inner product of two weighted clouds. (torch)

    Chunked over the rows of ``A`` so memory stays bounded for large clouds.
    """
    import torch

    rows = max(1, CHUNK_ELEMENTS // max(1, B.shape[0]))
    total = torch.zeros((), dtype=torch.float64, device=A.device)
    for s in range(0, A.shape[0], rows):
        K = gram(A[s : s + rows], B, gamma)
        total += (wa[s : s + rows] @ (K @ wb)).to(torch.float64)
    return total


def mmd2(A, wa, B, wb, gamma: float):
    """Squared MMD between weighted clouds ``(A, wa)`` and ``(B, wb)``, clamped at 0. (torch)"""
    val = kernel_inner(A, wa, A, wa, gamma) + kernel_inner(B, wb, B, wb, gamma) \
        - 2.0 * kernel_inner(A, wa, B, wb, gamma)
    return val.clamp_min(0.0)


def mmd2_numpy(A: np.ndarray, wa: np.ndarray, B: np.ndarray, wb: np.ndarray, gamma: float) -> float:
    """Reference implementation in plain numpy (float64), for tests and small problems."""

    def inner(P, wp, Q, wq):
        d = ((P[:, None, :] - Q[None, :, :]) ** 2).sum(-1)
        return float(wp @ np.exp(-gamma * d) @ wq)

    return max(inner(A, wa, A, wa) + inner(B, wb, B, wb) - 2 * inner(A, wa, B, wb), 0.0)


def weights_check(w: Sequence[float] | np.ndarray, name: str = "weights") -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 1 or not np.all(np.isfinite(w)) or (w < -1e-9).any():
        raise SpecError(f"{name} must be a finite, non-negative vector", "refit the specification")
    return w


__all__ = ["KernelMetric", "fit_metric", "sqdist", "gram", "kernel_inner", "mmd2", "mmd2_numpy",
           "weights_check"]
