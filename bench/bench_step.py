"""Where one training iteration of a recipe spends its time on this machine: FLOPs and seconds.

    python bench/bench_step.py [--recipe fmnist32_cpu_mbstd] [--extra=--compile]
                               [--iters 40] [--warmup 20] [--threads N] [--seconds 600] [--table]

The recipe's G, D, optimisers and step are built as train.py builds them (`bench_train.ours`,
from the recipe's train.py flags, with --amp, --channels_last and --compile applied) and fed
random images of the recipe's shape: time and FLOPs do not depend on the pixels. One iteration's
FLOPs are counted with torch.utils.flop_counter; --iters iterations are timed, then as many
are profiled with torch.profiler to find the convolutions' share of that pass, which is applied
to the timed seconds. One JSON line: seconds and GFLOP per iteration (timed, and in the profiled
pass), the convolution kernels' seconds and GFLOP/s against a square matmul's in the recipe's
dtype (measured in the same run, best of seven), and how many iterations --seconds of training
hold, as measured and with every op other than the convolutions free (a ceiling no tuning of the
rest can pass). This is how the README's "Speed" reads whether a machine is compute-bound for a
recipe. CPU only: on CUDA the kernels run asynchronously to the host-side events this reads (use
torch.profiler with CUDA activity there).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
import BigGAN  # noqa: E402
import bench_convergence  # noqa: E402
import bench_train  # noqa: E402
import datasets  # noqa: E402
import utils  # noqa: E402
from training_utils import tune_cpu_allocator  # noqa: E402

# The convolution kernels as the profiler names them, eager and compiled (inductor calls the same
# aten kernels for convolutions); aten::convolution/_convolution above them are dispatch only.
CONV_KERNELS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
                "aten::slow_conv_dilated2d")


def recipe_config(recipe: str, extra: str) -> dict:
    """train.py's config for `recipe`'s flags plus `extra`, with the data set's size and classes."""
    config = vars(utils.prepare_parser().parse_args(bench_convergence.recipe_flags(recipe, extra)))
    info = datasets.DATASETS[config["dataset"]]
    if not info.image_size:
        raise utils.UserError(f"--recipe {recipe}: dataset {config['dataset']} takes its size from the "
                              f"data; pick a recipe with a fixed-size dataset")
    config.update(device="cpu", resolution=info.image_size, n_classes=info.n_classes)
    return config


def step_inputs(config: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One iteration's real batch: batch_size images per D step and accumulation, as train.py loads."""
    n = config["batch_size"] * config["num_D_steps"] * config["num_D_accumulations"]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, config["resolution"], config["resolution"], generator=gen) * 2 - 1
    return x, torch.randint(0, config["n_classes"], (n,), generator=gen)


def measure(config: dict, iters: int, warmup: int) -> dict:
    """FLOPs of one iteration, seconds per iteration, and the convolution kernels' seconds."""
    tune_cpu_allocator()  # what train.py does at start-up
    step, _ = bench_train.ours(config, torch.device("cpu"))
    x, y = step_inputs(config)
    for _ in range(warmup):  # the start-up transient, and compilation under --compile
        step(x, y)
    with FlopCounterMode(display=False) as counter:
        step(x, y)
    start = time.perf_counter()
    for _ in range(iters):
        step(x, y)
    seconds = (time.perf_counter() - start) / iters
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(iters):
            step(x, y)
        profiled_seconds = time.perf_counter() - start
    events = prof.key_averages()
    conv_us = sum(e.self_cpu_time_total for e in events if e.key in CONV_KERNELS)
    # The profiled pass runs slower than the timed one (the profiler's own cost, and whatever else
    # the machine does meanwhile), so its absolute conv seconds are not comparable with `seconds`:
    # the convolutions' share of the profiled pass is applied to the unprofiled time.
    conv_share = conv_us / 1e6 / profiled_seconds
    return {"gflop_per_iter": counter.get_total_flops() / 1e9,
            "conv_gflop_per_iter": sum(n for op, n in counter.get_flop_counts()["Global"].items()
                                       if "convolution" in str(op)) / 1e9,
            "s_per_iter": seconds, "conv_s_per_iter": conv_share * seconds,
            "profiled_s_per_iter": profiled_seconds / iters,
            "table": events.table(sort_by="self_cpu_time_total", row_limit=30)}


def matmul_gflops(dtype: torch.dtype, size: int = 2048, trials: int = 7) -> float:
    """GFLOP/s of a square matmul in `dtype`, the best of `trials`: the reference the convolutions'
    rate is read against (near what the machine's vector units give this dtype; the best, because a
    shared machine's drift only ever slows a trial down)."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        best = min(best, (time.perf_counter() - start) / 3)
    return 2 * size ** 3 / best / 1e9


def main(argv: list[str] | None = None) -> None:
    """Measure one recipe's iteration and print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="fmnist32_cpu_mbstd",
                   help="a bench_convergence.py recipe or an experiment_grid preset (default: %(default)s)")
    p.add_argument("--extra", default="", help="train.py flags added to the recipe's; a single flag is "
                   "written --extra=--compile")
    p.add_argument("--iters", type=int, default=40, help="iterations timed, and as many profiled")
    p.add_argument("--warmup", type=int, default=20, help="untimed iterations first (compilation, if any)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: as OMP_NUM_THREADS or all cores)")
    p.add_argument("--seconds", type=float, default=600.0, help="the training budget to convert to iterations")
    p.add_argument("--table", action="store_true", help="also print the profiler's op table to stderr")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = recipe_config(args.recipe, args.extra)
    result = measure(config, args.iters, args.warmup)
    dtype = BigGAN.amp_dtype(config, torch.device("cpu")) or torch.float32  # what the step computes in
    reference = matmul_gflops(dtype)
    if args.table:
        print(result["table"], file=sys.stderr)
    conv_s = result["conv_s_per_iter"]
    print(json.dumps({
        "name": "step_flops", "recipe": args.recipe + (f" {args.extra}" if args.extra else ""),
        "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform()},
        "iters": args.iters, "gflop_per_iter": round(result["gflop_per_iter"], 3),
        "conv_gflop_per_iter": round(result["conv_gflop_per_iter"], 3),
        "s_per_iter": round(result["s_per_iter"], 5),
        "profiled_s_per_iter": round(result["profiled_s_per_iter"], 5),
        "gflops_per_s": round(result["gflop_per_iter"] / result["s_per_iter"], 1),
        "conv_s_per_iter": round(conv_s, 5), "conv_share": round(conv_s / result["s_per_iter"], 3),
        "conv_gflops_per_s": round(result["conv_gflop_per_iter"] / conv_s, 1) if conv_s else None,
        "matmul_gflops_per_s": round(reference, 1), "matmul_dtype": str(dtype).replace("torch.", ""),
        "conv_vs_matmul": round(result["conv_gflop_per_iter"] / conv_s / reference, 2) if conv_s else None,
        "seconds": args.seconds, "iters_in_seconds": int(args.seconds / result["s_per_iter"]),
        "iters_in_seconds_convs_only": int(args.seconds / conv_s) if conv_s else None}))


if __name__ == "__main__":
    utils.run_cli(main)
