"""Benchmark the metrics against their references; prints one JSON object per line.

    python bench/bench_metrics.py                     # FID 2048-d, PRDC 10k (ours vs prdc), PRDC 50k (ours)
    python bench/bench_metrics.py --prdc_large 0      # skip the 50k x 50k run (minutes on 2 cores)

* fid_2048: `calculate_frechet_distance` vs the reference formula with `scipy.linalg.sqrtm`
  on the same 2048-d statistics: seconds, speed-up and relative difference.
* prdc_<N>: `compute_prdc` vs clovaai's `prdc.compute_prdc` on N x N 2048-d float32 features:
  seconds and peak extra memory. Each PRDC run is a fresh child process; its peak is the
  kernel's max RSS (ru_maxrss) minus the RSS right after the features were created, so it
  counts numpy, torch and BLAS allocations alike (tracemalloc would miss torch's).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def machine() -> dict:
    import torch
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "numpy": np.__version__, "torch": torch.__version__,
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def emit(record: dict) -> None:
    print(json.dumps({**record, "machine": machine()}), flush=True)


def bench_fid(d: int, repeats: int) -> None:
    import scipy.linalg
    import inception_utils as iu
    rng = np.random.default_rng(0)
    feats1 = rng.standard_normal((2 * d, d)) @ rng.standard_normal((d, d)) * 0.05
    feats2 = feats1[:, ::-1] + 0.3 * rng.standard_normal((2 * d, d))
    mu1, s1 = iu.activation_statistics(feats1)
    mu2, s2 = iu.activation_statistics(feats2)
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        ours = iu.calculate_frechet_distance(mu1, s1, mu2, s2)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    t, c = time.perf_counter(), time.process_time()
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    ref = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))
    ref_s, ref_cpu = time.perf_counter() - t, time.process_time() - c
    # CPU seconds are reported too: on a shared machine wall-clock ratios drift with the load.
    emit({"name": f"fid_{d}", "ours_s": round(min(times), 3), "sqrtm_s": round(ref_s, 3),
          "speedup_vs_sqrtm": round(ref_s / min(times), 1), "ours_cpu_s": round(min(cpu), 3),
          "sqrtm_cpu_s": round(ref_cpu, 3), "cpu_speedup_vs_sqrtm": round(ref_cpu / min(cpu), 1),
          "fid_ours": ours, "fid_sqrtm": ref,
          "rel_diff": abs(ours - ref) / abs(ref), "sqrtm_complex": bool(np.iscomplexobj(covmean))})


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child_prdc(impl: str, n: int, d: int, k: int) -> None:
    """Run one PRDC computation in this (fresh) process and print its figures as JSON."""
    rng = np.random.default_rng(n)
    real = np.abs(rng.standard_normal((n, d), dtype=np.float32))
    fake = np.abs(rng.standard_normal((n, d), dtype=np.float32)) * np.float32(1.05)
    if impl == "ours":
        import torch
        import inception_utils as iu
        torch.zeros(1)  # load torch's libraries before the baseline is taken
        run = lambda: iu.compute_prdc(real, fake, k)  # noqa: E731
    else:
        import prdc
        run = lambda: prdc.compute_prdc(real, fake, k)  # noqa: E731
    base = _rss_bytes()
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        out = run()
    seconds = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "cpu_seconds_total": usage.ru_utime + usage.ru_stime,
                      "peak_extra_gib": max(peak - base, 0) / 2 ** 30,
                      "features_gib": (real.nbytes + fake.nbytes) / 2 ** 30,
                      **{key: float(v) for key, v in out.items()}}))


def run_child(impl: str, n: int, d: int, k: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--n", str(n), "--dim", str(d), "--k", str(k)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_prdc(n: int, d: int, k: int, with_reference: bool, timeout: float) -> None:
    ours = run_child("ours", n, d, k, timeout)
    record = {"name": f"prdc_{n}x{n}x{d}", "k": k, "ours_s": round(ours.get("seconds", float("nan")), 2),
              "ours_peak_extra_gib": round(ours.get("peak_extra_gib", float("nan")), 3),
              "features_gib": round(ours.get("features_gib", float("nan")), 3), "ours": ours}
    if with_reference:
        ref = run_child("prdc", n, d, k, timeout)
        record.update({"prdc_s": round(ref.get("seconds", float("nan")), 2),
                       "prdc_peak_extra_gib": round(ref.get("peak_extra_gib", float("nan")), 3),
                       "speedup_vs_prdc": round(ref.get("seconds", float("nan")) / ours.get("seconds", float("nan")), 2),
                       "memory_ratio_prdc_over_ours": round(ref.get("peak_extra_gib", float("nan"))
                                                            / max(ours.get("peak_extra_gib", float("nan")), 1e-9), 1),
                       "max_abs_diff": max(abs(ours[m] - ref[m]) for m in ("precision", "recall", "density", "coverage"))
                       if "error" not in ref and "error" not in ours else None, "prdc": ref})
    else:
        # The reference would hold three N x N float32 matrices plus float64 chunks.
        record["prdc_would_need_gib_at_least"] = round(3 * n * n * 4 / 2 ** 30, 1)
    emit(record)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fid_dim", type=int, default=2048)
    p.add_argument("--fid_repeats", type=int, default=3)
    p.add_argument("--prdc_n", type=int, default=10000, help="N of the ours-vs-prdc run (0 = skip)")
    p.add_argument("--prdc_large", type=int, default=50000, help="N of the ours-only run (0 = skip)")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--timeout", type=float, default=3600, help="Seconds per PRDC child process")
    p.add_argument("--child", choices=("ours", "prdc"), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_prdc(args.child, args.n, args.dim, args.k)
        return
    if args.fid_dim:
        bench_fid(args.fid_dim, args.fid_repeats)
    if args.prdc_n:
        bench_prdc(args.prdc_n, args.dim, args.k, True, args.timeout)
    if args.prdc_large:
        bench_prdc(args.prdc_large, args.dim, args.k, False, args.timeout)


if __name__ == "__main__":
    main()
