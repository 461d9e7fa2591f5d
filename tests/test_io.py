"""Reading user data: CSV, Parquet and .npy, and the checks every format shares."""

from __future__ import annotations

from pathlib import Path

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


# --------------------------------------------------------------- field cases (real inputs)
FIELD = Path(__file__).resolve().parents[2] / "shared" / "field-cases"


def field(case: str, name: str) -> Path:
    """A field-case file (/work/shared beside the repository); skip where it is absent."""
    p = FIELD / case / name
    if not p.is_file():
        pytest.skip(f"field case {case}/{name} is not here")
    return p


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _refused(path, **kw) -> str:
    with pytest.raises(DataError) as err:
        read_table(path, **kw)
    assert err.value.exit_code == 4 and "\n" not in str(err.value)
    return str(err.value)


# float32: the engine's dtype
def test_a_value_beyond_float32_is_refused_naming_the_cell(tmp_path):
    p = _write(tmp_path / "d.csv", "a,b,y\n1,2,3\n4,1e39,6\n7,8,9\n")
    msg = _refused(p, target="y")
    assert f"{p}: column 'b', data row 2, holds 1e+39, beyond float32's range" in msg
    assert "lw computes in" in msg and "rescale the column" in msg and "drop the row" in msg
    assert "column 'y', data row 3" in _refused(
        _write(tmp_path / "t.csv", "a,y\n1,1\n2,2\n3,-2e300\n"), target="y")
    np.save(tmp_path / "x.npy", np.array([[1.0, 2.0], [3.0, -4e38]]))
    assert "column 'x1', data row 2, holds -4e+38" in _refused(tmp_path / "x.npy")
    msg = _refused(field("11", "huge_1e39.csv"), target="PM2.5")
    assert "column 'PRES', data row 5, holds 1e+39" in msg       # line 6 of the file
    assert "column 'PRES', data row 7, holds 1e+39" in _refused(field("11", "dev_train_1e39.csv"))


def test_float32_sentinels_are_named_as_fill_values(tmp_path):
    """ESRI NoData (-float32 max) and the NetCDF fill value fit float32, but squared in the
    kernel they overflow it: a spec fitted with one came out NaN at exit 0. They are refused
    as fill values, naming the cell; ordinary extremes are not."""
    rows = "\n".join(f"{i},{i % 7}" for i in range(1, 40))
    for fill in ("-3.4028234663852886e38", "9.969209968386869e36"):
        p = _write(tmp_path / "d.csv", f"a,b\n{rows}\n40,{fill}\n")
        msg = _refused(p)
        assert "column 'b', data row 40, holds" in msg and "fill or no-data value" in msg
    p = _write(tmp_path / "ok.csv", f"a,b\n{rows}\n40,1e6\n")     # far, but data
    assert read_table(p, features=["a", "b"]).X[-1, 1] == 1e6
    for name in ("sentinel_esri_nodata.csv", "sentinel_netcdf_fill.csv"):
        assert "fill or no-data value" in _refused(field("11", name), target="PM2.5")


def test_arrays_from_the_python_api_are_checked_in_float32():
    from sklearn.linear_model import LinearRegression

    from lwcli.engine.kernel import fit_metric
    from lwcli.engine.reuse import AverageReuser
    from lwcli.engine.reuse.base import Learnware
    from lwcli.engine.rkme import fit_rkme

    X = np.random.default_rng(0).normal(size=(30, 2))
    metric = fit_metric(X, None, task=None, seed=0)
    lw = Learnware("a", "a", LinearRegression().fit(X, X[:, 0]), "regression", ("f0", "f1"),
                   ("y",))
    reuser = AverageReuser([lw]).fit()
    X[4, 1] = 1e39
    for call in (lambda: fit_rkme(X, metric, k=5), lambda: reuser.predict(X)):
        with pytest.raises(DataError, match=r"\[4, 1\] holds 1e\+39, beyond float32's range"):
            call()


# non-numeric columns: say what they really hold
def test_thousands_separators_are_named_with_the_value_and_row(tmp_path):
    p = _write(tmp_path / "d.csv", 'a,co,y\n1,900,1\n2,"1,300",2\n3,"12,000.5",3\n')
    msg = _refused(p, target="y", features=["a", "co"])
    assert "column 'co' holds numbers written with thousands separators ('1,300' in data row 2)" \
        in msg and "thousands=','" in msg
    beijing = ["month", "hour", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP", "RAIN",
               "WSPM"]
    msg = _refused(field("03", "co_thousands.csv"), target="PM2.5", features=beijing)
    assert "column 'CO' holds numbers written with thousands separators ('1,300' in data row 1)" \
        in msg
    # a numeric target written that way is refused too, not taken for class labels
    assert "target column 'y' holds numbers written with thousands separators" in _refused(
        _write(tmp_path / "t.csv", 'a,y\n1,"1,300"\n2,"2,400"\n'), target="y")


def test_missing_value_markers_are_named(tmp_path):
    p = _write(tmp_path / "d.csv", "a,ca,y\n1,0,no\n2,?,yes\n3,1,no\n4,?,yes\n")
    msg = _refused(p, target="y")
    assert "column 'ca' holds '?' in 2 rows (first: data row 2), a missing-value marker" in msg
    assert "na_values='?'" in msg and "one-hot" not in msg and "--missing drop" in msg
    msg = _refused(field("04", "heart_question_marks.csv"), target="disease")
    assert "['trestbps']: column 'trestbps' holds '?' in 1 row (first: data row 3)" in msg
    # with a policy, the markers are missing values: dropped or left for imputation
    t = read_table(field("04", "heart_question_marks.csv"), target="disease", missing="drop")
    assert dict(t.intake.incomplete) == {"trestbps": 1, "oldpeak": 3}
    assert t.intake.rows_dropped == 3 and t.n_rows == t.intake.rows_read - 3 == 57
    t = read_table(field("04", "heart_question_marks.csv"), target="disease", missing="impute")
    assert t.n_missing == 4 and t.intake.rows_dropped == 0 and t.n_rows == 60
    assert "missing-value marker" in _refused(
        _write(tmp_path / "t.csv", "a,y\n1,2.5\n2,?\n3,1.5\n"), target="y")


def test_other_non_numeric_columns_are_diagnosed(tmp_path):
    mixed = _write(tmp_path / "m.csv", "a,b\n1,2\n2,3\n3,n.a.\n4,5\n")
    assert "column 'b' holds numbers but also 1 non-numeric value ('n.a.' x1; first: data " \
           "row 3)" in _refused(mixed, features=["a", "b"])
    dates = _write(tmp_path / "t.csv", "a,when\n1,2013-03-01\n2,2013-03-02\n")
    assert "column 'when' holds dates or times ('2013-03-01' in data row 1)" in _refused(
        dates, features=["when"])
    cats = _write(tmp_path / "c.csv", "a,city\n1,Paris\n2,Lyon\n3,Paris\n")
    msg = _refused(cats, features=["a", "city"])
    assert "non-numeric feature columns ['city']: column 'city' holds text categories " \
           "(2 distinct, e.g. 'Paris', 'Lyon')" in msg and "one-hot" in msg


# the file's layout
def test_a_trailing_delimiter_on_every_line_is_an_empty_column_and_ignored(tmp_path):
    expected = read_table(_write(tmp_path / "ok.csv", "a,b,y\n1,2,3\n4,5,6\n"), target="y")
    for name, text in (("data.csv", "a,b,y\n1,2,3,\n4,5,6,\n"),       # data lines only
                       ("both.csv", "a,b,y,\n1,2,3,\n4,5,6,\n")):     # header too
        for features in (None, ["b", "a"]):
            t = read_table(_write(tmp_path / name, text), target="y", features=features)
            assert t.features == tuple(features or ("a", "b"))
            np.testing.assert_array_equal(t.select(["a", "b"]).X, expected.X)
            np.testing.assert_array_equal(t.y, expected.y)
    msg = _refused(_write(tmp_path / "x.csv", "a,b\n1,2,\n3,4,5\n"))
    assert "data rows have up to 3 fields but the header names 2 columns (data row 2 has 5 " \
           "past the last named column)" in msg
    ref = read_table(field("01", "bom.csv"), target="PM2.5")
    t = read_table(field("16", "trailing_comma.csv"), target="PM2.5", features=ref.features)
    np.testing.assert_array_equal(t.X, ref.X)
    np.testing.assert_array_equal(t.y, ref.y)
    t = read_table(field("16", "trailing_comma_unlabelled.csv"))
    assert t.features == ref.features and np.array_equal(t.X, ref.X)


def test_an_empty_column_is_named_as_such(tmp_path):
    msg = _refused(_write(tmp_path / "d.csv", "a,b,c\n1,,3\n4,,6\n"), features=["a", "b"])
    assert "column 'b' is empty in every data row" in msg and "drop or impute" not in msg
    # taken by no one, it is ignored and said to be empty
    t = read_table(tmp_path / "d.csv")
    assert t.features == ("a", "c") and t.intake.ignored == (("b", "empty in every row"),)


def test_semicolon_files_are_diagnosed_not_misread(tmp_path):
    p = _write(tmp_path / "d.csv", "a;b;y\n1,5;2;3\n4;5,25;6\n")
    msg = _refused(p, target="y")
    assert f"{p} looks ';'-separated (its header is 'a;b;y'), with decimal commas ('1,5')" in msg
    assert "pandas.read_csv(path, sep=';', decimal=',')" in msg and "--target" not in msg
    msg = _refused(_write(tmp_path / "t.csv", "a\tb\n1\t2\n"))
    assert "looks tab-separated" in msg and "decimal" not in msg
    msg = _refused(field("02", "semicolon_decimal_comma.csv"), target="PM2.5")
    assert "looks ';'-separated" in msg and "decimal commas ('88,0')" in msg


# names and encodings
def test_column_names_are_compared_in_nfc(tmp_path):
    import unicodedata

    from lwcli.market.manifest import read_manifest

    nfd = unicodedata.normalize("NFD", "température")
    p = _write(tmp_path / "d.csv", f"{nfd},b,y\n1,2,3\n4,5,6\n")
    t = read_table(p, target="y", features=["b", "température"])
    assert t.features == ("b", "température") and t.X[0].tolist() == [2.0, 1.0]
    assert read_table(p, target="y", features=[nfd, "b"]).select(["température", "b"]).n_rows == 2
    man = read_manifest(field("12", "learnware.toml"))
    t = read_table(field("12", "user_nfd.csv"), target="conso", features=man.features)
    assert t.features == man.features == ("température", "humidité", "pluie_sur_24h")


def test_manifest_and_spec_names_are_nfc():
    import unicodedata

    from lwcli.engine.kernel import fit_metric
    from lwcli.engine.rkme import fit_rkme
    from lwcli.market.manifest import manifest_from_text
    from lwcli.specfile import Spec, spec_from_dict

    nfd = unicodedata.normalize("NFD", "humidité")
    man = manifest_from_text(_MANIFEST.replace("humidité", nfd).replace("débit", nfd))
    assert man.features == ("a", "humidité") and man.outputs == ("humidité",)
    X = np.random.default_rng(0).normal(size=(10, 2))
    rkme = fit_rkme(X, fit_metric(X, None, task=None, seed=0), k=2)
    d = Spec(rkme=rkme, features=("a", nfd)).to_dict()
    assert spec_from_dict(d).features == ("a", "humidité")


_MANIFEST = """name = "m"
version = "1.0.0"
description = "A test model."
license = "MIT"
tags = []
data_type = "table"
task = "regression"
objective = "rmse"
[input]
features = ["a", "humidité"]
[output]
dimension = 1
names = ["d\u00e9bit"]
[model]
format = "skops"
file = "model.skops"
"""


def test_a_byte_order_mark_is_ignored(tmp_path):
    from lwcli.market.manifest import manifest_from_text, read_manifest

    (tmp_path / "learnware.toml").write_bytes(b"\xef\xbb\xbf" + _MANIFEST.encode())
    assert read_manifest(tmp_path / "learnware.toml").name == "m"
    assert manifest_from_text("\ufeff" + _MANIFEST).features == ("a", "humidité")
    assert read_manifest(field("01", "learnware_bom.toml")).name.startswith("beijing")
    (tmp_path / "d.csv").write_bytes(b'\xef\xbb\xbf"month","b"\r\n"3","4"\r\n')
    assert read_table(tmp_path / "d.csv").features == ("month", "b")
    for name in ("bom.csv", "bom_quoted.csv"):
        assert read_table(field("01", name), target="PM2.5").features[0] == "month"


# compression and file kinds
def test_compressed_csv_is_read_and_a_disguised_file_named(tmp_path):
    import bz2
    import gzip
    import lzma

    text = b"a,b,y\n1,2,3\n4,5,6\n"
    for suffix, pack in ((".csv.gz", gzip.compress), (".csv.bz2", bz2.compress),
                         (".csv.xz", lzma.compress)):
        (tmp_path / f"d{suffix}").write_bytes(pack(text))
        assert read_table(tmp_path / f"d{suffix}", target="y").X.tolist() == [[1, 2], [4, 5]]
    (tmp_path / "disguised.csv").write_bytes(gzip.compress(text))
    assert _refused(tmp_path / "disguised.csv") == (
        f"{tmp_path / 'disguised.csv'} holds gzip-compressed data but is named .csv "
        "(rename it disguised.csv.gz)")
    np.save(tmp_path / "arr.csv", np.ones((2, 2)))                 # numpy adds .npy
    assert "holds a NumPy .npy array but is named .csv" in _refused(
        (tmp_path / "arr.csv.npy").rename(tmp_path / "arr.csv"))
    assert read_table(field("18", "wanshouxigong_200h.csv.gz"), target="PM2.5").n_rows == 200
    assert "holds gzip-compressed data but is named .csv (rename it disguised.csv.gz)" in \
        _refused(field("18", "disguised.csv"))


# too little data
def test_empty_and_header_only_files_are_one_line_errors(tmp_path):
    assert _refused(_write(tmp_path / "e.csv", "")) == (
        f"{tmp_path / 'e.csv'} is empty: expected a header and at least one row "
        "(pass a file with data rows)")
    assert "has a header but no data rows: expected at least 1" in _refused(
        _write(tmp_path / "h.csv", "a,b,y\n"), target="y")
    assert "is empty" in _refused(field("09", "empty.csv"))
    assert "has a header but no data rows" in _refused(field("09", "header_only.csv"))
    assert read_table(field("09", "one_row.csv"), target="PM2.5").n_rows == 1


def test_a_value_beyond_float32_exits_4_through_the_cli_and_changes_nothing(tmp_path):
    """Field case 11: one finite 1e39 reached the QP solver and ended in exit 1."""
    import shutil

    from conftest import ROOT, run_cli, snapshot

    market = tmp_path / "market"
    shutil.copytree(ROOT / "sample_market" / "market", market)
    before = snapshot(market)
    user = pd.read_csv(ROOT / "sample_market" / "user" / "wanshouxigong_200h.csv")
    user.loc[4, "PRES"] = 1e39
    user.to_csv(tmp_path / "huge.csv", index=False)
    for args in (["search", "--data", tmp_path / "huge.csv", "--target", "PM2.5"],
                 ["spec", tmp_path / "huge.csv", "--target", "PM2.5", "-o", tmp_path / "r.json"],
                 ["anchor-eval", "--data", tmp_path / "huge.csv", "--target", "PM2.5",
                  "-o", tmp_path / "a.json"]):
        proc = run_cli(*args, "--market", market, check=4)
        assert "column 'PRES', data row 5, holds 1e+39" in proc.stderr
        assert proc.stderr.count("\n") == 1
    assert snapshot(market) == before


def test_duplicate_columns_are_named_before_pandas_renames_them(tmp_path):
    p = _write(tmp_path / "d.csv", "a,b,a\n1,2,3\n4,5,6\n")
    assert "duplicate column names ['a']" in _refused(p)


def test_errors_quoting_a_multi_line_library_message_stay_one_line(tmp_path):
    p = _write(tmp_path / "d.csv", "a,b\n1,2\n3,4,5,6\n7,8\n")
    msg = _refused(p)
    assert "\n" not in msg


def test_a_utf16_file_is_named_as_such(tmp_path):
    p = tmp_path / "u16.csv"
    p.write_bytes("a,b\n1,2\n3,4\n".encode("utf-16"))
    msg = _refused(p)
    assert "is UTF-16 text" in msg and "encoding='utf-16'" in msg
