"""The Gaussian kernel: an island's metric, and every kernel evaluation lw makes.

A :class:`KernelMetric` fixes how raw coordinates are compared: every coordinate is divided by
its scale, then ``k(a, b) = exp(-gamma * ||a - b||^2)``. MMD values are comparable only under
one metric, so an island records its metric once and every specification on it uses it.

One routine family computes the kernel (modelled on geomloss's ``kernel_tensorized`` and POT's
backend): squared distances clamped at 0 (:func:`sqdist`), Gram blocks (:func:`gram`), kernel
sums and moments (:func:`kernel_sums`), inner products and MMDs between weighted point clouds
(:func:`kernel_inner`, :func:`mmd2`, Gretton et al. 2012), and the same batched over stacks of
reduced sets (:func:`stack_self_inner`, :func:`stack_cross_inner`, :func:`stack_inner_matrix`).
Large evaluations are chunked ``CHUNK_ELEMENTS`` kernel values at a time. Each function follows
its inputs' array library (numpy or torch), dtype and device; none chooses a device.
:func:`mmd2_numpy` is the plain oracle the tests hold them to.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
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
    fixed: dict | None = None,
    fixed_outputs: dict | None = None,
) -> KernelMetric:
    """Choose a metric from data: per-feature standard deviations, median-heuristic ``gamma``.

    Inputs are scaled to unit variance (a feature in the thousands no longer dominates). The
    output block ``Y`` (regression targets, or one-hot classes) is scaled so that, at
    ``output_weight=1``, a typical difference in outputs counts as much as a typical difference
    in all inputs together: the specification then tells models apart by their *function*.

    ``X`` (m, d_x), ``Y`` (m,) or (m, d_y); ``gamma`` is the inverse median squared distance
    between (at most ``max_rows``, seeded) scaled rows: the median heuristic (Gretton et al.
    2012). UsageError for a bad ``seed``.

    ``fixed`` (input column -> scale) and ``fixed_outputs`` (output column -> the target's
    standard deviation, before the output weighting) take a market's scales for the features
    it already measures, so that one feature is measured the same way on every island; the
    other columns' scales, and ``gamma``, come from ``X`` and ``Y`` as above.
    """
    from ..validation import check_seed

    check_seed(seed)
    X = np.asarray(X, dtype=np.float64)
    d_x = X.shape[1]
    sx = X.std(axis=0)
    sx = np.where(sx > 1e-12 * (1 + np.abs(X).max(axis=0)), sx, 1.0)
    for j, v in (fixed or {}).items():
        sx[j] = v
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
            for j, v in (fixed_outputs or {}).items():
                std[j] = v
            sy = std / math.sqrt(output_weight * d_x / d_y)
        scales += sy.tolist()
        Z = np.hstack([Z, Y / sy])
    rng = np.random.default_rng(seed)
    if len(Z) > max_rows:
        Z = Z[rng.choice(len(Z), max_rows, replace=False)]
    sq = sqdist(Z, Z)
    off = sq[np.triu_indices(len(Z), 1)]
    med = float(np.median(off)) if off.size else 0.0
    gamma = 1.0 / med if med > 1e-12 else 1.0 / Z.shape[1]
    return KernelMetric(tuple(scales), gamma, d_x, output_weight)


# ------------------------------------------------------------ the kernel routine family
#
# Every function below takes numpy arrays or torch tensors and computes in its inputs' library,
# dtype and device; none chooses a device or a dtype. Sums that leave a function are float64
# unless its docstring says otherwise.
# Ones named with a trailing underscore work in place on a temporary they own.


def _is_torch(a) -> bool:
    return type(a).__module__.split(".")[0] == "torch"


def _lib(a):
    """The array library of ``a``: the ``torch`` module or ``numpy``."""
    if _is_torch(a):
        import torch

        return torch
    return np


def _T(a):
    """The last two axes swapped (a view)."""
    return a.transpose(-1, -2) if _is_torch(a) else np.swapaxes(a, -1, -2)


def _f64(a):
    return a.double() if _is_torch(a) else np.asarray(a, dtype=np.float64)


def _to_numpy(a) -> np.ndarray:
    return a.cpu().numpy() if _is_torch(a) else np.asarray(a)


def _astype_like(a, like):
    """``a`` in the dtype (and, for torch, on the device) of ``like``."""
    if _is_torch(like):
        return a.to(like.device, like.dtype)
    return np.asarray(a, dtype=like.dtype)


def _zeros_f64(shape, like):
    if _is_torch(like):
        import torch

        return torch.zeros(shape, dtype=torch.float64, device=like.device)
    return np.zeros(shape, dtype=np.float64)


def _column(X, value: float):
    """An (n, 1) column of ``value`` beside the rows of ``X`` (its dtype and device)."""
    if _is_torch(X):
        import torch

        return torch.full((X.shape[0], 1), value, dtype=X.dtype, device=X.device)
    return np.full((X.shape[0], 1), value, dtype=X.dtype)


def _exp_(e):
    """``exp(e)`` in place of ``e``."""
    return e.exp_() if _is_torch(e) else np.exp(e, out=e)


def _exp_neg_(d, gamma: float):
    """``exp(-gamma * d)`` in place of ``d``."""
    if _is_torch(d):
        return d.mul_(-gamma).exp_()
    np.multiply(d, -gamma, out=d)
    return np.exp(d, out=d)


def _rows_per_chunk(cols: int, elements: int | None = None) -> int:
    """Rows of a block of ``cols`` columns that fit ``elements`` (default CHUNK_ELEMENTS)."""
    return max(1, (CHUNK_ELEMENTS if elements is None else elements) // max(1, cols))


def sqdist(A, B, a_sq=None, b_sq=None):
    """Squared Euclidean distances between the rows of ``A`` (..., n, d) and ``B`` (..., m, d):
    (..., n, m), clamped at 0 (the expanded form ``|a|^2 + |b|^2 - 2 a.b`` can round below).

    ``a_sq`` (..., n) / ``b_sq`` (..., m): the rows' squared norms when already at hand.
    Leading axes batch (a stack of reduced sets against itself).
    """
    a_sq = (A * A).sum(-1) if a_sq is None else a_sq
    b_sq = (B * B).sum(-1) if b_sq is None else b_sq
    d = a_sq[..., :, None] + b_sq[..., None, :] - 2.0 * A @ _T(B)
    return d.clamp_min_(0.0) if _is_torch(d) else np.maximum(d, 0.0, out=d)


def gram(A, B, gamma: float, a_sq=None, b_sq=None):
    """Gaussian Gram matrix ``k(a, b) = exp(-gamma ||a - b||^2)`` of already scaled points:
    (..., n, m), entries in [0, 1]. Arguments as :func:`sqdist`; ``gamma`` in 1 / (scaled
    unit)^2. Seed paper sec. 3.1 (the Gaussian kernel of the RKME)."""
    return _exp_neg_(sqdist(A, B, a_sq, b_sq), gamma)


def kernel_sums(A, B, gamma: float, *, b_sq=None, moments: bool = False):
    """``s_i = sum_j k(a_i, b_j)`` (n,), float64, chunked over the rows of ``B`` (m, d).

    With ``moments``, ``(s, M)`` with ``M_i = sum_j k(a_i, b_j) b_j`` (n, d), both accumulated
    in ``A``'s dtype (a gradient step's precision): the kernel mass and first moment that the
    gradient of an RKME objective needs (seed eq. 1 differentiated in the points). ``b_sq`` (m,):
    ``B``'s squared row norms when already at hand. Chunks hold ``CHUNK_ELEMENTS`` kernel
    values. The RKME's kernel mean of the data at its points is ``kernel_sums(T, Z) / m``
    (seed eq. 1).
    """
    a_sq = (A * A).sum(-1)
    rows = _rows_per_chunk(A.shape[0])
    lib = _lib(A)
    s = lib.zeros_like(a_sq) if moments else _zeros_f64(A.shape[0], A)
    first = lib.zeros_like(A) if moments else None
    for lo in range(0, B.shape[0], rows):
        Bc = B[lo : lo + rows]
        C = gram(A, Bc, gamma, a_sq, None if b_sq is None else b_sq[lo : lo + rows])
        if moments:
            s += C.sum(1)
            first += C @ Bc
        else:
            s += _f64(C.sum(1))
    return (s, first) if moments else s


def kernel_inner(A, wa, B, wb, gamma: float):
    """``<Phi_A, Phi_B> = sum_ij wa_i wb_j k(a_i, b_j)``: the RKHS inner product of two weighted
    clouds ``A`` (n, d), ``wa`` (n,) and ``B`` (m, d), ``wb`` (m,) (the terms of Gretton et
    al. 2012, Lemma 6). ``wa`` / ``wb`` None: unit weights (the sum of all kernel values).

    A 0-d float64 (array or tensor). Chunked over the rows of ``A``, ``CHUNK_ELEMENTS`` kernel
    values at a time, so memory stays bounded; an (n, m) block that fits is one chunk.

    Unit weights: the row sums are added exactly (``math.fsum``): a whole-block sum is split
    among threads, so its last bits depended on the thread count (an RKME's approximation
    error differed between 1 and 2 threads).
    """
    rows = _rows_per_chunk(B.shape[0])
    total = _zeros_f64((), A)
    row_sums = []
    for lo in range(0, A.shape[0], rows):
        K = gram(A[lo : lo + rows], B, gamma)
        if wa is None and wb is None:
            s = K.sum(1, dtype=total.dtype)
            row_sums.append(s.cpu().numpy() if _is_torch(s) else np.asarray(s))
        else:
            left = K.sum(0) if wa is None else wa[lo : lo + rows] @ K
            total += _f64(left @ wb if wb is not None else left.sum())
    if row_sums:
        total += math.fsum(np.concatenate(row_sums).tolist())
    return total


def mmd2(A, wa, B, wb, gamma: float):
    """Squared MMD between weighted clouds ``(A, wa)`` and ``(B, wb)`` (shapes as
    :func:`kernel_inner`), clamped at 0: ``<A,A> + <B,B> - 2 <A,B>`` (Gretton et al. 2012,
    Lemma 6; between two RKMEs, the squared RKHS distance of the seed's sec. 4, eq. 6).
    0-d float64, in [0, 2] for weights on the simplex."""
    val = kernel_inner(A, wa, A, wa, gamma) + kernel_inner(B, wb, B, wb, gamma) \
        - 2.0 * kernel_inner(A, wa, B, wb, gamma)
    return val.clamp_min(0.0) if _is_torch(val) else np.maximum(val, 0.0)


def mmd2_numpy(A: np.ndarray, wa: np.ndarray, B: np.ndarray, wb: np.ndarray,
               gamma: float) -> float:
    """The oracle: :func:`mmd2` from broadcast differences in float64 numpy, no expansion, no
    chunking. For tests and small problems (it holds an (n, m, d) temporary)."""

    def inner(P, wp, Q, wq):
        d = ((P[:, None, :] - Q[None, :, :]) ** 2).sum(-1)
        return float(wp @ np.exp(-gamma * d) @ wq)

    return max(inner(A, wa, A, wa) + inner(B, wb, B, wb) - 2 * inner(A, wa, B, wb), 0.0)


# ------------------------------------------------- stacks of reduced sets (batched)
#
# A stack is N reduced sets of K points each, zero-weight padded: points (N, K, d), weights
# (N, K). It is read block by block through ``load(lo, hi) -> (points, weights)`` so that a
# memory-mapped stack on disk never needs to be in memory (or on a GPU) at once.


def _neg_gamma_sqdist_operands(P, U, gamma: float):
    """Augmented operands whose product is ``-gamma * ||p - u||^2`` in a single matmul.

    ``[p, |p|^2, 1] . [2 gamma u, -gamma, -gamma |u|^2]``: a kernel block then needs one matmul,
    one in-place ``exp`` and one matrix-vector product: three passes over the (points x user
    points) block instead of six, which is what bounds search time. Not clamped: where rounding
    makes the exponent slightly positive a kernel value exceeds 1 by a few ulps.
    """
    cat = _lib(P).concatenate
    Pa = cat([P, (P * P).sum(1)[:, None], _column(P, 1.0)], 1)
    Ua = cat([2.0 * gamma * U, _column(U, -gamma), -gamma * (U * U).sum(1)[:, None]], 1)
    return Pa, Ua


def stack_self_inner(load, n: int, K: int, gamma: float):
    """``||Phi_i||^2 = beta_i' K(T_i, T_i) beta_i`` for each of ``n`` stacked reduced sets of
    ``K`` points (the self terms of :func:`mmd2`), float64 numpy (n,).

    Whole sets are batched ``CHUNK_ELEMENTS`` kernel values at a time; a set whose own K x K
    Gram exceeds that is summed in row blocks (:func:`kernel_inner`).
    """
    out = np.empty(n, dtype=np.float64)
    if K * K > CHUNK_ELEMENTS:
        for i in range(n):
            P, b = load(i, i + 1)
            out[i] = float(kernel_inner(P[0], b[0], P[0], b[0], gamma))
        return out
    per = _rows_per_chunk(K * K)
    for lo in range(0, n, per):
        P, b = load(lo, lo + per)
        G = gram(P, P, gamma)
        out[lo : lo + per] = _to_numpy(_f64(_lib(G).einsum("nk,nkl,nl->n", b, G, b)))
    return out


def stack_cross_inner(load, n: int, K: int, U, bu, gamma: float, *, dims: int,
                      block_elements: int):
    """``<Phi_i, Phi_u> = sum_kj beta_ik bu_j k(t_ik, u_j)`` between each of ``n`` stacked
    reduced sets and one weighted cloud ``U`` (m, dims), ``bu`` (m,): float64 (n,) in ``U``'s
    library and device.

    Only the first ``dims`` coordinates of the stacked points count (``dims`` = the input
    coordinates compares input marginals: the Gaussian kernel factorises over coordinates).
    Blocks of whole sets of about ``block_elements`` kernel values; each is one matmul, one
    in-place ``exp`` and one matrix-vector product (:func:`_neg_gamma_sqdist_operands`).
    """
    per = _rows_per_chunk(U.shape[0] * K, block_elements)
    out = _zeros_f64(n, U)
    Ua = None
    for lo in range(0, n, per):
        P, w = load(lo, lo + per)
        P = P[:, :, :dims].reshape(-1, dims)
        Pa, Ua_ = _neg_gamma_sqdist_operands(P, U, gamma)
        Ua = Ua_ if Ua is None else Ua
        kb = _exp_(Pa @ _T(Ua)) @ bu                     # (rows,) = sum_j k(p, u_j) bu_j
        out[lo : lo + per] = _f64((kb.reshape(-1, K) * _astype_like(w, kb)).sum(1))
    return out


def stack_inner_matrix(P, B, gamma: float):
    """``H_ab = <Phi_a, Phi_b>`` between all ``M`` stacked reduced sets ``P`` (M, K, d),
    ``B`` (M, K): float64 numpy (M, M), symmetrised. One (M K x M K) block, through the
    one-matmul form; for the few sets a mixture chooses among (seed eq. 3)."""
    M, K, d = P.shape
    flat = P.reshape(M * K, d)
    Pa, Qa = _neg_gamma_sqdist_operands(flat, flat, gamma)
    G = _exp_(Pa @ _T(Qa)).reshape(M, K, M, K)
    H = _to_numpy(_f64(_lib(G).einsum("ak,akbl,bl->ab", B, G, B)))
    return 0.5 * (H + H.T)


__all__ = ["KernelMetric", "fit_metric", "CHUNK_ELEMENTS", "sqdist", "gram", "kernel_sums",
           "kernel_inner", "mmd2", "mmd2_numpy", "stack_self_inner", "stack_cross_inner",
           "stack_inner_matrix"]
