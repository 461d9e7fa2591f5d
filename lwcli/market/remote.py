"""A market on object storage (``--market s3://bucket/prefix``, any fsspec URL with
conditional writes), through a local copy.

The objects keep the directory layout of :mod:`lwcli.market.layout` under the URL's prefix.
lw works on a local copy of the market in its cache (:func:`lwcli.settings.cache_dir`,
``markets/<digest of the URL>/``), with the same code as a local market, and exchanges with
the store only what the layout says may change how:

- **immutable files** (a learnware's files, a derived generation's files) are fetched once,
  when first read, and kept; the island arrays of the live index are then memory-mapped from
  the copy. They are written *create-only* (``If-None-Match: *``): a second writer of the same
  learnware (same id, same bytes) is a no-op, never a corruption; a learnware's
  ``record.json`` goes last, so a learnware exists for readers only once it is whole.
- **mutable pointers** (``market.toml``, ``index/CURRENT``, ``anchors/CURRENT``) are read at
  each open, with their ETags, and written by *compare-and-swap*: ``If-Match`` the ETag read
  (``If-None-Match: *`` for a first one). A write (submit, refresh) pulls them under the copy's
  lock, works on the copy, uploads what it created (generations before the pointers that name
  them) and swaps the pointers; when another machine swapped one meanwhile, the write starts
  again from the new state (:meth:`RemoteMarket.transact`), up to :data:`ATTEMPTS` times. So
  two writers never lose each other's work, and readers see one whole generation.
- ``lw market verify`` downloads every object afresh into a scratch folder and checks that:
  an object changed in the store is found, whatever the cache holds.

No locks, intents or ``tmp/`` exist in the store: a submit that dies before its record is
uploaded leaves invisible files (the same submit again completes them); one that dies after
leaves a stored learnware the index lacks, which the next ``lw market refresh`` (or submit)
indexes. Superseded generations are removed by ``lw market refresh`` once an hour old.

Credentials and endpoints are the ecosystem's own: the AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for an S3-compatible server, ...) and fsspec's
configuration; s3fs needs ``pip install 'lwcli[s3]'``.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import (ConcurrentWriteError, MarketError, MissingExtraError, NotFoundError,
                      StorageError, UsageError)
from .layout import (ANCHORS, CURRENT, GENERATION_RE, ID_RE, INDEX, LEARNWARES, MARKET_TOML,
                     OWNER_SUFFIX, RECORD_NAME)
from .store import Market, _rmdir_if_empty, atomic_write, storage_guard

#: times a write starts again after another writer swapped a pointer first
ATTEMPTS = 8
#: a superseded generation younger than this stays (a reader may be fetching it)
GARBAGE_AGE_S = 3600.0
S3_EXTRA = "pip install 'lwcli[s3]'"


#: the object stores lw's markets are tested on (S3 and S3-compatible servers)
PROTOCOLS = ("s3", "s3a")


def is_remote(root) -> bool:
    """Whether ``root`` names an object-store market (a URL other than ``file://``)."""
    text = str(root)
    return "://" in text and not text.startswith("file://")


def checked_url(root) -> str:
    """``root`` as a market URL, ``s3://bucket[/prefix]`` without a trailing ``/``; a
    :class:`UsageError` (exit 2) for another protocol, no bucket, or ``.``/``..`` in it."""
    text = str(root)
    protocol, _, rest = text.partition("://")
    parts = [p for p in rest.split("/") if p]
    if protocol not in PROTOCOLS:
        raise UsageError(f"--market {text!r}: lw keeps markets on {', '.join(PROTOCOLS)}:// "
                         "object storage (S3 and S3-compatible servers) or in a directory",
                         "use s3://bucket/prefix (AWS_ENDPOINT_URL for another server), or a "
                         "local path")
    if not rest.split("/")[0]:
        raise UsageError(f"--market {text!r} names no bucket", "use s3://bucket/prefix")
    if any(p in (".", "..") for p in parts):
        raise UsageError(f"--market {text!r} holds '.' or '..' (an object store keeps them "
                         "as they are)", "give the prefix without them")
    return f"{protocol}://{'/'.join(parts)}"


class ObjectStore:
    """The market's objects under ``url`` (``s3://bucket/prefix``), through fsspec: reads,
    create-only writes and compare-and-swap on ETags. Store faults become lw's errors."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url.rstrip("/")
        protocol = self.url.split("://", 1)[0]
        try:
            # a fresh instance: fsspec caches them by arguments, not by the environment
            # (credentials, AWS_ENDPOINT_URL) a long-lived process may change
            self.fs, self.base = fsspec.core.url_to_fs(self.url, skip_instance_cache=True)
        except ImportError as exc:
            raise MissingExtraError(f"markets at {protocol}:// need a library that is not "
                                    f"installed ({exc})", f"install it with {S3_EXTRA}") from None
        except ValueError as exc:
            raise NotFoundError(f"cannot open {self.url}: {exc}",
                                "check the URL (e.g. s3://bucket/prefix)") from None
        self.base = self.base.rstrip("/")

    def path(self, key: str) -> str:
        """The store's path of ``key``; fsspec's listing cache is dropped first (other
        machines write to the store: a listing is never reused)."""
        self.fs.invalidate_cache()
        return f"{self.base}/{key}"

    @contextmanager
    def _guard(self, key: str, verb: str):
        """Store faults as lw errors naming the object: no credentials or no permission,
        no bucket (exit 3), an endpoint that does not answer (exit 9)."""
        try:
            yield
        except (MarketError, NotFoundError, StorageError, FileNotFoundError):
            raise
        except PermissionError as exc:
            raise StorageError(f"could not {verb} {self.url}/{key}: access denied ({exc})",
                               "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the "
                               "store's own credentials) for a user that may") from None
        except Exception as exc:       # noqa: BLE001 -- botocore's and aiohttp's errors
            name = type(exc).__name__
            text = str(exc)
            if "NoCredentials" in name or "Unable to locate credentials" in text:
                raise StorageError(f"could not {verb} {self.url}/{key}: no credentials for the "
                                   "object store", "set AWS_ACCESS_KEY_ID and "
                                   "AWS_SECRET_ACCESS_KEY, or an AWS profile") from None
            if "NoSuchBucket" in text or "NoSuchBucket" in name:
                raise NotFoundError(f"the bucket of {self.url} does not exist",
                                    "create it first, or check the URL") from None
            raise StorageError(f"could not {verb} {self.url}/{key}: {name}: {text}",
                               "check AWS_ENDPOINT_URL and that the store answers") from None

    def get(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when there is none."""
        p = self.path(key)
        with self._guard(key, "read"):
            try:
                info = self.fs.info(p)
                data = self.fs.cat_file(p)
            except FileNotFoundError:
                return None
        return data, str(info.get("ETag") or info.get("etag") or "")

    def read(self, key: str) -> bytes | None:
        p = self.path(key)
        with self._guard(key, "read"):
            try:
                return self.fs.cat_file(p)
            except FileNotFoundError:
                return None

    def exists(self, key: str) -> bool:
        with self._guard(key, "read"):
            return bool(self.fs.exists(self.path(key)))

    def put_new(self, key: str, data: bytes) -> bool:
        """Create the object; False (nothing written) when it exists already."""
        with self._guard(key, "write"):
            try:
                self.fs.pipe_file(self.path(key), data, mode="create")
            except (FileExistsError, OSError) as exc:
                if _precondition_failed(exc):
                    return False
                raise
        return True

    def swap(self, key: str, data: bytes, etag: str | None) -> bool:
        """Replace the object if its ETag is still ``etag`` (create it if ``etag`` is None
        and there is none); False when another writer changed it first."""
        with self._guard(key, "write"):
            try:
                if etag is None:
                    self.fs.pipe_file(self.path(key), data, mode="create")
                else:
                    self.fs.pipe_file(self.path(key), data, IfMatch=etag)
            except (FileExistsError, OSError) as exc:
                if _precondition_failed(exc):
                    return False
                raise
        return True

    def keys(self, prefix: str) -> list[str]:
        """Every object key under ``prefix`` (relative to the market)."""
        with self._guard(prefix, "list"):
            try:
                found = self.fs.find(self.path(prefix))
            except FileNotFoundError:
                return []
        base = self.base + "/"
        return sorted(k[len(base):] for k in found if k.startswith(base))

    def modified(self, key: str) -> float | None:
        with self._guard(key, "read"):
            try:
                info = self.fs.info(self.path(key))
            except FileNotFoundError:
                return None
        when = info.get("LastModified") or info.get("mtime")
        return when.timestamp() if hasattr(when, "timestamp") else None

    def remove(self, keys: list[str]) -> None:
        if keys:
            with self._guard(keys[0], "remove"):
                self.fs.rm([self.path(k) for k in keys])

    def check_bucket(self) -> None:
        """A clear error now for a missing bucket or credentials (before anything else)."""
        bucket = self.base.split("/", 1)[0]
        with self._guard("", "open"):
            try:
                self.fs.info(bucket)     # no credentials, no endpoint: their own errors
            except FileNotFoundError:
                raise NotFoundError(f"the bucket of {self.url} does not exist",
                                    "create it first, or check the URL") from None


def _precondition_failed(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, FileExistsError) or "preconditionfailed" in text or \
        "pre-condition" in text or "precondition" in text


def cache_root(url: str) -> Path:
    """The local copy of the market at ``url``: ``objects/`` holds the immutable files
    (learnwares, generations), shared by every lw process on this machine; each process works
    in a folder of its own under ``work/`` whose pointers (``market.toml``, ``CURRENT``) are
    its own, linked to ``objects/``."""
    from ..settings import cache_dir

    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:20]
    return Path(cache_dir()) / "markets" / digest


def _work_folder(base: Path):
    """A fresh working folder (``work/<hex>``), one per opened market (two writers in one
    process must not share pointers), and the owner lock held on it (``work/<hex>.owner``,
    released by the kernel if the process dies). Folders whose owner lock nobody holds are
    left by processes that are gone: removed here. Returns (folder, lock)."""
    import uuid

    from filelock import FileLock

    from ..locks import held_by_another

    work = base / "work"
    with storage_guard(work):
        work.mkdir(parents=True, exist_ok=True)
        mine = work / uuid.uuid4().hex[:16]
        lock = FileLock(work / (mine.name + OWNER_SUFFIX), mode=0o600)
        lock.acquire()                           # before the folder exists: never collected
        for old in work.iterdir():
            owner = work / (old.name + OWNER_SUFFIX)
            if old.is_dir() and old != mine and not held_by_another(owner):
                shutil.rmtree(old, ignore_errors=True)
                owner.unlink(missing_ok=True)
        mine.mkdir()
        for area in (INDEX, ANCHORS):
            (mine / area).mkdir()
            (base / "objects" / area).mkdir(parents=True, exist_ok=True)
        (base / "objects" / LEARNWARES).mkdir(parents=True, exist_ok=True)
        os.symlink(base / "objects" / LEARNWARES, mine / LEARNWARES)
    return mine, lock


def _leave(folder: Path, lock) -> None:
    """Remove a working folder and release its owner lock (its market object is gone)."""
    shutil.rmtree(folder, ignore_errors=True)
    lock.release()
    Path(lock.lock_file).unlink(missing_ok=True)


class RemoteMarket(Market):
    """A market in an object store, worked on through its local copy (module docstring).
    ``root`` is this object's working folder of the copy (``work``: it and its owner lock,
    from :func:`_work_folder`); ``location`` the URL."""

    def __init__(self, url: str, store: ObjectStore, work: tuple, config: dict) -> None:
        import weakref

        root, lock = work
        super().__init__(root, config)
        weakref.finalize(self, _leave, root, lock)
        self.url = url.rstrip("/")
        self.store = store
        self.objects = root.parent.parent / "objects"
        self._pulled: dict[str, tuple[bytes | None, str | None]] = {}
        self._ids: list[str] | None = None

    @property
    def location(self) -> str:
        return self.url

    @property
    def display(self) -> str:
        return self.url

    # ------------------------------------------------------------------ open / init
    @classmethod
    def init(cls, root) -> "RemoteMarket":
        from .. import __version__, _toml
        from .store import SCHEMA_VERSION, utcnow

        store = ObjectStore(checked_url(root))
        store.check_bucket()
        if store.get(MARKET_TOML) is None:
            cfg = {"schema_version": SCHEMA_VERSION, "created_at": utcnow(),
                   "created_with": f"lw {__version__}", "islands": {}}
            store.put_new(MARKET_TOML, _toml.dumps(cfg).encode())
        return cls.open(checked_url(root))

    @classmethod
    def open(cls, root, *, recover: bool = True) -> "RemoteMarket":
        """Open the market at the URL ``root``: the pointers read afresh and, unless
        ``recover`` is False (a piece of batch work, which reads learnwares only), the live
        generations fetched into the copy."""
        url = checked_url(root)
        mk = cls(url, ObjectStore(url), _work_folder(cache_root(url)), {})
        mk.pull(generations=recover)
        try:
            mk.config = cls._read_config(mk.layout)
        except MarketError as exc:              # name the object, not the working copy
            raise MarketError(exc.message.replace(str(mk.layout.market_toml),
                                                  f"{url}/{MARKET_TOML}"), exc.hint) from None
        return mk

    def pull(self, *, generations: bool = True) -> None:
        """Read the pointers afresh (with their ETags) into this process's working folder,
        and fetch the live generations the copy lacks (whole, once: they never change)."""
        got = self.store.get(MARKET_TOML)
        if got is None:
            self.store.check_bucket()
            raise NotFoundError(f"{self.url} is not an lw market (no {MARKET_TOML})",
                                f"create one with: lw market init {self.url}")
        self._pulled = {MARKET_TOML: got}
        atomic_write(self.layout.market_toml, got[0], self.layout.tmp)
        for area in (INDEX, ANCHORS) if generations else ():
            key = f"{area}/{CURRENT}"
            got = self.store.get(key)
            self._pulled[key] = got if got is not None else (None, None)
            local = self.layout.root / area / CURRENT
            if got is None:
                local.unlink(missing_ok=True)
                continue
            name = got[0].decode("utf-8", "replace").strip()
            if GENERATION_RE.match(name):
                self._fetch_generation(area, name)
                link = self.layout.root / area / name
                if not os.path.lexists(link):
                    os.symlink(self.objects / area / name, link)
            atomic_write(local, got[0], self.layout.tmp)
        self._ids = None
        _rmdir_if_empty(self.layout.tmp)

    def _fetch_generation(self, area: str, name: str) -> None:
        final = self.objects / area / name
        if final.is_dir():
            return
        stage = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.objects / area))
        try:
            for key in self.store.keys(f"{area}/{name}/"):
                data = self.store.read(key)
                if data is not None:
                    (stage / key.rsplit("/", 1)[1]).write_bytes(data)
            os.rename(stage, final)
        except OSError:
            if not final.is_dir():          # another process fetched it first: that one
                raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    # ------------------------------------------------------------------ learnwares
    def ids(self) -> list[str]:
        """The stored learnwares: those whose ``record.json`` is in the store (listed once
        per pull)."""
        if self._ids is None:
            self._ids = sorted({k.split("/")[1] for k in self.store.keys(f"{LEARNWARES}/")
                                if k.endswith("/" + RECORD_NAME) and k.count("/") == 2
                                and ID_RE.match(k.split("/")[1])})
        return list(self._ids)

    def has(self, lw_id: str) -> bool:
        if self.layout.record(lw_id).is_file():
            return True
        return bool(ID_RE.match(lw_id or "")) and \
            self.store.exists(f"{LEARNWARES}/{lw_id}/{RECORD_NAME}")

    def _require(self, lw_id: str) -> Path:
        if ID_RE.match(lw_id or "") and not self.layout.record(lw_id).is_file():
            self._fetch_file(lw_id, RECORD_NAME)
        return super()._require(lw_id)

    def _fetch_file(self, lw_id: str, name: str) -> bool:
        data = self.store.read(f"{LEARNWARES}/{lw_id}/{name}")
        if data is None:
            return False
        path = self.layout.learnware_file(lw_id, name)
        with storage_guard(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, self.layout.tmp)
        _rmdir_if_empty(self.layout.tmp)
        return True

    def _read_raw(self, lw_id: str, name: str) -> bytes:
        if not self.layout.learnware_file(lw_id, name).is_file():
            self._fetch_file(lw_id, name)
        return super()._read_raw(lw_id, name)

    def _read(self, lw_id: str, name: str) -> bytes:
        """A learnware's file, checked against its record; a cached copy that fails the check
        (a damaged cache) is fetched again from the store, once, before anything is said."""
        try:
            return super()._read(lw_id, name)
        except MarketError:
            if name == RECORD_NAME or not self._fetch_file(lw_id, name):
                raise
            return super()._read(lw_id, name)

    def commit_learnware(self, lw_id: str, files: dict[str, bytes], record: dict) -> bool:
        """Store the learnware create-only, its record last; False when the store had it
        (another writer of the same id)."""
        if self.store.exists(f"{LEARNWARES}/{lw_id}/{RECORD_NAME}"):
            return False
        super().commit_learnware(lw_id, files, record)
        local = self.layout.learnware(lw_id)
        for name in sorted(p.name for p in local.iterdir() if p.name != RECORD_NAME):
            self.store.put_new(f"{LEARNWARES}/{lw_id}/{name}", (local / name).read_bytes())
        added = self.store.put_new(f"{LEARNWARES}/{lw_id}/{RECORD_NAME}",
                                   (local / RECORD_NAME).read_bytes())
        if not added:                  # another writer's record won: theirs is the one
            shutil.rmtree(local, ignore_errors=True)
            self._fetch_file(lw_id, RECORD_NAME)
        self._ids = None
        return added

    # ------------------------------------------------------------------ writes
    def needs_recovery(self) -> bool:
        return False

    @contextmanager
    def writing(self, timeout: float | None = None, device=None):
        """The copy's lock (writers on this machine), the pointers pulled afresh; on a clean
        exit, what the block created is uploaded and the pointers swapped
        (:class:`ConcurrentWriteError` when another writer swapped one first)."""
        with super().writing(timeout, device):
            self.pull()
            self.reload()
            yield self
            self.push()

    def push(self) -> None:
        """Upload the generations the copy's pointers name and the store lacks, then swap
        the pointers that changed (market.toml first, then index, then anchors)."""
        local_toml = self.layout.market_toml.read_bytes()
        old, etag = self._pulled[MARKET_TOML]
        if local_toml != old:
            if not self.store.swap(MARKET_TOML, local_toml, etag):
                raise ConcurrentWriteError(f"{self.url}/{MARKET_TOML} was changed by another "
                                           "writer", "retry")
        for area in (INDEX, ANCHORS):
            key = f"{area}/{CURRENT}"
            path = self.layout.root / area / CURRENT
            mine = path.read_bytes() if path.is_file() else None
            theirs, etag = self._pulled[key]
            if mine is None or mine == theirs:
                continue
            name = mine.decode().strip()
            folder = self.layout.root / area / name
            for f in sorted(folder.iterdir()):
                self.store.put_new(f"{area}/{name}/{f.name}", f.read_bytes())
            if not self.store.swap(key, mine, etag):
                raise ConcurrentWriteError(f"{self.url}/{key} was changed by another writer",
                                           "retry")
        self._pulled = {}

    def transact(self, fn, *, device=None):
        """``fn()`` under :meth:`writing`, started again from the store's new state when
        another writer swapped a pointer first; :class:`ConcurrentWriteError` (exit 5) after
        :data:`ATTEMPTS` tries."""
        for attempt in range(ATTEMPTS):
            try:
                with self.writing(device=device):
                    return fn()
            except ConcurrentWriteError:
                if attempt == ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
                self.reload()
        raise AssertionError("unreachable")

    def collect_stale_generations(self) -> list[str]:
        """Remove the store's generations that no pointer names and that are older than
        :data:`GARBAGE_AGE_S` (a reader may still be fetching a younger one)."""
        removed = []
        now = time.time()
        for area in (INDEX, ANCHORS):
            got = self.store.get(f"{area}/{CURRENT}")
            live = got[0].decode().strip() if got else None
            folders: dict[str, list[str]] = {}
            for k in self.store.keys(f"{area}/"):
                parts = k.split("/")
                if len(parts) == 3 and GENERATION_RE.match(parts[1]):
                    folders.setdefault(parts[1], []).append(k)
            for name, keys in sorted(folders.items()):
                if name == live:
                    continue
                when = self.store.modified(keys[0])
                if when is not None and now - when > GARBAGE_AGE_S:
                    self.store.remove(keys)
                    removed.append(f"{area}/{name}")
        return removed

    def download(self, dest: Path) -> Path:
        """Every object of the market, fetched afresh, into ``dest`` (a new folder): what
        ``lw market verify`` checks."""
        for key in self.store.keys(""):
            data = self.store.read(key)
            if data is None:
                continue
            path = dest.joinpath(*key.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for d in (LEARNWARES, INDEX, ANCHORS):
            (dest / d).mkdir(parents=True, exist_ok=True)
        return dest


