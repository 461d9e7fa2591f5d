"""The only module that asks torch about CUDA.

Resolution order: explicit argument > ``LW_DEVICE`` > ``auto``. ``auto`` picks ``cuda`` when a
CUDA device is present, ``cpu`` otherwise. Asking for CUDA where there is none is an error,
never a silent fallback.
"""

from __future__ import annotations

import re

from . import settings
from .errors import DeviceError

_VALID = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(requested: str | None = None):
    """Return a ``torch.device`` for ``requested`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``)."""
    import torch

    name = (requested or settings.device() or "auto").strip().lower()
    if not _VALID.match(name):
        raise DeviceError(
            f"unknown device {name!r}: expected auto, cpu, cuda or cuda:N",
            "pass --device auto|cpu|cuda or set LW_DEVICE accordingly",
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} was asked for, but this torch build sees no CUDA device",
                "use --device cpu (or auto), or install a CUDA build of torch on a GPU machine",
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} was asked for, but only {torch.cuda.device_count()} CUDA device(s) exist",
                "pick an index below the device count",
            )
    return torch.device(name)
