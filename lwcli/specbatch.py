"""Specifications in bulk: many data files -> one folder of specs, skipping what is up to date.

A folder of specs keeps its state in ``<folder>/.lw-specs.json``: for each spec, the data file
it came from (size, modification time, sha256), a digest of the parameters it was fitted with,
its island's metric digest and the sha256 of the spec file written. A spec is up to date when

- its file is still there with that sha256 (not edited, not truncated),
- the data file is unchanged: same size and modification time, or else the same sha256 (a
  ``touch`` or a fresh checkout does not force a refit),
- the parameters are the same (k, seed, target, model and manifest bytes, market, island),
- and, with a market, its island still has the same metric.

The state is rewritten atomically after every spec, under a lock (``.lw-specs.json.lock``,
waited for up to 120 s like the market's), so a batch that is stopped resumes where it was
and two runs on one folder do not lose each other's records. Specs are byte for byte what
``lw spec DATA -o FILE`` writes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Sequence

from .errors import NotFoundError, UsageError
from .io import SUPPORTED, data_stem, data_suffix
from .locks import exclusive
from .market.store import sha256_file

STATE = ".lw-specs.json"
STATE_FORMAT = "lw-spec-folder"
SUFFIX = ".rkme.json"


def read_list(path: str | Path) -> list[Path]:
    """Paths, one per line (blank lines and ``#`` comments skipped); ``-`` reads stdin.
    Relative paths are relative to the list file's folder (to the working folder for stdin)."""
    import sys

    if str(path) == "-":
        lines, base = sys.stdin.read().splitlines(), Path(".")
    else:
        p = Path(path)
        if not p.is_file():
            raise NotFoundError(f"list file {p} does not exist", "check the path")
        lines, base = p.read_text(encoding="utf-8").splitlines(), p.parent
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            q = Path(line)
            out.append(q if q.is_absolute() else base / q)
    return out


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Data files: folders give their data files (any of ``SUPPORTED``: ``.csv``, ``.csv.gz``,
    ``.parquet``, ``.npy``, ...; not recursive, sorted by name); files are taken as given.
    Duplicates are dropped."""
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file()
                           and data_suffix(q) in SUPPORTED and not q.name.startswith("."))
        elif p.exists():
            found = [p]
        else:
            raise NotFoundError(f"data path {p} does not exist", "check the path")
        for q in found:
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                out.append(q)
    if not out:
        raise NotFoundError("no data files to specify (folders are searched for "
                            f"{', '.join(SUPPORTED)} files)",
                            "pass data files or folders that hold some")
    return out


def output_names(inputs: Sequence[Path]) -> list[str]:
    """``<stem>.rkme.json`` for each input (``x.csv.gz`` -> ``x.rkme.json``); two inputs with
    the same stem are an error."""
    names = [data_stem(p) + SUFFIX for p in inputs]
    clash: dict[str, list[str]] = {}
    for p, n in zip(inputs, names):
        clash.setdefault(n, []).append(str(p))
    dup = {n: ps for n, ps in clash.items() if len(ps) > 1}
    if dup:
        n, ps = next(iter(dup.items()))
        raise UsageError(f"{len(ps)} data files would all write {n}: {', '.join(ps[:3])}",
                         "give the files different names, or run them into different --out-dir")
    return names


def params_digest(params: dict) -> str:
    canon = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


class SpecFolder:
    """The state of one output folder (see the module docstring)."""

    def __init__(self, root: str | Path, lock_timeout: float | None = None) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        if not self.root.is_dir():
            raise NotFoundError(f"output folder {self.root} does not exist", "create it first")
        self.state_path = self.root / STATE

    def _load(self) -> dict:
        try:
            d = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}              # unreadable state: everything is refitted and recorded anew
        if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
            return {}
        specs = d.get("specs")
        return specs if isinstance(specs, dict) else {}

    def _locked(self):
        """The folder's state lock, waiting up to ``lock_timeout`` seconds (default 120, as
        the market's lock); then :class:`~lwcli.errors.LockTimeoutError` (exit code 5)."""
        return exclusive(self.root / (STATE + ".lock"), self.lock_timeout,
                         hint="another lw spec run is writing to this folder; retry later")

    def is_current(self, name: str, data: Path, digest: str, metric_ok) -> bool:
        """Whether ``name`` is an up-to-date spec of ``data`` with these parameters.
        ``metric_ok(island, metric_digest)`` says whether the island's metric is unchanged."""
        rec = self._load().get(name)
        out = self.root / name
        if not isinstance(rec, dict) or rec.get("params") != digest or not out.is_file():
            return False
        try:
            st = data.stat()
            if st.st_size != rec.get("data_size"):
                return False
            if st.st_mtime_ns != rec.get("data_mtime_ns") and \
                    sha256_file(data) != rec.get("data_sha256"):
                return False
            if sha256_file(out) != rec.get("spec_sha256"):
                return False
        except OSError:
            return False
        return bool(metric_ok(rec.get("island"), rec.get("metric_digest")))

    def record(self, name: str, data: Path, digest: str, spec) -> Path:
        """Write the spec file and its record, each atomically, under the folder's lock."""
        from .market.store import atomic_write

        body = spec.to_bytes()
        st = data.stat()
        rec = {"data": str(data), "data_size": st.st_size, "data_mtime_ns": st.st_mtime_ns,
               "data_sha256": sha256_file(data), "params": digest,
               "island": spec.island, "metric_digest": spec.rkme.metric.digest(),
               "spec_sha256": hashlib.sha256(body).hexdigest()}
        out = self.root / name
        with self._locked():
            atomic_write(out, body)
            specs = self._load()
            specs[name] = rec
            atomic_write(self.state_path, (json.dumps(
                {"format": STATE_FORMAT, "version": 1, "specs": specs}, indent=1,
                sort_keys=True) + "\n").encode())
        return out
