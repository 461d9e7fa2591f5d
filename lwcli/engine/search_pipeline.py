"""The search of one island as one pure function: exact or sketch, the single ranking, the
re-ranking by the requirement, and the mixture (seed sec. 3.3, eq. 3).

:func:`run_search` owns the policy decisions that turn the kernels of
:mod:`lwcli.engine.search` into an answer: when the sketch index is used, how many matches
are kept, when and how deep the ranking is re-ranked by the models' loss on the
requirement, and the mixture over the best matches. It takes in-memory inputs only (the
island's :class:`SpecStack`, its sketch, a mask, the requirement's RKME and a callable that
runs a model) and reads no file, so ``lw search`` and the quality benchmark run the same
code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .rkme import RKME
from .search import (MIXTURE_CANDIDATES, RERANK_SHORTLIST, SKETCH_CANDIDATES,
                     SKETCH_MIN_LEARNWARES, IslandSketch, Mixture, Ranking, SpecStack,
                     mixture_search, rank_single, requirement_notes,
                     requirement_sample)
from .search import rerank as rerank_by_loss

# ``outputs_of(indices, inputs)``: for each of the stack's learnwares ``indices`` (one call
# for the whole shortlist, so a caller can run them in one contained child), its outputs on
# ``inputs`` ((n, n_inputs), raw coordinates), shape (n, n_outputs): values, or class
# probabilities in the island's class order; ``None`` for a model that cannot be run
OutputsOf = Callable[[list, np.ndarray], list]


@dataclass(frozen=True)
class SearchOutcome:
    """What :func:`run_search` found. Indices are rows of the island's stack."""

    mode: str                  # "xy" (label-aware requirement) or "x" (inputs only)
    order: np.ndarray          # indices, best first (re-ranked when ``ranked_by`` says so)
    rkme_order: np.ndarray     # the same indices by RKHS distance alone, best first
    mmd2: np.ndarray           # (N,) squared MMD to each learnware (NaN: not computed)
    scores: np.ndarray         # (N,) ``1 - MMD / sqrt(2)`` (:meth:`Ranking.score`)
    losses: dict               # index -> loss on the requirement (MSE or Brier), evaluated ones
    ranked_by: str             # "rkme" or "requirement-loss"
    mixture: Mixture           # seed eq. 3 over the best matches
    searched: dict             # learnwares, eligible, method, exact_mmd, sketch_candidates
    notes: tuple               # warnings about the requirement


def uses_sketch(n: int, exact: bool | None) -> bool:
    """Whether to shortlist through the sketch index: ``exact=False`` always, ``exact=True``
    never, ``None`` above :data:`SKETCH_MIN_LEARNWARES` learnwares."""
    return exact is False or (exact is None and n > SKETCH_MIN_LEARNWARES)


def run_search(stack: SpecStack, user: RKME, *, sketch: IslandSketch | None = None,
               allowed: np.ndarray | None = None, top: int = 10,
               rerank: int = RERANK_SHORTLIST, max_members: int = 5,
               exact: bool | None = None, device=None,
               outputs_of: OutputsOf | None = None) -> SearchOutcome:
    """Rank an island's learnwares against the requirement ``user`` and find the mixture.

    ``stack``: the island's N stacked specifications; ``sketch``: its sketch index, used as
    :func:`uses_sketch` decides (``exact``); ``allowed``: (N,) boolean mask of the eligible
    learnwares (``None``: all). The best ``max(top, rerank, MIXTURE_CANDIDATES)`` are
    ordered (:func:`lwcli.engine.search.rank_single`). A label-aware requirement (kind
    ``"joint"``, output mode ``"xy"``) with ``rerank > 0`` and ``outputs_of`` re-ranks the
    ``rerank`` best by each model's loss on the requirement's reduced points
    (:func:`lwcli.engine.search.rerank`); the mixture is always the RKME one over the best
    :data:`MIXTURE_CANDIDATES` (seed eq. 3, :func:`lwcli.engine.search.mixture_search`, at
    most ``max_members``). Raises :class:`~lwcli.errors.MetricMismatchError` when ``user``
    was fitted with another metric than the island's.
    """
    use_sketch = uses_sketch(stack.n, exact)
    keep = max(top, rerank, MIXTURE_CANDIDATES)
    ranking = rank_single(stack, user, device, sketch=sketch if use_sketch else None,
                          keep=keep, allowed=allowed)
    rkme_order = np.asarray(ranking.order, dtype=np.int64)
    order, losses, ranked_by = rkme_order, {}, "rkme"
    if ranking.kind == "joint" and rerank > 0 and outputs_of is not None:
        shortlist = [int(j) for j in rkme_order[:rerank]]
        X, _, _ = requirement_sample(user)
        outs = dict(zip(shortlist, outputs_of(shortlist, X)))
        rr = rerank_by_loss(rkme_order, user, lambda j, _: outs.get(j), rerank)
        order, ranked_by = rr.order, "requirement-loss"
        losses = {int(j): float(v) for j, v in zip(rr.order, rr.losses) if np.isfinite(v)}
    mix = mixture_search(stack, user, ranking, max_members=max_members, device=device)
    eligible = stack.n if allowed is None else int(np.asarray(allowed).sum())
    searched = {"learnwares": stack.n, "eligible": eligible,
                "method": "sketch" if use_sketch else "exact",
                "exact_mmd": ranking.shortlist if use_sketch else eligible,
                "sketch_candidates": SKETCH_CANDIDATES if use_sketch else None}
    notes = tuple(requirement_notes(user.n_rows, ranking.kind == "joint"))
    return SearchOutcome(ranking.mode, order, rkme_order, ranking.mmd2,
                         Ranking.score(ranking.mmd2), losses, ranked_by, mix, searched, notes)


NOT_COMPARABLE = (
    "without labels (or with --rerank 0), RKHS distances over different feature sets are not "
    "comparable: a distance over fewer features is smaller by construction, not because the "
    "match is better; single is the ranking of island {island} (the one that uses the most "
    "of your columns), and islands (in --json) lists each island's own ranking")


def merge_islands(outcomes: list, keep: int) -> tuple[list, str, int, str | None]:
    """One ranking over the searches of several islands (seed sec. 5: a user served across
    the specification world); ``outcomes[0]`` is the primary island (the one using the most
    of the user's columns). Returns ``(entries, ranked_by, lead, note)``: up to ``keep``
    ``(island position, learnware index)`` pairs best first, how they are ranked, the
    position of the island of the best entry, and why the ranking covers one island only
    (``None`` when it covers all).

    Labelled and re-ranked everywhere: one ranking by the requirement's loss, which is the
    same target and the same loss on every island, so comparable (the learnwares no island
    evaluated follow, taking turns island by island in each island's distance order).
    Otherwise the primary island's ranking alone, with ``NOT_COMPARABLE`` as the note.
    """
    if len(outcomes) == 1 or not all(o.ranked_by == "requirement-loss" for o in outcomes):
        first = outcomes[0]
        note = None if len(outcomes) == 1 else NOT_COMPARABLE
        return [(0, int(j)) for j in first.order[:keep]], first.ranked_by, 0, note
    scored = sorted((loss, p, int(j)) for p, o in enumerate(outcomes)
                    for j, loss in o.losses.items())
    entries = [(p, j) for _, p, j in scored]
    seen = set(entries)
    queues = [[(p, int(j)) for j in o.order if (p, int(j)) not in seen]
              for p, o in enumerate(outcomes)]
    for turn in range(max(len(q) for q in queues)):
        if len(entries) >= keep:
            break
        entries += [q[turn] for q in queues if turn < len(q)]
    entries = entries[:keep]
    return entries, "requirement-loss", entries[0][0] if entries else 0, None


__all__ = ["SearchOutcome", "OutputsOf", "run_search", "uses_sketch", "merge_islands",
           "NOT_COMPARABLE"]
