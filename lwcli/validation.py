"""Checks shared by files and arrays that enter through the Python API.

lw computes in float32 (torch), so a finite float64 value beyond float32's range becomes
infinite there; it is refused where it enters, naming the cell.
"""

from __future__ import annotations

import unicodedata
import warnings
from typing import Iterable, Sequence

import numpy as np

from .errors import DataError, UsageError

FLOAT32_MAX = float(np.finfo(np.float32).max)


def nfc(name: str) -> str:
    """A column name in Unicode NFC, the form lw compares names in."""
    return unicodedata.normalize("NFC", str(name))


def nfc_all(names: Iterable[str]) -> list[str]:
    return [nfc(n) for n in names]


FILL_SPREADS = 1e9    # this many interquartile ranges from the median: a fill value, not data


def check_fill_values(X: np.ndarray, names: Sequence[str] | None = None,
                      where: str = "X") -> None:
    """Refuse values absurdly far from the rest of their column: fill or no-data values such
    as NetCDF's 9.96921e36 or ESRI's -3.4028235e38 that fit float32 but, squared in the
    kernel, overflow it (NaN specifications) or, fixing an island's bandwidths, make the
    column useless. "Far" is more than ``FILL_SPREADS`` interquartile ranges from the median
    (the IQR is taken as max(|median|, 1) for a column that is mostly one value).
    NaN cells (missing values) are left out of the statistics and never refused.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        return
    sample = X[:: max(1, X.shape[0] // 10_000)]       # robust statistics need no more rows
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # an all-NaN (missing) column
        q25, med, q75 = np.nanpercentile(sample, [25, 50, 75], axis=0)
    spread = np.where(q75 > q25, q75 - q25, np.maximum(np.abs(med), 1.0))
    limit = FILL_SPREADS * spread
    for j in range(X.shape[1]):                        # one column at a time: no n x d temporary
        rows = np.flatnonzero(np.abs(X[:, j] - med[j]) > limit[j])
        if rows.size:
            break
    else:
        return
    i = int(rows[0])
    cell = (f"{where}: column {names[j]!r}, data row {i + 1}," if names is not None
            else f"{where}[{i}, {j}]")
    raise DataError(
        f"{cell} holds {X[i, j]:g}, {abs(X[i, j] - med[j]) / spread[j]:.2g} times the column's "
        "interquartile range from its median: a fill or no-data value, not a measurement",
        "drop or impute the rows that hold it (or replace it with an empty cell)")


def check_float32_range(X: np.ndarray, names: Sequence[str] | None = None,
                        where: str = "X") -> None:
    """Refuse finite values of 2-D ``X`` that overflow float32.

    With ``names`` (a file's columns) the cell is named by column and 1-based data row;
    without, as ``where[i, j]``.
    """
    with np.errstate(over="ignore"):
        bad = np.isinf(np.asarray(X).astype(np.float32, copy=False)) & np.isfinite(X)
    if not bad.any():
        return
    i, j = (int(v) for v in np.argwhere(bad)[0])
    cell = (f"{where}: column {names[j]!r}, data row {i + 1}," if names is not None
            else f"{where}[{i}, {j}]")
    n = int(bad.sum())
    more = f" (and {n - 1} more cells)" if n > 1 else ""
    raise DataError(
        f"{cell} holds {X[i, j]:g}, beyond float32's range (largest {FLOAT32_MAX:.8g}), "
        f"the type lw computes in{more}",
        "rescale the column, e.g. to other units, or drop the row",
    )


# ------------------------------------------------------------------------------ limits
# Every bound lw puts on what a package, a specification or a manifest may hold, in one place
# (documented in the README, "Limits"). They bound memory and time: a specification of K
# reduced points costs K x K kernel values to index, a manifest's lists become table columns.

MAX_K = 2048                  # reduced points of one specification (lw spec --k): K x K = 4M
MAX_FEATURES = 4096           # input features of a manifest, a specification or a data file
MAX_OUTPUTS = 1024            # classes (classification) or outputs of one learnware
MAX_NAME_CHARS = 256          # a feature, output or class name, an island id, a version...
MAX_TAGS = 64                 # tags of one manifest
MAX_DESCRIPTION_CHARS = 10_000
MAX_MANIFEST_BYTES = 1 << 20  # learnware.toml
MAX_SPEC_BYTES = 64 << 20     # rkme.json
MAX_SCALED_COORD = 1e15       # |a coordinate / its scale|: its square stays finite in float32
MAX_ROWS = 10 ** 12           # a specification's n_rows


def check_seed(seed) -> int:
    """A random seed: an integer from 0 to 2^63 - 1 (what numpy and torch both take)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or \
            not 0 <= int(seed) < 2 ** 63:
        raise UsageError(f"--seed {seed} is not a seed: expected an integer from 0 to 2^63 - 1",
                         "pass --seed 0 or another non-negative integer")
    return int(seed)
