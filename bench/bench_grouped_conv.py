"""Would training several runs in one process, their convolutions batched, use the CPU better?

    python bench/bench_grouped_conv.py [--runs 3] [--channels 32] [--batch 64] [--threads N]

The quickstart trains nine runs, three at a time in three processes, and its time is the
convolutions' (README, "Why not 20 minutes"). Stacking R runs' weights into one convolution with
groups=R is how one process would batch them (torch.func.vmap over a conv lowers to it). This times
one 3x3 convolution's forward and backward, as D's and G's stages run it (bf16 autocast,
channels_last, the recipe's 32 channels and the 64 images of a D step, at 32x32 and 16x16):

- one run's convolution;
- R runs' as one grouped convolution (R x channels in and out, groups=R): what batching would cost;
- one convolution on R x batch images with shared weights: the best any batching can do (it is
  the same work with the weights shared, which separate runs cannot have).

One JSON line per resolution, the two batched forms as ratios to R separate convolutions (below 1:
batching is faster).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import machine  # noqa: E402


def stacked_conv(convs: list[torch.nn.Conv2d]) -> torch.nn.Conv2d:
    """One grouped convolution that computes each of `convs` on its own slice of the channels: input
    channels [i*c, (i+1)*c) go through convs[i] to output channels [i*c', (i+1)*c')."""
    first = convs[0]
    grouped = torch.nn.Conv2d(len(convs) * first.in_channels, len(convs) * first.out_channels,
                              first.kernel_size, padding=first.padding, groups=len(convs))
    with torch.no_grad():
        grouped.weight.copy_(torch.cat([c.weight for c in convs]))
        grouped.bias.copy_(torch.cat([c.bias for c in convs]))
    return grouped


def seconds_per_pass(conv: torch.nn.Conv2d, batch: int, size: int, reps: int) -> float:
    """Seconds of one bf16 forward and backward of `conv` on `batch` images, channels_last."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, conv.in_channels, size, size, generator=gen).to(memory_format=torch.channels_last)
    x.requires_grad_()
    conv = conv.to(memory_format=torch.channels_last)

    def one_pass() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        y.float().sum().backward()

    for _ in range(5):  # oneDNN picks and caches its kernels on the first calls
        one_pass()
    start = time.perf_counter()
    for _ in range(reps):
        one_pass()
    return (time.perf_counter() - start) / reps


def main(argv: list[str] | None = None) -> None:
    """Print one JSON line per resolution."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="runs batched together (the quickstart's: 3)")
    p.add_argument("--channels", type=int, default=32, help="channels of one run (width 8 x 4)")
    p.add_argument("--batch", type=int, default=64, help="images in one run's D pass (2 x batch 32)")
    p.add_argument("--sizes", default="32,16", help="spatial sizes, comma-separated")
    p.add_argument("--reps", type=int, default=30, help="timed passes per measurement")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: as OMP_NUM_THREADS or all cores)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    r, c, n = args.runs, args.channels, args.batch
    torch.manual_seed(0)
    convs = [torch.nn.Conv2d(c, c, 3, padding=1) for _ in range(r)]
    grouped_conv = stacked_conv(convs)
    for size in (int(s) for s in args.sizes.split(",")):
        one = seconds_per_pass(convs[0], n, size, args.reps)
        grouped = seconds_per_pass(grouped_conv, n, size, args.reps)
        shared = seconds_per_pass(convs[0], r * n, size, args.reps)
        print(json.dumps({
            "name": "grouped_conv", "runs": r, "channels": c, "batch": n, "size": size,
            "machine": machine(),
            "one_run_s": float(f"{one:.4g}"), "grouped_s": float(f"{grouped:.4g}"),
            "shared_weights_s": float(f"{shared:.4g}"),
            # Three significant figures, not places: a stalled pass can make a ratio far below 0.1.
            "grouped_vs_separate": float(f"{grouped / (r * one):.3g}"),
            "shared_weights_vs_separate": float(f"{shared / (r * one):.3g}")}), flush=True)


if __name__ == "__main__":
    main()
