"""The committed quickstart grids (bench/quickstart_runs/) read through grid_report's own test as
bench/RECIPE_EXPERIMENTS.md and the README ("What the quickstart shows", "Why not 20 minutes") quote them."""
from __future__ import annotations

import json
from pathlib import Path

import config
import grid_report

RUNS = Path(__file__).resolve().parent.parent / "bench" / "quickstart_runs"


def cells(name: str) -> dict[str, dict]:
    """The aggregated rows of one committed grid, by cell name."""
    return {c["cell"]: c for c in json.loads((RUNS / f"{name}.json").read_text())["cells"]}


def compared(base: dict, other: dict, key: str) -> tuple[str, float]:
    """grid_report's verdict on row `other` against row `base` for metric `key`, and its p to three places."""
    arrows = {name: arrow for _, name, _, arrow in grid_report.METRICS}
    word, test = grid_report.compare(base, other, key, arrows[key])
    return word, round(test.p, 3)


def dataset(cell: dict) -> str:
    """The data set a committed row trained on, read from its flags by train.py's own parser (the preset's
    --dataset comes first and the grid's later one wins)."""
    return config.prepare_parser().parse_args(cell["flags"]).dataset


def uniform_verdicts(grid: dict[str, dict]) -> set[str]:
    """grid_report's verdicts on the uniform row against the None row of one grid, over every metric."""
    return {compared(grid["none"], grid["uniform_50"], key)[0] for _, key, _, _ in grid_report.METRICS}


def selection_change(grid: dict[str, dict], key: str) -> float:
    """The Gaussian row's relative change of metric `key` against the None row of one grid."""
    return grid["gaussian_50"]["metrics"][key] / grid["none"]["metrics"][key] - 1


def test_half_cost_step_brings_the_effect_no_sooner_than_the_default():
    """G at width 4 with one D step at 3600 iterations (about the training time of the default's 1800):
    the same all-data generators within noise, the same verdicts (density up, precision within noise),
    and a larger recall loss on the half-size training sets."""
    default = cells("mbstd_ch8_bs32_GnoSN_compile_1800its_seeds012_avx512bf16")
    cheap = cells("mbstd_ch8_bs32_GnoSN_compile_Gch4_dsteps1_3600its_seeds012_avx512bf16")
    assert {c["n_seeds"] for grid in (default, cheap) for c in grid.values()} == {3}
    # Training time of a row (its three runs): the cheap grid's 3600 iterations cost about the default's 1800.
    assert 1.0 < cheap["none"]["train_seconds"] / default["none"]["train_seconds"] < 1.2

    assert compared(default["none"], default["gaussian_50"], "density") == ("better", 0.028)
    assert compared(cheap["none"], cheap["gaussian_50"], "density") == ("better", 0.010)
    assert compared(default["none"], default["gaussian_50"], "precision") == ("within noise", 0.089)
    assert compared(cheap["none"], cheap["gaussian_50"], "precision") == ("within noise", 0.14)
    for key, p in (("FID", 0.386), ("precision", 0.114), ("recall", 0.326)):
        assert compared(default["none"], cheap["none"], key) == ("within noise", p)
    assert compared(default["uniform_50"], cheap["uniform_50"], "recall") == ("worse", 0.004)
    loss = {name: -selection_change(g, "recall") for name, g in (("default", default), ("cheap", cheap))}
    assert (round(loss["default"], 2), round(loss["cheap"], 2)) == (0.49, 0.74)


def test_higher_G_learning_rate_brings_better_generators_but_not_the_effect_sooner():
    """G lr 2e-3 on the quickstart's grid (1200, then continued to 1800 and 2400 iterations) against the
    default's grids: better all-data generators at 1200, no fidelity gain from selection there, and the
    default's verdicts at 1800 and 2400 (density up, precision up but within noise)."""
    default = {itr: cells(f"mbstd_ch8_bs32_GnoSN_compile_{itr}its_seeds012_avx512bf16{tag}")
               for itr, tag in ((1200, ""), (1800, ""), (2400, "_fresh_clone"))}
    fast = {itr: cells(f"mbstd_ch8_bs32_GnoSN_compile_Glr2e-3_{itr}its_seeds012_avx512bf16")
            for itr in (1200, 1800, 2400)}
    assert {c["n_seeds"] for grids in (default, fast) for g in grids.values() for c in g.values()} == {3}
    assert compared(default[1200]["none"], fast[1200]["none"], "coverage") == ("better", 0.029)
    assert round(fast[1200]["none"]["metrics"]["FID"], 1) == 43.0
    assert round(default[1200]["none"]["metrics"]["FID"], 1) == 52.7
    assert compared(fast[1200]["none"], fast[1200]["gaussian_50"], "precision") == ("within noise", 0.993)
    assert compared(fast[1200]["none"], fast[1200]["gaussian_50"], "density") == ("within noise", 0.491)
    for itr, p_density, p_precision in ((1800, 0.04, 0.054), (2400, 0.003, 0.055)):
        assert compared(fast[itr]["none"], fast[itr]["gaussian_50"], "density") == ("better", p_density)
        assert compared(fast[itr]["none"], fast[itr]["gaussian_50"], "precision") == ("within noise", p_precision)
    assert compared(default[2400]["none"], default[2400]["gaussian_50"], "precision") == ("better", 0.048)
    penalty = {name: selection_change(g[2400], "FID") for name, g in (("default", default), ("fast", fast))}
    assert (round(penalty["default"], 2), round(penalty["fast"], 2)) == (0.16, 0.27)


def test_16px_grid_fits_the_budget_but_does_not_resolve_the_effect():
    """The quickstart's recipe on 16 px images (a scratch change, not landed) at 2400 and 3000 iterations
    against the 32 px default's fresh-clone grid: under half the training seconds, selection's recall
    and FID costs resolved as at 32 px, its precision and density gains not, and the uniform control
    within noise of all data on every metric."""
    default = cells("mbstd_ch8_bs32_GnoSN_compile_2400its_seeds012_avx512bf16_fresh_clone")
    small = {itr: cells(f"mbstd_ch8_bs32_GnoSN_compile_16px_{itr}its_seeds012_avx512bf16") for itr in (2400, 3000)}
    assert {c["n_seeds"] for grid in (default, *small.values()) for c in grid.values()} == {3}
    assert {c["itr"] for c in small[3000].values()} == {3000}
    assert {dataset(c) for g in small.values() for c in g.values()} == {"FMNIST16_hdf5"}
    assert {dataset(c) for c in default.values()} == {"FMNIST32_hdf5"}
    assert small[2400]["none"]["train_seconds"] / default["none"]["train_seconds"] < 0.45
    assert compared(default["none"], default["gaussian_50"], "precision") == ("better", 0.048)
    assert compared(default["none"], default["gaussian_50"], "density") == ("better", 0.006)
    for itr, p_precision, p_density, p_fid in ((2400, 0.773, 0.402, 0.021), (3000, 0.399, 0.36, 0.013)):
        grid = small[itr]
        assert compared(grid["none"], grid["gaussian_50"], "precision") == ("within noise", p_precision)
        assert compared(grid["none"], grid["gaussian_50"], "density") == ("within noise", p_density)
        assert compared(grid["none"], grid["gaussian_50"], "FID") == ("worse", p_fid)
        assert compared(grid["none"], grid["gaussian_50"], "recall")[0] == "worse"
        assert uniform_verdicts(grid) == {"within noise"}
    # Seed 1 is the one that does not show the precision gain, and the lowest of every row.
    for grid in small.values():
        precision = {cell: grid[cell]["per_seed"]["precision"] for cell in ("none", "uniform_50", "gaussian_50")}
        assert all(p[1] == min(p) for p in precision.values())
        gains = [g - n for g, n in zip(precision["gaussian_50"], precision["none"])]
        assert gains[0] > 0.05 and gains[2] > 0.05 and gains[1] < 0.02


def test_5_classes_bring_neither_better_generators_nor_the_effect_sooner():
    """The quickstart's grid on the first five classes (a scratch change, not landed) at 1200 and 1800
    iterations against the 10-class default's grids: the all-data generators about as precise, the
    selection's precision and density gains unresolved at both budgets (at 1800 the 10-class density
    gain is resolved), the uniform control within noise everywhere."""
    few = {itr: cells(f"mbstd_ch8_bs32_GnoSN_compile_5classes_{itr}its_seeds012_avx512bf16") for itr in (1200, 1800)}
    default = {itr: cells(f"mbstd_ch8_bs32_GnoSN_compile_{itr}its_seeds012_avx512bf16") for itr in (1200, 1800)}
    assert {c["n_seeds"] for grids in (few, default) for g in grids.values() for c in g.values()} == {3}
    assert {c["itr"] for c in few[1800].values()} == {1800}
    assert {dataset(c) for g in few.values() for c in g.values()} == {"FMNIST32C5_hdf5"}
    for itr, p_precision, p_density in ((1200, 0.432, 0.366), (1800, 0.257, 0.105)):
        grid = few[itr]
        assert compared(grid["none"], grid["gaussian_50"], "precision") == ("within noise", p_precision)
        assert compared(grid["none"], grid["gaussian_50"], "density") == ("within noise", p_density)
        assert selection_change(grid, "precision") > 0 and selection_change(grid, "density") > 0
        assert uniform_verdicts(grid) == {"within noise"}
        assert compared(default[itr]["none"], grid["none"], "precision")[0] == "within noise"
        assert 0.9 < grid["none"]["train_seconds"] / default[itr]["none"]["train_seconds"] < 1.15
    assert compared(default[1800]["none"], default[1800]["gaussian_50"], "density") == ("better", 0.028)


def test_default_on_an_amx_xeon_resolves_precision_with_five_seeds():
    """The default command from a fresh clone on an AMX Xeon (bf16, other kernels than the EPYCs'), then
    two more seeds into the same folder: the five-seed grid holds the three-seed one's runs unchanged,
    precision's gain is just short of the test at three seeds and resolved at five, density's at both,
    the uniform control within noise of all data on every metric, recall and FID worse at five."""
    three = cells("mbstd_ch8_bs32_GnoSN_compile_2400its_seeds012_amx_xeon_fresh_clone")
    five = cells("mbstd_ch8_bs32_GnoSN_compile_2400its_seeds01234_amx_xeon")
    assert {c["n_seeds"] for c in three.values()} == {3} and {c["n_seeds"] for c in five.values()} == {5}
    assert {c["itr"] for grid in (three, five) for c in grid.values()} == {2400}
    for name, cell in three.items():
        for key, values in cell["per_seed"].items():
            assert five[name]["per_seed"][key][:3] == values
    for grid, precision, p_density in ((three, ("within noise", 0.053), 0.005), (five, ("better", 0.002), 0.0)):
        assert compared(grid["none"], grid["gaussian_50"], "precision") == precision
        assert compared(grid["none"], grid["gaussian_50"], "density") == ("better", p_density)
        assert uniform_verdicts(grid) == {"within noise"}
    assert compared(five["none"], five["gaussian_50"], "recall")[0] == "worse"
    assert compared(five["none"], five["gaussian_50"], "FID") == ("worse", 0.011)
    gains = [round(selection_change(grid, "precision"), 2) for grid in (three, five)]
    assert gains == [0.07, 0.10]
