"""Training data loaders: BigGAN-PyTorch's `get_data_loaders` with an exactly resumable sampler.

`ResumableSampler` draws one permutation per epoch from (seed, epoch) alone, so any
position (epoch, index-in-epoch) can be re-created after a restart, and under DDP every
rank takes a disjoint slice of the same permutation. `get_data_loaders(config, start_itr)`
puts the sampler at the position reached after `start_itr` loader batches, so a resumed run
sees exactly the batches the interrupted run had not yet seen. When
`config['retention_ratio'] < 100` the dataset is first cut to the instances kept by
`instance_selection.select_from_config`.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

import datasets
import distributed
from datasets import SelectedSubset, get_dataset_from_config  # noqa: F401 (re-exported)


class ResumableSampler(Sampler[int]):
    """Per-epoch permutations from (seed, epoch); starts anywhere; shards across ranks.

    Each epoch the first `n // world_size * world_size` entries of the permutation are
    dealt round-robin to the ranks (the few left over differ every epoch, as with
    DistributedSampler(drop_last=True)). One `iter()` covers `epochs_per_iter` epochs
    (more than 1 reproduces BigGAN-PyTorch's MultiEpochSampler) starting at
    (`epoch`, `position`); when it is exhausted the sampler moves on to the next epoch.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if n < world_size:
            raise ValueError(f"{n} training images cannot be shared by {world_size} processes")
        self.n, self.seed, self.shuffle = int(n), int(seed), bool(shuffle)
        self.rank, self.world_size = int(rank), int(world_size)
        self.per_rank = self.n // self.world_size
        self.epoch, self.position, self.epochs_per_iter = 0, 0, 1

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of all `n` indices in `epoch` (identity without shuffle)."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed & (2**63 - 1), int(epoch)]).permutation(self.n)

    def shard(self, epoch: int) -> np.ndarray:
        """This rank's indices for `epoch`, in order."""
        return self.permutation(epoch)[: self.per_rank * self.world_size][self.rank::self.world_size]

    def set_position(self, epoch: int, position: int = 0, epochs_per_iter: int = 1) -> None:
        """Make the next `iter()` start at sample `position` of this rank's shard of `epoch`."""
        if not 0 <= position < self.per_rank or epoch < 0 or epochs_per_iter < 1:
            raise ValueError(f"bad sampler position epoch={epoch} position={position} "
                             f"(shard of {self.per_rank} images)")
        self.epoch, self.position, self.epochs_per_iter = int(epoch), int(position), int(epochs_per_iter)

    def set_epoch(self, epoch: int) -> None:
        """DistributedSampler's API; keeps a pending resume position when `epoch` is unchanged."""
        if epoch != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict[str, int | bool]:
        """Where the next `iter()` starts, plus what the position is only valid for."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "n": self.n,
                "world_size": self.world_size, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; ValueError when the data or the number of processes changed."""
        for key in ("n", "world_size", "seed", "shuffle"):
            if state[key] != getattr(self, key):
                raise ValueError(f"the saved data position was for {key}={state[key]}, now "
                                 f"{getattr(self, key)}; resume with the same dataset, "
                                 f"--retention_ratio, --seed, --shuffle and number of processes")
        self.set_position(state["epoch"], state["position"], self.epochs_per_iter)

    def __len__(self) -> int:
        return self.per_rank * self.epochs_per_iter - self.position

    def __iter__(self) -> Iterator[int]:
        epoch, position, count = self.epoch, self.position, self.epochs_per_iter
        for e in range(epoch, epoch + count):
            yield from self.shard(e)[position:].tolist()
            position = 0
        self.epoch, self.position = epoch + count, 0


def planned_epochs(config: dict, batches_per_epoch: int) -> int:
    """Epochs a run trains: --num_epochs, or as many as --num_iters needs when that is more.

    --num_iters decides a run's length: a small (e.g. selected) data set must not end the run
    early because --num_epochs passes were done first.
    """
    epochs = int(config.get("num_epochs", 100))
    if config.get("num_iters"):
        epochs = max(epochs, -(-int(config["num_iters"]) // max(1, batches_per_epoch)))
    return epochs


def select_subset(dataset: datasets.ImageDataset, config: dict) -> SelectedSubset:
    """Keep the instances chosen by `instance_selection.select_from_config` (scored without augmentation)."""
    import instance_selection  # imported only when selection is asked for

    plain = copy.copy(dataset)
    plain.augment = False  # embeddings must see the same image every time
    keep = np.asarray(instance_selection.select_from_config(plain, config), dtype=np.int64)
    if keep.ndim != 1 or len(keep) == 0 or keep.min() < 0 or keep.max() >= len(dataset) \
            or np.any(np.diff(keep) <= 0):
        raise ValueError(f"instance selection returned {len(keep)} invalid indices for {len(dataset)} "
                         f"images; delete the selection cache (--selection_cache_dir) and rerun")
    distributed.print0(f"instance selection: training on {len(keep)} of {len(dataset)} images "
                       f"(--retention_ratio {config['retention_ratio']})")
    return SelectedSubset(dataset, keep)


def _uses_cuda(config: dict) -> bool:
    device = str(config.get("device", "auto"))
    return torch.cuda.is_available() if device == "auto" else device.startswith("cuda")


def loader_batch_size(config: dict) -> int:
    """Images per training-loader batch (all ranks together): batch_size x num_D_steps x num_D_accumulations."""
    return config["batch_size"] * config.get("num_D_steps", 2) * config.get("num_D_accumulations", 1)


def get_data_loaders(config: dict, start_itr: int = 0, batch_size: int | None = None,
                     train: bool = True, dataset: datasets.ImageDataset | None = None) -> list[DataLoader]:
    """BigGAN-PyTorch's loaders: `[train_loader]` for `config`, resumed after `start_itr` batches.

    A training loader batch holds `loader_batch_size(config)` images in total, divided
    evenly over the DDP ranks (each rank loads its share). Shuffling follows --shuffle
    (always on with --use_multiepoch_sampler, whose single pass spans the remaining
    --num_epochs epochs), incomplete batches are dropped, memory is pinned only when
    training on CUDA. `train=False` gives a plain sequential loader over the whole
    dataset (no augmentation, no selection, nothing dropped) with batches of `batch_size`
    (default --batch_size). Pass `dataset` to skip building it from the config.
    """
    if dataset is None:
        dataset = get_dataset_from_config(config, augment=None if train else False)
    if train and config.get("retention_ratio", 100) < 100:
        dataset = select_subset(dataset, config)
    num_workers = int(config.get("num_workers", 8))
    rank, world = distributed.rank(), distributed.world_size()
    seed = int(config.get("seed", 0))
    # Worker seeds (torch, numpy and `random` in each worker) derive from this generator, so
    # augmentation is reproducible from --seed and differs between ranks and workers.
    worker_seed = np.random.SeedSequence([seed & (2**63 - 1), rank]).generate_state(1)[0]
    gen = torch.Generator().manual_seed(int(worker_seed))
    kwargs = dict(num_workers=num_workers, pin_memory=bool(config.get("pin_memory", True)) and _uses_cuda(config),
                  generator=gen, persistent_workers=num_workers > 0)
    if not train:
        return [DataLoader(dataset, batch_size=batch_size or config["batch_size"], shuffle=False, **kwargs)]

    total = batch_size or loader_batch_size(config)
    if total % world:
        raise ValueError(f"the loader batch ({total} = --batch_size x --num_D_steps x "
                         f"--num_D_accumulations) must divide evenly over {world} processes")
    per_rank_batch = total // world
    multi = bool(config.get("use_multiepoch_sampler", False))
    sampler = ResumableSampler(len(dataset), seed, shuffle=multi or bool(config.get("shuffle", False)),
                               rank=rank, world_size=world)
    if sampler.per_rank < per_rank_batch:
        raise ValueError(f"{len(dataset)} training images make no full batch of {total} (--batch_size x "
                         f"--num_D_steps x --num_D_accumulations); lower --batch_size")
    if multi:
        offset = start_itr * per_rank_batch
        epoch, position = divmod(offset, sampler.per_rank)
        epochs = planned_epochs(config, sampler.per_rank // per_rank_batch)
        sampler.set_position(epoch, position, max(1, epochs - epoch))
    else:
        epoch, batch = divmod(start_itr, sampler.per_rank // per_rank_batch)
        sampler.set_position(epoch, batch * per_rank_batch)
    return [DataLoader(dataset, batch_size=per_rank_batch, sampler=sampler, drop_last=True, **kwargs)]
