"""Real training images scored like a generator's samples, against the full data's moments and
manifold: the real-vs-real floor (bench/bench_convergence.py) and, per cell of an experiment grid,
its training set itself, i.e. what a generator that reproduced that set exactly would score.

Only images outside the P/R/D/C manifold are drawn: a real image scored against a manifold that
holds it finds itself at distance 0 and inflates precision and recall.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

import datasets
import inception_utils
import saved_features
from io_utils import atomic_write_json

Features = tuple[np.ndarray, Optional[np.ndarray]]  # every image's pooled features and logits (or None)


def manifold_image_indices(config: dict) -> np.ndarray:
    """The dataset indices of the real images in the P/R/D/C manifold file (none under --no_prdc)."""
    if config.get("no_prdc"):
        return np.zeros(0, np.int64)
    with np.load(inception_utils.manifold_path(config), allow_pickle=False) as data:
        return np.asarray(data["indices"], np.int64)


def outside_manifold(config: dict, pool: np.ndarray) -> np.ndarray:
    """The indices of `pool` whose images are not in the manifold."""
    return np.setdiff1d(np.asarray(pool, np.int64), manifold_image_indices(config))


def draw_outside_manifold(config: dict, pool: np.ndarray, num_images: int, seed: int = 1) -> np.ndarray:
    """`num_images` indices drawn (seeded, without replacement) from those of `pool` outside the manifold."""
    free = outside_manifold(config, pool)
    if len(free) < num_images:
        raise ValueError(f"{num_images} real images wanted but only {len(free)} of these {len(pool)} are "
                         f"outside the manifold's {config['num_pr_images']}; use more --max_images or fewer "
                         f"--num_inception_images")
    return np.random.default_rng(seed).permutation(free)[:num_images]


def score_real_images(dataset: datasets.ImageDataset, indices: np.ndarray,
                      get_metrics: Callable[..., dict[str, float]],
                      transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      features: Features | None = None) -> dict[str, float]:
    """The metrics of the images `indices` of `dataset` (in that order, repeats allowed), each batch
    passed through `transform` first (images in [-1, 1]), scored like a generator's samples.
    `features`: every image's (features, logits) with get_metrics' network (`load_dataset_features`),
    read instead of running the network (for untransformed images only)."""
    if features is not None:
        if transform is not None:
            raise ValueError("saved features are of the untransformed images; pass features=None with a transform")
        pool, logits = features
        rows = np.asarray(indices, np.int64)
        scores = get_metrics.of_features(pool[rows], None if logits is None else logits[rows])
        return {k: float(v) for k, v in scores.items()}
    batches = iter(np.array_split(np.asarray(indices), max(1, len(indices) // 100)))

    def sample_fn() -> torch.Tensor:
        images = torch.stack([dataset[int(i)][0] for i in next(batches)])
        return transform(images) if transform else images

    return {k: float(v) for k, v in get_metrics(sample_fn, len(indices), prints=False).items()}


def load_dataset_features(config: dict, dataset: datasets.ImageDataset, get_metrics: Any) -> Features | None:
    """Every image's (features, logits) that the moments pass kept (calculate_inception_moments.py
    --save_features) with get_metrics' network, or None when there is no matching file (or
    `get_metrics` is not `inception_utils.prepare_inception_metrics`'s)."""
    if not isinstance(get_metrics, inception_utils.SampleMetrics):
        return None
    return saved_features.load_features(saved_features.features_path(config), get_metrics.net, len(dataset),
                                         dataset.fingerprint())


def real_images_metrics(config: dict, pool: np.ndarray | None, num_images: int,
                        get_metrics: Callable[..., dict[str, float]], seed: int = 1,
                        dataset: datasets.ImageDataset | None = None,
                        features: Features | None = None) -> dict[str, float]:
    """The metrics of `num_images` real training images, drawn (seeded) from the indices `pool`
    (None: every image) outside the manifold and scored like a generator's samples against the full
    data's moments and manifold. `dataset`: the (original) data set when the caller has it loaded;
    `features`: its saved features (`load_dataset_features`), read instead of running the network."""
    dataset = dataset if dataset is not None else datasets.get_dataset_from_config(config, augment=False)
    pool = np.arange(len(dataset)) if pool is None else pool
    return score_real_images(dataset, draw_outside_manifold(config, pool, num_images, seed), get_metrics,
                             features=features)


def training_set_rows(config: dict, pools: dict[str, np.ndarray | None], labels: dict[str, tuple],
                      cache_dir: Path, eval_signature: str, log: Callable[[str], None]) -> list[dict]:
    """One row per cell (in `pools`' order; a pool of None is every image): its training set's real
    images scored against the full data with the same feature network, k and count for every row
    (the smallest number any set has outside the manifold, at most --num_inception_images). Cached in
    `cache_dir/<cell>.training_set.json`, redone when `eval_signature`, the count or the indices change.
    Returns [] (and says so) when some set has no more than k images outside the manifold."""
    dataset = datasets.get_dataset_from_config(config, augment=False)
    pools = {cell: np.arange(len(dataset)) if pool is None else pool for cell, pool in pools.items()}
    num = min([config["num_inception_images"]] + [len(outside_manifold(config, pool)) for pool in pools.values()])
    if num <= config["prdc_k"]:
        log(f"training sets: only {num} images of some cell's set lie outside the manifold; table left out")
        return []
    get_metrics, features, rows = None, None, []
    for cell, pool in pools.items():
        path = cache_dir / f"{cell}.training_set.json"
        key = hashlib.sha1(f"{eval_signature} {num} ".encode() + pool.astype(np.int64).tobytes()).hexdigest()
        cached = json.loads(path.read_text()) if path.exists() else {}
        if cached.get("key") != key:
            log(f"training sets: scoring {num} real images of {cell}'s set against the full data")
            if get_metrics is None:  # once, for every row still to score
                get_metrics = inception_utils.prepare_inception_metrics(config)
                features = load_dataset_features(config, dataset, get_metrics)
            cached = {"cell": cell, "labels": labels[cell], "num_images": num, "set_size": len(pool), "key": key,
                      "metrics": real_images_metrics(config, pool, num, get_metrics, dataset=dataset,
                                                     features=features)}
            atomic_write_json(path, cached)
        rows.append(cached)
    return rows
