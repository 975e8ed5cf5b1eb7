"""GAN losses. Hinge loss is the default, as in BigGAN-PyTorch; `--loss dcgan` trains with the
non-saturating loss of DCGAN (and StyleGAN) instead.

Each discriminator loss returns its real and fake parts separately so that both can
be logged; the training step adds them.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F


def loss_hinge_dis(dis_fake: torch.Tensor, dis_real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge loss of D: (mean relu(1 - D(x)), mean relu(1 + D(G(z))))."""
    loss_real = torch.mean(F.relu(1. - dis_real))
    loss_fake = torch.mean(F.relu(1. + dis_fake))
    return loss_real, loss_fake


def loss_hinge_gen(dis_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of G: -mean D(G(z))."""
    return -torch.mean(dis_fake)


def loss_dcgan_dis(dis_fake: torch.Tensor, dis_real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-saturating DCGAN loss of D, split into its real and fake parts."""
    return torch.mean(F.softplus(-dis_real)), torch.mean(F.softplus(dis_fake))


def loss_dcgan_gen(dis_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating DCGAN loss of G."""
    return torch.mean(F.softplus(-dis_fake))


LossFn = Callable[..., Any]
# --loss: name -> (G's loss, D's loss). BigGAN-PyTorch trains with the hinge loss only.
LOSSES: dict[str, tuple[LossFn, LossFn]] = {
    "hinge": (loss_hinge_gen, loss_hinge_dis),
    "dcgan": (loss_dcgan_gen, loss_dcgan_dis),
}
