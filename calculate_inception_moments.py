"""Mean and covariance (float64) of the training data's features for FID, plus its real IS.

    python calculate_inception_moments.py --dataset I128_hdf5 --data_root data
    python calculate_inception_moments.py --dataset FMNIST32 --feature_net efficientnet_lite0

Writes `<data_root>/<dataset>_inception_moments.npz` (`_<feature_net>_` for other networks)
with mu, sigma, is_mean, is_std and the record of the network that made it (name, weights,
input resolution, resize method); training refuses moments made with another network.
Always the ORIGINAL data set: instance selection never changes the reference statistics.
Under torchrun every rank computes a share; rank 0 writes.
"""
from __future__ import annotations

import distributed
import inception_utils
import utils


def main(argv: list[str] | None = None) -> dict:
    """Compute and save the moments of the dataset named by the flags; returns them."""
    config, dataset, net = inception_utils.reference_pass_setup(argv, __doc__.split("\n\n")[0])
    distributed.print0(f"Moments of {config['dataset']} ({len(dataset)} images) with "
                       f"{inception_utils.FEATURE_NETS[config['feature_net']]['label']}")
    moments = inception_utils.compute_moments(dataset, net, config["batch_size"], config["num_workers"],
                                              progress=config["pbar"] != "none")
    path = inception_utils.moments_path(config)
    inception_utils.save_moments(path, moments, net, config["dataset"])
    distributed.print0(f"Training data IS: {moments['is_mean']:.3f} +/- {moments['is_std']:.3f}; "
                       f"saved {path}")
    distributed.cleanup()
    return moments


if __name__ == "__main__":
    utils.run_cli(main)
