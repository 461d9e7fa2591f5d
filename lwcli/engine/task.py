"""What task a label column poses, when nothing declares it.

A user who passes ``--target`` to a market without an island for her columns (or without a
market) gets the task inferred from the labels: text or booleans are classes; numbers are
classes only when they are few integers that repeat. 20 integral PM2.5 readings with 19
distinct values are a regression target, 200 rows of 0/1/2 a classification one.
"""

from __future__ import annotations

import numpy as np

MAX_CLASSES = 20        # more distinct numeric values than this: a regression target
MIN_REPEATS = 2         # every class value must occur this often on average


def infer_task(y) -> str:
    """``"classification"`` or ``"regression"`` for the labels ``y`` (1-D, any dtype).

    Non-numeric labels (strings, objects, booleans) are classes. Numeric labels are
    classes when there are at most :data:`MAX_CLASSES` distinct values, each occurring at
    least :data:`MIN_REPEATS` times on average (``MIN_REPEATS * distinct <= len(y)``), and
    all of them are integral (``np.allclose(y, round(y))``); else they are a regression
    target. A heuristic of lw's, not of the seed paper (which assumes the task is known).
    """
    y = np.asarray(y)
    if y.dtype.kind not in "iuf":
        return "classification"
    distinct = len(np.unique(y))
    if distinct <= MAX_CLASSES and MIN_REPEATS * distinct <= len(y) \
            and np.allclose(y, np.round(y)):
        return "classification"
    return "regression"


__all__ = ["infer_task", "MAX_CLASSES", "MIN_REPEATS"]
