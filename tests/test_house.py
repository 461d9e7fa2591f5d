"""The house rules the code map in the README promises, checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "lwcli"
MAX_LINES = 60


def _modules():
    return sorted(PKG.rglob("*.py"))


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_long_function_without_a_reason():
    """A function whose body (docstring included, signature not: a command's options are
    declarations) is over 60 lines says why in its docstring ("Long because ...")."""
    long = []
    for path in _modules():
        for fn in _functions(ast.parse(path.read_text())):
            lines = fn.end_lineno - fn.body[0].lineno + 1
            doc = ast.get_docstring(fn) or ""
            if lines > MAX_LINES and "Long because" not in doc:
                long.append(f"{path.relative_to(PKG.parent)}:{fn.lineno} {fn.name} ({lines} lines)")
    assert not long, "split these or say why in the docstring:\n" + "\n".join(long)


def test_exceptions_live_in_errors_module():
    where = []
    for path in _modules():
        if path.name == "errors.py" and path.parent == PKG:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if any(b.endswith(("Error", "Exception", "Warning")) for b in bases):
                    where.append(f"{path.relative_to(PKG.parent)}: {node.name}")
    assert not where, "exception classes belong in lwcli/errors.py:\n" + "\n".join(where)


@pytest.mark.parametrize("call", ["open", "read_bytes", "read_text", "write_bytes", "write_text",
                                  "mkdir", "unlink", "replace", "rename"])
def test_engine_does_no_file_io(call):
    hits = []
    for path in sorted((PKG / "engine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
                else ""
            # str.replace is text, not a file: only a call on a Path-like receiver counts
            if name == call and not (call == "replace" and len(node.args) == 2):
                hits.append(f"{path.relative_to(PKG.parent)}:{node.lineno}")
    assert not hits, f"the engine does no file I/O ({call}):\n" + "\n".join(hits)
