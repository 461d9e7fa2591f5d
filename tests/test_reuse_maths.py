"""Properties of the anchor and reuse maths (hypothesis), against plain definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwcli.engine.anchors import distances, k_medoids, rank_from_anchors
from lwcli.engine.metrics import classification_scores, regression_scores
from lwcli.engine.reuse.with_user import blend_weights
from lwcli.labels import align_columns

seeds = st.integers(0, 2**31 - 1)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, n_lw=st.integers(2, 9), n_rows=st.integers(5, 40),
       n_anchors=st.integers(1, 4))
def test_anchor_bounds_contain_the_true_loss_when_distances_are_measured_on_the_rows(
        seed, n_lw, n_rows, n_anchors):
    """|RMSE_i - RMSE_a| <= RMS(f_i - f_a), |MAE_i - MAE_a| <= mean|f_i - f_a| and
    |acc_i - acc_a| <= disagreement(i, a): the interval always holds the truth."""
    rng = np.random.default_rng(seed)
    A = min(n_anchors, n_lw)
    pos = rng.choice(n_lw, A, replace=False)
    F = rng.normal(size=(n_lw, n_rows, 1)) * rng.uniform(0.1, 3, size=(n_lw, 1, 1))
    y = rng.normal(size=n_rows)
    for kind, metric in (("rms", "rmse"), ("mae", "mae")):
        true = np.array([regression_scores(y, F[i])[metric] for i in range(n_lw)])
        r = rank_from_anchors(distances(F, F[pos], kind), true[pos], pos)
        assert np.all(r.lower <= true + 1e-9) and np.all(true <= r.upper + 1e-9)
        assert np.all(r.lower <= r.predicted + 1e-9) and np.all(r.predicted <= r.upper + 1e-9)
        assert r.inconsistent == 0.0
        assert sorted(r.order.tolist()) == list(range(n_lw))
    C = 3
    labels = rng.integers(0, C, size=(n_lw, n_rows))
    onehot = np.eye(C)[labels]
    yl = rng.integers(0, C, size=n_rows)
    err = np.array([1.0 - classification_scores(yl, labels[i])["accuracy"] for i in range(n_lw)])
    r = rank_from_anchors(distances(onehot, onehot[pos], "disagreement"), err[pos], pos)
    assert np.all(r.lower <= err + 1e-9) and np.all(err <= r.upper + 1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, n=st.integers(2, 9), k=st.integers(1, 4))
def test_k_medoids_is_locally_optimal(seed, n, k):
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(n, 2))
    D = np.sqrt(((P[:, None] - P[None]) ** 2).sum(-1))
    k = min(k, n)
    m = k_medoids(D, k)
    med = m.index.tolist()
    assert len(set(med)) == k
    assert m.cost == np.float64(D[:, med].min(1).sum())
    np.testing.assert_array_equal(m.index[m.assignment], np.asarray(med)[np.argmin(D[:, med], 1)])
    for slot, h in itertools.product(range(k), range(n)):   # no single swap is better
        if h in med:
            continue
        alt = med.copy()
        alt[slot] = h
        assert D[:, alt].min(1).sum() >= m.cost - 1e-9


@settings(max_examples=30, deadline=None)
@given(seed=seeds, n_lw=st.integers(1, 6), p=st.integers(1, 20), c=st.integers(1, 3))
def test_functional_distances_are_metrics(seed, n_lw, p, c):
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n_lw, p, c))
    for kind in ("rms", "mae", "disagreement"):
        D = distances(F, F, kind)
        assert np.allclose(np.diag(D), 0.0, atol=1e-7) and np.allclose(D, D.T, atol=1e-9)
        assert (D >= 0).all()
        for i, j, k in itertools.product(range(n_lw), repeat=3):
            assert D[i, k] <= D[i, j] + D[j, k] + 1e-7
    ref = np.sqrt(((F[:, None] - F[None]) ** 2).mean(axis=(2, 3)))
    np.testing.assert_allclose(distances(F, F, "rms"), ref, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, c=st.integers(1, 6), n=st.integers(1, 10))
def test_aligning_by_name_undoes_any_column_order(seed, c, n):
    rng = np.random.default_rng(seed)
    classes = [f"k{i}" for i in range(c)]
    P = rng.dirichlet(np.ones(c), size=n)
    perm = rng.permutation(c)
    shuffled = P[:, perm]
    have = [classes[j] for j in perm]
    np.testing.assert_array_equal(align_columns(shuffled, have, classes), P)
    wider = classes + ["extra"]
    out = align_columns(shuffled, have, wider)
    np.testing.assert_array_equal(out[:, :c], P)
    assert (out[:, c] == 0).all()


@settings(max_examples=40, deadline=None)
@given(seed=seeds, m=st.integers(1, 5), n=st.integers(3, 30), w=st.integers(1, 3))
def test_blend_weights_lie_on_the_simplex_and_beat_every_component(seed, m, n, w):
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(m, n, w))
    T = rng.normal(size=(n, w))
    wt = blend_weights(F, T)
    assert wt.shape == (m,) and (wt >= 0).all() and abs(wt.sum() - 1) < 1e-9
    loss = ((np.tensordot(wt, F, axes=1) - T) ** 2).sum(1).mean()
    for a in range(m):
        assert loss <= ((F[a] - T) ** 2).sum(1).mean() + 1e-9


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(20, 400))
def test_blend_guard_ignores_a_gain_that_rests_on_the_worst_rows(seed, n):
    """A blend that wins only on the user model's 1% worst rows, and loses a little on all the
    others, is refused however large that gain; a steady gain on every row is kept."""
    from lwcli.engine.reuse.with_user import MIN_GAIN_Z, trimmed_gain_z

    rng = np.random.default_rng(seed)
    user = rng.gamma(2.0, 1.0, size=n)
    worst = user >= np.quantile(user, 0.99)
    user[worst] *= 100.0                                     # heavy tail
    blend = user + 0.05
    blend[worst] = 0.0                                       # huge gain, there only
    assert blend.mean() < user.mean()                        # the mean alone says: blend
    assert trimmed_gain_z(user, blend) < MIN_GAIN_Z
    steady = user - 0.5 * (1.0 + 0.1 * rng.random(n))        # a gain on every row
    assert trimmed_gain_z(user, steady) > 3.0
    p = rng.permutation(n)
    assert trimmed_gain_z(user[p], steady[p]) == pytest.approx(trimmed_gain_z(user, steady))
    assert trimmed_gain_z(user, user) == 0.0                 # nothing to gain: keep the user model
