"""Compare any two image sources: IS, FID, KID, precision/recall/density/coverage.

    python evaluate.py --real data/my_images --fake samples/run/samples_ema.npz
    python evaluate.py --real data/FMNIST32.hdf5 --fake generated_pngs/ --feature_net efficientnet_lite0 \
        --per_class --out metrics.json

Each source is a folder of images (class subfolders or flat), an npz (`x`: uint8 N x H x W x C
as written by sample.py, optional `y` labels) or an HDF5 file written by make_hdf5.py. Both are
embedded by the same registered feature network (`--feature_net`); metrics are those of
training and sample.py (same code: FID in float64, PRDC as the `prdc` package), plus KID with
the cubic polynomial kernel over random subsets. With `--per_class` and labels on both sides,
every metric is also reported per class, with the class agreement of a conditional generator:
how often a sample's nearest real image has the sample's class, beside the same figure for the
real images among themselves (leave-one-out).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

import backbones
import datasets
import feature_extraction
import image_files
import inception_utils as iu
import metric_specs
import utils
from io_utils import atomic_write_json

METRICS = ("is", "fid", "kid", "prdc")


def build_parser() -> argparse.ArgumentParser:
    """The command line of evaluate.py."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--real", required=True, help="reference images: folder, .npz or .hdf5")
    p.add_argument("--fake", required=True, help="images to evaluate: folder, .npz or .hdf5")
    p.add_argument("--metrics", default=",".join(METRICS), help=f"comma list of {', '.join(METRICS)}")
    p.add_argument("--feature_net", default="inception_v3", choices=list(iu.FEATURE_NETS),
                   help="feature network for every metric")
    p.add_argument("--feature_res", type=int, default=0, help="input size of the network (0 = its own)")
    p.add_argument("--inception_weights", default="", help="weights file of the feature network")
    p.add_argument("--resolution", type=int, default=0,
                   help="size image folders are centre-cropped and resized to (0 = the first image's "
                        "shorter side); npz and HDF5 images are used as stored")
    p.add_argument("--num_real", type=int, default=0, help="images of --real used (0 = all; a seeded subset)")
    p.add_argument("--num_fake", type=int, default=0, help="images of --fake used (0 = all; a seeded subset)")
    p.add_argument("--prdc_k", type=int, default=5, help="k of precision/recall/density/coverage")
    p.add_argument("--kid_subsets", type=int, default=100, help="KID: number of random subsets")
    p.add_argument("--kid_subset_size", type=int, default=1000, help="KID: images per subset")
    p.add_argument("--is_splits", type=int, default=10, help="Inception Score splits")
    p.add_argument("--per_class", action="store_true", help="also every metric per class (needs labels)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets (images and KID)")
    p.add_argument("--batch_size", type=int, default=64, help="images per feature batch")
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the network runs")
    p.add_argument("--out", default="", help="write the results as JSON here")
    return p


def _folder_resolution(root: Path) -> int:
    first = next((p for p in sorted(root.rglob("*")) if p.is_file() and image_files.is_image(p.name)), None)
    if first is None:
        raise ValueError(f"{root} holds no images ({', '.join(image_files.IMG_EXTENSIONS)})")
    with Image.open(first) as im:
        return min(im.size)


def load_source(path: str, resolution: int = 0) -> datasets.ImageDataset:
    """A folder of images, an npz (`x` uint8 N x H x W x C, optional `y`) or a make_hdf5.py file."""
    source = Path(path)
    if source.is_dir():
        return datasets.ImageFolderDataset(source, resolution or _folder_resolution(source))
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist (a folder of images, an .npz or an .hdf5 file)")
    if source.suffix.lower() in (".hdf5", ".h5"):
        return datasets.HDF5Dataset(source)
    if source.suffix.lower() != ".npz":
        raise ValueError(f"{source}: unknown source type; pass a folder of images, an .npz or an .hdf5 file")
    try:
        with np.load(source, allow_pickle=False) as data:
            x = data["x"] if "x" in data.files else None
            y = data["y"] if "y" in data.files else None
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"cannot read {source} as npz ({type(err).__name__}: {err}); regenerate it") from None
    if x is None or x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] not in (1, 3) or x.shape[1] != x.shape[2]:
        raise ValueError(f"{source} must hold 'x': uint8 N x R x R x C (C = 1 or 3), as sample.py "
                         f"--sample_npz writes; found {None if x is None else (x.dtype, x.shape)}")
    if y is not None and (y.shape != (len(x),) or y.dtype.kind not in "iu" or (len(y) and y.min() < 0)):
        raise ValueError(f"{source}: 'y' must be one non-negative integer label per image")
    labels = y if y is not None else np.zeros(len(x), np.int64)
    return datasets.ArrayDataset(x, labels, int(labels.max(initial=0)) + 1, [str(source)], augment=False)


def metrics_of(real: dict[str, np.ndarray], fake: dict[str, np.ndarray], wanted: set[str],
               args: argparse.Namespace) -> dict[str, Any]:
    """Every wanted metric of fake against real (features 'pool', logits 'logits'); a metric
    that the set sizes do not allow is None."""
    out: dict[str, Any] = {"num_real": len(real["pool"]), "num_fake": len(fake["pool"])}
    if "is" in wanted:
        ok = fake["logits"] is not None and len(fake["pool"]) >= args.is_splits
        out["IS_mean"], out["IS_std"] = (iu.calculate_inception_score(fake["logits"], args.is_splits)
                                         if ok else (None, None))
    if "fid" in wanted:
        ok = min(len(real["pool"]), len(fake["pool"])) >= 2
        out["FID"] = iu.calculate_frechet_distance(*iu.activation_statistics(real["pool"]),
                                                   *iu.activation_statistics(fake["pool"])) if ok else None
    if "kid" in wanted:
        ok = min(len(real["pool"]), len(fake["pool"])) >= 2
        out["KID_mean"], out["KID_std"] = (iu.calculate_kid(real["pool"], fake["pool"], args.kid_subsets,
                                                            args.kid_subset_size, args.seed)
                                           if ok else (None, None))
    if "prdc" in wanted:
        ok = min(len(real["pool"]), len(fake["pool"])) > args.prdc_k
        prdc = iu.compute_prdc(real["pool"], fake["pool"], args.prdc_k) if ok else {}
        out.update({m.key: prdc.get(m.key) for m in metric_specs.PRDC})
    return out


def _features(net: backbones.FeatureNet, dataset: datasets.ImageDataset, num: int,
              args: argparse.Namespace, what: str) -> dict[str, np.ndarray]:
    indices = iu.manifold_indices(len(dataset), num or len(dataset), args.seed)
    pool, logits = feature_extraction.extract_features(net, dataset, args.batch_size, args.num_workers, indices,
                                              desc=f"{what} features")
    return {"pool": pool, "logits": logits, "labels": np.asarray(dataset.labels)[indices]}


def _subset(feats: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: (v[mask] if v is not None else None) for k, v in feats.items()}


def class_agreement(real: dict[str, np.ndarray], fake: dict[str, np.ndarray],
                    name_of: Callable[[int], str]) -> dict[str, Any]:
    """How often the nearest real image of a fake image (in the feature space) has the fake's label.

    The same figure for each real image and its nearest other real image (leave-one-out) is
    what a generator that draws the asked-for class as clearly as the data would score: below
    it, samples land among a neighbouring class (the per-class `confused_with` names the most
    frequent one and `confused_share` its share of that class's samples)."""
    fake_nn = real["labels"][iu.nearest_neighbour_indices(fake["pool"], real["pool"])]
    real_nn = real["labels"][iu.nearest_neighbour_indices(real["pool"], real["pool"], exclude_self=True)]
    out: dict[str, Any] = {"class_agreement": float(np.mean(fake_nn == fake["labels"])),
                           "real_class_agreement": float(np.mean(real_nn == real["labels"])), "per_class": {}}
    for c in sorted(set(fake["labels"].tolist()) & set(real["labels"].tolist())):
        mine, theirs = fake_nn[fake["labels"] == c], real_nn[real["labels"] == c]
        wrong = mine[mine != c]
        confused = int(np.bincount(wrong).argmax()) if len(wrong) else None
        out["per_class"][name_of(c)] = {
            "class_agreement": float(np.mean(mine == c)), "real_class_agreement": float(np.mean(theirs == c)),
            "confused_with": None if confused is None else name_of(confused),
            "confused_share": float(np.mean(mine == confused)) if confused is not None else 0.0}
    return out


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Evaluate --fake against --real; returns (and optionally writes) the results."""
    args = build_parser().parse_args(argv)
    wanted = {m.strip() for m in args.metrics.split(",") if m.strip()}
    if not wanted or wanted - set(METRICS):
        raise ValueError(f"--metrics {args.metrics!r}: choose from {', '.join(METRICS)}")
    for flag in ("prdc_k", "kid_subsets", "kid_subset_size", "is_splits", "batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    for flag in ("num_real", "num_fake", "resolution", "feature_res", "num_workers", "seed"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    real_data, fake_data = load_source(args.real, args.resolution), load_source(args.fake, args.resolution)
    device = utils.resolve_device(args.device)
    net = iu.load_feature_net(args.feature_net, args.inception_weights, device, args.feature_res)
    real = _features(net, real_data, args.num_real, args, "real")
    fake = _features(net, fake_data, args.num_fake, args, "fake")
    results: dict[str, Any] = {
        "real": args.real, "fake": args.fake, **net.metadata(),
        "prdc_k": args.prdc_k, "kid_subsets": args.kid_subsets, "kid_subset_size": args.kid_subset_size,
        "seed": args.seed, **metrics_of(real, fake, wanted, args)}
    if args.per_class:
        if min(real_data.n_classes, fake_data.n_classes) < 2:
            raise ValueError("--per_class needs labels on both sides (class subfolders, npz 'y', HDF5 labels)")
        classes = sorted(set(real["labels"].tolist()) & set(fake["labels"].tolist()))
        names = getattr(real_data, "classes", None)

        def name_of(c: int) -> str:
            return names[c] if names and c < len(names) and names[c] else str(c)

        agreement = class_agreement(real, fake, name_of)
        results["class_agreement"] = agreement["class_agreement"]
        results["real_class_agreement"] = agreement["real_class_agreement"]
        results["per_class"] = {
            name_of(c): {**metrics_of(_subset(real, real["labels"] == c), _subset(fake, fake["labels"] == c),
                                      wanted, args), **agreement["per_class"][name_of(c)]}
            for c in classes}
    if args.out:
        atomic_write_json(args.out, results)
    return results


def _fmt(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def main(argv: list[str] | None = None) -> None:
    """Parse, evaluate, print one line per metric (and per class)."""
    results = run(argv)
    keys = [m.key for m in metric_specs.METRICS if m.key in results]
    if "class_agreement" in results:
        keys += ["class_agreement", "real_class_agreement"]
    print(f"{results['fake']} vs {results['real']} ({results['feature_net']}, "
          f"{results['num_fake']} vs {results['num_real']} images)")
    print("  " + "  ".join(f"{k} {_fmt(results[k])}" for k in keys))
    for name, per in results.get("per_class", {}).items():
        confused = (f"  confused_with {per['confused_with']} ({_fmt(per['confused_share'])})"
                    if per["confused_with"] is not None else "")
        print(f"  class {name}: " + "  ".join(f"{k} {_fmt(per[k])}" for k in keys) + confused)


if __name__ == "__main__":
    utils.run_cli(main)
