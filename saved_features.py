"""Every image's features and logits from the moments pass, kept so that no later pass runs the
same network over the same images again.

`calculate_inception_moments.py --save_features` writes `<dataset>_<feature net>_features.npz`
beside the moments (the pooled features and logits of every training image, float32, with the
network's record and the data set's fingerprint). `prepare_manifold.py` takes its rows, the grids'
training-set rows and the real-vs-real floor score real images from it, and instance selection
reads it as its embeddings when the embedding is the same network at the same input (the CPU
recipe's efficientnet_lite0 at 224 px; the paper's Inception-v3). A file is read only when the
network, weights, resolution, resizing, normalisation, data set and image count all match; any
other file is left alone and the features are computed as without it, never mixed.

This module also names the metric reference files (moments, manifold, features), so that it depends
on no training code and instance selection can import it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional
import zipfile

import numpy as np

import datasets
import distributed
import io_utils


def _file_tag(feature_net: str) -> str:
    # BigGAN-PyTorch's file names for the default network; the network's name otherwise.
    return "inception" if feature_net == "inception_v3" else feature_net


def reference_path(config: dict, kind: str, feature_net: str | None = None) -> Path:
    """`<derived folder>/<dataset>_<tag>_<kind>.npz` of the ORIGINAL data: tag `inception` for
    inception_v3 (BigGAN-PyTorch's names), the network's name otherwise (`feature_net`, default
    --feature_net); the `_hdf5` suffix dropped, so I128 and I128_hdf5 share files; the derived folder
    is data_root, or `<data_root>.derived` for an image folder or HDF5 file (datasets.derived_folder)."""
    stem = config["dataset"].removesuffix("_hdf5")
    folder = datasets.derived_folder(config["dataset"], config.get("data_root") or ".")
    return folder / f"{stem}_{_file_tag(feature_net or config['feature_net'])}_{kind}.npz"


def features_path(config: dict, feature_net: str | None = None) -> Path:
    """The features file of `feature_net` (default --feature_net; instance selection passes its
    embedding's backbone, which names the same network the same way)."""
    return reference_path(config, "features", feature_net)


def save_features(path: str | Path, pool: np.ndarray, logits: Optional[np.ndarray], net,
                  dataset_name: str, fingerprint: str) -> None:
    """Write every image's features (and logits) of `net` (a backbones.FeatureNet) with its record
    and the data's fingerprint (`ImageDataset.fingerprint()`), for `load_features` (atomic; rank 0)."""
    if not distributed.is_main_process():
        return
    arrays = {"features": np.asarray(pool, np.float32)}
    if logits is not None:
        arrays["logits"] = np.asarray(logits, np.float32)
    record = {k: np.array(v) for k, v in net.metadata().items()}
    io_utils.atomic_savez(path, **arrays, dataset=np.array(dataset_name), fingerprint=np.array(fingerprint),
                          **record)


def load_features(path: str | Path, net, num_images: int, fingerprint: str
                  ) -> Optional[tuple[np.ndarray, Optional[np.ndarray]]]:
    """(features, logits or None) of every image from `save_features`' file, or None when there is no
    usable one: missing, unreadable, or made with another network (`net`'s metadata), input or data
    set (then it says which, and the caller computes the features as it would without the file)."""
    path = Path(path)
    if not path.is_file():
        return None
    wanted = {**{k: str(v) for k, v in net.metadata().items()}, "fingerprint": fingerprint}
    try:
        with np.load(path, allow_pickle=False) as data:
            found = {k: str(data[k].item()) for k in wanted if k in data.files}
            wrong = sorted(k for k in wanted if found.get(k) != wanted[k])
            if not wrong and "features" in data.files:  # members load on access: only a match reads them
                pool = data["features"]
                if pool.shape[0] == num_images:
                    return pool, data["logits"] if "logits" in data.files else None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        wrong = ["(unreadable)"]
    reason = ", ".join(wrong) if wrong else f"its number of images (not {num_images})"
    distributed.print0(f"{path} does not match this network and data ({reason}); computing the features")
    return None
