"""One function per use case. The CLI is a thin layer over these; Python users call them too.

Each function validates its inputs, resolves the device once, calls the pure engine and
returns a frozen result. Failures raise :class:`lwcli.errors.LwError` subclasses and leave the
market exactly as it was. One module per use case:

==============  ===============================================================
``spec``        :func:`build_spec`, :func:`build_specs`, :func:`write_spec`
``pack``        :func:`pack`
``submit``      :func:`submit`
``search``      :func:`search` (RKME ranking and mixture)
``anchors``     :func:`anchor_eval` and the search from its report
``reuse``       :func:`reuse`, :func:`load_learnwares`
``market``      :func:`market_init`, ``_ls``, ``_info``, ``_world``, ``_refresh``, ``_verify``
==============  ===============================================================
"""

from __future__ import annotations

from .anchors import anchor_eval
from .market import (market_info, market_init, market_ls, market_refresh, market_verify,
                     market_world)
from .pack import pack
from .reuse import load_learnwares, reuse
from .search import search
from .spec import build_spec, build_specs, write_spec  # noqa: F401 (build_specs: public)
from .submit import submit

__all__ = ["build_spec", "write_spec", "pack", "submit", "search", "reuse", "load_learnwares",
           "anchor_eval", "market_init", "market_ls", "market_info", "market_world",
           "market_refresh", "market_verify"]
