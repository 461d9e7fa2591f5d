"""Reading user data: CSV, Parquet and .npy, and the checks every format shares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lwcli.errors import DataError
from lwcli.io import read_table


def _frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=20), "b": rng.normal(size=20),
                         "y": rng.integers(0, 2, size=20)})


def test_csv_and_parquet_read_the_same(tmp_path):
    pytest.importorskip("pyarrow")
    df = _frame()
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet", index=False)
    a = read_table(tmp_path / "d.csv", target="y")
    b = read_table(tmp_path / "d.parquet", target="y")
    assert a.features == b.features == ("a", "b")
    np.testing.assert_allclose(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)


def test_columns_are_reordered_to_the_expected_features(tmp_path):
    _frame()[["b", "y", "a"]].to_csv(tmp_path / "d.csv", index=False)
    t = read_table(tmp_path / "d.csv", target="y", features=["a", "b"])
    assert t.features == ("a", "b")
    np.testing.assert_allclose(t.X[:, 0], _frame()["a"].to_numpy(), rtol=1e-12)


def test_npy_columns_are_named_and_objects_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(12.0).reshape(4, 3))
    t = read_table(tmp_path / "x.npy")
    assert t.features == ("x0", "x1", "x2") and t.X.shape == (4, 3)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="never unpickles"):
        read_table(tmp_path / "o.npy")
    np.save(tmp_path / "v.npy", np.arange(3.0))
    with pytest.raises(DataError, match="2-D"):
        read_table(tmp_path / "v.npy")


def test_string_labels_are_kept_as_labels(tmp_path):
    df = _frame().assign(y=lambda d: np.where(d.y > 0, "sick", "well"))
    df.to_csv(tmp_path / "d.csv", index=False)
    t = read_table(tmp_path / "d.csv", target="y")
    assert set(t.y) == {"sick", "well"}
