"""Plot training logs as PNG (replaces BigGAN-PyTorch's MATLAB scripts).

    python logs/plot_logs.py --logs_root logs --experiments A B --out plots/

Reads, for every experiment,
  `<logs_root>/<experiment>_log.jsonl`   one line per test: itr, IS_mean, IS_std, FID, P/R/D/C
  `<logs_root>/<experiment>/*.jsonl`     one file per stream (losses, singular values, ...)
and writes into --out:
  `metrics.png`   IS, FID, precision, recall, density, coverage over iterations
  `<stream>.png`  one panel per scalar, one line per experiment; streams with many scalars
                  (singular values) get one panel per experiment with a thin line per scalar
Several experiments share every figure (e.g. baseline vs instance selection).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from io_utils import atomic_path, read_jsonl  # noqa: E402
from metric_specs import TRAINING_METRICS  # noqa: E402

# (title, accepted keys): training logs write the log keys (P/R/D/C), the metrics helpers the full names.
METRICS = tuple((m.key if m.family == "prdc" else m.label, tuple(dict.fromkeys((m.key, m.log_key, m.label))))
                for m in TRAINING_METRICS)
MAX_OVERLAID_KEYS = 12  # streams with more scalars than this are drawn per experiment


def series(records: list[dict], keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(itr, value) arrays of the first of `keys` present in each record; null -> NaN."""
    xs, ys = [], []
    for record in records:
        key = next((k for k in keys if k in record), None)
        if key is None:
            continue
        value = record[key]
        xs.append(record["itr"])
        ys.append(float("nan") if value is None else float(value))
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over `window` points (NaN-aware); window <= 1 returns values."""
    if window <= 1 or len(values) == 0:
        return values
    finite = np.isfinite(values)
    sums = np.convolve(np.where(finite, values, 0.0), np.ones(window), "full")[:len(values)]
    counts = np.convolve(finite.astype(float), np.ones(window), "full")[:len(values)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def short_labels(names: list[str]) -> list[str]:
    """Legend labels: the '_'-separated parts of each name that not all names share."""
    if len(names) < 2:
        return list(names)
    token_sets = [name.split("_") for name in names]
    common = set(token_sets[0]).intersection(*map(set, token_sets[1:]))
    labels = ["_".join(t for t in tokens if t not in common) or name
              for tokens, name in zip(token_sets, names)]
    return labels if len(set(labels)) == len(labels) else list(names)


def load_experiment(logs_root: Path, name: str) -> dict:
    """{'metrics': records, 'streams': {stream: records}} of one experiment."""
    metrics_path = logs_root / f"{name}_log.jsonl"
    stream_dir = logs_root / name
    if not metrics_path.exists() and not stream_dir.is_dir():
        found = find_experiments(logs_root)
        raise FileNotFoundError(f"no logs for experiment {name!r} in {logs_root} (expected "
                                f"{metrics_path} or {stream_dir}/); found: {', '.join(found) or 'none'}")
    streams = {p.stem: read_jsonl(p) for p in sorted(stream_dir.glob("*.jsonl"))} \
        if stream_dir.is_dir() else {}
    return {"metrics": read_jsonl(metrics_path) if metrics_path.exists() else [], "streams": streams}


def find_experiments(logs_root: Path) -> list[str]:
    """Experiments with logs in `logs_root` (a metrics file or a folder of streams)."""
    names = {p.name[:-len("_log.jsonl")] for p in logs_root.glob("*_log.jsonl")}
    names |= {p.name for p in logs_root.iterdir() if p.is_dir() and any(p.glob("*.jsonl"))} \
        if logs_root.is_dir() else set()
    return sorted(names)


def _grid(n: int, max_cols: int = 4, size: float = 3.4):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _finish(ax, title: str, legend: bool) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("iteration", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=6)


def plot_metrics(runs: dict[str, dict], labels: dict[str, str], path: Path) -> Path | None:
    """IS/FID/P/R/D/C over iterations, one line per experiment; None when no run was tested."""
    present = [(title, keys) for title, keys in METRICS
               if any(len(series(r["metrics"], keys)[0]) for r in runs.values())]
    if not present:
        return None
    fig, axes = _grid(len(present), max_cols=3)
    for ax, (title, keys) in zip(axes, present):
        for name, run in runs.items():
            xs, ys = series(run["metrics"], keys)
            if len(xs):
                ax.plot(xs, ys, marker="o", markersize=3, label=labels[name])
        _finish(ax, title, legend=len(runs) > 1)
    return _save(fig, path)


def plot_stream(stream: str, runs: dict[str, dict], labels: dict[str, str], path: Path,
                window: int) -> Path | None:
    """One stream (e.g. losses) of every experiment; see the module docstring for the layout."""
    keys = sorted({k for r in runs.values() for rec in r["streams"].get(stream, [])
                   for k in rec if k != "itr" and not k.startswith("_")})
    if not keys:
        return None
    if len(keys) <= MAX_OVERLAID_KEYS:
        fig, axes = _grid(len(keys))
        for ax, key in zip(axes, keys):
            for name, run in runs.items():
                xs, ys = series(run["streams"].get(stream, []), (key,))
                if len(xs):
                    ax.plot(xs, smooth(ys, window), linewidth=1, label=labels[name])
            _finish(ax, key, legend=len(runs) > 1)
    else:
        # Many scalars (singular values): a panel per experiment and per network (G_*, D_*).
        groups: dict[str, list[str]] = {}
        for key in keys:
            groups.setdefault(key.split("_", 1)[0], []).append(key)
        panels = [(name, group) for name in runs if runs[name]["streams"].get(stream)
                  for group in groups]
        fig, axes = _grid(len(panels), max_cols=2, size=5)
        for ax, (name, group) in zip(axes, panels):
            for key in groups[group]:
                xs, ys = series(runs[name]["streams"][stream], (key,))
                if len(xs):
                    ax.plot(xs, smooth(ys, window), linewidth=0.6, alpha=0.7)
            _finish(ax, f"{labels[name]}: {group} ({len(groups[group])} scalars)", legend=False)
    fig.suptitle(stream, fontsize=10)
    return _save(fig, path)


def plot_logs(logs_root: str | Path, experiments: list[str] | None, out: str | Path,
              window: int = 1) -> list[Path]:
    """Write metrics.png and one PNG per stream for `experiments` (None = all found)."""
    logs_root = Path(logs_root)
    if not logs_root.is_dir():
        raise FileNotFoundError(f"--logs_root {logs_root} is not a folder; point it at the "
                                f"logs folder of your runs (default: logs)")
    names = experiments or find_experiments(logs_root)
    if not names:
        raise FileNotFoundError(f"no experiment logs in {logs_root}; train first or pass --logs_root")
    runs = {name: load_experiment(logs_root, name) for name in names}
    labels = dict(zip(names, short_labels(names)))
    out = Path(out)
    written = [plot_metrics(runs, labels, out / "metrics.png")]
    for stream in sorted({s for r in runs.values() for s in r["streams"]}):
        written.append(plot_stream(stream, runs, labels, out / f"{stream}.png", window))
    written = [p for p in written if p is not None]
    if not written:
        raise ValueError(f"the logs of {', '.join(names)} in {logs_root} hold no records yet")
    return written


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description="Plot training logs (losses, singular values, "
                                "IS/FID/P/R/D/C) of one or several experiments as PNG.")
    p.add_argument("--logs_root", default="logs", help="folder with the logs (default: %(default)s)")
    p.add_argument("--experiments", nargs="+", default=None,
                   help="experiment names to draw together (default: every experiment found)")
    p.add_argument("--out", default="plots", help="output folder (default: %(default)s)")
    p.add_argument("--smooth", type=int, default=1,
                   help="moving-average window over logged points for the streams (default: %(default)s)")
    args = p.parse_args(argv)
    if args.smooth < 1:
        raise ValueError(f"--smooth must be >= 1, got {args.smooth}")
    for path in plot_logs(args.logs_root, args.experiments, args.out, args.smooth):
        print(path)


if __name__ == "__main__":
    import utils
    utils.run_cli(main)
