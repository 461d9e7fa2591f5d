"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

Market = typer.Option(None, "--market", "-m", envvar="LW_MARKET",
                      help="Market directory (default: $LW_MARKET).", show_default=False)
Json = typer.Option(False, "--json", help="Print one JSON object on stdout, nothing else.")
Device = typer.Option(None, "--device", envvar="LW_DEVICE",
                      help="auto | cpu | cuda | cuda:N (default: $LW_DEVICE or auto).",
                      show_default=False)
OptPath = Optional[Path]
