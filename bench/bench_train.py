"""Seconds per training iteration: our train_fns step vs a straightforward reference step.

    python bench/bench_train.py [--iters 3] [--rounds 2] [--device cpu] [--no_modes]

Setting (issue 6): 32 px, G_ch = D_ch = 32, batch 64, 1 D step, no attention, fp32, EMA on.
The reference is the BigGAN recipe written the plain way, in a plain process: one
optimizer.zero_grad() that fills zeros, G's forward in the D step recorded by autograd and
detached, no toggle_grads (D's weight gradients are computed in the G step and thrown away),
a per-tensor Adam loop and a state-dict loop for the EMA. Ours is train_fns' step in a process
set up as train.py sets it up (glibc allocator thresholds, see
training_utils.tune_cpu_allocator). Both draw the same noise and must end with bit-identical
weights and losses (`identical`). Each kind runs in fresh processes, alternating for
`--rounds` rounds so machine load hits both alike; medians of wall and process-CPU seconds
are reported. With modes on, DiffAugment, InsGen and Re-GAN iterations are timed against our
plain step (one process, alternating every iteration); on CUDA also --amp bf16
--channels_last against fp32. One JSON object per line.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import BigGAN  # noqa: E402
import losses  # noqa: E402
import train_fns  # noqa: E402
import training_modes  # noqa: E402
import utils  # noqa: E402
from training_utils import EMA, NoiseSampler, build_optimizer, tune_cpu_allocator  # noqa: E402


def bench_config(**overrides) -> dict:
    config = vars(utils.prepare_parser().parse_args([]))
    config.update(dataset="FMNIST32", resolution=32, n_classes=10, G_ch=32, D_ch=32, batch_size=64,
                  num_D_steps=1, G_attn="0", D_attn="0", G_shared=True, shared_dim=128, hier=False,
                  ema=True, ema_decay=0.999)
    config.update(overrides)
    return config


def reference_step(G, D, G_optim, D_optim, G_ema, z_, y_, config):
    """The recipe written plainly (same numbers as ours, more work)."""
    bs = config["batch_size"]

    def train(x, y):
        G_optim.zero_grad(set_to_none=False)
        D_optim.zero_grad(set_to_none=False)
        z_.normal_(0, config["z_var"])
        y_.random_(0, config["n_classes"])
        G_z = G(z_[:bs], G.shared(y_[:bs])).detach()
        D_out = D(torch.cat([G_z, x], 0), torch.cat([y_[:bs], y], 0))
        D_fake, D_real = torch.split(D_out, [bs, bs])
        D_loss_real, D_loss_fake = losses.loss_hinge_dis(D_fake, D_real)
        (D_loss_real + D_loss_fake).backward()
        D_optim.step()
        G_optim.zero_grad(set_to_none=False)
        z_.normal_(0, config["z_var"])
        y_.random_(0, config["n_classes"])
        G_loss = losses.loss_hinge_gen(D(G(z_, G.shared(y_)), y_))
        G_loss.backward()
        G_optim.step()
        with torch.no_grad():
            target, source = G_ema.state_dict(), G.state_dict()
            for key in source:
                target[key].copy_(target[key] * config["ema_decay"] + source[key] * (1 - config["ema_decay"]))
        return {"G_loss": G_loss.item(), "D_loss_real": D_loss_real.item(), "D_loss_fake": D_loss_fake.item()}
    return train


def build(config: dict, device: torch.device):
    torch.manual_seed(0)
    G, D = BigGAN.build_models(config)
    G, D = G.to(device), D.to(device)
    for net in (G, D):
        BigGAN.apply_speed_flags(net, config, device)
    return G, D


def ours(config: dict, device: torch.device, mode: str = ""):
    G, D = build(config, device)
    G_ema = copy.deepcopy(G)
    mode_flags = {"diffaug": {"diffaug": "color,translation,cutout"}, "insgen": {"insgen": True},
                  "regan": {"regan": True, "regan_sparsity": 0.3, "regan_interval": 1000, "regan_warmup": 0}}
    modes = training_modes.build_modes(G, D, {**config, **mode_flags.get(mode, {})}, 50000)
    state = {"itr": 0}
    G_optim, D_optim = build_optimizer(G), build_optimizer(D)
    train = train_fns.GAN_training_function(
        train_fns.Nets(G, D), G_optim, D_optim,
        NoiseSampler(config["batch_size"], G.dim_z, config["n_classes"], device),
        EMA(G, G_ema, config["ema_decay"]), state, config, device,
        (BigGAN.grad_scaler(config, device), BigGAN.grad_scaler(config, device)), modes)

    def step(x, y):
        state["itr"] += 1
        return train(x, y)
    return step, (G, D, G_ema)


def reference(config: dict, device: torch.device):
    G, D = build(config, device)
    G_ema = copy.deepcopy(G)
    G_optim = torch.optim.Adam(G.parameters(), lr=G.lr, betas=(G.B1, G.B2), eps=G.adam_eps, foreach=False)
    D_optim = torch.optim.Adam(D.parameters(), lr=D.lr, betas=(D.B1, D.B2), eps=D.adam_eps, foreach=False)
    z_ = torch.zeros(config["batch_size"], G.dim_z, device=device)
    y_ = torch.zeros(config["batch_size"], dtype=torch.int64, device=device)
    return reference_step(G, D, G_optim, D_optim, G_ema, z_, y_, config), (G, D, G_ema)


def timed(step, x, y, device, seed) -> tuple[float, float, dict]:
    """Wall and process-CPU seconds of one step (CPU time is steadier on a busy machine)."""
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    out = step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def inputs(device: torch.device):
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 3, 32, 32, generator=gen) * 2 - 1).to(device)
    return x, torch.randint(0, 10, (64,), generator=gen).to(device)


def digest(nets) -> str:
    h = hashlib.sha256()
    for net in nets:
        for value in net.state_dict().values():
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def worker(kind: str, args) -> None:
    """Time step kinds in this process; prints one JSON line (run by main in a subprocess).

    `kind` is 'reference', 'ours', or a comma-separated list of our step kinds ('ours',
    'diffaug', 'insgen', 'regan', 'bf16_cl'), timed in turn at every iteration.
    """
    device = torch.device(args.device)
    if kind != "reference":
        tune_cpu_allocator()  # what train.py does at start-up
    steps = {}
    for k in kind.split(","):
        config = bench_config(device=args.device)
        if k == "bf16_cl":
            config.update(amp="bf16", channels_last=True)
        steps[k] = (reference(config, device) if k == "reference"
                    else ours(config, device, "" if k in ("ours", "bf16_cl") else k))
    x, y = inputs(device)
    result = {k: {"walls": [], "cpus": []} for k in steps}
    for i in range(args.warmup + args.iters):
        for k, (step, nets) in steps.items():
            wall, cpu, out = timed(step, x, y, device, 1000 + i)
            if i >= args.warmup:
                result[k]["walls"].append(wall)
                result[k]["cpus"].append(cpu)
            result[k].update(losses=out, digest=digest(nets) if i == args.warmup + args.iters - 1 else "")
    print(json.dumps(result))


def run_worker(kind: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--iters", str(args.iters),
           "--warmup", str(args.warmup), "--device", args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def race(groups: list[str], args) -> dict:
    """Alternate fresh processes of each group for `rounds` rounds; median wall/CPU per iteration."""
    runs: dict[str, list] = {}
    for _ in range(args.rounds):
        for group in groups:
            for kind, result in run_worker(group, args).items():
                runs.setdefault(kind, []).append(result)
    return {kind: {"wall": statistics.median(w for r in results for w in r["walls"]),
                   "cpu": statistics.median(c for r in results for c in r["cpus"]),
                   "losses": results[-1]["losses"], "digest": results[-1]["digest"]}
            for kind, results in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2, help="timed iterations per process")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--rounds", type=int, default=2, help="alternating processes per step kind")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--no_modes", action="store_true", help="skip the DiffAugment/InsGen/Re-GAN timings")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args)
    device = torch.device(args.device)
    machine = {"device": str(device), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "load_avg_1min": round(os.getloadavg()[0], 2),
               "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None}

    res = race(["ours", "reference"], args)
    ours_r, ref_r = res["ours"], res["reference"]
    print(json.dumps({"name": "train_iteration_fp32", "setting": "32px ch32 bs64 1 D step no attention EMA",
                      "ours_s_per_it": round(ours_r["wall"], 4), "reference_s_per_it": round(ref_r["wall"], 4),
                      "speedup": round(ref_r["wall"] / ours_r["wall"], 3),
                      "ours_cpu_s_per_it": round(ours_r["cpu"], 4), "reference_cpu_s_per_it": round(ref_r["cpu"], 4),
                      "cpu_time_ratio": round(ref_r["cpu"] / ours_r["cpu"], 3),
                      "identical": ours_r["digest"] == ref_r["digest"] and all(
                          ours_r["losses"][k] == v for k, v in ref_r["losses"].items()),
                      "iters": args.iters * args.rounds, "machine": machine}), flush=True)

    if not args.no_modes:
        res = race(["ours,diffaug,insgen,regan"], args)
        for mode in ("diffaug", "insgen", "regan"):
            print(json.dumps({"name": f"train_iteration_{mode}", "s_per_it": round(res[mode]["wall"], 4),
                              "plain_s_per_it": round(res["ours"]["wall"], 4),
                              "ratio_to_plain": round(res[mode]["wall"] / res["ours"]["wall"], 3),
                              "cpu_ratio_to_plain": round(res[mode]["cpu"] / res["ours"]["cpu"], 3),
                              "machine": machine}), flush=True)

    if device.type == "cuda":
        res = race(["ours,bf16_cl"], args)
        print(json.dumps({"name": "train_iteration_bf16_channels_last", "s_per_it": round(res["bf16_cl"]["wall"], 4),
                          "fp32_s_per_it": round(res["ours"]["wall"], 4),
                          "speedup": round(res["ours"]["wall"] / res["bf16_cl"]["wall"], 3),
                          "machine": machine}), flush=True)


if __name__ == "__main__":
    main()
