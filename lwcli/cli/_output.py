"""All printing of the CLI: data to stdout, everything else (logs, errors) to stderr."""

from __future__ import annotations

import json
import math
import sys

from rich.console import Console

out = Console(soft_wrap=True)                      # stdout: results
err = Console(stderr=True, soft_wrap=True)          # stderr: logs, progress, errors


def _clean(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def print_json(obj) -> None:
    """One JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def info(msg: str) -> None:
    err.print(msg, highlight=False)


def warn(msg: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {msg}", highlight=False)
