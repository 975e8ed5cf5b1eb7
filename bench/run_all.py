"""Run every benchmark and write bench/RESULTS.md (a table of figures with machine info and date).

    python bench/run_all.py            # the full sizes of the issues (hours on a 2-core CPU)
    python bench/run_all.py --quick    # smaller sizes, same code paths (~20 min on 2 cores)
    python bench/run_all.py --only bench_metrics.py   # re-run one; the others keep their figures

Each benchmark prints one JSON object per line; they are collected in bench/results.jsonl
(one line per figure, with the benchmark's command) and summarised in bench/RESULTS.md.
Timings on shared machines are noisy: every benchmark reports a ratio against a reference
measured in the same run, and those ratios are the figures to compare.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
from io_utils import atomic_write_text  # noqa: E402

# (script, full-size arguments, quick arguments)
BENCHMARKS = [
    ("bench_models.py", [], ["--repeats", "1"]),
    ("bench_train.py", [], ["--iters", "1", "--rounds", "1"]),
    ("bench_metrics.py", [], ["--prdc_n", "2000", "--prdc_large", "10000", "--fid_repeats", "1"]),
    ("bench_selection.py", [], ["--classes", "4", "--sklearn_classes", "1", "--knn_n", "20000"]),
    ("bench_convergence.py", [], ["--seconds", "120", "--test_every", "200"]),
    ("bench_step.py", [], ["--iters", "5", "--warmup", "3"]),
]
# The figures RESULTS.md shows for each JSON line (others stay in results.jsonl).
SHOWN = ("speedup", "ratio_to_plain", "cpu_ratio_to_plain", "speedup_vs_sqrtm", "speedup_vs_prdc", "speedup_vs_sklearn", "ratio", "ours_s",
         "reference_s", "sqrtm_s", "prdc_s", "sklearn_s", "ours_peak_extra_gib", "prdc_peak_extra_gib",
         "peak_rss_gib", "rel_diff", "max_abs_diff", "max_rel_score_diff", "n", "dim",
         "recipe", "itr", "train_seconds", "FID", "precision", "recall", "density", "coverage", "FID_over_real_FID",
         "gflop_per_iter", "s_per_iter", "conv_share", "conv_vs_matmul", "iters_in_seconds",
         "iters_in_seconds_convs_only")


def machine_info() -> dict:
    """CPU model, cores, load and library versions, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_benchmark(script: str, args: list[str], timeout: float) -> tuple[list[dict], str]:
    """Run one benchmark; return its JSON lines and a status string."""
    cmd = [sys.executable, str(BENCH / script), *args]
    print(f"[bench] {' '.join(cmd[1:])}", flush=True)
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:.0f} s"
    rows = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    return rows, status


def _flatten(row: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in row.items():
        if isinstance(value, dict) and key != "machine":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def earlier_results(skip: set[str]) -> dict[str, tuple[tuple, list[str]]]:
    """bench/results.jsonl's sections of the benchmarks not in `skip`: (render() entry, raw lines)."""
    path = BENCH / "results.jsonl"
    kept: dict[str, tuple[tuple, list[str]]] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        row = json.loads(line) if line.strip() else None
        if row is None or row["bench"] in skip:
            continue
        script, args = row.pop("bench"), row.pop("args")
        status = f"{row.pop('status', 'ok')}, run {row.pop('run_at', 'earlier')}"
        entry, lines = kept.setdefault(script, ((script, args, [], status, row.pop("run_s", 0.0)), []))
        entry[2].append(row)
        lines.append(line)
    return kept


def render(results: list[tuple[str, list[str], list[dict], str, float]], command: str) -> str:
    """RESULTS.md: one section per benchmark, one table row per JSON line."""
    info = machine_info()
    lines = ["# Benchmark results", "",
             f"Written by `{command}` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; a section "
             "that was not re-run shows the date of its own run.", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items() if v is not None) + ".", "",
             "Ratios (speedups) are measured against a reference in the same run; absolute seconds",
             "are for the record and depend on the machine's load. Raw lines: `bench/results.jsonl`.", ""]
    for script, args, rows, status, seconds in results:
        lines += [f"## {script}", "", f"`python bench/{script} {' '.join(args)}`".replace(" `", "`"),
                  f"({status}, {seconds:.0f} s)", ""]
        for row in rows:
            flat = _flatten(row)
            shown = {k: v for k, v in flat.items()
                     if k.split(".")[-1] in SHOWN or k.startswith("speedup")}
            lines.append(f"- **{row.get('name', '?')}**: " +
                         ", ".join(f"{k} {_fmt(v)}" for k, v in shown.items()))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, same code paths")
    parser.add_argument("--only", default="", help="comma-separated benchmark scripts to run")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per benchmark")
    opts = parser.parse_args(argv)
    unknown = set(filter(None, opts.only.split(","))) - {b[0] for b in BENCHMARKS}
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {sorted(unknown)}; choose from {[b[0] for b in BENCHMARKS]}")
    chosen = [b for b in BENCHMARKS if not opts.only or b[0] in opts.only.split(",")]
    earlier = earlier_results({b[0] for b in chosen}) if opts.only else {}
    results, raw = [], []
    for script, full, quick in BENCHMARKS:
        if script in earlier:
            results.append(earlier[script][0])
            raw += earlier[script][1]
        if (script, full, quick) not in chosen:
            continue
        args = quick if opts.quick else full
        start = datetime.datetime.now()
        rows, status = run_benchmark(script, args, opts.timeout)
        seconds = (datetime.datetime.now() - start).total_seconds()
        results.append((script, args, rows, status, seconds))
        stamp = {"run_at": start.strftime("%Y-%m-%d %H:%M"), "status": status, "run_s": round(seconds)}
        raw += [json.dumps({"bench": script, "args": args, **stamp, **row}) for row in rows]
        print(f"[bench] {script}: {status}, {len(rows)} figures, {seconds:.0f} s", flush=True)
    atomic_write_text(BENCH / "results.jsonl", "\n".join(raw) + "\n")
    atomic_write_text(BENCH / "RESULTS.md", render(results, " ".join(["python bench/run_all.py", *(sys.argv[1:] if argv is None else argv)])))
    print(f"[bench] wrote {BENCH / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
