"""The experiment grid through submitit (the Slurm launcher's path, on submitit's local executor):
a run whose job is preempted (the signal Slurm sends, to the job and its train.py) checkpoints,
is requeued, resumes from its checkpoint and finishes; a failed job is resubmitted."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import experiment_grid as eg
import launchers

pytest.importorskip("submitit")
pytestmark = pytest.mark.xdist_group(__name__)  # one xdist worker runs the whole file: module fixtures built once
ITERS = 60


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), children first."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        out += children
        frontier = children
    return out


def _logged_itr(path: Path) -> int:
    try:
        return int(json.loads(path.read_text().strip().splitlines()[-1])["itr"])
    except (OSError, IndexError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One tiny FMNIST32 data folder (100 images) for both tests; the first grid prepares it."""
    return tmp_path_factory.mktemp("launcher_data")


def _grid(tmp_path, data_root, fmnist_root, monkeypatch, *extra: str) -> eg.Grid:
    monkeypatch.setenv("FMNIST_ROOT", str(fmnist_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return eg.make_grid([
        "--grid", "quickstart", "--output_dir", str(tmp_path / "grid"), "--preset", "fmnist32_cpu",
        "--prepare", "--max_images", "100", "--data_root", str(data_root), "--cells", "none",
        "--launcher", "submitit-local", "--slurm_cpus", "1", "--threads", "1", "--G_ch", "8", "--D_ch", "8",
        "--batch_size", "8", "--dim_z", "16", "--shared_dim", "8", "--num_iters", str(ITERS),
        "--num_inception_images", "24", "--num_pr_images", "24", "--prdc_k", "3", "--feature_res", "32",
        "--save_every", "100000",
        "--log_every", "1", *extra])


def test_a_preempted_submitit_job_checkpoints_is_requeued_and_resumes(tmp_path, data_root, fmnist_root,
                                                                       monkeypatch):
    grid = _grid(tmp_path, data_root, fmnist_root, monkeypatch)
    launcher = launchers.make_launcher(grid.args, grid.out, eg.say)
    assert isinstance(launcher, launchers.SubmititLauncher)
    done: list = []
    worker = threading.Thread(target=lambda: done.append(grid.run(launcher)), daemon=True)
    worker.start()
    losses = grid.out / "logs" / "none" / "losses.jsonl"
    deadline = time.time() + 600
    while _logged_itr(losses) < 3 and time.time() < deadline and worker.is_alive():
        time.sleep(0.05)
    assert _logged_itr(losses) >= 3, "training never started under submitit"
    # What Slurm does before a time limit or preemption: USR2 to every process of the job.
    controller = int(launcher.jobs["none"].job_id)
    for pid in _descendants(controller):
        os.kill(pid, signal.SIGUSR2)
    worker.join(900)
    assert done, "the grid did not finish"
    record = json.loads((grid.out / "cells" / "none.json").read_text())
    assert record["status"] == "done" and record["itr"] == ITERS
    train_log = (grid.out / "cells" / "none.train.log").read_text()
    stopped = int(train_log.split("after iteration ")[1].split(";")[0])
    assert "preempted by SIG" in train_log and 3 <= stopped < ITERS
    assert "Resuming from" in train_log and train_log.count("$ ") == 2  # one launch before, one after
    job_logs = "".join(p.read_text() for p in (grid.out / "submitit").rglob("*_log.*"))
    assert "Requeued job" in job_logs


def test_a_failed_submitit_job_is_resubmitted_then_reported(tmp_path, data_root, fmnist_root, monkeypatch):
    """A job that keeps failing is resubmitted --retries times and then named in the error."""
    grid = _grid(tmp_path, data_root, fmnist_root, monkeypatch, "--retries", "1", "--num_iters", "2")
    launcher = launchers.make_launcher(grid.args, grid.out, eg.say)
    broken = grid.out / "weights" / "none"
    broken.mkdir(parents=True)
    (broken / "state_dict.pth").write_bytes(b"not a checkpoint")  # every attempt fails on it
    with pytest.raises(eg.utils.UserError, match=r"run none: job \S+ failed 2 times.*logs in"):
        grid.run(launcher)


def _launcher_args(*argv: str):
    return eg.build_parser().parse_known_args(["--output_dir", "x", *argv])[0]


def test_slurm_job_script_carries_the_flags_and_the_requeue_signal(tmp_path, monkeypatch):
    """Without a cluster: the sbatch script submitit would submit holds the partition, resources,
    time limit, extra options, the repository on PYTHONPATH and the signal that triggers requeues."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("srun", "sbatch"):
        (fake / tool).write_text("#!/bin/sh\nexit 0\n")
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    args = _launcher_args("--launcher", "slurm", "--slurm_partition", "gpu", "--slurm_gpus", "2",
                          "--slurm_time", "600", "--slurm_extra", "account=proj,qos=high")
    launchers.check_args(args)
    script = launchers.SubmititLauncher(args, tmp_path / "jobs", eg.say).executor._executor \
        ._make_submission_file_text("python -m job", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--time=600", "--account=proj", "--qos=high",
                 "--cpus-per-task=10", "--mem=64GB", "--signal=USR2@90",
                 f"export PYTHONPATH={launchers.REPO}"):
        assert line in script, script


def test_launcher_settings_are_checked_before_anything_runs(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ValueError, match="no sbatch/srun on this machine.*submitit-local"):
        launchers.check_args(_launcher_args("--launcher", "slurm"))
    with pytest.raises(ValueError, match="--slurm_extra: 'qos' is not key=value"):
        launchers.check_args(_launcher_args("--launcher", "submitit-local", "--slurm_extra", "qos"))
    with pytest.raises(ValueError, match="--slurm_cpus"):
        launchers.check_args(_launcher_args("--launcher", "submitit-local", "--slurm_cpus", "0"))
    assert [launchers._minutes(t) for t in ("", "90", "1:30:00", "2-12", "2-12:30", "1-00:00:30")] == \
        [0, 90, 90, 3600, 3630, 1440]
