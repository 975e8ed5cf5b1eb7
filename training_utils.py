"""Pieces of the BigGAN-PyTorch training recipe that the loop owns.

EMA of G, modified orthogonal regularisation, `toggle_grad`, Adam built from the
hyper-parameters the models store as attributes, standing statistics, noise/label
buffers, singular-value read-out and the one `report(name, value)` path for logged
scalars (JSONL files under `logs/<experiment>/`, rank 0 only).
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn

import distributed as dist_utils
from io_utils import atomic_write_text


def tune_cpu_allocator() -> bool:
    """Keep freed memory in glibc's heap instead of handing it back to the kernel.

    By default glibc serves large blocks (activations) with mmap and unmaps them when
    freed, so every iteration page-faults its activations in again: on a 2-core CPU that
    is about a fifth of the iteration (kernel time). Raising the mmap and trim thresholds
    makes freed blocks reusable; the numbers computed do not change. Returns True when
    applied (Linux with glibc), False elsewhere.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) or libc.mallopt(M_MMAP_THRESHOLD, 1 << 25)) \
        and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def toggle_grad(model: nn.Module, on_or_off: bool) -> None:
    """Switch `requires_grad` of every parameter of `model` (BigGAN-PyTorch's toggle_grads)."""
    for param in model.parameters():
        param.requires_grad_(on_or_off)


@torch.no_grad()
def ortho(model: nn.Module, strength: float = 1e-4, blacklist: Iterable[torch.Tensor] = ()) -> None:
    """Add the gradient of BigGAN's modified orthogonal regularisation to `param.grad`.

    For every parameter W with at least two axes (viewed as rows x rest) that is not in
    `blacklist`, adds strength * 2 * ((W W^T) * (1 - I)) W to its gradient: only the
    off-diagonal correlations between filters are penalised (Brock et al., 2019, eq. 3).
    Parameters without a gradient (frozen, or pruned by a training mode) are skipped.
    """
    skip = {id(p) for p in blacklist}
    for param in model.parameters():
        if param.ndim < 2 or id(param) in skip or param.grad is None:
            continue
        w = param.view(param.shape[0], -1)
        off_diagonal = 1. - torch.eye(w.shape[0], device=w.device, dtype=w.dtype)
        grad = 2 * torch.mm(torch.mm(w, w.t()) * off_diagonal, w)
        param.grad.add_(strength * grad.view(param.shape))


class EMA:
    """Exponential moving average of G's parameters and buffers into G_ema.

    target = target * decay + source * (1 - decay) for every floating-point entry of
    the state dict (BigGAN-PyTorch's formula, evaluated with the same three roundings,
    batched with foreach ops); integer buffers are copied. Before `start_itr` the
    decay is 0, i.e. G_ema follows G exactly.
    """

    def __init__(self, source: nn.Module, target: nn.Module, decay: float = 0.9999,
                 start_itr: int = 0) -> None:
        self.decay = decay
        self.start_itr = start_itr
        self.source, self.target = source, target
        src, tgt = self._pairs()
        if src.keys() != tgt.keys():
            raise ValueError("EMA: G and G_ema have different state-dict keys; build G_ema "
                             "from the same config as G")
        with torch.no_grad():
            for k in src:
                tgt[k].copy_(src[k])
        # Which entries are floats never changes; only the tensors behind the keys may be swapped.
        self._floats = [k for k, t in tgt.items() if t.is_floating_point()]
        self._others = [k for k, t in tgt.items() if not t.is_floating_point()]

    def _pairs(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        # Looked up at every update, never cached: `.to(memory_format=...)`, `.to(device)` or a
        # wrapper can swap a module's tensors after construction, and a cached tensor would
        # then be a stale copy that G_ema averages forever (G_ema frozen at initialisation).
        return ({k: v.detach() for k, v in self.source.state_dict(keep_vars=True).items()},
                {k: v.detach() for k, v in self.target.state_dict(keep_vars=True).items()})

    @torch.no_grad()
    def update(self, itr: int | None = None) -> None:
        """Blend G into G_ema; `itr` below `start_itr` pegs G_ema to G (BigGAN-PyTorch)."""
        decay = 0.0 if itr and itr < self.start_itr else self.decay
        src, tgt = self._pairs()
        float_src, float_tgt = [src[k] for k in self._floats], [tgt[k] for k in self._floats]
        scaled_tgt = torch._foreach_mul(float_tgt, decay)
        scaled_src = torch._foreach_mul(float_src, 1 - decay)
        torch._foreach_add_(scaled_tgt, scaled_src)
        torch._foreach_copy_(float_tgt, scaled_tgt)
        for k in self._others:
            tgt[k].copy_(src[k])


def build_optimizer(model: nn.Module, foreach: bool | None = True) -> torch.optim.Adam:
    """Adam over `model.parameters()` with the lr/B1/B2/adam_eps the model stores as attributes.

    The models accept BigGAN-PyTorch's optimiser arguments but do not own an optimizer
    (see the team contract); the training code builds it here. foreach=True gives the
    same numbers as the plain loop on the CPU (checked in tests) and is faster.
    """
    missing = [a for a in ("lr", "B1", "B2", "adam_eps") if not hasattr(model, a)]
    if missing:
        raise ValueError(f"{type(model).__name__} has no attribute(s) {missing}; build it with "
                         f"BigGAN.model_kwargs(config) so the optimiser settings are stored")
    return torch.optim.Adam(model.parameters(), lr=model.lr, betas=(model.B1, model.B2),
                            weight_decay=0, eps=model.adam_eps, foreach=foreach)


def lr_decay_scale(itr: int, total: int, decay_iters: int) -> float:
    """Learning-rate factor of iteration `itr` (1-based) of a `total`-iteration run whose last
    `decay_iters` iterations decay linearly (--lr_decay_iters; 0 = constant, as BigGAN-PyTorch):
    1 before them, then (total - itr + 1) / decay_iters, i.e. 1 / decay_iters at the last one."""
    if decay_iters <= 0 or itr <= total - decay_iters:
        return 1.0
    return (total - itr + 1) / decay_iters


class NoiseSampler:
    """BigGAN-PyTorch's z_/y_ buffers: z ~ N(0, z_var) (z_var used as the std, as there)
    and y uniform over the classes, resampled in place by `sample_()`. Give sampling for
    sheets and metrics its own `generator` so that it never moves the training RNG."""

    def __init__(self, batch_size: int, dim_z: int, n_classes: int, device: torch.device,
                 z_var: float = 1.0, generator: torch.Generator | None = None) -> None:
        self.z = torch.zeros(batch_size, dim_z, device=device)
        self.y = torch.zeros(batch_size, device=device, dtype=torch.int64)
        self.n_classes = n_classes
        self.z_var = z_var
        self.generator = generator  # None = the global RNG (training); own one for sampling

    def sample_(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw new z and y in place (z first, then y, as BigGAN-PyTorch); returns both."""
        self.z.normal_(0, self.z_var, generator=self.generator)
        self.y.random_(0, self.n_classes, generator=self.generator)
        return self.z, self.y


@torch.no_grad()
def accumulate_standing_stats(G: nn.Module, noise: "NoiseSampler", num_accumulations: int = 16) -> None:
    """BigGAN-PyTorch's standing statistics: reset the BN layers that support them (`myBN`,
    `--mybn`), run `num_accumulations` training-mode batches, then set G.eval() so sampling
    uses the averaged statistics. Other BN layers just see the extra batches, as there.
    """
    for module in G.modules():
        if hasattr(module, "accumulate_standing"):
            module.reset_stats()
            module.accumulate_standing = True
    G.train()
    for _ in range(num_accumulations):
        z, y = noise.sample_()
        G(z, G.shared(y))
    G.eval()


@contextlib.contextmanager
def preserved_state(module: nn.Module) -> Iterator[nn.Module]:
    """Restore `module`'s buffers, train/eval mode and standing-stat flags on exit.

    Sample sheets and metrics run G in training mode (BigGAN-PyTorch's default), which moves
    BN statistics and SN vectors; under this context they leave G exactly as it was, so
    sampling never changes training and a resumed run matches an uninterrupted one.
    """
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    modes = {m: m.training for m in module.modules()}
    flags = {m: m.accumulate_standing for m in module.modules() if hasattr(m, "accumulate_standing")}
    try:
        yield module
    finally:
        with torch.no_grad():
            for name, b in module.named_buffers():
                b.copy_(buffers[name])
        for m, training in modes.items():
            m.training = training
        for m, flag in flags.items():
            m.accumulate_standing = flag


def get_SVs(net: nn.Module, prefix: str) -> dict[str, float]:
    """The singular-value buffers (`*sv*`) of a spectrally normalised net, dots as underscores."""
    state = net.state_dict()
    return {f"{prefix}_{key}".replace(".", "_"): float(state[key].item())
            for key in state if "sv" in key.rsplit(".", 1)[-1]}


def _rewrite_jsonl(path: Path, keep_until_itr: int | None) -> None:
    """Drop torn lines (a crash mid-append) and, when given, records past `keep_until_itr`."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if keep_until_itr is None or record.get("itr", 0) <= keep_until_itr:
            kept.append(json.dumps(record))
    atomic_write_text(path, "".join(k + "\n" for k in kept))


class TrainLog:
    """The one path for logged scalars: `report(name, value)`, then `write(itr)`.

    Names are `stream/key` (`stream` defaults to `losses`); `write(itr)` appends one JSON
    line `{"itr": itr, key: value, ...}` per stream to `logs/<experiment>/<stream>.jsonl`.
    Only rank 0 writes. Lines are appended (rewriting the whole file atomically at every
    log step would grow quadratically); a line torn by a crash and every record newer than
    the checkpoint are dropped by `truncate(itr)` when a run resumes.
    With `tensorboard=True` the same scalars also go to TensorBoard when it is installed.
    """

    def __init__(self, folder: str | os.PathLike, reinitialize: bool, tensorboard: bool = False) -> None:
        self.folder = Path(folder)
        self.enabled = dist_utils.is_main_process()
        self.pending: dict[str, dict[str, float]] = {}
        self.tb = None
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if reinitialize:
            for old in self.folder.glob("*.jsonl"):
                old.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(self.folder / "tensorboard"))
            except ImportError:
                warnings.warn("--tensorboard: the tensorboard package is not installed; "
                              "logging to JSONL only (pip install tensorboard)")

    def report(self, name: str, value: float) -> None:
        """Queue one scalar; `name` is `key` (stream `losses`) or `stream/key`."""
        stream, _, key = name.rpartition("/")
        self.pending.setdefault(stream or "losses", {})[key] = float(value)

    def write(self, itr: int) -> None:
        """Append the queued scalars as one line per stream, tagged with `itr`."""
        if self.enabled:
            stamp = time.time()
            for stream, values in self.pending.items():
                with open(self.folder / f"{stream}.jsonl", "a") as fh:
                    fh.write(json.dumps({"itr": itr, **values, "_stamp": stamp}) + "\n")
                if self.tb is not None:
                    for key, value in values.items():
                        self.tb.add_scalar(f"{stream}/{key}", value, itr)
        self.pending = {}

    def tensorboard_scalars(self, prefix: str, values: dict[str, Any], itr: int) -> None:
        """TensorBoard only (e.g. the metrics, whose JSONL log is MetricsLog's): finite numbers."""
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.tb.add_scalar(f"{prefix}/{key}", value, itr)

    def tensorboard_image(self, tag: str, path: str | os.PathLike, itr: int) -> None:
        """TensorBoard only: a picture written to disk (a sample sheet), if it exists."""
        if self.tb is not None and Path(path).is_file():
            from PIL import Image
            with Image.open(path) as im:
                self.tb.add_image(tag, np.asarray(im.convert("RGB")), itr, dataformats="HWC")

    def truncate(self, itr: int) -> None:
        """Forget records newer than iteration `itr` (the checkpoint a run resumes from)."""
        if self.enabled:
            for path in self.folder.glob("*.jsonl"):
                _rewrite_jsonl(path, itr)

    def close(self) -> None:
        """Flush TensorBoard, if used."""
        if self.tb is not None:
            self.tb.close()


class MetricsLog:
    """`logs/<experiment>_log.jsonl`: one JSON object per test, rewritten atomically."""

    def __init__(self, path: str | os.PathLike, reinitialize: bool) -> None:
        self.path = Path(path)
        self.enabled = dist_utils.is_main_process()
        if self.enabled and reinitialize and self.path.exists():
            self.path.unlink()

    def log(self, **record) -> None:
        """Add one record (non-finite floats become null so the file stays valid JSON)."""
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        old = self.path.read_text() if self.path.exists() else ""
        atomic_write_text(self.path, old + json.dumps({**clean, "_stamp": time.time()}) + "\n")

    def truncate(self, itr: int) -> None:
        """Forget tests newer than iteration `itr`."""
        if self.enabled:
            _rewrite_jsonl(self.path, itr)
