"""lw's scores are scikit-learn's (sklearn.metrics), on hand-made cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from lwcli.engine.metrics import classification_scores, regression_scores

EPS = np.finfo(np.float64).eps


def test_regression_single_output_is_sklearn():
    y = np.array([3.0, -0.5, 2.0, 7.0, 4.2])
    p = np.array([2.5, 0.0, 2.0, 8.0, 3.9])
    s = regression_scores(y, p)
    assert s["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), rel=1e-12)
    assert s["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-12)
    assert s["r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-12)
    assert s == regression_scores(y, p.reshape(-1, 1))          # (n,) and (n, 1) agree


def test_regression_several_outputs_pool_entries_and_weight_r2_by_variance():
    y = np.array([[0.5, 1.0, 10.0], [-1.0, 1.0, 20.0], [7.0, -6.0, 30.0], [2.0, 0.0, 45.0]])
    p = np.array([[0.0, 2.0, 12.0], [-1.0, 2.0, 18.0], [8.0, -5.0, 33.0], [1.5, 0.5, 40.0]])
    s = regression_scores(y, p)
    err = p - y
    assert s["rmse"] == pytest.approx(np.sqrt((err ** 2).mean()), rel=1e-12)   # all entries
    assert s["mae"] == pytest.approx(np.abs(err).mean(), rel=1e-12)
    ss_res, ss_tot = (err ** 2).sum(), ((y - y.mean(0)) ** 2).sum()
    assert s["r2"] == pytest.approx(1 - ss_res / ss_tot, rel=1e-12)            # pooled R²
    assert s["r2"] == pytest.approx(skm.r2_score(y, p, multioutput="variance_weighted"),
                                    rel=1e-12)


def test_regression_degenerate_targets():
    c = np.full(6, 2.0)
    assert regression_scores(c, c)["r2"] == 1.0                 # scikit-learn's force_finite
    assert regression_scores(c, c + 0.5)["r2"] == 0.0
    assert regression_scores([1.0], [3.0]) == {"rmse": 2.0, "mae": 2.0, "r2": 0.0}   # one row


@pytest.mark.parametrize("y, pred", [
    (["cat", "dog", "dog", "bird", "cat", "dog"], ["cat", "dog", "cat", "cat", "cat", "fish"]),
    ([True, False, True, True, False], [True, True, True, False, False]),
    ([0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 2, 1, 1, 0]),
])
def test_accuracy_and_macro_f1_are_sklearn(y, pred):
    s = classification_scores(np.asarray(y), np.asarray(pred))
    labels = sorted(set(y) | set(pred))        # the labels in y or pred, as the old code took
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), rel=1e-12)
    assert s["f1"] == pytest.approx(skm.f1_score(y, pred, labels=labels, average="macro",
                                                 zero_division=0), rel=1e-12)


def test_labels_are_compared_as_strings():
    # 1, 1.0, True and "1" are one class (lwcli.labels.label_str)
    s = classification_scores([1, 0, 1, 0], np.array(["1", "0", "0", "0"]))
    assert s["accuracy"] == 0.75
    assert classification_scores([True, False], [1.0, 0.0]) == {"accuracy": 1.0, "f1": 1.0}


def test_log_loss_is_sklearns_with_a_zero_probability_for_the_true_class():
    y = np.array(["b", "a", "c", "a", "b"])
    classes = ["c", "a", "b"]                   # the island's order, not sorted
    P = np.array([[0.1, 0.2, 0.7], [0.0, 1.0, 0.0], [0.6, 0.3, 0.1],
                  [0.5, 0.0, 0.5],              # the true class has probability 0
                  [0.2, 0.2, 0.6]])
    pred = np.asarray(classes, dtype=object)[P.argmax(1)]
    got = classification_scores(y, pred, P, classes)["log_loss"]
    sorted_P = P[:, [1, 2, 0]]                  # columns in sorted label order: a, b, c
    assert got == pytest.approx(skm.log_loss(y, sorted_P, labels=["a", "b", "c"]), rel=1e-12)
    p_true = np.array([0.7, 1.0, 0.6, 0.0, 0.6])
    assert got == pytest.approx(-np.log(np.clip(p_true, EPS, 1 - EPS)).mean(), rel=1e-12)
    # the old lw clipped at 1e-15 and gave (ln 1e15 + ...)/5: scikit-learn's is larger
    assert got - (-np.log(np.clip(p_true, 1e-15, 1.0)).mean()) == pytest.approx(
        np.log(1e-15 / EPS) / 5, rel=1e-6)


def test_log_loss_with_bool_and_int_labels_and_classes():
    yb = np.array([True, False, True])
    Pb = np.array([[0.3, 0.7], [0.6, 0.4], [1.0, 0.0]])     # columns: False, True
    got = classification_scores(yb, [True, False, False], Pb, [False, True])["log_loss"]
    assert got == pytest.approx(skm.log_loss(yb, Pb, labels=[False, True]), rel=1e-12)
    assert got == classification_scores(yb, [1, 0, 0], Pb, ["0", "1"])["log_loss"]
    yi = np.array([2, 0, 1, 2])
    Pi = np.array([[0.1, 0.1, 0.8], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.0, 0.5, 0.5]])
    got = classification_scores(yi, Pi.argmax(1), Pi, [0, 1, 2])["log_loss"]
    assert got == pytest.approx(skm.log_loss(yi, Pi, labels=[0, 1, 2]), rel=1e-12)


def test_log_loss_true_label_outside_the_classes_counts_as_probability_zero():
    P = np.array([[0.7, 0.3], [0.6, 0.4]])
    got = classification_scores(["a", "z"], ["a", "a"], P, ["a", "b"])["log_loss"]
    assert got == pytest.approx(-(np.log(0.7) + np.log(EPS)) / 2, rel=1e-12)
    lone = classification_scores(["a", "a"], ["a", "a"], np.ones((2, 1)), ["a"])["log_loss"]
    assert lone == pytest.approx(-np.log(1 - EPS), abs=1e-15)


def test_log_loss_of_float32_probabilities_is_quiet_and_float64():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(3), size=20).astype(np.float32)
    y = rng.integers(0, 3, size=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # rows of float32 miss 1 by ~1e-7: no warning
        got = classification_scores(y, P.argmax(1), P, [0, 1, 2])["log_loss"]
    with pytest.warns(UserWarning, match="do not sum to one"):     # scikit-learn alone warns
        want = skm.log_loss(y, P.astype(np.float64), labels=[0, 1, 2])
    assert got == pytest.approx(want, rel=1e-12)
