"""TOML reading (tomllib on 3.11+, tomli before) and writing (tomli_w)."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib as _reader
else:  # pragma: no cover
    import tomli as _reader

TOMLDecodeError = _reader.TOMLDecodeError


def loads(text: str) -> dict:
    """Parse TOML text; a leading UTF-8 byte-order mark (as some editors write) is ignored.

    Arrays or tables nested too deeply for the parser's recursion are a
    :class:`TOMLDecodeError` like any other malformed document."""
    try:
        return _reader.loads(text.removeprefix("\ufeff"))
    except RecursionError:
        raise TOMLDecodeError("arrays or tables nested too deeply") from None
    except TOMLDecodeError:
        raise
    except (ValueError, OverflowError) as exc:   # e.g. an integer of more than 4300 digits
        raise TOMLDecodeError(" ".join(str(exc).split())[:200]) from None


def dumps(data: dict) -> str:
    import tomli_w

    return tomli_w.dumps(data)
