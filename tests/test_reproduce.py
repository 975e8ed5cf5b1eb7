"""scripts/reproduce_table1.sh and reproduce_figure3.sh at a tiny budget on real Fashion-MNIST:
the table in the paper's column order, the plots, an interrupted cell resuming from its
checkpoint, and a second invocation that trains nothing; plus experiment_grid's cell names,
signatures and refusals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import experiment_grid as eg
from grid_report import aggregate

pytestmark = pytest.mark.xdist_group(__name__)  # one xdist worker runs the whole file: module fixtures built once
HEADER = "| Instance Selection | RR (%) | Embedding | Pretraining | IS ↑ | FID ↓ | P ↑ | R ↑ | D ↑ | C ↑ |"
TINY_FLAGS = ["--dim_z", "16", "--shared_dim", "8", "--prdc_k", "3", "--feature_res", "32", "--save_every", "2",
              "--log_every", "1"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One tiny FMNIST32 data folder (100 images) shared by the tests; the first run prepares it."""
    return tmp_path_factory.mktemp("repro_data") / "fmnist32_n100"


def _env(fmnist_root, data_root, out, **extra) -> dict:
    return dict(os.environ, FMNIST_ROOT=str(fmnist_root), PYTHON=sys.executable, OMP_NUM_THREADS="1",
                OUT_DIR=str(out), DATA_ROOT=str(data_root), MAX_IMAGES="100", EVAL_IMAGES="24", CH="8",
                BATCH="8", EMBEDDING_RES="32", JOBS="2", SEEDS="0", COMPILE="0", **extra)


def _run(script: str, env: dict, repo_root) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", script, *TINY_FLAGS], cwd=repo_root, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _table_rows(summary_md: str) -> list[str]:
    """The rows of the results table (up to the first blank line after its header)."""
    lines = summary_md.splitlines()
    start = lines.index(HEADER) + 2
    end = lines.index("", start)
    return lines[start:end]


def _launches(out) -> dict:
    return {c["cell"]: c["train_launches"] for c in json.loads((out / "results.json").read_text())["cells"]}


def test_table1_resumes_an_interrupted_cell_and_then_trains_nothing(tmp_path, fmnist_root, data_root, repo_root):
    out = tmp_path / "table1"
    env = _env(fmnist_root, data_root, out, CELLS="none,uniform_50", ITERS="12")
    # 1. Killed (the whole process group, as a crash would) right after the first checkpoint.
    proc = subprocess.Popen(["bash", "scripts/reproduce_table1.sh", *TINY_FLAGS], cwd=repo_root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    first = out / "weights" / "none" / "state_dict.pth"
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the first cell never wrote a checkpoint"
    assert json.loads((out / "cells" / "none.json").read_text())["status"] == "training"

    # 2. The same command resumes the interrupted cell and finishes the grid.
    second = _run("scripts/reproduce_table1.sh", env, repo_root)
    assert "none: train.py resuming from iteration" in second.stdout
    assert second.stdout.count("training sets: scoring") == 2  # each cell's real training set, once
    assert "Resuming from" in (out / "cells" / "none.train.log").read_text()
    results = json.loads((out / "results.json").read_text())
    assert [c["cell"] for c in results["cells"]] == ["none", "uniform_50"]
    assert all(c["status"] == "done" and c["itr"] == 12 for c in results["cells"])
    rows = _table_rows((out / "summary.md").read_text())
    assert len(rows) == 2
    assert rows[0].startswith("| None | 100 | - | - | ") and rows[1].startswith("| Uniform | 50 | - | - | ")
    for row, cell in zip(rows, results["cells"]):
        values = [v.strip() for v in row.strip("|").split("|")][4:]
        m = cell["metrics"]
        assert values == [f"{m['IS_mean']:.2f}", f"{m['FID']:.2f}"] + [
            f"{m[k]:.3f}" for k in ("precision", "recall", "density", "coverage")]
    with Image.open(out / "samples.png") as sheets:
        assert sheets.width > sheets.height > 100
    assert (out / "curves" / "losses.png").exists()
    uniform = json.loads((out / "selection" / "uniform_50" / "summary.json").read_text())
    assert uniform["measure"] == "uniform" and uniform["n_total"] == 100
    assert all(c["kept"] == (c["total"] + 1) // 2 for c in uniform["per_class"].values())  # halves round up

    # 3. A third invocation reads every cell from its results: no train.py, no checkpoint touched.
    before = {p: p.stat().st_mtime_ns for p in (out / "weights").rglob("*.pth")}
    launches = _launches(out)
    third = _run("scripts/reproduce_table1.sh", env, repo_root)
    assert "train.py" not in third.stdout and third.stdout.count("read from") == 2
    assert "training sets: scoring" not in third.stdout  # read from cells/<cell>.training_set.json
    assert _launches(out) == launches
    assert {p: p.stat().st_mtime_ns for p in (out / "weights").rglob("*.pth")} == before

    # 4. A longer budget continues every cell from its checkpoint; a shorter one or another flag is refused.
    longer = _run("scripts/reproduce_table1.sh", {**env, "ITERS": "14"}, repo_root)
    assert longer.stdout.count("train.py resuming from iteration 12 (14 iterations") == 2
    results = json.loads((out / "results.json").read_text())
    assert all(c["status"] == "done" and c["itr"] == 14 for c in results["cells"])
    assert _launches(out) == {cell: n + 1 for cell, n in launches.items()}
    for changed, message in ((["--G_lr", "5e-4"], "none.json was trained with other flags than now"),
                             ([], "already trained to iteration 14, past --num_iters 12")):
        proc = subprocess.run(["bash", "scripts/reproduce_table1.sh", *TINY_FLAGS, *changed], cwd=repo_root,
                              env={**env, "ITERS": "14" if changed else "12"}, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]


def test_figure3_sweep_plot_and_a_second_run_trains_nothing(tmp_path, fmnist_root, data_root, repo_root):
    out = tmp_path / "figure3"
    env = _env(fmnist_root, data_root, out, RATIOS="50,100", ITERS="4")
    first = _run("scripts/reproduce_figure3.sh", env, repo_root)
    assert first.stdout.count("train.py starting") == 2
    results = json.loads((out / "results.json").read_text())
    assert results["grid"] == "figure3" and [c["cell"] for c in results["cells"]] == ["gaussian_50", "none"]
    rows = _table_rows((out / "summary.md").read_text())
    assert rows[0].startswith("| Gaussian | 50 | EfficientNet-Lite0 | ImageNet | ")
    assert rows[1].startswith("| None | 100 | - | - | ")
    with Image.open(out / "ratio_sweep.png") as sweep:
        assert sweep.format == "PNG" and sweep.width > 500 and sweep.height > 300
    assert "](ratio_sweep.png)" in (out / "summary.md").read_text()

    second = _run("scripts/reproduce_figure3.sh", env, repo_root)
    assert "train.py" not in second.stdout and second.stdout.count("read from") == 2
    assert _launches(out) == {"gaussian_50": 1, "none": 1}


def test_default_commands_table1_on_the_quickstart_recipe_compiled_figure3_on_width12_eager(tmp_path, repo_root):
    """With no variables Table 1 runs the quickstart's width-8 batch-32 preset compiled, three seeds, two
    runs at a time, on 5000 images; COMPILE=0 trains it eager. Figure 3 keeps the width-12 recipe eager it
    was measured with, unless PRESET is given. (PYTHON is a stand-in that records its arguments.)"""
    record = tmp_path / "argv.json"
    stand_in = tmp_path / "python"
    stand_in.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    stand_in.chmod(0o755)
    names = ("PRESET", "COMPILE", "SEEDS", "JOBS", "MAX_IMAGES", "ITERS", "CELLS", "RATIOS", "GRID")
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(PYTHON=str(stand_in), OUT_DIR=str(tmp_path / "out"), DATA_ROOT=str(tmp_path / "data"))
    for script, extra in (("reproduce_table1.sh", {}), ("reproduce_table1.sh", {"COMPILE": "0"}),
                          ("reproduce_figure3.sh", {}),
                          ("reproduce_figure3.sh", {"PRESET": "fmnist32_cpu_mbstd_ch8_bs32_GnoSN"})):
        proc = subprocess.run(["bash", f"scripts/{script}"], cwd=repo_root, env={**env, **extra},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    table1, eager, figure3, figure3_width8 = [json.loads(line) for line in record.read_text().splitlines()]

    def value(argv: list, flag: str) -> str:
        return argv[argv.index(flag) + 1]
    assert value(table1, "--preset") == "fmnist32_cpu_mbstd_ch8_bs32_GnoSN" and "--compile" in table1
    assert value(table1, "--seeds") == "0,1,2" and value(table1, "--jobs") == "2"
    assert value(table1, "--max_images") == "5000" and "--num_iters" not in table1  # the preset's 2400
    assert eager == [arg for arg in table1 if arg != "--compile"]
    assert value(figure3, "--grid") == "figure3" and value(figure3, "--preset") == "fmnist32_cpu_mbstd_ch12"
    assert "--compile" not in figure3
    assert value(figure3_width8, "--preset") == "fmnist32_cpu_mbstd_ch8_bs32_GnoSN" and "--compile" in figure3_width8


# ----------------------------------------------------------------------------- the module
def test_cell_names_and_table1_rows():
    cells = eg.grid_cells("table1", "", "")
    assert [c.key for c in cells] == ["none", "uniform_50", "gaussian_50", "ppca_50", "nn_dist_50",
                                      "gaussian_50_random_inceptionv3"]
    config = {"embedding": "efficientnet_lite0", "embedding_res": 64}
    assert [c.labels(config) for c in cells] == [
        ("None", "100", "-", "-"), ("Uniform", "50", "-", "-"),
        ("Gaussian", "50", "EfficientNet-Lite0", "ImageNet"), ("PPCA", "50", "EfficientNet-Lite0", "ImageNet"),
        ("KNN Dist", "50", "EfficientNet-Lite0", "ImageNet"), ("Gaussian", "50", "Inceptionv3", "Random init")]
    # Inception-v3 cannot see 64 px images: the random-init row embeds at its minimum, 75 px.
    assert cells[-1].flags(config) == ["--retention_ratio", "50", "--density_measure", "gaussian",
                                       "--embedding", "random_inceptionv3", "--embedding_res", "75"]
    assert [c.key for c in eg.grid_cells("figure3", "", "10,100")] == ["gaussian_10", "none"]
    for bad in ("gaussian", "gaussian_100", "magic_50", "gaussian_50_alexnet"):
        with pytest.raises(ValueError, match="--cells"):
            eg.parse_cell(bad)


def test_signature_ignores_selection_flags_a_cell_does_not_use():
    parse = lambda *a: vars(eg.utils.prepare_parser().parse_args(["--num_iters", "5", *a]))  # noqa: E731
    none, gauss = eg.parse_cell("none"), eg.parse_cell("gaussian_50")
    grid = eg.Grid.__new__(eg.Grid)
    a, b = parse("--embedding", "resnet50"), parse("--embedding", "swav")
    assert grid.signatures(none, a) == grid.signatures(none, b)
    assert grid.signatures(gauss, a)[0] != grid.signatures(gauss, b)[0]
    # Evaluation settings change only the evaluation signature: re-scored, not retrained.
    c = parse("--embedding", "resnet50", "--num_inception_images", "10")
    assert grid.signatures(gauss, a)[0] == grid.signatures(gauss, c)[0]
    assert grid.signatures(gauss, a)[1] != grid.signatures(gauss, c)[1]
    # Where the results are written is not what they are: a moved or copied output folder stays valid.
    moved = parse("--embedding", "resnet50", "--weights_root", "/elsewhere/weights", "--base_root", "/b",
                  "--logs_root", "/elsewhere/logs", "--experiment_name", "copy", "--log_every", "7")
    assert grid.signatures(gauss, a) == grid.signatures(gauss, moved)


def test_grid_refuses_flags_it_sets_per_cell_and_a_missing_budget(repo_root, run_py, tmp_path):
    proc = run_py("experiment_grid.py", "--output_dir", tmp_path, "--retention_ratio", "50", "--num_iters", "3")
    assert proc.returncode == 2 and "--retention_ratio is set per cell" in proc.stderr
    proc = run_py("experiment_grid.py", "--output_dir", tmp_path, "--dataset", "FMNIST32_hdf5")
    assert proc.returncode == 2 and "--num_iters is required" in proc.stderr
    proc = run_py("experiment_grid.py", "--output_dir", tmp_path, "--num_iters", "3", "--cells", "none,none")
    assert proc.returncode == 2 and "each once" in proc.stderr
    proc = run_py("experiment_grid.py", "--output_dir", tmp_path, "--num_iters", "3", "--data_root", tmp_path,
                  "--dataset", "FMNIST32_hdf5", "--feature_net", "efficientnet_lite0")
    assert proc.returncode == 2 and "is missing: prepare the data first" in proc.stderr
    assert not (tmp_path / "weights").exists()


def _record(cell: str, seed: int, **metrics) -> dict:
    return {"cell": cell, "run": f"{cell}_seed{seed}", "seed": seed, "labels": ["None", "100", "-", "-"],
            "status": "done", "flags": [], "itr": 10, "sheet": "", "train_seconds": 2.0, "eval_seconds": 1.0,
            "train_launches": 1, "metrics": metrics}


def test_seeds_aggregate_to_mean_and_sample_std_and_the_noise_test():
    import grid_report
    assert eg.parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("", "0,0", "a"):
        with pytest.raises(ValueError, match="--seeds"):
            eg.parse_seeds(bad)
    runs = [_record("none", s, precision=p, recall=0.3) for s, p in enumerate((0.5, 0.6, 0.7))]
    base = aggregate(runs)
    assert base["n_seeds"] == 3 and base["runs"] == ["none_seed0", "none_seed1", "none_seed2"]
    assert base["metrics"]["precision"] == pytest.approx(0.6)
    assert base["metrics_std"]["precision"] == pytest.approx(0.1)  # ddof=1
    assert base["metrics_std"]["recall"] == 0 and base["train_seconds"] == 6.0
    assert aggregate(runs[:1])["n_seeds"] == 1 and "metrics_std" not in aggregate(runs[:1])
    # Welch's t-test on the aggregates equals scipy's on the seeds' values.
    from scipy import stats
    near_values, far_values, mid_values = (0.6, 0.7, 0.8), (0.8, 0.9, 1.0), (0.7, 0.8, 0.72)
    near = aggregate([_record("gaussian_50", s, precision=p, recall=0.3) for s, p in enumerate(near_values)])
    far = aggregate([_record("gaussian_50", s, precision=p, recall=0.1) for s, p in enumerate(far_values)])
    mid = aggregate([_record("gaussian_50", s, precision=p, recall=0.3) for s, p in enumerate(mid_values)])
    for other, values in ((near, near_values), (far, far_values), (mid, mid_values)):
        test = grid_report.compare(base, other, "precision", "↑")[1]
        reference = stats.ttest_ind(values, (0.5, 0.6, 0.7), equal_var=False)
        assert (test.t, test.p) == pytest.approx((reference.statistic, reference.pvalue), rel=1e-9)
    verdict, test = grid_report.compare(base, near, "precision", "↑")
    assert verdict == "within noise" and test.t == pytest.approx(0.1 / 0.0816497, rel=1e-4)
    assert grid_report.compare(base, far, "precision", "↑")[0] == "better"  # t 3.7, df 4, p .02
    # 2.1 standard errors but p .12 (df 3.0): a change by "twice its SE", within noise by Welch.
    verdict, test = grid_report.compare(base, mid, "precision", "↑")
    assert verdict == "within noise" and test.t > 2 and 0.05 < test.p < 0.15
    assert grid_report.compare(base, far, "recall", "↑")[0] == "worse"  # 0.3 -> 0.1 with zero spread
    assert grid_report.compare(base, aggregate(runs), "recall", "↑")[0] == "within noise"  # equal, no spread
    assert grid_report.metric_text(base, "precision", "{:.3f}") == "0.600 ± 0.100"
    # One seed: the sign decides and the summary says it is not a test.
    single = {**runs[0], "n_seeds": 1}
    assert grid_report.compare(single, {**runs[1], "n_seeds": 1}, "precision", "↑") == ("better", None)
    far["labels"] = ["Gaussian", "50", "EfficientNet-Lite0", "ImageNet"]
    lines = grid_report.paper_verdict([base, far])
    assert len(lines) == 2  # density is not in these records
    assert "precision up: **held** (better, +" in lines[0]
    # Recall 0.3 -> 0.1 is worse by 67 %: more than "a little" (the paper's drop was 5-6 %).
    assert "recall down a little (at most 10 %) or unchanged: **did not hold** (worse" in lines[1]
    assert lines[1].endswith("-67%)")
    slight = aggregate([_record("gaussian_50", s, precision=p, recall=0.28) for s, p in enumerate((0.8, 0.9, 1.0))])
    slight["labels"] = far["labels"]
    assert "recall down a little (at most 10 %) or unchanged: **held** (worse" in grid_report.paper_verdict([base, slight])[1]
    # A mean 50 % lower that three seeds cannot tell from noise is not "a little" either.
    vague = aggregate([_record("gaussian_50", s, precision=0.9, recall=r) for s, r in enumerate((0.01, 0.15, 0.29))])
    vague["labels"] = far["labels"]
    assert grid_report.compare(base, vague, "recall", "↑")[0] == "within noise"
    assert "recall down a little (at most 10 %) or unchanged: **did not hold** (within noise" in \
        grid_report.paper_verdict([base, vague])[1]
    close = aggregate([_record("gaussian_50", s, precision=0.9, recall=r) for s, r in enumerate((0.2, 0.29, 0.38))])
    close["labels"] = far["labels"]
    assert "recall down a little (at most 10 %) or unchanged: **held** (within noise" in \
        grid_report.paper_verdict([base, close])[1]


def _quickstart_grid(tmp_path, *extra):
    args, train_argv = eg.build_parser().parse_known_args(["--grid", "quickstart", "--output_dir", str(tmp_path),
                                                           "--num_iters", "3", "--seeds", "0,1,2", *extra])
    return eg.Grid(args, train_argv)


def test_a_running_grid_writes_the_summary_of_every_seed_finished_in_every_cell(tmp_path, capsys):
    """The runs go seed-major, and after each finished run the launchers call report_so_far: a
    summary marked partial appears once a seed has finished in every cell (seeds 0 and 2 when 1 is
    not), is not rewritten before another seed completes, and is left to the grid at the end."""
    grid = _quickstart_grid(tmp_path)
    assert [run.name for run in grid.runs] == [f"{cell}_seed{seed}" for seed in (0, 1, 2)
                                               for cell in ("none", "uniform_50", "gaussian_50")]
    records: dict = {}
    summary, results = tmp_path / "summary.md", tmp_path / "results.json"

    def finish(*names: str) -> None:
        for name in names:
            run = grid.run_named(name)
            precision = 0.9 + 0.01 * run.seed if run.cell.key == "gaussian_50" else 0.8 - 0.01 * run.seed
            records[name] = {**_record(run.cell.key, run.seed, precision=precision, recall=0.3),
                             "labels": list(run.cell.labels(grid.config)), "sheet": str(tmp_path / "none.png")}
            grid.report_so_far(records)

    finish("none_seed0", "uniform_50_seed0", "none_seed1")
    assert not summary.exists()  # seed 0 is not finished in every cell yet
    finish("gaussian_50_seed0")
    text = summary.read_text()
    assert "**Partial: seed 0 of 0, 1, 2 finished in every cell (4 of 9 runs).**" in text
    assert "| Gaussian | 50 | Inceptionv3 | ImageNet | - | - | 0.900 | 0.300 | - | - |" in text
    assert "With one seed per cell there is no noise estimate" in text and "Welch" not in text
    assert "precision up: **held** (better, +12%) (one seed: no error bar, not a test)" in text
    written = json.loads(results.read_text())
    assert written["partial"].startswith("seed 0 of 0, 1, 2") and written["training_sets"] == []
    assert [c["runs"] for c in written["cells"]] == [["none_seed0"], ["uniform_50_seed0"], ["gaussian_50_seed0"]]
    assert (f"[grid] so far, seed 0 of 0, 1, 2 finished in every cell (4 of 9 runs) ({summary}, rewritten as more "
            f"finish):\n| Instance Selection |") in capsys.readouterr().out
    summary.unlink()
    finish("none_seed2", "uniform_50_seed2", "uniform_50_seed1")
    assert not summary.exists()  # no seed more is finished everywhere
    finish("gaussian_50_seed2")
    text = summary.read_text()
    assert "**Partial: seeds 0, 2 of 0, 1, 2 finished in every cell (8 of 9 runs).**" in text
    assert "| None | 100 | - | - | - | - | 0.790 ± 0.014 | 0.300 ± 0.000 | - | - |" in text
    assert "Welch's t-test (2 seeds per cell)" in text and "seeds 0, 2 (mean ± sample std over seeds)" in text
    assert json.loads(results.read_text())["cells"][2]["per_seed"]["precision"] == [0.9, 0.92]
    summary.unlink()
    finish("gaussian_50_seed1")
    assert not summary.exists()  # every seed done: the grid writes the final summary itself


def test_a_grid_read_back_whole_writes_no_partial_summary(tmp_path, capsys):
    """With every run's record already done, the launcher hands them back at once and the only
    summary is the final one (no 'so far' tables first)."""
    grid = _quickstart_grid(tmp_path, "--no_fid", "--no_prdc", "--no_training_sets")
    grid.record_path(grid.runs[0]).parent.mkdir(parents=True)
    for run in grid.runs:
        record = {**_record(run.cell.key, run.seed, precision=0.8 + 0.01 * run.seed, recall=0.3),
                  "labels": list(run.cell.labels(grid.config)), "sheet": str(tmp_path / "none.png")}
        grid.record_path(run).write_text(json.dumps(record))

    class ReadBack:
        def run_all(self, grid, runs):
            records = {}
            for run in runs:
                records[run.name] = grid.read_record(run)
                grid.report_so_far(records)
            return records, []

    cells = grid.run(ReadBack())
    assert [c["n_seeds"] for c in cells] == [3, 3, 3]
    assert "so far" not in capsys.readouterr().out
    assert "Partial" not in (tmp_path / "summary.md").read_text()
    assert "partial" not in json.loads((tmp_path / "results.json").read_text())


def test_ratio_sweep_draws_the_seeds_std_as_error_bars(tmp_path):
    """With three seeds per ratio the sweep's points carry error bars of the seeds' std: the same means
    with a wider seed spread draw another picture, and one seed per ratio draws plain points."""
    import grid_report

    def cells(spread: float, seeds: int = 3) -> list[dict]:
        out = []
        for ratio, mean in ((50, 0.8), (100, 0.6)):
            runs = [_record("gaussian_50" if ratio == 50 else "none", s, precision=mean + spread * (s - 1),
                            recall=0.3) for s in range(seeds)]
            out.append({**aggregate(runs), "labels": ["Gaussian" if ratio == 50 else "None", str(ratio), "-", "-"]})
        return out

    pixels = {}
    for name, records in (("narrow", cells(0.01)), ("wide", cells(0.1)), ("one", cells(0.0, 1)), ("flat", cells(0.0))):
        with Image.open(grid_report.plot_sweep(records, tmp_path / f"{name}.png")) as im:
            pixels[name] = np.asarray(im.convert("L"))
    assert [r["metrics"]["precision"] for r in cells(0.1)] == pytest.approx([0.8, 0.6])  # same means
    assert (pixels["narrow"] != pixels["wide"]).any()
    # Zero spread: the bars have no length, so only the title's "mean ± std over seeds" differs from one seed.
    assert (pixels["flat"] != pixels["one"])[:40].any() and not (pixels["flat"] != pixels["one"])[60:].any()


@pytest.mark.parametrize("content, problem", [
    ("{not json", "is not valid JSON"),
    ("[1, 2, 3]", "is not a grid record"),
    ('{"metrics": {"FID": "low"}}', "is not a grid record"),
    ('{"metrics": [1]}', "is not a grid record"),
])
def test_a_damaged_grid_record_is_refused_naming_it(tmp_path, content, problem):
    args, train_argv = eg.build_parser().parse_known_args(["--output_dir", str(tmp_path), "--num_iters", "3"])
    grid = eg.Grid(args, train_argv)
    run = grid.runs[0]
    grid.record_path(run).parent.mkdir(parents=True)
    grid.record_path(run).write_text(content)
    with pytest.raises(ValueError, match=rf"{run.name}\.json {problem}.*delete it"):
        grid.read_record(run)


def test_only_a_longer_budget_without_a_decay_continues_a_record(tmp_path):
    """A record trained to 3 iterations continues at --num_iters 5; with a learning-rate decay (which
    ends at --num_iters, so iterations 1-3 would have been trained otherwise) or another training
    flag it is refused while its checkpoints exist, and forgotten once they are deleted."""
    def grid_of(*argv):
        args, train_argv = eg.build_parser().parse_known_args(["--output_dir", str(tmp_path), *argv])
        grid = eg.Grid(args, train_argv)
        return grid, grid.runs[0]

    def continues(*argv):
        grid, run = grid_of(*argv)
        config = grid.run_config(run)
        return grid.continues_record(run, record, config, grid.signatures(run.cell, config)[0], weights)

    for decay in ([], ["--lr_decay_iters", "2"]):
        grid, run = grid_of("--num_iters", "3", *decay)
        config = grid.run_config(run)
        record = {"train_signature": grid.signatures(run.cell, config)[0], "flags": grid.run_flags(run)}
        weights = tmp_path / "weights" / run.name
        weights.mkdir(parents=True, exist_ok=True)
        (weights / "state_dict.pth").write_bytes(b"")
        assert continues("--num_iters", "3", *decay) is True
        refused = [["--num_iters", "3", "--G_lr", "5e-4", *decay]]
        if decay:
            refused.append(["--num_iters", "5", *decay])
        else:
            assert continues("--num_iters", "5") is True
        for argv in refused:
            with pytest.raises(ValueError, match="was trained with other flags than now"):
                continues(*argv)
        (weights / "state_dict.pth").unlink()
        assert continues("--num_iters", "3", "--G_lr", "5e-4", *decay) is False


def test_a_new_flag_with_a_default_keeps_every_signature(monkeypatch):
    """Existing results stay valid when a flag with a default is added to config.py: the
    signatures hash only values that differ from the defaults (and the grid's own)."""
    import config
    argv = ["--num_iters", "5", "--G_ch", "16", "--embedding", "resnet50"]
    cell = eg.parse_cell("gaussian_50")
    grid = eg.Grid.__new__(eg.Grid)

    def sigs():
        cfg = vars(eg.utils.prepare_parser().parse_args(argv))
        cfg.update(retention_ratio=50.0, density_measure="gaussian")
        return grid.signatures(cell, cfg)
    before = sigs()
    real_add = config._add_mode_flags

    def with_a_new_flag(p):
        real_add(p)
        p.add_argument("--brand_new_option", type=float, default=0.25)
    monkeypatch.setattr(config, "_add_mode_flags", with_a_new_flag)
    assert "brand_new_option" in vars(eg.utils.prepare_parser().parse_args([]))
    assert sigs() == before
    argv.append("--brand_new_option=0.5")  # used with another value: a different experiment
    assert sigs()[0] != before[0]


def test_the_grid_says_when_bf16_will_run_as_fp32_on_this_cpu(monkeypatch, capsys):
    """The CPU recipe asks for bf16; a CPU without bf16 units trains it in fp32, many times slower
    than the README's timings: the grid says so before it starts, and only then."""
    config = vars(eg.utils.prepare_parser().parse_args(["--amp", "bf16", "--device", "cpu"]))
    for native, expect in ((False, True), (True, False)):
        monkeypatch.setattr(eg.BigGAN, "cpu_runs_bf16_natively", lambda native=native: native)
        eg.warn_if_bf16_is_emulated(config)
        assert ("neither AVX512-BF16 nor AMX" in capsys.readouterr().out) is expect
    monkeypatch.setattr(eg.BigGAN, "cpu_runs_bf16_natively", lambda: False)
    eg.warn_if_bf16_is_emulated({**config, "amp": "none"})
    assert capsys.readouterr().out == ""


def test_prepare_fmnist_keeps_every_file_under_a_relative_data_root(tmp_path, fmnist_root, monkeypatch):
    """--prepare with a relative --data_root, run outside the repository: the HDF5, moments and
    manifold all land under the caller's folder (the prepare script changes directory to the
    repository, where a relative path would point elsewhere)."""
    import grid_processes
    import utils
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FMNIST_ROOT", str(fmnist_root))
    config = vars(utils.prepare_parser().parse_args([
        "--dataset", "FMNIST32_hdf5", "--data_root", "data", "--feature_net", "efficientnet_lite0",
        "--feature_res", "32", "--num_pr_images", "24", "--device", "cpu"]))
    grid_processes.prepare_fmnist(config, 100, 1)
    assert (tmp_path / "data" / "FMNIST32.hdf5").exists()
    assert [p.exists() for p in grid_processes.metric_files(config)] == [True, True]


def test_grid_progress_says_the_time_left_at_this_launchs_pace(tmp_path, monkeypatch):
    """The grid's 30-second progress line for a training run: its iteration, then (from two of this
    launch's log lines on) the minutes left at the pace between them, not counting the start-up before
    the first line nor the lines before the checkpoint a resumed run started from."""
    import grid_processes
    import training_utils
    clock = iter([1000.0, 1100.0, 5000.0, 5060.0, 5120.0])  # two lines, then a resume at 100
    monkeypatch.setattr(training_utils.time, "time", lambda: next(clock))
    log = training_utils.TrainLog(tmp_path / "run", reinitialize=True)
    assert grid_processes.training_progress(tmp_path, "run", 400) == "iteration 0/400"
    for itr in (50, 100):
        log.report("G_loss", 1.0)
        log.write(itr)
    # 50 iterations in 100 s: 300 left take 600 s
    assert grid_processes.training_progress(tmp_path, "run", 400) == "iteration 100/400, ~10 min left"
    for itr in (150, 200, 250):  # resumed from iteration 100: 50 iterations a minute now
        log.report("G_loss", 1.0)
        log.write(itr)
    assert grid_processes.training_progress(tmp_path, "run", 400, start_itr=100) == "iteration 250/400, ~3 min left"
    assert grid_processes.training_progress(tmp_path, "run", 300, start_itr=100) == "iteration 250/300, ~60 s left"
    with open(tmp_path / "run" / "losses.jsonl", "a") as fh:  # a line being written right now
        fh.write('{"itr": 30')
    assert grid_processes.training_progress(tmp_path, "run", 400, start_itr=100) == "iteration 250/400, ~3 min left"
