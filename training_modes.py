"""Training modes: what DiffAugment, InsGen and Re-GAN add to BigGAN's iteration.

`GAN_training_function` runs BigGAN-PyTorch's iteration and calls the hooks of
`TrainingMode` at fixed points; every hook does nothing by default, so a mode overrides
only what it changes. `MODES` maps the flag that switches a mode on to its class; a new
mode is one class (one file) plus one entry here:

    class MyMode(TrainingMode):
        name = "mine"
        def extra_G_loss(self, D, G_z): return 0.1 * G_z.square().mean()
    MODES["my_flag"] = MyMode   # `--my_flag` then turns it on

`build_modes(G, D, config, n_train)` builds the modes a config asks for, in MODES order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

import checkpoints


class TrainingMode:
    """Hooks into one BigGAN iteration (see train_fns.GAN_training_function for the order).

    `from_config` builds the mode; `stats` are logged to `logs/<exp>/modes.jsonl`;
    `state_items`/`load_items` are extra checkpoint files (exact resume)."""

    name = "mode"

    @classmethod
    def from_config(cls, G: nn.Module, D: nn.Module, config: dict, n_train: int) -> "TrainingMode":
        return cls()

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Applied to every image D sees (real and fake, D and G steps)."""
        return images

    def begin_iteration(self, itr: int, G_optim: torch.optim.Optimizer) -> None:
        """Before the D steps of iteration `itr`."""

    def before_D_step(self) -> None:
        """After D's gradients are zeroed, before the accumulation micro-batches."""

    def extra_D_loss(self, D: nn.Module, x_real: torch.Tensor, G_z: torch.Tensor) -> torch.Tensor | None:
        """Added to D's hinge loss of one micro-batch (inside autocast)."""
        return None

    def after_D_step(self, D: nn.Module, scaler: torch.amp.GradScaler, before_step: bool) -> None:
        """Around D's optimizer step: once with before_step=True (gradients final), once after
        the step (before the scaler's update)."""

    def before_G_step(self) -> None:
        """Before G's accumulation micro-batches."""

    def extra_G_loss(self, D: nn.Module, G_z: torch.Tensor) -> torch.Tensor | None:
        """Added to G's loss of one micro-batch (inside autocast)."""
        return None

    def after_G_backward(self) -> None:
        """After G's last backward pass, before the loss is checked."""

    def before_G_optimizer_step(self) -> None:
        """G's gradients are final (unscaled when ortho regularisation ran)."""

    def after_G_optimizer_step(self) -> None:
        """After G's optimizer step, before the EMA update."""

    def after_ema_update(self, G_ema: nn.Module) -> None:
        """After the EMA update (only with --ema)."""

    def stats(self) -> dict[str, float]:
        return {}

    def state_items(self) -> dict[str, Any]:
        return {}

    def load_items(self, load: Callable[[str], Any]) -> None:
        """Restore what `state_items` saved; `load(item)` reads one checkpoint file."""


class DiffAugmentMode(TrainingMode):
    """DiffAugment (Zhao et al. 2020): the same differentiable augmentation on every D input."""

    name = "diffaug"

    def __init__(self, policy: str):
        from diffaug import DiffAugment, parse_policy
        parse_policy(policy)  # fail at start-up on a bad policy
        self.policy, self._augment = policy, DiffAugment

    @classmethod
    def from_config(cls, G, D, config, n_train):
        return cls(config["diffaug"])

    def augment(self, images):
        return self._augment(images, self.policy)


class InsGenMode(TrainingMode):
    """InsGen (Yang et al. 2021): contrastive instance discrimination heads on D."""

    name = "insgen"

    def __init__(self, insgen: nn.Module, optim: torch.optim.Optimizer):
        self.insgen, self.optim = insgen, optim

    @classmethod
    def from_config(cls, G, D, config, n_train):
        from insgen import InsGen
        insgen = InsGen.from_config(D, config, n_train).to(next(D.parameters()).device)
        return cls(insgen, torch.optim.Adam(insgen.trainable_parameters(), lr=D.lr, betas=(D.B1, D.B2),
                                            eps=D.adam_eps, foreach=True))

    def before_D_step(self):
        self.optim.zero_grad(set_to_none=True)

    def extra_D_loss(self, D, x_real, G_z):
        return self.insgen.d_loss(D, self.insgen.make_views(x_real), self.insgen.make_views(G_z.detach()))

    def after_D_step(self, D, scaler, before_step):
        if before_step:
            self.insgen.sync_head_grads()
        else:
            scaler.step(self.optim)
            self.insgen.update_momentum(D)

    def before_G_step(self):
        self.insgen.heads_requires_grad(False)

    def extra_G_loss(self, D, G_z):
        return self.insgen.g_loss(D, self.insgen.make_views(G_z))

    def after_G_backward(self):
        self.insgen.heads_requires_grad(True)

    def stats(self):
        return {**self.insgen.stats, **self.insgen.queue_fill()}

    def state_items(self):
        return {"InsGen": self.insgen.state_dict(), "InsGen_optim": self.optim.state_dict()}

    def load_items(self, load):
        self.insgen.load_state_dict(load("InsGen"))
        self.optim.load_state_dict(load("InsGen_optim"))


class ReGANMode(TrainingMode):
    """Re-GAN (Saxena et al. 2023): prune and regrow G's connections in cycles."""

    name = "regan"

    def __init__(self, regan: Any, G: nn.Module):
        self.regan = regan

    @classmethod
    def from_config(cls, G, D, config, n_train):
        from regan import ReGAN
        return cls(ReGAN.from_config(G, config), G)

    def begin_iteration(self, itr, G_optim):
        self.regan.step(itr)
        for group in G_optim.param_groups:  # the training step has just set the base rate
            group["lr"] *= self.regan.lr_scale()

    def before_G_optimizer_step(self):
        self.regan.mask_grads()

    def after_G_optimizer_step(self):
        self.regan.mask_weights()

    def after_ema_update(self, G_ema):
        self.regan.mask_weights(G_ema)

    def stats(self):
        return self.regan.stats()

    def state_items(self):
        return {"ReGAN": self.regan.state_dict()}

    def load_items(self, load):
        self.regan.load_state_dict(load("ReGAN"))


# flag -> mode class; a mode is on when its flag is truthy in the config.
MODES: dict[str, type[TrainingMode]] = {"diffaug": DiffAugmentMode, "insgen": InsGenMode, "regan": ReGANMode}


def build_modes(G: nn.Module, D: nn.Module, config: dict, n_train: int) -> list[TrainingMode]:
    """The modes `config` switches on, in MODES order."""
    return [cls.from_config(G, D, config, n_train) for flag, cls in MODES.items() if config.get(flag)]


def compose_augment(modes: list[TrainingMode]) -> Callable[[torch.Tensor], torch.Tensor]:
    """One function applying every mode's `augment` in order."""
    def augment(images: torch.Tensor) -> torch.Tensor:
        for mode in modes:
            images = mode.augment(images)
        return images
    return augment


def checkpoint_items(modes: list[TrainingMode]) -> dict[str, Any]:
    """Every mode's extra checkpoint files."""
    return {k: v for m in modes for k, v in m.state_items().items()}


def load_modes(modes: list[TrainingMode], folder: str | Path, suffix: str | None) -> None:
    """Restore every mode from a checkpoint set."""
    for m in modes:
        m.load_items(lambda item: checkpoints.load_item(folder, item, suffix))
