"""Output encodings shared by specs, search, anchors and reuse.

Class labels are compared as strings (``1``, ``1.0`` and ``"1"`` are the same class), so a
label read from a CSV as a float matches a manifest's integer class.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import DataError


def label_str(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return str(int(f)) if f.is_integer() else repr(f)
    return str(v)


def one_hot(y: np.ndarray, classes: Sequence[str], what: str = "target") -> np.ndarray:
    """Encode labels as one-hot rows over ``classes`` (strings, in the island's order)."""
    index = {c: i for i, c in enumerate(classes)}
    labels = [label_str(v) for v in np.asarray(y).ravel()]
    unknown = sorted({lab for lab in labels if lab not in index})
    if unknown:
        raise DataError(
            f"{what} has labels {unknown[:5]} that are not among the classes {list(classes)}",
            "use data whose labels are the island's classes",
        )
    out = np.zeros((len(labels), len(classes)), dtype=np.float64)
    out[np.arange(len(labels)), [index[lab] for lab in labels]] = 1.0
    return out


def encode_outputs(y: np.ndarray, task: str, outputs: Sequence[str], what: str = "target") -> np.ndarray:
    """Targets or model outputs -> the output block of ``z = (x, y)``."""
    if task == "classification":
        return one_hot(y, outputs, what)
    Y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if Y.shape[1] != len(outputs):
        raise DataError(f"{what} has {Y.shape[1]} output columns, expected {len(outputs)}",
                        "check the declared output dimension")
    if not np.all(np.isfinite(Y)):
        raise DataError(f"{what} has NaN or infinite values", "drop those rows")
    return Y


def union_classes(*label_sets: Sequence) -> tuple[str, ...]:
    """Class names in first-seen order across several label sets (compared as strings)."""
    out: dict[str, None] = {}
    for labels in label_sets:
        for v in labels:
            out.setdefault(label_str(v), None)
    return tuple(out)


def align_columns(P: np.ndarray, have: Sequence[str], want: Sequence[str]) -> np.ndarray:
    """Re-index probability columns named ``have`` into the class order ``want``, by name.

    Classes in ``want`` that ``have`` lacks get probability 0; every name in ``have`` must be
    in ``want``.
    """
    index = {c: i for i, c in enumerate(want)}
    missing = [c for c in have if c not in index]
    if missing:
        raise DataError(f"probabilities for classes {missing[:5]} have no place among "
                        f"{list(want)}", "declare every class the model predicts")
    out = np.zeros((P.shape[0], len(want)), dtype=np.float64)
    for j, c in enumerate(have):
        out[:, index[c]] += P[:, j]
    return out
