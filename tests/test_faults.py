"""Fault injection on the real entry points, in real subprocesses on real files.

* SIGKILL at seeded random points of training (when a checkpoint temp file exists but is still
  empty, just before a checkpoint rename, a little after a random logged iteration, at a random
  time during start-up),
  chained so that every resumed run is itself killed again, then a last resume that must
  end with weights, optimizer states and loss logs bit-identical to an uninterrupted run;
* SIGKILL during `make_hdf5.py` (mid-write, and just before the rename over an existing file)
  and during `instance_selection.py` (start-up, before each cache/report rename);
* a full disk for the checkpoint folder (RLIMIT_FSIZE in the child), read-only output
  folders that also stop root (a file where a folder is expected, RLIMIT_FSIZE=0, and
  `chattr +i` where the file system allows it), and two runs with one experiment name.

Kill points that must land at an exact instant use a Python audit hook installed by a tiny
launcher (`sys.addaudithook`): it watches the real `open`/`os.rename` calls and SIGKILLs its
own process at the N-th matching one. Nothing is mocked; the hook only observes.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import checkpoints

pytestmark = pytest.mark.xdist_group(__name__)  # one xdist worker runs the whole file: module fixtures built once
REPO = Path(__file__).resolve().parents[1]
ITERS, SAVE_EVERY = 8, 2
FILES_PER_SAVE = 12  # 6 .pth files (G, G_optim, D, D_optim, G_ema, state_dict) x (copy + main)
SEED = 20240917

LAUNCHER = r'''
import os, re, runpy, signal, sys
kind, at = os.environ["FAULT_KIND"], int(os.environ["FAULT_AT"])
pattern = re.compile(os.environ["FAULT_PATTERN"])
count = 0
def hook(event, args):
    global count
    if kind == "write" and event == "open" and isinstance(args[1], str) and "w" in args[1]:
        path = args[0]  # open(tmp, "wb"): the temp file exists, empty; its bytes come next
    elif kind == "replace" and event == "os.rename":  # os.replace/os.rename, before it happens
        path = args[0]
    else:
        return
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        return
    if pattern.search(path):
        count += 1
        if count == at:
            os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


# ----------------------------------------------------------------------------- helpers
def env() -> dict:
    # One thread everywhere: the reference and the resumed runs must round identically.
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")


@dataclass
class Proc:
    popen: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.time)

    def wait(self, timeout: float = 300) -> int:
        return self.popen.wait(timeout=timeout)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)


def spawn(script: str, args: list[str], log: Path, fault: tuple[str, int, str] | None = None,
          launcher: Path | None = None) -> Proc:
    """Start `python script args` (through the audit-hook launcher when `fault` is given)."""
    e = env()
    cmd = [sys.executable, str(REPO / script), *map(str, args)]
    if fault is not None:
        kind, at, pattern = fault
        e.update(FAULT_KIND=kind, FAULT_AT=str(at), FAULT_PATTERN=pattern)
        cmd.insert(1, str(launcher))
    fh = open(log, "w")
    popen = subprocess.Popen(cmd, cwd=REPO, env=e, stdout=fh, stderr=subprocess.STDOUT)
    fh.close()
    return Proc(popen, log)


def run(script: str, args: list[str], log: Path, preexec_fn=None) -> tuple[int, str]:
    """Run `python script args` to the end; (exit code, stdout+stderr), also saved to `log`.

    Output goes through a pipe, not a file: RLIMIT_FSIZE must not hit the child's own log.
    """
    proc = subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=REPO, env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                          preexec_fn=preexec_fn, timeout=600)
    log.write_text(proc.stdout)
    return proc.returncode, proc.stdout


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_jsonl(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "_stamp"}
            for line in path.read_text().splitlines() if line.strip()]


def logged_itr(path: Path, since: float) -> int:
    """Last iteration in losses.jsonl, counted only once the file changed after `since`."""
    try:
        if path.stat().st_mtime < since:
            return 0
        lines = path.read_text().splitlines()
        return json.loads(lines[-1])["itr"] if lines else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0  # mid-write or truncated by the resume: look again


def train_flags(fmnist_root: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "FMNIST32", "--data_root", str(fmnist_root), "--base_root", str(out),
            "--experiment_name", "run", "--G_ch", "8", "--D_ch", "8", "--dim_z", "16", "--G_shared",
            "--shared_dim", "8", "--G_attn", "0", "--D_attn", "0", "--batch_size", "16",
            "--num_D_steps", "1", "--num_workers", "0", "--device", "cpu", "--pbar", "none",
            "--shuffle", "--ema", "--ema_start", "3", "--num_iters", str(ITERS),
            "--save_every", str(SAVE_EVERY), "--test_every", "100000", "--log_every", "1", *extra]


def checkpoint_itr(weights: Path) -> int | None:
    """Iteration of the newest complete set, None when there is none."""
    try:
        return int(checkpoints.load_state_dict_file(weights, checkpoints.find_resume_suffix(weights))["itr"])
    except FileNotFoundError:
        return None


def assert_consistent_after_kill(weights: Path) -> None:
    """What a kill may leave: temp files, but never a partial file under a final name, and
    never a folder that neither --resume nor a fresh start accepts."""
    if not weights.is_dir():
        return
    for path in weights.glob("*.pth"):
        torch.load(path, map_location="cpu", weights_only=True)  # loads: written atomically
    if checkpoints.has_checkpoint(weights):
        checkpoints.find_resume_suffix(weights)  # raises when no complete set exists


def same_checkpoint(a: Path, suffix_a: str | None, b: Path, suffix_b: str | None) -> list[str]:
    """Items whose tensors differ between two checkpoint sets (G, D, G_ema and both optimizers)."""
    differ = []
    for item in ("G", "D", "G_ema", "G_optim", "D_optim"):
        x = torch.load(a / checkpoints.file_name(item, suffix_a), weights_only=True)
        y = torch.load(b / checkpoints.file_name(item, suffix_b), weights_only=True)
        fx, fy = torch.utils._pytree.tree_flatten(x)[0], torch.utils._pytree.tree_flatten(y)[0]
        if len(fx) != len(fy) or not all(torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v
                                         for u, v in zip(fx, fy)):
            differ.append(item)
    return differ


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("launcher") / "fault_launcher.py"
    path.write_text(LAUNCHER)
    return path


# ----------------------------------------------------------------------------- training kills
@dataclass
class Lineage:
    out: Path
    kills: list[dict]
    final_rc: int
    final_output: str


def kill_plan(rng: random.Random, kinds: list[str]) -> list[tuple[str, float]]:
    """(kind, uniform draw) pairs; the draw is mapped onto what is left of the run at that time."""
    return [(kind, rng.random()) for kind in kinds]


def run_lineage(name: str, fmnist_root: Path, root: Path, plan: list[tuple[str, float]],
                launcher: Path) -> Lineage:
    """One run killed at every point of `plan` in turn (each resume is killed again), then resumed
    to the end."""
    out = root / name
    weights, losses = out / "weights" / "run", out / "logs" / "run" / "losses.jsonl"
    kills = []
    for i, (kind, u) in enumerate(plan):
        done = checkpoint_itr(weights) if weights.is_dir() else None
        if done == ITERS:
            break  # nothing left to kill (reported by the kill count of the test)
        resume = ["--resume"] if done is not None else []
        start = done or 0
        saves_left = (ITERS - start) // SAVE_EVERY
        log = root / f"{name}_kill{i}.log"
        args = train_flags(fmnist_root, out, *resume)
        record = {"kind": kind, "from_itr": done}
        if kind in ("write", "replace"):
            # Never in the main set of the last save: the run must still have work left after it.
            at = 1 + int(u * (FILES_PER_SAVE * saves_left - FILES_PER_SAVE // 2))
            record["at_file"] = at
            proc = spawn("train.py", args, log, fault=(kind, at, r"\.pth\.[^/]*\.tmp$"), launcher=launcher)
        else:
            proc = spawn("train.py", args, log)
            if kind == "time":  # somewhere in imports, data loading, model building, resume loading
                delay = 0.2 + 1.0 * u
                record["after_s"] = round(delay, 3)
                time.sleep(delay)
            else:  # "iter": a little after a random iteration was logged (mid-step or mid-save)
                target = min(ITERS - 2, start + 1 + int(u * (ITERS - 2 - start)))
                record["after_itr"] = target
                while logged_itr(losses, proc.started) < target and proc.popen.poll() is None:
                    time.sleep(0.005)
                time.sleep(0.15 * u)
            proc.kill()
        rc = proc.wait()
        assert rc == -signal.SIGKILL, f"{name} kill {i} ({record}) did not land: rc {rc}\n{proc.output[-2000:]}"
        record["tmp_left"] = sorted(p.name for p in weights.glob(".*.tmp")) if weights.is_dir() else []
        assert_consistent_after_kill(weights)
        record["resumable_itr"] = checkpoint_itr(weights) if weights.is_dir() else None
        kills.append(record)
    resume = ["--resume"] if weights.is_dir() and checkpoint_itr(weights) is not None else []
    proc = spawn("train.py", train_flags(fmnist_root, out, *resume), root / f"{name}_final.log")
    rc = proc.wait()
    return Lineage(out, kills, rc, proc.output)


# Every kill kind appears in both lineages; the seeded draws place them.
PLANS = {"A": ["write", "iter", "replace", "time", "write"],
         "B": ["iter", "replace", "time", "write", "replace"]}


@pytest.fixture(scope="module")
def training_kills(fmnist_root, tmp_path_factory, launcher):
    """The uninterrupted reference run and two killed-and-resumed lineages, run concurrently."""
    root = tmp_path_factory.mktemp("train_kills")
    rng = random.Random(SEED)
    plans = {name: kill_plan(rng, kinds) for name, kinds in PLANS.items()}
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        ref = pool.submit(run, "train.py", train_flags(fmnist_root, root / "reference"), root / "reference.log")
        futures = {name: pool.submit(run_lineage, name, fmnist_root, root, plan, launcher)
                   for name, plan in plans.items()}
        ref_rc, ref_out = ref.result()
        results = {name: f.result() for name, f in futures.items()}
    assert ref_rc == 0, ref_out[-3000:]
    return root / "reference", results, root


def test_sigkill_at_random_points_then_resume_is_bit_identical(training_kills):
    reference, results, _ = training_kills
    ref_weights = reference / "weights" / "run"
    n_kills = 0
    for name, lineage in results.items():
        assert lineage.final_rc == 0, f"lineage {name}: {lineage.kills}\n{lineage.final_output[-3000:]}"
        weights = lineage.out / "weights" / "run"
        suffix = checkpoints.find_resume_suffix(weights)
        state = checkpoints.load_state_dict_file(weights, suffix)
        assert state["itr"] == ITERS and state["data_position"]["batches"] == ITERS
        assert same_checkpoint(ref_weights, None, weights, suffix) == [], (name, lineage.kills)
        assert read_jsonl(lineage.out / "logs" / "run" / "losses.jsonl") == \
            read_jsonl(reference / "logs" / "run" / "losses.jsonl"), name
        n_kills += len(lineage.kills)
    for name, lineage in results.items():  # shown with -rP: what each kill point hit
        print(name, json.dumps(lineage.kills))
    kinds = {k["kind"] for lineage in results.values() for k in lineage.kills}
    assert n_kills >= 10 and kinds == {"write", "replace", "iter", "time"}


def test_sigkill_at_the_final_rename_then_resume_leaves_a_complete_main_set(training_kills, fmnist_root,
                                                                            launcher, tmp_path):
    """Killed just before `state_dict.pth` of the last save is renamed: the copy of that save is
    complete, the main set mixes two saves. The resume has nothing left to train; it must still
    leave a complete, current main set (what sample.py and --load_weights '' read)."""
    out = tmp_path / "out"
    shutil.copytree(training_kills[0], out)  # the reference run, complete at ITERS
    weights, root = out / "weights" / "run", tmp_path
    # Continue it with a longer run killed at its very last rename.
    longer = ITERS + SAVE_EVERY
    args = train_flags(fmnist_root, out, "--resume", "--num_iters", str(longer))
    last = FILES_PER_SAVE  # one save: copy set (6 renames), main set (6), state_dict.pth last
    proc = spawn("train.py", args, root / "B_lastrename.log",
                 fault=("replace", last, r"\.pth\.[^/]*\.tmp$"), launcher=launcher)
    assert proc.wait() == -signal.SIGKILL, proc.output[-2000:]
    assert not checkpoints.is_complete(weights, None)
    assert checkpoint_itr(weights) == longer  # the copy written just before is complete
    rc, output = run("train.py", args, root / "B_lastrename_resume.log")
    assert rc == 0, output[-3000:]
    assert checkpoints.is_complete(weights, None), (
        "after a completed resume the main checkpoint set is still a mix of two saves: "
        "train.py saves again only when itr != last_saved")
    assert checkpoints.load_state_dict_file(weights)["itr"] == longer


# ----------------------------------------------------------------------------- make_hdf5 kills
def test_sigkill_during_make_hdf5_keeps_no_partial_file_and_rerun_matches(fmnist_root, tmp_path, launcher):
    import datasets
    out = tmp_path / "FMNIST32.hdf5"
    n = 60000  # all of it: ~3 s here, so a kill within 0.2 s of the temp file lands mid-write
    args = ["--dataset", "FMNIST32", "--data_root", str(fmnist_root), "--out", str(out),
            "--num_workers", "0", "--batch_size", "100", "--max_images", str(n)]
    rng = random.Random(SEED + 1)
    # 1. killed at a random instant while the temporary file is being filled
    proc = spawn("make_hdf5.py", args, tmp_path / "kill1.log")
    while not list(tmp_path.glob(".FMNIST32.hdf5.*.tmp")) and proc.popen.poll() is None:
        time.sleep(0.002)
    time.sleep(rng.uniform(0.0, 0.2))
    proc.kill()
    assert proc.wait() == -signal.SIGKILL, proc.output[-2000:]
    assert not out.exists()  # never a partial file under the final name
    rc, output = run("make_hdf5.py", args, tmp_path / "rerun1.log")
    assert rc == 0, output[-2000:]
    source = datasets.get_dataset("FMNIST32", str(fmnist_root))
    with h5py.File(out, "r") as f:
        assert f["imgs"].shape == (n, 3, 32, 32)
        picks = sorted(rng.sample(range(n), 50))
        assert np.array_equal(f["labels"][:], source.labels[:n])
        for i in picks:
            assert np.array_equal(f["imgs"][i], source.load_uint8(i).numpy()), i
    good = hashlib.sha256(out.read_bytes()).hexdigest()
    # 2. --overwrite killed with the new file complete but not yet renamed: the old file stays
    proc = spawn("make_hdf5.py", [*args, "--overwrite"], tmp_path / "kill2.log",
                 fault=("replace", 1, r"\.hdf5\.[^/]*\.tmp$"), launcher=launcher)
    assert proc.wait() == -signal.SIGKILL, proc.output[-2000:]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == good
    rc, output = run("make_hdf5.py", [*args, "--overwrite"], tmp_path / "rerun2.log")
    assert rc == 0, output[-2000:]
    with h5py.File(out, "r") as f:  # same content (the HDF5 header may carry timestamps)
        assert np.array_equal(f["labels"][:], source.labels[:n])
        assert np.array_equal(f["imgs"][picks], np.stack([source.load_uint8(i).numpy() for i in picks]))


# ----------------------------------------------------------------------------- selection kills
def test_sigkill_during_instance_selection_then_rerun_matches(fmnist_root, tmp_path, launcher):
    def args(cache: Path) -> list[str]:
        return ["--dataset", "FMNIST32", "--data_root", str(fmnist_root), "--max_images", "300",
                "--embedding", "efficientnet_lite0", "--embedding_res", "32", "--retention_ratio", "50",
                "--selection_cache_dir", str(cache), "--num_workers", "0", "--device", "cpu",
                "--report_classes", "1", "--report_images", "4", "--pbar", "none"]

    rng = random.Random(SEED + 2)
    cache = tmp_path / "cache"
    chain = [("time", rng.uniform(0.3, 1.5)),
             ("replace", r"/\.embeddings_[^/]*\.npz\.[^/]*\.tmp$"),   # embeddings done, cache not renamed
             ("replace", r"/\.FMNIST32_n300_[^/]*\.npz\.[^/]*\.tmp$"),  # selection done, not renamed
             ("replace", r"/\.summary\.json\.[^/]*\.tmp$")]            # all but the report summary
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ref = pool.submit(run, "instance_selection.py", args(tmp_path / "ref"), tmp_path / "ref.log")
        for i, (kind, value) in enumerate(chain):
            if kind == "time":
                proc = spawn("instance_selection.py", args(cache), tmp_path / f"kill{i}.log")
                time.sleep(value)
                proc.kill()
            else:
                proc = spawn("instance_selection.py", args(cache), tmp_path / f"kill{i}.log",
                             fault=(kind, 1, value), launcher=launcher)
            assert proc.wait() == -signal.SIGKILL, (i, proc.output[-2000:])
            for npz in cache.glob("*.npz") if cache.is_dir() else []:
                with np.load(npz, allow_pickle=False) as z:  # every committed cache is whole
                    assert len(z.files) > 0
        rc, output = run("instance_selection.py", args(cache), tmp_path / "final.log")
        ref_rc, ref_output = ref.result()
    assert ref_rc == 0, ref_output[-2000:]
    assert rc == 0, output[-2000:]
    (ref_report,) = (tmp_path / "ref").glob("report_*")
    (report,) = cache.glob("report_*")
    summary = json.loads((report / "summary.json").read_text())
    assert summary["from_cache"] is True  # the selection committed before the last kill is reused
    with np.load(ref_report / "indices.npz") as a, np.load(report / "indices.npz") as b:
        assert np.array_equal(a["indices"], b["indices"]) and np.array_equal(a["scores"], b["scores"])


# ----------------------------------------------------------------------------- preemption
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signal_checkpoints_exits_requeueable_and_resumes_bit_for_bit(fmnist_root, tmp_path, sig):
    """A scheduler's SIGTERM/SIGUSR1 mid-run: the iteration finishes, a checkpoint is written
    (no --save_every reached), the exit status is 128 + signal; --resume then continues to the
    same weights as a run that was never stopped."""
    out = tmp_path / "preempted"
    flags = ["--save_every", "100000", "--test_every", "1000000"]
    proc = spawn("train.py", train_flags(fmnist_root, out, *flags, "--num_iters", "100000"), tmp_path / "p.log")
    losses = out / "logs" / "run" / "losses.jsonl"
    try:
        while logged_itr(losses, proc.started) < 3:
            assert proc.popen.poll() is None, proc.output[-2000:]
            time.sleep(0.01)
        os.kill(proc.popen.pid, sig)
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    output = proc.output
    weights = out / "weights" / "run"
    stopped = checkpoint_itr(weights)
    assert rc == 128 + sig, output[-2000:]
    assert f"preempted by {signal.Signals(sig).name} after iteration {stopped}" in last_line(output)
    assert stopped >= 3 and checkpoints.is_complete(weights, None)
    assert read_jsonl(losses)[-1]["itr"] == stopped  # the iteration running when the signal came finished
    rc, output = run("train.py", train_flags(fmnist_root, out, *flags, "--num_iters", str(stopped + 2), "--resume"),
                     tmp_path / "resume.log")
    assert rc == 0, output[-2000:]
    rc, output = run("train.py", train_flags(fmnist_root, tmp_path / "ref", *flags, "--num_iters", str(stopped + 2)),
                     tmp_path / "ref.log")
    assert rc == 0, output[-2000:]
    assert same_checkpoint(weights, None, tmp_path / "ref" / "weights" / "run", None) == []


# ----------------------------------------------------------------------------- full disk, read-only
def limit_file_size(nbytes: int):
    def preexec():
        # Python ignores SIGXFSZ, so an oversized write fails with EFBIG instead of killing.
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return preexec


def assert_clean_error(rc: int, output: str, *needles: str, hint: str) -> None:
    line = last_line(output)
    assert rc == 2 and "Traceback" not in output, f"rc {rc}:\n{output[-3000:]}"
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    assert re.search(hint, line), f"the message does not say what to do: {line}"


def test_full_disk_at_checkpoint_fails_cleanly_and_keeps_previous_checkpoint(training_kills, fmnist_root,
                                                                            tmp_path):
    reference = training_kills[0]
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    weights = out / "weights" / "run"
    before = tree_hashes(weights)
    # 100 kB: logs, config and sample sheets fit; a G_ch 8 checkpoint file (~300 kB) does not.
    rc, output = run("train.py", train_flags(fmnist_root, out, "--resume", "--num_iters", str(ITERS + 2)),
                     tmp_path / "full.log", preexec_fn=limit_file_size(100_000))
    assert_clean_error(rc, output, "cannot write", str(weights), hint=r"[Ff]ree disk space|another folder")
    assert tree_hashes(weights) == before  # no partial file, no temp file, nothing replaced
    assert checkpoint_itr(weights) == ITERS and checkpoints.is_complete(weights, None)


def test_output_folder_that_is_a_file_fails_cleanly(fmnist_root, tmp_path):
    """Root ignores permission bits, so the unwritable folder is a regular file where the
    weights folder must be created (works the same for root and for users)."""
    (tmp_path / "weights").write_text("not a folder")
    before = tree_hashes(tmp_path)
    rc, output = run("train.py", train_flags(fmnist_root, tmp_path), tmp_path.parent / f"{tmp_path.name}.log")
    assert_clean_error(rc, output, str(tmp_path / "weights"), hint=r"--weights_root|--base_root|writable|choose")
    assert tree_hashes(tmp_path) == before


def test_make_hdf5_with_no_writable_bytes_fails_cleanly(fmnist_root, tmp_path):
    """RLIMIT_FSIZE=0: no file can receive a byte (holds for root too)."""
    out = tmp_path / "out.hdf5"
    rc, output = run("make_hdf5.py", ["--dataset", "FMNIST32", "--data_root", str(fmnist_root), "--out", str(out),
                                      "--num_workers", "0", "--max_images", "100"],
                     tmp_path / "h5.log", preexec_fn=limit_file_size(0))
    assert_clean_error(rc, output, "cannot write", str(out), hint=r"[Ff]ree disk space|writable|another folder")
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def _hdf5_flags(fmnist_root: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "FMNIST32", "--data_root", str(fmnist_root), "--out", str(out), "--num_workers", "0",
            "--max_images", "2000", *extra]


@pytest.fixture(scope="module")
def hdf5_size(fmnist_root, tmp_path_factory) -> int:
    """Bytes of the complete file written by _hdf5_flags (the full-disk cases cut it short)."""
    out = tmp_path_factory.mktemp("h5size") / "full.hdf5"
    rc, output = run("make_hdf5.py", _hdf5_flags(fmnist_root, out), out.with_suffix(".log"))
    assert rc == 0, output[-2000:]
    return out.stat().st_size


@pytest.mark.parametrize("where", ["first_chunk", "middle", "last_bytes"])
def test_make_hdf5_on_a_full_disk_exits_2_and_keeps_the_previous_file(fmnist_root, tmp_path, hdf5_size, where):
    """The disk fills up at the first image chunk, half-way, and in the last few kB (HDF5's
    closing metadata): each ends with exit 2 and one line (a failed HDF5 write used to crash
    the interpreter at exit, SIGSEGV, exit 139), the previous file intact, no temporary file."""
    out = tmp_path / "out.hdf5"
    out.write_bytes(b"the previous file")
    limit = {"first_chunk": 50_000, "middle": hdf5_size // 2, "last_bytes": hdf5_size - 2_000}[where]
    rc, output = run("make_hdf5.py", _hdf5_flags(fmnist_root, out, "--overwrite"), tmp_path / "h5.log",
                     preexec_fn=limit_file_size(limit))
    assert_clean_error(rc, output, "cannot write", str(out), hint=r"[Ff]ree disk space|another folder")
    assert out.read_bytes() == b"the previous file" and not list(tmp_path.glob(".*.tmp"))


def test_make_hdf5_never_replaces_a_file_that_appears_while_it_writes(fmnist_root, tmp_path, monkeypatch):
    """Two runs writing the same --out: the one that finishes second is refused (a hard link
    refuses an existing name, where a rename would have replaced the other run's file)."""
    import make_hdf5
    out = tmp_path / "out.hdf5"
    real_writer = make_hdf5._hdf5_writer

    @contextlib.contextmanager
    def other_run_finishes_first(path):
        with real_writer(path) as handles:
            yield handles
        out.write_bytes(b"the other run's file")
    monkeypatch.setattr(make_hdf5, "_hdf5_writer", other_run_finishes_first)
    with pytest.raises(FileExistsError, match=r"appeared while this process was writing it .*nothing was replaced"):
        make_hdf5.run(_hdf5_flags(fmnist_root, out, "--max_images", "100"))
    assert out.read_bytes() == b"the other run's file" and not list(tmp_path.glob(".*.tmp"))
    # --overwrite is the explicit permission to replace it.
    make_hdf5.run(_hdf5_flags(fmnist_root, out, "--max_images", "100", "--overwrite"))
    with h5py.File(out, "r") as f:
        assert f["imgs"].shape == (100, 3, 32, 32)


def test_two_concurrent_make_hdf5_runs_one_wins_the_other_is_refused(fmnist_root, tmp_path):
    out = tmp_path / "out.hdf5"
    procs = [spawn("make_hdf5.py", _hdf5_flags(fmnist_root, out), tmp_path / f"run{i}.log") for i in range(2)]
    codes = sorted(p.popen.wait(timeout=600) for p in procs)
    outputs = [p.output for p in procs]
    assert codes == [0, 2], outputs
    assert any("already exists" in o or "appeared while this process" in o for o in outputs)
    with h5py.File(out, "r") as f:
        assert f["imgs"].shape == (2000, 3, 32, 32)
    assert not list(tmp_path.glob(".*.tmp"))


def test_immutable_weights_folder_fails_cleanly(training_kills, fmnist_root, tmp_path):
    """`chattr +i` makes a folder read-only for root as well; skipped where the file system or
    the container does not allow it (tmpfs, no CAP_LINUX_IMMUTABLE)."""
    out = tmp_path / "out"
    shutil.copytree(training_kills[0], out)
    weights = out / "weights" / "run"
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(weights)],
                                                    capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        before = tree_hashes(weights)
        rc, output = run("train.py", train_flags(fmnist_root, out, "--resume", "--num_iters", str(ITERS + 2)),
                         tmp_path / "ro.log")
        assert_clean_error(rc, output, "cannot write", str(weights), hint=r"writable|another folder")
        assert tree_hashes(weights) == before
    finally:
        subprocess.run(["chattr", "-i", str(weights)], check=True)


# ----------------------------------------------------------------------------- same experiment name
def test_second_run_with_same_name_refuses_unless_resume(training_kills, fmnist_root, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(training_kills[0], out)
    before = tree_hashes(out)
    rc, output = run("train.py", train_flags(fmnist_root, out), tmp_path / "again.log")
    assert_clean_error(rc, output, "already has checkpoints", hint=r"--resume")
    assert tree_hashes(out) == before


def test_concurrent_second_run_with_same_name_refuses(fmnist_root, tmp_path):
    """A job launched twice: the first has not saved yet when the second starts. The second
    must refuse instead of truncating the first one's logs and racing on its checkpoints."""
    first = spawn("train.py", train_flags(fmnist_root, tmp_path, "--num_iters", "100000", "--save_every", "100000",
                                          "--test_every", "1000000"),
                  tmp_path / "first.log")
    losses = tmp_path / "logs" / "run" / "losses.jsonl"
    try:
        while logged_itr(losses, first.started) < 1:
            assert first.popen.poll() is None, first.output[-2000:]
            time.sleep(0.01)
        rc, output = run("train.py", train_flags(fmnist_root, tmp_path, "--num_iters", "2"), tmp_path / "second.log")
        assert first.popen.poll() is None  # the first run was alive the whole time
        first_log = read_jsonl(losses)
        assert_clean_error(rc, output, "run", hint=r"already|another process|running")
        assert [r["itr"] for r in first_log] == list(range(1, len(first_log) + 1))
    finally:
        first.kill()
        first.wait()
