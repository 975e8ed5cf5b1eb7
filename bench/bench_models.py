"""Benchmark of the BigGAN models: one JSON object per line.

For G and D at 32 px/ch 32/batch 64 and 128 px/ch 64/batch 8 (CPU, fp32): forward and
forward+backward time, against a reference measured in the same run, namely the same
weights run in BigGAN-PyTorch's op order (two-step upsample/conv and conv/pool,
`layers.unfuse_resampling`). Then one training iteration (1 D step + 1 G step, hinge loss,
Adam) at 32 px/ch 32/batch 64, fused vs reference, with BigGAN-PyTorch's peer figure
(about 3.2 s on an idle 2-core machine). On CUDA, bf16 autocast and channels_last vs fp32.

Times are the best of --repeats, wall and process CPU seconds (CPU time is the steadier figure
on a machine shared with other jobs).

Usage: python bench/bench_models.py [--repeats 3] [--no_train] [--device cpu|cuda] [--threads N]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import BigGAN  # noqa: E402
import layers  # noqa: E402

PEER_ITER_S = 3.2  # BigGAN-PyTorch, 32 px, ch 32, batch 64, 1 D step, fp32, 2-core machine

SETTINGS = {'32px_ch32_bs64': dict(resolution=32, ch=32, batch=64, attn='0', n_classes=10),
            '128px_ch64_bs8': dict(resolution=128, ch=64, batch=8, attn='64', n_classes=1000)}


def machine() -> dict:
    """What the numbers were measured on."""
    info = {'torch': torch.__version__, 'threads': torch.get_num_threads(),
            'cpus': os.cpu_count(), 'platform': platform.platform(),
            'processor': platform.processor() or platform.machine()}
    if hasattr(os, 'getloadavg'):
        info['loadavg_1min'] = round(os.getloadavg()[0], 2)
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name()
    return info


def build(setting: dict, fused: bool, device: torch.device):
    config = dict(model='BigGAN', resolution=setting['resolution'], G_ch=setting['ch'],
                  D_ch=setting['ch'], G_attn=setting['attn'], D_attn=setting['attn'],
                  n_classes=setting['n_classes'], G_shared=setting['resolution'] > 32,
                  hier=setting['resolution'] > 32, shared_dim=128 if setting['resolution'] > 32
                  else 0, dim_z=120 if setting['resolution'] > 32 else 128, SN_eps=1e-8)
    torch.manual_seed(0)
    G, D = BigGAN.build_models(config)
    if not fused:
        layers.unfuse_resampling(G), layers.unfuse_resampling(D)
    return G.to(device), D.to(device)


def timed(fns: dict, repeats: int, device: torch.device) -> dict:
    """Best wall and process-CPU seconds of each fn over repeats, run interleaved (after one
    warm-up call each) so that a busy machine slows all of them alike."""
    for fn in fns.values():
        fn()
    best = {name: [float('inf'), float('inf')] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == 'cuda':
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            if device.type == 'cuda':
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
    return {name: {'wall_s': round(w, 4), 'cpu_s': round(c, 4)} for name, (w, c) in best.items()}


def model_steps(G, D, setting, device, amp=None, channels_last=False) -> dict:
    """Closures: forward and forward+backward of G and of D."""
    n = setting['batch']
    z = torch.randn(n, G.dim_z, device=device)
    y = torch.randint(0, setting['n_classes'], (n,), device=device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(n, 3, setting['resolution'], setting['resolution'], device=device)
    x = (x * 2 - 1).contiguous(memory_format=fmt)
    ctx = (lambda: torch.autocast(device.type, dtype=amp)) if amp else None

    def run(model_fn, backward):
        def step():
            with (ctx() if ctx else contextlib.nullcontext()):
                out = model_fn()
            if backward:
                out.float().mean().backward()
        return step

    def no_grad(step):
        def wrapped():
            with torch.no_grad():
                step()
        return wrapped

    out = {}
    for name, fn in (('G', lambda: G(z, G.shared(y))), ('D', lambda: D(x, y))):
        out[f'{name}_forward'] = no_grad(run(fn, False))
        out[f'{name}_forward_backward'] = run(fn, True)
    return out


def compare(steps: dict, ref_steps: dict, repeats: int, device: torch.device):
    """Times of steps and ref_steps (interleaved) and the speedups (reference / steps)."""
    both = {**{('new', k): v for k, v in steps.items()},
            **{('ref', k): v for k, v in ref_steps.items()}}
    t = timed(both, repeats, device)
    new = {k: t[('new', k)] for k in steps}
    ref = {k: t[('ref', k)] for k in steps}
    speedup = {k: {m: round(ref[k][m] / new[k][m], 3) for m in ('wall_s', 'cpu_s')}
               for k in steps}
    return new, ref, speedup


def train_iteration(G, D, batch: int, device: torch.device):
    """A closure running one BigGAN-PyTorch training iteration (1 D step, 1 G step)."""
    GD = BigGAN.G_D(G, D)
    G_opt = torch.optim.Adam(G.parameters(), G.lr, (G.B1, G.B2), eps=G.adam_eps)
    D_opt = torch.optim.Adam(D.parameters(), D.lr, (D.B1, D.B2), eps=D.adam_eps)
    x = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    dy = torch.randint(0, 10, (batch,), device=device)

    def toggle(model, on):
        for p in model.parameters():
            p.requires_grad_(on)

    def step():
        toggle(D, True), toggle(G, False)
        D_opt.zero_grad(set_to_none=True)
        z = torch.randn(batch, G.dim_z, device=device)
        gy = torch.randint(0, 10, (batch,), device=device)
        D_fake, D_real = GD(z, gy, x, dy, train_G=False)
        (F.relu(1 - D_real).mean() + F.relu(1 + D_fake).mean()).backward()
        D_opt.step()
        toggle(D, False), toggle(G, True)
        G_opt.zero_grad(set_to_none=True)
        z = torch.randn(batch, G.dim_z, device=device)
        gy = torch.randint(0, 10, (batch,), device=device)
        (-GD(z, gy, train_G=True).mean()).backward()
        G_opt.step()
    return step


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--no_train', action='store_true', help='skip the training iteration')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0 = default)')
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('error: --device cuda but no CUDA device is available', file=sys.stderr)
        sys.exit(2)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    for name, setting in SETTINGS.items():
        fp32 = model_steps(*build(setting, True, device), setting, device)
        new, ref, speedup = compare(fp32, model_steps(*build(setting, False, device), setting,
                                                      device), args.repeats, device)
        emit({'name': f'models_{name}_fp32_{device.type}', 'times': new,
              'reference': 'same weights in BigGAN-PyTorch op order', 'reference_times': ref,
              'speedup': speedup, 'machine': info})
        if device.type == 'cuda':
            for label, kw in (('bf16', dict(amp=torch.bfloat16)),
                              ('channels_last', dict(channels_last=True)),
                              ('bf16_channels_last', dict(amp=torch.bfloat16,
                                                          channels_last=True))):
                G, D = build(setting, True, device)
                if kw.get('channels_last'):
                    G.to(memory_format=torch.channels_last)
                    D.to(memory_format=torch.channels_last)
                new, ref, speedup = compare(model_steps(G, D, setting, device, **kw), fp32,
                                            args.repeats, device)
                emit({'name': f'models_{name}_{label}_cuda', 'times': new,
                      'reference': 'fp32, same run', 'reference_times': ref,
                      'speedup': speedup, 'machine': info})
    if not args.no_train:
        setting = SETTINGS['32px_ch32_bs64']
        steps = {fused: train_iteration(*build(setting, fused, device), setting['batch'], device)
                 for fused in (True, False)}
        new, ref, speedup = compare({'iteration': steps[True]}, {'iteration': steps[False]},
                                    args.repeats, device)
        record = {'name': f'train_iteration_32px_ch32_bs64_fp32_{device.type}',
                  'times': new, 'reference': 'same weights in BigGAN-PyTorch op order',
                  'reference_times': ref, 'speedup': speedup, 'machine': info}
        if device.type == 'cpu':
            record['peer_biggan_pytorch_wall_s'] = PEER_ITER_S
            record['speedup_vs_peer_figure'] = round(PEER_ITER_S / new['iteration']['wall_s'], 3)
        emit(record)


if __name__ == '__main__':
    main()
