"""What every use case's result shares: ``to_dict()`` is the ``--json`` document, and a
result also reads like that document (``result["key"]``), as the dicts it replaced did."""

from __future__ import annotations


class DictView:
    """Mixin for frozen result dataclasses that define ``to_dict()``: ``result[key]`` is
    ``result.to_dict()[key]`` (a ``KeyError`` for a key the document lacks)."""

    def __getitem__(self, key: str):
        return self.to_dict()[key]
