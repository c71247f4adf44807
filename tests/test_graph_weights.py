"""Tests of melrepro.methods.graph_weights: Gaussian kernel, MM graph learning, pruning."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.spatial.distance import pdist

from melrepro.methods.graph_weights import (
    gaussian_weights,
    learn_weights_mm,
    mm_objective,
    prune_weakest,
    standardize_signals,
)


def test_gaussian_weights_known_answer():
    """Check Eq. 2 by hand on three 1-D signals (μ, σ² of the data matrix)."""
    x = np.array([[0.0], [1.0], [3.0]])
    mu, var = x.mean(), x.var()  # 4/3, 14/9
    d = np.array([[0, 1, 3], [1, 0, 2], [3, 2, 0]], dtype=float)
    expected = np.exp(-((d - mu) ** 2) / (2 * var))
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(gaussian_weights(x), expected)


def test_standardize_signals_zero_mean_unit_std_and_constant_columns():
    """Check z-scoring, with a constant column mapped to 0."""
    x = np.column_stack([np.arange(5.0), np.full(5, 7.0)])
    z = standardize_signals(x)
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, 0].std(), 1)
    np.testing.assert_array_equal(z[:, 1], 0)


@pytest.mark.parametrize(("delta", "gamma"), [(1.0, 1.0), (2.0, 0.5)])
def test_mm_reaches_the_optimum_found_by_scipy(delta, gamma):
    """Check MM's solution against L-BFGS-B on the same convex objective (Eq. 5)."""
    rng = np.random.default_rng(3)
    n = 12
    x = standardize_signals(rng.normal(size=(n, 4)))
    res = learn_weights_mm(x, delta=delta, gamma=gamma, tol=1e-13, max_iter=200000)
    assert res.converged
    rows, cols = np.triu_indices(n, 1)
    d = pdist(x)

    def f(w):
        return mm_objective(w, d, rows, cols, n, delta, gamma)

    def grad(w):
        deg = np.bincount(rows, w, n) + np.bincount(cols, w, n)
        return 2 * d - delta * (1 / deg[rows] + 1 / deg[cols]) + 2 * gamma * w

    ref = minimize(f, np.ones_like(d), jac=grad, method="L-BFGS-B",
                   bounds=[(1e-12, None)] * d.size, options={"ftol": 1e-15, "gtol": 1e-12,
                                                         "maxiter": 100000})  # fmt: skip
    w_mm = res.weights[rows, cols]
    assert res.objective == pytest.approx(ref.fun, rel=1e-8, abs=1e-8)
    assert res.objective <= ref.fun + 1e-8
    np.testing.assert_allclose(w_mm, np.clip(ref.x, 0, None), atol=1e-4)
    # result is a valid weight matrix
    np.testing.assert_array_equal(res.weights, res.weights.T)
    assert (np.diag(res.weights) == 0).all()
    assert (res.weights >= 0).all()


def test_mm_objective_never_increases():
    """Check the majorization-minimization property: f(w_k) is non-increasing in k."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(15, 3))
    values = [learn_weights_mm(x, tol=0.0, max_iter=k).objective for k in range(1, 30)]
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:], strict=False))


def test_mm_stopping_rule_is_the_relative_objective_change():
    """Check a loose tolerance stops earlier than a tight one, and max_iter is honoured."""
    x = np.random.default_rng(1).normal(size=(20, 3))
    loose = learn_weights_mm(x, tol=1e-2)
    tight = learn_weights_mm(x, tol=1e-9)
    assert loose.converged
    assert tight.converged
    assert loose.n_iter < tight.n_iter
    capped = learn_weights_mm(x, tol=0.0, max_iter=3)
    assert capped.n_iter == 3
    assert not capped.converged


def test_mm_similar_signals_get_stronger_edges():
    """Check two tight clusters: within-cluster weights exceed between-cluster weights."""
    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(0, 0.1, (5, 2)), rng.normal(5, 0.1, (5, 2))])
    w = learn_weights_mm(x).weights
    within = np.concatenate([w[:5, :5][np.triu_indices(5, 1)], w[5:, 5:][np.triu_indices(5, 1)]])
    between = w[:5, 5:].ravel()
    assert within.min() > between.max()


def test_mm_rejects_bad_parameters():
    """Check delta/gamma must be positive, then a valid call works."""
    x = np.zeros((3, 1))
    with pytest.raises(ValueError, match="must be positive"):
        learn_weights_mm(x, delta=0.0)
    with pytest.raises(ValueError, match="at least two nodes"):
        learn_weights_mm(np.zeros((1, 2)))
    assert learn_weights_mm(x).weights.shape == (3, 3)


@pytest.mark.parametrize("tau", [0.0, 0.25, 0.5, 0.75])
def test_prune_weakest_removes_exactly_the_weakest_fraction(tau):
    """Check Eq. 8-10: floor(τ r) weakest edges set to 0, the rest unchanged, symmetric."""
    rng = np.random.default_rng(0)
    n = 10
    w = rng.random((n, n))
    w = np.triu(w, 1) + np.triu(w, 1).T
    out = prune_weakest(w, tau)
    iu = np.triu_indices(n, 1)
    r = iu[0].size
    kept = out[iu] > 0
    assert (~kept).sum() == int(np.floor(tau * r))
    if (~kept).any():
        assert w[iu][~kept].max() < w[iu][kept].min()
    np.testing.assert_array_equal(out[iu][kept], w[iu][kept])
    np.testing.assert_array_equal(out, out.T)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_weakest(w, 1.0)
