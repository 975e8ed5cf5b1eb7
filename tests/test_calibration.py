"""bench/bench_calibration.py: the degradations of real images that calibrate the metrics, and a tiny
real run on Fashion-MNIST."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_calibration as bc  # noqa: E402

TINY_EVAL = ("--num_inception_images 24 --num_pr_images 24 --prdc_k 3 --feature_res 32 --embedding_res 32")


def test_conditions_parse_and_bad_ones_say_what_to_write():
    assert bc.parse_condition("real") == ("real", None, 0, None)
    assert bc.parse_condition(" blur:1.5 ") == ("blur:1.5", None, 0, ("blur", 1.5))
    assert bc.parse_condition("gaussian:50") == ("gaussian:50", ("gaussian", 50.0), 0, None)
    assert bc.parse_condition("distinct:30") == ("distinct:30", None, 30, None)
    assert bc.parse_condition("noise:0.02+distinct:3+gaussian:50") == (
        "noise:0.02+distinct:3+gaussian:50", ("gaussian", 50.0), 3, ("noise", 0.02))
    for bad in ("real:1", "blur", "blur:x", "blur:-1", "sharpen:2", "classes:2.5", "distinct:0",
                "blur:1+noise:0.1", "classes:5+gaussian:50", "distinct:3+distinct:4", "real+blur:1"):
        with pytest.raises(cli.UserError, match="condition"):
            bc.parse_condition(bad)


def test_blur_keeps_the_mean_and_removes_detail_and_noise_is_seeded_and_clamped():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1
    assert torch.equal(bc.blur(0)(x), x)
    blurred = bc.blur(1.0)(x)
    assert blurred.shape == x.shape
    assert blurred.mean().item() == pytest.approx(x.mean().item(), abs=0.02)  # reflected edges: mean kept
    assert blurred.std() < 0.5 * x.std()  # white noise loses most of its variance under a 1-pixel blur
    assert bc.blur(0.5)(x).std() > blurred.std()
    first, again = bc.noise(0.1, seed=3), bc.noise(0.1, seed=3)
    a, b = first(x), again(x)
    assert torch.equal(a, b)  # the same seed, the same noise
    assert not torch.equal(first(x), a)  # each batch draws new noise
    assert a.min() >= -1 and a.max() <= 1
    inner = x.abs() < 0.5  # away from the clamp the added noise has the asked std
    assert (a - x)[inner].std().item() == pytest.approx(0.1, rel=0.1)


def test_repeated_per_class_holds_n_distinct_images_of_every_class_in_equal_shares():
    labels = np.repeat(np.arange(4), 10)  # 4 classes of 10 images
    free = np.array([i for i in range(40) if i % 10 != 0])  # the first of each class is in the manifold
    out = bc.repeated_per_class(free, labels, distinct=3, count=26, seed=5)
    assert len(out) == 26 and set(out) <= set(free)
    for c in range(4):
        mine = out[labels[out] == c]
        assert len(np.unique(mine)) == 3 and len(mine) in (6, 7)  # 26 split 7/7/6/6
        assert np.bincount(mine).max() - np.bincount(mine)[np.unique(mine)].min() <= 1  # repeated in turn
    assert np.array_equal(out, bc.repeated_per_class(free, labels, 3, 26, seed=5))
    assert not np.array_equal(out, bc.repeated_per_class(free, labels, 3, 26, seed=6))
    with pytest.raises(cli.UserError, match="distinct:10: class 0 has only 9 images"):
        bc.repeated_per_class(free, labels, distinct=10, count=40, seed=0)


def test_a_tiny_calibration_on_real_fashion_mnist(tmp_path, fmnist_root, run_py):
    """Every condition scores the same number of images; blur and repeated images read worse than the
    real images on the metrics they should; each draw is a line and each condition a table row, with
    a grid's generator rows after them; --replot rewrites the table from the JSON lines alone."""
    conditions = "real,blur:1.5,classes:5,distinct:1,uniform:50,uniform:50+blur:1.5,uniform:50+distinct:1"
    metrics = {"FID": 30.0, "IS_mean": 2.5, "precision": 0.8, "recall": 0.4, "density": 0.7, "coverage": 0.6}
    grid = {"cells": [{"labels": ["None", "100", "-", "-"], "n_seeds": 3, "metrics": metrics,
                       "metrics_std": {k: 0.1 for k in metrics}},
                      {"labels": ["Gaussian", "50", "EfficientNet-Lite0", "ImageNet"], "n_seeds": 3,
                       "metrics": {**metrics, "precision": 0.9}, "metrics_std": {k: 0.1 for k in metrics}}]}
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    proc = run_py("bench/bench_calibration.py", "--max_images", "100", "--out", "cal", "--extra", TINY_EVAL,
                  "--conditions", conditions, "--draws", "2", "--threads", "1", "--generators", "grid.json",
                  env={"FMNIST_ROOT": str(fmnist_root)}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    draws = [r for r in lines if r["name"] == "calibration"]
    summary = {r["condition"]: r for r in lines if r["name"] == "calibration_summary"}
    assert [r["condition"] for r in draws] == [c for c in conditions.split(",") for _ in range(2)]
    assert {r["num_images"] for r in lines} == {24} and list(summary) == conditions.split(",")
    real = summary["real"]
    assert draws[0]["FID"] != draws[1]["FID"]  # two draws, two sets of images
    assert real["FID_mean"] == pytest.approx(np.mean([d["FID"] for d in draws[:2]]))
    assert summary["blur:1.5"]["FID_mean"] > real["FID_mean"] + 10
    assert summary["blur:1.5"]["precision_mean"] < real["precision_mean"]
    assert summary["distinct:1"]["recall_mean"] < real["recall_mean"]  # one image a class, repeated
    assert summary["distinct:1"]["coverage_mean"] < real["coverage_mean"]
    assert summary["uniform:50+blur:1.5"]["FID_mean"] > summary["uniform:50"]["FID_mean"] + 10
    assert summary["uniform:50+distinct:1"]["coverage_mean"] < summary["uniform:50"]["coverage_mean"]
    table = (tmp_path / "cal" / "calibration.md").read_text()
    assert "24 real images a condition against all 100 training images" in table
    assert all(f"| {c} |" in table for c in conditions.split(","))
    assert "| G: None | 30.00 ± 0.10 | 2.50 ± 0.10 | 0.800 ± 0.100 |" in table
    assert "| G: Gaussian 50 % | 30.00 ± 0.10 | 2.50 ± 0.10 | 0.900 ± 0.100 |" in table
    assert (tmp_path / "cal" / "calibration.png").stat().st_size > 10_000
    (tmp_path / "out.jsonl").write_text(proc.stdout)
    again = run_py("bench/bench_calibration.py", "--replot", "out.jsonl", "--generators", "grid.json",
                   "--md", "again.md", "--png", "again.png", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "again.md").read_text() == table
    fixed = run_py("bench/bench_calibration.py", "--max_images", "100", "--out", "cal", "--extra", TINY_EVAL,
                   "--conditions", "real", "--draws", "1", "--threads", "1", "--num_images", "20",
                   env={"FMNIST_ROOT": str(fmnist_root)}, cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert {json.loads(line)["num_images"] for line in fixed.stdout.splitlines() if line.startswith("{")} == {20}
    too_many = run_py("bench/bench_calibration.py", "--max_images", "100", "--out", "cal", "--extra", TINY_EVAL,
                      "--conditions", "real,uniform:50", "--num_images", "30", cwd=tmp_path,
                      env={"FMNIST_ROOT": str(fmnist_root)})
    assert too_many.returncode == 2 and "--num_images 30: some condition has only 24 images" in too_many.stderr


def test_a_set_with_repeats_draws_only_that_sets_images_outside_the_manifold(tmp_path, monkeypatch):
    """classes:2+distinct:2 repeats two images of each of two classes, never one the manifold holds;
    every image is the count's limit for a set drawn apart."""
    import inception_utils

    class Images(list):
        labels = np.repeat(np.arange(4), 10)  # 4 classes of 10 images

    images = Images((torch.full((1, 2, 2), float(i)), int(i // 10)) for i in range(40))
    monkeypatch.setattr(bc.datasets, "get_dataset_from_config", lambda config, augment: images)
    cfg = {"dataset": "FMNIST32_hdf5", "data_root": str(tmp_path), "feature_net": "efficientnet_lite0",
           "num_pr_images": 8}
    path = inception_utils.manifold_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    held = np.arange(0, 40, 5)  # two images of every class
    np.savez(path, indices=held)
    cal = bc.Calibration(cfg)
    condition = bc.parse_condition("classes:2+distinct:2")
    out = cal.indices(condition, seed=4, count=12)
    classes = set(Images.labels[out])
    assert len(out) == 12 and len(classes) == 2 and not set(out) & set(held)
    assert classes == set(Images.labels[cal.pool(condition, seed=4)])  # the draw's own two classes
    assert all(len(np.unique(out[Images.labels[out] == c])) == 2 for c in classes)
    assert cal.free_count(bc.parse_condition("classes:2"), seed=4) == 16 and cal.free_count(condition, 4) == 40
