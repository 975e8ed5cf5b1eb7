"""scripts/quickstart.sh end to end on real Fashion-MNIST at a tiny budget (environment
variables): set-up, data preparation, selection report, two trainings, evaluation against the
full data, and every file of the side-by-side summary."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import h5py
import numpy as np
from PIL import Image

TINY = {"QS_IMAGES": "100", "QS_ITERS": "4", "QS_SAVE_EVERY": "2", "QS_LOG_EVERY": "1",
        "QS_EVAL_IMAGES": "24", "QS_EMBEDDING_RES": "32", "QS_CH": "8", "QS_BATCH": "8", "QS_SEEDS": "0,1",
        "QS_COMPILE": "0"}  # compiling six tiny runs would cost minutes; the default's flags: the test below
HEADER = "| Instance Selection | RR (%) | Embedding | Pretraining | IS ↑ | FID ↓ | P ↑ | R ↑ | D ↑ | C ↑ |"


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_quickstart_tiny_budget_writes_the_whole_summary(tmp_path, fmnist_root, repo_root):
    out = tmp_path / "quickstart"
    env = dict(os.environ, FMNIST_ROOT=str(fmnist_root), QS_OUT=str(out), PYTHON=sys.executable,
               OMP_NUM_THREADS="1", **TINY)
    proc = subprocess.run(["bash", "scripts/quickstart.sh", "--dim_z", "16", "--shared_dim", "8", "--prdc_k", "3",
                           "--feature_res", "32"],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "[setup]" in proc.stdout  # set-up ran first (and was quick: the venv is current)
    assert f"open {out}/summary.md" in proc.stdout.replace("//", "/")

    # Data: the first 100 images as HDF5, the moments and manifold of ALL of them.
    data = out / "data"
    with h5py.File(data / "FMNIST32.hdf5", "r") as fh:
        assert fh["imgs"].shape == (100, 3, 32, 32) and len(fh["labels"]) == 100
    with np.load(data / "FMNIST32_efficientnet_lite0_moments.npz", allow_pickle=False) as moments:
        assert int(moments["num_images"]) == 100 and moments["mu"].shape == (1280,)
    with np.load(data / "FMNIST32_efficientnet_lite0_activations.npz", allow_pickle=False) as manifold:
        assert manifold["features"].shape == (24, 1280)

    # The selection report: half of each class kept, pictures of the densest/sparsest images.
    report = out / "selection" / "gaussian_50"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["n_total"] == 100 and summary["measure"] == "gaussian"
    assert summary["embedding"] == "efficientnet_lite0" and summary["retention_ratio"] == 50
    assert all(abs(c["kept"] - c["total"] / 2) <= 0.5 for c in summary["per_class"].values())
    for name in ("score_histogram.png", "class_0_density.png"):
        assert min(_png_size(report / name)) > 100

    # Three rows (all data, the uniform control, the selection), two seeds each, same budget,
    # every run scored against the full data.
    results = json.loads((out / "results.json").read_text())
    cells = {c["cell"]: c for c in results["cells"]}
    assert list(cells) == ["none", "uniform_50", "gaussian_50"]
    for key, cell in cells.items():
        assert cell["status"] == "done" and cell["itr"] == 4 and cell["n_seeds"] == 2
        assert cell["runs"] == [f"{key}_seed0", f"{key}_seed1"] and cell["seeds"] == [0, 1]
        for name in ("IS_mean", "FID", "precision", "recall", "density", "coverage"):
            per_seed = cell["per_seed"][name]
            assert all(math.isfinite(v) for v in per_seed)
            assert cell["metrics"][name] == sum(per_seed) / 2
            assert math.isclose(cell["metrics_std"][name], abs(per_seed[0] - per_seed[1]) / math.sqrt(2))
        for seed, run in enumerate(cell["runs"]):
            metrics = json.loads((out / "samples" / run / "metrics_ema.json").read_text())  # G_ema (--use_ema)
            assert metrics["dataset"] == "FMNIST32_hdf5" and metrics["feature_net"] == "efficientnet_lite0"
            assert metrics["FID"] == cell["per_seed"]["FID"][seed] and metrics["num_images"] == 24
            assert metrics["experiment"] == run
            assert (out / "weights" / run / "G.pth").exists()
        assert min(_png_size(cell["sheet"])) > 100
    assert cells["none"]["per_seed"]["FID"][0] != cells["none"]["per_seed"]["FID"][1]  # the seeds differ
    # Seed-major: the first seed of every row trains first (so a partial summary can set them side by
    # side); the final files are not marked partial.
    starts = [line.split(": train.py")[0].split()[-1] for line in proc.stdout.splitlines()
              if ": train.py starting" in line]
    assert sorted(starts[:3]) == sorted(f"{key}_seed0" for key in cells) and len(starts) == 6
    assert "partial" not in results and "**Partial" not in (out / "summary.md").read_text()
    assert cells["none"]["labels"] == ["None", "100", "-", "-"]
    assert cells["uniform_50"]["labels"] == ["Uniform", "50", "-", "-"]
    assert cells["gaussian_50"]["labels"] == ["Gaussian", "50", "EfficientNet-Lite0", "ImageNet"]
    flags = cells["gaussian_50"]["flags"]
    assert flags[flags.index("--retention_ratio") + 1] == "50"
    assert cells["none"]["flags"][:-4] == flags[:-6]  # same shared flags, only selection differs
    assert flags[-2:] == ["--seed", "0"]
    config = json.loads((out / "weights" / "none_seed0" / "config.json").read_text())
    assert config["D_mbstd_group"] == 4 and config["shared_dim"] == 8  # the preset's recipe, the command line wins
    assert config["G_param"] == "none" and config["batch_size"] == 8 and not config["compile"]

    # The summary: mean ± std table, the noise test, the paper's directions, the pictures.
    text = (out / "summary.md").read_text()
    lines = text.splitlines()
    row = lines.index(HEADER)
    none_row, uniform_row, gauss_row = lines[row + 2], lines[row + 3], lines[row + 4]
    assert none_row.startswith("| None | 100 | - | - | ")
    assert uniform_row.startswith("| Uniform | 50 | - | - | ")
    assert gauss_row.startswith("| Gaussian | 50 | EfficientNet-Lite0 | ImageNet | ")
    fid = cells["none"]
    assert f"{fid['metrics']['FID']:.2f} ± {fid['metrics_std']['FID']:.2f}" in none_row
    assert f"{cells['gaussian_50']['metrics']['precision']:.3f} ± " in gauss_row
    assert "seeds 0, 1 (mean ± sample std over seeds)" in text
    assert "## Did the paper's directions hold?" in text
    verdicts = [line for line in lines if line.startswith("- Gaussian 50 % (") and ": **" in line]
    assert len(verdicts) == 5 and all(" SE, " in line for line in verdicts)
    assert [v.split(": ")[1] for v in verdicts] == ["precision up", "density up",
                                                    "recall down a little (at most 10 %) or unchanged",
                                                    "coverage up", "FID better"]
    assert sum(line.startswith("- Uniform 50 %: ") and ": **" in line for line in lines) == 3
    # The training sets themselves: real images of each row's set (outside the manifold, one count for
    # every row) scored against the full data like the generators' samples.
    with np.load(data / "FMNIST32_efficientnet_lite0_activations.npz", allow_pickle=False) as manifold:
        held = set(manifold["indices"].tolist())
    kept = {key: set(range(100)) if key == "none" else
            set(np.load(out / "selection" / key / "indices.npz")["indices"].tolist()) for key in cells}
    num = min([24] + [len(indices - held) for indices in kept.values()])
    sets = results["training_sets"]
    assert [s["cell"] for s in sets] == list(cells) and all(s["num_images"] == num for s in sets)
    assert [s["set_size"] for s in sets] == [len(kept[key]) for key in cells] and sets[0]["set_size"] == 100
    assert [s["labels"] for s in sets] == [cell["labels"] for cell in cells.values()]
    assert all(math.isfinite(s["metrics"][k]) for s in sets for k in ("FID", "precision", "recall", "coverage"))
    assert sets[0]["metrics"] != sets[2]["metrics"]
    assert "## The training sets themselves" in text and f"({num} per row, drawn from" in text
    gap = [line for line in lines if "its training set against all data: " in line]
    assert len(gap) == 2 and gap[1].startswith("- Gaussian 50 % (EfficientNet-Lite0, ImageNet), its training set")
    recall = sets[2]["metrics"]["recall"], cells["gaussian_50"]["metrics"]["recall"]
    assert f"R {sets[0]['metrics']['recall']:.3f} -> {recall[0]:.3f}" in gap[1]
    assert f"generators {cells['none']['metrics']['recall']:.3f} -> {recall[1]:.3f}" in gap[1]
    # Where the selection's generators lose recall: each run's G_ema samples split by kept/dropped images.
    split = subprocess.run([sys.executable, "grid_recall_split.py", "--grid_dir", str(out)], cwd=repo_root, env=env,
                           capture_output=True, text=True, timeout=600)
    assert split.returncode == 0, split.stderr[-3000:]
    found = json.loads((out / "recall_split.json").read_text())
    assert found["manifold_kept"] == len(held & kept["gaussian_50"]) and found["manifold_kept"] + found["manifold_dropped"] == 24
    assert sorted(found["runs"]) == sorted(cells["none"]["runs"] + cells["gaussian_50"]["runs"]) and found["num_images"] == 24
    for row in found["runs"].values():
        for key in ("recall", "coverage"):
            halves = found["manifold_kept"] * row[f"{key}_kept"] + found["manifold_dropped"] * row[f"{key}_dropped"]
            assert math.isclose(halves / 24, row[key])
    assert found["table"] in split.stdout and "| gaussian_50 | 2 | " in found["table"]
    # Per-class density against per-class quality (the paper's Figure 2), all-data and selected runs: the smallest of
    # the 100 images' classes has 4, so two draws of 2 per class and k = 1.
    density = subprocess.run([sys.executable, "grid_class_density.py", "--grid_dir", str(out), "--k", "1",
                              "--cells", "none,gaussian_50"],
                             cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert density.returncode == 0, density.stderr[-3000:]
    found = json.loads((out / "class_density.json").read_text())
    assert found["per_class"] == 2 and found["k"] == 1 and found["cells"] == ["none", "gaussian_50"]
    assert found["runs"] == {key: cells[key]["runs"] for key in found["cells"]}
    assert [row["class"] for row in found["classes"]] == list(range(10))
    for row in found["classes"]:
        for key in found["cells"]:
            runs = row["cells"][key]
            assert len(runs["FID"]) == 2 and runs["FID"][0] != runs["FID"][1]
            assert runs["FID_excess"] == [f - row["real"]["FID"] for f in runs["FID"]]
            assert all(0 <= v <= 1 for v in runs["recall"])
        assert row["density"]["nn_dist"] < 0
    for measure in ("gaussian", "nn_dist"):
        assert -1 <= found["floor_correlations"][measure]["rho"] <= 1
        assert all(-1 <= found["correlations"][key][measure]["FID"]["rho"] <= 1 for key in found["cells"])
    # PPCA of two points is degenerate (every class scores 0): a constant side has no rank correlation.
    assert all(row["density"]["ppca"] == 0 for row in found["classes"])
    assert math.isnan(found["correlations"]["none"]["ppca"]["FID"]["rho"])
    change = found["changes"]["gaussian_50"]
    assert list(found["changes"]) == ["gaussian_50"] and len(change["classes"]) == 10
    for row, mine in zip(found["classes"], change["classes"]):
        before, after = np.mean(row["cells"]["none"]["FID"]), np.mean(row["cells"]["gaussian_50"]["FID"])
        assert math.isclose(mine["FID"]["change"], after / before - 1) and 0 <= mine["FID"]["p"] <= 1
    assert found["table"] in density.stdout and "**gaussian_50 against none**" in found["table"]
    assert min(_png_size(out / "class_density.png")) > 100
    for picture in ("samples.png", "curves/losses.png", "selection/gaussian_50/score_histogram.png"):
        assert f"]({picture})" in text
    sheets_w, sheets_h = _png_size(out / "samples.png")
    assert sheets_w > sheets_h  # three sheets side by side
    summary_w, summary_h = _png_size(out / "summary.png")
    assert summary_h > sheets_h and summary_w > 400
    assert min(_png_size(out / "curves" / "losses.png")) > 100


def test_quickstart_default_command_is_the_compiled_width8_preset(tmp_path, repo_root):
    """With no QS_* variables the grid gets the width-8 batch-32 preset, compiled, three seeds, three
    runs at a time and the 3000 images; QS_COMPILE=0 trains eager. (PYTHON is a stand-in that records its arguments.)"""
    record = tmp_path / "argv.json"
    stand_in = tmp_path / "python"
    stand_in.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    stand_in.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QS_")}
    env.update(PYTHON=str(stand_in), QS_SKIP_SETUP="1", QS_OUT=str(tmp_path / "out"))
    for compile_flag in ("", "0"):
        run_env = dict(env, QS_COMPILE=compile_flag) if compile_flag else env
        proc = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=repo_root, env=run_env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    default, eager = [json.loads(line) for line in record.read_text().splitlines()]
    assert default[0] == "experiment_grid.py" and default[default.index("--preset") + 1] == "fmnist32_cpu_mbstd_ch8_bs32_GnoSN"
    assert default[default.index("--seeds") + 1] == "0,1,2" and default[default.index("--max_images") + 1] == "3000"
    assert "--compile" in default and "--num_iters" not in default  # the preset's 2400 iterations
    assert default[default.index("--jobs") + 1] == "3"  # nine runs on 2 cores: three rounds, not five
    assert eager == [arg for arg in default if arg != "--compile"]
