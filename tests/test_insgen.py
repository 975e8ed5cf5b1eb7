"""InsGen on the real BigGAN discriminator: contrastive signal, queues, momentum encoder, resume, DDP."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import BigGAN
from insgen import InsGen, default_queue_size


def _D(seed: int = 0) -> BigGAN.Discriminator:
    torch.manual_seed(seed)
    return BigGAN.Discriminator(D_ch=8, resolution=32, D_attn='0', n_classes=10)


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Distinct, structured images: random low-frequency patterns upsampled to 32x32.
    return torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g) * 2 - 1,
                                           size=32, mode="bilinear", align_corners=False)


def _insgen(D, **kw) -> InsGen:
    args = dict(dim=16, real_queue=64, fake_queue=64, temperature=0.2, momentum=0.9)
    args.update(kw)
    return InsGen(D, **args)


def test_queue_size_defaults_to_five_percent_and_reads_feature_size_from_D():
    assert default_queue_size(60000) == 3000 and default_queue_size(10) == 1
    assert default_queue_size(60000, 512) == 512
    config = dict(insgen_dim=32, insgen_real_queue=0, insgen_fake_queue=7, insgen_temperature=0.07,
                  insgen_momentum=0.999, insgen_w_real=1.0, insgen_w_fake=0.5, insgen_w_g=2.0,
                  diffaug="color,translation")
    ig = InsGen.from_config(_D(), config, n_train=2000)
    assert ig.real_queue.shape == (100, 32) and ig.fake_queue.shape == (7, 32)
    assert ig.real_head[0].in_features == 32 and ig.policy == "color,translation"
    with pytest.raises(ValueError, match="--insgen_momentum"):
        InsGen(_D(), momentum=1.0)


def test_matching_views_score_lower_loss_than_shuffled_views():
    D = _D()
    ig = _insgen(D, temperature=0.07, real_queue=32)
    with torch.no_grad():
        for step in range(2):  # fill the queues with keys of other images, as in training
            ig.d_loss(D, ig.make_views(_images(16, 100 + step)), ig.make_views(_images(16, 200 + step)))
        v1, v2 = ig.make_views(_images(16, 0), torch.Generator().manual_seed(0))
        matched, _ = ig.instance_loss(D, (v1, v2), "real")
        for shift in (1, 5, 9):  # the positive key taken from another image
            shuffled, _ = ig.instance_loss(D, (v1, v2[torch.roll(torch.arange(16), shift)]), "real")
            assert matched < shuffled - 0.02, (float(matched), float(shuffled))
    assert torch.isfinite(matched)


def test_queues_fill_and_wrap_around():
    ig = _insgen(_D(), real_queue=10)
    batches = [torch.nn.functional.normalize(torch.randn(4, 16), dim=1) for _ in range(3)]
    for b in batches:
        ig.enqueue(b, "real")
    assert int(ig.real_ptr) == 2 and int(ig.real_count) == 12
    assert torch.equal(ig.real_queue[:2], batches[2][2:])   # the wrapped tail of batch 2
    assert torch.equal(ig.real_queue[2:4], batches[0][2:])  # oldest keys not yet overwritten
    assert torch.equal(ig.real_queue[4:8], batches[1])
    assert torch.equal(ig.real_queue[8:10], batches[2][:2])
    assert ig.queue_fill()["insgen_real_fill"] == 1.0 and ig.queue_fill()["insgen_fake_fill"] == 0.0
    big = torch.randn(13, 16)
    ig.enqueue(big, "real")  # larger than the queue: keeps the newest keys
    assert torch.equal(ig.real_queue, big[3:]) and int(ig.real_ptr) == 0


def test_d_loss_enqueues_keys_and_g_loss_does_not_but_reaches_G():
    D = _D()
    ig = _insgen(D)
    ig.d_loss(D, ig.make_views(_images(8, 0)), ig.make_views(_images(8, 1)))
    assert int(ig.real_ptr) == 8 and int(ig.fake_ptr) == 8
    fake_queue = ig.fake_queue.clone()
    fake = _images(8, 2).requires_grad_(True)  # stands in for G's output
    ig.heads_requires_grad(False)
    D.requires_grad_(False)
    ig.g_loss(D, ig.make_views(fake)).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in ig.trainable_parameters())
    assert torch.equal(ig.fake_queue, fake_queue) and int(ig.fake_ptr) == 8
    assert set(ig.stats) == {"insgen_real", "insgen_fake", "insgen_g"}


def test_momentum_encoder_moves_slowly_towards_D():
    D = _D()
    ig = _insgen(D, momentum=0.99)
    before = [p.clone() for p in ig.D_momentum.parameters()]
    with torch.no_grad():
        for p in D.parameters():
            p.add_(torch.randn_like(p))  # a large step of D
    ig.update_momentum(D)
    for old, new, live in zip(before, ig.D_momentum.parameters(), D.parameters()):
        assert torch.allclose(new - old, 0.01 * (live - old), atol=1e-6)
    assert all(not p.requires_grad for p in ig.D_momentum.parameters())
    ig.train()
    assert not ig.D_momentum.training and ig.real_head.training


def test_state_dict_round_trip_resumes_exactly(tmp_path):
    D = _D()
    ig = _insgen(D)
    for step in range(3):
        ig.d_loss(D, ig.make_views(_images(8, step)), ig.make_views(_images(8, 50 + step)))
        ig.update_momentum(D)
    path = tmp_path / "InsGen.pth"
    torch.save(ig.state_dict(), path)
    restored = _insgen(_D(seed=5))
    restored.load_state_dict(torch.load(path, weights_only=True))
    for (name, a), (_, b) in zip(ig.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(a, b), name
    views_r, views_f = ig.make_views(_images(8, 9)), ig.make_views(_images(8, 10))
    assert torch.equal(ig.d_loss(D, views_r, views_f), restored.d_loss(D, views_r, views_f))
    assert torch.equal(ig.real_queue, restored.real_queue)


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        D = _D()
        ig = _insgen(D, real_queue=16)
        torch.manual_seed(rank)
        loss = ig.d_loss(D, ig.make_views(_images(4, rank)), ig.make_views(_images(4, 10 + rank)))
        loss.backward()
        ig.sync_head_grads()
        torch.save({"queue": ig.real_queue, "ptr": ig.real_ptr,
                    "grad": ig.real_head[0].weight.grad}, os.path.join(out_dir, f"rank{rank}.pth"))
    finally:
        dist.destroy_process_group()


def test_ddp_gathers_keys_from_all_ranks_and_averages_head_grads(tmp_path):
    # fork: the children reuse the imported torch instead of paying a fresh interpreter each
    mp.start_processes(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pth", weights_only=True) for r in (0, 1))
    assert int(r0["ptr"]) == int(r1["ptr"]) == 8  # 4 keys per rank, gathered
    assert torch.equal(r0["queue"], r1["queue"]) and torch.equal(r0["grad"], r1["grad"])
    assert not torch.equal(r0["queue"][:4], r0["queue"][4:8])  # the two ranks' keys differ
