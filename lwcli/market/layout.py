"""Every path of a market directory, in one place.

    market.toml          schema version, islands and their kernel metrics
    learnwares/<id>/     immutable: learnware.toml, rkme.json, the model file, record.json
    index/CURRENT        names the live index generation
    index/<generation>/  derived, rebuildable: catalog.json + stacked specs per island
    anchors/CURRENT      names the live anchor generation
    anchors/<generation>/ derived, rebuildable: anchors.json + per island probe outputs, distances
    tmp/                 staging on the same filesystem, so renames are atomic; created when a
                         write needs it and removed when it is empty again
    tmp/<id>.intent      a submit under way: what the next writer completes or undoes if the
                         submit died (see :meth:`lwcli.market.store.Market.recover`)
    .lock                the writers' lock
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ID_RE = re.compile(r"^[0-9a-f]{16}$")
RECORD_NAME = "record.json"
# A derived generation: gen-<digest of its inputs>, plus -<unique suffix> when rebuilt by force
GENERATION_RE = re.compile(r"^(gen-[0-9a-f]{20})(?:-[0-9a-f]{8,32})?$")
INTENT_SUFFIX = ".intent"


def generation_digest(name: str) -> str | None:
    """The digest part of a generation folder's name (``gen-<digest>``), None if not one."""
    m = GENERATION_RE.match(name or "")
    return m.group(1) if m else None


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def market_toml(self) -> Path:
        return self.root / "market.toml"

    @property
    def learnwares(self) -> Path:
        return self.root / "learnwares"

    def learnware(self, lw_id: str) -> Path:
        return self.learnwares / lw_id

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def index_current(self) -> Path:
        return self.index / "CURRENT"

    def index_generation(self, name: str) -> Path:
        return self.index / name

    @property
    def anchors(self) -> Path:
        return self.root / "anchors"

    def anchors_generation(self, name: str) -> Path:
        return self.anchors / name

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def intent(self, lw_id: str) -> Path:
        return self.tmp / f"{lw_id}{INTENT_SUFFIX}"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"
