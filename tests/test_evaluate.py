"""evaluate.py: KID against torch-fidelity, and two sources with known answers (the same
Fashion-MNIST images as a folder, an npz and an HDF5 file; a blurred copy)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

import datasets
import evaluate
import inception_utils as iu


def test_kid_equals_torch_fidelity():
    kid_ref = pytest.importorskip("torch_fidelity.metric_kid")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 16)), rng.normal(0.3, 1.2, size=(120, 16))
    kw = dict(kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    assert iu.polynomial_mmd2(x, y) == pytest.approx(kid_ref.kernel_mmd(x, y, **kw), rel=1e-12)
    # One subset of every image: no randomness left (MMD is invariant to the order of each set).
    ours = iu.calculate_kid(x, y, num_subsets=1, subset_size=120)
    ref = kid_ref.kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y), kid_subsets=1,
                                         kid_subset_size=120, verbose=False, rng_seed=0, **kw)
    assert ours[0] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-12) and ours[1] == 0
    # Random subsets: the same distribution of estimates (mean within a few standard errors).
    mean, std = iu.calculate_kid(x, y, num_subsets=200, subset_size=50, seed=1)
    ref = kid_ref.kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y), kid_subsets=200,
                                         kid_subset_size=50, verbose=False, rng_seed=1, **kw)
    assert abs(mean - ref["kernel_inception_distance_mean"]) < 4 * std / np.sqrt(200)
    assert iu.calculate_kid(x, x[::-1].copy(), 1, 120)[0] < 0 < iu.calculate_kid(x, y, 1, 120)[0]


@pytest.fixture(scope="module")
def sources(fmnist_root, tmp_path_factory) -> dict[str, Path]:
    """30 Fashion-MNIST images of 3 classes as a folder, an npz and an HDF5 file, and a blurred folder."""
    import make_hdf5
    root = tmp_path_factory.mktemp("evaluate")
    data = datasets.get_dataset("FMNIST32", fmnist_root)
    names = {0: "T-shirt", 1: "Trouser", 7: "Sneaker"}
    x, y = [], []
    for label, name in names.items():
        for i in np.flatnonzero(data.labels == label)[:10]:
            img = data.load_uint8(int(i)).permute(1, 2, 0).numpy()
            for folder, picture in (("imgs", Image.fromarray(img)),
                                    ("blurred", Image.fromarray(img).filter(ImageFilter.GaussianBlur(2)))):
                (root / folder / name).mkdir(parents=True, exist_ok=True)
                picture.save(root / folder / name / f"{i:05d}.png")
            x.append(img)
            y.append(sorted(names.values()).index(name))
    np.savez(root / "same.npz", x=np.stack(x), y=np.array(y))
    make_hdf5.main(["--dataset", "custom", "--data_root", str(root / "imgs"), "--resolution", "32",
                    "--out", str(root / "same.hdf5"), "--num_workers", "0"])
    return {"folder": root / "imgs", "npz": root / "same.npz", "hdf5": root / "same.hdf5",
            "blurred": root / "blurred", "root": root}


def _evaluate(real: Path, fake: Path, *extra: str) -> dict:
    with warnings.catch_warnings():  # 30 images of 1280-d features: singular covariances, expected
        warnings.simplefilter("ignore", UserWarning)
        return evaluate.run(["--real", str(real), "--fake", str(fake), "--feature_net", "efficientnet_lite0",
                             "--feature_res", "64", "--device", "cpu", "--kid_subset_size", "30",
                             "--kid_subsets", "5", "--prdc_k", "3", "--is_splits", "3", *extra])


@pytest.mark.parametrize("fake", ["npz", "hdf5"])
def test_the_same_images_in_any_format_match_perfectly(sources, fake):
    res = _evaluate(sources["folder"], sources[fake])
    assert res["num_real"] == res["num_fake"] == 30
    assert abs(res["FID"]) < 1e-3
    assert res["precision"] == res["recall"] == res["coverage"] == 1.0 and res["density"] > 0.9
    assert res["KID_mean"] < 0.01 and res["IS_mean"] > 1


def test_a_blurred_copy_is_further_and_per_class_names_come_from_the_folders(sources, capsys):
    out = sources["root"] / "metrics.json"
    same = _evaluate(sources["folder"], sources["folder"])
    blurred = _evaluate(sources["folder"], sources["blurred"], "--per_class", "--out", str(out))
    assert blurred["FID"] > same["FID"] + 10 and blurred["KID_mean"] > same["KID_mean"] + 0.01
    assert blurred["precision"] < 1
    assert json.loads(out.read_text())["FID"] == pytest.approx(blurred["FID"])
    assert sorted(blurred["per_class"]) == ["Sneaker", "T-shirt", "Trouser"]
    assert all(v["num_real"] == v["num_fake"] == 10 for v in blurred["per_class"].values())
    assert all(v["FID"] > 0 for v in blurred["per_class"].values())


def test_class_agreement_of_right_and_of_swapped_labels(sources, capsys):
    right = _evaluate(sources["folder"], sources["npz"], "--per_class", "--metrics", "fid")
    # Each fake is its own nearest real image; three distinct garments separate well among themselves
    # (leave-one-out, 10 images a class at 64 px: .87; chance is 1/3).
    assert right["class_agreement"] == 1.0 and right["real_class_agreement"] >= 0.75
    assert all(v["class_agreement"] == 1.0 and v["confused_with"] is None for v in right["per_class"].values())
    # The same images asked for as the next class: every sample lands among its true class.
    with np.load(sources["npz"]) as data:
        x, y = data["x"], data["y"]
    swapped = sources["root"] / "swapped.npz"
    np.savez(swapped, x=x, y=(y + 1) % 3)
    names = ["Sneaker", "T-shirt", "Trouser"]  # the folder's classes, sorted
    res = _evaluate(sources["folder"], swapped, "--per_class", "--metrics", "fid")
    assert res["class_agreement"] == 0.0 and res["real_class_agreement"] == right["real_class_agreement"]
    for c, name in enumerate(names):
        per = res["per_class"][name]
        assert per["class_agreement"] == 0.0 and per["confused_share"] == 1.0
        assert per["confused_with"] == names[(c - 1) % 3]
    evaluate.main(["--real", str(sources["folder"]), "--fake", str(swapped), "--feature_net", "efficientnet_lite0",
                   "--feature_res", "64", "--device", "cpu", "--per_class", "--metrics", "prdc", "--prdc_k", "3"])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("class Trouser:"))
    assert "class_agreement 0 " in line and line.endswith("confused_with T-shirt (1)")


def test_bad_sources_are_clear_errors(sources, tmp_path):
    (tmp_path / "a.txt").write_text("x")
    np.savez(tmp_path / "float.npz", x=np.zeros((4, 8, 8, 3), np.float32))
    for path, message in ((tmp_path / "missing", "does not exist"), (tmp_path / "a.txt", "unknown source type"),
                          (tmp_path / "float.npz", "must hold 'x': uint8")):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            evaluate.load_source(str(path))
    with pytest.raises(ValueError, match="--metrics 'fid,lpips'"):
        evaluate.run(["--real", str(sources["folder"]), "--fake", str(sources["npz"]), "--metrics", "fid,lpips"])
