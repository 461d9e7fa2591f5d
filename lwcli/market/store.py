"""The market store: atomic writes, one writers' lock, islands, immutable learnwares.

Correctness does not depend on the lock: a learnware becomes visible by one ``rename`` of a
fully written, fsynced staging directory, and its name is derived from its content, so two
processes racing to add the same package produce the same directory. The lock serialises the
read-modify-write of ``market.toml`` (island creation) and of the index.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from .. import __version__, _toml
from ..engine.kernels import KernelMetric
from ..errors import InvalidInputError, MarketError, NotFoundError, SpecError
from ..locks import exclusive
from ..specfile import Spec, spec_from_bytes
from .layout import ID_RE, RECORD_NAME, Layout
from .manifest import Manifest, manifest_from_text

SCHEMA_VERSION = 1
DAMAGED_HINT = ("run lw market verify to see all that is damaged; restore the learnware from "
                "a backup or resubmit its package")


def utcnow() -> str:
    """Now, in UTC; ``SOURCE_DATE_EPOCH`` (the reproducible-builds convention) pins it."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        return _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc).isoformat()
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to a unique temporary name, fsync, rename over ``path``, fsync the folder."""
    tmp_dir = tmp_dir or path.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f".{path.name}.{uuid.uuid4().hex}.incomplete"
    try:
        write_file_synced(tmp, data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def save_npy_synced(path: Path, arr) -> None:
    """``np.save`` without pickles, flushed and fsynced."""
    import numpy as np

    with open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


GENERATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
REPAIR = "lw market refresh --force"


def read_current(area: Path) -> str | None:
    """The generation that ``area/CURRENT`` names (derived data: index, anchors), if any.

    Strict, for readers: a ``CURRENT`` that cannot be read or does not hold a generation name
    (random bytes, a path) is damage, :class:`MarketError` (exit 5) naming the repair."""
    path = area / "CURRENT"
    try:
        # a symbolic link names its generation by its target
        if path.is_symlink():
            raw = os.fsencode(os.path.basename(os.path.normpath(os.readlink(path))))
        else:
            raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise MarketError(f"{path} is unreadable ({exc.strerror or exc})",
                          f"rebuild the {area.name} with {REPAIR}") from exc
    try:
        name = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        name = None
    if name == "":
        return None
    if name is None or not GENERATION_RE.match(name):
        raise MarketError(f"{path} is damaged: it should name a generation, it holds "
                          f"{len(raw)} bytes {raw[:16]!r}", f"rebuild the {area.name} with {REPAIR}")
    return name


def current_generation_in(area: Path) -> str | None:
    """Like :func:`read_current`, but a damaged ``CURRENT`` reads as none: for writers, which
    then publish a generation and replace it."""
    try:
        return read_current(area)
    except MarketError:
        return None


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def publish_generation(area: Path, name: str, write, tmp_dir: Path, *,
                       replace: bool = False) -> Path:
    """Publish a derived generation folder ``area/<name>`` and point ``area/CURRENT`` at it.

    ``write(stage)`` fills a staging folder in ``tmp_dir`` (same filesystem); the folder is
    fsynced and renamed into place (an existing generation of that name is kept: names are
    digests of content, unless ``replace``: then it is swapped out, to repair a damaged one),
    ``CURRENT`` is replaced atomically, and older generations are removed. Readers see the
    old generation or the new one, never a mix.
    """
    final = area / name
    if replace or not final.exists():
        stage = tmp_dir / f"{area.name}-{uuid.uuid4().hex}"
        stage.mkdir(parents=True)
        try:
            write(stage)
            _fsync_dir(stage)
            area.mkdir(parents=True, exist_ok=True)
            if replace and final.exists():
                old = tmp_dir / f"{area.name}-old-{uuid.uuid4().hex}"
                os.rename(final, old)
                shutil.rmtree(old, ignore_errors=True)
            try:
                os.rename(stage, final)
            except OSError:
                if not final.exists():
                    raise
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
    atomic_write(area / "CURRENT", (name + "\n").encode(), tmp_dir)
    for p in area.iterdir():
        if p.is_dir() and p.name.startswith("gen-") and p.name != name:
            shutil.rmtree(p, ignore_errors=True)
    return final


def record_checksum(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


QA_METRICS = ("weighted_accuracy", "weighted_r2")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def record_form_problems(rec: dict, lw_id: str) -> list[str]:
    """What is malformed in a learnware's record (its form: its values rest on its checksum)."""
    bad = []
    files = rec.get("files")
    if not (isinstance(files, dict) and files and all(
            isinstance(k, str) and "/" not in k and "\\" not in k and k not in ("", ".", "..")
            and k != RECORD_NAME and isinstance(v, str) and _SHA_RE.match(v)
            for k, v in files.items())):
        bad.append("files")
    if rec.get("id") != lw_id:
        bad.append("id")
    for key, typ in (("island", str), ("submitted_at", str), ("trusted_load", bool)):
        if not isinstance(rec.get(key), typ):
            bad.append(key)
    qa = rec.get("qa")
    if not isinstance(qa, dict):
        return bad + ["qa"]
    if not (type(qa.get("probes")) is int and qa["probes"] > 0):
        bad.append("qa.probes")
    metric, agree = qa.get("agreement_metric"), qa.get("agreement")
    if metric not in QA_METRICS:
        bad.append("qa.agreement_metric")
    if not (isinstance(agree, (int, float)) and not isinstance(agree, bool)
            and math.isfinite(agree) and agree <= 1.0
            and (agree >= 0.0 or metric != "weighted_accuracy")):
        bad.append("qa.agreement")
    if not (isinstance(qa.get("warnings"), list) and all(isinstance(w, str)
                                                         for w in qa["warnings"])):
        bad.append("qa.warnings")
    return bad


@dataclass(frozen=True)
class Island:
    id: str
    key: dict
    metric: KernelMetric
    created_at: str
    first_learnware: str

    def to_dict(self) -> dict:
        return {**self.key, "created_at": self.created_at,
                "first_learnware": self.first_learnware, "metric": self.metric.to_dict()}


class Market:
    """A market directory. Open one with :meth:`open` (existing) or :meth:`init` (create)."""

    def __init__(self, root: Path, config: dict) -> None:
        self.layout = Layout(root)
        self.root = root
        self.config = config
        self._records: dict[str, dict] = {}    # checked records (learnwares are immutable)

    # ------------------------------------------------------------------ open / init
    @classmethod
    def init(cls, root: str | Path) -> "Market":
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise MarketError(f"{root} exists and is not a directory", "choose another path")
        lay = Layout(root)
        for d in (lay.learnwares, lay.index, lay.anchors, lay.tmp):
            d.mkdir(parents=True, exist_ok=True)
        lay.lock.touch(exist_ok=True)
        with market_lock(lay):
            if not lay.market_toml.exists():
                cfg = {"schema_version": SCHEMA_VERSION, "created_at": utcnow(),
                       "created_with": f"lw {__version__}", "islands": {}}
                atomic_write(lay.market_toml, _toml.dumps(cfg).encode(), lay.tmp)
        return cls.open(root)

    @classmethod
    def open(cls, root: str | Path | None) -> "Market":
        if root is None or str(root) == "":
            raise NotFoundError("no market given", "pass --market DIR or set LW_MARKET")
        root = Path(root)
        lay = Layout(root)
        if not lay.market_toml.is_file():
            raise NotFoundError(f"{root} is not an lw market (no market.toml)",
                                f"create one with: lw market init {root}")
        return cls(root, cls._read_config(lay))

    @staticmethod
    def _read_config(lay: Layout) -> dict:
        try:
            cfg = _toml.loads(lay.market_toml.read_text(encoding="utf-8"))
        except (_toml.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise MarketError(f"{lay.market_toml} is corrupt: {exc}",
                              "restore it from a backup; lw market verify lists what else is wrong")
        if cfg.get("schema_version") != SCHEMA_VERSION:
            raise MarketError(f"{lay.market_toml} has schema_version {cfg.get('schema_version')!r},"
                              f" this lw reads {SCHEMA_VERSION}", "upgrade lw")
        cfg.setdefault("islands", {})
        return cfg

    def reload(self) -> None:
        self.config = self._read_config(self.layout)

    # ------------------------------------------------------------------ islands
    def islands(self) -> dict[str, Island]:
        out = {}
        for iid, d in self.config.get("islands", {}).items():
            try:
                key = {k: d[k] for k in ("data_type", "task", "objective", "features", "outputs")}
                out[iid] = Island(iid, key, KernelMetric.from_dict(d["metric"]),
                                  str(d.get("created_at", "")), str(d.get("first_learnware", "")))
            except (KeyError, TypeError, SpecError) as exc:
                raise MarketError(f"market.toml: island {iid!r} is malformed ({exc})",
                                  "restore market.toml from a backup") from exc
        return out

    def island(self, iid: str) -> Island:
        isl = self.islands().get(iid)
        if isl is None:
            raise NotFoundError(f"no island {iid!r} in this market",
                                f"known islands: {', '.join(self.islands()) or 'none'}")
        return isl

    def _add_island(self, island: Island) -> None:
        """Record a new island (caller holds the lock and has reloaded the config)."""
        cfg = dict(self.config)
        cfg["islands"] = dict(cfg.get("islands", {}))
        cfg["islands"][island.id] = island.to_dict()
        atomic_write(self.layout.market_toml, _toml.dumps(cfg).encode(), self.layout.tmp)
        self.config = cfg

    # ------------------------------------------------------------------ learnwares
    def ids(self) -> list[str]:
        if not self.layout.learnwares.is_dir():
            return []
        return sorted(p.name for p in self.layout.learnwares.iterdir()
                      if ID_RE.match(p.name) and p.is_dir())

    def has(self, lw_id: str) -> bool:
        return (self.layout.learnware(lw_id) / RECORD_NAME).is_file()

    def _require(self, lw_id: str) -> Path:
        if not ID_RE.match(lw_id or ""):
            raise NotFoundError(f"{lw_id!r} is not a learnware id (16 hex digits)",
                                "list ids with lw market ls")
        d = self.layout.learnware(lw_id)
        if not (d / RECORD_NAME).is_file():
            if d.is_dir():     # learnwares appear whole (one rename): this one was damaged since
                raise MarketError(f"learnware {lw_id} is damaged: its {RECORD_NAME} is missing "
                                  f"({d / RECORD_NAME})", DAMAGED_HINT)
            raise NotFoundError(f"no learnware {lw_id} in market {self.root}",
                                "list ids with lw market ls")
        return d

    def _read_raw(self, lw_id: str, name: str) -> bytes:
        path = self._require(lw_id) / name
        try:
            return path.read_bytes()
        except OSError as exc:
            how = "missing" if isinstance(exc, (FileNotFoundError, NotADirectoryError)) else \
                f"unreadable ({exc.strerror or exc})"
            raise MarketError(f"learnware {lw_id} is damaged: its {name} is {how} ({path})",
                              DAMAGED_HINT) from exc

    def _read(self, lw_id: str, name: str) -> bytes:
        """The bytes of one stored file of a learnware, checked against the sha256 its record
        holds before anything uses them. Stored learnwares are immutable and complete, so a
        missing, unreadable or altered file is damage to the market (exit 5), never a bug of
        lw nor a mistake of the caller."""
        if name == RECORD_NAME:
            return self._read_raw(lw_id, name)
        expected = self._recorded_files(lw_id).get(name)
        if expected is None:
            raise MarketError(f"learnware {lw_id} is damaged: its {RECORD_NAME} lists no file "
                              f"{name!r}", DAMAGED_HINT)
        data = self._read_raw(lw_id, name)
        if sha256(data) != expected:
            raise MarketError(f"learnware {lw_id} is damaged: its {name} does not match its "
                              f"recorded sha256 ({self.layout.learnware(lw_id) / name})",
                              DAMAGED_HINT)
        return data

    def _recorded_files(self, lw_id: str) -> dict[str, str]:
        files = self.record(lw_id).get("files")
        if not (isinstance(files, dict) and all(
                isinstance(k, str) and isinstance(v, str) and len(v) == 64
                for k, v in files.items())):
            raise MarketError(f"learnware {lw_id} is damaged: its {RECORD_NAME} has no valid "
                              "files table", DAMAGED_HINT)
        return files

    def _damaged(self, lw_id: str, name: str, exc: Exception) -> MarketError:
        detail = exc.message if isinstance(exc, InvalidInputError) else str(exc)
        return MarketError(f"learnware {lw_id} is damaged: its {name} is unreadable ({detail})",
                           DAMAGED_HINT)

    def record(self, lw_id: str) -> dict:
        """The learnware's record, checked against its own checksum (``record_sha256``)."""
        if lw_id in self._records:
            return self._records[lw_id]
        raw = self._read(lw_id, RECORD_NAME)
        try:
            rec = json.loads(raw.decode("utf-8"))
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as exc:   # JSONDecodeError, UnicodeDecodeError
            raise self._damaged(lw_id, RECORD_NAME, exc) from exc
        try:
            same = rec.get("record_sha256") == record_checksum(rec)
        except (TypeError, ValueError):
            same = False
        if not same:
            raise MarketError(f"learnware {lw_id} is damaged: its {RECORD_NAME} does not match "
                              f"its checksum ({self.layout.learnware(lw_id) / RECORD_NAME})",
                              DAMAGED_HINT)
        bad = record_form_problems(rec, lw_id)
        if bad:
            raise MarketError(f"learnware {lw_id} is damaged: its {RECORD_NAME} is malformed "
                              f"({', '.join(bad)})", DAMAGED_HINT)
        self._records[lw_id] = rec
        return rec

    def _manifest(self, lw_id: str, raw: bytes) -> Manifest:
        try:
            return manifest_from_text(raw.decode("utf-8"), f"learnware {lw_id}")
        except (UnicodeDecodeError, InvalidInputError) as exc:
            raise self._damaged(lw_id, "learnware.toml", exc) from exc

    def manifest(self, lw_id: str) -> Manifest:
        return self._manifest(lw_id, self._read(lw_id, "learnware.toml"))

    def spec(self, lw_id: str) -> Spec:
        raw = self._read(lw_id, "rkme.json")
        try:
            return spec_from_bytes(raw, f"learnware {lw_id}")
        except InvalidInputError as exc:
            raise self._damaged(lw_id, "rkme.json", exc) from exc

    def model_bytes(self, lw_id: str) -> bytes:
        return self._read(lw_id, self.manifest(lw_id).model_file)

    def manifest_and_model_files(self, lw_id: str) -> dict[str, bytes]:
        """``{"learnware.toml": ..., <model file>: ...}`` exactly as stored."""
        raw = self._read(lw_id, "learnware.toml")
        man = self._manifest(lw_id, raw)
        return {"learnware.toml": raw, man.model_file: self._read(lw_id, man.model_file)}

    def commit_learnware(self, lw_id: str, files: dict[str, bytes], record: dict) -> bool:
        """Make a learnware visible atomically. Returns False if it already existed.

        Files are written and fsynced into ``tmp/<unique>/``, then the folder is renamed to
        ``learnwares/<id>``. A crash before the rename leaves only an invisible staging folder.
        """
        target = self.layout.learnware(lw_id)
        if target.exists():
            return False
        stage = self.layout.tmp / f"stage-{lw_id}-{uuid.uuid4().hex}"
        stage.mkdir(parents=True)
        try:
            record = dict(record)
            record["files"] = {name: sha256(data) for name, data in sorted(files.items())}
            record["record_sha256"] = record_checksum(record)
            for name, data in files.items():
                write_file_synced(stage / name, data)
            write_file_synced(stage / RECORD_NAME,
                              (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
            _fsync_dir(stage)
            try:
                os.rename(stage, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return False
                raise
            _fsync_dir(self.layout.learnwares)
            return True
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)


def market_lock(layout: Layout, timeout: float | None = None):
    """Exclusive writers' lock on ``.lock`` (:func:`lwcli.locks.exclusive`), waiting up to
    ``timeout`` seconds (default 120); then :class:`~lwcli.errors.LockTimeoutError`, a
    :class:`MarketError` (exit code 5)."""
    return exclusive(layout.lock, timeout, hint="another lw process is writing; retry later")
