"""What every use case's result shares: ``to_dict()`` is the ``--json`` document, and a
result also reads like that document (``result["key"]``), as the dicts it replaced did."""

from __future__ import annotations

from dataclasses import fields


class DictView:
    """Mixin for frozen result dataclasses: ``to_dict()`` is the fields in declaration order
    (a result whose document differs overrides it), and ``result[key]`` is
    ``result.to_dict()[key]`` (a ``KeyError`` for a key the document lacks)."""

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __getitem__(self, key: str):
        return self.to_dict()[key]
