"""One feature pass: the moments pass's saved features (calculate_inception_moments.py --save_features)
are what the manifold, instance selection and the training-set rows would compute, and they are read
only when network, input and data match."""
from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import datasets
import feature_extraction
import inception_utils as iu
import instance_selection
import real_image_metrics
import saved_features

torch.set_num_threads(2)
RES = 32  # efficientnet_lite0's input size here (224 in the grids): the test is about the plumbing
N, NUM_PR = 48, 16


@pytest.fixture(scope="module")
def prepared(fmnist_root, tmp_path_factory, run_py):
    """A 48-image FMNIST32_hdf5 with its moments (+ saved features) and manifold made by the scripts."""
    root = tmp_path_factory.mktemp("saved_features")
    res = run_py("make_hdf5.py", "--dataset", "FMNIST32", "--data_root", fmnist_root, "--out", root / "FMNIST32.hdf5",
                 "--num_workers", 0, "--batch_size", 16, "--max_images", N)
    assert res.returncode == 0, res.stderr
    flags = ["--dataset", "FMNIST32_hdf5", "--data_root", root, "--feature_net", "efficientnet_lite0",
             "--feature_res", RES, "--batch_size", 16, "--num_workers", 0, "--device", "cpu", "--pbar", "none"]
    res = run_py("calculate_inception_moments.py", *flags, "--save_features")
    assert res.returncode == 0, res.stderr
    manifold = run_py("prepare_manifold.py", *flags, "--num_pr_images", NUM_PR, "--seed", 0)
    assert manifold.returncode == 0, manifold.stderr
    config = {"dataset": "FMNIST32_hdf5", "data_root": str(root), "feature_net": "efficientnet_lite0",
              "inception_weights": "", "feature_res": RES, "num_pr_images": NUM_PR, "prdc_k": 3,
              "num_inception_images": 20, "device": "cpu"}
    return root, flags, config, manifold.stdout


def _dataset(config):
    return datasets.get_dataset_from_config(config, augment=False)


def test_the_saved_features_are_the_networks_and_the_manifold_is_read_from_them(prepared):
    root, _, config, manifold_stdout = prepared
    net = iu.load_feature_net("efficientnet_lite0", resolution=RES)
    dataset = _dataset(config)
    saved = saved_features.load_features(saved_features.features_path(config), net, N, dataset.fingerprint())
    assert saved is not None and saved[0].shape == (N, 1280) and saved[1].shape == (N, 1000)
    pool, logits = feature_extraction.extract_features(net, dataset, 16, 0, progress=False)
    np.testing.assert_allclose(saved[0], pool, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(saved[1], logits, rtol=1e-4, atol=1e-4)
    # The moments are those of the saved features, and the manifold is their rows, bit for bit.
    moments = iu.load_moments(iu.moments_path(config), net)
    np.testing.assert_array_equal(moments["mu"], iu.moments_of(*saved)["mu"])
    assert f"Read from {saved_features.features_path(config)}" in manifold_stdout
    indices = iu.manifold_indices(N, NUM_PR, 0)
    np.testing.assert_array_equal(iu.load_manifold(iu.manifold_path(config), net), saved[0][indices])


def test_a_file_of_another_input_or_data_set_is_not_used(prepared, run_py, tmp_path):
    root, flags, config, _ = prepared
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy2(root / "FMNIST32.hdf5", other)
    shutil.copy2(saved_features.features_path(config), other)
    flags = [str(other) if f == root else str(f) for f in flags]
    i = flags.index("--feature_res")
    res = run_py("prepare_manifold.py", *flags[:i + 1], 48, *flags[i + 2:], "--num_pr_images", NUM_PR)
    assert res.returncode == 0, res.stderr
    assert "does not match this network and data (resolution); computing the features" in res.stdout
    with np.load(other / "FMNIST32_efficientnet_lite0_activations.npz") as f:
        assert f["features"].shape == (NUM_PR, 1280) and int(f["resolution"]) == 48
    net = iu.load_feature_net("efficientnet_lite0", resolution=RES)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert saved_features.load_features(saved_features.features_path(config), net, N, "another data set") is None
        assert saved_features.load_features(saved_features.features_path(config), net, N + 1, _dataset(config).fingerprint()) is None
    assert "(fingerprint)" in out.getvalue() and f"its number of images (not {N + 1})" in out.getvalue()


def test_selection_reads_its_embeddings_from_the_moments_pass(prepared, run_py, tmp_path):
    root, _, config, _ = prepared
    args = ["--dataset", "FMNIST32_hdf5", "--data_root", root, "--embedding", "efficientnet_lite0",
            "--embedding_res", RES, "--retention_ratio", 50, "--density_measure", "gaussian",
            "--selection_batch_size", 16, "--num_workers", 0, "--device", "cpu", "--pbar", "none",
            "--report_dir", tmp_path / "report", "--report_images", 4, "--report_classes", 2]
    res = run_py("instance_selection.py", *args)
    assert res.returncode == 0, res.stderr
    assert f"read from {saved_features.features_path(config)}" in res.stdout
    cache = root / "instance_selection"
    assert not list(cache.glob("embeddings_*")), "the saved features are the cache; no copy is written"
    with np.load(cache / "FMNIST32_hdf5_gaussian_efficientnet_lite0_r32_rr50.npz") as f:
        kept, scores = f["indices"], f["scores"]
    # The same selection as embedding the images again (no features file).
    again = instance_selection.run_selection(
        _dataset(config), instance_selection.Selection(50, "efficientnet_lite0", "gaussian", embedding_res=RES),
        batch_size=16, num_workers=0, device=torch.device("cpu"), progress=False)
    assert not again["embeddings_cached"]
    np.testing.assert_array_equal(again["indices"], kept)
    np.testing.assert_allclose(again["scores"], scores, rtol=1e-3)
    # At another embedding resolution the file does not match: the images are embedded and cached.
    i = args.index("--embedding_res")
    res = run_py("instance_selection.py", *args[:i + 1], 48, *args[i + 2:])
    assert res.returncode == 0, res.stderr
    assert "computing the features" in res.stdout and len(list(cache.glob("embeddings_*_r48_*"))) == 1


def test_training_set_rows_score_the_saved_features_as_the_network_would(prepared):
    _, _, config, _ = prepared
    get_metrics = iu.prepare_inception_metrics(config, device="cpu")
    dataset = _dataset(config)
    features = real_image_metrics.load_dataset_features(config, dataset, get_metrics)
    assert features is not None
    indices = real_image_metrics.draw_outside_manifold(config, np.arange(N), 20)
    with pytest.warns(UserWarning, match="singular"):  # 20 samples < 1280 dims
        read = real_image_metrics.score_real_images(dataset, indices, get_metrics, features=features)
        computed = real_image_metrics.score_real_images(dataset, indices, get_metrics)
    assert read.keys() == computed.keys()
    for key, value in computed.items():
        assert read[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert 0 < read["precision"] <= 1 and read["FID"] > 0
    with pytest.raises(ValueError, match="untransformed"):
        real_image_metrics.score_real_images(dataset, indices, get_metrics, lambda x: x, features)
    # A plain callable (not prepare_inception_metrics') never gets saved features.
    assert real_image_metrics.load_dataset_features(config, dataset, lambda *a, **k: {}) is None
