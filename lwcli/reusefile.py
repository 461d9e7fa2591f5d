"""Saved reusers (``lw reuse --save-model``): one self-contained zip, loaded without unpickling.

    reuser.json                       format, the reuser's parameters and fitted values, and for
                                      every member its sha256
    learnwares/<id>/learnware.toml    each learnware's manifest ...
    learnwares/<id>/<model file>      ... and model, in its declared format (skops, ONNX; pickle
                                      and joblib load only with trust, exactly as in submit)
    learnwares/<id>/rkme.json         ... and specification (what missing inputs are estimated
                                      from; reusers saved before lw carried it lack it)
    estimators/<name>.skops           fitted scikit-learn parts (user model, job selector,
                                      final model), loaded with skops' safe-type check

It needs no market to be applied again: the learnwares travel inside. Members are read with
the same bounds as packages and must be exactly the listed ones with matching hashes; any
difference is a clear "corrupt saved model" error.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

from . import __version__
from ._zipsafe import open_zip, read_member, unsafe_member_name
from .errors import NotFoundError, ReuserFileError

FORMAT = "lw-reuser"
VERSION = 1
STATE_NAME = "reuser.json"
MAX_STATE_BYTES = 64 << 20
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FIX = "save it again with lw reuse ... --save-model"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def dump_reuser(reuser, learnware_files: dict[str, dict[str, bytes]]) -> bytes:
    """Serialise a fitted reuser. ``learnware_files``: id -> {"learnware.toml": ..., model file
    name: ...} for every learnware it uses (exactly as stored in the market)."""
    import skops.io as sio

    from .market.models import canonical_skops

    state, estimators = reuser.get_state()
    members: dict[str, bytes] = {}
    lw_meta = {}
    for lw_id in state["learnware_ids"]:
        files = learnware_files[lw_id]
        lw_meta[lw_id] = {"files": {}}
        for name, data in sorted(files.items()):
            path = f"learnwares/{lw_id}/{name}"
            members[path] = data
            lw_meta[lw_id]["files"][name] = _sha(data)
    est_meta = {}
    for attr, est in sorted(estimators.items()):
        data = canonical_skops(sio.dumps(est))
        path = f"estimators/{attr}.skops"
        members[path] = data
        est_meta[attr] = {"file": path, "sha256": _sha(data)}
    doc = {"format": FORMAT, "version": VERSION, "created_with": f"lw {__version__}",
           "state": state, "learnwares": lw_meta, "estimators": est_meta}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in [(STATE_NAME, (json.dumps(doc, indent=1, sort_keys=True) + "\n")
                            .encode())] + sorted(members.items()):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _read_state(zf: zipfile.ZipFile, infos: dict, src: str) -> dict:
    """The saved reuser's ``reuser.json``, after checking member names, format and version."""
    if len(infos) != len(zf.infolist()) or any(unsafe_member_name(n, allow_folders=True)
                                               for n in infos):
        raise ReuserFileError(f"{src} has duplicate or unsafe member names", FIX)
    if STATE_NAME not in infos:
        raise ReuserFileError(f"{src} has no {STATE_NAME}: not a saved lw reuser", FIX)
    try:
        doc = json.loads(read_member(zf, infos[STATE_NAME], MAX_STATE_BYTES, src,
                                     ReuserFileError, FIX).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ReuserFileError(f"{src}: {STATE_NAME} is not valid JSON ({exc})", FIX) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ReuserFileError(f"{src} is not a saved lw reuser (format != {FORMAT!r})", FIX)
    if doc.get("version") != VERSION:
        raise ReuserFileError(f"{src} has version {doc.get('version')!r}, this lw reads "
                              f"{VERSION}", FIX)
    return doc


def _check_members(doc: dict, infos: dict, src: str):
    """The reuser class ``doc`` names; the zip must hold exactly the members ``doc`` lists."""
    from .engine.reuse import REUSERS

    try:
        cls = REUSERS[doc["state"]["method"]]
        expected = {STATE_NAME}
        for lw_id, meta in doc["learnwares"].items():
            expected |= {f"learnwares/{lw_id}/{n}" for n in meta["files"]}
        expected |= {m["file"] for m in doc["estimators"].values()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ReuserFileError(f"{src}: {STATE_NAME} is malformed ({exc!r})", FIX) from exc
    if set(infos) != expected:
        raise ReuserFileError(f"{src}: members do not match {STATE_NAME} (missing "
                              f"{sorted(expected - set(infos))[:3]}, unexpected "
                              f"{sorted(set(infos) - expected)[:3]})", FIX)
    return cls


def load_reuser(path: str | Path, *, trust: bool = False):
    """Read a saved reuser back: the fitted estimator, ready to ``predict``. A file that is
    not exactly what :func:`dump_reuser` wrote is a :class:`ReuserFileError` (exit 4)."""
    from .engine.reuse import Learnware
    from .market.layout import SPEC_NAME
    from .market.manifest import manifest_from_text
    from .market.models import load_learnware_model, load_model
    from .specfile import spec_from_bytes
    from .settings import max_model_bytes

    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"saved reuser {p} does not exist", "check the path")
    src = str(p)
    zf = open_zip(p.read_bytes(), src, ReuserFileError, "saved lw reuser", FIX)
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        doc = _read_state(zf, infos, src)
        cls = _check_members(doc, infos, src)

        def member(name: str, digest: str) -> bytes:
            data = read_member(zf, infos[name], max_model_bytes(), src, ReuserFileError, FIX)
            if _sha(data) != digest:
                raise ReuserFileError(f"{src}: {name} does not match its recorded sha256", FIX)
            return data

        learnwares = []
        try:
            for lw_id, meta in doc["learnwares"].items():
                files = {n: member(f"learnwares/{lw_id}/{n}", d) for n, d in meta["files"].items()}
                man = manifest_from_text(files["learnware.toml"].decode("utf-8"),
                                         f"{src}:learnwares/{lw_id}/learnware.toml")
                model = load_learnware_model(files[man.model_file], man.model_format,
                                             man.features, trust=trust)
                rkme = (spec_from_bytes(files[SPEC_NAME], f"{src}:learnwares/{lw_id}/"
                                        f"{SPEC_NAME}").rkme if SPEC_NAME in files else None)
                learnwares.append(Learnware(lw_id, man.name, model, man.task, man.features,
                                            man.outputs, rkme, class_values=man.class_values))
            estimators = {a: load_model(member(m["file"], m["sha256"]), "skops")
                          for a, m in doc["estimators"].items()}
            return cls.from_state(learnwares, doc["state"], estimators)
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise ReuserFileError(f"{src}: the saved reuser is inconsistent ({exc!r})",
                                  FIX) from exc
