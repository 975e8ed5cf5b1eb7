"""Checkpoints with BigGAN-PyTorch's file names and keys, written so that no crash can lose a run.

A checkpoint is a set of files in `<weights_root>/<experiment_name>/`:

    G.pth  G_optim.pth  D.pth  D_optim.pth  G_ema.pth  state_dict.pth   (+ config.json)

with a suffix for the rotating copies (`G_copy0.pth`, ...) and the best copies
(`G_best0.pth`, ...), exactly as BigGAN-PyTorch names them, so released weights load
and our weights load in BigGAN-PyTorch. `state_dict.pth` holds BigGAN-PyTorch's keys
(itr, epoch, save_num, save_best_num, best_IS, best_FID, config) plus ours: the RNG
states, the data position, the AMP scaler states and `files`, the SHA-256 of every other
file of the set.

Why the hashes: each file is written atomically (io_utils), but a process killed between
two files leaves a set mixing two saves. `state_dict.pth` is written last and names the
exact bytes of its siblings, so `is_complete()` detects such a set, and
`find_resume_suffix()` picks the newest complete one; the rotating copy is written before
the main set, so one complete, newest-possible set always survives.
Every load uses `torch.load(..., weights_only=True)`: nothing is unpickled.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from io_utils import atomic_path, atomic_write_json

# BigGAN-PyTorch's items, in the order they are written; state_dict comes last on purpose.
MODEL_ITEMS = ("G", "G_optim", "D", "D_optim", "G_ema")
FORMAT_VERSION = 1
LOCK_NAME = ".train.lock"


def file_name(item: str, suffix: str | None = None) -> str:
    """BigGAN-PyTorch's naming: `G.pth`, `G_copy0.pth`, `state_dict_best1.pth`, ..."""
    return f"{item}_{suffix}.pth" if suffix else f"{item}.pth"


def _write_bytes(data: bytes, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _serialize(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(folder: str | Path, items: dict[str, Any], state_dict: dict,
                    config: dict | None = None, suffix: str | None = None) -> None:
    """Write one checkpoint set atomically, file by file, `state_dict` last.

    `items` maps item names (`G`, `G_optim`, `D`, `D_optim`, `G_ema`, or extra names such
    as `insgen`) to state dicts. `state_dict` is BigGAN-PyTorch's training state; a copy of
    it with `files` (the hashes of the items) is stored. `config` also goes to
    `config.json`, readable by people and by sample.py.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for item, obj in items.items():
        data = _serialize(obj)
        hashes[item] = _sha256(data)
        _write_bytes(data, folder / file_name(item, suffix))
    if config is not None:
        atomic_write_json(folder / "config.json", config)
    record = {**state_dict, "files": hashes, "format_version": FORMAT_VERSION}
    _write_bytes(_serialize(record), folder / file_name("state_dict", suffix))


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} is missing; pick another "
                                f"--load_weights suffix or run without --resume") from None
    except Exception as err:  # a pickle with objects (old BigGAN-PyTorch state_dict) or junk
        raise ValueError(f"cannot load {path} with weights_only=True ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); the file is corrupt "
                         f"or contains pickled objects; re-save it with plain tensors") from None


def load_state_dict_file(folder: str | Path, suffix: str | None = None) -> dict:
    """Read `state_dict[_suffix].pth` (BigGAN-PyTorch's training state plus ours)."""
    path = Path(folder) / file_name("state_dict", suffix)
    state = _load(path)
    if not isinstance(state, dict) or "itr" not in state:
        raise ValueError(f"{path} is not a training state (no 'itr' key)")
    counters = {k: state[k] for k in ("itr", "epoch", "save_num", "save_best_num") if k in state}
    bad = [k for k, v in counters.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
    if bad or not isinstance(state.get("config", {}), dict):
        what = f"counter {bad[0]} = {counters[bad[0]]!r}" if bad else "a config that is not a dict"
        raise ValueError(f"{path} holds {what}; restore the set from a backup or resume another "
                         f"one (--load_weights copyN)")
    return state


def is_complete(folder: str | Path, suffix: str | None = None) -> bool:
    """True when the set's state_dict loads and every file it lists has the recorded hash.

    Sets written by BigGAN-PyTorch have no hashes; they count as complete when their
    state_dict loads.
    """
    folder = Path(folder)
    try:
        state = load_state_dict_file(folder, suffix)
    except (FileNotFoundError, ValueError):
        return False
    for item, digest in state.get("files", {}).items():
        path = folder / file_name(item, suffix)
        if not path.exists() or _sha256(path.read_bytes()) != digest:
            return False
    return True


def list_suffixes(folder: str | Path) -> list[str | None]:
    """Suffixes of every checkpoint set in `folder`: None (main), 'copy0', ..., 'best0', ..."""
    folder = Path(folder)
    suffixes: list[str | None] = []
    if (folder / "state_dict.pth").exists():
        suffixes.append(None)
    for path in sorted(folder.glob("state_dict_*.pth")):
        suffixes.append(path.stem[len("state_dict_"):])
    return suffixes


def has_checkpoint(folder: str | Path) -> bool:
    """True when `folder` holds any checkpoint set (complete or not)."""
    return bool(list_suffixes(folder))


def find_resume_suffix(folder: str | Path) -> str | None:
    """The suffix of the newest complete checkpoint set (main > copies > best on ties).

    Raises FileNotFoundError when no complete set exists.
    """
    def rank(suffix: str | None) -> int:
        return 2 if suffix is None else (1 if suffix.startswith("copy") else 0)

    best_key, best_suffix = None, None
    for suffix in list_suffixes(folder):
        if not is_complete(folder, suffix):
            continue
        key = (load_state_dict_file(folder, suffix)["itr"], rank(suffix))
        if best_key is None or key > best_key:
            best_key, best_suffix = key, suffix
    if best_key is None:
        raise FileNotFoundError(f"no complete checkpoint in {folder} (every set is missing files or "
                                f"damaged); restore one from a backup, or move/delete that folder (or "
                                f"choose another --experiment_name) to start over")
    return best_suffix


def load_weights(folder: str | Path, suffix: str | None = None, *, G: nn.Module | None = None,
                 D: nn.Module | None = None, G_ema: nn.Module | None = None,
                 G_optim: torch.optim.Optimizer | None = None,
                 D_optim: torch.optim.Optimizer | None = None, strict: bool = True,
                 verify: bool = True) -> dict:
    """Load the given modules/optimizers from one checkpoint set; returns its state_dict.

    With `verify`, a set whose files do not match the hashes in its state_dict (a mix of
    two saves) is refused. Modules passed as None are not loaded.
    """
    folder = Path(folder)
    if verify and not is_complete(folder, suffix):
        raise ValueError(f"checkpoint '{file_name('state_dict', suffix)}' in {folder} is "
                         f"incomplete (files from different saves); resume picks a complete "
                         f"copy automatically, or pass another --load_weights suffix")
    state = load_state_dict_file(folder, suffix)
    for item, target in (("G", G), ("D", D), ("G_ema", G_ema)):
        if target is not None:
            try:
                target.load_state_dict(_load(folder / file_name(item, suffix)), strict=strict)
            except RuntimeError as err:  # size mismatch / missing keys: other architecture flags
                detail = " ".join(str(err).split("\n\t")[1:2]) or str(err).splitlines()[0]
                raise ValueError(f"{file_name(item, suffix)} in {folder} does not fit this {item} ({detail}); "
                                 f"use the architecture flags of that run (see its config.json, e.g. "
                                 f"--G_ch/--D_ch)") from None
    for item, optim in (("G_optim", G_optim), ("D_optim", D_optim)):
        if optim is not None:
            optim.load_state_dict(_load(folder / file_name(item, suffix)))
    return state


def load_item(folder: str | Path, item: str, suffix: str | None = None) -> Any:
    """Load one extra item of a set (e.g. a training mode's state), weights_only."""
    return _load(Path(folder) / file_name(item, suffix))


def capture_rng_state() -> dict:
    """Python, NumPy, torch and CUDA RNG states, in weights_only-loadable types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict) -> None:
    """Inverse of `capture_rng_state` (CUDA states are restored when the GPU count matches)."""
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def run_lock(folder: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on `folder/.train.lock` while a run trains into `folder`.

    A second process training the same experiment (a job launched twice) is refused with
    ValueError before it touches any log or checkpoint. The kernel drops the lock when the
    process ends, even on SIGKILL, so no stale lock survives a crash.
    """
    if not enabled:
        yield
        return
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror}; make the folder writable "
                                 f"or choose another --weights_root / --base_root") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"experiment {folder.name} is already running in another process (it holds "
                         f"{path}); wait for that run to finish, or choose another --experiment_name") from None
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
