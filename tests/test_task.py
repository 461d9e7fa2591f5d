"""Task inference from a label column (lwcli.engine.task.infer_task)."""

from __future__ import annotations

import numpy as np
import pytest

from lwcli.engine.task import MAX_CLASSES, MIN_REPEATS, infer_task


@pytest.mark.parametrize("y, task", [
    (np.array(["a", "b", "a"], dtype=object), "classification"),      # text: classes
    (np.array([True, False, True]), "classification"),                # booleans: classes
    (np.array([0, 1, 2] * 10), "classification"),                     # few repeated integers
    (np.array([0.0, 1.0] * 5), "classification"),                     # integral floats
    (np.arange(20, dtype=float), "regression"),                       # 20 distinct in 20 rows
    (np.array([0.5, 1.5] * 10), "regression"),                        # not integral
    (np.arange(MAX_CLASSES + 1).repeat(3), "regression"),             # too many classes
])
def test_infer_task(y, task):
    assert infer_task(y) == task


def test_the_pm25_field_case_is_regression():
    """20 integral PM2.5 readings with 19 distinct values are a regression target."""
    y = np.array([12, 35, 80, 7, 150, 66, 23, 91, 45, 12, 3, 210, 57, 88, 19, 31, 74, 102,
                  140, 9])
    assert len(np.unique(y)) == 19 and infer_task(y) == "regression"


def test_the_repeat_rule_sits_at_its_boundary():
    k = 5
    enough = np.arange(k).repeat(MIN_REPEATS)                  # MIN_REPEATS * k == len(y)
    assert infer_task(enough) == "classification"
    assert infer_task(enough[:-1]) == "regression"             # one row short
