"""Reading tabular data from the user's side: CSV, Parquet and ``.npy``.

Every check a user's file can fail is here, with a message that names the file, the column
and the fix. ``.npy`` files are read with ``allow_pickle=False``; their columns are named
``x0, x1, ...``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError, MissingExtraError, NotFoundError

SUPPORTED = (".csv", ".parquet", ".npy")


@dataclass(frozen=True)
class Table:
    """Feature matrix (float64, finite) plus an optional target column ``y``: float64 values,
    or labels in the file's own type (int64, bool, or objects for text)."""

    path: str
    features: tuple[str, ...]
    X: np.ndarray
    target: str | None = None
    y: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    def select(self, features: Sequence[str]) -> "Table":
        """The same rows with exactly ``features`` as columns, in that order (no re-read)."""
        expected = list(features)
        _check_columns(list(self.features), expected, self.path)
        pos = {f: i for i, f in enumerate(self.features)}
        return replace(self, features=tuple(expected),
                       X=self.X[:, [pos[f] for f in expected]])


def _check_columns(present: list[str], expected: list[str], path) -> None:
    missing = [c for c in expected if c not in present]
    extra = [c for c in present if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        raise DataError(
            f"{path} has {len(present)} feature columns, expected {len(expected)} "
            f"({'; '.join(parts)})",
            "select exactly the expected feature columns (plus the target) in the file",
        )


def _load_frame(path: Path):
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix == ".parquet":
            try:
                return pd.read_parquet(path)
            except ImportError as exc:
                raise MissingExtraError(
                    f"reading {path} needs a Parquet engine, and none is installed",
                    "pip install 'lwcli[parquet]' (pyarrow), or convert the file to CSV",
                ) from exc
        arr = np.load(path, allow_pickle=False)
    except (MissingExtraError, DataError):
        raise
    except ValueError as exc:
        if suffix == ".npy" and "pickle" in str(exc):
            raise DataError(
                f"{path} holds Python objects, which lw never unpickles",
                "save a plain numeric array with numpy.save",
            ) from exc
        raise DataError(f"{path} could not be parsed: {exc}", "check the file format") from exc
    except Exception as exc:  # pandas raises many types for malformed files
        if type(exc).__name__ == "EmptyDataError":
            raise DataError(f"{path} is empty: expected a header and at least one row",
                            "pass a file with data rows") from exc
        raise DataError(f"{path} could not be parsed as {suffix}: {exc}",
                        "check that the file is well-formed") from exc
    if arr.ndim != 2:
        raise DataError(
            f"{path} has shape {arr.shape}: expected a 2-D array (rows x columns)",
            "reshape the array to 2-D before saving it",
        )
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])


def read_table(
    path: str | Path,
    target: str | None = None,
    features: Sequence[str] | None = None,
    min_rows: int = 1,
    target_optional: bool = False,
) -> Table:
    """Read ``path`` into a :class:`Table`.

    ``features``: the expected input columns in order (an island's or a manifest's); the file
    must hold exactly these (plus ``target``), in any order. Without it every non-target column
    is a feature, in file order. ``target_optional``: a missing target column is no error
    (the table then has no ``y``).
    """
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"data file {p} does not exist", "check the path")
    if p.suffix.lower() not in SUPPORTED:
        raise DataError(
            f"{p} has extension {p.suffix!r}: expected one of {', '.join(SUPPORTED)}",
            "convert the data to CSV, Parquet or .npy",
        )
    frame = _load_frame(p)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if target is not None and target_optional and target not in columns:
        target = None
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"{p} has duplicate column names {dupes}", "rename the columns")
    if target is not None and target not in columns:
        raise DataError(
            f"{p} has no target column {target!r}; columns are {columns}",
            "pass --target with one of the file's column names",
        )
    present = [c for c in columns if c != target]
    if features is not None:
        _check_columns(present, list(features), p)
        present = list(features)
    if frame.shape[0] < min_rows:
        raise DataError(
            f"{p} has {frame.shape[0]} data rows: expected at least {min_rows}",
            "pass a file with more rows",
        )
    from pandas.api.types import is_bool_dtype, is_integer_dtype, is_numeric_dtype

    non_numeric = [c for c in present
                   if not is_numeric_dtype(frame[c].dtype) or is_bool_dtype(frame[c].dtype)]
    if non_numeric:
        raise DataError(
            f"{p} has non-numeric feature columns {non_numeric}",
            "encode them as numbers (e.g. one-hot) before using lw",
        )
    X = frame[present].to_numpy(dtype=np.float64, copy=True)
    _check_finite(X, present, p)
    y = None
    if target is not None:
        col = frame[target]
        if is_integer_dtype(col.dtype) and not is_bool_dtype(col.dtype):
            y = col.to_numpy(dtype=np.int64, copy=True)       # labels keep the user's type
        elif is_numeric_dtype(col.dtype) and not is_bool_dtype(col.dtype):
            y = col.to_numpy(dtype=np.float64, copy=True)
            _check_finite(y[:, None], [target], p)
        else:
            if col.isna().any():
                raise DataError(f"{p}: target column {target!r} has {int(col.isna().sum())} "
                                "missing values", "drop the rows without a target")
            y = col.to_numpy(dtype=bool if is_bool_dtype(col.dtype) else object, copy=True)
    return Table(path=str(p), features=tuple(present), X=X, target=target, y=y)


def _check_finite(X: np.ndarray, names: Sequence[str], path: Path) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        cols = [names[j] for j in np.flatnonzero(bad.any(axis=0))]
        raise DataError(
            f"{path} has {int(bad.any(axis=1).sum())} rows with NaN or infinite values "
            f"(columns {cols[:5]}{'...' if len(cols) > 5 else ''})",
            "drop or impute those rows before using lw",
        )
