"""Mean and covariance (float64) of the training data's features for FID, plus its real IS.

    python calculate_inception_moments.py --dataset I128_hdf5 --data_root data
    python calculate_inception_moments.py --dataset FMNIST32 --feature_net efficientnet_lite0 --save_features

Writes `<data_root>/<dataset>_inception_moments.npz` (`_<feature_net>_` for other networks)
with mu, sigma, is_mean, is_std and the record of the network that made it (name, weights,
input resolution, resize method); training refuses moments made with another network.
`--save_features` also keeps every image's features and logits (`..._features.npz`, float32:
N x (D + classes) x 4 bytes, 27 MB for 3000 images with efficientnet_lite0, ~15 GB for ImageNet
with Inception), which prepare_manifold.py, the grids' training-set rows and instance selection
with the same network and input then read instead of running the network over the images again.
Always the ORIGINAL data set: instance selection never changes the reference statistics.
Under torchrun every rank computes a share; rank 0 writes.
"""
from __future__ import annotations

import argparse

import distributed
import feature_extraction
import inception_utils
import saved_features
import utils


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--save_features", action="store_true", default=False,
                        help="Also write every image's features and logits for the later passes to read")


def main(argv: list[str] | None = None) -> dict:
    """Compute and save the moments of the dataset named by the flags; returns them."""
    config, dataset, net = inception_utils.reference_pass_setup(argv, __doc__.split("\n\n")[0], _add_flags)
    distributed.print0(f"Moments of {config['dataset']} ({len(dataset)} images) with "
                       f"{inception_utils.FEATURE_NETS[config['feature_net']]['label']}")
    pool, logits = feature_extraction.extract_features(net, dataset, config["batch_size"], config["num_workers"],
                                                       progress=config["pbar"] != "none", desc="moments")
    moments = inception_utils.moments_of(pool, logits)
    path = inception_utils.moments_path(config)
    inception_utils.save_moments(path, moments, net, config["dataset"])
    distributed.print0(f"Training data IS: {moments['is_mean']:.3f} +/- {moments['is_std']:.3f}; "
                       f"saved {path}")
    if config["save_features"]:
        features = saved_features.features_path(config)
        saved_features.save_features(features, pool, logits, net, config["dataset"], dataset.fingerprint())
        distributed.print0(f"Saved every image's features to {features}")
    distributed.cleanup()
    return moments


if __name__ == "__main__":
    utils.run_cli(main)
