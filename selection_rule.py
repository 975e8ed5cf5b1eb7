"""The selection rule of instance selection (DeVries et al., 2020, section 3) on precomputed
embeddings: score every item's density within its class (`density_estimators`) and keep the
densest round(retention_ratio% x n_c) of each class. Embedding, caching and datasets are in
`instance_selection.py`.
"""
from __future__ import annotations

import numpy as np
import torch

import distributed
from density_estimators import check_measure, score_embeddings


def check_retention_ratio(retention_ratio: float) -> float:
    """Return the ratio as a float if it lies in (0, 100], else raise a ValueError."""
    try:
        rr = float(retention_ratio)
    except (TypeError, ValueError):
        raise ValueError(f"retention_ratio must be a number in (0, 100] (percent of each class "
                         f"kept), got {retention_ratio!r}; e.g. retention_ratio=50") from None
    if not 0.0 < rr <= 100.0:  # also rejects NaN
        raise ValueError(f"retention_ratio must be in (0, 100] (percent of each class kept), got "
                         f"{retention_ratio}; e.g. --retention_ratio 50")
    return rr


def keep_count(n: int, retention_ratio: float) -> int:
    """How many of `n` items a class keeps: round(rr% * n), halves up, at least 1."""
    return min(n, max(1, int(np.floor(retention_ratio * n / 100.0 + 0.5))))


def class_pools(labels: np.ndarray) -> list[np.ndarray]:
    """Indices of each class (ascending), classes in ascending label order."""
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    return np.split(order, starts[1:])


def compute_scores(embeddings: np.ndarray | None, labels: np.ndarray | None, density_measure: str,
                   k: int = 5, seed: int = 0, device: torch.device | None = None,
                   progress: bool = False) -> np.ndarray:
    """Density score (float64, larger = denser) of every item, fitted separately per class.

    `labels=None` scores everything as one pool. `embeddings` may be None for 'uniform'.
    """
    if embeddings is None and check_measure(density_measure).uses_embedding:
        raise ValueError(f"density measure {density_measure!r} needs embeddings")
    n = len(labels) if embeddings is None else len(embeddings)
    labels = np.zeros(n, np.int64) if labels is None else np.asarray(labels)
    if len(labels) != n:
        raise ValueError(f"{n} embeddings but {len(labels)} labels; they must describe the same items")
    scores = np.empty(n, np.float64)
    pools = class_pools(labels)
    if progress and len(pools) > 1:
        from tqdm import tqdm
        pools = tqdm(pools, desc=f"scoring ({density_measure})", disable=not distributed.is_main_process())
    for position, idx in enumerate(pools):
        x = idx if embeddings is None else embeddings[idx]
        scores[idx] = score_embeddings(x, density_measure, k=k, seed=seed, pool=position, device=device)
    return scores


def keep_top(scores: np.ndarray, labels: np.ndarray | None, retention_ratio: float) -> np.ndarray:
    """Sorted indices of the `keep_count` best-scoring items of each class.

    Ties are broken by the smaller index (a stable sort on -score), so the result is
    deterministic.
    """
    rr = check_retention_ratio(retention_ratio)
    labels = np.zeros(len(scores), np.int64) if labels is None else np.asarray(labels)
    kept = []
    for idx in class_pools(labels):
        order = np.argsort(-scores[idx], kind="stable")
        kept.append(idx[order[:keep_count(len(idx), rr)]])
    return np.sort(np.concatenate(kept)).astype(np.int64)


def get_keep_indices(embeddings: np.ndarray | None, labels: np.ndarray | None, density_measure: str,
                     retention_ratio: float, k: int = 5, seed: int = 0,
                     device: torch.device | None = None, return_scores: bool = False,
                     verbose: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Sorted indices kept by instance selection on precomputed `embeddings` [N, D].

    Each class (or the whole set when `labels` is None) keeps exactly
    round(retention_ratio% x n_c) of its items (at least one), the densest under
    `density_measure` ('gaussian', 'ppca', 'nn_dist'/'knn' with `k`, or the seeded
    'uniform' control). With `return_scores` also returns the float64 scores.
    """
    check_retention_ratio(retention_ratio)
    scores = compute_scores(embeddings, labels, density_measure, k=k, seed=seed, device=device,
                            progress=verbose)
    keep = keep_top(scores, labels, retention_ratio)
    return (keep, scores) if return_scores else keep
