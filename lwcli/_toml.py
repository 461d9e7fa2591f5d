"""TOML reading (tomllib on 3.11+, tomli before) and writing (tomli_w)."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib as _reader
else:  # pragma: no cover
    import tomli as _reader

TOMLDecodeError = _reader.TOMLDecodeError


def loads(text: str) -> dict:
    """Parse TOML text; a leading UTF-8 byte-order mark (as some editors write) is ignored."""
    return _reader.loads(text.removeprefix("\ufeff"))


def dumps(data: dict) -> str:
    import tomli_w

    return tomli_w.dumps(data)
