"""What lw takes from a user's or developer's table, and what it leaves.

Real files hold more than a model's inputs: row numbers, ids, dates, text, the label column of
a developer's training file, and gaps. A :class:`Source` is a file (or DataFrame) read once,
its columns classified; :meth:`Source.take` cuts it to the columns a command needs, **by
name**, and applies a missing-value policy:

- ``drop``: rows with a missing input (or a missing label) are dropped, and counted;
- ``impute``: missing inputs stay NaN for the caller to fill (:mod:`lwcli.engine.conditional`
  estimates them from specifications); rows without a label are still dropped;
- ``error``: a missing value is refused, naming the column and the row.

Every column not taken is listed with the reason (:class:`Intake`), and every row dropped or
cell imputed is counted: nothing is left out silently. A numeric column that is 0 in every one
of at least :data:`UNMEASURED_MIN_ROWS` rows (a site that never measured it, as Switzerland's
cholesterol in the Cleveland heart-disease data) is taken as not measured, never as data,
unless the market knows 0 as an ordinary value of that feature (:meth:`Source.keep_zeros`:
40 patients without high fasting blood sugar are 40 zeros).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .errors import DataError, UsageError
from .validation import MAX_FEATURES, check_fill_values, check_float32_range, nfc, nfc_all

MISSING_POLICIES = ("drop", "impute", "error")
#: a numeric column that is 0 in every one of at least this many rows was not measured
UNMEASURED_MIN_ROWS = 10
#: an integer column counting 1, 2, 3, ... over at least this many rows is a row number
ROW_NUMBER_MIN_ROWS = 10
_SHOWN = 8

# what a column that is not taken holds, by the kind :func:`lwcli.io._diagnose` finds
_REASONS = {"bool": "true/false values", "text": "text", "dates": "dates or times",
            "thousands": "numbers written with thousands separators",
            "mixed": "numbers mixed with text", "empty": "empty in every row",
            "unmeasured": "0 or empty in every row: not measured", "row-number": "row number"}


#: reasons of columns that hold no data at all: a model needing one is as if it were absent
NO_DATA = (_REASONS["empty"], _REASONS["unmeasured"])


def check_policy(missing: str, allowed: Sequence[str] = MISSING_POLICIES) -> str:
    """``missing`` when it is one of ``allowed``, else a :class:`UsageError`."""
    if missing not in allowed:
        raise UsageError(f"--missing {missing!r}: expected one of {', '.join(allowed)}",
                         f"pass --missing {allowed[0]}")
    return missing


@dataclass(frozen=True)
class Intake:
    """What was taken from a table: rows read, rows dropped, cells imputed, and the columns
    left out with the reason for each (``ignored``: (column, reason) pairs).
    ``to_dict()`` is the ``ignored_columns`` and ``input_rows`` of every command's ``--json``."""

    rows_read: int
    ignored: tuple[tuple[str, str], ...] = ()
    missing: str = "error"
    rows_dropped: int = 0
    rows_unlabelled: int = 0          # of the dropped rows, those without a label
    rows_unscored: int = 0            # rows kept without a label (reuse: predicted, not scored)
    rows_imputed: int = 0
    cells_imputed: int = 0
    incomplete: tuple[tuple[str, int], ...] = ()    # (column, missing cells) in read rows
    unmeasured: tuple[str, ...] = ()    # columns never measured, 0 or empty (taken or not)
    absent: tuple[str, ...] = ()                    # needed columns the file lacks (estimated)
    zeros: tuple[str, ...] = ()       # 0 in every row, taken as data: 0 is ordinary for them
    target_zero: bool = False         # the label column is 0 in every row (of at least 10)
    imputed_from: str = ""
    hints: tuple[str, ...] = ()

    @property
    def rows_used(self) -> int:
        return self.rows_read - self.rows_dropped

    def ignored_columns(self) -> list[str]:
        return [c for c, _ in self.ignored]

    def to_dict(self) -> dict:
        return {"ignored_columns": [{"column": c, "reason": r} for c, r in self.ignored],
                "input_rows": {"read": self.rows_read, "used": self.rows_used,
                               "dropped": self.rows_dropped,
                               "dropped_unlabelled": self.rows_unlabelled,
                               "unscored": self.rows_unscored,
                               "imputed": self.rows_imputed,
                               "cells_imputed": self.cells_imputed,
                               "missing_policy": self.missing,
                               "incomplete_columns": {c: n for c, n in self.incomplete},
                               "unmeasured_columns": list(self.unmeasured),
                               "zero_columns": list(self.zeros),
                               "absent_columns": list(self.absent)}}

    def notes(self) -> list[str]:
        """One line per thing a user should know (stderr, and search's warnings)."""
        out = []
        if self.ignored:
            shown = ", ".join(f"{c!r} ({r})" for c, r in self.ignored[:_SHOWN])
            more = f" and {len(self.ignored) - _SHOWN} more" if len(self.ignored) > _SHOWN else ""
            out.append(f"ignored {len(self.ignored)} column{_s(self.ignored)}: {shown}{more}")
        left = {c for c, _ in self.ignored}
        for c in self.unmeasured:
            if c not in left:        # an ignored one is in the ignored list, with the reason
                out.append(f"column {c!r} is 0 (or empty) in every row: taken as not measured, "
                           "not as data")
        if self.target_zero:
            out.append("the target is 0 in every row: if it was not measured at this site, "
                       "these labels say nothing (lw takes them as they are)")
        for c in self.zeros:
            out.append(f"column {c!r} is 0 in every row: taken as data, as 0 is an ordinary "
                       "value of it in the market's specifications")
        if self.absent:
            out.append(f"{len(self.absent)} input column{_s(self.absent)} not in the file (or "
                       "without data), "
                       f"estimated for every row from {self.imputed_from or 'specifications'}: "
                       + ", ".join(repr(c) for c in self.absent[:_SHOWN])
                       + (", ..." if len(self.absent) > _SHOWN else ""))
        cols = _columns_text(self.incomplete)
        if self.rows_dropped and self.missing == "drop":
            why = (f"{self.rows_unlabelled} without a label; " if self.rows_unlabelled else "")
            out.append(f"dropped {self.rows_dropped} of {self.rows_read} rows with a missing "
                       f"value ({why}--missing drop){cols}")
        elif self.rows_dropped:          # impute or error: only rows without a label go
            out.append(f"dropped {self.rows_dropped} of {self.rows_read} rows without a "
                       "label")
        if self.rows_unscored:
            out.append(f"{self.rows_unscored} row{_s(self.rows_unscored)} without a label: "
                       "predicted, not scored")
        gaps = self.cells_imputed - len(self.absent) * self.rows_used   # not whole columns
        if gaps > 0:
            src = f" from {self.imputed_from}" if self.imputed_from else ""
            where = "" if self.absent else f" in {self.rows_imputed} of {self.rows_used} rows"
            out.append(f"imputed {gaps} missing value{_s(gaps)}{where}{src} (--missing impute)"
                       f"{cols}")
        return out + list(self.hints)


def _s(n) -> str:
    return "" if (n if isinstance(n, int) else len(n)) == 1 else "s"


def _columns_text(incomplete) -> str:
    if not incomplete:
        return ""
    shown = ", ".join(f"{c!r} x{n}" for c, n in incomplete[:_SHOWN])
    return f"; missing inputs: {shown}{', ...' if len(incomplete) > _SHOWN else ''}"


@dataclass
class Source:
    """A table read once (:func:`open_source`), column names in NFC, columns classified:
    ``numeric``, ``markers`` (numbers with missing-value markers such as ``?``), ``empty``,
    ``unmeasured``, or what :func:`lwcli.io._diagnose` finds a non-numeric column to hold."""

    name: str
    frame: object
    target: str | None
    policies: tuple = ("drop", "impute")    # the other --missing policies the command takes
    zeros: tuple = ()                       # all-zero columns kept as data (keep_zeros)
    _kinds: dict = field(default_factory=dict, repr=False)

    @property
    def n_rows(self) -> int:
        return int(self.frame.shape[0])

    @property
    def columns(self) -> list[str]:
        """The columns but the target, in file order."""
        return [c for c in self.frame.columns if c != self.target]

    def kind(self, column: str) -> str:
        if column not in self.frame.columns:
            return "absent"
        if column not in self._kinds:
            self._kinds[column] = _classify(self.frame[column])
        return self._kinds[column]

    def unmeasured(self) -> list[str]:
        """Columns (not the target) that are 0 in every row: taken as not measured, unless
        :meth:`keep_zeros` is told otherwise."""
        return [c for c in self.columns if self.kind(c) == "unmeasured"]

    def keep_zeros(self, columns: Sequence[str]) -> None:
        """Take these all-zero columns as data: 0 is an ordinary value of them where the
        market's specifications are concerned (the caller asks
        :func:`lwcli.engine.conditional.ordinary_zeros`). Listed in ``intake.zeros``."""
        for c in columns:
            if self.kind(c) == "unmeasured":
                self._kinds[c] = "numeric"
                self.zeros += (c,)

    def available(self) -> list[str]:
        """Columns a model could take: numbers (gaps allowed), measured, not the target."""
        return [c for c in self.columns if self.kind(c) in ("numeric", "markers")]

    def unusable(self) -> dict[str, str]:
        """Column -> why no model could take it (for messages)."""
        ok = set(self.available())
        return {c: self.reason(c, "") for c in self.columns if c not in ok}

    def reason(self, column: str, what: str) -> str:
        """Why ``column`` is not taken by ``what`` (e.g. "island t-r-1a2b")."""
        kind = self.kind(column)
        if kind in _REASONS:
            return _REASONS[kind]
        if kind == "numeric" and self.is_row_number(column):
            return _REASONS["row-number"]
        return f"not an input of {what}" if what else "not taken"

    def is_row_number(self, column: str) -> bool:
        """An integer column that counts up by one from row to row."""
        col = self.frame[column]
        if self.kind(column) != "numeric" or self.n_rows < ROW_NUMBER_MIN_ROWS:
            return False
        v = col.to_numpy(dtype=np.float64)
        return bool(np.isfinite(v).all() and (np.diff(v) == 1).all() and v[0] == np.round(v[0]))

    def take(self, features: Sequence[str] | None = None, *, missing: str = "error",
             min_rows: int = 1, what: str = "", unlabelled: str = "drop",
             absent: str = "error"):
        """The :class:`lwcli.io.Table` of ``features`` (by name, in that order; ``None``: every
        available column that is no row number, in file order) and the target.

        Rows and cells follow ``missing`` (see the module); a row without a label is dropped,
        or with ``unlabelled="keep"`` kept (``Table.labelled`` marks the labelled rows: reuse
        predicts every row and scores those). A feature the file lacks is a
        :class:`DataError`, or with ``absent="estimate"`` (reuse, which estimates it from
        specifications) a column of NaN listed in ``intake.absent``. :class:`DataError` for a
        column that holds no numbers (the diagnosis names what it holds), infinite
        values, fill values, labels that are missing under ``error``, and fewer than
        ``min_rows`` rows left.
        """
        from .io import Table

        check_policy(missing)
        if features is None:
            feats = [c for c in self.available() if not self.is_row_number(c)]
        else:
            feats = nfc_all(features)
            self._check_present(feats, what, absent == "estimate")
        if not feats:
            left = "; ".join(f"{c!r}: {self.reason(c, what)}" for c in self.columns[:5])
            raise DataError(f"{self.name} has no column lw can take as a feature"
                            + (f" ({left})" if left else ""),
                            "add numeric feature columns")
        if len(feats) > MAX_FEATURES:
            raise DataError(f"{self.name} has {len(feats)} feature columns, over the limit of "
                            f"{MAX_FEATURES}", "select the columns the model uses")
        ignored = tuple((c, self.reason(c, what)) for c in self.columns if c not in feats)
        X, unmeasured = self._matrix(feats, missing)
        y, no_label = self._labels(missing, unlabelled)
        estimated = [c for c in feats if c not in self.frame.columns or (
            absent == "estimate" and self.kind(c) in ("empty", "unmeasured"))]
        gaps = np.isnan(X)
        gaps[:, [j for j, c in enumerate(feats) if c in estimated]] = False
        incomplete = tuple((feats[j], int(n)) for j, n in enumerate(gaps.sum(0)) if n)
        drop = no_label.copy() if unlabelled == "drop" else np.zeros(self.n_rows, dtype=bool)
        if missing == "drop":
            drop |= gaps.any(axis=1)
        intake = Intake(self.n_rows, ignored, missing, int(drop.sum()),
                        int((no_label & drop).sum()), int((no_label & ~drop).sum()),
                        incomplete=incomplete,
                        unmeasured=unmeasured + tuple(
                            c for c, _ in ignored if self.kind(c) in ("empty", "unmeasured")),
                        target_zero=self.target is not None
                        and self.kind(self.target) == "unmeasured",
                        absent=tuple(estimated),
                        zeros=tuple(c for c in self.zeros if c in feats))
        labelled = None if y is None else ~no_label
        if drop.any():
            X, y = X[~drop], (None if y is None else y[~drop])
            labelled = None if labelled is None else labelled[~drop]
        self._check_rows(len(X), min_rows, intake)
        check_float32_range(X, feats, self.name)
        check_fill_values(X, feats, self.name)
        return Table(path=self.name, features=tuple(feats), X=X, target=self.target, y=y,
                     intake=intake, labelled=labelled)

    def _check_present(self, feats: list[str], what: str, absent_ok: bool = False) -> None:
        cols = list(self.frame.columns)
        absent = [f for f in feats if f not in cols or f == self.target]
        if not absent or (absent_ok and self.target not in absent):
            return
        if self.target in absent:
            raise DataError(f"{self.name}: the target column {self.target!r} is also an input "
                            f"of {what or 'the model'}", "pass another --target")
        have = [c for c in self.columns]
        raise DataError(
            f"{self.name} lacks {len(absent)} of the {len(feats)} columns "
            f"{f'of {what}' if what else 'needed'}: {absent[:5]}"
            f"{'...' if len(absent) > 5 else ''} (it has {have[:8]}"
            f"{'...' if len(have) > 8 else ''})",
            "add those columns to the file (names are compared exactly)")

    def _matrix(self, feats: list[str], missing: str) -> tuple[np.ndarray, tuple[str, ...]]:
        """The columns as float64 (NaN where missing) and those never measured; non-numeric
        and (under ``error``) incomplete columns are a :class:`DataError`."""
        import pandas as pd

        from .io import _diagnose

        bad = [c for c in feats if self.kind(c) not in ("numeric", "markers", "empty",
                                                         "unmeasured", "absent")]
        if bad:
            _, text, fix = _diagnose(self.frame[bad[0]])
            raise DataError(f"{self.name} has non-numeric feature columns {bad[:5]}"
                            f"{'...' if len(bad) > 5 else ''}: {text}", fix)
        if all(c in self.frame.columns for c in feats):
            sub = self.frame[feats].copy()
        else:
            sub = self.frame.reindex(columns=feats)      # absent columns: NaN, estimated later
        unmeasured = []
        for c in feats:
            kind = self.kind(c)
            if kind == "markers":
                if missing == "error":
                    _, text, fix = _diagnose(sub[c])
                    raise DataError(f"{self.name} has non-numeric feature columns [{c!r}]: "
                                    f"{text}", f"{fix}, or pass "
                                    + " or ".join(f"--missing {p}" for p in self.policies))
                sub[c] = pd.to_numeric(sub[c].astype(str).str.strip(), errors="coerce")
            elif kind == "empty" and missing == "error":
                raise DataError(f"{self.name}: column {c!r} is empty in every data row",
                                "fill it in" + (", or pass --missing impute to estimate it"
                                                if self.policies == ("impute",) else
                                                ", or leave the column out of the file"))
            elif kind in ("empty", "unmeasured"):
                sub[c] = np.nan
                unmeasured.append(c)
        # one conversion of the whole frame, as pandas lays it out: reductions over it (the
        # metric's standard deviations) then sum in the same order as they always have
        X = sub.to_numpy(dtype=np.float64, copy=True)
        self._check_infinite(X, feats)
        if unmeasured and missing == "error":
            raise DataError(f"{self.name}: column {unmeasured[0]!r} is 0 in every one of the "
                            f"{self.n_rows} data rows: it was not measured",
                            "measure it, or pass --missing impute to estimate it")
        here = [j for j, c in enumerate(feats) if c in self.frame.columns]
        if missing == "error" and np.isnan(X[:, here]).any():
            _missing_error(self.name, X[:, here], [feats[j] for j in here], self.policies)
        return X, tuple(unmeasured)

    def _check_infinite(self, X: np.ndarray, feats: list[str]) -> None:
        inf = np.isinf(X)
        if inf.any():
            i, j = (int(v) for v in np.argwhere(inf)[0])
            rows = int(inf.any(1).sum())
            raise DataError(f"{self.name} has {rows} row{_s(rows)} with infinite values "
                            f"(column {feats[j]!r}; first: data row {i + 1})",
                            "drop or fix those rows before using lw")

    def _unlabelled_rows(self) -> np.ndarray:
        """Which rows lack a label: empty, or a missing-value marker such as ``?``."""
        from .io import _MISSING

        col = self.frame[self.target]
        absent = col.isna().to_numpy().copy()
        text = col.astype(str).str.strip().str.lower()
        return absent | (text.isin(_MISSING).to_numpy() & ~absent)

    def label_values(self):
        """The target's values in the rows that have a label (a pandas Series; empty without
        a target)."""
        import pandas as pd

        if self.target is None:
            return pd.Series([], dtype=object)
        return self.frame[self.target][~self._unlabelled_rows()]

    def _labels(self, missing: str, unlabelled: str) -> tuple[np.ndarray | None, np.ndarray]:
        """The target column (None without one) and which rows lack a label."""
        from .io import _target_values

        if self.target is None:
            return None, np.zeros(self.n_rows, dtype=bool)
        import pandas as pd
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        col = self.frame[self.target]
        absent = self._unlabelled_rows()
        if not (is_numeric_dtype(col.dtype) or is_bool_dtype(col.dtype)):
            text = col.astype(str).str.strip()
            numbers = pd.to_numeric(text[~absent], errors="coerce")
            strict = missing == "error" and unlabelled == "drop"    # refused below, diagnosed
            if absent.any() and numbers.notna().all() and not strict:   # numbers around '?'
                col = pd.Series(np.nan, index=col.index, dtype=np.float64)
                col[~absent] = numbers.to_numpy(dtype=np.float64)
                col.name = self.target
        if absent.all() and len(absent):
            raise DataError(f"{self.name}: target column {self.target!r} is empty in every "
                            "data row", "pass the column that holds your labels")
        if not absent.any() or (missing == "error" and unlabelled == "drop"):
            return _target_values(col, self.target, self.name), absent & False
        y = _target_values(col[~absent], self.target, self.name)
        if y.dtype.kind == "f" and np.array_equal(y, np.round(y)) and np.abs(y).max() < 2 ** 53:
            y = y.astype(np.int64)        # integers that pandas made floats to hold the gaps
        full = np.empty(self.n_rows, dtype=y.dtype)
        full[~absent] = y
        if y.dtype == object:
            full[absent] = None
        else:
            full[absent] = 0
        return full, absent

    def _check_rows(self, n: int, min_rows: int, intake: Intake) -> None:
        if n >= min_rows:
            return
        if self.n_rows == 0:
            raise DataError(f"{self.name} has a header but no data rows: expected at least "
                            f"{min_rows}", "pass a file with more rows")
        if not intake.rows_dropped:
            raise DataError(f"{self.name} has {n} data row{_s(n)}: expected at least {min_rows}",
                            "pass a file with more rows")
        empty = [c for c, k in intake.incomplete if k == self.n_rows]
        if empty:
            raise DataError(f"{self.name}: column {empty[0]!r} is "
                            + ("0" if empty[0] in intake.unmeasured else "empty")
                            + " in every data row, so --missing drop leaves no row",
                            "leave the column out, or pass --missing impute")
        raise DataError(f"{self.name}: {intake.rows_dropped} of {self.n_rows} rows have a "
                        f"missing value{_columns_text(intake.incomplete)}, {n} left: expected "
                        f"at least {min_rows}", "pass --missing impute, or more complete rows")


def _missing_error(name: str, X: np.ndarray, feats: list[str], others: Sequence[str]) -> None:
    bad = np.isnan(X)
    cols = [feats[j] for j in np.flatnonzero(bad.any(axis=0))]
    rows = np.flatnonzero(bad.any(axis=1))
    raise DataError(
        f"{name} has {len(rows)} rows with NaN (missing) values (columns {cols[:5]}"
        f"{'...' if len(cols) > 5 else ''}; first: data row {rows[0] + 1})",
        " or ".join(f"--missing {p}" for p in others).join(("pass ", ", or fill those cells")))


def _classify(col) -> str:
    """numeric, markers, empty, unmeasured, or the kind :func:`lwcli.io._diagnose` names."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    from .io import _diagnose

    if is_numeric_dtype(col.dtype) and not is_bool_dtype(col.dtype):
        v = col.to_numpy(dtype=np.float64)
        seen = v[~np.isnan(v)]
        if not seen.size:
            return "empty"
        if len(v) >= UNMEASURED_MIN_ROWS and not seen.any():
            return "unmeasured"
        return "numeric"
    if col.isna().all():
        return "empty"
    kind = _diagnose(col)[0]
    if kind == "missing":
        return "markers"
    return kind


def open_source(path, target: str | None = None, target_optional: bool = False) -> Source:
    """Read ``path`` (a CSV, Parquet or ``.npy`` file; a pandas DataFrame or a 2-D array) once.

    ``target``: the label column (a :class:`DataError` when absent, unless
    ``target_optional``: then the source has none). Duplicate names are refused.
    """
    from .io import _open_frame

    p, frame = _open_frame(path)
    if frame.shape[0] == 0:
        raise DataError(f"{p} has a header but no data rows: expected at least 1",
                        "pass a file with data rows")
    columns = nfc_all(frame.columns)
    frame.columns = columns
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"{p} has duplicate column names {dupes}", "rename the columns")
    target = None if target is None else nfc(target)
    if target is not None and target not in columns:
        if target_optional:
            target = None
        else:
            raise DataError(f"{p} has no target column {target!r}; columns are {columns}",
                            "pass --target with one of the file's column names")
    return Source(str(p), frame, target)


__all__ = ["Intake", "Source", "open_source", "check_policy", "MISSING_POLICIES",
           "UNMEASURED_MIN_ROWS", "ROW_NUMBER_MIN_ROWS"]
