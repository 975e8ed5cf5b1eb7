"""The report of a selection (what `python instance_selection.py` writes): the most and least
dense images of each class (the paper's Figure 1), score histograms with each class's
threshold, the kept indices and scores, and a JSON summary.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

import datasets
import io_utils
from selection_rule import class_pools


def _image(dataset: Dataset, index: int) -> torch.Tensor:
    item = dataset[index]
    image = item[0] if isinstance(item, (tuple, list)) else item
    if not torch.is_tensor(image):
        from torchvision.transforms.functional import to_tensor
        return to_tensor(image)  # PIL / HWC uint8 -> [0, 1]
    return (image.float().cpu() + 1) / 2  # the project's images are in [-1, 1]


def _grid(dataset: Dataset, indices: np.ndarray, nrow: int = 8) -> np.ndarray:
    from torchvision.utils import make_grid
    images = [_image(dataset, int(i)) for i in indices]
    if images[0].shape[0] == 1:
        images = [x.expand(3, -1, -1) for x in images]
    grid = make_grid(torch.stack(images).clamp(0, 1), nrow=min(nrow, len(images)), padding=2, pad_value=1.0)
    return grid.permute(1, 2, 0).numpy()


def _save_figure(fig, path: Path) -> None:
    with io_utils.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def _class_title(names: list[str] | None, c: int | str) -> str:
    """'Sneaker (class 7)' when the dataset knows its class names, else 'class 7'."""
    return f"{names[int(c)]} (class {c})" if names and str(c).isdigit() and int(c) < len(names) else f"class {c}"


def write_report(dataset: Dataset, result: dict[str, Any], report_dir: str | os.PathLike,
                 n_images: int = 32, n_classes: int = 10, extra: dict[str, Any] | None = None) -> Path:
    """Write the selection report into `report_dir` and return the JSON summary's path.

    Files: `class_<c>_density.png` (most and least dense images of class c, the paper's
    Figure 1) for the first `n_classes` classes (0 = all), `score_histogram.png` (score
    histograms with each class's threshold), `indices.npz` (kept indices, all scores) and
    `summary.json` (kept/total per class, measure, embedding, times).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report_dir = Path(report_dir)
    names = datasets.class_names(dataset)
    scores, keep, labels = result["scores"], result["indices"], result["labels"]
    pool_labels = np.zeros(len(scores), np.int64) if labels is None else labels
    kept_mask = np.zeros(len(scores), bool)
    kept_mask[keep] = True
    pools = class_pools(pool_labels)
    shown = pools if n_classes <= 0 else pools[:n_classes]
    per_class = {}
    for idx in pools:
        c = "all" if labels is None else str(int(pool_labels[idx[0]]))
        per_class[c] = {"kept": int(kept_mask[idx].sum()), "total": int(len(idx)),
                        "threshold": float(scores[idx][kept_mask[idx]].min())}
        if names and c.isdigit() and int(c) < len(names):
            per_class[c]["name"] = names[int(c)]
    cols = min(5, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, idx in zip(axes.flat, shown):
        c = "all" if labels is None else str(int(pool_labels[idx[0]]))
        # Relative to the threshold: nearly tied scores far from 0 still get finite bins.
        rel = scores[idx] - per_class[c]["threshold"]
        ax.hist([rel[kept_mask[idx]], rel[~kept_mask[idx]]], bins=40, stacked=True,
                color=["tab:blue", "tab:red"], label=["kept", "removed"])
        ax.axvline(0.0, color="k", linestyle="--", linewidth=1)
        ax.set_title(_class_title(names, c) if labels is not None else "all images", fontsize=9)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{result['meta']['measure']} score minus the class's threshold (dashed)", fontsize=10)
    fig.tight_layout()
    _save_figure(fig, report_dir / "score_histogram.png")
    plt.close(fig)
    for idx in shown:
        c = "all" if labels is None else str(int(pool_labels[idx[0]]))
        order = idx[np.argsort(-scores[idx], kind="stable")]
        m = min(n_images, len(order))
        fig, axes = plt.subplots(1, 2, figsize=(12, 6 * max(1, -(-m // 8)) / 4 + 1))
        for ax, chosen, title in ((axes[0], order[:m], "most dense"), (axes[1], order[::-1][:m], "least dense")):
            ax.imshow(_grid(dataset, chosen))
            ax.set_title(f"{_class_title(names, c)}: {title}", fontsize=10)
            ax.axis("off")
        _save_figure(fig, report_dir / f"class_{c}_density.png")
        plt.close(fig)
    io_utils.atomic_savez(report_dir / "indices.npz", indices=keep, scores=scores)
    meta = result["meta"]
    summary = {"n_total": int(len(scores)), "n_kept": int(len(keep)), "retention_ratio": meta["retention_ratio"],
               "measure": meta["measure"], "embedding": meta["embedding"], "embedding_res": meta["embedding_res"],
               "k": meta["k"], "seed": meta["seed"], "fingerprint": meta["fingerprint"],
               "labelled": labels is not None, "per_class": per_class, "time_s": result["time_s"],
               "from_cache": result["cached"], "selection_file": str(result["path"]) if result["path"] else None,
               **(extra or {})}
    io_utils.atomic_write_json(report_dir / "summary.json", summary)
    return report_dir / "summary.json"
