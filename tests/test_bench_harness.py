"""The benchmark harness: run_all.py's --only merge, bench_convergence.py's run environment and
--replot, bench_step.py's FLOP count, bench_grouped_conv.py's batched convolution."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import BigGAN
import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import run_all  # noqa: E402


def test_only_merges_with_earlier_results(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "BENCH", tmp_path)
    calls = []

    def fake_run(script, args, timeout):
        calls.append(script)
        return [{"name": f"{script}-figure", "speedup": len(calls)}], "ok"

    monkeypatch.setattr(run_all, "run_benchmark", fake_run)
    run_all.main(["--quick"])
    assert calls == [b[0] for b in run_all.BENCHMARKS]
    first = (tmp_path / "results.jsonl").read_text().splitlines()
    run_all.main(["--only", "bench_metrics.py"])
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["bench"] for r in rows] == [b[0] for b in run_all.BENCHMARKS]  # order kept
    for old, new, row in zip(first, lines, rows):
        if row["bench"] == "bench_metrics.py":
            assert row["args"] == [] and row["speedup"] == len(calls)  # re-run at full size
        else:
            assert new == old  # untouched, with its own date
    md = (tmp_path / "RESULTS.md").read_text()
    assert "python bench/run_all.py --only bench_metrics.py" in md
    assert md.count("## bench_") == len(run_all.BENCHMARKS) and ", run 20" in md
    with pytest.raises(SystemExit):
        run_all.main(["--only", "bench_nothing.py"])


TINY_RECIPE = ("--G_ch 8 --D_ch 8 --batch_size 8 --num_D_steps 1 --dim_z 16 --shared_dim 8 --num_inception_images 24 "
               "--num_pr_images 24 --prdc_k 3 --feature_res 32 --embedding_res 32")


def run_tiny_bench(run_py, fmnist_root: Path, out: Path, name: str, seconds: str, extra: str = "",
                   *more: str) -> list[dict]:
    """bench_convergence.py on 100 real images with a tiny model, tests every 3 iterations, seed 0
    (runs under out/conv, curves in out/curves.png); returns its JSON lines. The paths are given
    relative to the working folder, as a user types them (train.py reads a relative --data_root under
    its --base_root, so the script must not pass them on as they are)."""
    proc = run_py("bench/bench_convergence.py", "--seconds", seconds, "--test_every", "3", "--max_images", "100",
                  "--out", "conv", "--png", "curves.png", "--extra", f"{TINY_RECIPE} {extra}",
                  "--name", name, "--seeds", "0", *more, env={"FMNIST_ROOT": str(fmnist_root)}, cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_bench_convergence_tiny_run_on_real_fashion_mnist(tmp_path, fmnist_root, run_py):
    """A real (tiny) run: data prepared, a real-vs-real floor, train.py tested during training and
    stopped past the budget, the figure at the budget, and the curves PNG."""
    floor, *curve, final = run_tiny_bench(run_py, fmnist_root, tmp_path, "tiny", "1")
    assert floor["name"] == "real_vs_real" and 0 < floor["precision"] <= 1 and floor["FID"] > 0
    assert floor["machine"]["bf16_native"] is BigGAN.cpu_runs_bf16_natively()  # is bf16 really bf16 here
    assert curve and all(r["name"] == "convergence_curve" and r["recipe"] == "fmnist32_cpu+tiny" for r in curve)
    assert [r["itr"] for r in curve] == [3 * (i + 1) for i in range(len(curve))]
    assert curve[-1]["train_seconds"] >= 1  # stopped only once the budget was passed
    times = [r["train_seconds"] for r in curve]
    assert times == sorted(times)
    assert final["name"] == "convergence_at_budget" and final["itr"] in [r["itr"] for r in curve]
    assert final["train_seconds"] <= 1.02 or final["itr"] == curve[0]["itr"]
    assert final["FID_over_real_FID"] == round(final["FID"] / floor["FID"], 2)
    assert "--num_D_steps 1" in final["flags"] and "--amp bf16" in final["flags"]
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    tests = [json.loads(line) for line in
             (tmp_path / "conv" / "logs" / "fmnist32_cpu_tiny_seed0_log.jsonl").read_text().splitlines()]
    assert [t["itr"] for t in tests] == [r["itr"] for r in curve]  # every test reported once


def test_bench_convergence_ends_at_a_recipes_own_num_iters(tmp_path, fmnist_root, run_py):
    """A recipe with --num_iters (here with a learning-rate decay) ends there, however long the budget;
    the tests of an earlier run of the same name are never reported."""
    stale = tmp_path / "conv" / "logs" / "fmnist32_cpu_ends_seed0_log.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"itr": 999, "train_seconds": 0.5, "FID": 1.0, "P": 1.0, "R": 1.0}) + "\n")
    rows = run_tiny_bench(run_py, fmnist_root, tmp_path, "ends", "100000", "--num_iters 6 --lr_decay_iters 3")
    assert [r["itr"] for r in rows if r["name"] == "convergence_curve"] == [3, 6]
    assert rows[-1]["name"] == "convergence_at_budget" and rows[-1]["itr"] == 6
    config = json.loads((tmp_path / "conv" / "weights" / "fmnist32_cpu_ends_seed0" / "config.json").read_text())
    assert config["num_iters"] == 6 and config["lr_decay_iters"] == 3


def test_bench_convergence_resume_continues_a_run_as_if_uninterrupted(tmp_path, fmnist_root, run_py):
    """--resume with no checkpoint starts the run anew (an earlier log's tests are not reported);
    with one, a longer --num_iters continues it: the earlier tests are reported again, the new ones
    equal those of a run that went to the end at once, and the training seconds count on."""
    def curve(rows):
        return [r for r in rows if r["name"] == "convergence_curve"]

    stale = tmp_path / "conv" / "logs" / "fmnist32_cpu_cont_seed0_log.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"itr": 999, "train_seconds": 0.5, "FID": 1.0, "P": 1.0, "R": 1.0}) + "\n")
    first = curve(run_tiny_bench(run_py, fmnist_root, tmp_path, "cont", "100000", "--num_iters 6", "--resume"))
    assert [r["itr"] for r in first] == [3, 6]
    more = run_tiny_bench(run_py, fmnist_root, tmp_path, "cont", "100000", "--num_iters 9", "--resume")
    assert "Resuming from" in (tmp_path / "conv" / "fmnist32_cpu_cont_seed0.train.log").read_text()
    whole = curve(run_tiny_bench(run_py, fmnist_root, tmp_path, "whole", "100000", "--num_iters 9"))
    resumed = curve(more)
    assert [r["itr"] for r in resumed] == [3, 6, 9] and resumed[:2] == first
    assert resumed[-1]["train_seconds"] > first[-1]["train_seconds"]
    import bench_convergence
    keys = [long for _, long in bench_convergence.METRIC_KEYS]
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in whole]
    assert more[-1]["name"] == "convergence_at_budget" and more[-1]["itr"] == 9


def test_bench_convergence_run_env_sets_threads_and_keeps_the_callers_settings(monkeypatch):
    """Each run gets the thread count asked for and the repository on its path; the caller's
    other OpenMP settings reach train.py unchanged."""
    import bench_convergence
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("OMP_PROC_BIND", "close")
    env = bench_convergence.train_env(2)
    assert (env["OMP_NUM_THREADS"], env["OMP_PROC_BIND"]) == ("2", "close")
    assert env["PYTHONPATH"] == str(bench_convergence.REPO)


def test_bench_convergence_recipes_are_valid_train_configs_and_can_drop_a_switch():
    """Every recipe parses as train.py flags; a recipe that leaves a switch of its preset out
    (no hierarchical z) differs from its base only there; an unknown name lists the choices."""
    import bench_convergence
    import experiment_grid
    import utils
    parser = utils.prepare_parser()
    for name in bench_convergence.RECIPES:
        parser.parse_args(bench_convergence.recipe_flags(name, ""))
    nohier = bench_convergence.recipe_flags("fmnist32_cpu_bs16_nohier", "--seed 3")
    base = bench_convergence.recipe_flags("fmnist32_cpu_bs16", "--seed 3")
    assert "--hier" in base and [f for f in base if f != "--hier"] == nohier
    assert not vars(parser.parse_args(nohier))["hier"] and vars(parser.parse_args(base))["hier"]
    assert vars(parser.parse_args(bench_convergence.recipe_flags("fmnist32_cpu_bs16_sd16", "")))["shared_dim"] == 16
    assert bench_convergence.recipe_flags("fmnist32_cpu", "") == experiment_grid.PRESETS["fmnist32_cpu"][0].split()
    # The minibatch-std presets are the recipes measured here, flag for flag (ch12 is its preset).
    mbstd = vars(parser.parse_args(bench_convergence.recipe_flags("fmnist32_cpu_bs16_sd16_mbstd4", "")))
    first = vars(parser.parse_args(bench_convergence.recipe_flags("fmnist32_cpu", "")))
    assert mbstd == vars(parser.parse_args(experiment_grid.PRESETS["fmnist32_cpu_mbstd"][0].split()))
    assert {k: v for k, v in mbstd.items() if v != first[k]} == {
        "batch_size": 16, "shared_dim": 16, "D_mbstd_group": 4}
    # A variant's flag with a value overrides its preset's (argparse keeps the last).
    variants = {"fmnist32_cpu_bs16_sd16_mbstd4_dsteps3": {"num_D_steps": 3},
                "fmnist32_cpu_bs16_sd16_mbstd4_ch12": {"G_ch": 12, "D_ch": 12},
                "fmnist32_cpu_bs16_sd16_mbstd4_ch8": {"G_ch": 8, "D_ch": 8},
                "fmnist32_cpu_bs32_sd16_mbstd4_ch8": {"G_ch": 8, "D_ch": 8, "batch_size": 32},
                "fmnist32_cpu_bs32_sd16_mbstd4_ch8_GnoSN": {"G_ch": 8, "D_ch": 8, "batch_size": 32,
                                                            "G_param": "none"}}
    for name, changed in variants.items():
        variant = vars(parser.parse_args(bench_convergence.recipe_flags(name, "")))
        assert {k: v for k, v in variant.items() if v != mbstd[k]} == changed, name
    with pytest.raises(utils.UserError, match="unknown recipe 'nope'.*fmnist32_cpu_bs16_nohier"):
        bench_convergence.recipe_flags("nope", "")


def test_bench_convergence_replot_draws_runs_made_apart(tmp_path, monkeypatch):
    """--replot draws the curves of several earlier runs' stdout in one figure, without training,
    and refuses files that hold no curves."""
    import bench_convergence
    floor = {"name": "real_vs_real", "FID": 5.9, "precision": .89, "recall": .92, "density": .95, "coverage": .97}

    def curve(recipe, seed, itr, fid):
        return {"name": "convergence_curve", "recipe": recipe, "seed": seed, "itr": itr, "train_seconds": itr / 5,
                "FID": fid, "precision": .5, "recall": itr / 10_000, "density": .4, "coverage": .3}
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("\n".join(json.dumps(r) for r in [floor, curve("a", 0, 300, 90.0), curve("a", 0, 600, 50.0)]))
    second.write_text("some warning\n" + "\n".join(json.dumps(r) for r in [floor, curve("b", 1, 300, 80.0)]))
    seen = {}
    with monkeypatch.context() as patch:
        patch.setattr(bench_convergence, "plot",
                      lambda records, fl, path, by: seen.update(records=records, floor=fl, path=path, by=by))
        bench_convergence.main(["--replot", str(first), str(second), "--png", str(tmp_path / "x.png")])
        assert seen["by"] == "seconds"
        bench_convergence.main(["--replot", str(first), "--png", str(tmp_path / "x.png"), "--by", "iterations"])
        assert seen["by"] == "iterations" and len(seen["records"]) == 2
        bench_convergence.main(["--replot", str(first), str(second), "--png", str(tmp_path / "x.png")])
    assert [(r["recipe"], r["seed"], r["itr"]) for r in seen["records"]] == [("a", 0, 300), ("a", 0, 600), ("b", 1, 300)]
    assert seen["floor"]["FID"] == 5.9 and seen["path"] == tmp_path / "x.png"
    # drawn against iterations, the x data are the records' iteration numbers
    drawn = {}
    with monkeypatch.context() as patch:
        import matplotlib.axes
        original = matplotlib.axes.Axes.plot
        patch.setattr(matplotlib.axes.Axes, "plot",
                      lambda ax, x, *a, **k: drawn.setdefault(k.get("label"), list(x)) and original(ax, x, *a, **k))
        bench_convergence.main(["--replot", str(first), "--png", str(tmp_path / "i.png"), "--by", "iterations"])
    assert drawn["a (seed 0)"] == [300, 600]
    bench_convergence.main(["--replot", str(first), str(second), "--png", str(tmp_path / "curves.png")])
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps(floor) + "\n")
    with pytest.raises(cli.UserError, match="no convergence_curve"):
        bench_convergence.main(["--replot", str(empty)])


def _tiny_step(extra: str) -> dict:
    import bench_step
    config = bench_step.recipe_config("fmnist32_cpu_mbstd", "--G_ch 4 --D_ch 4 --amp none " + extra)
    return bench_step.measure(config, iters=2, warmup=1)


def test_bench_step_counts_every_D_step_and_image():
    one, two, three = (_tiny_step(f"--batch_size 4 --num_D_steps {n}") for n in (1, 2, 3))
    # Each D step runs the same G and D passes, so each adds the same FLOPs; none is left uncounted.
    assert two["gflop_per_iter"] - one["gflop_per_iter"] == pytest.approx(
        three["gflop_per_iter"] - two["gflop_per_iter"], abs=1e-12)
    assert two["gflop_per_iter"] - one["gflop_per_iter"] > 0
    # Convolutions scale with the batch exactly (spectral norm's matmuls do not: they are per weight).
    eight = _tiny_step("--batch_size 8 --num_D_steps 2")
    assert eight["conv_gflop_per_iter"] == pytest.approx(2 * two["conv_gflop_per_iter"], rel=1e-12)
    assert 0 < two["conv_gflop_per_iter"] < two["gflop_per_iter"]
    assert 0 < two["conv_s_per_iter"] < two["s_per_iter"]


def test_bench_step_prints_one_consistent_line(capsys):
    import bench_step
    bench_step.main(["--extra", "--G_ch 4 --D_ch 4 --amp none --batch_size 4", "--iters", "2",
                     "--warmup", "1", "--seconds", "60"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["recipe"] == "fmnist32_cpu_mbstd --G_ch 4 --D_ch 4 --amp none --batch_size 4"
    assert row["matmul_dtype"] == "float32" and row["matmul_gflops_per_s"] > 0
    assert row["iters_in_seconds"] == pytest.approx(60 / row["s_per_iter"], rel=1e-3, abs=1)
    assert row["iters_in_seconds_convs_only"] >= row["iters_in_seconds"]
    assert row["conv_share"] == pytest.approx(row["conv_s_per_iter"] / row["s_per_iter"], abs=2e-3)


def test_grouped_conv_computes_each_run_on_its_own_channels():
    import bench_grouped_conv
    torch.manual_seed(0)
    convs = [torch.nn.Conv2d(4, 5, 3, padding=1) for _ in range(3)]
    grouped = bench_grouped_conv.stacked_conv(convs)
    xs = [torch.randn(2, 4, 8, 8) for _ in convs]
    expected = torch.cat([conv(x) for conv, x in zip(convs, xs)], dim=1)
    assert torch.allclose(grouped(torch.cat(xs, dim=1)), expected, atol=1e-6)


def test_bench_grouped_conv_prints_consistent_ratios(capsys):
    import bench_grouped_conv
    bench_grouped_conv.main(["--runs", "2", "--channels", "4", "--batch", "2", "--sizes", "8", "--reps", "2"])
    row = json.loads(capsys.readouterr().out.strip())
    assert (row["runs"], row["size"]) == (2, 8)
    assert row["grouped_vs_separate"] == pytest.approx(row["grouped_s"] / (2 * row["one_run_s"]), rel=0.01)
    assert row["shared_weights_vs_separate"] == pytest.approx(
        row["shared_weights_s"] / (2 * row["one_run_s"]), rel=0.01)
