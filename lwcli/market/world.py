"""The specification world: which island a user's columns reach (seed sec. 3.1, 5).

Islands are keyed by their input features (and task, objective, outputs). A user's table
reaches every island whose features it holds, **by name**: its other columns (ids, dates,
text, other sites' measurements) are left, and said so. This module decides which island a
table is matched on; it reads nothing but the islands it is given.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import NotFoundError, UsageError


def reachable(islands: dict, columns: Sequence[str], task: str | None = None) -> list:
    """The islands (of ``task``, when given) whose every feature is among ``columns``,
    most features first (ties by id)."""
    cols = set(columns)
    out = [i for i in islands.values() if set(i.key["features"]) <= cols
           and (task is None or i.key["task"] == task)]
    return sorted(out, key=lambda i: (-len(i.key["features"]), i.id))


def island_for_columns(islands: dict, columns: Sequence[str], *, island: str | None = None,
                       task: str | None = None, unusable: dict | None = None
                       ) -> tuple[object, list[str]]:
    """The island a table with ``columns`` (the usable ones: numeric, measured) is matched
    on, and notes about the choice.

    ``island`` names it (a :class:`NotFoundError` when unknown, a :class:`DataError`
    from the caller's take when a feature is not in the table). Otherwise the reachable island
    that uses the most of the table's columns; a tie between islands is a
    :class:`UsageError` (pass ``--island`` or ``--task``). No reachable island is a
    :class:`NotFoundError` naming the nearest one's missing columns (``unusable``: column ->
    why it cannot be used, e.g. "text" or "0 in every row: not measured").
    """
    if island:
        if island not in islands:
            raise NotFoundError(f"no island {island!r} in this market",
                                f"known islands: {', '.join(sorted(islands)) or 'none'}")
        return islands[island], []
    found = reachable(islands, columns, task)
    if not found and unusable:
        # every feature is in the table, but some hold no usable numbers: the caller's take
        # says what they hold (text, dates, 0 in every row...)
        found = reachable(islands, [*columns, *unusable], task)
    if not found:
        raise _unreachable(islands, columns, task, unusable or {})
    best = found[0]
    ties = [i for i in found if len(i.key["features"]) == len(best.key["features"])]
    if len(ties) > 1:
        raise UsageError(f"{len(ties)} islands take these columns: "
                         f"{', '.join(i.id for i in ties)}", "pick one with --island or --task")
    notes = []
    others = found[1:]
    if others:
        notes.append(f"matched on island {best.id} ({len(best.key['features'])} features); "
                     f"also reachable: " + ", ".join(f"{i.id} ({len(i.key['features'])})"
                                                     for i in others[:4])
                     + "; pass --island to choose")
    return best, notes


def _unreachable(islands: dict, columns, task, unusable: dict) -> NotFoundError:
    cols = set(columns)
    cands = [i for i in islands.values() if task is None or i.key["task"] == task]
    if not cands:
        what = f" for {task}" if task else ""
        return NotFoundError(f"this market has no island{what}",
                             f"islands: {', '.join(sorted(islands)) or 'none'}")
    near = min(cands, key=lambda i: (len(set(i.key["features"]) - cols), i.id))
    lack = [f for f in near.key["features"] if f not in cols]
    why = "; ".join(f"{c!r}: {unusable[c]}" for c in lack[:5] if c in unusable)
    shown = f"{lack[:6]}{'...' if len(lack) > 6 else ''}"
    return NotFoundError(
        f"no island of this market takes the table's {len(cols)} usable columns: the nearest, "
        f"{near.id}, also needs {len(lack)} column{'s' if len(lack) != 1 else ''} {shown}"
        + (f" ({why})" if why else ""),
        "add those columns (names are compared exactly), or see lw market ls")


__all__ = ["reachable", "island_for_columns"]
