"""logs/plot_logs.py on the real JSONL logs of a short training run (train.py, shared with
test_sample.py), several experiments on one figure, torn lines and one-line errors."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_sample import EXP, tiny_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "logs"))
import plot_logs  # noqa: E402


pytestmark = pytest.mark.xdist_group(__name__)  # one xdist worker runs the whole file: module fixtures built once


@pytest.fixture(scope="module")
def logs(tmp_path_factory, run_py, fmnist_root) -> Path:
    """The real logs, plus a second experiment: the same logs with one torn line appended."""
    run = tiny_run(tmp_path_factory.getbasetemp(), run_py, fmnist_root)
    logs = tmp_path_factory.mktemp("logs")
    shutil.copytree(run / "logs" / EXP, logs / EXP)
    shutil.copy(run / "logs" / f"{EXP}_log.jsonl", logs / f"{EXP}_log.jsonl")
    shutil.copytree(logs / EXP, logs / f"{EXP}_rr50")
    with open(logs / f"{EXP}_rr50" / "losses.jsonl", "a") as fh:
        fh.write('{"itr": 5, "G_lo')  # a crash mid-append
    return logs


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
        return im.size


def test_real_logs_have_the_documented_fields(logs):
    losses = plot_logs.read_jsonl(logs / EXP / "losses.jsonl")
    assert [r["itr"] for r in losses] == [1, 2]
    assert {"G_loss", "D_loss_real", "D_loss_fake"} <= set(losses[0])
    svs = plot_logs.read_jsonl(logs / EXP / "sv.jsonl")
    assert any(k.startswith("G_") for k in svs[0]) and any(k.startswith("D_") for k in svs[0])
    tests = plot_logs.read_jsonl(logs / f"{EXP}_log.jsonl")
    assert len(tests) == 1 and tests[0]["itr"] == 2 and np.isfinite(tests[0]["FID"])
    assert len(plot_logs.read_jsonl(logs / f"{EXP}_rr50" / "losses.jsonl")) == 2  # torn line skipped


def test_cli_draws_every_stream_of_every_experiment(logs, run_py, tmp_path):
    # no --experiments: every experiment found (here two) shares each figure
    proc = run_py("logs/plot_logs.py", "--logs_root", logs, "--out", tmp_path / "plots", "--smooth", "2")
    assert proc.returncode == 0, proc.stderr
    written = sorted(Path(line).name for line in proc.stdout.split())
    assert written == ["losses.png", "metrics.png", "sv.png"]
    sizes = {name: _png_size(tmp_path / "plots" / name) for name in written}
    assert sizes["sv.png"] == (1000, 560)  # 2 x 2 panels: (G, D) for each of the two experiments
    assert sizes["metrics.png"] == (1020, 560)  # IS, FID, P, R, D, C in 2 rows of 3
    assert sizes["losses.png"][0] >= 1020  # at least G_loss, D_loss_real, D_loss_fake side by side


def test_errors_name_the_problem(logs, run_py, tmp_path):
    proc = run_py("logs/plot_logs.py", "--logs_root", logs, "--experiments", "nope", "--out", tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "nope" in line and EXP in line  # lists what exists
    with pytest.raises(FileNotFoundError, match="not a folder"):
        plot_logs.plot_logs(tmp_path / "missing", None, tmp_path)
    empty = tmp_path / "empty"
    (empty / "run").mkdir(parents=True)
    (empty / "run" / "losses.jsonl").write_text("")
    with pytest.raises(ValueError, match="no records"):
        plot_logs.plot_logs(empty, ["run"], tmp_path / "out")


def test_small_helpers():
    assert plot_logs.short_labels(["BigGAN_C10_seed0", "BigGAN_C10_seed1"]) == ["seed0", "seed1"]
    assert plot_logs.short_labels(["a_b", "a_b"]) == ["a_b", "a_b"]
    np.testing.assert_allclose(plot_logs.smooth(np.array([1.0, 3.0, np.nan, 5.0]), 2),
                               [1.0, 2.0, 3.0, 5.0])
    xs, ys = plot_logs.series([{"itr": 1, "P": 0.5}, {"itr": 2, "precision": None}, {"itr": 3}],
                              ("precision", "P"))
    assert xs.tolist() == [1, 2] and ys[0] == 0.5 and np.isnan(ys[1])
