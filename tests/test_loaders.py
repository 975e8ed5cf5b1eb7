"""loaders.py: BigGAN-PyTorch loader semantics, exact resume, DDP sharding, the instance-selection hook."""
from __future__ import annotations

import os
import socket
import sys
import types

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

import datasets
import loaders


def id_dataset(n: int, folder) -> datasets.ArrayDataset:
    """A real dataset (array saved in `folder`) whose image i is filled with the value i, so batches reveal indices."""
    images = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None], 4, axis=1).repeat(4, 2).repeat(3, 3)
    path = os.path.join(folder, f"ids{n}.npy")
    np.save(path, images, allow_pickle=False)
    return datasets.ArrayDataset(np.load(path, allow_pickle=False), np.arange(n) % 5, 5, [path], augment=False)


def ids(x: torch.Tensor) -> list[int]:
    return ((x[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()


def config(**kw):
    base = dict(dataset="custom", data_root="", batch_size=3, num_D_steps=2, num_D_accumulations=1,
                num_workers=0, shuffle=True, seed=7, pin_memory=True, device="cpu", num_epochs=3,
                use_multiepoch_sampler=False, retention_ratio=100.0, augment=False)
    return {**base, **kw}


def run_batches(loader, epochs: int) -> list[list[int]]:
    return [ids(x) for _ in range(epochs) for x, _ in loader]


def test_biggan_batch_semantics_and_cpu_options(tmp_path):
    loader = loaders.get_data_loaders(config(num_D_accumulations=2), dataset=id_dataset(50, tmp_path))[0]
    assert loader.batch_size == 12 and loader.drop_last and not loader.pin_memory
    batches = run_batches(loader, 1)
    assert len(batches) == 4 and all(len(b) == 12 for b in batches)  # 50 // 12, remainder dropped
    assert len(set(sum(batches, []))) == 48 and sorted(sum(batches, [])) != list(range(48))
    plain = loaders.get_data_loaders(config(shuffle=False), dataset=id_dataset(50, tmp_path))[0]
    assert sum(run_batches(plain, 1), []) == list(range(48))  # BigGAN's default: --shuffle off
    test = loaders.get_data_loaders(config(), train=False, batch_size=8, dataset=id_dataset(50, tmp_path))[0]
    assert sum(run_batches(test, 1), []) == list(range(50))


def test_permutation_depends_only_on_seed_and_epoch():
    a, b = loaders.ResumableSampler(40, seed=3), loaders.ResumableSampler(40, seed=3)
    assert np.array_equal(a.permutation(5), b.permutation(5))
    assert not np.array_equal(a.permutation(5), a.permutation(6))
    assert not np.array_equal(a.permutation(5), loaders.ResumableSampler(40, seed=4).permutation(5))
    first, second = list(a), list(a)  # each pass is the next epoch
    assert first == a.permutation(0).tolist() and second == a.permutation(1).tolist()


@pytest.mark.parametrize("multi", [False, True])
def test_resume_sees_exactly_the_remaining_batches(multi, tmp_path):
    cfg = config(use_multiepoch_sampler=multi)
    ds = id_dataset(20, tmp_path)  # 3 batches of 6 per epoch, 2 images dropped each epoch
    full_loader = loaders.get_data_loaders(cfg, dataset=ds)[0]
    full = run_batches(full_loader, 1 if multi else 3)
    assert len(full) == (10 if multi else 9)  # the multi-epoch pass lets batches straddle epochs
    for k in (1, 2, 3, 4, 8):
        loader = loaders.get_data_loaders(cfg, start_itr=k, dataset=ds)[0]
        epochs_left = 1 if multi else 3 - k // 3
        assert run_batches(loader, epochs_left) == full[k:], f"start_itr={k}"


def test_resume_with_workers_and_sampler_state(tmp_path):
    cfg = config(num_workers=2)
    ds = id_dataset(20, tmp_path)
    full = run_batches(loaders.get_data_loaders(config(), dataset=ds)[0], 2)
    loader = loaders.get_data_loaders(cfg, start_itr=4, dataset=ds)[0]
    state = loader.sampler.state_dict()
    assert (state["epoch"], state["position"]) == (1, 6)
    assert run_batches(loader, 1) == full[4:6]
    fresh = loaders.get_data_loaders(config(), dataset=ds)[0]
    fresh.sampler.load_state_dict(state)
    assert run_batches(fresh, 1) == full[4:6]
    with pytest.raises(ValueError, match="same dataset, --retention_ratio"):
        loaders.get_data_loaders(config(), dataset=id_dataset(21, tmp_path))[0].sampler.load_state_dict(state)


def test_set_epoch_keeps_a_pending_resume_position():
    s = loaders.ResumableSampler(10, seed=0)
    s.set_position(2, 4)
    s.set_epoch(2)
    assert list(s) == s.permutation(2)[4:].tolist()
    s.set_epoch(5)
    assert list(s) == s.permutation(5).tolist()


@pytest.mark.parametrize("n, world", [(30, 3), (31, 3), (8, 2)])
def test_shards_are_disjoint_and_cover_the_permutation(n, world):
    shards = [loaders.ResumableSampler(n, seed=1, rank=r, world_size=world).shard(4) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    merged = np.concatenate(shards)
    assert len(set(merged.tolist())) == len(merged) == n // world * world
    assert set(merged.tolist()) == set(loaders.ResumableSampler(n, seed=1).permutation(4)[: len(merged)].tolist())


def _ddp_worker(rank: int, world: int, port: int, out: str, ds: datasets.ArrayDataset) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        loader = loaders.get_data_loaders(config(batch_size=2), start_itr=1, dataset=ds)[0]
        got = np.array(run_batches(loader, 1), dtype=np.int64)
        np.save(os.path.join(out, f"rank{rank}.npy"), got, allow_pickle=False)
    finally:
        dist.destroy_process_group()


def test_real_two_process_gloo_run_shards_the_same_permutation(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path), id_dataset(26, tmp_path)),
                       nprocs=2, start_method="fork")
    r0, r1 = (np.load(tmp_path / f"rank{r}.npy", allow_pickle=False) for r in range(2))
    # global loader batch 2 x 2 D steps = 4 images, 2 per rank; 13 per rank -> 6 batches, resumed at 1
    assert r0.shape == r1.shape == (5, 2)
    assert not set(r0.ravel()) & set(r1.ravel())
    perm = loaders.ResumableSampler(26, seed=7).permutation(0)
    expected = perm[2 * 2:2 * 12]  # batches 1..5 of the interleaved shards
    assert sorted(np.concatenate([r0.ravel(), r1.ravel()]).tolist()) == sorted(expected.tolist())
    assert r0.ravel().tolist() == perm[0::2][2:12].tolist()


def test_dataset_too_small_and_uneven_world_are_errors(tmp_path):
    with pytest.raises(ValueError, match="no full batch of 12"):
        loaders.get_data_loaders(config(batch_size=6), dataset=id_dataset(10, tmp_path))
    with pytest.raises(ValueError, match="cannot be shared by 4 processes"):
        loaders.ResumableSampler(3, world_size=4)


def test_instance_selection_hook_trains_on_the_selected_subset(monkeypatch, tmp_path):
    calls = []

    def select_from_config(dataset, cfg):  # stands in for the selection helper's module
        calls.append((dataset.augment, cfg["retention_ratio"]))
        return np.flatnonzero(dataset.labels % 2 == 0)

    monkeypatch.setitem(sys.modules, "instance_selection",
                        types.SimpleNamespace(select_from_config=select_from_config))
    ds = id_dataset(30, tmp_path)
    ds.augment = True
    loader = loaders.get_data_loaders(config(retention_ratio=50.0, batch_size=2), dataset=ds)[0]
    assert calls == [(False, 50.0)] and ds.augment  # scored without augmentation, trained with it
    assert isinstance(loader.dataset, torch.utils.data.Subset) and len(loader.dataset) == 18
    assert set(loader.dataset.labels.tolist()) == {0, 2, 4} and loader.dataset.n_classes == 5
    seen = sum(run_batches(loader, 1), [])
    assert len(seen) == 16 and all(i % 5 in (0, 2, 4) for i in seen)
    assert loader.dataset.fingerprint() != ds.fingerprint()


def test_get_dataset_from_config_on_fashion_mnist(fmnist_root):
    ds = loaders.get_dataset_from_config({"dataset": "FMNIST32", "data_root": str(fmnist_root),
                                          "resolution": 0, "augment": True, "load_in_mem": False})
    assert len(ds) == 60000 and ds.augment and ds.resolution == 32


def test_augmentation_in_workers_is_reproducible_from_the_seed(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (8, 24, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    cfg = config(dataset="custom", data_root=str(tmp_path), resolution=8, augment=True, batch_size=2,
                 num_workers=2)

    def epoch(**kw):
        return torch.cat([x for x, _ in loaders.get_data_loaders({**cfg, **kw})[0]])

    first = epoch()
    assert torch.equal(first, epoch())
    assert not torch.equal(first, epoch(seed=8))
