"""The committed quickstart grids (bench/quickstart_runs/) read through grid_report's own test as
bench/RECIPE_EXPERIMENTS.md and the README's "Why not 20 minutes" quote them."""
from __future__ import annotations

import json
from pathlib import Path

import grid_report

RUNS = Path(__file__).resolve().parent.parent / "bench" / "quickstart_runs"


def cells(name: str) -> dict[str, dict]:
    """The aggregated rows of one committed grid, by cell name."""
    return {c["cell"]: c for c in json.loads((RUNS / f"{name}.json").read_text())["cells"]}


def test_half_cost_step_brings_the_effect_no_sooner_than_the_default():
    """G at width 4 with one D step at 3600 iterations (about the training time of the default's 1800):
    the same all-data generators within noise, the same verdicts (density up, precision within noise),
    and a larger recall loss on the half-size training sets."""
    default = cells("mbstd_ch8_bs32_GnoSN_compile_1800its_seeds012_avx512bf16")
    cheap = cells("mbstd_ch8_bs32_GnoSN_compile_Gch4_dsteps1_3600its_seeds012_avx512bf16")
    assert {c["n_seeds"] for grid in (default, cheap) for c in grid.values()} == {3}
    # Training time of a row (its three runs): the cheap grid's 3600 iterations cost about the default's 1800.
    assert 1.0 < cheap["none"]["train_seconds"] / default["none"]["train_seconds"] < 1.2

    arrows = {key: arrow for _, key, _, arrow in grid_report.METRICS}

    def compared(base: dict, other: dict, key: str) -> tuple[str, float]:
        """grid_report's verdict on `other` against `base` for `key`, and its p to three places."""
        word, test = grid_report.compare(base, other, key, arrows[key])
        return word, round(test.p, 3)

    assert compared(default["none"], default["gaussian_50"], "density") == ("better", 0.028)
    assert compared(cheap["none"], cheap["gaussian_50"], "density") == ("better", 0.010)
    assert compared(default["none"], default["gaussian_50"], "precision") == ("within noise", 0.089)
    assert compared(cheap["none"], cheap["gaussian_50"], "precision") == ("within noise", 0.14)
    for key, p in (("FID", 0.386), ("precision", 0.114), ("recall", 0.326)):
        assert compared(default["none"], cheap["none"], key) == ("within noise", p)
    assert compared(default["uniform_50"], cheap["uniform_50"], "recall") == ("worse", 0.004)
    loss = {name: 1 - g["gaussian_50"]["metrics"]["recall"] / g["none"]["metrics"]["recall"]
            for name, g in (("default", default), ("cheap", cheap))}
    assert (round(loss["default"], 2), round(loss["cheap"], 2)) == (0.49, 0.74)
