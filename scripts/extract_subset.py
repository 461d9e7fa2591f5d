"""Extract the data subset that lw ships, from the full data in ../shared/data.

Run once by maintainers (not needed to build or test lw): the output is committed under
sample_market/data/. Deterministic: the same input gives the same bytes.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT.parent / "shared" / "data" / "beijing_air_quality"
OUT = ROOT / "sample_market" / "data"
ROWS_PER_STATION_YEAR = 3000     # 12,000 hours a station: 4 learnware years, or one user
COLUMNS = ["station", "year", "month", "day", "hour", "PM2.5", "PM10", "SO2", "NO2", "CO", "O3",
           "TEMP", "PRES", "DEWP", "RAIN", "WSPM"]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, f in enumerate(sorted(SRC.glob("PRSA_Data_*.csv.gz"))):
        df = pd.read_csv(f)[COLUMNS].dropna().reset_index(drop=True)
        rng = np.random.default_rng(1000 + i)
        for season in range(4):           # March to February: 2013/14, ..., 2016/17
            rows = np.flatnonzero(((df.year - 2013) - (df.month < 3)).to_numpy() == season)
            take = np.sort(rng.choice(rows, size=min(ROWS_PER_STATION_YEAR, len(rows)),
                                      replace=False))
            parts.append(df.iloc[take])
    data = pd.concat(parts, ignore_index=True)
    buf = io.StringIO()
    data.to_csv(buf, index=False, float_format="%.6g")
    with open(OUT / "beijing_air_quality_subset.csv.gz", "wb") as fh:
        with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
            gz.write(buf.getvalue().encode())
    print(f"wrote {len(data)} rows from {data.station.nunique()} stations x 4 years")
    raw_user_file()


def raw_user_file() -> None:
    """300 consecutive hours of the user's station exactly as the source has them (row
    number, date parts, wind direction as text, station name, gaps): what a user really
    holds, for ``lw search --data`` on a raw file."""
    df = pd.read_csv(SRC / "PRSA_Data_Wanshouxigong_20130301-20170228.csv.gz")
    start = int(np.flatnonzero(((df.year == 2016) & (df.month == 10) & (df.day == 5)
                                & (df.hour == 4)).to_numpy())[0])
    part = df.iloc[start : start + 300]
    part.to_csv(OUT / "wanshouxigong_raw_2016-10.csv", index=False)
    print(f"wrote {len(part)} raw rows, {int(part.isna().any(axis=1).sum())} with a gap")


if __name__ == "__main__":
    main()
