"""sample.py and sampling.py: outputs of a generator trained in the test (train.py, real
Fashion-MNIST, 32 px, ch 8), metrics against tiny real moments/manifold made with the offline
efficientnet_lite0 feature network, and the one-line errors on bad input."""
from __future__ import annotations

import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sampling
import utils

pytestmark = pytest.mark.xdist_group(__name__)  # one xdist worker runs the whole file: module fixtures built once
EXP = "tiny"
FEATURE_NET = "efficientnet_lite0"
METRIC_KEYS = {"IS_mean", "IS_std", "FID", "precision", "recall", "density", "coverage"}
TRAIN_FLAGS = ["--dataset", "FMNIST32", "--G_ch", "8", "--D_ch", "8", "--G_attn", "0", "--D_attn", "0",
               "--G_shared", "--shared_dim", "16", "--dim_z", "16", "--batch_size", "16",
               "--num_D_steps", "1", "--num_iters", "2", "--save_every", "2", "--test_every", "2",
               "--log_every", "1", "--sv_log_interval", "1", "--log_G_spectra", "--log_D_spectra",
               "--ema", "--num_workers", "0", "--device", "cpu", "--pbar", "none",
               "--feature_net", FEATURE_NET, "--num_inception_images", "16", "--num_pr_images", "16",
               "--prdc_k", "3"]


def make_metric_files(data_root: Path, num: int = 32) -> None:
    """Moments and manifold of `num` real FMNIST32 images, through the metrics helpers."""
    import datasets
    import feature_extraction
    import inception_utils
    net = inception_utils.load_feature_net(FEATURE_NET, "", "cpu")
    dataset = datasets.get_dataset("FMNIST32", str(data_root))
    indices = np.linspace(0, len(dataset) - 1, num).astype(np.int64)
    cfg = {"dataset": "FMNIST32", "data_root": str(data_root), "feature_net": FEATURE_NET}
    with warnings.catch_warnings():  # 32 images cannot give a full-rank covariance: expected here
        warnings.simplefilter("ignore", UserWarning)
        moments = inception_utils.compute_moments(dataset, net, 32, 0, indices=indices, progress=False)
    inception_utils.save_moments(inception_utils.moments_path(cfg), moments, net, "FMNIST32")
    features, _ = feature_extraction.extract_features(net, dataset, 32, 0, indices, progress=False)
    inception_utils.save_manifold(inception_utils.manifold_path(cfg), features, indices, 0, net, "FMNIST32")


def tiny_run(base: Path, run_py, fmnist_root: Path) -> Path:
    """Train the tiny run once per session under `base` (shared with test_plot_logs.py)."""
    base = base / "tiny_run"
    if (base / "done").exists():
        return base
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "fashion-mnist").exists():
        os.symlink(fmnist_root, data / "fashion-mnist")
    make_metric_files(data)
    proc = run_py("train.py", *TRAIN_FLAGS, "--experiment_name", EXP, "--data_root", data,
                  "--weights_root", base / "weights", "--logs_root", base / "logs",
                  "--samples_root", base / "train_samples")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (base / "done").write_text("ok")
    return base


@pytest.fixture(scope="session")
def trained(tmp_path_factory, run_py, fmnist_root) -> Path:
    torch.set_num_threads(2)
    return tiny_run(tmp_path_factory.getbasetemp(), run_py, fmnist_root)


def roots(run: Path, samples: Path) -> list:
    return ["--experiment_name", EXP, "--weights_root", run / "weights", "--samples_root", samples]


@pytest.fixture(scope="module")
def sampled(trained, run_py, tmp_path_factory) -> Path:
    """One sample.py call doing everything; data_root and feature_net come from the run's config."""
    out = tmp_path_factory.mktemp("sampled")
    proc = run_py("sample.py", *roots(trained, out), "--use_ema", "--G_eval_mode",
                  "--device", "cpu", "--batch_size", "16", "--sample_npz", "--sample_num_npz", "70",
                  "--sample_sheets", "--sample_interps", "--sample_random",
                  "--sample_inception_metrics", "--sample_trunc_curves", "0.5_0.5_1.0",
                  "--num_inception_images", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / EXP


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
        return im.size


def test_npz_shape_dtype_range(sampled):
    with np.load(sampled / "samples_ema.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["x", "y"]
        x, y = data["x"], data["y"]
    assert x.shape == (70, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (70,) and y.dtype == np.int64 and y.min() >= 0 and y.max() < 10
    assert x.min() < 100 < x.max()  # real images, not a constant
    assert len(np.unique(y)) > 3


def test_npz_holds_what_the_generator_draws(sampled, trained):
    """The npz's first batch equals G_ema(z, y) for the seeded noise of sample.py."""
    import sample
    cli = vars(sample.prepare_parser().parse_args(
        ["--experiment_name", EXP, "--weights_root", str(trained / "weights"), "--use_ema"]))
    folder, suffix = sample.checkpoint_folder(cli)
    import checkpoints
    state = checkpoints.load_state_dict_file(folder, suffix)
    stored, source = sample.read_run_config(folder, state)
    config = sample.merge_config(cli, stored, {"experiment_name", "weights_root", "use_ema"}, source)
    utils.seed_rng(0)
    G = sample.load_generator(config, folder, suffix, source, torch.device("cpu")).eval()
    noise = sampling.ZYSampler(16, G.dim_z, 10, "cpu")
    images, labels = sampling.make_sample_fn(G, noise)()
    with np.load(sampled / "samples_ema.npz", allow_pickle=False) as data:
        np.testing.assert_array_equal(data["y"][:16], labels.numpy())
        diff = np.abs(data["x"][:16].astype(int) - sampling.to_uint8_nhwc(images).astype(int))
    assert diff.max() <= 1


def test_sheets_and_interpolations(sampled):
    sheets = sorted(sampled.glob("sample_itr2_ema/samples*.png"))
    assert len(sheets) == 1  # FMNIST32: 10 classes per sheet
    width, height = _png(sheets[0])  # 10 classes x 10 samples, padding 2, class names on the left
    assert height == 10 * 34 + 2 and width > 10 * 34 + 2 + 30
    with Image.open(sheets[0]) as im:
        margin = np.asarray(im.convert("L"))[:, : width - (10 * 34 + 2)]
    assert (margin == 255).mean() > 0.7 and (margin < 128).any()  # white with dark text
    interps = sorted(p.name for p in sampled.glob("sample_itr2_ema/interp*.png"))
    assert interps == ["interpY0.png", "interpZ0.png", "interpZY0.png"]
    assert _png(sampled / "sample_itr2_ema" / "interpZY0.png") == (10 * 34 + 2, 16 * 34 + 2)
    assert _png(sampled / "random_samples_ema.png") == (4 * 34 + 2, 4 * 34 + 2)


def test_metrics_and_truncation_curves(sampled):
    metrics = json.loads((sampled / "metrics_ema.json").read_text())
    assert METRIC_KEYS <= set(metrics) and metrics["feature_net"] == FEATURE_NET
    assert metrics["itr"] == 2 and metrics["num_images"] == 16
    # how the samples were drawn and scored travels with the scores (the fixture's flags, the defaults)
    drawn = ("G_eval_mode", "accumulate_stats", "num_standing_accumulations", "batch_size", "z_var",
             "truncation", "seed", "feature_res", "num_pr_images", "prdc_k")
    assert {k: metrics[k] for k in drawn} == {
        "G_eval_mode": True, "accumulate_stats": False, "num_standing_accumulations": 0, "batch_size": 16,
        "z_var": 1.0, "truncation": 0.0, "seed": 0, "feature_res": 224, "num_pr_images": 16, "prdc_k": 3}
    assert metrics["FID"] > 0 and 0 <= metrics["precision"] <= 1 and metrics["IS_mean"] >= 1
    curves = json.loads((sampled / "trunc_curves_ema.json").read_text())
    assert [e["truncation"] for e in curves["curve"]] == [0.5, 1.0]
    for entry in curves["curve"]:
        assert METRIC_KEYS <= set(entry)
        assert entry["FID"] > 0 and 0 <= entry["coverage"] <= 1
    _png(sampled / "trunc_curves_ema.png")


def _cli_error(capsys, argv: list) -> str:
    import sample
    with pytest.raises(SystemExit) as exc:
        utils.run_cli(sample.main, [str(a) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    line = _cli_error(capsys, ["--experiment_name", "never_trained", "--weights_root", tmp_path / "w",
                               "--samples_root", tmp_path / "s", "--sample_sheets"])
    assert str(tmp_path / "w" / "never_trained") in line
    assert "train" in line and "--experiment_name" in line


def test_bad_inputs_exit_with_one_line(trained, tmp_path, capsys):
    base = roots(trained, tmp_path / "s")
    assert "nothing to do" in _cli_error(capsys, base)
    assert "--G_ch" in _cli_error(capsys, base + ["--sample_random", "--G_ch", "16"])
    assert "copyN or bestN" in _cli_error(capsys, base + ["--sample_random", "--load_weights", "x"])
    assert "copy0" in _cli_error(capsys, base + ["--sample_random", "--load_weights", "best7"])
    assert "start_step_end" in _cli_error(capsys, base + ["--sample_trunc_curves", "0.5_1"])


def test_corrupt_and_pickled_checkpoints_are_refused(trained, tmp_path, capsys):
    weights = tmp_path / "weights"
    shutil.copytree(trained / "weights", weights)
    (weights / EXP / "G.pth").write_bytes(b"not a checkpoint")
    argv = ["--experiment_name", EXP, "--weights_root", weights, "--samples_root", tmp_path / "s",
            "--sample_random", "--device", "cpu"]
    assert "G.pth" in _cli_error(capsys, argv)
    torch.save({"config": argparse_namespace()}, weights / EXP / "state_dict_copy1.pth")
    err = _cli_error(capsys, argv + ["--load_weights", "copy1"])
    assert "state_dict_copy1.pth" in err and "weights_only" in err
    state = torch.load(trained / "weights" / EXP / "G.pth", weights_only=True)
    state["linear.weight"] = state["linear.weight"][:, :3]
    torch.save(state, weights / EXP / "G.pth")
    assert "linear.weight" in _cli_error(capsys, argv)


def argparse_namespace():
    import argparse
    return argparse.Namespace(G_ch=8)  # a pickled object: weights_only loading must refuse it


# ----------------------------------------------------------------------------- helpers
def test_truncated_normal_bounds_and_spread():
    g = torch.Generator().manual_seed(0)
    z = sampling.sample_z(20000, 4, z_var=2.0, truncation=0.5, generator=g)
    # std of N(0, 1) cut at +-a: sqrt(1 - 2a phi(a) / (2 Phi(a) - 1)) = 0.2837 at a = 0.5
    assert z.abs().max() <= 1.0 + 1e-6 and abs(z.std().item() - 2 * 0.2837) < 0.01
    wide = sampling.truncated_normal((50000,), 8.0, generator=g)
    assert abs(wide.std().item() - 1.0) < 0.02 and abs(wide.mean().item()) < 0.02
    with pytest.raises(ValueError):
        sampling.truncated_normal((2,), 0.0)


def test_generator_keeps_global_rng_untouched():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    sampling.sample_z(5, 4, generator=torch.Generator().manual_seed(1), truncation=1.0)
    sampling.sample_y(5, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(3), expected)


def test_parse_trunc_curves():
    assert sampling.parse_trunc_curves("0.05_0.05_0.2") == [0.05, 0.1, 0.15, 0.2]
    assert sampling.parse_trunc_curves("1_1_1") == [1.0]
    for bad in ("0.1_0.1", "a_b_c", "0.5_0_1", "1_0.1_0.5"):
        with pytest.raises(ValueError):
            sampling.parse_trunc_curves(bad)


def test_npz_writer_streams_chunks_and_is_atomic(tmp_path):
    rng = np.random.default_rng(0)
    chunks = [(rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), np.arange(n)) for n in (3, 5, 4)]
    path = sampling.write_npz_chunks(tmp_path / "s.npz", iter(chunks), 10)
    with np.load(path, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["x"], np.concatenate([c[0] for c in chunks])[:10])
        np.testing.assert_array_equal(data["y"], np.concatenate([c[1] for c in chunks])[:10])
    assert zipfile.ZipFile(path).namelist() == ["x.npy", "y.npy"]
    with pytest.raises(ValueError, match="only 12 of 20"):
        sampling.write_npz_chunks(tmp_path / "short.npz", iter(chunks), 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # nothing partial left


def test_class_sheets_put_one_sample_per_class_in_each_batch(tmp_path):
    """BigGAN-PyTorch's sample_sheet layout: forward batch j holds one sample of every class on
    the sheet and becomes column j; with G in train mode the BN statistics span the classes."""
    import BigGAN
    config = vars(utils.prepare_parser().parse_args([]))
    config.update(resolution=32, n_classes=5, G_ch=4, dim_z=8, G_attn="0", G_shared=True, shared_dim=6)
    module = BigGAN.model_module("BigGAN")
    G = module.Generator(**BigGAN.model_kwargs(module, config, "G")).train()
    batches, outputs = [], []
    G.shared.register_forward_hook(lambda m, inp, out: batches.append(inp[0].tolist()))
    G.register_forward_hook(lambda m, inp, out: outputs.append(out.detach().clone()))
    g = torch.Generator().manual_seed(0)
    (path,) = sampling.class_sheets(G, tmp_path, 5, 5, G.dim_z, "cpu", samples_per_class=3, generator=g)
    assert batches == [[0, 1, 2, 3, 4]] * 3
    with Image.open(path) as im:
        grid = np.asarray(im.convert("RGB"))
    for cls in range(5):
        for col in range(3):
            cell = grid[2 + cls * 34:2 + cls * 34 + 32, 2 + col * 34:2 + col * 34 + 32]
            want = sampling.to_uint8_nhwc(outputs[col][cls:cls + 1])[0]
            assert np.abs(cell.astype(int) - want).max() <= 1  # PNG of a [0, 1] float grid


def test_sheet_helpers_on_a_tiny_generator(tmp_path):
    import BigGAN
    config = vars(utils.prepare_parser().parse_args([]))
    config.update(resolution=32, n_classes=7, G_ch=4, dim_z=8, G_attn="0", G_shared=True, shared_dim=6)
    module = BigGAN.model_module("BigGAN")
    G = module.Generator(**BigGAN.model_kwargs(module, config, "G")).eval()
    g = torch.Generator().manual_seed(0)
    paths = sampling.class_sheets(G, tmp_path, 7, 3, G.dim_z, "cpu", samples_per_class=2, generator=g)
    assert [p.name for p in paths] == ["samples0.png", "samples1.png", "samples2.png"]
    assert _png(paths[0]) == (2 * 34 + 2, 3 * 34 + 2) and _png(paths[2]) == (2 * 34 + 2, 34 + 2)
    paths = sampling.interp_sheets(G, tmp_path, 7, G.dim_z, "cpu", num_per_sheet=2, num_midpoints=1,
                                   generator=g, batch_size=4)
    assert [_png(p) for p in paths] == [(3 * 34 + 2, 2 * 34 + 2)] * 3
    x0, x1 = torch.zeros(1, 1, 2), torch.ones(1, 1, 2)
    assert sampling.interp(x0, x1, 2)[0, :, 0].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert sampling.to_uint8(torch.tensor([-1.5, -1.0, 0.0, 1.0])).tolist() == [0, 0, 128, 255]


def test_a_moved_run_is_sampled_into_the_roots_given_now(trained, tmp_path):
    """A run copied elsewhere writes under the --base_root given now, never into the original
    run's samples root that its config.json records."""
    import sample
    moved = tmp_path / "moved"
    shutil.copytree(trained / "weights", moved / "weights")
    original = {p: p.stat().st_mtime_ns for p in trained.rglob("*")}
    sample.main(["--base_root", str(moved), "--experiment_name", EXP, "--device", "cpu",
                 "--batch_size", "4", "--sample_random", "--sample_sheets", "--use_ema"])
    assert (moved / "samples" / EXP / "random_samples_ema.png").is_file()
    assert list((moved / "samples" / EXP).glob("sample_itr*_ema/samples0.png"))
    assert {p: p.stat().st_mtime_ns for p in trained.rglob("*")} == original


def test_the_readme_notebook_example_runs(trained, tmp_path, monkeypatch):
    """The README's three-line notebook example, run as written on a trained run."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- notebook-example -->\n```python\n", 1)[1].split("```", 1)[0]
    shutil.copytree(trained / "weights" / EXP, tmp_path / "weights" / "my_run")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    images = scope["images"]
    assert images.shape == (8, 3, 32, 32) and images.abs().max() <= 1 and images.std() > 0.01


def _pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_generate_by_seeds_and_classes_gives_the_same_image_for_the_same_seed(trained, tmp_path):
    """StyleGAN2-ADA's generate.py workflow: one PNG per seed (and class), named by both; a seed
    gives the same image whatever else is generated in the same call; --truncation applies."""
    import sample
    base = ["--experiment_name", EXP, "--weights_root", str(trained / "weights"), "--samples_root",
            str(tmp_path / "s"), "--device", "cpu", "--use_ema", "--batch_size", "3"]
    sample.main([*base, "--seeds", "0-3", "--classes", "1,2", "--outdir", str(tmp_path / "a")])
    sample.main([*base, "--seeds", "2", "--classes", "2", "--outdir", str(tmp_path / "b")])
    a, b = _pngs(tmp_path / "a"), _pngs(tmp_path / "b")
    assert sorted(a) == [f"seed{s:04d}_class{c}.png" for s in range(4) for c in (1, 2)]
    assert a["seed0002_class2.png"].shape == (32, 32, 3)
    assert np.abs(a["seed0002_class2.png"].astype(int) - b["seed0002_class2.png"]).max() <= 1
    assert not np.array_equal(a["seed0002_class1.png"], a["seed0002_class2.png"])  # the class matters
    assert not np.array_equal(a["seed0001_class1.png"], a["seed0002_class1.png"])  # so does the seed
    sample.main([*base, "--seeds", "5,7"])  # class drawn from each seed, default folder
    drawn = sorted(p.name for p in (tmp_path / "s" / EXP / "generated_ema").glob("*.png"))
    assert drawn == [f"seed{s:04d}_class{sampling.seed_noise(s, 16, 10)[1]}.png" for s in (5, 7)]
    sample.main([*base, "--seeds", "2", "--classes", "2", "--truncation", "0.5", "--outdir", str(tmp_path / "t")])
    z, _ = sampling.seed_noise(2, 16, 10, truncation=0.5)
    assert z.abs().max() <= 0.5
    import checkpoints
    cli = vars(sample.prepare_parser().parse_args(base))
    folder, suffix = sample.checkpoint_folder(cli)
    stored, source = sample.read_run_config(folder, checkpoints.load_state_dict_file(folder, suffix))
    config = sample.merge_config(cli, stored, {"experiment_name", "weights_root", "use_ema"}, source)
    G = sample.load_generator(config, folder, suffix, source, torch.device("cpu")).eval()
    want = sampling.to_uint8_nhwc(sampling.generate(G, z[None], torch.tensor([2])))[0]
    assert np.abs(_pngs(tmp_path / "t")["seed0002_class2.png"].astype(int) - want).max() <= 1
    with pytest.raises(utils.UserError, match="--classes 12: the model has 10 classes"):
        sample.main([*base, "--seeds", "0", "--classes", "12"])
    with pytest.raises(ValueError, match="--seeds '3-x'"):
        sample.main([*base, "--seeds", "3-x"])


def test_sample_help_describes_sampling_only(run_py):
    proc = run_py("sample.py", "--help")
    assert proc.returncode == 0 and proc.stdout.count("Sample from a trained generator") == 1
    assert "--seeds" in proc.stdout and "--sample_npz" in proc.stdout and "--truncation" in proc.stdout
    assert "Train a BigGAN" not in proc.stdout and "--G_lr" not in proc.stdout and "--retention_ratio" not in proc.stdout
    moments = run_py("calculate_inception_moments.py", "--help")
    assert "Mean and covariance" in moments.stdout and "--feature_net" in moments.stdout
    assert "--G_lr" not in moments.stdout and "Train a BigGAN" not in moments.stdout
    grid = run_py("experiment_grid.py", "--help")
    assert "scored against the FULL training data" in " ".join(grid.stdout.split())
