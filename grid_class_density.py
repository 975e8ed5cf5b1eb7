"""Does a class's manifold density predict how well the generator learned it? The paper's Figure 2
(section 4.2, the premise of instance selection) on a finished grid.

    python grid_class_density.py --grid_dir results/quickstart            # the all-data runs
    python grid_class_density.py --grid_dir results/table1 --cells none,gaussian_50

Per class, the same number of real images is drawn (seeded) twice: a reference set and a disjoint
held-out set. The class's density is the mean score of its reference images under each of the
selection's density measures (Gaussian and PPCA log-likelihood, minus the k-NN distance: larger is
denser) in the grid's feature network. Each run of the --cells (one per seed) draws G_ema samples
(sample.py --sample_npz) and its first samples of each class, as many as the reference set, are
scored against that class's reference set (drawn from all the data, whatever the cell trained on):
FID, precision, recall, density, coverage. The held-out set scored the same way is the class's
floor: with a few hundred images in 1280 dimensions FID is biased upwards, and more for a spread-out
(sparse) class, so a correlation between density and FID alone could be that bias; "FID - real"
takes the floor out. Spearman's rank correlation (and its p)
across classes, of each density measure with each metric's per-class mean over the runs, says
whether the paper's premise (denser classes are generated better) holds on this data. With a
selection cell beside `none` (--cells none,gaussian_50), each class's change under the selection
(relative, Welch's p over the seeds) and its rank correlation with the class's density say which
classes the selection helps.

Writes --out (default GRID_DIR/class_density.json), a PNG of the same name (per-class FID of every
cell and the floor against each density measure) and prints the tables.
"""
from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.stats

import datasets
import density_estimators
import feature_extraction
import grid_recall_split
import grid_report
import inception_utils
import utils
from io_utils import atomic_write_json

MEASURES = ("gaussian", "ppca", "nn_dist")
# (column, key) of the per-class scores; "FID - real" is FID minus the class's real-vs-real floor.
METRICS = (("FID", "FID"), ("FID - real", "FID_excess"), ("P", "precision"), ("R", "recall"),
           ("D", "density"), ("C", "coverage"))
SAMPLE_MARGIN = 1.5  # samples drawn per sample wanted (classes are drawn at random)
MAX_DOUBLINGS = 4  # then a class still short is one the generator does not draw


def class_splits(labels: np.ndarray, per_class: int, seed: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For every class, two disjoint seeded draws of `per_class` indices: (reference, held out)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for c in np.unique(labels).tolist():
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) < 2 * per_class:
            raise utils.UserError(f"class {c} has {len(members)} images, fewer than 2 x {per_class} "
                                  f"(--per_class); lower --per_class")
        splits[int(c)] = (members[:per_class], members[per_class:2 * per_class])
    return splits


def set_scores(reference: np.ndarray, other: np.ndarray, k: int) -> dict[str, float]:
    """FID and precision/recall/density/coverage of the features `other` against `reference`."""
    with warnings.catch_warnings():  # few images a class: biased FID, which the class's floor measures
        warnings.filterwarnings("ignore", message=".*the covariance is singular and FID is biased")
        fid = inception_utils.calculate_frechet_distance(*inception_utils.activation_statistics(reference),
                                                         *inception_utils.activation_statistics(other))
    prdc = inception_utils.compute_prdc(reference, other, k)
    return {"FID": float(fid), **{key: float(prdc[key]) for key in ("precision", "recall", "density", "coverage")}}


def class_densities(features: np.ndarray, k: int) -> dict[str, float]:
    """The mean density score of one class's features under each of MEASURES (larger = denser)."""
    return {m: float(density_estimators.score_embeddings(features, m, k=k).mean()) for m in MEASURES}


def first_of_each_class(labels: np.ndarray, classes: list[int], per_class: int) -> dict[int, np.ndarray] | None:
    """The first `per_class` sample indices of every class in `classes`; None when a class has fewer."""
    chosen = {c: np.flatnonzero(labels == c)[:per_class] for c in classes}
    return chosen if all(len(found) == per_class for found in chosen.values()) else None


def run_class_samples(grid_dir: Path, run: str, classes: list[int], per_class: int, net
                      ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Features of one run's G_ema samples and the first `per_class` of each class among them. sample.py
    draws the classes uniformly at random, so SAMPLE_MARGIN times the count is drawn, twice as many
    again while some class falls short (up to MAX_DOUBLINGS times)."""
    first = math.ceil(SAMPLE_MARGIN * per_class * len(classes))
    sizes = [first * 2 ** i for i in range(MAX_DOUBLINGS + 1)]
    for num in sizes:
        features, labels = grid_recall_split.run_features(grid_dir, run, num, net, grid_dir / "class_density")
        chosen = first_of_each_class(labels, classes, per_class)
        if chosen is not None:
            return features, chosen
    raise utils.UserError(f"run {run}: {sizes[-1]} samples hold fewer than {per_class} of some class among "
                          f"{classes}; does its G draw every class of the data (--n_classes)?")


def rank_correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Spearman's rho and its two-sided p (NaN with fewer than 3 classes, a NaN, or a constant side)."""
    if len(x) < 3 or not (np.isfinite(x).all() and np.isfinite(y).all()) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": float("nan"), "p": float("nan")}
    result = scipy.stats.spearmanr(x, y)
    return {"rho": float(result.statistic), "p": float(result.pvalue)}


def _fmt(values: list[float], digits: int) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.{digits}f}" + (f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else "")


def _rho(c: dict[str, float]) -> str:
    return f"{c['rho']:+.2f} ({c['p']:.2g})"


def relative_change(base: list[float], other: list[float]) -> dict[str, float]:
    """mean(other) / mean(base) - 1 (NaN when the base is 0), and Welch's p of the difference (NaN with
    one run a side)."""
    a, b = np.asarray(base, float), np.asarray(other, float)
    change = b.mean() / a.mean() - 1 if a.mean() != 0 else float("nan")
    p = (grid_report.welch(a.mean(), a.std(ddof=1), len(a), b.mean(), b.std(ddof=1), len(b)).p
         if min(len(a), len(b)) > 1 else float("nan"))
    return {"change": float(change), "p": float(p)}


def tables(out: dict) -> str:
    """Markdown: per cell, the per-class table (densities, the runs' scores, the floor's FID) and the
    correlations of each density measure with each metric; per selection cell, its per-class change
    against `none` and the correlations of density with that change."""
    head = ["class"] + list(MEASURES) + [c for c, _ in METRICS] + ["real FID"]
    columns = " | ".join(c for c, _ in METRICS)
    lines = []
    for cell in out["cells"]:
        lines += [f"**{cell}** ({len(out['runs'][cell])} runs)", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for row in out["classes"]:
            values = [_fmt(row["cells"][cell][key], 3 if key not in ("FID", "FID_excess") else 2)
                      for _, key in METRICS]
            lines.append("| " + " | ".join([row["name"]] + [f"{row['density'][m]:.2f}" for m in MEASURES]
                                           + values + [f"{row['real']['FID']:.2f}"]) + " |")
        lines += ["", f"| {cell}: Spearman rho (p) across classes | {columns} | real FID |",
                  "|---|" + "---|" * (len(METRICS) + 1)]
        for m in MEASURES:
            lines.append(f"| {m} density | " + " | ".join(_rho(out["correlations"][cell][m][key]) for _, key in METRICS)
                         + f" | {_rho(out['floor_correlations'][m])} |")
        lines.append("")
    for cell, change in out["changes"].items():
        lines += [f"**{cell} against none** (relative change of the class's mean, Welch's p)", "",
                  f"| class | {columns} |", "|---|" + "---|" * len(METRICS)]
        for row in change["classes"]:
            lines.append(f"| {row['name']} | " + " | ".join(f"{row[key]['change']:+.0%} ({row[key]['p']:.2g})"
                                                          for _, key in METRICS) + " |")
        lines += ["", f"| change: Spearman rho (p) across classes | {columns} |", "|---|" + "---|" * len(METRICS)]
        for m in MEASURES:
            lines.append(f"| {m} density | " + " | ".join(_rho(change["correlations"][m][key]) for _, key in METRICS)
                         + " |")
        lines.append("")
    return "\n".join(lines)


def plot(out: dict, path: Path) -> None:
    """Per-class FID (mean ± std over runs) of every cell and the real floor against each density measure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(4.2 * len(MEASURES), 3.6), squeeze=False)
    for ax, m in zip(axes[0], MEASURES):
        x = np.array([row["density"][m] for row in out["classes"]])
        for cell in out["cells"]:
            fid = np.array([row["cells"][cell]["FID"] for row in out["classes"]], float)
            ax.errorbar(x, fid.mean(1), yerr=fid.std(1, ddof=1) if fid.shape[1] > 1 else None, fmt="o",
                        label=f"{cell} (rho {out['correlations'][cell][m]['FID']['rho']:+.2f})")
        ax.plot(x, [row["real"]["FID"] for row in out["classes"]], "x", color="gray",
                label=f"real floor (rho {out['floor_correlations'][m]['rho']:+.2f})")
        first = out["cells"][0]
        for xi, row in zip(x, out["classes"]):
            ax.annotate(row["name"], (xi, np.mean(row["cells"][first]["FID"])), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set(xlabel=f"mean {m} score (denser →)", ylabel="per-class FID", title=f"{m} density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def correlations(classes: list[dict], value: Callable[[int, str], float], keys: list[str]
                 ) -> dict[str, dict[str, dict[str, float]]]:
    """Spearman's rho across the class rows `classes` of each measure's density with `value(row index,
    key)`, per key."""
    return {m: {key: rank_correlations(np.array([row["density"][m] for row in classes]),
                                       np.array([value(i, key) for i in range(len(classes))])) for key in keys}
            for m in MEASURES}


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--grid_dir", required=True, help="a finished experiment_grid.py --output_dir")
    p.add_argument("--cells", default="none",
                   help="comma-separated cells whose runs are scored; each other than none is also compared "
                        "with none when none is listed (default: %(default)s)")
    p.add_argument("--per_class", type=int, default=0,
                   help="real images per class in each of the two draws, and samples per class "
                        "(0: half the smallest class)")
    p.add_argument("--k", type=int, default=0, help="k of the k-NN density and of P/R/D/C (0: the grid's --prdc_k)")
    p.add_argument("--seed", type=int, default=0, help="seed of the real draws (default: %(default)s)")
    p.add_argument("--out", default="", help="JSON output, and a PNG of the same name (default: "
                                             "GRID_DIR/class_density.json)")
    args = p.parse_args(argv)
    grid_dir = Path(args.grid_dir)
    results = grid_recall_split.finished_grid(grid_dir)
    runs = {cell: grid_recall_split.cell_runs(results, cell) for cell in dict.fromkeys(args.cells.split(","))}
    config = grid_recall_split.run_config(grid_dir, next(iter(runs.values()))[0])
    k = args.k or config["prdc_k"]
    dataset = datasets.get_dataset_from_config(config, augment=False)
    labels = np.asarray(dataset.labels)
    names = datasets.class_names(dataset)
    per_class = args.per_class or int(np.bincount(labels).min()) // 2
    if per_class <= k:
        raise utils.UserError(f"{per_class} images per class is not more than k = {k}: use more data "
                              f"or a smaller --k")
    splits = class_splits(labels, per_class, args.seed)
    net = inception_utils.load_feature_net(config["feature_net"], config["inception_weights"], "cpu",
                                           config["feature_res"])
    order = np.concatenate([np.concatenate(pair) for pair in splits.values()])
    pool, _ = feature_extraction.extract_features(net, dataset, num_workers=0, indices=order, desc="real features")
    real = dict(zip(splits, np.split(pool, len(splits))))  # per class: reference rows, then held-out rows
    fakes = {cell: [run_class_samples(grid_dir, run, list(splits), per_class, net) for run in cell_runs]
             for cell, cell_runs in runs.items()}
    out = {"grid_dir": str(grid_dir), "cells": list(runs), "runs": runs, "per_class": per_class, "k": k,
           "seed": args.seed, "feature_net": config["feature_net"], "classes": []}
    for c in splits:
        reference, held_out = real[c][:per_class], real[c][per_class:]
        floor = set_scores(reference, held_out, k)
        row = {"class": c, "name": names[c] if names and c < len(names) else str(c),
               "density": class_densities(reference, k), "real": floor, "cells": {}}
        for cell, samples in fakes.items():
            per_run = [set_scores(reference, features[chosen[c]], k) for features, chosen in samples]
            for scores in per_run:
                scores["FID_excess"] = scores["FID"] - floor["FID"]
            row["cells"][cell] = {key: [s[key] for s in per_run] for _, key in METRICS}
        out["classes"].append(row)
    keys = [key for _, key in METRICS]
    classes = out["classes"]
    floor = correlations(classes, lambda i, _: classes[i]["real"]["FID"], ["FID"])
    out["floor_correlations"] = {m: floor[m]["FID"] for m in MEASURES}
    out["correlations"] = {
        cell: correlations(classes, lambda i, key, cell=cell: np.mean(classes[i]["cells"][cell][key]), keys)
        for cell in runs}
    out["changes"] = {}
    for cell in (c for c in runs if c != "none" and "none" in runs):
        rows = [{"name": row["name"], **{key: relative_change(row["cells"]["none"][key], row["cells"][cell][key])
                                         for key in keys}} for row in classes]
        out["changes"][cell] = {"classes": rows,
                                "correlations": correlations(classes, lambda i, key, rows=rows: rows[i][key]["change"],
                                                             keys)}
    out["table"] = tables(out)
    path = Path(args.out) if args.out else grid_dir / "class_density.json"
    atomic_write_json(path, out)
    plot(out, path.with_suffix(".png"))
    print(out["table"], flush=True)


if __name__ == "__main__":
    utils.run_cli(main)
