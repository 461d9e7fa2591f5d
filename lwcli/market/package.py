"""``.lw`` packages: one zip holding ``learnware.toml``, the model file and ``rkme.json``.

Packing is deterministic (fixed member order and timestamps), so the same inputs give the same
bytes and the same id. Unpacking never calls ``extractall``: members are read into memory one
by one, with their names checked against the exact expected set and their sizes bounded while
reading (a zip's header sizes can lie).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .._zipsafe import open_zip, read_member, unsafe_member_name
from ..settings import max_model_bytes
from ..errors import NotFoundError, PackageError
from ..specfile import Spec, spec_from_bytes
from .layout import MANIFEST_NAME, SPEC_NAME
from .manifest import MODEL_EXTENSIONS, Manifest, manifest_from_text

MAX_PACKAGE_BYTES = 1 << 30          # 1 GiB on disk
MAX_MEMBER_BYTES = {MANIFEST_NAME: 1 << 20, SPEC_NAME: 64 << 20}
#: the package format, written by ``lw pack`` as ``[package] format_version`` in learnware.toml
FORMAT_VERSION = 1
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Package:
    manifest: Manifest
    spec: Spec
    model_bytes: bytes
    manifest_bytes: bytes
    spec_bytes: bytes

    @property
    def files(self) -> dict[str, bytes]:
        return {MANIFEST_NAME: self.manifest_bytes, SPEC_NAME: self.spec_bytes,
                self.manifest.model_file: self.model_bytes}

    @property
    def learnware_id(self) -> str:
        return content_id(self.files)


def content_id(files: dict[str, bytes]) -> str:
    """The id: a digest of member names and contents, independent of zip metadata."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()[:16]


def build_package(manifest: Manifest, spec: Spec, model_bytes: bytes) -> bytes:
    """Zip the three members deterministically."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in ((MANIFEST_NAME, manifest.to_toml().encode()),
                           (SPEC_NAME, spec.to_bytes()),
                           (manifest.model_file, model_bytes)):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, source: str) -> bytes:
    return read_member(zf, info, limit, source, PackageError,
                       "rebuild the package with lw pack (shrink the model if it is too large)")


def read_package(path: str | Path) -> Package:
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"package {p} does not exist", "check the path")
    size = p.stat().st_size
    if size > MAX_PACKAGE_BYTES:
        raise PackageError(f"{p} is {size} bytes, over the {MAX_PACKAGE_BYTES}-byte package limit",
                           "shrink the model")
    return unpack_bytes(p.read_bytes(), str(p))


def unpack_bytes(data: bytes, source: str = "package") -> Package:
    zf = open_zip(data, source, PackageError, "valid package", "rebuild it with lw pack")
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        for n in names:
            if unsafe_member_name(n):
                raise PackageError(f"{source}: member path {n!r} escapes the package folder",
                                   "packages hold plain file names only; rebuild with lw pack")
        if len(set(names)) != len(names):
            raise PackageError(f"{source} has duplicate members", "rebuild it with lw pack")
        for required in (MANIFEST_NAME, SPEC_NAME):
            if required not in names:
                raise PackageError(f"{source} has no {required}", "rebuild it with lw pack")
        if len(names) > 3:
            raise PackageError(f"{source} has {len(names)} members, unexpected for a package "
                               f"({MANIFEST_NAME}, {SPEC_NAME} and the model)",
                               "rebuild it with lw pack")
        by_name = {i.filename: i for i in infos}
        manifest_bytes = _read_member(zf, by_name[MANIFEST_NAME], MAX_MEMBER_BYTES[MANIFEST_NAME],
                                      source)
        try:
            manifest = manifest_from_text(manifest_bytes.decode("utf-8"), f"{source}:{MANIFEST_NAME}")
        except UnicodeDecodeError as exc:
            raise PackageError(f"{source}: {MANIFEST_NAME} is not UTF-8", "rebuild it") from exc
        ext = MODEL_EXTENSIONS[manifest.model_format]
        if not manifest.model_file.endswith(ext):
            raise PackageError(f"{source}: model file {manifest.model_file!r} does not end in "
                               f"{ext}, the extension of format {manifest.model_format!r}",
                               "rebuild it with lw pack (it names the model file model" + ext + ")")
        expected = {MANIFEST_NAME, SPEC_NAME, manifest.model_file}
        extra = sorted(set(names) - expected)
        missing = sorted(expected - set(names))
        if extra or missing:
            raise PackageError(f"{source}: members {names} do not match the manifest "
                               f"(missing {missing}, unexpected {extra})", "rebuild it with lw pack")
        spec_bytes = _read_member(zf, by_name[SPEC_NAME], MAX_MEMBER_BYTES[SPEC_NAME], source)
        model_bytes = _read_member(zf, by_name[manifest.model_file], max_model_bytes(), source)
    spec = spec_from_bytes(spec_bytes, f"{source}:{SPEC_NAME}")
    return Package(manifest, spec, model_bytes, manifest_bytes, spec_bytes)
