"""The specification world: one kernel metric per feature, and which island a user's columns
reach (seed sec. 3.1, 5).

**One scale per feature.** MMDs are comparable only under one kernel, and islands can only be
linked if they measure a shared feature the same way. A feature's scale (the ``s_j`` by which
the kernel divides it, :class:`lwcli.engine.kernel.KernelMetric`) is fixed once for the whole
market: by the earliest-created island that measures it (``market.toml`` records every
island's metric, in creation order, so the market's scales are derived from it and need no record of their own,
which a crashed submit's undo could leave stale). A regression output's scale is fixed the
same way, as the target's standard deviation before the output weighting. An island's
bandwidth ``gamma`` stays its own (the median heuristic over its founding learnware's rows
under the market's scales): it must suit the island's dimension and correlations, and
changing it would only widen or narrow the kernel, never change how a feature is measured.
A learnware that founds an island builds its spec with ``lw spec --market`` (which takes the
market's scales for the features it already knows), and ``lw submit`` refuses a founding spec
that measures a known feature at another scale. Islands created before this rule whose scale
for a shared feature differs are *misaligned* (:func:`misaligned`): they keep working on their
own, and are reported, never silently compared.

**Reach.** Islands are keyed by their input features (and task, objective, outputs). A user's
table reaches every island whose features it holds, **by name**: its other columns (ids,
dates, text, other sites' measurements) are left, and said so.

This module reads nothing but the islands it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import MetricMismatchError, NotFoundError, UsageError

#: two scales closer than this (relative) are the same scale (they round-trip through TOML)
SAME_SCALE = 1e-9


@dataclass(frozen=True)
class Measure:
    """How the market measures one feature (or regression output): its ``scale`` and the
    ``island`` that fixed it."""

    scale: float
    island: str


def founders(islands: dict) -> list:
    """The islands in creation order, the order ``market.toml`` lists them in (a submit
    appends its island; timestamps tie within a second): the earlier fixes a scale."""
    return list(islands.values())


def _output_stds(isl) -> dict[str, float]:
    """A regression island's outputs' standard deviations before the output weighting."""
    m = isl.metric
    if isl.key["task"] != "regression" or not m.n_outputs:
        return {}
    k = math.sqrt(m.output_weight * m.n_inputs / m.n_outputs)
    return {o: m.scales[m.n_inputs + j] * k for j, o in enumerate(isl.key["outputs"])}


def feature_scales(islands: dict) -> dict[str, Measure]:
    """Feature -> how the market measures it (the earliest island's scale)."""
    out: dict[str, Measure] = {}
    for isl in founders(islands):
        for j, f in enumerate(isl.key["features"]):
            out.setdefault(f, Measure(float(isl.metric.scales[j]), isl.id))
    return out


def output_scales(islands: dict) -> dict[str, Measure]:
    """Regression output -> its standard deviation as the market fixed it."""
    out: dict[str, Measure] = {}
    for isl in founders(islands):
        for o, v in _output_stds(isl).items():
            out.setdefault(o, Measure(float(v), isl.id))
    return out


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= SAME_SCALE * max(abs(a), abs(b))


def disagreements(islands: dict, features: Sequence[str], outputs: dict[str, float],
                  scales: Sequence[float]) -> list[str]:
    """The features (and regression outputs, ``outputs``: name -> std) that a metric with
    input ``scales`` measures otherwise than the market does, each as a sentence."""
    fs, os_ = feature_scales(islands), output_scales(islands)
    out = [f"feature {f!r} at scale {s:.6g}, the market at {fs[f].scale:.6g} (island "
           f"{fs[f].island})" for f, s in zip(features, scales)
           if f in fs and not _same(s, fs[f].scale)]
    out += [f"output {o!r} at standard deviation {v:.6g}, the market at {os_[o].scale:.6g} "
            f"(island {os_[o].island})" for o, v in outputs.items()
            if o in os_ and not _same(v, os_[o].scale)]
    return out


def misaligned(islands: dict) -> dict[str, list[str]]:
    """Island -> what it measures otherwise than the market (islands made before lw fixed
    one scale per feature); empty for a market whose islands agree."""
    out = {}
    for isl in founders(islands):
        bad = disagreements(islands, isl.key["features"], _output_stds(isl),
                            isl.metric.scales[: isl.metric.n_inputs])
        if bad:
            out[isl.id] = bad
    return out


def founding_scales(islands: dict, features: Sequence[str], outputs: Sequence[str],
                    task: str | None) -> tuple[dict[int, float], dict[int, float]]:
    """The market's scales for a new island's known features and regression outputs, as
    :func:`lwcli.engine.kernel.fit_metric`'s ``fixed`` and ``fixed_outputs``."""
    fs, os_ = feature_scales(islands), output_scales(islands)
    fixed = {j: fs[f].scale for j, f in enumerate(features) if f in fs}
    fixed_out = ({j: os_[o].scale for j, o in enumerate(outputs) if o in os_}
                 if task == "regression" else {})
    return fixed, fixed_out


def check_founding(islands: dict, island_id: str, key: dict, metric, market: str) -> None:
    """A spec that founds island ``island_id`` must measure the market's known features and
    outputs at the market's scales: a :class:`MetricMismatchError` naming them otherwise."""
    from .store import Island

    probe = Island(island_id, key, metric, "", "")
    bad = disagreements(islands, key["features"], _output_stds(probe),
                        metric.scales[: metric.n_inputs])
    if bad:
        raise MetricMismatchError(
            f"the package founds island {island_id} but its specification measures "
            f"{bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
            + ": MMDs on this market are comparable only under one scale per feature",
            f"rebuild the spec with lw spec ... --market {market} and pack again")


def reachable(islands: dict, columns: Sequence[str], task: str | None = None) -> list:
    """The islands (of ``task``, when given) whose every feature is among ``columns``,
    most features first (ties by id)."""
    cols = set(columns)
    out = [i for i in islands.values() if set(i.key["features"]) <= cols
           and (task is None or i.key["task"] == task)]
    return sorted(out, key=lambda i: (-len(i.key["features"]), i.id))


def eligible(islands: dict, columns: Sequence[str], *, task: str | None = None,
             target: str | None = None, labels: Sequence[str] | None = None) -> list:
    """Every island a labelled or unlabelled search of a table with ``columns`` matches on
    (seed sec. 5: a user is served from several islands), most features first: those it
    reaches (:func:`reachable`) whose outputs can hold the user's labels: a regression
    island with the one output ``target``, a classification island whose classes include
    every label of ``labels`` (as strings). Without ``target``, every reachable island."""
    out = reachable(islands, columns, task)
    if target is None:
        return out
    keep = []
    for i in out:
        outputs = list(i.key["outputs"])
        if i.key["task"] == "regression" and outputs == [target]:
            keep.append(i)
        elif i.key["task"] == "classification" and labels is not None \
                and set(labels) <= set(outputs):
            keep.append(i)
    return keep


def _same_task(a, b) -> bool:
    return all(a.key[k] == b.key[k] for k in ("data_type", "task", "objective", "outputs"))


def links(islands: dict) -> list[dict]:
    """The specification world's links (seed sec. 5, Figure 3): island ``island`` is linked
    to island ``to`` when ``to`` takes every feature of ``island`` and more, for the same
    task and outputs. Its learnwares' specifications are weighted joint samples over both
    feature sets, so they carry a user of ``island`` over to ``to`` (her missing features
    estimated from them). Islands linked to a common island are merged into one group."""
    out = []
    for span in founders(islands):
        fs = set(span.key["features"])
        for sub in founders(islands):
            if sub.id != span.id and _same_task(sub, span) and set(sub.key["features"]) < fs:
                out.append({"island": sub.id, "to": span.id,
                            "estimated": [f for f in span.key["features"]
                                          if f not in sub.key["features"]]})
    return out


def groups(islands: dict) -> list[list[str]]:
    """Islands joined by links, each group in creation order; islands without a link are
    left out."""
    parent = {i: i for i in islands}

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for ln in links(islands):
        parent[root(ln["island"])] = root(ln["to"])
    found: dict[str, list[str]] = {}
    for isl in founders(islands):
        found.setdefault(root(isl.id), []).append(isl.id)
    return [g for g in found.values() if len(g) > 1]


def bridged(islands: dict, columns: Sequence[str], reached: Sequence) -> list:
    """Islands a table reaches only through a link: ``(island, estimated features)`` for each
    island that takes more features than the table has, linked from an island it reaches
    (``reached``, e.g. :func:`eligible`'s answer, which also fixes task and outputs)."""
    cols = set(columns)
    have = {i.id for i in reached}
    out = []
    for ln in links(islands):
        span = islands[ln["to"]]
        if ln["island"] in have and span.id not in have and span.id not in [b.id for b, _ in out]:
            out.append((span, [f for f in span.key["features"] if f not in cols]))
    return out


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
    why it cannot be used, e.g. "text" or "0 or empty in every row: not measured").
    """
    if island:
        if island not in islands:
            raise NotFoundError(f"no island {island!r} in this market",
                                f"known islands: {', '.join(sorted(islands)) or 'none'}")
        check_island_task(islands[island], task)
        return islands[island], []
    found = reachable(islands, columns, task)
    from ..intake import NO_DATA

    held = [c for c, why in (unusable or {}).items() if why not in NO_DATA]
    if not found and held:
        # every feature is in the table, but some hold something other than numbers (text,
        # dates, ...): the caller's take says what. A column with no data at all (empty, or
        # never measured) is as if absent: the island is not matched on it
        found = reachable(islands, [*columns, *held], task)
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


def check_island_task(isl, task: str | None) -> None:
    """``--island`` and ``--task`` together must agree: a :class:`UsageError` otherwise."""
    if task is not None and isl.key["task"] != task:
        raise UsageError(f"--task {task} conflicts with --island {isl.id}, a "
                         f"{isl.key['task']} island", "drop one of them")


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


__all__ = ["reachable", "eligible", "check_island_task", "links", "groups", "bridged", "island_for_columns", "Measure", "founders", "feature_scales",
           "output_scales", "disagreements", "misaligned", "founding_scales", "check_founding",
           "SAME_SCALE"]
