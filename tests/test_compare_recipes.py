"""bench/compare_recipes.py: the recipe tables of bench/RECIPE_EXPERIMENTS.md from JSON lines."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest
from scipy import stats

import cli

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import compare_recipes  # noqa: E402

RUNS = REPO / "bench" / "convergence_runs"
KEYS = ("FID", "precision", "recall", "density", "coverage")


def write_run(path: Path, floor: float, recipe: str, tests: dict[int, list[tuple]]) -> Path:
    """A bench_convergence.py stdout: the real-vs-real line, then {seed: [(itr, seconds, FID, P, R, D, C)]}."""
    lines = [{"name": "real_vs_real", "FID": floor}]
    for seed, rows in tests.items():
        for itr, seconds, *values in rows:
            lines.append({"name": "convergence_curve", "recipe": recipe, "seed": seed, "itr": itr,
                          "train_seconds": seconds, **dict(zip(KEYS, values))})
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def rows_of(capsys, *argv: str) -> list[dict]:
    compare_recipes.main([*argv, "--json"])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture
def two_recipes(tmp_path) -> list[str]:
    a = write_run(tmp_path / "a.jsonl", 5.0, "ctrl", {
        0: [(100, 50.0, 30.0, .80, .30, 1.0, .70), (200, 99.0, 28.0, .82, .31, 1.1, .72)],
        1: [(100, 52.0, 32.0, .78, .28, 0.9, .69), (200, 104.0, 27.0, .84, .35, 1.2, .74)],
        2: [(100, 51.0, 31.0, .79, .29, 0.8, .68), (200, 101.0, 26.0, .86, .33, 1.0, .75)]})
    b = write_run(tmp_path / "b.jsonl", 6.0, "new", {
        0: [(100, 40.0, 25.0, .81, .40, 1.0, .71), (200, 80.0, 24.0, .85, .45, 1.1, .73)],
        1: [(100, 41.0, 26.0, .83, .42, 1.0, .72), (200, 82.0, 22.0, .80, .47, 0.9, .76)]})
    return [str(a), str(b)]


def test_means_stds_ratios_and_welch_at_an_iteration(capsys, two_recipes):
    ctrl, new = rows_of(capsys, *two_recipes, "--at_itr", "200")
    assert (ctrl["row"], ctrl["seeds"], ctrl["itr"]) == ("ctrl", [0, 1, 2], [200, 200, 200])
    assert ctrl["values"]["FID"] == [28.0, 27.0, 26.0] and new["values"]["recall"] == [.45, .47]
    # FID / real-vs-real with each file's own floor (5 and 6)
    assert ctrl["values"]["FID_ratio"] == [28 / 5, 27 / 5, 26 / 5] and new["values"]["FID_ratio"] == [4.0, 22 / 6]
    compare_recipes.main([*two_recipes, "--at_itr", "200"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| at 200 iterations | seeds | iterations | FID ↓ |")
    assert lines[2] == "| ctrl | 0, 1, 2 | 200 | 27.0 ± 1.0 | .840 ± .020 | .330 ± .020 | 1.100 ± .100 | .737 ± .015 | 5.40 ± .20 |"
    p_fid = stats.ttest_ind([28.0, 27.0, 26.0], [24.0, 22.0], equal_var=False).pvalue
    p_recall = stats.ttest_ind([.31, .35, .33], [.45, .47], equal_var=False).pvalue
    cells = [c.strip() for c in lines[-1].split("|")[1:-1]]
    assert cells[0] == "Welch p, new against ctrl"
    assert cells[3] == compare_recipes.p_text(p_fid) and cells[5] == compare_recipes.p_text(p_recall)
    assert float(cells[3]) == pytest.approx(p_fid, rel=0.05) and p_recall < 0.01


def test_budget_reads_the_last_test_within_the_seconds(capsys, two_recipes):
    ctrl, new = rows_of(capsys, *two_recipes, "--seconds", "100")
    # at_budget allows 2 % over: seed 1's test at 104 s is past 102 s, so its 100-iteration test counts
    assert ctrl["itr"] == [200, 100, 200] and ctrl["values"]["FID"] == [28.0, 32.0, 26.0]
    assert new["itr"] == [200, 200]


def test_rows_pool_recipes_and_set_the_control(capsys, tmp_path, two_recipes):
    extra = write_run(tmp_path / "c.jsonl", 6.0, "new_again", {5: [(200, 90.0, 23.0, .82, .44, 1.0, .70)]})
    first, second = rows_of(capsys, *two_recipes, str(extra), "--at_itr", "200",
                            "--row", "pooled=new,new_again", "--row", "control=ctrl")
    assert (first["row"], first["seeds"], first["values"]["FID"]) == ("pooled", [0, 1, 5], [24.0, 22.0, 23.0])
    assert second["row"] == "control"


def test_a_row_read_at_its_own_iteration(capsys, two_recipes):
    """RECIPE@ITR reads that row at ITR (the other rows at --at_itr), and its Welch test uses those values."""
    ctrl, new = rows_of(capsys, *two_recipes, "--at_itr", "200", "--row", "c=ctrl", "--row", "n=new@100")
    assert ctrl["itr"] == [200, 200, 200] and new["itr"] == [100, 100]
    assert new["values"]["FID"] == [25.0, 26.0]
    first, _ = rows_of(capsys, *two_recipes, "--seconds", "60", "--row", "c=ctrl@200", "--row", "n=new")
    assert first["values"]["FID"] == [28.0, 27.0, 26.0]  # @200 wins over the 60-second budget
    compare_recipes.main([*two_recipes, "--at_itr", "200", "--row", "c=ctrl", "--row", "n=new@100"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| at 200 iterations (or the row's own) |") and lines[3].startswith("| n | 0, 1 | 100 |")
    p_fid = stats.ttest_ind([28.0, 27.0, 26.0], [25.0, 26.0], equal_var=False).pvalue
    assert lines[-1].split("|")[4].strip() == compare_recipes.p_text(p_fid)


@pytest.mark.parametrize("argv, message", [
    (["--at_itr", "300"], "no run has a test at iteration 300"),
    (["--at_itr", "200", "--row", "x=nope"], "no runs of nope in the files"),
    (["--at_itr", "200", "--row", "no_equals"], "write LABEL=RECIPE"),
    (["--at_itr", "200", "--row", "x=new@late"], "write LABEL=RECIPE"),
    (["--at_itr", "200", "--row", "x=new@300"], "no run has a test at iteration 300"),
])
def test_refusals_name_what_to_do(two_recipes, argv, message):
    with pytest.raises(cli.UserError, match=message):
        compare_recipes.main([*two_recipes, *argv])


def test_a_run_in_two_files_is_refused(tmp_path, two_recipes):
    copy = tmp_path / "a_again.jsonl"
    copy.write_text(Path(two_recipes[0]).read_text())
    with pytest.raises(cli.UserError, match="recipe ctrl seed 0 is in both .*leave one of the two files out"):
        compare_recipes.main([two_recipes[0], str(copy), "--at_itr", "200"])


def test_reproduces_the_g_without_spectral_norm_table(capsys):
    """The committed JSON lines give RECIPE_EXPERIMENTS' five-seed table at 7200 iterations."""
    files = [RUNS / "fmnist32_cpu_bs32_sd16_mbstd4_ch8_compile_10min_seeds01234_epyc_2threads.jsonl",
             RUNS / "fmnist32_cpu_bs32_sd16_mbstd4_ch8_compile_GnoSN_10min_seed0_epyc_2threads.jsonl",
             RUNS / "fmnist32_cpu_bs32_sd16_mbstd4_ch8_compile_GnoSN_fp32_7200its_seeds1234_avx2_1thread_two_at_a_time.jsonl"]
    sn, nosn = rows_of(capsys, *map(str, files), "--at_itr", "7200",
                       "--row", "SN=fmnist32_cpu_bs16_sd16_mbstd4_ch8+compile_bs32",
                       "--row", "noSN=fmnist32_cpu_bs32_sd16_mbstd4_ch8+compile_GnoSN,"
                                "fmnist32_cpu_bs32_sd16_mbstd4_ch8+compile_GnoSN_fp32")
    assert sn["seeds"] == nosn["seeds"] == [0, 1, 2, 3, 4]
    assert round(statistics.mean(nosn["values"]["FID"]), 1) == 23.5
    assert round(statistics.mean(nosn["values"]["recall"]), 3) == .501
    assert round(statistics.mean(sn["values"]["recall"]), 3) == .397
    assert compare_recipes.p_text(compare_recipes.welch_p(sn["values"]["recall"], nosn["values"]["recall"])) == ".011"


def test_reproduces_the_beta2_table_at_ten_minutes(capsys):
    """The committed JSON lines give RECIPE_EXPERIMENTS' beta2 .99 table: the same place at 10 minutes,
    ahead in recall at 2400 iterations."""
    files = [str(RUNS / f"fmnist32_cpu_bs32_sd16_mbstd4_ch8_compile_GnoSN{variant}_10min_seeds012_epyc_slower_host_2threads.jsonl")
             for variant in ("", "_beta2_099")]

    def compared(key: str, digits: int, *at: str) -> tuple[float, float, str]:
        """Both rows' means of `key` and the Welch p of the difference, read at `at`."""
        recipe, beta2 = rows_of(capsys, *files, *at)
        assert recipe["seeds"] == beta2["seeds"] == [0, 1, 2]
        p = compare_recipes.p_text(compare_recipes.welch_p(recipe["values"][key], beta2["values"][key]))
        return round(statistics.mean(recipe["values"][key]), digits), round(statistics.mean(beta2["values"][key]), digits), p

    assert compared("FID", 1, "--seconds", "600") == (24.5, 24.9, ".61")
    assert compared("recall", 3, "--at_itr", "2400") == (.351, .403, ".039")
