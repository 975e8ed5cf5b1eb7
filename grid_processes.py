"""What a grid (experiment_grid.py, bench/bench_convergence.py) runs outside its own process: one
logged subprocess (train.py, sample.py, instance_selection.py) with progress lines, and the
Fashion-MNIST data the CPU grids use (the HDF5 of the first N images, its moments and manifold).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import launchers
from io_utils import read_jsonl

REPO = Path(__file__).resolve().parent
_print_lock = threading.Lock()


def say(message: str) -> None:
    """One progress line on stdout (threads of --jobs > 1 share it)."""
    with _print_lock:
        print(f"[grid] {message}", flush=True)


# ----------------------------------------------------------------------------- data
def metric_files(config: dict) -> list[Path]:
    """The moments (FID) and manifold (P/R/D/C) files of the ORIGINAL data the cells are scored on."""
    import inception_utils
    return [p for p, off in ((inception_utils.moments_path(config), config["no_fid"]),
                             (inception_utils.manifold_path(config), config["no_prdc"])) if not off]


def prepare_fmnist(config: dict, max_images: int, threads: int) -> None:
    """FMNIST32_hdf5 in --data_root: the HDF5 of the first `max_images` Fashion-MNIST training
    images (0 = all), then scripts/utils/prepare_data_fmnist.sh for its moments and manifold."""
    if config["dataset"] != "FMNIST32_hdf5":
        raise ValueError(f"--prepare makes FMNIST32_hdf5 only; prepare --dataset {config['dataset']} with "
                         f"scripts/utils/prepare_data_*.sh")
    hdf5 = Path(config["data_root"]) / "FMNIST32.hdf5"
    if hdf5.exists():
        import h5py
        with h5py.File(hdf5, "r") as fh:
            found = len(fh["labels"])
        if max_images and found != max_images:
            raise ValueError(f"{hdf5} holds {found} images but --max_images is {max_images}; use another "
                             f"--data_root or delete {hdf5.parent}")
    else:
        say(f"preparing {hdf5} ({max_images or 'all'} Fashion-MNIST training images)")
        run_logged([sys.executable, str(REPO / "make_hdf5.py"), "--dataset", "FMNIST32", "--data_root",
                    os.environ.get("FMNIST_ROOT", ""), "--out", str(hdf5), "--num_workers", "0",
                    "--batch_size", "1000", "--max_images", str(max_images)], None, threads)
    if not all(p.exists() for p in metric_files(config)):
        say(f"preparing the moments and manifold of {hdf5} with {config['feature_net']}")
        env = {"DATA_ROOT": config["data_root"], "FEATURE_NET": config["feature_net"], "NUM_WORKERS": "0",
               "NUM_PR_IMAGES": str(config["num_pr_images"]), "DEVICE": config["device"],
               "INCEPTION_WEIGHTS": config["inception_weights"], "FEATURE_RES": str(config["feature_res"]),
               "PYTHON": sys.executable}
        run_logged(["bash", str(REPO / "scripts/utils/prepare_data_fmnist.sh")], None, threads, env)


# ----------------------------------------------------------------------------- subprocesses
def run_logged(cmd: list[str], log: Path | None, threads: int, env: dict | None = None,
               progress=None) -> None:
    """Run `cmd` (output to `log`, or to our stdout), calling `progress()` every 30 s; raise on failure."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads),
                    MKL_NUM_THREADS=str(threads), PYTHONPATH=str(REPO), **(env or {}))
    handle = open(log, "a") if log else None
    try:
        if handle:
            handle.write(f"$ {' '.join(cmd)}\n")
            handle.flush()
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT if handle else None, env=full_env)
        launchers.track(proc)  # a preempted submitit job passes its signal on (launchers.RunJob)
        try:
            while True:
                try:
                    code = proc.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    if progress:
                        progress()
        finally:
            launchers.untrack(proc)
    finally:
        if handle:
            handle.close()
    if code != 0:
        tail = log.read_text().strip().splitlines()[-1:] if log else []
        where = f"; see {log}" + (f": {tail[0]}" if tail else "") if log else ""
        raise RuntimeError(f"{Path(cmd[1]).name if len(cmd) > 1 else cmd[0]} failed (exit {code}){where}")


def training_progress(logs_root: Path, key: str, total: int, start_itr: int = 0) -> str:
    """'iteration I/T' from the run's loss log, with the time left at this launch's pace ('iteration
    1150/2400, ~9 min left') once two of its log lines since `start_itr` (where it resumed) are in."""
    try:
        records = read_jsonl(logs_root / key / "losses.jsonl")
    except OSError:  # not written yet
        records = []
    points = [(int(r["itr"]), r.get("_stamp")) for r in records]
    itr = points[-1][0] if points else 0
    text = f"iteration {itr}/{total}"
    launch = [(i, t) for i, t in points if i > start_itr and isinstance(t, (int, float))]
    if len(launch) >= 2 and launch[-1][0] > launch[0][0]:
        (i0, t0), (i1, t1) = launch[0], launch[-1]
        left = max(total - i1, 0) * (t1 - t0) / (i1 - i0)
        text += f", ~{left:.0f} s left" if left < 90 else f", ~{left / 60:.0f} min left"
    return text
