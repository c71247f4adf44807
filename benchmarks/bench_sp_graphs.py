"""Speed of the sp_graphs feature stage, as ratios against references measured in this process.

    .venv/bin/python benchmarks/bench_sp_graphs.py [--quick]

1. graph features (6n + 5 vertex features) of one 100-node graph vs networkx computing the same
   definitions (weighted paths, lengths 1/w), complete and 50 %-pruned; values checked to 1e-9;
2. MM graph learning (+ projected-Newton refinement) for n = 100 vs scipy's L-BFGS-B on the
   same objective (relative objective gap, support size);
3. the whole per-image extraction vs SLIC alone at the five SEG levels (the floor of the method),
   at several working resolutions;
4. the feature stage on 1 vs 2 worker processes.
Goals (issue 3): 1. >= 100x networkx; 2. milliseconds; 3. <= 1.5x SLIC; 4. >= 1.8x.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.spatial.distance import pdist
from skimage import data, segmentation, transform
from threadpoolctl import threadpool_limits

from melrepro.methods.graph_features import local_efficiency, vertex_features
from melrepro.methods.graph_weights import (
    gaussian_weights,
    learn_weights_mm,
    mm_objective,
    prune_weakest,
    standardize_signals,
)
from melrepro.papers.sp_graphs.features import (
    ExtractionSettings,
    extract_features_shard,
    image_features,
)


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _networkx_features(w: np.ndarray, *, with_le: bool = True) -> np.ndarray:
    g = nx.Graph()
    n = w.shape[0]
    g.add_nodes_from(range(n))
    for i, j in zip(*np.nonzero(np.triu(w, 1)), strict=True):
        g.add_edge(int(i), int(j), weight=w[i, j], length=1 / w[i, j])

    def eff(h: nx.Graph) -> float:
        k = h.number_of_nodes()
        if k < 2:
            return 0.0
        tot = sum(1 / d for s, dd in nx.all_pairs_dijkstra_path_length(h, weight="length")
                  for t, d in dd.items() if t != s)  # fmt: skip
        return tot / (k * (k - 1))

    le = [eff(g.subgraph(list(g[v]))) if with_le else 0.0 for v in range(n)]
    lcc = nx.clustering(g, weight="weight")
    ns = dict(g.degree(weight="weight"))
    bc = nx.betweenness_centrality(g, weight="length")
    cc = nx.closeness_centrality(g, distance="length")
    ecc = nx.eccentricity(g, weight="length")
    return np.array([[le[v], lcc[v], ns[v], bc[v], cc[v], ecc[v]] for v in range(n)])


def bench_graph_features(n: int = 100) -> None:
    rng = np.random.default_rng(0)
    x = standardize_signals(rng.normal(size=(n, 9)))
    for name, w in (("complete (Gaussian)", gaussian_weights(x)),
                    ("50 % pruned", prune_weakest(gaussian_weights(x), 0.5))):  # fmt: skip
        t = time.perf_counter()
        ref = _networkx_features(w)
        t_nx = time.perf_counter() - t
        t_ours = _best(lambda w=w: vertex_features(w, le=local_efficiency(w)), repeat=5)
        ours, _ = vertex_features(w)
        err = float(np.abs(ours - ref).max())
        t = time.perf_counter()
        _networkx_features(w, with_le=False)
        t_nx5 = time.perf_counter() - t
        print(f"graph features n={n} {name}: networkx {t_nx:.2f} s, ours {1000 * t_ours:.1f} ms, "
              f"ratio {t_nx / t_ours:.0f}x, max |diff| {err:.1e}; networkx without local "
              f"efficiency {t_nx5:.2f} s, ratio {t_nx5 / t_ours:.0f}x")  # fmt: skip


def bench_mm(n: int = 100) -> None:
    rng = np.random.default_rng(1)
    x = standardize_signals(rng.normal(size=(n, 9)))
    t_mm = _best(lambda: learn_weights_mm(x), repeat=5)
    res = learn_weights_mm(x)
    rows, cols = np.triu_indices(n, 1)
    d = pdist(x)

    def grad(w):
        deg = np.bincount(rows, w, n) + np.bincount(cols, w, n)
        return 2 * d - (1 / deg[rows] + 1 / deg[cols]) + 2 * w

    def solve():
        return minimize(lambda w: mm_objective(w, d, rows, cols, n, 1.0, 1.0), np.ones_like(d),
                        jac=grad, method="L-BFGS-B", bounds=[(1e-12, None)] * d.size)  # fmt: skip

    t_tight = _best(lambda: learn_weights_mm(x, tol=1e-10), repeat=3)
    tight = learn_weights_mm(x, tol=1e-10)
    t_plain = _best(lambda: learn_weights_mm(x, refine=False, support_cut=0.0), repeat=3)
    plain = learn_weights_mm(x, refine=False, support_cut=0.0)
    t_sp = _best(solve, repeat=1)
    ref = solve()
    support = float(np.count_nonzero(res.weights[rows, cols])) / rows.size
    print(f"MM learning n={n}: {1000 * t_mm:.1f} ms ({res.n_iter} MM iterations, tol 1e-6, then "
          f"{res.n_newton} projected-Newton steps; KKT residual {res.kkt_residual:.1e}; "
          f"{100 * support:.1f} % of pairs on the support); MM alone {1000 * t_plain:.1f} ms; "
          f"scipy L-BFGS-B {1000 * t_sp:.0f} ms; relative objective gap to scipy "
          f"{(res.objective - ref.fun) / abs(ref.fun):+.1e} (MM alone "
          f"{(plain.objective - ref.fun) / abs(ref.fun):+.1e}); at tol 1e-10: "
          f"{1000 * t_tight:.1f} ms ({tight.n_iter} iterations), max |w - w(1e-6)| "
          f"{np.abs(tight.weights - res.weights).max():.1e}")  # fmt: skip


def _image(side: int) -> np.ndarray:
    shape = (round(side * 0.75), side)
    return (transform.resize(data.astronaut(), shape) * 255).astype(np.uint8)


def bench_extraction(sides: tuple[int, ...]) -> None:
    # the whole image on both sides: with crop_to_lesion SLIC itself runs on the crop only
    s = ExtractionSettings(crop_to_lesion=False)
    for side in sides:
        img = _image(side)
        t_slic = _best(lambda img=img: [segmentation.slic(img, n_segments=n, start_label=0)
                                        for n in s.seg_levels])  # fmt: skip
        t_all = _best(lambda img=img: image_features(img, s))
        print(f"per-image extraction {img.shape[1]}x{img.shape[0]}: SLIC x5 {t_slic:.2f} s, "
              f"all features {t_all:.2f} s, ratio {t_all / t_slic:.2f}x")  # fmt: skip


def bench_scaling(n_images: int, side: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = _image(side)
        rng = np.random.default_rng(0)
        arrays = {f"image__ISIC_{i:07d}": np.clip(base.astype(int) + rng.integers(-20, 20, 3), 0,
                                                  255).astype(np.uint8) for i in range(n_images)}  # fmt: skip
        np.savez(root / "shard.npz", **arrays)
        pd.DataFrame({"image_id": [k.split("__")[1] for k in arrays], "dataset": "isic2017",
                      "official_split": "train", "target": 1}).to_parquet(root / "m.parquet")  # fmt: skip
        times = {}
        for threads in (1, 2):
            times[threads] = _best(lambda t=threads: extract_features_shard(
                root / "shard.npz", root / "m.parquet", root / "f.npz", threads=t), repeat=1)  # fmt: skip
        print(f"feature stage, {n_images} images {side}px: 1 worker {times[1]:.1f} s, 2 workers "
              f"{times[2]:.1f} s, speed-up {times[1] / times[2]:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (default: False)")
    args = parser.parse_args()
    with threadpool_limits(1):  # one BLAS thread per process, as in the workflow's jobs
        bench_graph_features(40 if args.quick else 100)
        bench_mm()
        bench_extraction((256,) if args.quick else (256, 512, 1022))
    bench_scaling(4 if args.quick else 8, 256 if args.quick else 512)


if __name__ == "__main__":
    main()
