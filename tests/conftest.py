"""Fixtures shared by the whole suite: repo paths, the real Fashion-MNIST files, CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

FMNIST_DEFAULT = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where the entry-point scripts live)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def fmnist_root() -> Path:
    """Folder with the real Fashion-MNIST IDX files (Debian's dataset-fashion-mnist)."""
    root = Path(os.environ.get("FMNIST_ROOT", FMNIST_DEFAULT))
    if not any(root.glob("train-images-idx3-ubyte*")):
        pytest.skip(f"Fashion-MNIST not found in {root} (run scripts/setup.sh as root)")
    return root


@pytest.fixture(scope="session")
def run_py():
    """Run `python SCRIPT ARGS...` from the repo root in a subprocess; returns CompletedProcess."""
    def run(script: str, *args: str, timeout: float = 600, env: dict | None = None,
            cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="2")
        full_env.update(env or {})
        script_path = script if os.path.isabs(script) else str(REPO_ROOT / script)
        return subprocess.run([sys.executable, script_path, *map(str, args)],
                              cwd=cwd or REPO_ROOT, env=full_env, capture_output=True,
                              text=True, timeout=timeout)
    return run


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for cores)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
