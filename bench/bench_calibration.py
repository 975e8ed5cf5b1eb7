"""What the project's metrics read on real images degraded in known ways: the scale a generator's
numbers are read against, and a check that each metric moves the way it should before any table is
trusted (blur and noise cost fidelity, dropped classes and repeated images cost diversity).

    python bench/bench_calibration.py                       # the quickstart's data and evaluation, 3 draws
    python bench/bench_calibration.py --conditions real,blur:1,classes:5 --draws 5
    python bench/bench_calibration.py --generators results/quickstart/results.json   # the grid's rows beside them

Every condition scores the same number of real training images, drawn from those outside the P/R/D/C
manifold (an image the manifold holds is its own nearest neighbour), against the full data's moments
and manifold through the project's own get_metrics: the preset's feature network, input resolution,
sample count and k, as the quickstart scores its generators. The count is the fewest any listed
condition's pool holds outside the manifold, at most --num_inception_images (a smaller count biases FID
upwards, so it is one count for all); --num_images fixes it, so that runs of other condition lists
compare. Conditions (NAME:VALUE):

    real          real images as they are: the real-vs-real floor
    blur:S        Gaussian blur of std S pixels (kernel 2*ceil(3S)+1, reflected edges): fidelity lost evenly
    noise:S       additive Gaussian noise of std S (pixels in [-1, 1]), clamped: fidelity lost evenly
    classes:K     images of K classes only, which K drawn per draw: whole modes missing
    distinct:N    N different images per class, each repeated to fill its class's share (the classes
                  equally; from a set too, as gaussian:50+distinct:30): a generator collapsed inside each
                  class. Exact copies make a sample's k-NN
                  radius 0 once it repeats more than k times, so recall falls to 0 there; coverage,
                  whose balls are the real images', reads such a set as it should
    gaussian:R    the images instance selection keeps at retention ratio R with that density measure
                  (also uniform:R, ppca:R, nn_dist:R), embedded with the preset's --embedding: the grid
                  summaries' training-set rows
    A+B           a set, repeats and a degradation together (at most one of each), e.g. gaussian:50+blur:0.5
                  (the kept half, blurred): do the metrics' penalties add up?

Draw d uses seed d + 1 for the images, the classes and the noise, so a condition's spread over draws
is the sampling noise of its numbers. One JSON line per condition and draw and one per condition with
mean and std over draws (stdout), a markdown table (--md) and a picture (--png: precision against
recall and density against coverage, one line per kind of condition). --generators adds an experiment
grid's rows (its results.json: mean +- std over seeds) to both, read from the file, not recomputed; they
are comparable only when the grid scored them with the same data and evaluation settings.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torchvision.transforms.functional as TF

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))
import bench_convergence  # noqa: E402
import bench_models  # noqa: E402
import datasets  # noqa: E402
import grid_processes  # noqa: E402
import inception_utils  # noqa: E402
import instance_selection  # noqa: E402
import real_image_metrics  # noqa: E402
import utils  # noqa: E402
from density_estimators import DENSITY_MEASURES  # noqa: E402

DEFAULT_CONDITIONS = ("real,blur:0.5,blur:0.6,blur:0.75,blur:1,noise:0.01,noise:0.02,noise:0.05,noise:0.1,classes:9,"
                      "classes:8,classes:6,distinct:100,distinct:30,distinct:10,distinct:3,uniform:50,gaussian:50,"
                      "uniform:50+blur:0.5,gaussian:50+blur:0.5,uniform:50+noise:0.02,gaussian:50+noise:0.02,"
                      "uniform:50+distinct:30,gaussian:50+distinct:30,uniform:50+distinct:30+blur:0.5,"
                      "gaussian:50+distinct:30+blur:0.5")
METRICS = ("FID", "IS_mean", "precision", "recall", "density", "coverage")
STAR_COLOURS = ("gold", "white", "lime", "black")  # generators: apart from the conditions' tab10


SET_KINDS = ("classes",) + tuple(DENSITY_MEASURES)
TRANSFORM_KINDS = ("blur", "noise")


class Condition(NamedTuple):
    """A condition: which images (`pool`: a kind of set and its value, None for every image), how many
    distinct ones a class, repeated (`distinct`, 0 for all drawn apart) and what is done to their
    pixels (`transform`, None for nothing)."""
    name: str
    pool: tuple[str, float] | None
    distinct: int
    transform: tuple[str, float] | None


def _part(text: str, whole: str) -> tuple[str, float]:
    kind, _, value = text.partition(":")
    try:
        number = float(value) if value else math.nan
    except ValueError:
        number = math.nan
    kinds = SET_KINDS + ("distinct",) + TRANSFORM_KINDS
    if kind not in kinds or not number >= 0:
        raise utils.UserError(f"condition {whole!r}: use real, or kinds of {', '.join(kinds)} with a value >= 0 "
                              f"(e.g. blur:1, or gaussian:50+blur:0.5 for both; see python "
                              f"bench/bench_calibration.py --help)")
    if kind in ("classes", "distinct") and (number != int(number) or number < 1):
        raise utils.UserError(f"condition {whole!r}: {kind} takes a whole number >= 1")
    return kind, number


def parse_condition(text: str) -> Condition:
    """'blur:1.5' -> Condition('blur:1.5', None, 0, ('blur', 1.5)); 'gaussian:50+distinct:30+noise:0.02'
    has a set, repeats and a transform; 'real' none. Raises UserError on anything else."""
    name = text.strip()
    if name == "real":
        return Condition(name, None, 0, None)
    parts = [_part(piece, name) for piece in name.split("+")]
    groups = [[p for p in parts if p[0] in kinds] for kinds in (SET_KINDS, ("distinct",), TRANSFORM_KINDS)]
    if any(len(group) > 1 for group in groups):
        raise utils.UserError(f"condition {name!r}: at most one of {', '.join(SET_KINDS)}, one distinct and one "
                              f"of {', '.join(TRANSFORM_KINDS)}, joined by +")
    pool, distinct, transform = (group[0] if group else None for group in groups)
    return Condition(name, pool, int(distinct[1]) if distinct else 0, transform)


def blur(sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Gaussian blur of std `sigma` pixels (identity at 0)."""
    size = 2 * math.ceil(3 * sigma) + 1
    return lambda x: TF.gaussian_blur(x, [size, size], [sigma, sigma]) if sigma > 0 else x


def noise(std: float, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Seeded additive Gaussian noise of std `std`, clamped to [-1, 1]; each call draws new noise."""
    gen = torch.Generator().manual_seed(seed)
    return lambda x: (x + std * torch.randn(x.shape, generator=gen)).clamp(-1, 1)


def repeated_per_class(free: np.ndarray, labels: np.ndarray, distinct: int, count: int, seed: int) -> np.ndarray:
    """`count` indices holding `distinct` different images of each class (drawn from `free`), each
    class's images repeated in turn to fill its share of `count` (shares as equal as integers allow),
    in a shuffled order (IS splits its samples in order)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[free])
    shares = [len(part) for part in np.array_split(np.arange(count), len(classes))]
    out = []
    for c, share in zip(classes, shares):
        members = free[labels[free] == c]
        if len(members) < distinct:
            raise utils.UserError(f"distinct:{distinct}: class {c} has only {len(members)} images outside the "
                                  f"manifold; use a smaller N or more --max_images")
        chosen = rng.permutation(members)[:distinct]
        out.append(np.resize(chosen, share))
    return rng.permutation(np.concatenate(out))


class Calibration:
    """The data set, its labels and the selection pools, loaded once for every condition."""

    def __init__(self, config: dict):
        self.config = config
        self.dataset = datasets.get_dataset_from_config(config, augment=False)
        self.labels = np.asarray(self.dataset.labels)
        self.everything = np.arange(len(self.dataset))
        self.selected: dict[tuple[str, float], np.ndarray] = {}

    def pool(self, condition: Condition, seed: int) -> np.ndarray:
        """The indices a condition draws its images from."""
        kind, value = condition.pool or ("", 0.0)
        if kind == "classes":
            classes = np.unique(self.labels)
            if value > len(classes):
                raise utils.UserError(f"classes:{value:g}: the data has only {len(classes)} classes")
            kept = np.random.default_rng(seed).choice(classes, int(value), replace=False)
            return self.everything[np.isin(self.labels, kept)]
        if kind in DENSITY_MEASURES:
            if (kind, value) not in self.selected:
                self.selected[kind, value] = instance_selection.select_from_config(
                    self.dataset, {**self.config, "density_measure": kind, "retention_ratio": value})
            return self.selected[kind, value]
        return self.everything

    def indices(self, condition: Condition, seed: int, count: int) -> np.ndarray:
        """The `count` images a condition scores in draw `seed`."""
        pool = self.pool(condition, seed)
        if condition.distinct:
            free = real_image_metrics.outside_manifold(self.config, pool)
            return repeated_per_class(free, self.labels, condition.distinct, count, seed)
        return real_image_metrics.draw_outside_manifold(self.config, pool, count, seed)

    def free_count(self, condition: Condition, seed: int) -> int:
        """How many of a condition's pool lie outside the manifold (repeated images: no limit)."""
        if condition.distinct:
            return len(self.everything)
        return len(real_image_metrics.outside_manifold(self.config, self.pool(condition, seed)))


def transform_of(condition: Condition, seed: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The degradation a condition applies to its images' pixels, if any."""
    kind, value = condition.transform or ("", 0.0)
    return blur(value) if kind == "blur" else noise(value, seed) if kind == "noise" else None


def summarize(rows: list[dict]) -> dict:
    """Mean and std (ddof 1; 0 for one draw) of every metric over a condition's draws."""
    out = {"draws": len(rows)}
    for m in METRICS:
        values = np.array([r[m] for r in rows], np.float64)
        out[f"{m}_mean"] = float(values.mean())
        out[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def grid_rows(path: str) -> list[dict]:
    """An experiment grid's cells (its results.json) as summary rows: 'G: <row label>'."""
    rows = []
    for cell in json.loads(Path(path).read_text())["cells"]:
        name, ratio = cell["labels"][0], cell["labels"][1]
        row = {"condition": f"G: {name}" + (f" {ratio} %" if ratio != "100" else ""), "draws": cell["n_seeds"]}
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_std"] = cell["metrics"][m], cell["metrics_std"].get(m, 0.0)
        rows.append(row)
    return rows


def markdown(summaries: list[dict], generators: list[dict]) -> str:
    """The table of every condition's mean +- std over draws (its summary lines), then the generators' rows."""
    heads = ("FID ↓", "IS ↑", "P ↑", "R ↑", "D ↑", "C ↑")
    first = summaries[0]
    lines = [f"{first['num_images']} real images a condition against all {first['data_images']} training images "
             f"({first['feature_net']}, {first['num_pr_images']}-image manifold, k = {first['prdc_k']}); "
             f"mean ± std over {first['draws']} draws"
             + ("; generators (G:) over their seeds, read from the grid." if generators else "."), "",
             "| condition | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for s in summaries + generators:
        cells = [f"{s[m + '_mean']:.2f} ± {s[m + '_std']:.2f}" if m in ("FID", "IS_mean")
                 else f"{s[m + '_mean']:.3f} ± {s[m + '_std']:.3f}" for m in METRICS]
        lines.append(f"| {s['condition']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def kind_and_level(condition: str) -> tuple[str, str]:
    """'gaussian:50+blur:0.5' -> ('gaussian:50+blur', '0.5'): the line a condition is a point of in the
    picture, and its label there; 'real' -> ('real', '')."""
    kind, _, level = condition.rpartition(":")
    return (kind, level) if kind else (condition, "")


def plot(summaries: list[dict], generators: list[dict], path: Path) -> None:
    """Precision against recall and density against coverage: one line per kind of condition through
    its levels (labelled with the last value: 'gaussian:50+blur:0.5' is a level of 'gaussian:50+blur'),
    the real images as a black square, generators as stars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 7))
    by_kind: dict[str, list[dict]] = {}  # the conditions' order, each kind's rows grouped once
    for s in summaries:
        by_kind.setdefault(kind_and_level(s["condition"])[0], []).append(s)
    for ax, (x, y) in zip(axes, (("recall", "precision"), ("coverage", "density"))):
        for i, (name, rows) in enumerate(by_kind.items()):
            # tab10 colours, and after ten kinds another marker, so that no two kinds look alike
            style = (dict(color="k", marker="s", ms=8) if name == "real"
                     else dict(color=plt.cm.tab10(i % 10), marker="o^D"[i // 10 % 3]))
            ax.errorbar([r[f"{x}_mean"] for r in rows], [r[f"{y}_mean"] for r in rows],
                        xerr=[r[f"{x}_std"] for r in rows], yerr=[r[f"{y}_std"] for r in rows],
                        label=name, lw=1, capsize=2, **style)
            for r in rows:
                if name != "real":
                    ax.annotate(kind_and_level(r["condition"])[1], (r[f"{x}_mean"], r[f"{y}_mean"]), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
        for j, g in enumerate(generators):
            ax.errorbar(g[f"{x}_mean"], g[f"{y}_mean"], xerr=g[f"{x}_std"], yerr=g[f"{y}_std"], marker="*", ms=15,
                        color=STAR_COLOURS[j % len(STAR_COLOURS)], mec="k", ecolor="k", capsize=2, ls="none",
                        label=g["condition"])
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("The metrics on degraded real images (Fashion-MNIST 32 px, efficientnet_lite0 features)")
    fig.tight_layout(rect=(0, 0.045 * ((len(labels) + 4) // 5) + 0.01, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Score every condition for every draw; print JSON lines and write the markdown table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--preset", default="fmnist32_cpu_mbstd_ch8_bs32_GnoSN",
                   help="grid_presets.py preset whose evaluation flags are used (default: the quickstart's)")
    p.add_argument("--extra", default="", help="train.py flags appended to the preset's, e.g. --num_pr_images 500")
    p.add_argument("--conditions", default=DEFAULT_CONDITIONS, help="comma-separated (default: %(default)s)")
    p.add_argument("--draws", type=int, default=3, help="draws per condition (default: %(default)s)")
    p.add_argument("--num_images", type=int, default=0,
                   help="images a condition (0: the fewest any listed condition has outside the manifold, at most "
                        "--num_inception_images; set it to compare runs of other condition lists)")
    p.add_argument("--max_images", type=int, default=3000, help="Fashion-MNIST training images (default: %(default)s)")
    p.add_argument("--data_root", default="", help="prepared data (default: OUT/data, made when missing)")
    p.add_argument("--out", default="results/calibration", help="data and table (default: %(default)s)")
    p.add_argument("--md", default="", help="the markdown table (default: OUT/calibration.md)")
    p.add_argument("--png", default="", help="the picture (default: OUT/calibration.png)")
    p.add_argument("--generators", default="", help="an experiment grid's results.json whose rows are added")
    p.add_argument("--replot", default="", metavar="JSONL",
                   help="only write --md and --png from an earlier run's stdout (with --generators, if given)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    args = p.parse_args(argv)
    if args.draws < 1 or args.threads < 1 or args.num_images < 0:
        raise utils.UserError("--draws and --threads must be >= 1, --num_images >= 0")
    conditions = [parse_condition(c) for c in args.conditions.split(",") if c.strip()]
    generators = grid_rows(args.generators) if args.generators else []
    out = Path(args.out).resolve()
    md = Path(args.md) if args.md else out / "calibration.md"
    png = Path(args.png) if args.png else out / "calibration.png"
    if args.replot:
        lines = [json.loads(line) for line in Path(args.replot).read_text().splitlines() if line.startswith("{")]
        return write_outputs([r for r in lines if r["name"] == "calibration_summary"], generators, md, png)
    out.mkdir(parents=True, exist_ok=True)
    data_root = str(Path(args.data_root).resolve()) if args.data_root else str(out / "data")
    flags = bench_convergence.recipe_flags(args.preset, args.extra) + ["--data_root", data_root, "--device", "cpu"]
    config = vars(utils.prepare_parser().parse_args(flags))
    grid_processes.prepare_fmnist(config, args.max_images, args.threads)
    torch.set_num_threads(args.threads)
    cal = Calibration(config)
    seeds = range(1, args.draws + 1)
    fewest = min([config["num_inception_images"]] + [cal.free_count(c, s) for c in conditions for s in seeds])
    count = args.num_images or fewest
    if count > fewest:
        raise utils.UserError(f"--num_images {count}: some condition has only {fewest} images outside the "
                              f"manifold (or --num_inception_images is {config['num_inception_images']}); use "
                              f"at most {fewest}")
    if count <= config["prdc_k"]:
        raise utils.UserError(f"only {count} images of some condition lie outside the manifold; use more "
                              f"--max_images or drop that condition")
    get_metrics = inception_utils.prepare_inception_metrics(config, device="cpu")
    common = {"num_images": count, "data_images": len(cal.dataset), "feature_net": config["feature_net"],
              "num_pr_images": config["num_pr_images"], "prdc_k": config["prdc_k"], "machine": bench_models.machine()}
    summaries = []
    for condition in conditions:
        rows = []
        for seed in seeds:
            metrics = real_image_metrics.score_real_images(
                cal.dataset, cal.indices(condition, seed, count), get_metrics, transform_of(condition, seed))
            rows.append(metrics)
            print(json.dumps({"name": "calibration", "condition": condition.name, "draw": seed, **common, **metrics}),
                  flush=True)
        summaries.append({"name": "calibration_summary", "condition": condition.name, **common, **summarize(rows)})
        print(json.dumps(summaries[-1]), flush=True)
    write_outputs(summaries, generators, md, png)


def write_outputs(summaries: list[dict], generators: list[dict], md: Path, png: Path) -> None:
    """The markdown table and the picture."""
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(summaries, generators))
    plot(summaries, generators, png)
    print(f"table: {md}, picture: {png}", file=sys.stderr)


if __name__ == "__main__":
    utils.run_cli(main)
