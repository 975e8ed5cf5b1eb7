"""Metrics: IS, FID against scipy's sqrtm, PRDC against clovaai's prdc, files, end-to-end on FMNIST."""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import prdc
import pytest
import scipy.linalg
import scipy.stats
import torch
import torchvision.transforms.functional as TF

import backbones
import config
import datasets
import feature_extraction
import inception_utils as iu
import real_image_metrics
import utils

torch.set_num_threads(2)
FEATURE_RES = 64  # efficientnet_lite0 input size in the end-to-end test (224 is ~8x slower)


def _reference_fid(mu1, s1, mu2, s2) -> float:
    """pytorch-fid / TTUR's formula with scipy.linalg.sqrtm (real part)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _reference_prdc(real, fake, k):
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the sample counts
        return prdc.compute_prdc(real, fake, k)


def _spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or 2 * d))
    return a @ a.T / a.shape[1]


# --------------------------------------------------------------------------- IS
def test_inception_score_one_hot_is_num_classes_and_uniform_is_one():
    c = 10
    one_hot = np.eye(c)[np.arange(1000) % c]
    mean, std = iu.calculate_inception_score(one_hot, num_splits=10)
    assert mean == pytest.approx(c, rel=1e-12) and std == pytest.approx(0, abs=1e-9)
    assert iu.calculate_inception_score(np.full((500, 7), 1 / 7))[0] == pytest.approx(1.0, abs=1e-12)
    # Logits are softmaxed: very confident logits give (almost) the one-hot score.
    assert iu.calculate_inception_score(one_hot * 50.0)[0] == pytest.approx(c, rel=1e-6)
    with pytest.raises(ValueError, match="num_splits"):
        iu.calculate_inception_score(one_hot[:5], num_splits=10)


# --------------------------------------------------------------------------- FID
@pytest.mark.parametrize("d", [64, 512])
def test_fid_matches_sqrtm_formula(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) * 0.1
    s1, s2 = _spd(rng, d), _spd(rng, d)
    ours, ref = iu.calculate_frechet_distance(mu1, s1, mu2, s2), _reference_fid(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-4)
    assert iu.calculate_frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-6 * np.trace(s1))


def test_fid_2048_matches_closed_form():
    # sqrtm at 2048 dims takes 10-200 s here, so bench/bench_metrics.py checks that agreement;
    # commuting covariances have the exact answer tr sqrt(s1 s2) = sum sqrt(a_i b_i).
    rng = np.random.default_rng(2048)
    d = 2048
    v, w = (x / np.linalg.norm(x) for x in rng.standard_normal((2, d)))
    q = (np.eye(d) - 2 * np.outer(v, v)) @ (np.eye(d) - 2 * np.outer(w, w))  # dense orthogonal
    a, b = rng.gamma(0.5, size=d), rng.gamma(2.0, size=d)
    a[:100] = 0.0  # and singular
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    exact = (mu1 - mu2) @ (mu1 - mu2) + a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()
    assert iu.calculate_frechet_distance(mu1, s1, mu2, s2) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("case", ["rank_deficient", "tiny_eigenvalues", "both_singular"])
def test_fid_near_singular_is_real_finite_and_matches_sqrtm(case):
    rng = np.random.default_rng(7)
    d = 128
    if case == "rank_deficient":      # fewer samples than dimensions: exactly singular sigma1
        s1, s2 = _spd(rng, d, rank=40), _spd(rng, d)
    elif case == "tiny_eigenvalues":  # positive definite but condition number ~1e12
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        s1, s2 = (q * np.logspace(-12, 0, d)) @ q.T, _spd(rng, d)
    else:
        s1, s2 = _spd(rng, d, rank=30), _spd(rng, d, rank=50)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    ours = iu.calculate_frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(ours) and isinstance(ours, float)
    assert ours == pytest.approx(_reference_fid(mu1, s1, mu2, s2), rel=1e-4)
    assert iu.calculate_frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ours, rel=1e-6)


def test_fid_statistics_errors_and_warning():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 2"):
        iu.activation_statistics(rng.standard_normal((1, 8)))
    with pytest.warns(UserWarning, match="singular"):
        mu, sigma = iu.activation_statistics(rng.standard_normal((5, 8)))
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mu, sigma = iu.activation_statistics(rng.standard_normal((50, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="do not match"):
        iu.calculate_frechet_distance(mu, sigma, mu[:4], sigma[:4, :4])
    with pytest.raises(ValueError, match="NaN"):
        iu.calculate_frechet_distance(mu * np.nan, sigma, mu, sigma)


# --------------------------------------------------------------------------- PRDC
@pytest.mark.parametrize("block_size", [0, 37])
@pytest.mark.parametrize("k", [1, 5])
def test_prdc_matches_clovaai(block_size, k):
    rng = np.random.default_rng(k)
    real = np.abs(rng.standard_normal((600, 64))).astype(np.float32)
    fake = (np.abs(rng.standard_normal((450, 64))) * 1.1 + 0.05).astype(np.float32)
    ours = iu.compute_prdc(real, fake, nearest_k=k, block_size=block_size)
    ref = _reference_prdc(real, fake, k)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-6), key
    assert 0 < ours["precision"] < 1 and 0 < ours["coverage"] < 1  # a non-trivial case


def test_prdc_identical_sets_and_small_sets():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    for fake in (x, x.copy()):  # the same object and an equal copy
        ours, ref = iu.compute_prdc(x, fake, 5), _reference_prdc(x, fake, 5)
        assert ours == pytest.approx({k: float(v) for k, v in ref.items()}, abs=1e-6)
        assert ours["precision"] == ours["recall"] == ours["coverage"] == 1.0
    # k + 1 samples: each radius is the distance to the farthest other point (prdc needs k + 2).
    small = rng.standard_normal((6, 4)).astype(np.float32)
    d = np.linalg.norm(small[:, None] - small[None], axis=-1)
    assert iu.nearest_neighbour_radii(small, 5) == pytest.approx(d.max(1), rel=1e-6)
    assert iu.compute_prdc(small, small, 5)["coverage"] == 1.0
    with pytest.raises(ValueError, match="at least 6 samples"):
        iu.compute_prdc(small[:5], small, 5)
    with pytest.raises(ValueError, match="different feature networks"):
        iu.compute_prdc(small, small[:, :3], 2)


@pytest.mark.parametrize("block_size", [0, 7])
def test_nearest_neighbour_indices_match_brute_force(block_size):
    rng = np.random.default_rng(3)
    ref, queries = rng.standard_normal((40, 8)).astype(np.float32), rng.standard_normal((25, 8)).astype(np.float32)
    d = np.linalg.norm(queries[:, None].astype(np.float64) - ref[None], axis=-1)
    assert (iu.nearest_neighbour_indices(queries, ref, block_size=block_size) == d.argmin(1)).all()
    # Leave-one-out: a row is never its own neighbour, even with a duplicate elsewhere.
    dup = np.concatenate([ref, ref[:1]])
    self_d = np.linalg.norm(dup[:, None].astype(np.float64) - dup[None], axis=-1)
    np.fill_diagonal(self_d, np.inf)
    loo = iu.nearest_neighbour_indices(dup, dup, exclude_self=True, block_size=block_size)
    assert (loo == self_d.argmin(1)).all() and loo[0] == 40 and loo[40] == 0
    with pytest.raises(ValueError, match="exclude_self needs"):
        iu.nearest_neighbour_indices(queries, ref, exclude_self=True)
    with pytest.raises(ValueError, match="different feature networks"):
        iu.nearest_neighbour_indices(queries[:, :3], ref)


# --------------------------------------------------------------------------- networks and files
def test_offline_inception_error_names_file_and_folder_then_loads_from_cache(tmp_path, monkeypatch):
    assert tuple(iu.FEATURE_NETS) == config.FEATURE_NETS
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError) as err:
        iu.load_feature_net("inception_v3")
    assert f"put inception_v3_google-0cc3c7bd.pth in {folder}/" in str(err.value)
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        iu.load_feature_net("inception_v3_tf")
    with pytest.raises(FileNotFoundError, match="--inception_weights"):
        iu.load_feature_net("inception_v3", weights_path=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="random weights"):
        iu.load_feature_net("random_inception_v3", weights_path=str(tmp_path / "nope.pth"))
    # A file in the hub cache is used as is (here the TF graph with random weights).
    folder.mkdir(parents=True)
    tf_body = backbones.build_backbone("random_inception_v3_tf").body.net
    torch.save(tf_body.state_dict(), folder / "pt_inception-2015-12-05-6726825d.pth")
    net = iu.load_feature_net("inception_v3_tf", resolution=96)
    assert net.weights_id.startswith("pt_inception-2015-12-05-6726825d.pth sha256:")
    pool, logits = net(torch.rand(2, 3, 40, 40) * 2 - 1)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008) and torch.isfinite(pool).all()


def test_moments_file_records_network_and_refuses_another(tmp_path):
    net = iu.load_feature_net("efficientnet_lite0", resolution=32)
    other = iu.load_feature_net("random_inception_v3", resolution=75)
    images = torch.rand(24, 3, 32, 32) * 2 - 1
    moments = iu.compute_moments(images, net, batch_size=8, num_workers=0, progress=False)
    path = tmp_path / "X_moments.npz"
    iu.save_moments(path, moments, net, "X")
    loaded = iu.load_moments(path, net)
    assert loaded["sigma"].dtype == np.float64 and loaded["mu"].shape == (1280,)
    assert str(loaded["feature_net"]) == "efficientnet_lite0" and int(loaded["resolution"]) == 32
    assert str(loaded["resize_method"]) == backbones.RESIZE_METHOD
    with pytest.raises(ValueError, match="another network: feature_net 'efficientnet_lite0'"):
        iu.load_moments(path, other)
    with pytest.raises(ValueError, match="resolution"):
        iu.load_moments(path, iu.load_feature_net("efficientnet_lite0", resolution=64))
    # A file from before the EfficientNet-Lite normalisation fix records no normalisation.
    with np.load(path, allow_pickle=False) as z:
        old = {k: z[k] for k in z.files if k != "normalization"}
    np.savez(tmp_path / "before_fix.npz", **old)
    with pytest.raises(ValueError, match="does not record the feature network's normalization"):
        iu.load_moments(tmp_path / "before_fix.npz", net)
    np.savez(tmp_path / "other_norm.npz", **old, normalization=np.array("imagenet"))
    with pytest.raises(ValueError, match="normalization 'imagenet' \\(now 'efficientnet_lite'\\)"):
        iu.load_moments(tmp_path / "other_norm.npz", net)
    np.savez(tmp_path / "legacy.npz", mu=moments["mu"], sigma=moments["sigma"])  # BigGAN-PyTorch's
    with pytest.raises(ValueError, match="does not record"):
        iu.load_moments(tmp_path / "legacy.npz", net)
    with pytest.raises(FileNotFoundError, match="calculate_inception_moments.py"):
        iu.load_moments(tmp_path / "missing.npz", net)
    # Damaged arrays with an intact record: each refused naming the array, with what to re-run.
    with np.load(path, allow_pickle=False) as z:
        good = {k: z[k] for k in z.files}
    for name, change, problem in (
            ("nan", {"sigma": np.full_like(good["sigma"], np.nan)}, "non-finite 'sigma'"),
            ("shape", {"sigma": good["sigma"][:5]}, "badly shaped 'sigma'"),
            ("dtype", {"mu": good["mu"].astype(np.int64)}, "non-float 'mu'"),
            ("missing", {"mu": None}, "no 'mu'")):
        arrays = {k: v for k, v in {**good, **change}.items() if v is not None}
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(ValueError, match=f"{name}.npz has (a )?{problem}.*re-run calculate_inception_moments.py"):
            iu.load_moments(tmp_path / f"{name}.npz", net)
    iu.save_manifold(tmp_path / "m.npz", np.ones((4, 1280), np.float32), np.arange(4), 0, net, "X")
    assert iu.load_manifold(tmp_path / "m.npz", net).shape == (4, 1280)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        manifold = {k: z[k] for k in z.files}
    np.savez(tmp_path / "m1d.npz", **{**manifold, "features": np.ones(4, np.float32)})
    with pytest.raises(ValueError, match="badly shaped 'features'.*re-run prepare_manifold.py"):
        iu.load_manifold(tmp_path / "m1d.npz", net)


# --------------------------------------------------------------------------- end to end
def _fmnist_subset(root, n):
    ds = datasets.get_dataset("FMNIST32", str(root))
    return ds, iu.manifold_indices(len(ds), n, seed=0)


def test_fmnist_end_to_end_self_vs_blurred(fmnist_root, tmp_path):
    n = 1000
    ds, idx = _fmnist_subset(fmnist_root, n)
    config = {"dataset": "FMNIST32", "data_root": str(tmp_path), "feature_net": "efficientnet_lite0",
              "inception_weights": "", "no_fid": False, "no_prdc": False, "prdc_k": 5,
              "num_pr_images": n, "device": "cpu"}
    net = iu.load_feature_net("efficientnet_lite0", resolution=FEATURE_RES)
    # One pass gives both files (compute_moments is this plus the same two statistics).
    real, logits = feature_extraction.extract_features(net, ds, 100, 0, idx, progress=False)
    with pytest.warns(UserWarning, match="singular"):  # 1000 samples < 1280 dims
        mu, sigma = iu.activation_statistics(real)
    is_mean, is_std = iu.calculate_inception_score(logits)
    moments = {"mu": mu, "sigma": sigma, "is_mean": is_mean, "is_std": is_std, "num_images": n}
    iu.save_moments(iu.moments_path(config), moments, net, "FMNIST32")
    iu.save_manifold(iu.manifold_path(config), real, idx, 0, net, "FMNIST32")
    assert iu.moments_path(config).name == "FMNIST32_efficientnet_lite0_moments.npz"
    assert iu.manifold_path(config).name == "FMNIST32_efficientnet_lite0_activations.npz"
    assert moments["is_mean"] > 1.5  # ten clothing classes look different to an ImageNet net

    images = torch.stack([ds[i][0] for i in idx])
    blurred = TF.gaussian_blur(images, kernel_size=7, sigma=2.0)

    def sampler(batch_images):
        state = {"pos": 0}

        def sample():
            start = state["pos"] % n
            state["pos"] += 100
            return batch_images[start:start + 100], torch.zeros(100, dtype=torch.long)
        return sample

    get_metrics = iu.prepare_inception_metrics(config, device="cpu", resolution=FEATURE_RES)
    same = get_metrics(sampler(images), n, prints=False)
    worse = get_metrics(sampler(blurred), n, prints=False)
    assert same["FID"] == pytest.approx(0, abs=1e-3)
    for key in ("precision", "recall", "coverage"):
        assert same[key] == 1.0
    assert same["density"] == pytest.approx(1.0, abs=1e-9)
    assert same["IS_mean"] == pytest.approx(float(moments["is_mean"]), rel=1e-4)
    assert worse["FID"] > 10 * max(same["FID"], 1e-2)
    assert worse["precision"] < 0.9 and worse["coverage"] < 0.9 and worse["density"] < 0.9
    # --no_fid / --no_prdc skip (NaN) instead of needing the files.
    skip = iu.prepare_inception_metrics({**config, "no_fid": True, "no_prdc": True,
                                         "data_root": str(tmp_path / "empty")}, "cpu", FEATURE_RES)
    out = skip(sampler(images), 100, prints=False)
    assert np.isnan(out["FID"]) and np.isnan(out["precision"]) and out["IS_mean"] > 1
    with pytest.raises(FileNotFoundError, match="prepare_manifold.py"):
        iu.prepare_inception_metrics({**config, "no_fid": True, "data_root": str(tmp_path / "empty")},
                                     "cpu", FEATURE_RES)


def test_statistics_do_not_depend_on_batch_size(fmnist_root):
    ds, idx = _fmnist_subset(fmnist_root, 20)
    net = iu.load_feature_net("efficientnet_lite0", resolution=FEATURE_RES)
    runs = [iu.compute_moments(ds, net, batch_size=bs, num_workers=0, indices=idx, progress=False)
            for bs in (1, 7, 64)]
    for other in runs[1:]:
        np.testing.assert_allclose(other["mu"], runs[0]["mu"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(other["sigma"], runs[0]["sigma"], rtol=1e-3, atol=1e-5)


def _fmnist_data_root(fmnist_root, tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "fashion-mnist").mkdir(parents=True)
    for f in Path(fmnist_root).glob("train-*"):
        os.symlink(f, root / "fashion-mnist" / f.name)
    return root


def test_cli_manifold_then_moments_offline_error(fmnist_root, tmp_path, run_py):
    root = _fmnist_data_root(fmnist_root, tmp_path)
    res = run_py("prepare_manifold.py", "--dataset", "FMNIST32", "--data_root", root,
                 "--feature_net", "efficientnet_lite0", "--num_pr_images", 24, "--batch_size", 8,
                 "--num_workers", 0, "--device", "cpu", "--seed", 3, "--pbar", "none")
    assert res.returncode == 0, res.stderr
    with np.load(root / "FMNIST32_efficientnet_lite0_activations.npz", allow_pickle=False) as f:
        assert f["features"].shape == (24, 1280) and f["features"].dtype == np.float32
        assert int(f["seed"]) == 3 and str(f["feature_net"]) == "efficientnet_lite0"
        assert np.array_equal(f["indices"], iu.manifold_indices(60000, 24, 3))
        assert str(f["weights_id"]).startswith("efficientnet-lite0-57934424.pth sha256:")
    res = run_py("calculate_inception_moments.py", "--dataset", "FMNIST32", "--data_root", root,
                 "--device", "cpu", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert res.returncode == 2
    assert "inception_v3_google-0cc3c7bd.pth" in res.stderr and "Traceback" not in res.stderr
    assert not (root / "FMNIST32_inception_moments.npz").exists()


def test_real_images_metrics_draw_seeded_from_the_pool_outside_the_manifold(tmp_path, monkeypatch):
    """The training-set rows and the real-vs-real floor score real images: only those of the pool that
    the manifold does not hold (one it holds is its own nearest neighbour), the same ones every time."""
    cfg = {"dataset": "FMNIST32_hdf5", "data_root": str(tmp_path), "feature_net": "efficientnet_lite0",
           "num_pr_images": 3}
    path = iu.manifold_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, indices=np.array([1, 4, 6]))
    images = [(torch.full((1, 2, 2), float(i)), 0) for i in range(10)]  # image i holds the value i
    monkeypatch.setattr(real_image_metrics.datasets, "get_dataset_from_config", lambda config, augment: images)
    seen = []

    def get_metrics(sample_fn, num_images, prints):
        drawn = []
        while len(drawn) < num_images:
            drawn += [int(x[0, 0, 0]) for x in sample_fn()]
        seen.append(drawn)
        return {"FID": np.float64(len(drawn))}

    pool = np.array([0, 1, 2, 3, 4, 5])
    assert real_image_metrics.outside_manifold(cfg, pool).tolist() == [0, 2, 3, 5]
    assert real_image_metrics.real_images_metrics(cfg, pool, 3, get_metrics) == {"FID": 3.0}
    real_image_metrics.real_images_metrics(cfg, pool, 3, get_metrics)
    assert seen[0] == seen[1] and len(set(seen[0])) == 3 and set(seen[0]) <= {0, 2, 3, 5}
    real_image_metrics.real_images_metrics(cfg, None, 7, get_metrics)  # None: every image
    assert sorted(seen[2]) == [0, 2, 3, 5, 7, 8, 9]
    with pytest.raises(ValueError, match="only 4 of these 6 are outside the manifold's 3"):
        real_image_metrics.real_images_metrics(cfg, pool, 5, get_metrics)
    assert real_image_metrics.outside_manifold({**cfg, "no_prdc": True}, pool).tolist() == pool.tolist()


def test_recall_and_coverage_split_by_the_kept_images_add_up_to_prdc():
    """grid_recall_split's per-half recall and coverage are prdc's, restricted to those real rows."""
    import grid_recall_split
    rng = np.random.default_rng(5)
    real = rng.standard_normal((60, 6)).astype(np.float32)
    fake = (0.7 * rng.standard_normal((50, 6)) + 0.3).astype(np.float32)
    kept = rng.random(60) < 0.4
    split = grid_recall_split.split_recall_coverage(real, fake, kept, 3)
    reference = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=3)
    assert split["recall"] == pytest.approx(reference["recall"]) and split["coverage"] == pytest.approx(reference["coverage"])
    for key in ("recall", "coverage"):
        halves = kept.sum() * split[f"{key}_kept"] + (~kept).sum() * split[f"{key}_dropped"]
        assert halves / 60 == pytest.approx(split[key])
    tighter = grid_recall_split.split_recall_coverage(real, 0.5 * fake, kept, 3)  # same samples, drawn closer
    assert tighter["fake_radius_median"] == pytest.approx(0.5 * split["fake_radius_median"], rel=1e-5)
    # Rescaled to the first set's radius, the tighter copy is the same geometry: the same recall.
    rescaled = grid_recall_split.split_recall_coverage(real, 0.5 * fake, kept, 3, 0.5 * split["fake_radius_median"])
    assert rescaled["recall"] == tighter["recall"]
    wider = grid_recall_split.split_recall_coverage(real, fake, kept, 3, 2 * split["fake_radius_median"])
    assert wider["recall"] >= split["recall"] and wider["coverage"] == split["coverage"]


def test_class_density_draws_scores_and_correlations():
    """grid_class_density: two disjoint equal draws per class, the floor and the generator scored
    with prdc's and the project's FID, per-class density that ranks a tighter class denser under
    every measure, and Spearman's rho that follows the ranks."""
    import grid_class_density as gcd
    labels = np.repeat([0, 1, 2], [10, 12, 8])
    splits = gcd.class_splits(labels, 4, seed=3)
    for c, (reference, held_out) in splits.items():
        assert len(reference) == len(held_out) == 4 and not set(reference) & set(held_out)
        assert (labels[reference] == c).all() and (labels[held_out] == c).all()
    assert gcd.class_splits(labels, 4, seed=3)[1][0].tolist() == splits[1][0].tolist()  # seeded
    with pytest.raises(utils.UserError, match="class 2 has 8 images, fewer than 2 x 5"):
        gcd.class_splits(labels, 5, seed=3)

    rng = np.random.default_rng(7)
    real = rng.standard_normal((40, 5))
    fake = 0.8 * rng.standard_normal((30, 5)) + 0.2
    scores = gcd.set_scores(real, fake, 3)
    reference = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=3)
    for key in ("precision", "recall", "density", "coverage"):
        assert scores[key] == pytest.approx(reference[key])
    assert scores["FID"] == pytest.approx(iu.calculate_frechet_distance(*iu.activation_statistics(real),
                                                                        *iu.activation_statistics(fake)))
    assert gcd.set_scores(real, real, 3)["FID"] == pytest.approx(0, abs=1e-6)

    base = rng.standard_normal((30, 4))
    tight, loose = gcd.class_densities(0.5 * base, 3), gcd.class_densities(2 * base, 3)
    assert set(tight) == set(gcd.MEASURES) and all(tight[m] > loose[m] for m in gcd.MEASURES)
    # nn_dist is minus the mean distance to the 3rd nearest other point: scales with the data.
    assert loose["nn_dist"] == pytest.approx(4 * tight["nn_dist"])

    assert gcd.rank_correlations(np.array([1, 2, 3, 4.0]), np.array([10, 9, 7, 1.0]))["rho"] == pytest.approx(-1)
    mixed = gcd.rank_correlations(np.array([1, 2, 3, 4, 5.0]), np.array([2, 1, 4, 3, 5.0]))
    assert mixed["rho"] == pytest.approx(0.8) and 0 < mixed["p"] < 1
    assert np.isnan(gcd.rank_correlations(np.array([1, 2.0]), np.array([2, 1.0]))["rho"])
    assert np.isnan(gcd.rank_correlations(np.array([1, 2, 3.0]), np.array([5, 5, 5.0]))["p"])

    change = gcd.relative_change([10.0, 12.0, 11.0], [8.0, 9.0, 7.0])
    assert change["change"] == pytest.approx(8 / 11 - 1)
    assert change["p"] == pytest.approx(scipy.stats.ttest_ind([8, 9, 7.0], [10, 12, 11.0], equal_var=False).pvalue)
    assert np.isnan(gcd.relative_change([10.0], [8.0])["p"])
    assert np.isnan(gcd.relative_change([0, 0.0], [1, 2.0])["change"])
    assert np.isnan(gcd.rank_correlations(np.array([1, 2, 3.0]), np.array([1, np.nan, 3.0]))["rho"])

    sample_labels = np.array([2, 0, 2, 1, 0, 2, 1])
    assert {c: v.tolist() for c, v in gcd.first_of_each_class(sample_labels, [0, 1, 2], 2).items()} == \
        {0: [1, 4], 1: [3, 6], 2: [0, 2]}
    assert gcd.first_of_each_class(sample_labels, [1, 2], 3) is None  # class 1 has two samples only


def test_class_density_draws_more_samples_until_every_class_has_enough(monkeypatch, tmp_path):
    """sample.py draws classes at random: a class short of samples doubles the draw; a class the
    generator never draws ends in an error that names the run."""
    import grid_class_density as gcd
    import grid_recall_split
    asked = []

    def fake_run_features(grid_dir, run, num, net, folder):
        asked.append(num)
        labels = np.arange(num) % (3 if num >= 24 else 2)  # class 2 appears only from 24 samples on
        return np.zeros((num, 4)), labels

    monkeypatch.setattr(grid_recall_split, "run_features", fake_run_features)
    features, chosen = gcd.run_class_samples(tmp_path, "r", [0, 1, 2], 2, None)
    assert asked == [9, 18, 36] and len(features) == 36 and chosen[2].tolist() == [2, 5]
    asked.clear()
    with pytest.raises(utils.UserError, match="run r: 144 samples hold fewer than 2 of some class among"):
        gcd.run_class_samples(tmp_path, "r", [0, 1, 3], 2, None)
    assert asked == [9, 18, 36, 72, 144]
