"""Starting or continuing a run, in one object: what a run takes from its checkpoint
(counters, config, weights, optimizers, training-mode state, loss scalers, per-rank RNG streams,
data position, log lines) and what a fresh run starts from.

Two steps, because BigGAN-PyTorch's order is part of the numerics: `Resume.open` comes first
(the stored config decides the data, and the counters decide the loader's start position);
`restore` comes last, after the models, optimizers and modes exist and just before the loop, so
the RNG streams continue exactly where the checkpoint left them whatever construction consumed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

import checkpoints
import distributed as dist_utils
import training_modes
import utils
from cli import UserError

# BigGAN-PyTorch's state_dict, plus the wall-clock seconds spent training (tests and saves
# excluded), which the metrics log records so convergence can be read against time.
FRESH_STATE = {"itr": 0, "epoch": 0, "save_num": 0, "save_best_num": 0, "best_IS": 0,
               "best_FID": 999999, "train_seconds": 0.0}


def rank_seed(seed: int) -> int:
    """A different noise stream per DDP rank (rank 0 keeps the single-process stream)."""
    return int(np.random.SeedSequence([seed, dist_utils.rank()]).generate_state(1)[0])


@dataclass
class Resume:
    """A run's starting point. `counters` is the live state_dict (itr, epoch, best scores, ...)
    that training updates; `suffix` the checkpoint set continued (None: the main set, or a fresh
    run when `resumed` is False)."""
    weights_dir: Path
    resumed: bool = False
    suffix: str | None = None
    counters: dict = field(default_factory=lambda: dict(FRESH_STATE))

    @classmethod
    def open(cls, config: dict, weights_dir: Path, experiment_name: str, explicit: set[str] | None) -> "Resume":
        """With --resume: read the checkpoint's counters and merge its stored config into `config`
        (in place; see config.resume_config). Without: refuse a folder that already has checkpoints."""
        if config["load_weights"] and not config["resume"]:
            raise UserError("--load_weights picks the checkpoint that --resume continues (copyN, bestN); "
                            "pass --resume too")
        if not config["resume"]:
            if checkpoints.has_checkpoint(weights_dir):  # a second run would overwrite the first one's
                raise UserError(f"experiment '{experiment_name}' already has checkpoints in {weights_dir}; "
                                f"pass --resume to continue it, or choose another --experiment_name")
            return cls(weights_dir)
        suffix = config["load_weights"] or checkpoints.find_resume_suffix(weights_dir)
        stored = checkpoints.load_state_dict_file(weights_dir, suffix)
        counters = dict(FRESH_STATE)
        counters.update({k: v for k, v in stored.items() if k in FRESH_STATE})
        if isinstance(stored.get("config"), dict):
            source = str(weights_dir / checkpoints.file_name("state_dict", suffix))
            merged, changed = utils.resume_config(config, stored["config"], explicit, source)
            config.update(merged)
            utils.validate_config(config)
            if changed:
                dist_utils.print0("resume: changed " + ", ".join(
                    f"--{k} {stored['config'][k]} -> {config[k]}" for k in changed))
        dist_utils.print0(f"Resuming from {weights_dir} ({checkpoints.file_name('state_dict', suffix)}, "
                          f"iteration {counters['itr']})")
        return cls(weights_dir, True, suffix, counters)

    @property
    def main_set_current(self) -> bool:
        """True when the main checkpoint set already holds this iteration (resumed from a copy
        after a crash cut the main set short, the final save must repair it)."""
        return (self.resumed and checkpoints.is_complete(self.weights_dir) and
                checkpoints.load_state_dict_file(self.weights_dir)["itr"] == self.counters["itr"])

    def restore(self, *, G: nn.Module, D: nn.Module, G_ema: nn.Module | None, G_optim: torch.optim.Optimizer,
                D_optim: torch.optim.Optimizer, modes: list[training_modes.TrainingMode],
                scalers: Sequence[Any], logs: Sequence[Any], data_id: dict, batches_per_epoch: int,
                config: dict) -> None:
        """Just before the loop. A resumed run loads the weights, optimizers (with the learning
        rates of `config`), mode state and loss scalers, cuts `logs` back to its iteration, sets the
        epoch from the data position, warns if the data changed, and restores this rank's RNG
        streams. A fresh run gives every rank but 0 a noise stream of its own."""
        if not self.resumed:
            if dist_utils.rank() > 0:
                torch.manual_seed(rank_seed(config["seed"]))
            return
        itr = self.counters["itr"]
        saved = checkpoints.load_weights(self.weights_dir, self.suffix, G=G, D=D, G_ema=G_ema,
                                         G_optim=G_optim, D_optim=D_optim)
        # The learning rates given now (or the run's) rule, not the ones inside the optimizers'
        # files, so that config.json and the optimizers agree.
        for optim, lr in ((G_optim, config["G_lr"]), (D_optim, config["D_lr"])):
            for group in optim.param_groups:
                group["lr"] = lr
        training_modes.load_modes(modes, self.weights_dir, self.suffix)
        for scaler, key in zip(scalers, ("D", "G")):
            if saved.get("scalers", {}).get(key):
                scaler.load_state_dict(saved["scalers"][key])
        for log in logs:
            log.truncate(itr)
        if not config["use_multiepoch_sampler"]:
            self.counters["epoch"] = itr // batches_per_epoch
        position = saved.get("data_position", {})
        if position and {k: position.get(k) for k in data_id} != data_id:
            dist_utils.print0(f"warning: the data changed since the checkpoint ({position} vs {data_id}); "
                              f"training continues but not on the exact same batches")
        rng = saved.get("rng", [])
        if len(rng) == dist_utils.world_size():
            checkpoints.restore_rng_state(rng[dist_utils.rank()])
        else:
            dist_utils.print0("warning: the checkpoint's RNG states are for another number of processes; "
                              "reseeding")
            torch.manual_seed(rank_seed(config["seed"] + itr))
