"""``learnware.toml``: the semantic specification, its schema and its validation.

Allowed values are declared as data here; every error names the field, what was expected
and what was found.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _toml
from ..errors import ManifestError, NotFoundError
from .layout import MANIFEST_NAME, RECORD_NAME, SPEC_NAME
from ..labels import label_str
from ..validation import (MAX_DESCRIPTION_CHARS, MAX_FEATURES, MAX_MANIFEST_BYTES,
                          MAX_NAME_CHARS, MAX_OUTPUTS, MAX_TAGS, nfc_all)

DATA_TYPES = ("table",)
TASKS = ("classification", "regression")
OBJECTIVES = {
    "regression": ("rmse", "mae", "r2"),
    "classification": ("accuracy", "log_loss", "f1", "auc"),
}
MODEL_FORMATS = ("skops", "onnx", "pickle", "joblib")
TRUST_FORMATS = ("pickle", "joblib")           # loading these runs arbitrary code
MODEL_EXTENSIONS = {"skops": ".skops", "onnx": ".onnx", "pickle": ".pkl", "joblib": ".joblib"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")
#: A stored model file's name: a plain name, no folders, not hidden.
MODEL_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: Names a learnware folder holds for the market itself: no model file may take one (compared
#: case-insensitively, as some filesystems do).
RESERVED_NAMES = frozenset({MANIFEST_NAME, SPEC_NAME, RECORD_NAME})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    description: str
    license: str
    tags: tuple[str, ...]
    data_type: str
    task: str
    objective: str
    features: tuple[str, ...]
    outputs: tuple[str, ...]          # class labels (classification) or output names
    model_format: str
    model_file: str
    package: dict = field(default_factory=dict)   # written by lw pack
    class_values: tuple = ()          # the classes as declared (bool, int, float or str)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.outputs if self.task == "classification" else ()

    @property
    def trust_required(self) -> bool:
        return self.model_format in TRUST_FORMATS

    def island_key(self) -> dict:
        """What two learnwares must share to sit on one specification island."""
        return {
            "data_type": self.data_type,
            "task": self.task,
            "objective": self.objective,
            "features": list(self.features),
            "outputs": list(self.outputs),
        }

    def island_id(self) -> str:
        return island_id_for(self.island_key())

    def to_dict(self) -> dict:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "license": self.license,
            "tags": list(self.tags),
            "data_type": self.data_type,
            "task": self.task,
            "objective": self.objective,
            "input": {"features": list(self.features)},
            "output": ({"classes": list(self.class_values or self.outputs)}
                       if self.task == "classification"
                       else {"dimension": len(self.outputs), "names": list(self.outputs)}),
            "model": {"format": self.model_format, "file": self.model_file},
        }
        if self.package:
            out["package"] = dict(self.package)
        return out

    def to_toml(self) -> str:
        return _toml.dumps(self.to_dict())


def island_id_for(key: dict) -> str:
    canon = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return f"{key['data_type']}-{key['task']}-{hashlib.sha256(canon.encode()).hexdigest()[:10]}"


def _req(d: dict, key: str, typ, where: str = ""):
    path = f"{where}{key}"
    if key not in d:
        raise ManifestError(f"learnware.toml: missing field '{path}'", f"add {path} = ...")
    v = d[key]
    if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
        raise ManifestError(
            f"learnware.toml: field '{path}' must be {_TYPE_NAMES.get(typ, typ.__name__)}, got "
            f"{_TYPE_NAMES.get(type(v), type(v).__name__)} {_short(v)}", f"fix {path}")
    return v


_TYPE_NAMES = {str: "a string", list: "an array", dict: "a table", int: "an integer",
               float: "a float", bool: "a boolean"}


def _short(v, n: int = 40) -> str:
    """``repr(v)``, cut to about ``n`` characters (control characters escaped by repr)."""
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def _text(d: dict, key: str, limit: int, where: str = "", *, free: bool = False) -> str:
    """A string field of at most ``limit`` characters, without control characters unless
    ``free`` (a description: any text, escaped wherever lw shows it)."""
    v = _req(d, key, str, where)
    if len(v) > limit:
        raise ManifestError(f"learnware.toml: {where}{key} is {len(v)} characters long, over "
                            f"the limit of {limit}", f"shorten {where}{key}")
    bad = None if free else _CONTROL.search(v)
    if bad:
        raise ManifestError(f"learnware.toml: {where}{key} holds the control character "
                            f"{bad.group()!r}", f"remove it from {where}{key}")
    return v


def _name_list(v: list, field_name: str, limit: int) -> list:
    if len(v) > limit:
        raise ManifestError(f"learnware.toml: {field_name} has {len(v)} entries, over the "
                            f"limit of {limit}", f"shorten {field_name}")
    for x in v:
        if isinstance(x, str) and (len(x) > MAX_NAME_CHARS or _CONTROL.search(x)):
            raise ManifestError(f"learnware.toml: {field_name} holds {_short(x)}: names are at "
                                f"most {MAX_NAME_CHARS} characters, without control characters",
                                f"fix {field_name}")
    return v


def _choice(v: str, allowed, field_name: str) -> str:
    if v not in allowed:
        raise ManifestError(f"learnware.toml: {field_name} = {v!r} is not allowed; expected one "
                            f"of {', '.join(allowed)}", f"set {field_name} to an allowed value")
    return v


def _outputs(out: dict, task: str) -> tuple[tuple[str, ...], tuple]:
    """The ``[output]`` table: (output names, class values as written). Classification lists
    its ``classes`` (names: their label strings); regression its ``dimension`` and optional
    ``names`` (default ``y``, or ``y0``, ``y1``, ...). Errors: :class:`ManifestError` naming
    the field."""
    if task == "classification":
        classes = _name_list(_req(out, "classes", list, "output."), "output.classes",
                             MAX_OUTPUTS)
        odd = [c for c in classes if not isinstance(c, (str, int, float))
               or isinstance(c, float) and not math.isfinite(c)
               or isinstance(c, int) and abs(c) >= 2 ** 63]
        if odd:
            raise ManifestError(f"learnware.toml: output.classes holds {_short(odd[:3])}; class "
                                "labels are strings, 64-bit integers, finite floats or booleans",
                                "list the labels the model predicts")
        labels = [label_str(c) for c in classes]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ManifestError("learnware.toml: output.classes must list at least 2 distinct "
                                f"labels, got {classes!r} (compared as {labels}: booleans are "
                                "1 and 0, 1.0 is 1)", "list every class the model predicts once")
        return tuple(labels), tuple(classes)
    dim = _req(out, "dimension", int, "output.")
    if not 1 <= dim <= MAX_OUTPUTS:
        raise ManifestError(f"learnware.toml: output.dimension must be 1 to {MAX_OUTPUTS}, "
                            f"got {_short(dim)}", "set output.dimension = 1 for a single target")
    names = out.get("names") or (["y"] if dim == 1 else [f"y{i}" for i in range(dim)])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ManifestError("learnware.toml: output.names must be an array of names, got "
                            f"{_short(names)}", "list one name per output")
    _name_list(names, "output.names", MAX_OUTPUTS)
    if len(set(nfc_all(names))) != len(names):
        raise ManifestError("learnware.toml: output.names has duplicate names", "rename them")
    if len(names) != dim:
        raise ManifestError(f"learnware.toml: output.names has {len(names)} names for "
                            f"dimension {dim}", "give one name per output")
    return tuple(nfc_all(names)), ()


def manifest_from_dict(d: dict) -> Manifest:
    """A :class:`Manifest` from a parsed ``learnware.toml`` (see the README for the schema).
    Errors: :class:`ManifestError` naming the field, what it holds and how to fix it."""
    if not isinstance(d, dict):
        raise ManifestError("learnware.toml must be a table", "see the README for the schema")
    name = _req(d, "name", str)
    if not NAME_RE.match(name):
        raise ManifestError(f"learnware.toml: name {_short(name)} must be 1-128 letters, digits, '.', '_'"
                            " or '-', starting with a letter or digit", "rename it")
    version = _text(d, "version", 64)
    description = _text(d, "description", MAX_DESCRIPTION_CHARS, free=True)
    if not description.strip():
        raise ManifestError("learnware.toml: description is empty", "describe the model in a sentence")
    license_ = _text(d, "license", 128)
    tags = _name_list(_req(d, "tags", list), "tags", MAX_TAGS)
    for t in tags:
        if not isinstance(t, str) or not TAG_RE.match(t):
            raise ManifestError(f"learnware.toml: tag {_short(t)} must be a short string of "
                                "letters, digits and . _ : / -", "fix the tags list")
    data_type = _choice(_req(d, "data_type", str), DATA_TYPES, "data_type")
    task = _choice(_req(d, "task", str), TASKS, "task")
    objective = _choice(_req(d, "objective", str), OBJECTIVES[task], "objective")
    inp = _req(d, "input", dict)
    features = _name_list(_req(inp, "features", list, "input."), "input.features", MAX_FEATURES)
    if not features or not all(isinstance(f, str) and f for f in features):
        raise ManifestError("learnware.toml: input.features must be a non-empty list of names",
                            "list the model's input columns in order")
    features = nfc_all(features)   # compared with data files' column names, also NFC
    if len(set(features)) != len(features):
        raise ManifestError("learnware.toml: input.features has duplicate names", "rename them")
    outputs, class_values = _outputs(_req(d, "output", dict), task)
    model = _req(d, "model", dict)
    fmt = _choice(_req(model, "format", str, "model."), MODEL_FORMATS, "model.format")
    mfile = _req(model, "file", str, "model.")
    check_model_file(mfile)
    package = d.get("package", {})
    if not isinstance(package, dict):
        raise ManifestError(f"learnware.toml: field 'package' must be a table, got "
                            f"{_TYPE_NAMES.get(type(package), type(package).__name__)}",
                            "remove it: lw pack writes it")
    return Manifest(name=name, version=version, description=description, license=license_,
                    tags=tuple(tags), data_type=data_type, task=task, objective=objective,
                    features=tuple(features), outputs=outputs, model_format=fmt,
                    model_file=mfile, package=dict(package),
                    class_values=class_values)


def check_model_file(mfile: str) -> str:
    """A model file name a learnware may store: ``MODEL_FILE_RE``, and none of the names the
    market keeps beside it (``learnware.toml``, ``rkme.json``, ``record.json``, in any case)."""
    if not MODEL_FILE_RE.match(mfile):
        raise ManifestError(f"learnware.toml: model.file {_short(mfile)} must be a plain file "
                            "name: 1-100 letters, digits, '.', '_' or '-', starting with a letter "
                            "or digit", "name it model.<ext> (e.g. model.skops)")
    if mfile.lower() in RESERVED_NAMES:
        raise ManifestError(f"learnware.toml: model.file {mfile!r} is a name the market keeps "
                            f"for its own files ({', '.join(sorted(RESERVED_NAMES))})",
                            "name it model.<ext> (e.g. model.skops)")
    return mfile


def manifest_from_text(text: str, source: str = "learnware.toml") -> Manifest:
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{source} is {len(text)} characters long, over the "
                            f"{MAX_MANIFEST_BYTES}-byte limit", "shorten it")
    try:
        d = _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        raise ManifestError(f"{source} is not valid TOML: {exc}", "fix the syntax") from exc
    return manifest_from_dict(d)


def read_manifest(path: str | Path) -> Manifest:
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"manifest {p} does not exist", "write a learnware.toml (see README)")
    if p.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{p} is {p.stat().st_size} bytes, over the {MAX_MANIFEST_BYTES}-"
                            "byte limit for a manifest", "shorten it")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{p} is not UTF-8 text", "save it as UTF-8") from exc
    return manifest_from_text(text, str(p))
