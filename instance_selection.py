"""Instance selection for GANs (DeVries et al., NeurIPS 2020, section 3).

Embed every training image, score the manifold density around each embedding, keep the
top `retention_ratio` percent of each class (one pool when the dataset has no labels; the
rule itself is `selection_rule.py`):

    from instance_selection import select_instances
    subset = select_instances(dataset, retention_ratio=50)      # torch.utils.data.Subset

Embeddings and selections are cached as `.npz` files whose metadata (dataset length and
fingerprint, embedding, resolution, measure, ratio, k, seed, code version) must match
exactly, else they are recomputed; where the moments pass kept its features with the same network
on the same input and data (`saved_features.py`), those are the embeddings. As a script it also
writes a report (the paper's Figure 1 per class, score histograms, a JSON summary;
`selection_report.py`):

    python instance_selection.py --dataset FMNIST32 --retention_ratio 50 \
        --embedding efficientnet_lite0 --embedding_res 64 --max_images 2000
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

import cli
import config as config_flags
import datasets
import distributed
import io_utils
import saved_features
from density_estimators import check_measure, measure_settings
from selection_report import write_report
from selection_rule import check_retention_ratio, get_keep_indices

# Bump when scores or the selection rule change: older caches are then recomputed.
SELECTION_VERSION = 1


# ----------------------------------------------------------------------------- datasets

def _is_label(value: Any) -> bool:
    if torch.is_tensor(value):
        return value.ndim == 0 and not value.is_floating_point() and value.dtype != torch.bool
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def dataset_labels(dataset: Dataset, progress: bool = True) -> np.ndarray | None:
    """Integer labels of every item: `.labels`, else `.targets`, else read from the items.

    Returns None for an unlabelled dataset (items that are not (image, int label) pairs).
    """
    n = len(dataset)
    for attr in ("labels", "targets"):
        value = getattr(dataset, attr, None)
        if value is not None:
            labels = np.asarray(value).reshape(-1)
            if len(labels) != n or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"dataset.{attr} holds {len(labels)} values of type {labels.dtype} for "
                                 f"{n} items; it must be one integer label per item")
            return labels.astype(np.int64)
    if n == 0:
        raise ValueError("the dataset is empty; nothing to select from")
    first = dataset[0]
    if not (isinstance(first, (tuple, list)) and len(first) >= 2 and _is_label(first[1])):
        return None
    from tqdm import tqdm
    items = tqdm(range(n), desc="reading labels", disable=not (progress and distributed.is_main_process()))
    return np.array([int(dataset[i][1]) for i in items], dtype=np.int64)


def _item_bytes(item: Any) -> bytes:
    image = item[0] if isinstance(item, (tuple, list)) else item
    if torch.is_tensor(image):
        return image.detach().cpu().contiguous().numpy().tobytes()
    return np.ascontiguousarray(np.asarray(image)).tobytes()


def dataset_fingerprint(dataset: Dataset, labels: np.ndarray | None) -> str:
    """`dataset.fingerprint()` when it exists, else a hash of length, labels and 8 probe items."""
    if callable(getattr(dataset, "fingerprint", None)):
        return str(dataset.fingerprint())
    h = hashlib.sha1(f"n={len(dataset)}".encode())
    h.update(b"unlabelled" if labels is None else labels.tobytes())
    # Labels alone miss edited images; a few decoded items catch most replacements cheaply.
    for i in np.unique(np.linspace(0, len(dataset) - 1, 8).astype(np.int64)):
        h.update(_item_bytes(dataset[int(i)]))
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- caches

def _weights_id(path: str) -> str:
    if not path:
        return ""
    p = Path(path)
    return f"{p.resolve()}:{p.stat().st_size}:{int(p.stat().st_mtime)}" if p.is_file() else str(p)


def _read_cache(path: Path, meta: dict[str, Any], keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays `keys` of the cache at `path` if its metadata equals `meta`, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["meta"]))
            if stored != meta:
                changed = sorted(key for key in set(stored) | set(meta) if stored.get(key) != meta.get(key))
                distributed.print0(f"{path} was made for different {', '.join(changed)}; recomputing")
                return None
            return {key: z[key] for key in keys}
    except (ValueError, KeyError, OSError, json.JSONDecodeError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not an instance-selection cache written by this code ({err}); "
                         f"delete it or choose another path") from err


def _write_cache(path: Path, meta: dict[str, Any], **arrays: np.ndarray) -> None:
    if not distributed.is_main_process():
        return
    try:
        io_utils.atomic_savez(path, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    except OSError as err:
        raise OSError(f"{err}; set --selection_cache_dir (or indices_filepath) to a writable folder") from err


def embedding_preprocessing(embedding: str, embedding_res: int) -> dict[str, Any]:
    """The input the embedding network sees (resolution in pixels, normalisation), for cache metadata:
    a cache made with other preprocessing is recomputed, never mixed with new embeddings."""
    import backbones
    from embeddings import EMBEDDINGS
    if embedding not in EMBEDDINGS:
        raise ValueError(f"--embedding {embedding!r} is unknown; choose one of {', '.join(EMBEDDINGS)}")
    name = EMBEDDINGS[embedding].backbone
    spec = backbones.BACKBONES[name]
    return {"input_res": backbones.input_resolution(name, embedding_res), "normalization": spec.normalization,
            "resize_method": backbones.RESIZE_METHOD}


def get_embeddings(dataset: Dataset, embedding: str, fingerprint: str, cache_dir: Path | None,
                   embedding_res: int = 0, embedding_weights: str = "", batch_size: int = 128,
                   num_workers: int = 4, device: torch.device | None = None,
                   progress: bool = True, features_file: Path | None = None) -> tuple[np.ndarray, bool]:
    """Embeddings of every item, from `cache_dir` when a matching cache exists, else from
    `features_file` (calculate_inception_moments.py --save_features) when the moments pass ran the
    same network on the same input and data (then no cache is written: that file is one);
    (array, whether it was read rather than computed)."""
    meta = {"kind": "embeddings", "version": SELECTION_VERSION, "n": len(dataset),
            "fingerprint": fingerprint, "embedding": embedding, "embedding_res": int(embedding_res),
            "embedding_weights": _weights_id(embedding_weights),
            **embedding_preprocessing(embedding, embedding_res)}
    path = None if cache_dir is None else \
        Path(cache_dir) / f"embeddings_{embedding}_r{int(embedding_res)}_{fingerprint}.npz"
    if path is not None:
        cached = _read_cache(path, meta, ("embeddings",))
        if cached is not None:
            return cached["embeddings"], True
    import embeddings as embedding_nets  # torchvision models are only imported when needed
    embedder = embedding_nets.load_embedding(embedding, embedding_weights, device or _default_device(),
                                             int(embedding_res))
    if features_file is not None:
        shared = saved_features.load_features(features_file, embedder.net, len(dataset), fingerprint)
        if shared is not None:
            distributed.print0(f"embeddings ({embedding}) read from {features_file}: the moments pass ran "
                               f"the same network on the same images")
            return shared[0], True
    emb = np.asarray(embedding_nets.embed(embedder, dataset, batch_size, num_workers, progress=progress), np.float32)
    if emb.ndim != 2 or len(emb) != len(dataset):
        raise ValueError(f"embedding {embedding!r} returned shape {emb.shape} for {len(dataset)} images")
    if path is not None:
        _write_cache(path, meta, embeddings=emb)
    return emb, False


@dataclass(frozen=True)
class Selection:
    """One instance selection, as the paper defines it: the embedding network F (at `embedding_res`,
    0 = its own input size, with optional explicit weights), the density measure H with its
    settings (`k` for nn_dist/knn, `seed` for uniform) and the percent of each class kept.
    Validated on construction; `from_config` builds it from the training flags."""
    retention_ratio: float
    embedding: str = "inceptionv3"
    density_measure: str = "gaussian"
    embedding_res: int = 0
    embedding_weights: str = ""
    k: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "retention_ratio", check_retention_ratio(self.retention_ratio))
        measure_settings(self.density_measure, self.k, self.seed)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Selection":
        """The selection the flags ask for (--retention_ratio, --embedding, --density_measure, ...)."""
        return cls(config["retention_ratio"], config.get("embedding", "inceptionv3"),
                   config.get("density_measure", "gaussian"), int(config.get("embedding_res", 0)),
                   config.get("embedding_weights", ""), int(config.get("nn_k", 5)),
                   int(config.get("selection_seed", 0)))

    @property
    def uses_embedding(self) -> bool:
        return check_measure(self.density_measure).uses_embedding

    @property
    def settings(self) -> dict[str, int]:
        """The measure's own settings (k, seed) that it uses."""
        return measure_settings(self.density_measure, self.k, self.seed)

    def filename(self, prefix: str = "selection") -> str:
        """The cache file name of this selection (the metadata inside is what is checked)."""
        what = (f"{self.density_measure}_{self.embedding}_r{int(self.embedding_res)}" if self.uses_embedding
                else self.density_measure)
        extra = "".join(f"_{arg}{value}" for arg, value in self.settings.items())
        return f"{prefix}_{what}{extra}_rr{self.retention_ratio:g}.npz"

    def metadata(self) -> dict[str, Any]:
        """What a selection cache records about the selection (with the dataset's length and fingerprint)."""
        uses = self.uses_embedding
        return {"embedding": self.embedding if uses else None,
                "embedding_res": int(self.embedding_res) if uses else None,
                "embedding_weights": _weights_id(self.embedding_weights) if uses else None,
                **(embedding_preprocessing(self.embedding, self.embedding_res) if uses else {}),
                "measure": self.density_measure, "retention_ratio": self.retention_ratio,
                "k": self.settings.get("k"), "seed": self.settings.get("seed")}


def run_selection(dataset: Dataset, selection: Selection, indices_filepath: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None, batch_size: int = 128, num_workers: int = 4,
                  device: torch.device | None = None, progress: bool = True,
                  features_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """Apply `selection` to `dataset`, through the caches; returns a dict with 'indices' (sorted),
    'scores' (float64, every item), 'labels' (None when unlabelled), 'meta', 'path' (the
    selection cache or None), 'cached', 'embeddings_cached' and 'time_s'.

    The selection is cached at `indices_filepath`, else in `cache_dir` under `selection.filename()`,
    and the embeddings in `cache_dir` (default: the selection's folder); `features_file`: the moments
    pass's features of every image, used as the embeddings when they match (`get_embeddings`). Every
    rank computes the same result; only rank 0 writes.
    """
    t0 = time.perf_counter()
    labels = dataset_labels(dataset, progress=progress)
    fingerprint = dataset_fingerprint(dataset, labels)
    meta = {"kind": "selection", "version": SELECTION_VERSION, "n": len(dataset), "fingerprint": fingerprint,
            **selection.metadata()}
    if indices_filepath is not None:
        path = Path(indices_filepath)
        cache_dir = path.parent if cache_dir is None else cache_dir
    elif cache_dir is not None:
        path = Path(cache_dir) / selection.filename()
    else:
        path = None
    result = {"labels": labels, "meta": meta, "path": path, "cached": False, "embeddings_cached": False,
              "time_s": {"embedding": 0.0, "scoring": 0.0}}
    # Every rank reads the cache between two barriers, so all ranks take the same branch
    # (rank 0 only writes after the second one) and the collective embedding cannot deadlock.
    distributed.barrier()
    cached = None if path is None else _read_cache(path, meta, ("indices", "scores"))
    distributed.barrier()
    if cached is not None:
        result.update(indices=cached["indices"], scores=cached["scores"], cached=True)
    else:
        emb = None
        if selection.uses_embedding:
            t1 = time.perf_counter()
            emb, result["embeddings_cached"] = get_embeddings(
                dataset, selection.embedding, fingerprint, None if cache_dir is None else Path(cache_dir),
                selection.embedding_res, selection.embedding_weights, batch_size, num_workers, device, progress,
                None if features_file is None else Path(features_file))
            result["time_s"]["embedding"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        pools = np.zeros(len(dataset), np.int64) if labels is None else labels  # unlabelled: one pool
        keep, scores = get_keep_indices(emb, pools, selection.density_measure, selection.retention_ratio,
                                        k=selection.k, seed=selection.seed, device=device,
                                        return_scores=True, verbose=progress)
        result["time_s"]["scoring"] = time.perf_counter() - t1
        result.update(indices=keep, scores=scores)
        if path is not None:
            _write_cache(path, meta, indices=keep, scores=scores)
    distributed.barrier()
    result["time_s"]["total"] = time.perf_counter() - t0
    return result


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def select_instances(dataset: Dataset, retention_ratio: float, embedding: str = "inceptionv3",
                     density_measure: str = "gaussian", indices_filepath: str | os.PathLike | None = None,
                     batch_size: int = 128, num_workers: int = 4, **kw: Any) -> Dataset:
    """Subset of `dataset` holding its densest `retention_ratio` percent (per class when labelled).

    Args (as the paper's code): `retention_ratio` in (0, 100] (100 returns `dataset`
    unchanged); `embedding` a name of `embeddings.EMBEDDINGS`; `density_measure` one of
    'gaussian', 'ppca', 'nn_dist'/'knn', 'uniform'; `indices_filepath` an `.npz` where the
    selection is cached (embeddings are cached beside it). Keyword extras: `cache_dir`,
    `embedding_res`, `embedding_weights`, `k`, `seed`, `device`, `progress`.
    Images must come out of `dataset` in [-1, 1], as (image, label) or image alone.
    """
    settings = {key: kw.pop(key) for key in ("embedding_res", "embedding_weights", "k", "seed") if key in kw}
    selection = Selection(retention_ratio, embedding, density_measure, **settings)
    if selection.retention_ratio == 100.0:
        distributed.print0("retention_ratio = 100: keeping the whole dataset")
        return dataset
    kw.setdefault("device", _default_device())
    result = run_selection(dataset, selection, indices_filepath, batch_size=batch_size, num_workers=num_workers, **kw)
    return Subset(dataset, result["indices"].tolist())


def default_cache_dir(config: dict[str, Any]) -> Path:
    """--selection_cache_dir, else `instance_selection/` in the dataset's derived folder (beside
    an image folder or HDF5 file, never inside it: datasets.derived_folder)."""
    if config.get("selection_cache_dir"):
        return Path(config["selection_cache_dir"])
    return datasets.derived_folder(config.get("dataset") or "custom", config.get("data_root")) / "instance_selection"


def selection_cache_path(config: dict[str, Any], selection: Selection, first_n: int | None = None) -> Path:
    """The one cache file of `selection` on the config's dataset, shared by train.py and
    instance_selection.py, so training reuses a selection made and reported first instead of
    recomputing it (on ill-conditioned features, a random-weight network's, a recomputation with
    another thread count can keep other images). `first_n`: the first N images of a larger set."""
    prefix = (config.get("dataset") or "selection") + (f"_n{first_n}" if first_n is not None else "")
    return default_cache_dir(config) / selection.filename(prefix=prefix)


def shared_features_path(config: dict[str, Any], selection: Selection) -> Path:
    """Where the moments pass keeps every image's features with the selection's embedding network
    (calculate_inception_moments.py --save_features): read instead of embedding the images again."""
    from embeddings import EMBEDDINGS
    return saved_features.features_path(config, EMBEDDINGS[selection.embedding].backbone)


def select_from_config(dataset: Dataset, config: dict[str, Any]) -> np.ndarray:
    """Sorted kept indices for the training loader, from the config's selection flags (cached)."""
    selection = Selection.from_config(config)
    if selection.retention_ratio == 100.0:
        return np.arange(len(dataset), dtype=np.int64)
    path = selection_cache_path(config, selection)
    result = run_selection(dataset, selection, indices_filepath=path, cache_dir=path.parent,
                           batch_size=config.get("selection_batch_size", 128),
                           num_workers=config.get("num_workers", 4),
                           device=cli.resolve_device(config.get("device", "auto")),
                           features_file=shared_features_path(config, selection))
    return result["indices"]


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> None:
    """CLI: select instances of --dataset, cache the indices, write the report."""
    parser = config_flags.prepare_parser()
    parser.description = "Instance selection: score, select and report (writes indices + report)."
    g = parser.add_argument_group("selection report")
    g.add_argument("--max_images", type=int, default=0, help="Use only the first N images (0 = all)")
    g.add_argument("--report_dir", type=str, default="",
                   help="Report folder (default: <selection cache dir>/report_<dataset>_<selection>)")
    g.add_argument("--report_images", type=int, default=32, help="Images per panel of each class grid")
    g.add_argument("--report_classes", type=int, default=10, help="Classes with grids/histograms (0 = all)")
    config = vars(parser.parse_args(argv))
    selection = Selection.from_config(config)
    if config["max_images"] < 0:
        raise cli.UserError(f"--max_images must be >= 0, got {config['max_images']}")
    device = cli.resolve_device(config["device"])
    distributed.init_distributed(device)
    dataset = datasets.get_dataset_from_config(config, augment=False)
    full_n = len(dataset)
    if 0 < config["max_images"] < full_n:
        dataset = datasets.SelectedSubset(dataset, np.arange(config["max_images"]))
    path = selection_cache_path(config, selection, len(dataset) if len(dataset) < full_n else None)
    result = run_selection(dataset, selection, indices_filepath=path, cache_dir=path.parent,
                           batch_size=config["selection_batch_size"], num_workers=config["num_workers"],
                           device=device, features_file=shared_features_path(config, selection))
    if distributed.is_main_process():
        report_dir = config["report_dir"] or path.parent / f"report_{path.stem}"
        summary = write_report(dataset, result, report_dir, config["report_images"], config["report_classes"],
                               extra={"dataset": config["dataset"], "dataset_images": full_n})
        print(f"kept {len(result['indices'])} of {len(dataset)} images; indices in {result['path']}; "
              f"report in {summary.parent}", flush=True)
    distributed.cleanup()


if __name__ == "__main__":
    cli.run_cli(main)
