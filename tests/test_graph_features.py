"""Tests of melrepro.methods.graph_features against networkx and numpy (1e-9), incl. disconnected graphs."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from conftest import twin_node_signals

from melrepro.methods.graph_features import (
    GLOBAL_FEATURES,
    NODE_FEATURES,
    _lengths,
    _local_efficiency_complete,
    feature_names,
    graph_features,
    local_efficiency,
    spectral_features,
    vertex_features,
)
from melrepro.methods.graph_weights import prune_weakest

TOL = 1e-9


def _random_weights(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = np.triu(rng.random((n, n)) + 0.01, 1)
    return w + w.T


def _nx_graph(w: np.ndarray) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(range(w.shape[0]))
    for i, j in zip(*np.nonzero(np.triu(w, 1)), strict=True):
        g.add_edge(int(i), int(j), weight=float(w[i, j]), length=1.0 / float(w[i, j]))
    return g


def _nx_efficiency(g: nx.Graph) -> float:
    """Global efficiency with weighted paths (networkx's definition, lengths 1/w)."""
    n = g.number_of_nodes()
    if n < 2:
        return 0.0
    total = sum(1 / d for s, dd in nx.all_pairs_dijkstra_path_length(g, weight="length")
                for t, d in dd.items() if t != s)  # fmt: skip
    return total / (n * (n - 1))


def _nx_reference(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Node and global features computed with networkx only."""
    g = _nx_graph(w)
    n = w.shape[0]
    le = [_nx_efficiency(g.subgraph(list(g[v]))) for v in range(n)]
    lcc = nx.clustering(g, weight="weight")
    strength = dict(g.degree(weight="weight"))
    nbc = nx.betweenness_centrality(g, weight="length")
    cc = nx.closeness_centrality(g, distance="length")
    ecc: dict[int, float] = {}
    lengths = []
    for comp in nx.connected_components(g):
        sub = g.subgraph(comp)
        ecc.update(nx.eccentricity(sub, weight="length") if len(comp) > 1 else {min(comp): 0.0})
        for s, dd in nx.all_pairs_dijkstra_path_length(sub, weight="length"):
            lengths += [d for t, d in dd.items() if t != s]
    node = np.array([[le[v], lcc[v], strength[v], nbc[v], cc[v], ecc[v]] for v in range(n)])
    cpl = float(np.mean(lengths)) if lengths else 0.0
    with np.errstate(all="ignore"):
        ga = nx.degree_pearson_correlation_coefficient(g, weight="weight")
    glob = np.array([cpl, _nx_efficiency(g), nx.average_clustering(g, weight="weight"),
                     nx.density(g), 0.0 if np.isnan(ga) else ga])  # fmt: skip
    return node, glob


@pytest.mark.parametrize(("n", "tau"), [(15, 0.0), (15, 0.5), (30, 0.0), (30, 0.3)])
def test_vertex_features_equal_networkx(n, tau):
    """Check the 6 node and 5 global features on complete and pruned random graphs."""
    w = prune_weakest(_random_weights(n, seed=n), tau)
    node, glob = vertex_features(w)
    ref_node, ref_glob = _nx_reference(w)
    assert node.shape == (n, len(NODE_FEATURES))
    assert glob.shape == (len(GLOBAL_FEATURES),)
    np.testing.assert_allclose(node, ref_node, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(glob, ref_glob, rtol=TOL, atol=TOL)
    if tau == 0:
        assert glob[3] == 1.0  # complete graph: density 1


def test_vertex_features_on_a_disconnected_pruned_graph():
    """Check features when pruning splits the graph: per-component paths, 1/inf = 0.

    Nodes 0-4 and 5-8 form two dense groups joined only by weak edges, and node 9 is joined by
    weak edges only; pruning the weakest 65 % removes every link between the groups and isolates
    node 9. Then: an isolated node has LE = LCC = NS = NBC = CC = Ecc = 0; eccentricity and
    closeness are taken within a node's component (closeness scaled by its reach, Wasserman-Faust,
    as networkx); CPL averages connected pairs only; GE counts unreachable pairs as 0.
    """
    rng = np.random.default_rng(0)
    w = np.full((10, 10), 0.01) + rng.random((10, 10)) * 0.001
    w[:5, :5] = 1 + rng.random((5, 5))
    w[5:9, 5:9] = 1 + rng.random((4, 4))
    w = np.triu(w, 1) + np.triu(w, 1).T
    pruned = prune_weakest(w, 0.65)  # the 29 weak of 45 edges
    g = _nx_graph(pruned)
    assert nx.number_connected_components(g) == 3
    assert g.degree(9) == 0
    node, glob = vertex_features(pruned)
    ref_node, ref_glob = _nx_reference(pruned)
    np.testing.assert_allclose(node, ref_node, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(glob, ref_glob, rtol=TOL, atol=TOL)
    np.testing.assert_array_equal(node[9], 0.0)
    assert np.isfinite(node).all()
    assert np.isfinite(glob).all()


def test_local_efficiency_divide_and_conquer_equals_per_node_subgraphs():
    """Check the O(n³ log n) complete-graph path against Floyd-Warshall on every G - v."""
    from scipy.sparse.csgraph import shortest_path

    w = _random_weights(23, seed=4)
    fast = _local_efficiency_complete(_lengths(w)[None])[0]
    slow = []
    for v in range(23):
        keep = np.delete(np.arange(23), v)
        d = shortest_path(_lengths(w)[np.ix_(keep, keep)], directed=False)
        inv = 1 / d[~np.eye(22, dtype=bool)]
        slow.append(inv.mean())
    np.testing.assert_allclose(fast, slow, rtol=TOL)
    # a stack of graphs gives the same as one at a time
    w2 = _random_weights(23, seed=5)
    both = local_efficiency(np.stack([w, w2]))
    np.testing.assert_allclose(both[1], local_efficiency(w2), rtol=TOL)


def test_assortativity_is_zero_when_strengths_are_constant():
    """Check GA is 0 (networkx: nan) on a complete graph with equal weights."""
    w = np.ones((6, 6)) - np.eye(6)
    _, glob = vertex_features(w)
    assert glob[4] == 0.0
    np.testing.assert_allclose(glob[:4], [1.0, 1.0, 1.0, 1.0])


def test_spectral_features_against_numpy_gft():
    """Check |Uᵀs| on the Laplacian of networkx, Parseval energy, power, entropy, amplitude."""
    w = _random_weights(12, seed=7)
    s = np.random.default_rng(8).normal(size=12)
    coef, summary = spectral_features(w, s)
    lap = nx.laplacian_matrix(_nx_graph(w), weight="weight").toarray()
    vals, vecs = np.linalg.eigh(lap)
    np.testing.assert_allclose(coef, np.abs(vecs.T @ s), rtol=1e-8, atol=1e-10)
    energy = float(s @ s)  # Parseval: U is orthonormal
    p = (vecs.T @ s) ** 2 / energy
    np.testing.assert_allclose(summary, [energy, energy / 12, -(p * np.log(p)).sum(),
                                         np.abs(vecs.T @ s).max()], rtol=1e-8)  # fmt: skip


def test_spectral_features_of_a_constant_signal_live_at_frequency_zero():
    """Check a constant signal on a connected graph: one coefficient, entropy 0."""
    w = _random_weights(8, seed=1)
    coef, summary = spectral_features(w, np.full(8, 2.0))
    assert coef[0] == pytest.approx(2.0 * np.sqrt(8))
    np.testing.assert_allclose(coef[1:], 0, atol=1e-9)
    assert summary[2] == pytest.approx(0.0, abs=1e-9)
    _, zero = spectral_features(w, np.zeros(8))
    np.testing.assert_array_equal(zero, 0.0)


def test_graph_features_length_and_order_match_the_paper_counts():
    """Check 6n + 5 vertex and n + 4 spectral features, named in order."""
    n = 20
    w = _random_weights(n, seed=2)
    vec = graph_features(w, np.arange(n, dtype=float))
    names = feature_names(n)
    assert vec.shape == (7 * n + 9,)
    assert len(names) == vec.size
    assert names[:6] == ["LE_0", "LCC_0", "NS_0", "NBC_0", "CC_0", "Ecc_0"]
    assert names[6 * n : 6 * n + 5] == list(GLOBAL_FEATURES)
    node, glob = vertex_features(w)
    np.testing.assert_allclose(vec[: 6 * n], node.ravel())
    np.testing.assert_allclose(vec[6 * n : 6 * n + 5], glob)


@pytest.fixture(scope="module")
def learned_twin_graphs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(signals, MM-learned weights) of twin SEG graphs at 20 and 60 nodes."""
    from melrepro.methods.graph_weights import learn_weights_mm, standardize_signals

    out = []
    for x in twin_node_signals():
        xs = standardize_signals(x)
        out.append((xs, learn_weights_mm(xs).weights))
    return out


def test_vertex_features_of_learned_twin_graphs_equal_networkx(learned_twin_graphs):
    """Check the features of sparse, partly disconnected learned graphs against networkx."""
    n_components = []
    for _, w in learned_twin_graphs[::3]:  # one signal kind per graph level and lesion
        g = _nx_graph(w)
        n_components.append(nx.number_connected_components(g))
        node, glob = vertex_features(w)
        ref_node, ref_glob = _nx_reference(w)
        np.testing.assert_allclose(node, ref_node, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(glob, ref_glob, rtol=TOL, atol=TOL)
        assert glob[0] < 1e6  # CPL of the optimum, not of weights shrinking towards 0
    assert max(n_components) >= 2  # the convention for disconnected graphs is exercised


def test_learned_graph_features_do_not_move_when_the_tolerance_is_tightened(learned_twin_graphs):
    """Check every feature of a learned graph moves < 1e-6 relative when tol is 100x tighter."""
    from melrepro.methods.graph_weights import learn_weights_mm

    for xs, w in learned_twin_graphs:
        tight = learn_weights_mm(xs, tol=1e-8).weights
        assert learn_weights_mm(xs, tol=1e-8).n_iter > learn_weights_mm(xs, tol=1e-6).n_iter
        signal = xs[:, 0]
        np.testing.assert_allclose(graph_features(tight, signal), graph_features(w, signal),
                                   rtol=1e-6, atol=1e-12)  # fmt: skip


def test_gft_of_a_disconnected_graph_uses_the_component_indicators():
    """Check the null-space coefficients are |Σ_c s| / sqrt|c| per component, in node order."""
    w = np.zeros((7, 7))
    w[np.ix_([0, 2, 4], [0, 2, 4])] = _random_weights(3, seed=4)  # distinct eigenvalues
    w[np.ix_([1, 3], [1, 3])] = 2.0 * (1 - np.eye(2))
    w[5, 6] = w[6, 5] = 0.5
    s = np.array([1.0, -2.0, 3.0, 0.5, 2.0, 4.0, -1.0])
    coef, summary = spectral_features(w, s)
    expected = [abs(1 + 3 + 2) / np.sqrt(3), abs(-2 + 0.5) / np.sqrt(2), abs(4 - 1) / np.sqrt(2)]
    np.testing.assert_allclose(coef[:3], expected, rtol=1e-12)
    assert summary[0] == pytest.approx(s @ s)  # Parseval still holds
    # the same graph with its nodes relabelled gives the same multiset of coefficients
    perm = np.array([6, 5, 4, 3, 2, 1, 0])
    coef_p, _ = spectral_features(w[np.ix_(perm, perm)], s[perm])
    np.testing.assert_allclose(np.sort(coef_p), np.sort(coef), rtol=1e-9, atol=1e-12)
