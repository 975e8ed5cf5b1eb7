"""How fast a training recipe learns on the CPU: FID, precision, recall, density and coverage
against training seconds and iterations, on Fashion-MNIST at 32 px. It is how recipes are
compared: side by side, on the same machine, in the same run.

    python bench/bench_convergence.py                                  # the fmnist32_cpu recipe, 10 min
    python bench/bench_convergence.py --recipes fmnist32_cpu,fmnist32_cpu_dsteps4 --seconds 300
    python bench/bench_convergence.py --recipes fmnist32_cpu --extra "--G_lr 4e-4" --name lr4e-4
    python bench/bench_convergence.py --seconds 900 --resume          # the same runs, 5 minutes further

Each recipe is a grid_presets.py preset (RECIPES below adds the variants measured for
the README). For each recipe and seed, train.py runs in a subprocess with --test_every, so the
metrics are computed during training by the project's own test() (G_ema when the recipe uses
EMA, 1000 samples against the original data's moments and manifold, the same feature network
and k for every recipe); train.py records in each test line the seconds spent training (tests
and checkpoint writes excluded), and the run is stopped at the first test past --seconds.
A real-vs-real row (1000 training images that are not in the manifold, through the same
get_metrics) gives the floor every recipe is read against.

Outputs: one JSON line per test and one per recipe at the budget on stdout (bench/run_all.py
collects them into bench/results.jsonl and bench/RESULTS.md), and a PNG of the curves (--png).
Runs made at different times are drawn in one figure with --replot FILE [FILE ...] (their stdout).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
import BigGAN  # noqa: E402
import checkpoints  # noqa: E402
import experiment_grid  # noqa: E402
import grid_presets  # noqa: E402
import grid_processes  # noqa: E402
import metric_specs  # noqa: E402
import utils  # noqa: E402

# (training-log key, metric key) of the curves: FID and precision/recall/density/coverage.
METRIC_KEYS = tuple((m.log_key, m.key) for m in metric_specs.TRAINING_METRICS if m.family in ("fid", "prdc"))
# Variants of the presets that the README's recipe table compares: flags appended to the preset
# and, optionally, on/off switches of the preset left out (a flag with a value is overridden instead).
RECIPES = {
    "fmnist32_cpu": ("fmnist32_cpu", ""),
    "fmnist32_cpu_dsteps1": ("fmnist32_cpu", "--num_D_steps 1"),
    "fmnist32_cpu_dsteps4": ("fmnist32_cpu", "--num_D_steps 4"),
    "fmnist32_cpu_dlr2x": ("fmnist32_cpu", "--D_lr 2e-3"),
    "fmnist32_cpu_ema999": ("fmnist32_cpu", "--ema_decay 0.999"),
    "fmnist32_cpu_bs32": ("fmnist32_cpu", "--batch_size 32"),
    # The last third of ~10 minutes at batch 32 with linearly decaying learning rates.
    "fmnist32_cpu_bs32_decay": ("fmnist32_cpu", "--batch_size 32 --num_iters 2700 --lr_decay_iters 900"),
    "fmnist32_cpu_bs16": ("fmnist32_cpu", "--batch_size 16"),
    # Class conditioning against z in G's conditional BN (its input: the class embedding, then a z chunk of 32).
    "fmnist32_cpu_bs16_sd128": ("fmnist32_cpu", "--batch_size 16 --shared_dim 128"),
    "fmnist32_cpu_bs16_sd16": ("fmnist32_cpu", "--batch_size 16 --shared_dim 16"),
    "fmnist32_cpu_bs16_z256": ("fmnist32_cpu", "--batch_size 16 --dim_z 256"),
    "fmnist32_cpu_bs16_nohier": ("fmnist32_cpu", "--batch_size 16", ("--hier",)),
    # A diversity signal for D: ProGAN's minibatch standard deviation over groups of 4 (layers.MinibatchStd).
    # (The preset fmnist32_cpu_mbstd: batch 16, class embedding 16, --D_mbstd_group 4.)
    "fmnist32_cpu_bs16_sd16_mbstd4": ("fmnist32_cpu_mbstd", ""),
    # The same with a third D step: ahead by iteration; an iteration costs 1.3x eager, ~1.15x compiled.
    "fmnist32_cpu_bs16_sd16_mbstd4_dsteps3": ("fmnist32_cpu_mbstd", "--num_D_steps 3"),
    # The same at width 12 (the quickstart's preset, fmnist32_cpu_mbstd_ch12): 17.4 GFLOP an iteration
    # against 30.7 (bench_step.py), so ~1.6-1.8x the iterations.
    "fmnist32_cpu_bs16_sd16_mbstd4_ch12": ("fmnist32_cpu_mbstd_ch12", ""),
    # Width 8: 7.9 GFLOP an iteration (0.45x width 12's). Behind width 12 per iteration, but compiled it runs
    # ~2.2x the iterations in 10 minutes: the lowest 10-minute FID measured (RECIPE_EXPERIMENTS, "Width 8").
    "fmnist32_cpu_bs16_sd16_mbstd4_ch8": ("fmnist32_cpu_mbstd_ch12", "--G_ch 8 --D_ch 8"),
    # Width 8 at batch 32: 40 % of a compiled width-8 step is convolutions, so twice the images cost 1.46x
    # an iteration (bench_step.py) and 10 minutes see ~1.45x the images (RECIPE_EXPERIMENTS, "batch 32").
    "fmnist32_cpu_bs32_sd16_mbstd4_ch8": ("fmnist32_cpu_mbstd_ch12", "--G_ch 8 --D_ch 8 --batch_size 32"),
    # The same without spectral norm in G: recall .501 +- .053 against .397 +- .008 at 7200 iterations (what
    # 10 compiled minutes hold on an AVX512-BF16 EPYC), FID and precision alike (RECIPE_EXPERIMENTS, "batch 32").
    # The quickstart's preset since it (grid_presets.py, fmnist32_cpu_mbstd_ch8_bs32_GnoSN).
    "fmnist32_cpu_bs32_sd16_mbstd4_ch8_GnoSN": ("fmnist32_cpu_mbstd_ch8_bs32_GnoSN", ""),
    # Batch 32 with half the width at the 32x32 stages of G and D (where most convolution work is).
    "fmnist32_cpu_bs32_taper": ("fmnist32_cpu", "--batch_size 32 --G_ch_mults 4_4_4_2 --D_ch_mults 2_4_4_4"),
}


def recipe_flags(name: str, extra: str) -> list[str]:
    """train.py flags of recipe `name` (a RECIPES key or a grid_presets.py preset) plus `extra`."""
    if name in RECIPES:
        preset, more, *rest = RECIPES[name]
        dropped = set(rest[0]) if rest else set()
    elif name in grid_presets.PRESETS:
        preset, more, dropped = name, "", set()
    else:
        raise utils.UserError(f"--recipes: unknown recipe {name!r}; choose from "
                              f"{', '.join(sorted(set(RECIPES) | set(grid_presets.PRESETS)))}")
    base = [flag for flag in grid_presets.PRESETS[preset][0].split() if flag not in dropped]
    return base + more.split() + extra.split()


def real_vs_real(config: dict, num_images: int) -> dict:
    """Metrics of `num_images` real training images that are not in the manifold (the floor)."""
    import inception_utils
    import real_image_metrics
    import datasets
    get_metrics = inception_utils.prepare_inception_metrics(config, device="cpu")
    dataset = datasets.get_dataset_from_config(config, augment=False)
    features = real_image_metrics.load_dataset_features(config, dataset, get_metrics)
    try:
        return real_image_metrics.real_images_metrics(config, None, num_images, get_metrics, dataset=dataset,
                                                      features=features)
    except ValueError as err:
        raise utils.UserError(f"real-vs-real: {err}") from None


def read_tests(path: Path) -> list[dict]:
    """The JSON lines of a file written so far: a metrics log's tests, or this script's stdout (a line
    being written, or one that is not JSON, is skipped)."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def train_env(threads: int) -> dict[str, str]:
    """The environment of one train.py run: the caller's, with `threads` OpenMP threads and the
    repository importable (other OpenMP settings, e.g. OMP_PROC_BIND, pass through)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}


def train_for(flags: list[str], seconds: float, test_every: int, out: Path, name: str, threads: int,
              log, resume: bool = False) -> list[dict]:
    """Run train.py until its first test past `seconds` of training, or to the end of a recipe's
    own --num_iters (a learning-rate decay needs one); returns the test lines, all of them since the
    run began. A checkpoint is written at every test. With `resume`, a run of the same name that has
    a checkpoint continues from it (train.py --resume: bit for bit an uninterrupted run, its training
    seconds counted on); otherwise an earlier run of that name is removed first (its tests would
    otherwise be read before train.py starts a new log)."""
    metrics_log = out / "logs" / f"{name}_log.jsonl"
    resume = resume and checkpoints.has_checkpoint(out / "weights" / name)
    if not resume:
        for stale in (out / "weights" / name, out / "logs" / name):
            shutil.rmtree(stale, ignore_errors=True)
        metrics_log.unlink(missing_ok=True)
    cmd = [sys.executable, str(REPO / "train.py"), "--num_iters", "100000000", *flags, "--experiment_name", name,
           "--base_root", str(out), "--test_every", str(test_every), "--save_every", str(test_every),
           "--num_best_copies", "0", "--pbar", "none", "--device", "cpu", *(["--resume"] if resume else [])]
    env = train_env(threads)
    with open(out / f"{name}.train.log", "a" if resume else "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
        seen = 0
        try:
            while proc.poll() is None:
                tests = read_tests(metrics_log)
                for test in tests[seen:]:
                    log(test)
                seen = len(tests)
                if tests and tests[-1]["train_seconds"] >= seconds:
                    break
                time.sleep(2)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
    # SIGTERM is train.py's preemption signal: it finishes the iteration (and a test due at it),
    # checkpoints and exits with 128 + SIGTERM.
    if proc.returncode not in (0, -signal.SIGTERM, 128 + signal.SIGTERM, None):
        raise utils.UserError(f"train.py failed (exit {proc.returncode}); see {out / (name + '.train.log')}")
    tests = read_tests(metrics_log)
    for test in tests[seen:]:
        log(test)
    return tests


def at_budget(tests: list[dict], seconds: float) -> dict:
    """The metrics at `seconds` of training: the last test at or before it."""
    before = [t for t in tests if t["train_seconds"] <= seconds * 1.02] or tests[:1]
    return before[-1]


# --by: what the curves are drawn against (a record's key and the axis label).
X_AXES = {"seconds": ("train_seconds", "training seconds"), "iterations": ("itr", "iterations")}


def plot(records: list[dict], floor: dict, path: Path, by: str = "seconds") -> None:
    """Five panels (FID, P, R, D, C against training seconds or iterations), one line per recipe
    and seed, one colour and one legend entry (below the panels) per recipe."""
    x_key, x_label = X_AXES[by]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 5, figsize=(20, 4.6))
    recipes = sorted({r["recipe"] for r in records})
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(recipes)}
    seeds = {name: sorted({r["seed"] for r in records if r["recipe"] == name}) for name in recipes}
    for ax, (short, long) in zip(axes, METRIC_KEYS):
        for (recipe, seed) in sorted({(r["recipe"], r["seed"]) for r in records}):
            rows = [r for r in records if r["recipe"] == recipe and r["seed"] == seed]
            label = (f"{recipe} (seed{'s' if len(seeds[recipe]) > 1 else ''} "
                     f"{', '.join(map(str, seeds[recipe]))})") if seed == seeds[recipe][0] else "_nolegend_"
            ax.plot([r[x_key] for r in rows], [r[long] for r in rows], marker="o", ms=3,
                    color=colours[recipe], label=label)
        ax.axhline(floor[long], color="k", ls="--", lw=1, label="real vs real")
        ax.set_title(long if short != "FID" else "FID (lower is better)")
        ax.set_xlabel(f"{x_label} (2 CPU cores)" if by == "seconds" and os.cpu_count() == 2 else x_label)
        if short == "FID":
            ax.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    legend_rows = (len(labels) + 2) // 3
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Convergence on Fashion-MNIST 32 px (efficientnet_lite0 features, 1000 samples, k=5)")
    fig.tight_layout(rect=(0, 0.05 * legend_rows + 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def replot(paths: list[str], png: Path, by: str = "seconds") -> None:
    """Draw the curves of earlier runs (this script's JSON lines, several files side by side)."""
    records, floors = [], []
    for path in paths:
        if not Path(path).is_file():
            raise utils.UserError(f"--replot: {path} does not exist; give the stdout files of earlier runs")
        for row in read_tests(Path(path)):
            if row.get("name") == "convergence_curve":
                records.append(row)
            elif row.get("name") == "real_vs_real":
                floors.append(row)
    if not records or not floors:
        raise utils.UserError(f"--replot: {', '.join(paths)} hold no convergence_curve and real_vs_real "
                              "lines; give the stdout files of earlier runs of this script")
    plot(records, floors[0], png, by)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", default="fmnist32_cpu", help="comma-separated RECIPES keys or presets")
    p.add_argument("--extra", default="", help="train.py flags appended to every recipe; a single flag "
                   "without a value is written --extra=--compile (argparse reads '--extra --compile' as two options)")
    p.add_argument("--name", default="", help="suffix of the recipe names in the output (with --extra)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=600, help="training seconds per run (default: %(default)s)")
    p.add_argument("--test_every", type=int, default=300, help="iterations between tests (default: %(default)s)")
    p.add_argument("--max_images", type=int, default=3000, help="Fashion-MNIST training images (default: %(default)s)")
    p.add_argument("--data_root", default="", help="prepared data (default: OUT/data, made when missing)")
    p.add_argument("--out", default="results/convergence", help="runs, logs and data (default: %(default)s)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads per run")
    p.add_argument("--png", default=str(BENCH / "convergence.png"), help="the curves (default: %(default)s)")
    p.add_argument("--replot", nargs="+", default=[], metavar="JSONL",
                   help="only draw --png from the stdout of earlier runs (one figure for runs made apart)")
    p.add_argument("--resume", action="store_true",
                   help="continue each run from its checkpoint in --out (an interrupted invocation, or the "
                        "same one with a larger --seconds or --num_iters in --extra) instead of starting it anew")
    p.add_argument("--by", choices=sorted(X_AXES), default="seconds",
                   help="x axis of the curves: training seconds (default) or iterations, the fair axis for "
                        "runs that shared the cores with others")
    args = p.parse_args(argv)
    if args.replot:
        return replot(args.replot, Path(args.png), args.by)
    if args.seconds <= 0 or args.test_every < 1 or args.threads < 1:
        raise utils.UserError("--seconds must be > 0, --test_every and --threads >= 1")
    # Absolute: train.py reads a relative --data_root under its --base_root (OUT), not the caller's folder.
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_root = str(Path(args.data_root).resolve()) if args.data_root else str(out / "data")
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    base = recipe_flags(recipes[0], args.extra)
    config = vars(utils.prepare_parser().parse_args(base + ["--data_root", data_root, "--device", "cpu"]))
    grid_processes.prepare_fmnist(config, args.max_images, args.threads)
    common = {"max_images": args.max_images, "seconds": args.seconds,
              "machine": {"cpus": len(os.sched_getaffinity(0)), "threads": args.threads,
                          "platform": platform.platform(), "processor": platform.processor(),
                          # without bf16 units the recipe's --amp bf16 trains in fp32 (BigGAN.amp_dtype)
                          "bf16_native": BigGAN.cpu_runs_bf16_natively()}}
    experiment_grid.warn_if_bf16_is_emulated(config)

    def emit(record: dict) -> None:
        print(json.dumps({**common, **record}), flush=True)

    floor = real_vs_real(config, config["num_inception_images"])
    emit({"name": "real_vs_real", **floor})
    records = []
    for recipe in recipes:
        label = recipe + (f"+{args.name}" if args.name else "")
        for seed in seeds:
            run_name = f"{label}_seed{seed}".replace("+", "_")
            flags = recipe_flags(recipe, args.extra) + ["--data_root", data_root, "--seed", str(seed)]

            def log(test: dict, recipe=label, seed=seed) -> None:
                row = {"recipe": recipe, "seed": seed, "itr": test["itr"], "train_seconds": test["train_seconds"],
                       **{long: test.get(short) for short, long in METRIC_KEYS}}
                records.append(row)
                emit({"name": "convergence_curve", **row})

            tests = train_for(flags, args.seconds, args.test_every, out, run_name, args.threads, log,
                              args.resume)
            final = at_budget(tests, args.seconds)
            emit({"name": "convergence_at_budget", "recipe": label, "seed": seed, "flags": " ".join(flags),
                  "itr": final["itr"], "train_seconds": final["train_seconds"],
                  **{long: final.get(short) for short, long in METRIC_KEYS},
                  "FID_over_real_FID": round(final["FID"] / floor["FID"], 2)})
    if args.png and records:
        plot(records, floor, Path(args.png))


if __name__ == "__main__":
    utils.run_cli(main)
