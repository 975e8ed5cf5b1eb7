"""Training: the BigGAN-PyTorch recipe step by step, EMA/ortho/optimizer pieces, non-finite
losses, and whole runs of train.py on real Fashion-MNIST images (checkpoints, samples, logs,
metrics, exact resume, SIGKILL during a checkpoint, two-process DDP, launch command lines)."""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import BigGAN
import checkpoints
import losses
import train_fns
import utils
from training_utils import EMA, NoiseSampler, build_optimizer, ortho, toggle_grad

CPU = torch.device("cpu")


def tiny_config(*args: str, **overrides) -> dict:
    config = vars(utils.prepare_parser().parse_args(list(args)))
    config.update(dataset="FMNIST32", resolution=32, n_classes=10, G_ch=8, D_ch=8, dim_z=16,
                  G_attn="0", D_attn="0", G_shared=True, shared_dim=8, batch_size=4)
    config.update(overrides)
    return config


def build(config: dict, seed: int = 0):
    torch.manual_seed(seed)
    G, D = BigGAN.build_models(config)
    return G, D, build_optimizer(G), build_optimizer(D)


# ----------------------------------------------------------------------------- pieces
def test_hinge_loss_values():
    real, fake = torch.tensor([[2.0], [0.5]]), torch.tensor([[-2.0], [0.0]])
    loss_real, loss_fake = losses.loss_hinge_dis(fake, real)
    assert loss_real.item() == pytest.approx(0.25) and loss_fake.item() == pytest.approx(0.5)
    assert losses.loss_hinge_gen(fake).item() == pytest.approx(1.0)


def test_non_saturating_loss_values():
    real, fake = torch.tensor([[2.0], [0.5]]), torch.tensor([[-2.0], [0.0]])
    loss_real, loss_fake = losses.loss_dcgan_dis(fake, real)
    # -log sigmoid(D(x)) over the reals, -log(1 - sigmoid(D(G(z)))) over the fakes, -log sigmoid(D(G(z))) for G
    assert loss_real.item() == pytest.approx((math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-0.5))) / 2)
    assert loss_fake.item() == pytest.approx((math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2)
    assert losses.loss_dcgan_gen(fake).item() == pytest.approx((math.log1p(math.exp(2.0)) + math.log(2.0)) / 2)


def test_ortho_is_the_gradient_of_the_modified_penalty():
    torch.manual_seed(0)
    conv, emb = torch.nn.Conv2d(3, 5, 3), torch.nn.Embedding(4, 6)
    model = torch.nn.ModuleDict({"conv": conv, "emb": emb})
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    ortho(model, 1e-2, blacklist=list(emb.parameters()))
    w = conv.weight.detach().clone().requires_grad_(True)
    flat = w.view(5, -1)
    penalty = 0.5 * 1e-2 * ((flat @ flat.t()) * (1 - torch.eye(5))).pow(2).sum()
    penalty.backward()
    assert torch.allclose(conv.weight.grad, w.grad, rtol=1e-5, atol=1e-9)
    assert torch.count_nonzero(emb.weight.grad) == 0 and torch.count_nonzero(conv.bias.grad) == 0


def test_ema_matches_biggan_formula_and_pegs_before_start():
    config = tiny_config()
    G, _, _, _ = build(config, 0)
    G_ema, _, _, _ = build(config, 1)
    ema = EMA(G, G_ema, decay=0.9, start_itr=3)
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G_ema.state_dict().values()))
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    ema.update(2)  # before ema_start: G_ema follows G exactly
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G_ema.state_dict().values()))
    before = copy.deepcopy(G_ema.state_dict())
    with torch.no_grad():
        for p in G.parameters():
            p.mul_(0.5)
    ema.update(3)
    for key, value in G_ema.state_dict().items():
        expected = before[key] * 0.9 + G.state_dict()[key] * (1 - 0.9)
        assert torch.equal(value, expected), key


def test_ema_follows_g_after_its_tensors_are_swapped_by_channels_last():
    """`.to(memory_format=channels_last)` (--channels_last) replaces every 4-d weight tensor; an EMA
    that kept the old tensors averaged a stale copy and left G_ema at its initialisation."""
    config = tiny_config()
    G, _, _, _ = build(config, 0)
    G_ema, _, _, _ = build(config, 1)
    ema = EMA(G, G_ema, decay=0.5)
    G.to(memory_format=torch.channels_last)
    G_ema.to(memory_format=torch.channels_last)
    start = copy.deepcopy(G_ema.state_dict())
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    ema.update(1)
    for key, value in G_ema.state_dict().items():
        if value.is_floating_point() and value.dim() == 4:
            assert torch.equal(value, start[key] * 0.5 + G.state_dict()[key] * 0.5), key


def test_foreach_adam_equals_the_plain_loop():
    config = tiny_config()
    G1, _, opt1, _ = build(config)
    G2 = copy.deepcopy(G1)
    opt2 = torch.optim.Adam(G2.parameters(), lr=G2.lr, betas=(G2.B1, G2.B2), eps=G2.adam_eps,
                            foreach=False)
    assert opt1.defaults["foreach"] and opt1.defaults["betas"] == (0.0, 0.999)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p1, p2 in zip(G1.parameters(), G2.parameters()):
            p1.grad = torch.randn(p1.shape, generator=gen)
            p2.grad = p1.grad.clone()
        opt1.step()
        opt2.step()
    assert all(torch.equal(a, b) for a, b in zip(G1.parameters(), G2.parameters()))


def reference_iteration(G, D, GD, G_optim, D_optim, G_ema, z_, y_, x, y, itr, config,
                        gen_loss=losses.loss_hinge_gen, dis_loss=losses.loss_hinge_dis):
    """BigGAN-PyTorch's GAN_training_function written out plainly (through G_D), with its hinge
    loss unless another pair is given."""
    bs = config["batch_size"]
    x, y = torch.split(x, bs), torch.split(y, bs)
    counter = 0
    toggle_grad(D, True)
    toggle_grad(G, False)
    for _ in range(config["num_D_steps"]):
        D_optim.zero_grad()
        for _ in range(config["num_D_accumulations"]):
            z_.normal_(0, config["z_var"])
            y_.random_(0, config["n_classes"])
            D_fake, D_real = GD(z_[:bs], y_[:bs], x[counter], y[counter], train_G=False)
            D_loss_real, D_loss_fake = dis_loss(D_fake, D_real)
            ((D_loss_real + D_loss_fake) / float(config["num_D_accumulations"])).backward()
            counter += 1
        with torch.no_grad():
            for p in D.parameters():  # BigGAN-PyTorch's utils.ortho
                w = p.view(p.shape[0], -1)
                if p.ndim >= 2:
                    p.grad.data += config["D_ortho"] * (2 * torch.mm(torch.mm(w, w.t()) * (1. - torch.eye(w.shape[0])), w)).view(p.shape)
        D_optim.step()
    toggle_grad(D, False)
    toggle_grad(G, True)
    G_optim.zero_grad()
    for _ in range(config["num_G_accumulations"]):
        z_.normal_(0, config["z_var"])
        y_.random_(0, config["n_classes"])
        G_loss = gen_loss(GD(z_, y_, train_G=True)) / float(config["num_G_accumulations"])
        G_loss.backward()
    shared = [id(p) for p in G.shared.parameters()]
    with torch.no_grad():
        for p in G.parameters():
            w = p.view(p.shape[0], -1)
            if p.ndim >= 2 and id(p) not in shared:
                p.grad.data += config["G_ortho"] * (2 * torch.mm(torch.mm(w, w.t()) * (1. - torch.eye(w.shape[0])), w)).view(p.shape)
    G_optim.step()
    decay = 0.0 if itr < config["ema_start"] else config["ema_decay"]
    with torch.no_grad():
        target, source = G_ema.state_dict(), G.state_dict()
        for key in source:
            target[key].data.copy_(target[key].data * decay + source[key].data * (1 - decay))
    return {"G_loss": G_loss.item(), "D_loss_real": D_loss_real.item(), "D_loss_fake": D_loss_fake.item()}


@pytest.mark.parametrize("loss", ["hinge", "dcgan"])
def test_iteration_is_biggan_pytorch_recipe_bit_for_bit(loss):
    """Hinge: BigGAN-PyTorch's step. --loss dcgan: the same step with the non-saturating pair."""
    config = tiny_config(num_D_steps=2, num_D_accumulations=2, num_G_accumulations=2, G_ortho=1e-3,
                         D_ortho=1e-3, ema=True, ema_start=2, ema_decay=0.9, loss=loss)
    G, D, G_optim, D_optim = build(config)
    G_ema = copy.deepcopy(G)
    rG, rD, rG_ema = copy.deepcopy(G), copy.deepcopy(D), copy.deepcopy(G)
    rG_optim = torch.optim.Adam(rG.parameters(), lr=rG.lr, betas=(0.0, 0.999), eps=1e-8)
    rD_optim = torch.optim.Adam(rD.parameters(), lr=rD.lr, betas=(0.0, 0.999), eps=1e-8)
    state = {"itr": 0}
    train = train_fns.GAN_training_function(
        train_fns.Nets(G, D), G_optim, D_optim, NoiseSampler(4, G.dim_z, 10, CPU), EMA(G, G_ema, 0.9, 2),
        state, config, CPU)
    z_, y_ = torch.zeros(4, G.dim_z), torch.zeros(4, dtype=torch.int64)
    gen = torch.Generator().manual_seed(1)
    for itr in (1, 2):
        x, y = torch.rand(16, 3, 32, 32, generator=gen) * 2 - 1, torch.randint(0, 10, (16,), generator=gen)
        state["itr"] = itr
        torch.manual_seed(100 + itr)
        ours = train(x, y)
        torch.manual_seed(100 + itr)
        ref = reference_iteration(rG, rD, BigGAN.G_D(rG, rD), rG_optim, rD_optim, rG_ema, z_, y_, x, y,
                                  itr, config, *losses.LOSSES[loss])
        assert {k: ours[k] for k in ref} == ref
    for a, b in [(G, rG), (D, rD), (G_ema, rG_ema)]:
        for (key, v), v2 in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(v, v2), key


def test_nonfinite_loss_stops_or_skips():
    config = tiny_config(num_D_steps=1)
    G, D, G_optim, D_optim = build(config)
    state = {"itr": 12}
    D_before = copy.deepcopy(D.state_dict())
    train = train_fns.GAN_training_function(train_fns.Nets(G, D), G_optim, D_optim,
                                            NoiseSampler(4, G.dim_z, 10, CPU), None, state, config, CPU)
    x, y = torch.full((4, 3, 32, 32), float("nan")), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(train_fns.NonFiniteLossError, match="iteration 12.*D_loss_real=nan"):
        train(x, y)
    assert all(torch.equal(v, D_before[k]) for k, v in D.state_dict().items() if "sv" not in k and "u0" not in k)
    config["skip_nonfinite"] = True
    out = train(x, y)
    assert out["skipped_D_steps"] == 1 and out["skipped_G_steps"] == 0
    assert all(torch.equal(p, D_before[k]) for k, p in D.named_parameters())


# ----------------------------------------------------------------------------- whole runs
@pytest.fixture(scope="session")
def fmnist_folder(fmnist_root, tmp_path_factory) -> Path:
    """50 real Fashion-MNIST training images (5 per class) as a class-folder tree, with the
    efficientnet_lite0 moments and manifold that the metrics need."""
    import array_readers
    root = tmp_path_factory.mktemp("fmnist_small")
    images = array_readers.read_idx(next(fmnist_root.glob("train-images-idx3-ubyte*")))
    labels = array_readers.read_idx(next(fmnist_root.glob("train-labels-idx1-ubyte*")))
    for c in range(10):
        (root / f"class{c}").mkdir()
        for i in np.flatnonzero(labels == c)[:5]:
            Image.fromarray(images[i]).save(root / f"class{c}" / f"{i}.png")
    import calculate_inception_moments
    import prepare_manifold
    flags = ["--dataset", "custom", "--data_root", str(root), "--resolution", "32", "--device", "cpu",
             "--feature_net", "efficientnet_lite0", "--num_workers", "0", "--pbar", "none",
             "--batch_size", "50", "--num_pr_images", "50"]
    calculate_inception_moments.main(flags)
    prepare_manifold.main(flags)
    return root


def base_flags(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "custom", "--data_root", str(folder), "--resolution", "32", "--base_root", str(out),
            "--G_ch", "8", "--D_ch", "8", "--dim_z", "16", "--G_shared", "--shared_dim", "8",
            "--batch_size", "4", "--num_D_steps", "1", "--G_attn", "0", "--D_attn", "0",
            "--num_workers", "0", "--shuffle", "--device", "cpu", "--pbar", "none",
            "--feature_net", "efficientnet_lite0", "--num_inception_images", "16", "--num_pr_images", "16",
            "--prdc_k", "3", "--test_every", "1000", "--log_every", "1", "--sv_log_interval", "2",
            "--ema", "--ema_start", "3", "--experiment_name", "tiny", *extra]


def train_in_process(folder: Path, out: Path, *extra: str) -> train_fns.Nets:
    """train.py's run() in this process, on one thread: tiny models gain nothing from more, and
    every run (in or out of process) must round alike for the bit-for-bit comparisons."""
    import train
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train.run(vars(utils.prepare_parser().parse_args(base_flags(folder, out, *extra))))
    finally:
        torch.set_num_threads(threads)


def read_jsonl(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "_stamp"}
            for line in path.read_text().splitlines()]


def assert_same_weights(dir_a: Path, dir_b: Path, suffix: str | None = None) -> None:
    for item in ("G", "D", "G_ema", "G_optim", "D_optim"):
        a = torch.load(dir_a / checkpoints.file_name(item, suffix), weights_only=True)
        b = torch.load(dir_b / checkpoints.file_name(item, suffix), weights_only=True)
        flat_a, flat_b = (torch.utils._pytree.tree_flatten(s)[0] for s in (a, b))
        assert len(flat_a) == len(flat_b)
        for va, vb in zip(flat_a, flat_b):
            assert (torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb), item


@pytest.fixture(scope="session")
def uninterrupted(fmnist_folder, tmp_path_factory) -> Path:
    """6 iterations in one run, saving every 2."""
    out = tmp_path_factory.mktemp("uninterrupted")
    train_in_process(fmnist_folder, out, "--num_iters", "6", "--save_every", "2")
    return out


def test_run_writes_checkpoints_samples_logs_and_metrics(fmnist_folder, tmp_path):
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "4", "--save_every", "2", "--test_every", "2",
                     "--use_ema", "--which_best", "FID", "--G_eval_mode", "--accumulate_stats", "--mybn")
    weights = tmp_path / "weights" / "tiny"
    for suffix in (None, "copy0", "copy1", "best0"):
        assert checkpoints.is_complete(weights, suffix), suffix
        for item in ("G", "D", "G_ema", "G_optim", "D_optim", "state_dict"):
            assert (weights / checkpoints.file_name(item, suffix)).is_file()
    state = checkpoints.load_state_dict_file(weights)
    assert {"itr", "epoch", "save_num", "save_best_num", "best_IS", "best_FID", "config", "rng",
            "data_position"} <= set(state)
    assert state["itr"] == 4 and state["data_position"]["batches"] == 4 and state["save_num"] == 0
    assert json.loads((weights / "config.json").read_text())["n_classes"] == 10
    tests = read_jsonl(tmp_path / "logs" / "tiny_log.jsonl")
    assert [t["itr"] for t in tests] == [2, 4]
    assert all(np.isfinite([t[k] for k in ("IS_mean", "FID", "P", "R", "D", "C")]).all() for t in tests)
    assert state["best_FID"] == min(t["FID"] for t in tests)
    losses_log = read_jsonl(tmp_path / "logs" / "tiny" / "losses.jsonl")
    assert [r["itr"] for r in losses_log] == [1, 2, 3, 4]
    assert {"G_loss", "D_loss_real", "D_loss_fake"} <= set(losses_log[0])
    svs = read_jsonl(tmp_path / "logs" / "tiny" / "sv.jsonl")
    assert [r["itr"] for r in svs] == [2, 4] and any(k.startswith("G_") for k in svs[0])
    samples = tmp_path / "samples" / "tiny"
    for name in ("fixed_samples2.jpg", "fixed_samples4.jpg", "2/samples0.png", "4/interpZY0.png",
                 "4/interpZ0.png", "4/interpY0.png"):
        assert (samples / name).is_file(), name
    assert not list(tmp_path.rglob("*.tmp"))
    # The same experiment name again refuses to overwrite it.
    with pytest.raises(utils.UserError, match="--resume"):
        train_in_process(fmnist_folder, tmp_path, "--num_iters", "2")


def test_resume_is_bit_identical(fmnist_folder, uninterrupted, tmp_path):
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "3", "--save_every", "2")
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "6", "--save_every", "2", "--resume")
    assert_same_weights(uninterrupted / "weights" / "tiny", tmp_path / "weights" / "tiny")
    for stream in ("losses.jsonl", "sv.jsonl"):
        assert read_jsonl(uninterrupted / "logs" / "tiny" / stream) == read_jsonl(tmp_path / "logs" / "tiny" / stream)
    assert checkpoints.load_state_dict_file(tmp_path / "weights" / "tiny")["data_position"]["batches"] == 6


def test_training_modes_resume_bit_identical(fmnist_folder, tmp_path):
    """DiffAugment + InsGen + Re-GAN wired in; resuming inside a sparse phase is exact."""
    modes = ["--diffaug", "color,translation,cutout", "--insgen", "--insgen_real_queue", "8",
             "--insgen_fake_queue", "8", "--regan", "--regan_interval", "2", "--regan_warmup", "1",
             "--save_every", "2"]
    train_in_process(fmnist_folder, tmp_path / "a", "--num_iters", "5", *modes)
    train_in_process(fmnist_folder, tmp_path / "b", "--num_iters", "3", *modes)  # itr 2-3 sparse
    train_in_process(fmnist_folder, tmp_path / "b", "--num_iters", "5", "--resume", *modes)
    a, b = tmp_path / "a" / "weights" / "tiny", tmp_path / "b" / "weights" / "tiny"
    assert_same_weights(a, b)
    for item in ("InsGen", "InsGen_optim", "ReGAN"):
        flat_a, flat_b = (torch.utils._pytree.tree_flatten(torch.load(d / f"{item}.pth", weights_only=True))[0]
                          for d in (a, b))
        assert all(torch.equal(p, q) if isinstance(p, torch.Tensor) else p == q for p, q in zip(flat_a, flat_b))
    logs = [read_jsonl(d / "logs" / "tiny" / "modes.jsonl") for d in (tmp_path / "a", tmp_path / "b")]
    assert logs[0] == logs[1] and logs[0][2]["regan_sparsity"] == pytest.approx(0.3, abs=0.01)
    # Iterations 4-5 are a dense (regrowth) phase: G at the base rate / 10, not compounded per iteration.
    G_optim = torch.load(a / "G_optim.pth", weights_only=True)
    assert [g["lr"] for g in G_optim["param_groups"]] == [pytest.approx(5e-6, rel=1e-12)]
    assert {"insgen_real", "insgen_fake", "insgen_g"} <= set(logs[0][-1])


KILLER = '''
import os, signal, sys
import checkpoints, train, utils
calls = {"n": 0}
real_write = checkpoints._write_bytes
def write_then_die(data, path):
    calls["n"] += 1
    if calls["n"] == int(os.environ["KILL_AT_WRITE"]):
        with checkpoints.atomic_path(path) as tmp:   # die half-way through the temp file
            tmp.write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    real_write(data, path)
checkpoints._write_bytes = write_then_die
utils.run_cli(train.main, sys.argv[1:])
'''


def test_sigkill_during_checkpoint_write_resumes_from_complete_set(fmnist_folder, uninterrupted, tmp_path,
                                                                   run_py):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    flags = base_flags(fmnist_folder, tmp_path, "--num_iters", "6", "--save_every", "2")
    # Writes 1-12 are the sets at itr 2; 13-18 copy1 at itr 4; 19 the main G.pth at itr 4.
    # One thread, as the in-process reference run: CPU kernels may round differently otherwise.
    proc = run_py(str(script), *flags, env={"KILL_AT_WRITE": "20", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    weights = tmp_path / "weights" / "tiny"
    assert list(weights.glob(".G_optim.pth.*.tmp"))  # the write it died in
    assert not checkpoints.is_complete(weights, None)  # G.pth from itr 4, the rest from itr 2
    assert checkpoints.find_resume_suffix(weights) == "copy1"
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "6", "--save_every", "2", "--resume")
    assert_same_weights(uninterrupted / "weights" / "tiny", weights)
    assert read_jsonl(uninterrupted / "logs" / "tiny" / "losses.jsonl") == read_jsonl(tmp_path / "logs" / "tiny" / "losses.jsonl")


def test_nan_loss_stops_cleanly_and_keeps_the_checkpoint(fmnist_folder, tmp_path, run_py):
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "2", "--save_every", "2", "--num_save_copies", "0")
    weights = tmp_path / "weights" / "tiny"
    items = {k: torch.load(weights / f"{k}.pth", weights_only=True)
             for k in ("G", "G_optim", "D", "D_optim", "G_ema")}
    items["D"]["linear.bias"].fill_(float("nan"))  # a corrupted but consistent checkpoint
    state = checkpoints.load_state_dict_file(weights)
    checkpoints.save_checkpoint(weights, items, {k: v for k, v in state.items() if k != "files"})
    before = {p.name: p.read_bytes() for p in weights.iterdir()}
    proc = run_py("train.py", *base_flags(fmnist_folder, tmp_path, "--num_iters", "4", "--resume"))
    assert proc.returncode == 2
    assert "non-finite loss at iteration 3" in proc.stderr and "last good checkpoint" in proc.stderr
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == before
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "4", "--resume", "--skip_nonfinite")
    skipped = read_jsonl(tmp_path / "logs" / "tiny" / "losses.jsonl")[-1]
    assert skipped["itr"] == 4 and skipped["skipped_D_steps"] == 1


DDP_RUNNER = '''
import gc, json, sys, torch
import distributed, train, utils
nets = train.run(vars(utils.prepare_parser().parse_args(sys.argv[2:])))
gc.collect()  # what distributed.cleanup() does first: a wrapper still alive after it can abort the exit
ddp_alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
flat = torch.cat([p.detach().flatten() for m in (nets.G, nets.D, nets.G_ema) for p in m.parameters()])
both = distributed.all_gather_cat(flat[None])
if distributed.is_main_process():
    json.dump({"world": distributed.world_size(), "max_diff": float((both[0] - both[1]).abs().max()),
               "ddp_alive": ddp_alive}, open(sys.argv[1], "w"))
distributed.cleanup()
'''


def test_two_process_ddp_keeps_ranks_identical_and_writes_once(fmnist_folder, tmp_path, repo_root):
    script, result = tmp_path / "ddp_runner.py", tmp_path / "result.json"
    script.write_text(DDP_RUNNER)
    flags = base_flags(fmnist_folder, tmp_path, "--num_iters", "3", "--save_every", "2", "--batch_size", "8")
    env = dict(os.environ, PYTHONPATH=str(repo_root), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(result), *flags], cwd=repo_root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(result.read_text())
    assert out == {"world": 2, "max_diff": 0.0, "ddp_alive": 0}
    assert [r["itr"] for r in read_jsonl(tmp_path / "logs" / "tiny" / "losses.jsonl")] == [1, 2, 3]
    weights = tmp_path / "weights" / "tiny"
    assert checkpoints.is_complete(weights) and checkpoints.load_state_dict_file(weights)["itr"] == 3
    assert len(checkpoints.load_state_dict_file(weights)["rng"]) == 2
    assert not list(tmp_path.rglob("*.tmp"))


LAUNCH_OVERRIDES = ["--G_ch", "8", "--D_ch", "8", "--batch_size", "4", "--num_iters", "2", "--num_workers", "0",
                    "--resolution", "32", "--device", "cpu", "--pbar", "none"]


@pytest.mark.parametrize("script, extra", [
    ("scripts/launch_SAGAN_res64_ch32_bs128_dstep_1_rr40.sh",
     ["--D_attn", "16", "--embedding", "efficientnet_lite0", "--embedding_res", "64"]),
    ("scripts/launch_BigGAN_bs256x8.sh", ["--G_attn", "16", "--D_attn", "16", "--amp", "bf16",
                                          "--batch_size", "2"]),
])
def test_launch_command_lines_run_two_iterations(fmnist_folder, tmp_path, repo_root, script, extra):
    flags = ["--dataset", "custom", "--data_root", str(fmnist_folder), "--base_root", str(tmp_path),
             "--selection_cache_dir", str(tmp_path / "cache"), *LAUNCH_OVERRIDES, *extra]
    env = dict(os.environ, PYTHONPATH=str(repo_root), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(["bash", str(repo_root / script), *flags], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if "--amp" in extra:
        assert "only applies on CUDA" not in proc.stdout + proc.stderr  # bf16 autocast runs on the CPU
    (run_dir,) = (tmp_path / "weights").iterdir()
    state = checkpoints.load_state_dict_file(run_dir)
    assert state["itr"] == 2 and checkpoints.is_complete(run_dir)


def test_the_same_seeded_command_twice_gives_identical_metrics(fmnist_folder, tmp_path, run_py):
    """The recipe's speed flags (bf16 autocast, channels_last) on 2 threads, as the quickstart
    trains: two runs of one command agree bit for bit, weights and metrics alike."""
    logs = []
    for name in ("first", "second"):
        flags = base_flags(fmnist_folder, tmp_path / name, "--num_iters", "4", "--test_every", "4",
                           "--save_every", "4", "--amp", "bf16", "--channels_last", "--use_ema")
        proc = run_py("train.py", *flags)
        assert proc.returncode == 0, proc.stderr[-2000:]
        logs.append([{k: v for k, v in line.items() if k != "train_seconds"}
                     for line in read_jsonl(tmp_path / name / "logs" / "tiny_log.jsonl")])
    assert logs[0] == logs[1] and logs[0][0]["itr"] == 4 and "FID" in logs[0][0]
    assert_same_weights(tmp_path / "first" / "weights" / "tiny", tmp_path / "second" / "weights" / "tiny")


def test_compile_without_a_cpp_compiler_is_refused_before_training(fmnist_folder, tmp_path, run_py):
    """--compile on the CPU with no C++ compiler (CXX points nowhere): train.py stops at start-up with
    an error that names the fixes, before any iteration or checkpoint, instead of failing inside
    TorchInductor at the first forward pass."""
    proc = run_py("train.py", *base_flags(fmnist_folder, tmp_path, "--num_iters", "2", "--compile"),
                  env={"CXX": str(tmp_path / "no-such-g++")})
    assert proc.returncode != 0
    assert "--compile on the CPU needs a C++ compiler" in proc.stderr and "QS_COMPILE=0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not checkpoints.has_checkpoint(tmp_path / "weights" / "tiny")


@pytest.mark.parametrize("multiepoch", [False, True])
def test_num_iters_decides_the_length_even_past_num_epochs(fmnist_folder, tmp_path, multiepoch):
    """50 images at batch 4 are 12 iterations an epoch: --num_epochs 1 --num_iters 14 trains 14
    (a small selected subset must not end a run early; the grids compare runs at equal iterations)."""
    extra = ["--use_multiepoch_sampler"] if multiepoch else []
    train_in_process(fmnist_folder, tmp_path, "--num_epochs", "1", "--num_iters", "14", "--save_every", "100",
                     "--log_every", "100", *extra)
    assert checkpoints.load_state_dict_file(tmp_path / "weights" / "tiny")["itr"] == 14


def test_g_eval_mode_evaluates_g_ema_in_eval_mode(fmnist_folder, tmp_path, monkeypatch):
    """--use_ema --G_eval_mode: the metrics (and so the best copies) come from G_ema in eval mode,
    also at test iterations that are not save iterations."""
    seen, real_test = [], train_fns.test

    def recording_test(nets, *args, **kwargs):
        seen.append((nets.G.training, nets.G_ema.training))
        return real_test(nets, *args, **kwargs)
    monkeypatch.setattr(train_fns, "test", recording_test)
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "4", "--save_every", "3", "--test_every", "2",
                     "--use_ema", "--G_eval_mode")
    assert seen == [(False, False), (False, False)]


def test_resume_by_name_alone_continues_the_run_bit_for_bit(fmnist_folder, uninterrupted, tmp_path):
    """`train.py --experiment_name X --resume` (plus where to find it and how long to go) takes
    every other flag from the run's stored config."""
    import train
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "4", "--save_every", "2")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.main(["--experiment_name", "tiny", "--base_root", str(tmp_path), "--resume", "--num_iters", "6"])
    finally:
        torch.set_num_threads(threads)
    assert_same_weights(uninterrupted / "weights" / "tiny", tmp_path / "weights" / "tiny")
    config = json.loads((tmp_path / "weights" / "tiny" / "config.json").read_text())
    assert config["num_iters"] == 6 and config["G_ch"] == 8 and config["dataset"] == "custom"


@pytest.mark.parametrize("flags, named", [
    (["--batch_size", "8"], ["--batch_size 8 (run: 4)"]),
    (["--retention_ratio", "50", "--G_ch", "16"], ["--G_ch 16 (run: 8)", "--retention_ratio 50.0 (run: 100"]),
    (["--dataset", "FMNIST32"], ["--dataset FMNIST32 (run: custom)"]),
    (["--seed", "3"], ["--seed 3 (run: 0)"]),
    (["--D_ch_mults", "2_4_4_4"], ["--D_ch_mults 2_4_4_4 (run: '')"]),
    (["--D_mbstd_group", "2"], ["--D_mbstd_group 2 (run: 0)"]),
    (["--loss", "dcgan"], ["--loss dcgan (run: hinge)"]),
])
def test_resume_refuses_flags_that_change_the_experiment(fmnist_folder, tmp_path, flags, named):
    import train
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "2", "--save_every", "2")
    weights = tmp_path / "weights" / "tiny"
    before = {p.name: p.read_bytes() for p in weights.iterdir() if p.is_file()}
    with pytest.raises(ValueError) as err:
        train.main(["--experiment_name", "tiny", "--base_root", str(tmp_path), "--resume", *flags])
    message = str(err.value)
    assert message.startswith("--resume would change the experiment") and "--experiment_name" in message
    for text in named:
        assert text in message
    assert {p.name: p.read_bytes() for p in weights.iterdir() if p.is_file()} == before


def test_resume_applies_a_new_learning_rate_to_the_optimizers_and_records_it(fmnist_folder, tmp_path):
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "2", "--save_every", "2")
    nets = train_in_process(fmnist_folder, tmp_path, "--num_iters", "3", "--resume", "--G_lr", "1e-5")
    weights = tmp_path / "weights" / "tiny"
    optim = torch.load(weights / "G_optim.pth", weights_only=True)
    assert [g["lr"] for g in optim["param_groups"]] == [1e-5]
    assert json.loads((weights / "config.json").read_text())["G_lr"] == 1e-5
    d_optim = torch.load(weights / "D_optim.pth", weights_only=True)
    assert [g["lr"] for g in d_optim["param_groups"]] == [2e-4]  # not typed: the run's own
    assert nets.G.lr == 1e-5


def test_a_run_with_width_schedules_trains_and_sample_py_rebuilds_it(fmnist_folder, tmp_path):
    import sample
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "2", "--save_every", "2",
                     "--G_ch_mults", "2_2_2_1", "--D_ch_mults", "1_2_2_2")
    weights = tmp_path / "weights" / "tiny"
    config = json.loads((weights / "config.json").read_text())
    assert (config["G_ch_mults"], config["D_ch_mults"]) == ("2_2_2_1", "1_2_2_2")
    G = sample.load_generator({**config, "use_ema": True}, weights, None, "config.json", torch.device("cpu"))
    assert G.blocks[2][0].conv2.weight.shape == (8, 8, 3, 3) and G.blocks[1][0].conv2.weight.shape == (16, 16, 3, 3)
    D = torch.load(weights / "D.pth", weights_only=True)
    assert D["blocks.0.0.conv2.weight"].shape == (8, 8, 3, 3) and D["blocks.1.0.conv1.weight"].shape == (16, 8, 3, 3)
    # A config without the flags (an older run's) builds BigGAN's widths, which these weights do not fit.
    with pytest.raises(ValueError, match="does not match the architecture in config.json"):
        sample.load_generator({**config, "use_ema": True, "G_ch_mults": ""}, weights, None, "config.json",
                              torch.device("cpu"))


def test_a_run_with_minibatch_std_in_D_trains_with_its_extra_channel(fmnist_folder, tmp_path):
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "2", "--save_every", "2", "--D_mbstd_group", "2")
    weights = tmp_path / "weights" / "tiny"
    assert json.loads((weights / "config.json").read_text())["D_mbstd_group"] == 2
    D = torch.load(weights / "D.pth", weights_only=True)
    # D_ch 8 at 32 px: the last stage reads 32 channels and the spread channel
    assert D["blocks.3.0.conv1.weight"].shape == (32, 33, 3, 3) and D["blocks.3.0.conv_sc.weight"].shape == (32, 33, 1, 1)
    losses = read_jsonl(tmp_path / "logs" / "tiny" / "losses.jsonl")
    assert losses[-1]["itr"] == 2 and all(np.isfinite(v) for v in losses[-1].values())

def test_lr_decay_is_a_step_at_the_decayed_rate_and_is_recorded(fmnist_folder, tmp_path):
    # --lr_decay_iters 2 of 2 iterations: scale 1 at iteration 1 and 1/2 at iteration 2. The same
    # as one iteration at the base rates and a resumed one at half of them (5e-5/2e-4 -> exact halves).
    decayed, halved = tmp_path / "decayed", tmp_path / "halved"
    train_in_process(fmnist_folder, decayed, "--num_iters", "2", "--save_every", "1", "--lr_decay_iters", "2")
    train_in_process(fmnist_folder, halved, "--num_iters", "1", "--save_every", "1")
    train_in_process(fmnist_folder, halved, "--num_iters", "2", "--save_every", "1", "--resume",
                     "--G_lr", "2.5e-5", "--D_lr", "1e-4")
    assert_same_weights(decayed / "weights" / "tiny", halved / "weights" / "tiny")
    logs = [read_jsonl(out / "logs" / "tiny" / "losses.jsonl") for out in (decayed, halved)]
    assert logs[0] == logs[1]
    weights = decayed / "weights" / "tiny"
    assert json.loads((weights / "config.json").read_text())["lr_decay_iters"] == 2
    # Bit-for-bit after a resume in the middle of the decay: 3 + 3 of 6 iterations, the last 4 decaying.
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_in_process(fmnist_folder, straight, "--num_iters", "6", "--save_every", "3", "--lr_decay_iters", "4")
    train_in_process(fmnist_folder, split, "--num_iters", "3", "--save_every", "3")
    train_in_process(fmnist_folder, split, "--num_iters", "6", "--save_every", "3", "--resume", "--lr_decay_iters", "4")
    assert_same_weights(straight / "weights" / "tiny", split / "weights" / "tiny")
    optim = torch.load(straight / "weights" / "tiny" / "G_optim.pth", weights_only=True)
    assert [g["lr"] for g in optim["param_groups"]] == [5e-5 / 4]


def test_a_run_shorter_than_log_every_still_logs_its_last_iteration(fmnist_folder, tmp_path, capsys):
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "3", "--log_every", "50", "--save_every", "100")
    assert [r["itr"] for r in read_jsonl(tmp_path / "logs" / "tiny" / "losses.jsonl")] == [3]
    done = capsys.readouterr().out.strip().splitlines()[-1]
    for where in (tmp_path / "weights" / "tiny", tmp_path / "logs" / "tiny", tmp_path / "samples" / "tiny"):
        assert str(where) in done


def test_tensorboard_gets_losses_metrics_and_sample_sheets(fmnist_folder, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    train_in_process(fmnist_folder, tmp_path, "--num_iters", "2", "--save_every", "2", "--test_every", "2",
                     "--tensorboard")
    events = event_accumulator.EventAccumulator(str(tmp_path / "logs" / "tiny" / "tensorboard"),
                                                size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    assert {"losses/G_loss", "losses/D_loss_real", "metrics/FID", "metrics/P", "metrics/IS_mean"} <= scalars
    assert [e.step for e in events.Scalars("metrics/FID")] == [2]
    assert images == {"samples/fixed"} and events.Images("samples/fixed")[0].width > 32


def test_a_new_training_mode_is_one_class_and_one_registry_entry(monkeypatch):
    """A toy mode registered in training_modes.MODES is built from its flag and called at every
    hook in order; its extra G loss reaches G's loss, and a mode with no hooks changes nothing."""
    import training_modes

    calls = []

    class Toy(training_modes.TrainingMode):
        name = "toy"

        @classmethod
        def from_config(cls, G, D, config, n_train):
            return cls()

        def __getattribute__(self, attr):
            if attr in ("begin_iteration", "before_D_step", "after_D_step", "before_G_step", "after_G_backward",
                        "before_G_optimizer_step", "after_G_optimizer_step", "after_ema_update"):
                calls.append(attr)
            return object.__getattribute__(self, attr)

        def extra_G_loss(self, D, G_z):
            return torch.ones((), device=G_z.device)

    monkeypatch.setitem(training_modes.MODES, "toy", Toy)
    config = tiny_config(num_D_steps=1, ema=True, ema_start=0, ema_decay=0.9, toy=True)
    results = {}
    for name, modes in (("plain", []), ("base", [training_modes.TrainingMode()]),
                        ("toy", training_modes.build_modes(*build(config)[:2], config, 100))):
        G, D, G_optim, D_optim = build(config)
        train = train_fns.GAN_training_function(train_fns.Nets(G, D, G_ema=copy.deepcopy(G)), G_optim, D_optim,
                                                NoiseSampler(4, G.dim_z, 10, CPU), EMA(G, copy.deepcopy(G), 0.9, 0),
                                                {"itr": 1}, config, CPU, modes=modes)
        torch.manual_seed(5)
        results[name] = (train(torch.rand(4, 3, 32, 32) * 2 - 1, torch.arange(4)), G.state_dict())
    assert calls == ["begin_iteration", "before_D_step", "after_D_step", "after_D_step", "before_G_step",
                     "after_G_backward", "before_G_optimizer_step", "after_G_optimizer_step", "after_ema_update"]
    assert results["base"][0] == results["plain"][0]
    assert all(torch.equal(a, b) for a, b in zip(results["base"][1].values(), results["plain"][1].values()))
    assert results["toy"][0]["G_loss"] == pytest.approx(results["plain"][0]["G_loss"] + 1, abs=1e-5)
