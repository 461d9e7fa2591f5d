"""All printing of the CLI: data to stdout, everything else (logs, errors) to stderr.

Every JSON document goes through :func:`print_json`, which stamps it with
``"schema_version"``; ``schemas/<name>.schema.json`` at the repository root describes each.
Lists of rows (``lw market ls``, ``lw search``) go through :func:`print_rows`: a rich table,
TSV, CSV, JSON lines, or the ids alone.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Optional, Sequence

from rich.console import Console
from rich.markup import escape as _escape_markup

#: The version of every JSON document lw prints (``"schema_version"``). Raised only when a
#: field is removed or changes meaning; new fields may appear without it.
SCHEMA_VERSION = 1

#: The JSON outputs, by schema name: ``schemas/<name>.schema.json`` describes each.
SCHEMAS = ("spec", "spec-batch", "pack", "submit", "search", "reuse", "anchor-eval",
           "market-init", "market-ls", "market-info", "market-world", "market-refresh",
           "market-verify")


def write(text: str) -> None:
    """Write ``text`` on stdout, all of it, or raise :class:`BrokenPipeError`.

    ``sys.stdout.write`` is not enough: when the reader goes away during a large write, the
    kernel reports a short write, CPython's buffered writer passes the short count up and
    the text layer drops the rest without an error. Then ``lw ... | head -1`` would exit 0
    having silently lost its output, instead of exiting as documented (see _errors)."""
    stream = sys.stdout
    buf = getattr(stream, "buffer", None)
    if buf is None:                       # a stream without bytes below (tests capture so)
        stream.write(text)
        stream.flush()
        return
    stream.flush()                        # what the text layer holds goes first
    data = memoryview(text.encode(stream.encoding or "utf-8", errors="replace"))
    while data:
        n = buf.write(data)
        data = data[n:]
    buf.flush()


class _Stdout:
    """stdout for rich, through :func:`write`; looked up at each call (tests replace it)."""

    def write(self, text: str) -> int:
        write(text)
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return sys.stdout.isatty()

    def fileno(self) -> int:
        return sys.stdout.fileno()

    @property
    def encoding(self) -> str:
        return getattr(sys.stdout, "encoding", None) or "utf-8"


# ------------------------------------------------------------------ untrusted text
# Control characters (C0 but tab and newline, DEL, C1) and bidirectional overrides in text that
# came from a package (a description, a name, a message quoting one) could move the cursor,
# clear the screen, set the terminal's title or reorder what is shown. Every text written for
# a terminal goes through safe_text, which writes them as visible escapes (\x1b, \u202e).
# JSON output needs no such step: json.dumps escapes them all (ensure_ascii).
_UNSAFE = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), *range(0x7f, 0xa0))}
_UNSAFE.update({c: f"\\u{c:04x}" for c in (*range(0x202a, 0x202f), *range(0x2066, 0x206a))})
_UNSAFE_LINES = {c: v for c, v in _UNSAFE.items() if c not in (0x09, 0x0a)}


def safe_text(text, *, lines: bool = False) -> str:
    """``text`` with control characters and bidi overrides written as visible escapes;
    ``lines``: keep newlines and tabs (a multi-line message)."""
    return str(text).translate(_UNSAFE_LINES if lines else _UNSAFE)


def safe_markup(text) -> str:
    """Untrusted ``text`` to embed in rich markup: made safe, and its brackets escaped."""
    return _escape_markup(safe_text(text))


class _SafeConsole(Console):
    """A rich console that writes every string it is given through :func:`safe_text`."""

    def print(self, *objects, **kwargs) -> None:  # noqa: A003 (rich's name)
        super().print(*(safe_text(o, lines=True) if isinstance(o, str) else o
                        for o in objects), **kwargs)


class _Console(_SafeConsole):
    def on_broken_pipe(self) -> None:
        # rich would silence the console and exit 1 by itself; lw's boundary (_errors) exits
        # as documented instead
        raise BrokenPipeError(errno.EPIPE, "the reader of lw's output went away")


out = _Console(file=_Stdout(), soft_wrap=True)     # stdout: results
err = _SafeConsole(stderr=True, soft_wrap=True)    # stderr: logs, progress, errors


def _clean(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def print_json(obj: dict, schema: str) -> None:
    """One JSON document on stdout, nothing else: ``obj`` with ``"schema_version"`` first.

    ``schema`` names the document's schema (one of :data:`SCHEMAS`)."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown JSON schema {schema!r}")
    doc = {"schema_version": SCHEMA_VERSION, **obj}
    write(json.dumps(_clean(doc), indent=2, sort_keys=False) + "\n")


def info(msg: str) -> None:
    err.print(msg, highlight=False, markup=False)


def warn(msg: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {safe_markup(msg)}", highlight=False)


def error(msg: str) -> None:
    """An error that does not stop the command (one file of a batch), worded as the CLI
    boundary words the errors that do."""
    err.print(f"lw: error: {msg}", highlight=False, markup=False)


# ------------------------------------------------------------------------------ rows

class Format(str, Enum):
    """How :func:`print_rows` writes a list of rows."""

    table = "table"
    tsv = "tsv"
    csv = "csv"
    jsonl = "jsonl"


@dataclass(frozen=True)
class Column:
    """One column of a list of rows.

    ``key`` is the row's field, and the header of TSV and CSV; ``title`` the table's header
    (default: ``key``); ``cell(row)`` is the row's text in the table (default: the value as
    it is; TSV and CSV always hold the full value); ``fold``: the table may fold the column over several lines (an id never is);
    ``table``: False for a column of TSV and CSV only (e.g. the one a table is grouped by)."""

    key: str
    title: Optional[str] = None
    cell: Optional[Callable[[dict], str]] = None
    justify: str = "left"
    fold: bool = False
    table: bool = True


def _plain(v) -> str:
    """A value as one TSV/CSV cell: full precision, lists comma-joined, no tabs or newlines."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return ",".join(_plain(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(_clean(v), separators=(",", ":"))
    return safe_text(" ".join(str(v).split("\t")).replace("\r", " ").replace("\n", " "))


def print_rows(rows: Sequence[dict], columns: Sequence[Column], *,
               fmt: Format | str = Format.table, quiet: bool = False,
               title: Optional[str] = None, group: Optional[str] = None,
               group_title: Callable[[Any], str] = str, id_key: str = "id") -> None:
    """Write ``rows`` on stdout.

    - ``quiet``: the ids alone (``row[id_key]``), one per line;
    - ``tsv`` / ``csv``: a header row of the columns' keys, then one line per row;
    - ``jsonl``: each row as one JSON object (every field of the row, not only ``columns``);
    - ``table``: a rich table (one per value of ``group``, titled ``group_title(value)``).
      When stdout is not a terminal the table is as wide as its content: no cell is folded
      or cut, whatever the width of the terminal the command runs in.
    """
    fmt = Format(fmt)
    if quiet:
        write("".join(f"{r[id_key]}\n" for r in rows))
    elif fmt is Format.jsonl:
        write("".join(json.dumps(_clean(r)) + "\n" for r in rows))
    elif fmt in (Format.tsv, Format.csv):
        keys = [c.key for c in columns]
        lines = [keys, *([_plain(r.get(k)) for k in keys] for r in rows)]
        if fmt is Format.csv:
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(lines)
            write(text.getvalue())
        else:
            write("".join("\t".join(line) + "\n" for line in lines))
    else:
        groups = [(title, list(rows))] if group is None else \
            [(group_title(g), [r for r in rows if r[group] == g])
             for g in sorted({r[group] for r in rows})]
        for t_title, t_rows in groups:
            _print_table(t_rows, columns, t_title, id_key)


def print_csv(frame) -> None:
    """A pandas DataFrame as CSV on stdout (no index), as ``to_csv`` writes it to a file."""
    write(frame.to_csv(index=False))


def _print_table(rows: Sequence[dict], columns: Sequence[Column], title: Optional[str],
                 id_key: str) -> None:
    from rich.measure import Measurement
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    columns = [c for c in columns if c.table]
    for c in columns:
        if c.key == id_key:
            t.add_column(c.title or c.key, justify=c.justify, no_wrap=True,
                         min_width=max([16, *(len(str(r[id_key])) for r in rows)]))
        elif c.fold:
            t.add_column(c.title or c.key, justify=c.justify, overflow="fold")
        else:
            t.add_column(c.title or c.key, justify=c.justify, no_wrap=True)
    from rich.text import Text

    for r in rows:   # Text: a cell is shown as it is, never read as rich markup
        t.add_row(*[Text(safe_text(c.cell(r)) if c.cell else _plain(r.get(c.key)))
                    for c in columns])
    if not out.is_terminal:          # a pipe or a file: as wide as the content, nothing folded
        t.width = Measurement.get(out, out.options.update_width(1 << 20), t).maximum
    out.print(t)
