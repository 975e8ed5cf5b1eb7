"""Where the experiment grid's runs execute (experiment_grid.py --launcher).

- `local` (default): on this machine, `--jobs` runs at a time, each a train.py and then a
  sample.py subprocess, one GPU id of `--gpus` per job.
- `slurm`: one Slurm job per run through `submitit` (pip install submitit), with the partition,
  GPUs, CPUs, memory and time limit of `--slurm_*` (defaults from sbatch's own SBATCH_PARTITION,
  SBATCH_TIMELIMIT variables where set). A job that Slurm preempts or times out is requeued by
  submitit: the run's train.py gets the signal, finishes its iteration, checkpoints and exits, and
  the requeued job resumes it from that checkpoint (the grid resumes any run that has one). A job
  that fails is resubmitted up to `--retries` times, resuming the same way.
- `submitit-local`: the Slurm path on this machine (submitit's local executor): the same jobs,
  pickles, signals and requeues without a cluster, for trying a grid before submitting it.

Each job runs `experiment_grid.Grid.run_one` on the node, so records, resumes and signatures are
the grid's own whichever launcher ran them.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import copy
import importlib.util
import os
import queue
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent
LAUNCHERS = ("local", "slurm", "submitit-local")
# Child processes (train.py, sample.py, instance_selection.py) running now, so that a job that is
# being preempted can pass the signal on and wait for their checkpoint.
_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()


def track(proc: subprocess.Popen) -> None:
    """Register a running child (grid_processes.run_logged does, for every subprocess)."""
    with _children_lock:
        _children.add(proc)


def untrack(proc: subprocess.Popen) -> None:
    with _children_lock:
        _children.discard(proc)


def stop_children(sig: int = signal.SIGTERM, wait_s: float = 600) -> None:
    """Send `sig` to every running child and wait for them to exit (train.py checkpoints first)."""
    with _children_lock:
        children = list(_children)
    for proc in children:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc in children:
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()


def add_flags(p: argparse.ArgumentParser) -> None:
    """The launcher flags of experiment_grid.py."""
    g = p.add_argument_group("where the runs execute")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local subprocesses (default), Slurm jobs through submitit, or submitit's local "
                        "executor (the Slurm path on this machine)")
    g.add_argument("--slurm_partition", default=os.environ.get("SBATCH_PARTITION", ""),
                   help="Slurm partition (default: $SBATCH_PARTITION)")
    g.add_argument("--slurm_gpus", type=int, default=1, help="GPUs per run (default: %(default)s)")
    g.add_argument("--slurm_cpus", type=int, default=10, help="CPU cores per run (default: %(default)s)")
    g.add_argument("--slurm_mem_gb", type=int, default=64, help="memory per run in GB (default: %(default)s)")
    g.add_argument("--slurm_time", type=int, default=_minutes(os.environ.get("SBATCH_TIMELIMIT", "")) or 4320,
                   help="time limit per job in minutes; a run that needs longer is requeued and resumes "
                        "(default: $SBATCH_TIMELIMIT, else %(default)s)")
    g.add_argument("--slurm_extra", default="",
                   help="more sbatch options as key=value pairs joined by commas, e.g. "
                        "account=myproj,qos=high,constraint=volta32gb")
    g.add_argument("--retries", type=int, default=3,
                   help="resubmissions of a failed job, each resuming its checkpoint (default: %(default)s)")


def _minutes(limit: str) -> int:
    """Slurm's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in minutes; 0 when empty."""
    if not limit:
        return 0
    days, _, rest = limit.rpartition("-")
    parts = [int(x) for x in rest.split(":")]
    if days:
        hours, minutes = parts[0], parts[1] if len(parts) > 1 else 0
    elif len(parts) == 3:
        hours, minutes = parts[0], parts[1]
    else:
        hours, minutes = 0, parts[0]
    return int(days or 0) * 1440 + hours * 60 + minutes


def check_args(args: argparse.Namespace) -> None:
    """Refuse launcher settings that cannot work, before anything runs."""
    if args.launcher == "local":
        return
    if min(args.slurm_cpus, args.slurm_mem_gb, args.slurm_time) < 1 or args.slurm_gpus < 0 or args.retries < 0:
        raise ValueError("--slurm_cpus, --slurm_mem_gb and --slurm_time must be >= 1, --slurm_gpus and "
                         "--retries >= 0")
    for item in filter(None, args.slurm_extra.split(",")):
        if "=" not in item:
            raise ValueError(f"--slurm_extra: {item!r} is not key=value (e.g. account=myproj)")
    if importlib.util.find_spec("submitit") is None:
        raise ValueError(f"--launcher {args.launcher} needs submitit: pip install submitit")
    if args.launcher == "slurm" and not (shutil.which("sbatch") or shutil.which("srun")):
        raise ValueError("--launcher slurm: no sbatch/srun on this machine; run the grid on a Slurm login "
                         "node, or try the same jobs here with --launcher submitit-local")


class RunJob:
    """One grid run as a submitit job: rebuilds the grid (`grid_class(args, train_argv)`, pickled by
    reference) on the node and runs `run_one`. On a preemption or timeout signal submitit calls
    `checkpoint`, which stops train.py (it checkpoints) and requeues the same job, which resumes."""

    def __init__(self, grid_class: type, args: argparse.Namespace, train_argv: list[str], run_name: str) -> None:
        self.grid_class, self.args, self.train_argv, self.run_name = grid_class, args, train_argv, run_name

    def __call__(self) -> dict:
        node_args = copy.copy(self.args)
        node_args.launcher, node_args.jobs, node_args.gpus = "local", 1, ""
        node_args.threads = self.args.threads or len(os.sched_getaffinity(0))
        grid = self.grid_class(node_args, self.train_argv)
        return grid.run_one(grid.run_named(self.run_name), {})

    def again(self) -> "RunJob":
        return RunJob(self.grid_class, self.args, self.train_argv, self.run_name)

    def checkpoint(self) -> Any:
        import submitit
        stop_children(signal.SIGTERM)
        return submitit.helpers.DelayedSubmission(self.again())


class LocalLauncher:
    """`jobs` runs at a time on threads of this process, each on a slot (a GPU id, or None)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.jobs = args.jobs
        self.slots: queue.Queue = queue.Queue()
        for slot in [g.strip() for g in args.gpus.split(",") if g.strip()][:args.jobs] or [None] * args.jobs:
            self.slots.put(slot)

    def run_all(self, grid: Any, runs: list) -> tuple[dict[str, dict], list[str]]:
        """Every run's record by name, and the errors of the runs that failed."""
        records, errors = {}, []

        def on_slot(run) -> dict:
            slot = self.slots.get()
            try:
                return grid.run_one(run, {} if slot is None else {"CUDA_VISIBLE_DEVICES": slot})
            finally:
                self.slots.put(slot)
        with concurrent.futures.ThreadPoolExecutor(self.jobs) as pool:
            futures = {pool.submit(on_slot, run): run for run in runs}
            for future in concurrent.futures.as_completed(futures):
                try:
                    records[futures[future].name] = future.result()
                except (RuntimeError, ValueError, FileNotFoundError) as err:
                    errors.append(f"run {futures[future].name}: {err}")
                else:
                    grid.report_so_far(records)
        return records, errors


class SubmititLauncher:
    """One submitit job per run (Slurm, or submitit's local executor); failed jobs are resubmitted
    up to --retries times, preempted and timed-out ones are requeued by submitit itself."""

    def __init__(self, args: argparse.Namespace, folder: Path, say: Callable[[str], None]) -> None:
        import submitit
        self.args, self.say = args, say
        self.jobs: dict[str, Any] = {}  # run name -> its current job (tests interrupt them)
        cluster = "local" if args.launcher == "submitit-local" else "slurm"
        self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
        # The job unpickles RunJob and the grid before anything runs: the repository must be importable.
        setup = [f"export PYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}}"]
        params: dict[str, Any] = {"timeout_min": args.slurm_time, "cpus_per_task": args.slurm_cpus,
                                  "tasks_per_node": 1, "nodes": 1, f"{cluster}_setup": setup}
        if cluster == "slurm":
            params.update(gpus_per_node=args.slurm_gpus, mem_gb=args.slurm_mem_gb,
                          slurm_additional_parameters=dict(item.split("=", 1) for item in
                                                           filter(None, args.slurm_extra.split(","))))
            if args.slurm_partition:
                params["slurm_partition"] = args.slurm_partition
        self.executor.update_parameters(**params)

    def submit(self, job: RunJob) -> Any:
        self.executor.update_parameters(name=f"grid_{job.run_name}")
        submitted = self.executor.submit(job)
        self.jobs[job.run_name] = submitted
        self.say(f"{job.run_name}: submitted as job {submitted.job_id}")
        return submitted

    def run_all(self, grid: Any, runs: list) -> tuple[dict[str, dict], list[str]]:
        """Submit every run, wait for all of them; resubmit failures; (records by name, errors)."""
        import submitit
        jobs = {run.name: RunJob(type(grid), grid.args, grid.train_argv, run.name) for run in runs}
        pending = {name: self.submit(job) for name, job in jobs.items()}
        attempts = dict.fromkeys(pending, 0)
        records, errors = {}, []
        while pending:
            for name, job in list(pending.items()):
                if not job.done():
                    continue
                del pending[name]
                try:
                    records[name] = job.result()
                except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as err:
                    if attempts[name] < self.args.retries:
                        attempts[name] += 1
                        self.say(f"{name}: job {job.job_id} failed; resubmitting (retry {attempts[name]} of "
                                 f"{self.args.retries}, resuming its checkpoint)")
                        pending[name] = self.submit(jobs[name].again())
                    else:
                        errors.append(f"run {name}: job {job.job_id} failed {attempts[name] + 1} times; last "
                                      f"error: {str(err).strip().splitlines()[-1] if str(err).strip() else err}; "
                                      f"logs in {job.paths.stdout.parent}")
                else:
                    grid.report_so_far(records)
            if pending:
                time.sleep(2 if self.args.launcher == "submitit-local" else 30)
        return records, errors


def make_launcher(args: argparse.Namespace, out: Path, say: Callable[[str], None]) -> Any:
    """The launcher `args.launcher` names."""
    if args.launcher == "local":
        return LocalLauncher(args)
    return SubmititLauncher(args, out / "submitit", say)
