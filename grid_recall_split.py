"""Where a selection's generators lose recall: recall and coverage of a finished grid's runs,
split between the real manifold images the selection kept and those it dropped.

    python grid_recall_split.py --grid_dir results/quickstart --cell gaussian_50

prdc's two diversity metrics ask different questions of the same features. Recall counts the real
manifold images that fall inside some generated image's k-NN ball, whose radius is the distance to
its k-th nearest OTHER GENERATED image: a generator that draws its samples closer together shrinks
every ball, and its recall falls even where it covers the data. Coverage counts the real images
whose own k-NN ball (radius among the real images) holds a generated image. Splitting both by the
selection's kept and dropped images separates "misses the dropped half" from "draws tighter
samples", and so does recall recomputed with each run's generated radii scaled to the `none` runs'
median ("R at none's radius"). For every run of `none` and of `--cell` (each seed), G_ema draws --num_images samples
with sample.py (uint8 images, as `--sample_npz` writes them: the figures differ from the grid's
own metrics by that sample draw), which are embedded with the grid's feature network.

Writes --out (default GRID_DIR/recall_split.json: per run and per cell mean +- std) and prints a
markdown table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import feature_extraction
import inception_utils
import real_image_metrics
import utils
from io_utils import atomic_write_json

REPO = Path(__file__).resolve().parent
# (column, key) of the table: overall and per half, then the median generated k-NN radius.
COLUMNS = (("R", "recall"), ("R kept", "recall_kept"), ("R dropped", "recall_dropped"), ("C", "coverage"),
           ("C kept", "coverage_kept"), ("C dropped", "coverage_dropped"),
           ("fake k-NN radius", "fake_radius_median"), ("R at none's radius", "recall_at_none_radius"))


def split_recall_coverage(real: np.ndarray, fake: np.ndarray, kept: np.ndarray, k: int,
                          fake_radius_median: float | None = None,
                          real_radii: np.ndarray | None = None) -> dict[str, float]:
    """Recall and coverage (prdc's definitions) over all real rows and over the rows `kept` marks
    and those it does not; with the median k-NN radius of the real and the generated features.
    `fake_radius_median` rescales the generated images' radii to that median first (recall as if
    the samples were spread like another generator's; coverage does not use them). `real_radii`:
    the real rows' k-NN radii when the caller has them (they are the same for every run)."""
    if real_radii is None:
        real_radii = inception_utils.nearest_neighbour_radii(real, k)
    fake_radii = inception_utils.nearest_neighbour_radii(fake, k)
    if fake_radius_median is not None:
        fake_radii = fake_radii * (fake_radius_median / np.median(fake_radii))
    dist = torch.cdist(torch.from_numpy(real).double(), torch.from_numpy(fake).double()).numpy()
    inside_fake_ball = (dist < fake_radii[None, :]).any(axis=1)  # recall, per real image
    fake_in_own_ball = dist.min(axis=1) < real_radii  # coverage, per real image
    out = {"recall": inside_fake_ball.mean(), "coverage": fake_in_own_ball.mean(),
           "fake_radius_median": np.median(fake_radii), "real_radius_median": np.median(real_radii)}
    for name, rows in (("kept", kept), ("dropped", ~kept)):
        out[f"recall_{name}"] = inside_fake_ball[rows].mean() if rows.any() else float("nan")
        out[f"coverage_{name}"] = fake_in_own_ball[rows].mean() if rows.any() else float("nan")
    return {key: float(value) for key, value in out.items()}


def _sample_count(path: Path) -> int:
    with np.load(path, allow_pickle=False) as data:
        return len(data["y"])  # one label per image: the count without reading the images


def run_features(grid_dir: Path, run: str, num_images: int, net, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and class labels of `num_images` G_ema samples of one grid run (sample.py --sample_npz;
    cached in `folder/run`, drawn again when the cached file holds another number)."""
    path = folder / run / "samples_ema.npz"
    if not path.exists() or _sample_count(path) != num_images:
        record = json.loads((grid_dir / "cells" / f"{run}.json").read_text())
        cmd = [sys.executable, str(REPO / "sample.py"), *record["flags"], "--experiment_name", run,
               "--weights_root", str(grid_dir / "weights"), "--logs_root", str(grid_dir / "logs"),
               "--samples_root", str(folder), "--sample_npz", "--sample_num_npz", str(num_images), "--pbar", "none"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise utils.UserError(f"sample.py failed for run {run}: {proc.stderr.strip()[-1500:]}")
    with np.load(path, allow_pickle=False) as data:
        images = torch.from_numpy(data["x"]).permute(0, 3, 1, 2).float() / 127.5 - 1
        labels = np.asarray(data["y"], np.int64)
    batches = iter(torch.split(images, 100))
    features, _ = feature_extraction.extract_sample_features(net, lambda: next(batches), len(images), progress=False)
    return np.asarray(features), labels


def cell_runs(results: dict, cell: str) -> list[str]:
    """The run names of one cell in a grid's results.json (one per seed)."""
    record = next((c for c in results["cells"] if c["cell"] == cell), None)
    if record is None:
        raise utils.UserError(f"cell {cell!r} is not in this grid (cells: "
                              f"{', '.join(c['cell'] for c in results['cells'])})")
    return record.get("runs", [record.get("run", cell)])


def finished_grid(grid_dir: Path) -> dict:
    """A finished grid's results.json (an error that says what to do when there is none)."""
    results_path = grid_dir / "results.json"
    if not results_path.exists():
        raise utils.UserError(f"{results_path} not found: run the grid to the end first (experiment_grid.py)")
    return json.loads(results_path.read_text())


def run_config(grid_dir: Path, run: str) -> dict:
    """The train.py configuration of one grid run, parsed from its recorded flags."""
    flags = json.loads((grid_dir / "cells" / f"{run}.json").read_text())["flags"]
    return vars(utils.prepare_parser().parse_args(flags))


def mean_std_table(cells: dict[str, list[dict]]) -> str:
    """Markdown: one row per cell, mean +- sample std over its runs (a value when it has one run)."""
    lines = ["| cell | runs | " + " | ".join(c for c, _ in COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for cell, rows in cells.items():
        values = []
        for _, key in COLUMNS:
            v = np.array([r[key] for r in rows])
            values.append(f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else ""))
        lines.append(f"| {cell} | {len(rows)} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--grid_dir", required=True, help="a finished experiment_grid.py --output_dir")
    p.add_argument("--cell", default="gaussian_50", help="the selection cell to split by (default: %(default)s)")
    p.add_argument("--num_images", type=int, default=0, help="samples per run (0: the grid's --num_pr_images)")
    p.add_argument("--out", default="", help="JSON output (default: GRID_DIR/recall_split.json)")
    args = p.parse_args(argv)
    grid_dir = Path(args.grid_dir)
    results = finished_grid(grid_dir)
    runs = {cell: cell_runs(results, cell) for cell in ("none", args.cell)}
    config = run_config(grid_dir, runs["none"][0])
    kept_path = grid_dir / "selection" / args.cell / "indices.npz"
    if not kept_path.exists():
        raise utils.UserError(f"{kept_path} not found: --cell must be a selection cell of this grid")
    kept = set(np.load(kept_path, allow_pickle=False)["indices"].tolist())
    in_kept = np.array([i in kept for i in real_image_metrics.manifold_image_indices(config)])
    net = inception_utils.load_feature_net(config["feature_net"], config["inception_weights"], "cpu",
                                           config["feature_res"])
    real = inception_utils.load_manifold(inception_utils.manifold_path(config), net)
    real_radii = inception_utils.nearest_neighbour_radii(real, config["prdc_k"])
    num = args.num_images or config["num_pr_images"]
    out = {"grid_dir": str(grid_dir), "cell": args.cell, "num_images": num, "k": config["prdc_k"],
           "manifold_kept": int(in_kept.sum()), "manifold_dropped": int((~in_kept).sum()), "runs": {}}
    features = {}
    for name in runs["none"] + runs[args.cell]:
        features[name], _ = run_features(grid_dir, name, num, net, grid_dir / "recall_split")
        out["runs"][name] = split_recall_coverage(real, features[name], in_kept, config["prdc_k"],
                                                  real_radii=real_radii)
    # Recall is a threshold on the generated images' radii: the same samples with their radii scaled to
    # the all-data generators' mean median radius separate "draws tighter" from "covers less".
    none_radius = float(np.mean([out["runs"][name]["fake_radius_median"] for name in runs["none"]]))
    out["none_fake_radius_median"] = none_radius
    for name, fake in features.items():
        scaled = split_recall_coverage(real, fake, in_kept, config["prdc_k"], none_radius, real_radii)
        out["runs"][name].update({f"{key}_at_none_radius": scaled[key]
                                  for key in ("recall", "recall_kept", "recall_dropped")})
        print(json.dumps({"run": name, **out["runs"][name]}), flush=True)
    table = mean_std_table({cell: [out["runs"][n] for n in names] for cell, names in runs.items()})
    out["table"] = table
    atomic_write_json(Path(args.out) if args.out else grid_dir / "recall_split.json", out)
    print(table, flush=True)


if __name__ == "__main__":
    utils.run_cli(main)
