"""Real-image features for precision/recall/density/coverage (the PRDC "real manifold").

    python prepare_manifold.py --dataset I128_hdf5 --data_root data --num_pr_images 10000

Features of `--num_pr_images` training images (default 10k), a random subset across classes
drawn with `--seed`, saved to `<data_root>/<dataset>_inception_activations.npz`
(`_<feature_net>_` for other networks) with the indices used, the seed and the record of the
network that made them; training refuses a manifold made with another network. When
`calculate_inception_moments.py --save_features` has kept every image's features with the same
network, input and data, they are read from that file instead of recomputed.
Always the ORIGINAL data set. Under torchrun every rank computes a share; rank 0 writes.
"""
from __future__ import annotations

import distributed
import feature_extraction
import inception_utils
import saved_features
import utils


def main(argv: list[str] | None = None):
    """Compute and save the real manifold of the dataset named by the flags; returns the features."""
    config, dataset, net = inception_utils.reference_pass_setup(argv, __doc__.split("\n\n")[0])
    indices = inception_utils.manifold_indices(len(dataset), config["num_pr_images"], config["seed"])
    distributed.print0(f"Manifold of {len(indices)} of {len(dataset)} {config['dataset']} images "
                       f"(seed {config['seed']}) with {inception_utils.FEATURE_NETS[config['feature_net']]['label']}")
    saved = saved_features.features_path(config)
    every = saved_features.load_features(saved, net, len(dataset), dataset.fingerprint())
    if every is not None:
        features = every[0][indices]
        distributed.print0(f"Read from {saved}")
    else:
        features, _ = feature_extraction.extract_features(
            net, dataset, config["batch_size"], config["num_workers"], indices,
            progress=config["pbar"] != "none", desc="manifold")
    path = inception_utils.manifold_path(config)
    inception_utils.save_manifold(path, features, indices, config["seed"], net, config["dataset"])
    distributed.print0(f"Saved {features.shape[0]} x {features.shape[1]} features to {path}")
    distributed.cleanup()
    return features


if __name__ == "__main__":
    utils.run_cli(main)
