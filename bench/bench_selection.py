"""Benchmark the density scores against scikit-learn; prints one JSON object per line.

    python bench/bench_selection.py [--classes 20] [--per_class 1300] [--dim 2048]
                                    [--sklearn_classes 3] [--knn_n 100000] [--knn_dim 512]

1. gaussian / ppca on `classes` x `per_class` x `dim` embeddings (the ImageNet case:
   1,300 images of 2,048-dim Inception features per class): our time for all classes
   versus scikit-learn's (GaussianMixture(1, reg_covar=1e-5) / PCA(0.95, 'full')
   score_samples, on float64). scikit-learn is timed on `sklearn_classes` classes and
   extrapolated linearly to all of them (each class is an independent fit of the same
   size); the JSON says so. The largest relative score difference is reported too.
2. nn_dist on `knn_n` x `knn_dim` unconditional embeddings: peak resident memory
   (getrusage maxrss) of a fresh subprocess that scores them, and its time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import density_estimators as de  # noqa: E402


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def embeddings_like(rng: np.random.Generator, n: int, d: int, rank: int = 64) -> np.ndarray:
    """Non-negative, correlated, low-rank-plus-noise features like pooled CNN activations."""
    x = rng.standard_normal((n, rank), dtype=np.float32) @ rng.standard_normal((rank, d), dtype=np.float32)
    return np.maximum(x, 0) + 0.1 * rng.random((n, d), dtype=np.float32)


def sklearn_scores(measure: str, x: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture
    x = x.astype(np.float64)
    if measure == "gaussian":
        return GaussianMixture(1, covariance_type="full", reg_covar=1e-5).fit(x).score_samples(x)
    return PCA(n_components=de.PPCA_VARIANCE, svd_solver="full").fit(x).score_samples(x)


def bench_likelihood(measure: str, args) -> dict:
    rng = np.random.default_rng(0)
    classes = [embeddings_like(rng, args.per_class, args.dim) for _ in range(args.classes)]
    fn = de.gaussian_scores if measure == "gaussian" else de.ppca_scores
    fn(classes[0][:64])  # warm up the BLAS/LAPACK threads
    t0 = time.perf_counter()
    ours = [fn(x) for x in classes]
    t_ours = time.perf_counter() - t0
    m = min(args.sklearn_classes, args.classes)
    t0 = time.perf_counter()
    ref = [sklearn_scores(measure, x) for x in classes[:m]]
    t_ref = (time.perf_counter() - t0) * args.classes / m
    rel = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(ours, ref))
    return {"name": f"selection_{measure}_scores", "classes": args.classes, "per_class": args.per_class,
            "dim": args.dim, "ours_s": round(t_ours, 3), "sklearn_s": round(t_ref, 3),
            "speedup_vs_sklearn": round(t_ref / t_ours, 2), "sklearn_classes_measured": m,
            "sklearn_extrapolated": m < args.classes, "max_rel_score_diff": rel, "machine": machine()}


def knn_child(n: int, d: int) -> None:
    """Runs in a fresh process so that maxrss is this scoring job's own peak."""
    x = embeddings_like(np.random.default_rng(0), n, d)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    scores = de.knn_scores(x, k=5)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"time_s": elapsed, "peak_kib": peak, "after_data_kib": rss_data,
                      "finite": bool(np.isfinite(scores).all())}))


def bench_knn(args) -> dict:
    cmd = [sys.executable, __file__, "--_knn_child", "--knn_n", str(args.knn_n), "--knn_dim", str(args.knn_dim)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    child = json.loads(out)
    nxn_gib = args.knn_n ** 2 * 4 / 2**30
    return {"name": "selection_nn_dist_memory", "n": args.knn_n, "dim": args.knn_dim, "k": 5,
            "peak_rss_gib": round(child["peak_kib"] / 2**20, 3),
            "rss_after_data_gib": round(child["after_data_kib"] / 2**20, 3),
            "limit_gib": 4.0, "ok": child["peak_kib"] / 2**20 < 4.0 and child["finite"],
            "full_nxn_float32_gib": round(nxn_gib, 1), "time_s": round(child["time_s"], 1),
            "machine": machine()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--per_class", type=int, default=1300)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--sklearn_classes", type=int, default=3, help="classes timed with sklearn (extrapolated)")
    p.add_argument("--knn_n", type=int, default=100_000)
    p.add_argument("--knn_dim", type=int, default=512)
    p.add_argument("--skip_knn", action="store_true")
    p.add_argument("--_knn_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._knn_child:
        knn_child(args.knn_n, args.knn_dim)
        return
    for measure in ("gaussian", "ppca"):
        print(json.dumps(bench_likelihood(measure, args)), flush=True)
    if not args.skip_knn:
        print(json.dumps(bench_knn(args)), flush=True)


if __name__ == "__main__":
    main()
