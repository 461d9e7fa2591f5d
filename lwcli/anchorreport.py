"""Anchor reports: what ``lw anchor-eval`` writes on the user's side and ``lw search
--anchor-report`` reads. Scores only — metric values per anchor, the baseline's, the row
count — never a row of data. Validated on load like every other file lw reads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import __version__
from .errors import NotFoundError, ReportError
from .market.layout import ID_RE

FORMAT = "lw-anchor-report"
VERSION = 1
MAX_BYTES = 4 << 20
KEYS = {"format", "version", "created_with", "island", "anchor_set", "task", "objective",
        "n_rows", "metrics", "baseline", "scores"}
#: what ``lw anchor-eval --json`` adds to the report about the user's file (ignored columns,
#: row counts); a report file never holds them, and a reader drops them
JSON_ONLY = ("ignored_columns", "input_rows")
FIX = "make it again with lw anchor-eval"


def make_report(*, island: str, anchor_set: str, task: str, objective: str, n_rows: int,
                scores: list[dict], baseline: dict) -> dict:
    metrics = sorted(scores[0]["scores"]) if scores else []
    return {"format": FORMAT, "version": VERSION, "created_with": f"lw {__version__}",
            "island": island, "anchor_set": anchor_set, "task": task, "objective": objective,
            "n_rows": int(n_rows), "metrics": metrics, "baseline": baseline, "scores": scores}


def _finite_map(d, what: str, src: str) -> dict:
    if not isinstance(d, dict) or not d or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) for k, v in d.items()):
        raise ReportError(f"{src}: {what} must map metric names to finite numbers", FIX)
    return {k: float(v) for k, v in d.items()}


def read_report(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"anchor report {p} does not exist", "check the path")
    if p.stat().st_size > MAX_BYTES:
        raise ReportError(f"{p} is {p.stat().st_size} bytes, larger than any anchor report",
                          FIX)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ReportError(f"{p} is not valid JSON ({exc})", FIX) from exc
    return report_from_dict(doc, str(p))


def report_from_dict(doc, src: str = "anchor report") -> dict:
    """A validated copy of a report (as :func:`lwcli.api.anchor_eval` returns it)."""
    doc = json.loads(json.dumps(doc)) if isinstance(doc, dict) else doc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ReportError(f"{src} is not an lw anchor report (format != {FORMAT!r})", FIX)
    if doc.get("version") != VERSION:
        raise ReportError(f"{src} has version {doc.get('version')!r}, this lw reads {VERSION}",
                          FIX)
    if doc.get("schema_version", 1) != 1:      # a report saved from lw anchor-eval --json
        raise ReportError(f"{src} has schema_version {doc.get('schema_version')!r}, this lw "
                          "reads 1", FIX)
    doc.pop("schema_version", None)
    for key in JSON_ONLY:          # what --json adds about the user's file: not scores, dropped
        doc.pop(key, None)
    extra = sorted(set(doc) - KEYS)
    missing = sorted(KEYS - set(doc) - {"created_with"})
    if extra or missing:
        raise ReportError(f"{src}: unexpected fields {extra} / missing fields {missing}", FIX)
    for k in ("island", "anchor_set", "task", "objective"):
        if not isinstance(doc[k], str) or not doc[k]:
            raise ReportError(f"{src}: {k} must be a non-empty string", FIX)
    if not isinstance(doc["n_rows"], int) or isinstance(doc["n_rows"], bool) or doc["n_rows"] < 1:
        raise ReportError(f"{src}: n_rows must be a positive integer", FIX)
    doc["baseline"] = _finite_map(doc["baseline"], "baseline", src)
    scores = doc["scores"]
    if not isinstance(scores, list) or not scores:
        raise ReportError(f"{src}: scores must be a non-empty list", FIX)
    seen = set()
    for s in scores:
        if not isinstance(s, dict) or set(s) != {"id", "name", "scores"} or \
                not isinstance(s["id"], str) or not ID_RE.match(s["id"]) or s["id"] in seen:
            raise ReportError(f"{src}: each score needs a distinct learnware id, a name and "
                              "its scores, and nothing else", FIX)
        seen.add(s["id"])
        s["scores"] = _finite_map(s["scores"], f"scores of {s['id']}", src)
    return doc
