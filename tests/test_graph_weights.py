"""Tests of melrepro.methods.graph_weights: Gaussian kernel, MM graph learning, pruning."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import twin_node_signals
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
    """Check Eq. 2 by hand on three 1-D signals, μ and σ² of the pairwise distances."""
    x = np.array([[0.0], [1.0], [3.0]])
    d = np.array([[0, 1, 3], [1, 0, 2], [3, 2, 0]], dtype=float)
    mu, var = 2.0, 2.0 / 3.0  # distances 1, 3, 2
    expected = np.exp(-((d - mu) ** 2) / (2 * var))
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(gaussian_weights(x), expected)


def test_gaussian_weights_on_twin_graphs_span_a_few_decades(twin_signals):
    """Check the distance-based bandwidth keeps weights within 6 decades on twin graphs."""
    spans = []
    for x in twin_signals:
        w = gaussian_weights(standardize_signals(x))
        vals = w[np.triu_indices(w.shape[0], 1)]
        assert (vals > 0).all()
        spans.append(np.log10(vals.max() / vals.min()))
    assert max(spans) < 6.0  # the data-matrix reading of Eq. 2 gives 13-31 decades
    assert min(spans) > 0.3  # not a constant graph either


def test_standardize_signals_zero_mean_unit_std_and_constant_columns():
    """Check z-scoring, with a constant column mapped to 0."""
    x = np.column_stack([np.arange(5.0), np.full(5, 7.0)])
    z = standardize_signals(x)
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, 0].std(), 1)
    np.testing.assert_array_equal(z[:, 1], 0)


def _scipy_optimum(x, delta, gamma):
    n = x.shape[0]
    rows, cols = np.triu_indices(n, 1)
    d = pdist(x)

    def f(w):
        return mm_objective(w, d, rows, cols, n, delta, gamma)

    def grad(w):
        deg = np.bincount(rows, w, n) + np.bincount(cols, w, n)
        return 2 * d - delta * (1 / deg[rows] + 1 / deg[cols]) + 2 * gamma * w

    ref = minimize(f, np.full(d.size, 0.1), jac=grad, method="L-BFGS-B",
                   bounds=[(1e-12, None)] * d.size, options={"ftol": 1e-15, "gtol": 1e-11,
                                                          "maxiter": 100000, "maxfun": 200000})  # fmt: skip
    return ref, rows, cols


@pytest.mark.parametrize(("delta", "gamma", "n"), [(1.0, 1.0, 12), (2.0, 0.5, 12), (1.0, 1.0, 40)])
def test_mm_reaches_the_optimum_found_by_scipy(delta, gamma, n):
    """Check the default stopping rule reaches L-BFGS-B's optimum of Eq. 5 (relative gap <= 1e-6)."""
    rng = np.random.default_rng(3)
    x = standardize_signals(rng.normal(size=(n, 4)))
    res = learn_weights_mm(x, delta=delta, gamma=gamma)
    ref, rows, cols = _scipy_optimum(x, delta, gamma)
    assert abs(res.objective - ref.fun) <= 1e-6 * abs(ref.fun)
    assert res.objective <= ref.fun + 1e-9 * abs(ref.fun)  # never worse than the reference
    w_mm = res.weights[rows, cols]
    np.testing.assert_allclose(w_mm, ref.x, atol=1e-3 * ref.x.max())
    assert res.kkt_residual < 1e-9
    # the same support as the reference (up to its ~1e-3 accuracy on tiny weights)
    big = ref.x > 1e-2 * ref.x.max()
    assert (w_mm[big] > 0).all()
    # MM alone, stopped by the same rule, is measurably further from the optimum
    plain = learn_weights_mm(x, delta=delta, gamma=gamma, refine=False, support_cut=0.0)
    assert plain.objective > res.objective
    assert (plain.weights[rows, cols] > 0).all()  # MM never yields an exact zero
    # result is a valid weight matrix
    np.testing.assert_array_equal(res.weights, res.weights.T)
    assert (np.diag(res.weights) == 0).all()
    assert (res.weights >= 0).all()


def test_learned_graph_is_sparse_with_exact_zeros_and_no_isolated_node(twin_signals):
    """Check learned twin graphs: exact zeros, 2-40 % of pairs on the support, every degree > 0."""
    for x in twin_signals:
        res = learn_weights_mm(standardize_signals(x))
        w = res.weights
        n = w.shape[0]
        frac = np.count_nonzero(w[np.triu_indices(n, 1)]) / (n * (n - 1) / 2)
        assert 0.02 < frac < 0.4
        assert (w.sum(axis=1) > 0).all()
        nz = w[w > 0]
        assert nz.min() >= 1e-6 * nz.max()  # the support cut holds
        assert res.kkt_residual < 1e-9


def test_support_cut_zeroes_only_weights_below_the_relative_threshold():
    """Check the cut: no cut keeps the refined weights, a coarse cut removes exactly the small ones."""
    x = standardize_signals(np.random.default_rng(8).normal(size=(30, 5)))
    full = learn_weights_mm(x, support_cut=0.0).weights
    cut = 0.2
    res = learn_weights_mm(x, support_cut=cut).weights
    small = (full > 0) & (full < cut * full.max())
    strongest = np.zeros_like(full, dtype=bool)
    strongest[np.arange(30), np.argmax(full, axis=1)] = True
    strongest |= strongest.T
    np.testing.assert_array_equal(res[~small], full[~small])
    assert (res[small & ~strongest] == 0).all()
    assert (res.sum(axis=1) > 0).all()
    with pytest.raises(ValueError, match="support_cut"):
        learn_weights_mm(x, support_cut=1.0)


def test_mm_objective_never_increases():
    """Check the majorization-minimization property: f(w_k) is non-increasing in k."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(15, 3))
    values = [
        learn_weights_mm(x, tol=0.0, max_iter=k, refine=False, support_cut=0.0).objective
        for k in range(1, 30)
    ]
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
@pytest.mark.parametrize("sparse", [False, True])
def test_prune_weakest_removes_exactly_the_weakest_fraction(tau, sparse):
    """Check Eq. 8-10 on the weighted edges: floor(τ r₊) weakest go, the rest unchanged."""
    rng = np.random.default_rng(0)
    n = 10
    w = rng.random((n, n))
    if sparse:  # a learned-like graph: most pairs carry no weight
        w[w < 0.8] = 0.0
    w = np.triu(w, 1) + np.triu(w, 1).T
    out = prune_weakest(w, tau)
    iu = np.triu_indices(n, 1)
    before = w[iu] > 0
    kept = out[iu] > 0
    removed = before & ~kept
    assert removed.sum() == int(np.floor(tau * before.sum()))
    assert not (kept & ~before).any()
    if removed.any():
        assert w[iu][removed].max() < w[iu][kept].min()
    np.testing.assert_array_equal(out[iu][kept], w[iu][kept])
    np.testing.assert_array_equal(out, out.T)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_weakest(w, 1.0)


@pytest.fixture(scope="module")
def twin_signals() -> list[np.ndarray]:
    """Node signals (geometric, texture, colour) of SEG levels 20 and 60 of three twin lesions."""
    return twin_node_signals()
