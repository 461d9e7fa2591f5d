"""Checks shared by files and arrays that enter through the Python API.

lw computes in float32 (torch), so a finite float64 value beyond float32's range becomes
infinite there; it is refused where it enters, naming the cell.
"""

from __future__ import annotations

import unicodedata
from typing import Iterable, Sequence

import numpy as np

from .errors import DataError

FLOAT32_MAX = float(np.finfo(np.float32).max)


def nfc(name: str) -> str:
    """A column name in Unicode NFC, the form lw compares names in."""
    return unicodedata.normalize("NFC", str(name))


def nfc_all(names: Iterable[str]) -> list[str]:
    return [nfc(n) for n in names]


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
