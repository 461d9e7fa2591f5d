"""Reading zips we did not write: bounded, member by member, never ``extractall``.

Shared by learnware packages and saved reusers. A zip's header sizes can lie, so sizes are
checked while reading.
"""

from __future__ import annotations

import io
import lzma
import struct
import zipfile
import zlib

from .errors import InvalidInputError

#: Everything ``zipfile`` raises on a malformed archive: a bad central directory (BadZipFile,
#: struct.error, ValueError, OSError), a member flagged encrypted (RuntimeError), an unknown
#: compression method (NotImplementedError), a corrupt stream (zlib/lzma errors, EOFError,
#: OSError from bz2).
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError,
              RuntimeError, ValueError, OSError, struct.error, KeyError, IndexError,
              OverflowError)


def open_zip(data: bytes, source: str, error: type[InvalidInputError], what: str,
             fix: str) -> zipfile.ZipFile:
    """A ``ZipFile`` over ``data``, or ``error`` ("``source`` is not a ``what``")."""
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except ZIP_ERRORS as exc:
        raise error(f"{source} is not a {what} (truncated or not a zip: "
                    f"{type(exc).__name__}: {exc})", fix) from exc


def unsafe_member_name(name: str, *, allow_folders: bool = False) -> bool:
    """True for absolute paths, ``..`` parts, drive letters, backslashes (and folders unless
    ``allow_folders``)."""
    parts = name.replace("\\", "/").split("/")
    return (name.startswith(("/", "\\")) or ".." in parts or "\\" in name or ":" in name
            or "" in parts or (not allow_folders and "/" in name))


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, source: str,
                error: type[InvalidInputError], fix: str) -> bytes:
    """The bytes of one member, refusing anything past ``limit`` bytes."""
    if info.file_size > limit:
        raise error(f"{source}: member {info.filename!r} is {info.file_size} bytes, over the "
                    f"{limit}-byte limit", fix)
    out = bytearray()
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(1 << 20)
                if not chunk:
                    break
                out += chunk
                if len(out) > limit:
                    raise error(f"{source}: member {info.filename!r} expands past the "
                                f"{limit}-byte limit", "the file is malformed or hostile")
    except InvalidInputError:
        raise
    except ZIP_ERRORS as exc:
        raise error(f"{source}: member {info.filename!r} cannot be read ({type(exc).__name__}: "
                    f"{exc})", fix) from exc
    return bytes(out)
