"""Output encodings shared by specs, search, anchors and reuse.

Class labels are compared by one canonical key (:func:`label_str`): ``1``, ``1.0``, ``"1"``,
``"01"`` and ``"1.0"`` are the same class (a CSV reader turns them into one number anyway),
and so are ``True``, ``"True"``, ``"true"`` and ``1`` (booleans are the classes 1 and 0, as in
Python and in every file format that writes them as 0/1); surrounding spaces do not count. Keys are what
islands, specifications and probabilities are aligned by; the values given back to a user are
in the user's own type (:func:`label_values`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import DataError
from .validation import nfc


_BOOL_TEXT = {"true": "1", "false": "0"}


def label_str(v) -> str:
    """The canonical key of a class label (see the module docstring)."""
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return str(int(f)) if f.is_integer() else repr(f)
    s = nfc(str(v)).strip()
    if s.lower() in _BOOL_TEXT:
        return _BOOL_TEXT[s.lower()]
    try:                      # "01", "1.0" and "1e0" are the class 1 (CSV readers agree)
        f = float(s)
    except ValueError:
        return s
    return label_str(f) if np.isfinite(f) else s


def plain_label(v):
    """A label as a plain Python value (bool, int, float or str) for JSON, TOML and frames."""
    if isinstance(v, (np.bool_, np.integer, np.floating)):
        return v.item()
    return v if isinstance(v, (bool, int, float, str)) else str(v)


def label_values(keys: Sequence[str], *sources: Sequence) -> list:
    """The value to give back for each class key: the first value seen with that key in
    ``sources`` (the user's own labels first, then the learnwares' declared classes), else
    the key itself."""
    want = set(keys)
    found: dict[str, object] = {}
    for labels in sources:
        for v in labels:
            k = label_str(v)
            if k in want and k not in found:
                found[k] = plain_label(v)
    return [found.get(k, k) for k in keys]


def values_array(values: Sequence) -> np.ndarray:
    """Class values as an array of the narrowest numpy type that holds them all exactly
    (bool, int64, float64), else objects."""
    kinds = {type(v) for v in values}
    for typ, dtype in ((bool, bool), (int, np.int64), (float, np.float64)):
        if kinds == {typ}:
            return np.asarray(values, dtype=dtype)
    return np.asarray(values, dtype=object)


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
    try:
        Y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    except (TypeError, ValueError):
        bad = next(v for v in np.asarray(y, dtype=object).ravel() if not _is_number(v))
        raise DataError(f"{what} holds {bad!r}, not a number, but the task is regression",
                        "fix or drop those rows (values such as '<5' or 'n.d.' are not "
                        "numbers)") from None
    if Y.shape[1] != len(outputs):
        raise DataError(f"{what} has {Y.shape[1]} output columns, expected {len(outputs)}",
                        "check the declared output dimension")
    if not np.all(np.isfinite(Y)):
        raise DataError(f"{what} has NaN or infinite values", "drop those rows")
    return Y


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


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
