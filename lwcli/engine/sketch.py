"""Random-Fourier-feature sketches of RKMEs: fixed-length vectors whose distances approximate MMD.

For the Gaussian kernel ``exp(-gamma ||a - b||^2)`` (Bochner's theorem, Rahimi & Recht 2007),
with frequencies ``omega_j ~ N(0, 2 gamma I)``, the map
``z(a) = [cos(omega_j . a), sin(omega_j . a)]_{j < m} / sqrt(m)`` satisfies
``E[z(a) . z(b)] = k(a, b)``. An RKME ``(T, beta)`` then maps to the ``2m``-vector
``s = sum_k beta_k z(t_k)`` and ``||s_u - s_i||^2`` estimates the squared MMD between the two
embeddings. Both sketches share the frequencies, so the estimate's error shrinks with the MMD
itself: close matches, the ones a search must not miss, are the best estimated.

Input-only sketches (kind ``"input"``) use the same frequencies restricted to the input
coordinates: the Gaussian's spectral density factorises over coordinates, so they estimate the
input kernel that an unlabelled requirement is compared under.

Everything here is pure: arrays in, arrays out. The island's seed and size are recorded with
the index, so a user's sketch is computed with exactly the learnwares' frequencies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .kernel import CHUNK_ELEMENTS

SKETCH_PAIRS = 256          # 512 floats (2 KiB) per learnware and kind; see the benchmark
# What an embedding covers, in the words of a specification's kind: inputs and outputs, or
# inputs only. The engine says these everywhere.
KINDS = ("joint", "input")
# The one place they meet the names lw writes: a search's JSON "mode" ("xy" / "x") and the
# index's per-kind arrays (``self_xy``, ``sketch.xy``, ...).
MODE_NAMES = {"joint": "xy", "input": "x"}


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KINDS`, else a UsageError."""
    if kind not in KINDS:
        raise UsageError(f"unknown embedding kind {kind!r}: expected one of {', '.join(KINDS)}",
                         "pass 'joint' (inputs and outputs) or 'input' (inputs only)")
    return kind


@dataclass(frozen=True)
class SketchBasis:
    """The frequencies of one island's sketches, reproducible from ``seed``."""

    seed: int
    pairs: int
    dim: int            # coordinates of the island's joint metric
    n_inputs: int
    gamma: float

    def omega(self, kind: str) -> np.ndarray:
        """(pairs, coordinates) frequencies, in 1 / scaled unit, for ``kind`` ("joint": all
        coordinates, "input": the inputs). UsageError for another kind."""
        check_kind(kind)
        W = np.random.default_rng(self.seed).standard_normal((self.pairs, self.dim))
        W *= math.sqrt(2.0 * self.gamma)
        return W if kind == "joint" else np.ascontiguousarray(W[:, : self.n_inputs])

    def to_dict(self) -> dict:
        return {"seed": int(self.seed), "pairs": int(self.pairs), "dim": int(self.dim),
                "n_inputs": int(self.n_inputs), "gamma": float(self.gamma),
                "features": "gaussian-rff-sincos"}

    @classmethod
    def from_dict(cls, d: dict) -> "SketchBasis":
        return cls(int(d["seed"]), int(d["pairs"]), int(d["dim"]), int(d["n_inputs"]),
                   float(d["gamma"]))


def sketch_rkmes(points: np.ndarray, beta: np.ndarray, basis: SketchBasis, kind: str,
                 device=None) -> np.ndarray:
    """Sketches of stacked, *scaled* reduced sets: ``points`` (N, K, d), ``beta`` (N, K).

    ``d`` may be the joint dimension for either ``kind`` (input-only sketches use the first
    ``n_inputs`` coordinates). Returns (N, 2 * pairs) float32, computed in chunks of
    ``CHUNK_ELEMENTS`` projections. UsageError if the points have too few coordinates.
    """
    import torch

    device = device or torch.device("cpu")
    N, K, d = points.shape
    W = basis.omega(kind)
    dm = W.shape[1]
    if d < dm:
        raise UsageError(f"points have {d} coordinates, the {kind!r} sketch needs {dm}",
                         "pass the island's scaled points")
    Wt = torch.as_tensor(W.T, dtype=torch.float32, device=device)
    m = basis.pairs
    out = np.empty((N, 2 * m), dtype=np.float32)
    per = max(1, CHUNK_ELEMENTS // max(1, K * m))
    inv = 1.0 / math.sqrt(m)
    for s in range(0, N, per):
        P = torch.from_numpy(np.ascontiguousarray(points[s : s + per, :, :dm],
                                                  dtype=np.float32)).to(device)
        b = torch.from_numpy(np.ascontiguousarray(beta[s : s + per], dtype=np.float32)).to(device)
        proj = P @ Wt                                        # (n, K, m)
        c = torch.einsum("nk,nkm->nm", b, torch.cos(proj))
        sn = torch.einsum("nk,nkm->nm", b, proj.sin_())
        out[s : s + per] = (torch.cat([c, sn], 1) * inv).cpu().numpy()
    return out


def sketch_norms(sketches: np.ndarray) -> np.ndarray:
    """Squared norms of each row, float64 (stored beside the sketches)."""
    out = np.empty(sketches.shape[0], dtype=np.float64)
    per = max(1, CHUNK_ELEMENTS // max(1, sketches.shape[1]))
    for s in range(0, len(out), per):
        blk = np.asarray(sketches[s : s + per], dtype=np.float64)
        out[s : s + per] = np.einsum("ij,ij->i", blk, blk)
    return out


def sketch_user(points_scaled: np.ndarray, beta: np.ndarray, basis: SketchBasis,
                kind: str) -> np.ndarray:
    """The sketch (2 * pairs,) float64 of one requirement: its scaled points (K, d) for
    ``kind``, weights ``beta`` (K,)."""
    W = basis.omega(kind)
    proj = np.asarray(points_scaled, dtype=np.float64) @ W.T
    b = np.asarray(beta, dtype=np.float64)
    return np.concatenate([b @ np.cos(proj), b @ np.sin(proj)]) / math.sqrt(basis.pairs)


__all__ = ["SketchBasis", "sketch_rkmes", "sketch_norms", "sketch_user", "SKETCH_PAIRS", "KINDS",
           "MODE_NAMES", "check_kind"]
