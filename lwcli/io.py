"""Reading tabular data from the user's side: CSV (plain or gzip/bz2/xz-compressed), Parquet
and ``.npy``.

Every check a user's file can fail is here, with a message that names the file, the column
and the fix. ``.npy`` files are read with ``allow_pickle=False``; their columns are named
``x0, x1, ...``. Column names are compared in Unicode NFC.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError, MissingExtraError, NotFoundError
from .validation import check_fill_values, check_float32_range, nfc, nfc_all

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz")
SUPPORTED = (*CSV_SUFFIXES, ".parquet", ".npy")

# What a file's first bytes say it is: (pattern, description, the extension it should have).
_MAGIC = (
    (rb"\x1f\x8b", "gzip-compressed data", ".csv.gz"),
    (rb"BZh[1-9]", "bzip2-compressed data", ".csv.bz2"),
    (rb"\xfd7zXZ\x00", "xz-compressed data", ".csv.xz"),
    (rb"PAR1", "a Parquet file", ".parquet"),
    (rb"\x93NUMPY", "a NumPy .npy array", ".npy"),
    (rb"PK\x03\x04", "a zip archive", None),
)
_SEPARATORS = {";": "';'", "\t": "tab", "|": "'|'"}
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
_UNNAMED = re.compile(r"Unnamed: \d+")
_GROUPED = r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?"
_DATE = r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}|\d{1,2}:\d{2}"
_MISSING = frozenset({"", "?", "-", "--", ".", "*", "na", "n/a", "nan", "null", "none",
                      "missing", "unknown", "#n/a"})


def data_suffix(path: str | Path) -> str:
    """The data-format extension of ``path``, lower-case: ``.csv.gz`` for ``x.csv.gz``."""
    name = Path(path).name.lower()
    return next((s for s in SUPPORTED if name.endswith(s)), Path(path).suffix.lower())


def data_stem(path: str | Path) -> str:
    """``path``'s name without its data-format extension: ``x`` for ``x.csv.gz``."""
    name = Path(path).name
    return name[: len(name) - len(data_suffix(path))]


@dataclass(frozen=True)
class Table:
    """Feature matrix (float64, within float32's range; NaN only where a missing value awaits
    imputation) plus an optional target column ``y``: float64 values, or labels in the file's
    own type (int64, bool, or objects for text). ``intake``: what was taken and left
    (:class:`lwcli.intake.Intake`)."""

    path: str
    features: tuple[str, ...]
    X: np.ndarray
    target: str | None = None
    y: np.ndarray | None = None
    intake: object = None
    labelled: np.ndarray | None = None      # rows with a label (None: no target, or all)

    @property
    def n_missing(self) -> int:
        """Cells still missing (NaN), awaiting imputation."""
        return int(np.isnan(self.X).sum())

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    def select(self, features: Sequence[str]) -> "Table":
        """The same rows with exactly ``features`` as columns, in that order (no re-read)."""
        expected = nfc_all(features)
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
        fix = "select exactly the expected feature columns (plus the target) in the file"
        if not missing and len(extra) == 1:
            fix = (f"if {extra[0]!r} is your label column, pass --target {extra[0]}; otherwise "
                   "leave it out of the file")
        raise DataError(
            f"{path} has {len(present)} feature columns, expected {len(expected)} "
            f"({'; '.join(parts)})", fix)


def _check_magic(path: Path, suffix: str) -> None:
    """Refuse a file whose first bytes say it is something other than its extension says."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    what, right = next(((w, r) for pat, w, r in _MAGIC if re.match(pat, head)),
                       ("uncompressed text", ".csv"))
    if right == suffix or (right == ".csv" and suffix in (".parquet", ".npy")):
        return  # a text file named .parquet/.npy: its parser says what is wrong
    stem = data_stem(path)
    raise DataError(f"{path} holds {what} but is named {suffix}",
                    f"rename it {stem}{right}" if right else "unzip it and pass the file inside")


def _check_separator(path: Path, header: str) -> None:
    """A one-column CSV whose header holds ';', a tab or '|' is a file in another dialect."""
    import pandas as pd

    sep = next((s for s in _SEPARATORS if s in header), None)
    if sep is None:
        return
    try:
        sample = pd.read_csv(path, sep=sep, nrows=100, dtype=str, keep_default_na=False)
        decimal = next((v for v in sample.to_numpy().ravel() if _DECIMAL_COMMA.fullmatch(v)),
                       None)
    except Exception:  # the diagnosis is best-effort; the refusal below stands either way
        decimal = None
    shown = header if len(header) <= 40 else header[:40] + "..."
    raise DataError(
        f"{path} looks {_SEPARATORS[sep]}-separated (its header is {shown!r})"
        + (f", with decimal commas ({decimal!r})" if decimal else "")
        + ": lw reads comma-separated CSV" + (" with decimal points" if decimal else ""),
        f"convert it: pandas.read_csv(path, sep={sep!r}"
        + (", decimal=','" if decimal else "") + ").to_csv(out, index=False)",
    )


def _realign(frame, path: Path):
    """Undo pandas' implicit index: data rows with more fields than the header.

    Extra fields that are empty on every row (a delimiter at the end of each line) are
    dropped; any other extra field is refused.
    """
    import pandas as pd

    n = len(frame.columns)
    full = pd.concat([frame.index.to_frame(index=False), frame.reset_index(drop=True)],
                     axis=1, ignore_index=True)
    filled = full.iloc[:, n:].notna().to_numpy()
    if filled.any():
        i, j = (int(v) for v in np.argwhere(filled)[0])
        raise DataError(
            f"{path}: data rows have up to {len(full.columns)} fields but the header names {n} "
            f"columns (data row {i + 1} has {_cell(full.iat[i, n + j])} past the last named "
            "column)", "name every column in the header (row names too), or remove the extra "
            "fields",
        )
    full = full.iloc[:, :n]
    full.columns = frame.columns
    return full


def _cell(v) -> str:
    """A value as a user wrote it: strings quoted, numbers plain."""
    return repr(v) if isinstance(v, str) else f"{float(v):g}"


def _read_csv(path: Path):
    import pandas as pd

    frame = pd.read_csv(path)   # compression follows the extension
    if len(frame.columns) > 1:  # pandas renames a repeated name 'a' to 'a.1': say what it was
        header = [nfc(str(c)).strip() for c in pd.read_csv(
            path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]]
        dupes = sorted({c for c in header if header.count(c) > 1 and c})
        if dupes:
            raise DataError(f"{path} has duplicate column names {dupes[:5]}",
                            "rename or drop the repeated columns")
    if len(frame.columns) == 1:
        _check_separator(path, str(frame.columns[0]))
    idx = frame.index
    if not (isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1):
        frame = _realign(frame, path)
    # A trailing delimiter on the header too gives an unnamed column that holds nothing.
    empty = [c for c in frame.columns
             if _UNNAMED.fullmatch(str(c)) and frame[c].isna().all()]
    return frame.drop(columns=empty)


def _load_frame(path: Path, suffix: str):
    import pandas as pd

    _check_magic(path, suffix)
    try:
        if suffix in CSV_SUFFIXES:
            return _read_csv(path)
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
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path} is empty: expected a header and at least one row",
                        "pass a file with data rows") from exc
    except UnicodeDecodeError as exc:
        if bytes(exc.object[:2]) in (b"\xff\xfe", b"\xfe\xff"):   # a UTF-16 byte order mark
            raise DataError(f"{path} is UTF-16 text; lw reads UTF-8",
                            "save it as UTF-8, e.g. pandas.read_csv(path, encoding='utf-16')"
                            ".to_csv(out, index=False)") from exc
        raise DataError(f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
                        "cannot be decoded)", "save it as UTF-8, e.g. pandas.read_csv(path, "
                        "encoding='latin-1').to_csv(out, index=False) if it is Latin-1") from exc
    except ValueError as exc:
        if suffix == ".npy" and "pickle" in str(exc):
            raise DataError(
                f"{path} holds Python objects, which lw never unpickles",
                "save a plain numeric array with numpy.save",
            ) from exc
        raise DataError(f"{path} could not be parsed: {exc}", "check the file format") from exc
    except Exception as exc:  # pandas raises many types for malformed files
        raise DataError(f"{path} could not be parsed as {suffix}: {exc}",
                        "check that the file is well-formed") from exc
    if arr.ndim != 2:
        raise DataError(
            f"{path} has shape {arr.shape}: expected a 2-D array (rows x columns)",
            "reshape the array to 2-D before saving it",
        )
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])


def _in_memory(obj):
    """A pandas DataFrame (copied, never modified) or a 2-D numpy array (columns ``x0, x1,
    ...``, as for ``.npy`` files), with the name messages give it."""
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return "the DataFrame", obj.copy(deep=False)
    if isinstance(obj, np.ndarray):
        if obj.ndim != 2:
            raise DataError(f"the array has shape {obj.shape}: expected a 2-D array "
                            "(rows x columns)", "reshape it to 2-D")
        return "the array", pd.DataFrame(obj, columns=[f"x{i}" for i in range(obj.shape[1])])
    raise DataError(f"data must be a file path, a pandas DataFrame or a 2-D numpy array; got "
                    f"{type(obj).__name__}", "pass one of those")


def read_table(
    path,
    target: str | None = None,
    features: Sequence[str] | None = None,
    min_rows: int = 1,
    target_optional: bool = False,
    missing: str = "error",
    what: str = "",
) -> Table:
    """Read ``path`` (a CSV, Parquet or ``.npy`` file; or, from Python, a pandas DataFrame or a
    2-D numpy array) into a :class:`Table`.

    ``features``: the input columns to take, by name and in this order (an island's or a
    manifest's); other columns are left, and listed in ``Table.intake``. Without it every
    numeric non-target column that is no row number is taken, in file order.
    ``target_optional``: a missing target column is no error (the table then has no ``y``).
    ``missing``: ``drop``, ``impute`` or ``error`` (:mod:`lwcli.intake`); ``what`` names the
    taker in messages. :class:`DataError` for what the file cannot give.
    """
    from .intake import open_source

    return open_source(path, target, target_optional).take(features, missing=missing,
                                                           min_rows=min_rows, what=what)


def _open_frame(path):
    """``(path or in-memory label, DataFrame)`` for a file path, a DataFrame or an array."""
    if not isinstance(path, (str, os.PathLike)):
        return _in_memory(path)
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"data file {p} does not exist", "check the path")
    suffix = data_suffix(p)
    if suffix not in SUPPORTED:
        raise DataError(
            f"{p} has extension {suffix!r}: expected one of {', '.join(SUPPORTED)}",
            "convert the data to CSV, Parquet or .npy",
        )
    return p, _load_frame(p, suffix)


def _target_values(col, target: str, p) -> np.ndarray:
    """The target column: int64 labels, float64 values (finite), or bool/object labels."""
    from pandas.api.types import is_bool_dtype, is_integer_dtype, is_numeric_dtype

    if is_integer_dtype(col.dtype) and not is_bool_dtype(col.dtype):
        return col.to_numpy(dtype=np.int64, copy=True)       # labels keep the user's type
    if is_numeric_dtype(col.dtype) and not is_bool_dtype(col.dtype):
        y = col.to_numpy(dtype=np.float64, copy=True)
        _check_numbers(y[:, None], [target], p)
        return y
    kind, what, fix = _diagnose(col)
    if kind in ("thousands", "missing"):  # numbers, not class labels
        raise DataError(f"{p}: target {what}", fix)
    if col.isna().any():
        raise DataError(f"{p}: target column {target!r} has {int(col.isna().sum())} "
                        "missing values", "drop the rows without a target")
    return col.to_numpy(dtype=bool if is_bool_dtype(col.dtype) else object, copy=True)


def _diagnose(col) -> tuple[str, str, str]:
    """What a non-numeric column really holds: (kind, "column 'c' holds ...", fix)."""
    import pandas as pd
    from pandas.api.types import is_bool_dtype

    name = f"column {col.name!r}"
    if is_bool_dtype(col.dtype):
        return "bool", f"{name} holds true/false values", "encode them as 0/1"
    mask = col.notna().to_numpy()
    s = col[mask].astype(str).str.strip().reset_index(drop=True)
    rows = np.flatnonzero(mask)
    numeric = pd.to_numeric(s, errors="coerce").notna().to_numpy()
    bad, bad_rows = s[~numeric], rows[~numeric]
    if bad.empty:
        return "text", f"{name} holds numbers stored as text", "store them as numbers"
    first = f"data row {bad_rows[0] + 1}"
    if bad.str.fullmatch(_GROUPED).all():
        return ("thousands", f"{name} holds numbers written with thousands separators "
                f"({bad.iloc[0]!r} in {first})", "remove the separators, e.g. "
                "pandas.read_csv(path, thousands=',').to_csv(out, index=False)")
    counts = bad.value_counts()
    if all(t.lower() in _MISSING for t in counts.index):
        shown = ", ".join(f"{t!r} in {c} row{'s' if c > 1 else ''}" for t, c in counts.items())
        markers = counts.index[0] if len(counts) == 1 else list(counts.index)
        return ("missing", f"{name} holds {shown} (first: {first}), "
                f"{'a missing-value marker' if len(counts) == 1 else 'missing-value markers'}",
                f"drop or impute those rows, e.g. pandas.read_csv(path, na_values={markers!r})"
                ".dropna()")
    if numeric.mean() >= 0.5:
        shown = ", ".join(f"{t!r} x{c}" for t, c in counts.head(3).items())
        return ("mixed", f"{name} holds numbers but also {len(bad)} non-numeric "
                f"value{'s' if len(bad) > 1 else ''} "
                f"({shown}{', ...' if len(counts) > 3 else ''}; first: {first})",
                "correct or drop those rows")
    if bad.head(1000).str.match(_DATE).mean() >= 0.9:
        return ("dates", f"{name} holds dates or times ({bad.iloc[0]!r} in {first})",
                "leave it out of the features, or encode it as numbers (e.g. day of year, hour)")
    examples = ", ".join(repr(t) for t in counts.index[:3])
    return ("text", f"{name} holds text categories ({len(counts)} distinct, e.g. {examples})",
            "encode them as numbers (e.g. one-hot) before using lw")


def _check_numbers(X: np.ndarray, names: Sequence[str], path: Path) -> None:
    """Finite, and within float32's range (lw computes in float32)."""
    bad = ~np.isfinite(X)
    if bad.any():
        empty = [names[j] for j in np.flatnonzero(bad.all(axis=0))]
        if empty:
            raise DataError(f"{path}: column {empty[0]!r} is empty in every data row"
                            + (f" (so are {empty[1:5]})" if len(empty) > 1 else ""),
                            "fill it in, or leave the column out of the file")
        cols = [names[j] for j in np.flatnonzero(bad.any(axis=0))]
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataError(
            f"{path} has {len(rows)} rows with NaN or infinite values "
            f"(columns {cols[:5]}{'...' if len(cols) > 5 else ''}; first: data row {rows[0] + 1})",
            "drop or impute those rows before using lw",
        )
    check_float32_range(X, names, str(path))
    check_fill_values(X, names, str(path))
