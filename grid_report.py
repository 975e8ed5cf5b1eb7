"""The outputs of an experiment grid (experiment_grid.py): the table in the paper's column
order (Instance Selection | RR (%) | Embedding | Pretraining | IS | FID | P | R | D | C), each
cell's direction against the no-selection row, sample sheets side by side, training curves,
the retention-ratio sweep (the paper's Figure 3) and one summary picture.

A run's record (cells/<run>.json; `aggregate` makes a cell's from its seeds' runs) has `cell`,
`labels` (the four text columns), `metrics` (IS_mean, FID, precision, recall, density, coverage),
`sheet` (a class sheet PNG) and timings.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from io_utils import atomic_path, atomic_write_json, atomic_write_text
from metric_specs import TRAINING_METRICS

REPO = Path(__file__).resolve().parent
# (column, record key, format, better direction) of the table's metric columns
METRICS = tuple((m.label, m.key, m.fmt, m.arrow) for m in TRAINING_METRICS)


def aggregate(records: list[dict]) -> dict:
    """One cell's record from its runs' records: the metrics' mean and sample standard deviation
    over seeds (`metrics`, `metrics_std`, `n_seeds`); a single run's record is returned as it is, with
    its seed and run name as the one-element `seeds` and `runs`."""
    if len(records) == 1:
        return {**records[0], "n_seeds": 1, "seeds": [records[0]["seed"]], "runs": [records[0]["run"]]}
    first = records[0]
    keys = [k for k in first["metrics"] if all(r["metrics"].get(k) is not None for r in records)]
    values = {k: np.array([r["metrics"][k] for r in records], dtype=np.float64) for k in keys}
    return {"cell": first["cell"], "labels": first["labels"], "status": "done", "flags": first["flags"],
            "itr": first["itr"], "sheet": first["sheet"], "n_seeds": len(records),
            "seeds": [r["seed"] for r in records], "runs": [r["run"] for r in records],
            "metrics": {k: float(v.mean()) for k, v in values.items()},
            "metrics_std": {k: float(v.std(ddof=1)) for k, v in values.items()},
            "per_seed": {k: v.tolist() for k, v in values.items()},
            "train_seconds": round(sum(r.get("train_seconds", 0) for r in records), 1),
            "eval_seconds": round(sum(r.get("eval_seconds", 0) for r in records), 1),
            "train_launches": sum(r.get("train_launches", 0) for r in records)}


def cell_title(record: dict) -> str:
    """'Gaussian 50 % (EfficientNet-Lite0, ImageNet)' from a record's Table 1 labels."""
    selection, rr, arch, pretraining = record["labels"]
    return f"{selection} {rr} %" + (f" ({arch}, {pretraining})" if arch != "-" else "")


def metric_text(record: dict, key: str, fmt: str) -> str:
    """A table entry: the value, or `mean ± std` over seeds when the cell ran several."""
    value = record["metrics"].get(key)
    if value is None:
        return "-"
    std = record.get("metrics_std", {}).get(key)
    return fmt.format(value) + (f" ± {fmt.format(std)}" if record.get("n_seeds", 1) > 1 and std is not None else "")


def markdown_table(records: list[dict]) -> str:
    """The paper's Table 1 columns: Instance Selection | RR (%) | Embedding | Pretraining | IS ... C."""
    head = ["Instance Selection", "RR (%)", "Embedding", "Pretraining"] + [f"{n} {a}" for n, _, _, a in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        values = [metric_text(r, key, fmt) for _, key, fmt, _ in METRICS]
        lines.append("| " + " | ".join(list(r["labels"]) + values) + " |")
    return "\n".join(lines) + "\n"


ALPHA = 0.05  # a difference of means counts when Welch's two-sided t-test gives p below this


class Difference(NamedTuple):
    """A difference of two cells' means in standard errors (Welch's t), its degrees of freedom
    (Welch-Satterthwaite) and the two-sided p-value."""
    t: float
    df: float
    p: float

    def text(self) -> str:
        """How a verdict line shows it: '+2.7 SE, p 0.031'."""
        return f"{self.t:+.1f} SE, p {self.p:.2g}"


def welch(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int) -> Difference:
    """Welch's unequal-variance t-test of mean_b - mean_a from sample standard deviations (ddof 1).

    With three seeds a side the degrees of freedom are 2-4, where a difference must exceed
    2.8-4.3 standard errors for p < .05. "More than twice its standard error" is not a 5 % test
    at such sizes: it calls 11 % of equal-mean pairs of normal 3-seed samples a change, and 7 of
    30 metric comparisons between two 3-seed runs of one recipe (Welch: 3.4 % and 1 of 30;
    bench/RECIPE_EXPERIMENTS.md, "A repeat of the recipe").
    """
    from scipy import stats
    va, vb = std_a ** 2 / n_a, std_b ** 2 / n_b
    se = math.sqrt(va + vb)
    if se == 0:  # no spread on either side: equal means are the same, any difference is certain
        same = mean_b == mean_a
        return Difference(0.0 if same else math.copysign(math.inf, mean_b - mean_a), math.inf, 1.0 if same else 0.0)
    t = float((mean_b - mean_a) / se)
    df = float((va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1)))
    return Difference(t, df, float(2 * stats.t.sf(abs(t), df)))


def compare(base: dict, other: dict, key: str, arrow: str) -> tuple[str, Difference | None]:
    """`other` against `base` on metric `key`: ('better' | 'worse' | 'within noise' | 'same', test).

    With several seeds on both sides the test is Welch's t-test (`welch`) at level ALPHA; with
    one seed there is no noise estimate: the sign decides and the test is None.
    """
    a, b = base["metrics"].get(key), other["metrics"].get(key)
    if a is None or b is None:
        return "-", None
    up_is_better = arrow == "↑"
    na, nb = base.get("n_seeds", 1), other.get("n_seeds", 1)
    if na > 1 and nb > 1:
        test = welch(a, base["metrics_std"][key], na, b, other["metrics_std"][key], nb)
        if test.p >= ALPHA:
            return "within noise", test
        return ("better" if (test.t > 0) == up_is_better else "worse"), test
    if a == b:
        return "same", None
    return ("better" if (b > a) == up_is_better else "worse"), None


def directions(records: list[dict]) -> list[str]:
    """Each cell against `none` (all data), metric by metric: better, worse or within noise."""
    base = next((r for r in records if r["cell"] == "none"), None)
    if base is None:
        return []
    out = []
    for r in records:
        if r is base:
            continue
        parts = []
        for name, key, fmt, arrow in METRICS:
            verdict, test = compare(base, r, key, arrow)
            if verdict == "-":
                continue
            detail = "" if test is None else f", {test.text()}"
            parts.append(f"{name} {metric_text(base, key, fmt)} -> {metric_text(r, key, fmt)} ({verdict}{detail})")
        out.append(f"- {cell_title(r)} vs None: " + "; ".join(parts))
    return out


# The paper's Table 1 directions for a pretrained embedding against all data, and for the
# uniform control: (metric key, what held means, the verdicts that count as held, the largest
# relative drop of the means that still counts, resolved or not: the paper's recall fell 5-6 %,
# "a little"; a mean 50 % lower is not "a little" because three seeds cannot resolve it).
PAPER_SELECTION = (("precision", "precision up", ("better",), None), ("density", "density up", ("better",), None),
                   ("recall", "recall down a little (at most 10 %) or unchanged",
                    ("worse", "within noise", "same"), 0.10),
                   ("coverage", "coverage up", ("better",), None), ("FID", "FID better", ("better",), None))
PAPER_UNIFORM = tuple((key, f"{key} no better than all data", ("worse", "within noise", "same"), None)
                      for key in ("precision", "density", "FID"))


def paper_verdict(records: list[dict]) -> list[str]:
    """Plain statements of whether the paper's directions held in this grid (needs a `none` row)."""
    base = next((r for r in records if r["cell"] == "none"), None)
    if base is None:
        return []
    arrows = {key: arrow for _, key, _, arrow in METRICS}
    lines = []
    for r in records:
        measure = r["labels"][0]
        if r is base or r["labels"][3] not in ("ImageNet", "-"):
            continue  # random-init embeddings are a control of their own
        checks = PAPER_UNIFORM if measure == "Uniform" else PAPER_SELECTION
        for key, claim, held, max_drop in checks:
            verdict, test = compare(base, r, key, arrows[key])
            if verdict == "-":
                continue
            old_value, new_value = base["metrics"][key], r["metrics"][key]
            change = (new_value - old_value) / abs(old_value) if old_value else 0.0
            ok = verdict in held and (max_drop is None or -change <= max_drop)
            noise = "" if r.get("n_seeds", 1) > 1 else " (one seed: no error bar, not a test)"
            lines.append(f"- {cell_title(r)}: {claim}: **{'held' if ok else 'did not hold'}** "
                         f"({verdict}{'' if test is None else f', {test.text()}'}, {change:+.0%}){noise}")
    return lines


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    _figure().close(fig)
    return path


def plot_samples(records: list[dict], path: Path) -> Path:
    """The cells' class sheets side by side, titled with the cell and its FID/P/R/D."""
    plt = _figure()
    cols = min(len(records), 5)
    rows = -(-len(records) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 4.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, records):
        if Path(r["sheet"]).exists():
            ax.imshow(plt.imread(r["sheet"]))
        m = r["metrics"]
        stats = "  ".join(f"{n} {fmt.format(m[k])}" for n, k, fmt, _ in METRICS[1:5] if m.get(k) is not None)
        ax.set_title(f"{cell_title(r)}\n{stats}", fontsize=8)
    return _save(fig, path)


def plot_sweep(records: list[dict], path: Path) -> Path:
    """Figure 3: the six metrics against the retention ratio (100 = no selection); with several
    seeds per ratio, the mean with the seeds' sample std as error bars."""
    plt = _figure()
    rows = sorted(records, key=lambda r: float(r["labels"][1]))
    seeded = any(r.get("n_seeds", 1) > 1 for r in rows)
    fig, axes = plt.subplots(2, 3, figsize=(11, 6))
    for ax, (name, key, _, arrow) in zip(axes.flat, METRICS):
        rows_k = [r for r in rows if r["metrics"].get(key) is not None]
        stds = [r.get("metrics_std", {}).get(key) or 0.0 for r in rows_k]  # absent for one seed
        ax.errorbar([float(r["labels"][1]) for r in rows_k], [r["metrics"][key] for r in rows_k],
                    yerr=stds if seeded else None, marker="o", capsize=3)
        ax.set_title(f"{name} {arrow}")
        ax.set_xlabel("retention ratio (%)")
        ax.grid(alpha=0.3)
    spread = ", mean ± std over seeds" if seeded else ""
    fig.suptitle(f"Metrics against the retention ratio (all against the full training data{spread})")
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(logs_root: Path, names: list[str], out: Path) -> list[Path]:
    """Training curves of the cells on shared axes, by logs/plot_logs.py."""
    spec = importlib.util.spec_from_file_location("plot_logs", REPO / "logs" / "plot_logs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.plot_logs(logs_root, names, out, window=5)


def plot_summary(panels: list[Path], path: Path) -> Path:
    """The given PNGs stacked into one picture (sample sheets, curves, selection report)."""
    plt = _figure()
    images = [plt.imread(p) for p in panels if p.exists()]
    heights = [im.shape[0] / im.shape[1] for im in images]
    fig, axes = plt.subplots(len(images), 1, figsize=(12, 12 * sum(heights) + 0.3 * len(images)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, image in zip(axes[:, 0], images):
        ax.imshow(image)
        ax.axis("off")
    return _save(fig, path)


def training_set_lines(records: list[dict], sets: list[dict]) -> list[str]:
    """summary.md's section on the training sets themselves (experiment_grid.Grid.training_sets): their
    table and, per selection, each metric's change for the real sets beside the generators' change."""
    if not sets:
        return []
    lines = ["## The training sets themselves", "",
             f"Real images of each row's training set ({sets[0]['num_images']} per row, drawn from the images "
             "outside the P/R/D/C manifold), scored against the full training data exactly as the generators' "
             "samples are: what a generator that reproduced its training set exactly would score. What a "
             "selection loses here, it loses by construction; the generators' change beyond it is training's.",
             "", markdown_table(sets)]
    base = next((s for s in sets if s["cell"] == "none"), None)
    trained = {r["cell"]: r for r in records}
    if base is None or "none" not in trained:
        return lines

    def change(old: float, new: float, fmt: str) -> str:
        return f"{fmt.format(old)} -> {fmt.format(new)}" + (f" ({(new - old) / abs(old):+.0%})" if old else "")

    for row in sets:
        if row is base:
            continue
        parts = [f"{name} {change(base['metrics'][key], row['metrics'][key], fmt)}, generators "
                 f"{change(trained['none']['metrics'][key], trained[row['cell']]['metrics'][key], fmt)}"
                 for name, key, fmt, _ in METRICS
                 if None not in (base["metrics"].get(key), row["metrics"].get(key),
                                 trained["none"]["metrics"].get(key), trained[row["cell"]]["metrics"].get(key))]
        lines.append(f"- {cell_title(row)}, its training set against all data: " + "; ".join(parts))
    return lines + [""]


def seeds_text(records: list[dict], config: dict) -> str:
    """'seed 0' or 'seeds 0, 1, 2 (mean ± sample std over seeds)'."""
    seeds = records[0].get("seeds") or [config["seed"]]
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {', '.join(map(str, seeds))} (mean ± sample std over seeds)"


def write_outputs(out: Path, grid: str, title: str, config: dict, records: list[dict], seconds: float,
                  training_sets: list[dict] | None = None, partial: str = "") -> None:
    """Into `out`: summary.md, results.json, samples.png, curves/, summary.png (+ ratio_sweep.png
    for the figure3 grid). `config` holds the shared flags, `records` the finished cells in order,
    `training_sets` the real training sets' own scores (experiment_grid.Grid.training_sets);
    `partial` says which seeds these are while the grid is still running (the final call has none)."""
    training_sets = training_sets or []
    atomic_write_json(out / "results.json", {"grid": grid, "cells": records, "training_sets": training_sets,
                                             "seconds": round(seconds, 1), **({"partial": partial} if partial else {})})
    figures = [plot_samples(records, out / "samples.png")]
    try:
        # One curve per cell (its first seed's run) keeps the plot readable.
        curves = plot_curves(out / "logs", [r.get("runs", [r["cell"]])[0] for r in records], out / "curves")
    except (ValueError, FileNotFoundError) as err:  # e.g. fewer iterations than --log_every
        print(f"[grid] no training curves: {err}", flush=True)
        curves = []
    figures += [p for p in curves if p.name == "losses.png"]
    if grid == "figure3":
        figures.insert(0, plot_sweep(records, out / "ratio_sweep.png"))
    reports = [out / "selection" / r["cell"] for r in records if (out / "selection" / r["cell"]).is_dir()]
    scored = [out / "selection" / r["cell"] for r in records if r["labels"][0] not in ("None", "Uniform")]
    shown = next((d for d in scored if d in reports), reports[0] if reports else None)  # a density report
    if shown is not None:
        figures += [shown / "score_histogram.png", *sorted(shown.glob("class_*_density.png"))[:1]]
    plot_summary(figures, out / "summary.png")
    n_total = next((json.loads((d / "summary.json").read_text())["n_total"] for d in reports
                    if (d / "summary.json").exists()), None)
    lines = [f"# {title or 'Instance selection grid: ' + grid}", "",
             *([f"**Partial: {partial}.** The grid is still running; this file is rewritten as more seeds "
                f"finish, and the final one adds the training sets' own rows.", ""] if partial else []),
             markdown_table(records),
             f"All cells: `{config['dataset']}` at "
             f"{str(config['resolution']) + ' px' if config['resolution'] else 'its native resolution'}"
             + (f" ({n_total} training images)" if n_total else "") + f", {seeds_text(records, config)}, "
             f"{config['num_iters']} iterations at batch {config['batch_size']}, G_ch {config['G_ch']} / "
             f"D_ch {config['D_ch']}, attention G {config['G_attn']} / D {config['D_attn']}. Metrics against the "
             f"FULL training data with `{config['feature_net']}` on {config['num_inception_images']} samples "
             f"(P/R/D/C: {config['num_pr_images']} real and fake, k={config['prdc_k']})"
             + ("; NOT the standard Inception FID: compare only within this table" if
                config["feature_net"] not in ("inception_v3", "inception_v3_tf") else "") + ".", "",
             "| cell | train s | eval s | trained images |", "|---|---|---|---|"]
    for r in records:
        summary = out / "selection" / r["cell"] / "summary.json"
        kept = json.loads(summary.read_text())["n_kept"] if summary.exists() else n_total
        lines.append(f"| {r['cell']} | {r.get('train_seconds', '-')} | {r.get('eval_seconds', '-')} | "
                     f"{kept if kept is not None else '-'} |")
    lines += ["", f"Wall time of this invocation{' so far' if partial else ''}: {seconds:.0f} s (cells read from "
              f"earlier runs cost nothing).",
              ""]
    found, verdict = directions(records), paper_verdict(records)
    seeds = max(r.get("n_seeds", 1) for r in records)
    if verdict:
        how = (f"Each claim is tested against the None row with Welch's t-test ({seeds} seeds per cell): a change "
               f"counts when p < {ALPHA:g}; otherwise it is within noise. Each verdict gives the difference of "
               f"the means in standard errors and p." if seeds > 1 else
               "With one seed per cell there is no noise estimate: the sign of each difference decides, and no "
               "verdict is a test.")
        lines += ["## Did the paper's directions hold?", "", how, "", *verdict, ""]
    lines += training_set_lines(records, training_sets)
    if found:
        lines += ["## Against the no-selection row", "",
                  "The paper (Table 1) finds precision, density and coverage up, recall slightly down and FID "
                  "better with a pretrained embedding, and Uniform / random-init rows about equal to None.", "",
                  *found, ""]
    lines += ["## Pictures", ""] + [f"![{p.stem}]({p.relative_to(out)})" for p in figures if p.exists()
                                   and p.is_relative_to(out)] + [""]
    if reports:
        lines += ["Selection reports: " + ", ".join(f"[{d.name}]({d.relative_to(out)}/)" for d in reports), ""]
    atomic_write_text(out / "summary.md", "\n".join(lines))
    if partial:
        print(f"[grid] so far, {partial} ({out / 'summary.md'}, rewritten as more finish):", flush=True)
    print(markdown_table(records), flush=True)
    for line in verdict + found:
        print(line, flush=True)
