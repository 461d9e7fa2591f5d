"""Every path and file name of a market directory, in one place; every other module asks here.

    market.toml          schema version, islands and their kernel metrics
    learnwares/<id>/     immutable: learnware.toml, rkme.json, the model file, record.json
    index/CURRENT        names the live index generation
    index/<generation>/  derived, rebuildable: catalog.json + per island ``<island>.<file>``
                         (the files of :data:`INDEX_ISLAND_FILES`)
    anchors/CURRENT      names the live anchor generation
    anchors/<generation>/ derived, rebuildable: anchors.json + per island
                         ``<island>.probes.npy``, ``<island>.outputs.npy`` and
                         ``<island>.<distance>.npy``
    tmp/                 staging on the same filesystem, so renames are atomic; created when a
                         write needs it and removed when it is empty again
    tmp/<id>.intent      a submit under way: what the next writer completes or undoes if the
                         submit died (see :meth:`lwcli.market.store.Market.recover`)
    tmp/<prefix>-<hex>   a staging or removal folder of a write (:meth:`Layout.tmp_entry`)
    .lock                the writers' lock

A derived generation is named ``gen-<20 hex digits of the digest of its inputs>``
(:func:`generation_name`), plus ``-<unique suffix>`` when rebuilt by force
(:func:`forced_generation_name`), so a live generation is never replaced in place.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

ID_RE = re.compile(r"^[0-9a-f]{16}$")

MARKET_TOML = "market.toml"
LEARNWARES = "learnwares"
INDEX = "index"
ANCHORS = "anchors"
TMP = "tmp"
LOCK = ".lock"
CURRENT = "CURRENT"

# the fixed file names inside learnwares/<id>/ (the model file is named by its manifest)
MANIFEST_NAME = "learnware.toml"
SPEC_NAME = "rkme.json"
RECORD_NAME = "record.json"

CATALOG = "catalog.json"
ANCHORS_JSON = "anchors.json"
#: the files of one island in an index generation, each named ``<island>.<file>``
INDEX_ISLAND_FILES = ("ids.npy", "points.npy", "beta.npy", "self.npy", "sketch.npy",
                      "sketchnorm.npy", "summaries.jsonl", "offsets.npy", "tagptr.npy",
                      "tagidx.npy")
ANCHOR_OUTPUTS = "outputs.npy"
#: an island's probe inputs in an anchor generation, kept across refreshes
ANCHOR_PROBE_INPUTS = "probes.npy"

INTENT_SUFFIX = ".intent"
OWNER_SUFFIX = ".owner"

GENERATION_PREFIX = "gen-"
GENERATION_DIGITS = 20
GENERATION_RE = re.compile(r"^(gen-[0-9a-f]{20})(?:-[0-9a-f]{8,32})?$")
FORCED_SUFFIX_DIGITS = 12


def generation_name(hexdigest: str) -> str:
    """A generation's folder name from the hex digest of its inputs: ``gen-`` and the first
    20 hex digits (``hexdigest``: a sha256 ``hexdigest()``, at least 20 digits)."""
    return GENERATION_PREFIX + hexdigest[:GENERATION_DIGITS]


def forced_generation_name(name: str) -> str:
    """``name`` plus a fresh unique suffix: where a forced rebuild goes (``gen-<digest>-<12
    hex digits>``), never the name of an existing generation."""
    return f"{name}-{uuid.uuid4().hex[:FORCED_SUFFIX_DIGITS]}"


def generation_digest(name: str) -> str | None:
    """The digest part of a generation folder's name (``gen-<digest>``), None if not one."""
    m = GENERATION_RE.match(name or "")
    return m.group(1) if m else None


def current_file(area: Path) -> Path:
    """The ``CURRENT`` file of a derived area (``index/`` or ``anchors/``)."""
    return area / CURRENT


def island_file(island: str, name: str) -> str:
    """The name of one island's file in a generation folder: ``<island>.<name>`` (``name``
    from :data:`INDEX_ISLAND_FILES`, :data:`ANCHOR_OUTPUTS` or ``<distance>.npy``; a glob
    such as ``*.npy`` names them in messages)."""
    return f"{island}.{name}"


def unique_entry(folder: Path, prefix: str) -> Path:
    """A fresh name in ``folder``: ``<prefix>-<32 hex digits>`` (staging, removal)."""
    return folder / f"{prefix}-{uuid.uuid4().hex}"


def anchor_distances_file(island: str, kind: str) -> str:
    """The name of an island's anchor distances of ``kind`` (``disagreement``, ``rms``,
    ``mae``): ``<island>.<kind>.npy``."""
    return island_file(island, f"{kind}.npy")


@dataclass(frozen=True)
class Layout:
    """The paths of the market at ``root`` (nothing is read or created)."""

    root: Path

    @property
    def market_toml(self) -> Path:
        return self.root / MARKET_TOML

    @property
    def learnwares(self) -> Path:
        return self.root / LEARNWARES

    def learnware(self, lw_id: str) -> Path:
        return self.learnwares / lw_id

    def learnware_file(self, lw_id: str, name: str) -> Path:
        """One stored file of a learnware (``name``: :data:`MANIFEST_NAME`, :data:`SPEC_NAME`,
        :data:`RECORD_NAME` or its model file)."""
        return self.learnware(lw_id) / name

    def record(self, lw_id: str) -> Path:
        return self.learnware_file(lw_id, RECORD_NAME)

    @property
    def index(self) -> Path:
        return self.root / INDEX

    @property
    def index_current(self) -> Path:
        return current_file(self.index)

    def index_generation(self, name: str) -> Path:
        return self.index / name

    @property
    def anchors(self) -> Path:
        return self.root / ANCHORS

    @property
    def anchors_current(self) -> Path:
        return current_file(self.anchors)

    def anchors_generation(self, name: str) -> Path:
        return self.anchors / name

    @property
    def tmp(self) -> Path:
        return self.root / TMP

    def tmp_entry(self, prefix: str) -> Path:
        """A fresh name in ``tmp/``: ``<prefix>-<32 hex digits>``."""
        return unique_entry(self.tmp, prefix)

    def intent(self, lw_id: str) -> Path:
        return self.tmp / f"{lw_id}{INTENT_SUFFIX}"

    @property
    def lock(self) -> Path:
        return self.root / LOCK
