"""The market store: atomic writes, one writers' lock, islands, immutable learnwares.

A learnware becomes visible by one ``rename`` of a fully written, fsynced staging directory,
and its name is derived from its content, so two processes racing to add the same package
produce the same directory. The lock serialises the read-modify-write of ``market.toml``
(island creation) and of the index.

Crashes. Everything lw creates in ``tmp/`` it creates while holding the writers' lock, so
whoever holds the lock knows that whatever is in ``tmp/`` was left by a process that died
(an entry ``X`` with a held owner lock ``X.owner`` excepted). A submit writes an intent record
``tmp/<id>.intent`` before it changes anything; every writer, once it holds the lock, and
:meth:`Market.open` when the market is writable and the lock is free, first runs
:meth:`Market.recover`: a learnware whose submit died after its rename is indexed (completed),
an island whose first learnware never arrived is removed (undone), then stale temporaries and
unused generations are removed and an empty ``tmp/`` with them. Derived generations
(index, anchors) go live by one atomic replacement of ``CURRENT``; a generation folder is never
replaced in place.

Storage faults (full disk, read-only filesystem, no permission) are :class:`StorageError`
(exit 9) naming the cause and the path (:func:`lwcli.faults.storage_guard`).
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

from contextlib import contextmanager

from .. import __version__, _toml
from ..engine.kernel import KernelMetric
from ..errors import InvalidInputError, MarketError, NotFoundError, SpecError
from ..faults import crash_point, point, storage_guard
from ..locks import exclusive, held_by_another
from ..settings import source_date_epoch
from ..specfile import Spec, spec_from_bytes
from .layout import (ANCHORS, GENERATION_RE, ID_RE, INDEX, INTENT_SUFFIX, LOCK, MANIFEST_NAME,
                     OWNER_SUFFIX, RECORD_NAME, SPEC_NAME, TMP, Layout, current_file,
                     forced_generation_name, unique_entry)
from .manifest import Manifest, manifest_from_text

SCHEMA_VERSION = 1
DAMAGED_HINT = ("run lw market verify to see all that is damaged; restore the learnware from "
                "a backup or resubmit its package")


def utcnow() -> str:
    """Now, in UTC; ``SOURCE_DATE_EPOCH`` (the reproducible-builds convention) pins it."""
    epoch = source_date_epoch()
    if epoch is not None:
        return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).isoformat()
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    with storage_guard(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_file_synced(path: Path, data: bytes) -> None:
    with storage_guard(path):
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to a unique temporary name, fsync, rename over ``path``, fsync the folder.
    A storage fault is :class:`StorageError` naming ``path``; ``path`` is then unchanged."""
    path = Path(path)
    tmp_dir = Path(tmp_dir) if tmp_dir is not None else path.parent
    with storage_guard(path):
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f".{path.name}.{uuid.uuid4().hex}.incomplete"
        try:
            write_file_synced(tmp, data)
            point("atomic-write:written", path)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(path.parent)


def write_output(path: str | Path, data: bytes) -> Path:
    """Write a user's output file (``-o``, ``--out``, ``--save-model``): atomically by
    :func:`atomic_write` where the path is, or will be, a regular file; through a symbolic
    link to its target (the link stays); in place into a FIFO or a device (``/dev/stdout``),
    which a rename would replace by a regular file. Returns the path written.

    Errors: a folder is :class:`~lwcli.errors.UsageError` (exit 2); a missing parent folder
    :class:`NotFoundError` (exit 3); any other OS refusal :class:`~lwcli.errors.StorageError`
    (exit 9) naming the path."""
    import stat

    from ..errors import StorageError, UsageError

    p = Path(path)
    try:
        st = os.stat(p)                     # follows a symbolic link
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as exc:
        raise StorageError(f"cannot write {p}: {exc.strerror or exc}",
                           "choose another output path") from exc
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"output {p} is a folder, expected a file name",
                         f"name a file inside it, e.g. {p / 'out'}")
    try:
        if st is not None and not stat.S_ISREG(st.st_mode):     # FIFO, device, socket
            with storage_guard(p):
                with open(p, "wb") as fh:
                    fh.write(data)
            return p
        real = Path(os.path.realpath(p))
        if not real.parent.is_dir():
            raise NotFoundError(f"output folder {real.parent} does not exist", "create it first")
        atomic_write(real, data)
    except OSError as exc:                  # what storage_guard does not name (e.g. in /proc)
        raise StorageError(f"cannot write {p}: {exc.strerror or exc}",
                           "choose another output path") from exc
    return p


def save_npy_synced(path: Path, arr) -> None:
    """``np.save`` without pickles, flushed and fsynced."""
    import numpy as np

    with storage_guard(path):
        with open(path, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


REPAIR_HINT = "repair it with lw market refresh --force"


def current_generation_in(area: Path, *, strict: bool = True) -> str | None:
    """The generation that ``area/CURRENT`` names (derived data: index, anchors), if any.

    A ``CURRENT`` that does not name a generation (random bytes, a foreign path) is damage:
    :class:`MarketError` (exit 5) with the repair command, or None when not ``strict`` (a
    writer about to replace it)."""
    cur = current_file(area)
    try:
        if cur.is_symlink():           # a symbolic link names its generation by its target
            raw = os.fsencode(os.path.basename(os.path.normpath(os.readlink(cur))))
        else:
            raw = cur.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if not strict:
            return None
        raise MarketError(f"{cur} is unreadable ({exc.strerror or exc})", REPAIR_HINT) from exc
    name = raw.decode("utf-8", "replace").strip()
    if not name:
        return None
    if not GENERATION_RE.match(name):
        if not strict:
            return None
        shown = name[:40].encode("ascii", "backslashreplace").decode()
        raise MarketError(f"{cur} is damaged: it should name a generation (gen-<digest>), "
                          f"it holds {shown!r}", REPAIR_HINT)
    return name


def read_current(area: Path) -> str | None:
    """:func:`current_generation_in`, strict: for readers, damage is exit 5."""
    return current_generation_in(area, strict=True)


def stored_json(path: Path) -> dict | None:
    """A derived JSON document (a catalog, anchors.json) as stored: None when it is missing,
    unreadable or not a JSON object (the caller then rebuilds, never trusts it)."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def publish_generation(area: Path, name: str, write, tmp_dir: Path, *,
                       replace: bool = False) -> Path:
    """Publish a derived generation ``area/<name>`` (``name`` is the digest of its inputs)
    and point ``area/CURRENT`` at it, in one atomic switch.

    ``write(stage)`` fills a staging folder in ``tmp_dir`` (same filesystem); the folder is
    fsynced and renamed to a name that does not exist yet: ``<name>``, or with ``replace`` (a
    forced rebuild, to repair a damaged generation) ``<name>-<unique suffix>``, so a live
    generation is never touched. Then ``CURRENT`` is replaced atomically and the other
    generations are removed. Readers see the old generation or the new one, never a mix, and
    a crash at any point leaves ``CURRENT`` naming a whole generation. Returns the folder.
    """
    final = area / (forced_generation_name(name) if replace else name)
    if replace or not final.is_dir():    # an existing one was renamed in whole: reuse it
        stage = unique_entry(tmp_dir, area.name)
        with storage_guard(stage):
            stage.mkdir(parents=True)
        try:
            write(stage)
            _fsync_dir(stage)
            point("generation:staged", stage)
            with storage_guard(final):
                area.mkdir(parents=True, exist_ok=True)
                os.rename(stage, final)
            _fsync_dir(area)
            point("generation:renamed", final)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
    atomic_write(current_file(area), (final.name + "\n").encode(), tmp_dir)
    crash_point("generation:switched")
    _remove_generations(area, keep=final.name)
    return final


def _remove_generations(area: Path, keep: str) -> None:
    """Remove every generation folder of ``area`` but ``keep`` (readers that still map an
    old one keep their open files)."""
    if not area.is_dir():
        return
    for p in area.iterdir():
        if p.name != keep and GENERATION_RE.match(p.name) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


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
        self.recovered: dict = {}      # what opening it completed or undid (see recover)
        self._records: dict[str, dict] = {}    # checked records (learnwares are immutable)

    # ------------------------------------------------------------------ open / init
    @property
    def display(self) -> str:
        """The market as messages name it: the path as given (a URL on object storage)."""
        return str(self.root)

    @property
    def location(self) -> str:
        """Where the market is, as a user names it: its absolute path (a URL for a market
        on object storage): what a piece of batch work opens in its worker."""
        return str(self.root.resolve())

    @classmethod
    def init(cls, root: str | Path) -> "Market":
        from .remote import RemoteMarket, is_remote

        if is_remote(root):
            return RemoteMarket.init(root)
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise MarketError(f"{root} exists and is not a directory", "choose another path")
        lay = Layout(root)
        with storage_guard(root):
            for d in (lay.learnwares, lay.index, lay.anchors):
                d.mkdir(parents=True, exist_ok=True)
            if not lay.market_toml.exists():
                lay.lock.touch(exist_ok=True)
                with market_lock(lay):
                    if not lay.market_toml.exists():
                        cfg = {"schema_version": SCHEMA_VERSION, "created_at": utcnow(),
                               "created_with": f"lw {__version__}", "islands": {}}
                        try:
                            atomic_write(lay.market_toml, _toml.dumps(cfg).encode(), lay.tmp)
                        finally:
                            _rmdir_if_empty(lay.tmp)
        return cls.open(root)

    @classmethod
    def open(cls, root: str | Path | None, *, recover: bool = True) -> "Market":
        """Open an existing market. With ``recover`` (the default), a writable market whose
        lock is free is first tidied after a writer that died (:meth:`recover`); readers never
        fail for that: on a read-only market, or when another process holds the lock, or
        when tidying fails, the market is opened as it is. ``root`` None means
        ``$LW_MARKET`` (:func:`lwcli.settings.market`), as the CLI's ``--market`` does."""
        from ..settings import market as market_setting

        if root is None or str(root) == "":
            root = market_setting()
        if root is None:
            raise NotFoundError("no market given", "pass --market DIR or set LW_MARKET")
        from .remote import RemoteMarket, is_remote

        if is_remote(root):
            return RemoteMarket.open(root, recover=recover)
        root = Path(root)
        lay = Layout(root)
        if not lay.market_toml.is_file():
            raise NotFoundError(f"{root} is not an lw market (no market.toml)",
                                f"create one with: lw market init {root}")
        mk = cls(root, cls._read_config(lay))
        if recover:
            mk._recover_if_free()
        return mk

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

    def add_island(self, island: Island) -> None:
        """Record a new island in market.toml, written atomically (caller holds the lock and
        has reloaded the config). Errors: :class:`~lwcli.errors.StorageError` (exit 9) on a
        storage fault, market.toml then unchanged."""
        cfg = dict(self.config)
        cfg["islands"] = dict(cfg.get("islands", {}))
        cfg["islands"][island.id] = island.to_dict()
        atomic_write(self.layout.market_toml, _toml.dumps(cfg).encode(), self.layout.tmp)
        self.config = cfg

    # ------------------------------------------------------------------ learnwares
    def ids(self) -> list[str]:
        """The stored learnwares' ids, sorted: one listing of ``learnwares/`` (a folder's type
        comes with the listing on most filesystems, so nothing inside is read)."""
        try:
            with os.scandir(self.layout.learnwares) as it:
                return sorted(e.name for e in it if ID_RE.match(e.name) and e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def has(self, lw_id: str) -> bool:
        return self.layout.record(lw_id).is_file()

    def _require(self, lw_id: str) -> Path:
        if not ID_RE.match(lw_id or ""):
            raise NotFoundError(f"{lw_id!r} is not a learnware id (16 hex digits)",
                                "list ids with lw market ls")
        d = self.layout.learnware(lw_id)
        if not self.layout.record(lw_id).is_file():
            if d.is_dir():     # learnwares appear whole (one rename): this one was damaged since
                raise MarketError(f"learnware {lw_id} is damaged: its {RECORD_NAME} is missing "
                                  f"({self.layout.record(lw_id)})", DAMAGED_HINT)
            if self._indexed(lw_id):   # listed by ls and search, gone from learnwares/
                raise MarketError(f"learnware {lw_id} is damaged: the index lists it, but its "
                                  f"folder {d} is missing", DAMAGED_HINT)
            raise NotFoundError(f"no learnware {lw_id} in market {self.display}",
                                "list ids with lw market ls")
        return d

    def _indexed(self, lw_id: str) -> bool:
        """Whether the live index lists ``lw_id`` (False when there is no readable index)."""
        from .index import load_index

        try:
            idx = load_index(self)
            return idx is not None and idx.row_of(lw_id) is not None
        except Exception:      # noqa: BLE001 - a damaged index is reported by its own readers
            return False

    def _read_raw(self, lw_id: str, name: str) -> bytes:
        self._require(lw_id)
        path = self.layout.learnware_file(lw_id, name)
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
                              f"recorded sha256 ({self.layout.learnware_file(lw_id, name)})",
                              DAMAGED_HINT)
        return data

    def check_files(self, lw_id: str) -> None:
        """Every file the learnware's record lists is present and matches its recorded sha256,
        else :class:`MarketError` (exit 5) naming the first that does not."""
        for name in sorted(self._recorded_files(lw_id)):
            self._read(lw_id, name)

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
                              f"its checksum ({self.layout.record(lw_id)})",
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
            raise self._damaged(lw_id, MANIFEST_NAME, exc) from exc

    def manifest(self, lw_id: str) -> Manifest:
        return self._manifest(lw_id, self._read(lw_id, MANIFEST_NAME))

    def spec(self, lw_id: str) -> Spec:
        raw = self._read(lw_id, SPEC_NAME)
        try:
            return spec_from_bytes(raw, f"learnware {lw_id}")
        except InvalidInputError as exc:
            raise self._damaged(lw_id, SPEC_NAME, exc) from exc

    def model_bytes(self, lw_id: str) -> bytes:
        return self._read(lw_id, self.manifest(lw_id).model_file)

    def learnware_files(self, lw_id: str) -> dict[str, bytes]:
        """``{"learnware.toml": ..., <model file>: ..., "rkme.json": ...}`` exactly as
        stored (what a saved reuser carries of each learnware)."""
        raw = self._read(lw_id, MANIFEST_NAME)
        man = self._manifest(lw_id, raw)
        return {MANIFEST_NAME: raw, man.model_file: self._read(lw_id, man.model_file),
                SPEC_NAME: self._read(lw_id, SPEC_NAME)}

    def commit_learnware(self, lw_id: str, files: dict[str, bytes], record: dict) -> bool:
        """Make a learnware visible atomically. Returns False if it already existed.

        Files are written and fsynced into ``tmp/<unique>/``, then the folder is renamed to
        ``learnwares/<id>``. A crash before the rename leaves only an invisible staging folder.
        """
        target = self.layout.learnware(lw_id)
        if target.exists():
            return False
        stage = self.layout.tmp_entry(f"stage-{lw_id}")
        with storage_guard(stage):
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
            point("commit:staged", stage)
            try:
                with storage_guard(target):
                    self.layout.learnwares.mkdir(exist_ok=True)
                    os.rename(stage, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return False
                raise
            point("commit:renamed", target)
            _fsync_dir(self.layout.learnwares)
            return True
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)

    # ------------------------------------------------------------------ crashes, housekeeping
    def check_layout(self) -> None:
        """The market's own entries are of their kind (folders, the lock a file), else
        :class:`MarketError` (exit 5) naming the entry: a write would fail half-way on it."""
        lay = self.layout
        for path, want_dir in ((lay.learnwares, True), (lay.index, True), (lay.anchors, True),
                               (lay.tmp, True), (lay.lock, False)):
            if not os.path.lexists(path):
                continue
            if path.is_dir() != want_dir:
                want, got = ("a folder", "a file") if want_dir else ("a file", "a folder")
                raise MarketError(f"the market is damaged: {path} should be {want}, it is {got}",
                                  f"move it aside (lw recreates {path.name} when it is absent)"
                                  if path.name in (TMP, LOCK, INDEX, ANCHORS) else
                                  "restore it from a backup")

    @contextmanager
    def writing(self, timeout: float | None = None, device=None):
        """Hold the writers' lock for a write: reload the config, complete or undo what a
        writer that died left (:meth:`recover`), and map storage faults to exit 9. On the way
        out, what a failed write left in ``tmp/`` (or an unused generation) is removed, and an
        empty ``tmp/``."""
        self.check_layout()
        with storage_guard(self.root):
            with self.locked(timeout):
                try:
                    self.reload()
                    self.recover(device)
                    yield self
                except BaseException:
                    try:
                        self.collect_garbage()
                    except Exception:       # noqa: BLE001 - the next writer collects it
                        pass
                    raise
                finally:
                    _rmdir_if_empty(self.layout.tmp)

    def transact(self, fn, *, device=None):
        """``fn()`` under :meth:`writing`, returned. (A market on object storage starts it
        again when another writer swapped a pointer first: :mod:`lwcli.market.remote`.)"""
        with self.writing(device=device):
            return fn()

    def locked(self, timeout: float | None = None):
        """The writers' lock alone (:func:`market_lock`), without :meth:`writing`'s reload and
        recovery: for a tool that fills a market it just created (the benchmark's synthetic
        markets). Errors: :class:`~lwcli.errors.LockTimeoutError` (exit 5) after ``timeout``
        seconds (default 120)."""
        return market_lock(self.layout, timeout)

    def write_intent(self, lw_id: str, island: str, island_created: bool) -> None:
        """Record, before anything changes, what a submit is about to do (caller holds the
        lock). :meth:`recover` completes or undoes it if the submit dies."""
        body = {"op": "submit", "id": lw_id, "island": island, "island_created": island_created,
                "pid": os.getpid(), "at": utcnow()}
        path = self.layout.intent(lw_id)
        with storage_guard(path):
            self.layout.tmp.mkdir(exist_ok=True)
        atomic_write(path, (json.dumps(body, sort_keys=True) + "\n").encode(), self.layout.tmp)

    def clear_intent(self, lw_id: str) -> None:
        path = self.layout.intent(lw_id)
        with storage_guard(path):
            path.unlink(missing_ok=True)
        _fsync_dir(self.layout.tmp)

    def undo_submit(self, lw_id: str, island: str, island_created: bool,
                    market_toml: bytes | None = None) -> None:
        """Take a submit back (caller holds the lock): the learnware folder goes (moved out
        first, so it disappears in one rename), and the island if this submit created it
        (``market_toml``: the file's bytes before, restored as they were). Then the intent
        goes."""
        if not ID_RE.match(lw_id or ""):
            raise MarketError(f"refusing to undo a submit of {lw_id!r}: not a learnware id",
                              "remove the stray file from the market's tmp/ folder")
        target = self.layout.learnware(lw_id)
        if target.exists():
            gone = self.layout.tmp_entry(f"undo-{lw_id}")
            with storage_guard(target):
                self.layout.tmp.mkdir(exist_ok=True)
                os.rename(target, gone)
            _fsync_dir(self.layout.learnwares)
            shutil.rmtree(gone, ignore_errors=True)
        if island_created:
            self.reload()
            if island in self.config.get("islands", {}):
                if market_toml is None:
                    cfg = dict(self.config)
                    cfg["islands"] = {k: v for k, v in cfg["islands"].items() if k != island}
                    market_toml = _toml.dumps(cfg).encode()
                atomic_write(self.layout.market_toml, market_toml, self.layout.tmp)
                self.reload()
        self.clear_intent(lw_id)

    def pending_intents(self) -> list[str]:
        tmp = self.layout.tmp
        try:
            return sorted(p.name[:-len(INTENT_SUFFIX)] for p in tmp.iterdir()
                          if p.name.endswith(INTENT_SUFFIX))
        except OSError:
            return []

    def needs_recovery(self) -> bool:
        """Whether a writer that died left something (cheap: three folder listings)."""
        lay = self.layout
        if lay.tmp.exists():           # even empty: tmp/ exists only while a write is under way
            return True
        for area in (lay.index, lay.anchors):
            try:
                cur = current_generation_in(area, strict=False)
                if cur is not None and any(GENERATION_RE.match(p.name) and p.name != cur
                                           for p in area.iterdir()):
                    return True
            except OSError:
                pass
        return False

    def recover(self, device=None) -> dict:
        """Complete or undo what writers that died left (caller holds the lock).

        For each intent record: a learnware that was renamed in is indexed (the submit is
        completed); otherwise an island that the submit created is removed again (undone).
        Then every other entry of ``tmp/`` is removed (all of them were made under the lock,
        by processes now dead; an entry whose ``<name>.owner`` lock is still held is kept),
        and the generations of ``index/`` and ``anchors/`` that ``CURRENT`` does not name.
        Returns what was done."""
        done = {"completed": [], "undone": [], "removed": []}
        for lw_id in self.pending_intents():
            path = self.layout.intent(lw_id)
            if not ID_RE.match(lw_id):
                # not lw's (".intent", "..intent"): its name must never become a path to act
                # on (an empty id is learnwares/ itself); it is removed as any stray temporary
                with storage_guard(path):
                    _remove(path)
                done["removed"].append(str(path.relative_to(self.root)))
                continue
            try:
                intent = json.loads(path.read_text(encoding="utf-8"))
                island, created = str(intent["island"]), bool(intent["island_created"])
                if intent.get("id") != lw_id:
                    raise ValueError("the record names another learnware")
            except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
                island, created = "", False          # torn or foreign: nothing to undo
            if self.has(lw_id):
                from .index import add_to_index

                add_to_index(self, lw_id, device)
                self.clear_intent(lw_id)
                done["completed"].append(lw_id)
            else:
                self.undo_submit(lw_id, island, created)
                done["undone"].append(lw_id)
        done["removed"] += self.collect_garbage()
        crash_point("recover:collected")
        return done

    def collect_stale_generations(self) -> list[str]:
        """Generations no reader can reach any more, removed (a local market removes them
        as it publishes: nothing to do; object storage: :mod:`lwcli.market.remote`)."""
        return []

    def collect_garbage(self) -> list[str]:
        """Remove stale temporaries and unused generations (caller holds the lock)."""
        lay = self.layout
        removed = []
        if lay.tmp.is_dir():
            entries = {p.name: p for p in lay.tmp.iterdir()}
            for name, p in sorted(entries.items()):
                if name.endswith(INTENT_SUFFIX):
                    continue
                owner = name if name.endswith(OWNER_SUFFIX) else name + OWNER_SUFFIX
                if owner in entries and held_by_another(lay.tmp / owner):
                    continue                       # a live process still uses it
                with storage_guard(p):
                    _remove(p)
                removed.append(str(p.relative_to(self.root)))
            _rmdir_if_empty(lay.tmp)
        for area in (lay.index, lay.anchors):
            cur = current_generation_in(area, strict=False)
            if cur is None or not (area / cur).is_dir() or not area.is_dir():
                continue                           # only a refresh --force can tell
            for p in area.iterdir():
                if GENERATION_RE.match(p.name) and p.name != cur:
                    with storage_guard(p):
                        _remove(p)
                    removed.append(str(p.relative_to(self.root)))
        return removed

    def _recover_if_free(self) -> None:
        """:meth:`recover` if there is something to do, the market is writable and no other
        process holds the lock; never fails (readers must work on any market)."""
        try:
            if not self.needs_recovery() or not os.access(self.root, os.W_OK) \
                    or not os.access(self.layout.lock, os.W_OK):
                return
            with self.locked(timeout=0):
                self.reload()
                self.recovered = self.recover()
                _rmdir_if_empty(self.layout.tmp)
            self.reload()
        except Exception:     # noqa: BLE001 - best effort; the next writer recovers for sure
            pass



def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def market_lock(layout: Layout, timeout: float | None = None):
    """Exclusive writers' lock on ``.lock`` (:func:`lwcli.locks.exclusive`), waiting up to
    ``timeout`` seconds (default 120); then :class:`~lwcli.errors.LockTimeoutError`, a
    :class:`MarketError` (exit code 5)."""
    return exclusive(layout.lock, timeout, hint="another lw process is writing; retry later")
