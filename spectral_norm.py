"""Spectral normalisation as BigGAN-PyTorch does it (Miyato et al. 2018).

One power-iteration step per training forward for the top `num_svs` singular values, the
`u{i}` (singular vector) and `sv{i}` (last estimate, for logging) buffers of BigGAN-PyTorch's
state dicts, and the SN conv / linear / embedding layers built on the `SN` mixin.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _gram_schmidt(x: torch.Tensor, ys: list[torch.Tensor]) -> torch.Tensor:
    """Remove from the row vector x its projections on the row vectors ys."""
    for y in ys:
        x = x - torch.mm(y, x.t()) * y / torch.mm(y, y.t())
    return x


def power_iteration(W: torch.Tensor, us: list[torch.Tensor], update: bool = True,
                    eps: float = 1e-12) -> tuple[list[torch.Tensor], list, list]:
    """One power-iteration step for the top len(us) singular values of the matrix W.

    The singular vectors are computed without grad; the returned singular values
    sigma_i = v_i W^T u_i^T keep the graph through W (as in BigGAN-PyTorch). With update,
    the u buffers are overwritten in place.
    """
    new_us, vs, svs = [], [], []
    for i, u in enumerate(us):
        with torch.no_grad():
            v = F.normalize(_gram_schmidt(torch.matmul(u, W), vs), eps=eps)
            vs.append(v)
        # v W^T is needed twice (for the new u and for sigma): compute it once, with grad.
        wv = torch.matmul(v, W.t())
        with torch.no_grad():
            u = F.normalize(_gram_schmidt(wv.detach(), new_us), eps=eps)
            new_us.append(u)
            if update:
                us[i].copy_(u)
        svs.append(torch.squeeze(torch.matmul(wv, u.t())))
    return svs, new_us, vs


class SN:
    """Mixin adding spectral normalisation to a layer with a `weight` (first dim = outputs)."""

    def _setup_sn(self, num_svs: int, num_itrs: int, num_outputs: int, eps: float) -> None:
        self.num_svs, self.num_itrs, self.eps = num_svs, num_itrs, eps
        for i in range(num_svs):
            self.register_buffer(f'u{i}', torch.randn(1, num_outputs))
            self.register_buffer(f'sv{i}', torch.ones(1))

    @property
    def u(self) -> list[torch.Tensor]:
        return [getattr(self, f'u{i}') for i in range(self.num_svs)]

    @property
    def sv(self) -> list[torch.Tensor]:
        """Singular-value estimates of the last training forward (logging only)."""
        return [getattr(self, f'sv{i}') for i in range(self.num_svs)]

    def W_(self) -> torch.Tensor:
        """The weight divided by its estimated top singular value."""
        # reshape, not view: a channels_last conv weight is not contiguous in (out, in*k*k) order.
        W = self.weight.reshape(self.weight.size(0), -1)
        # The power iteration runs in fp32 even under autocast: a bf16 u would drift.
        with torch.autocast(W.device.type, enabled=False):
            W32 = W.float()
            # In eval mode u is not updated, so repeated iterations give the same answer.
            n_itrs = self.num_itrs if self.training else 1
            for _ in range(n_itrs):
                svs, _, _ = power_iteration(W32, self.u, update=self.training, eps=self.eps)
            if self.training:
                with torch.no_grad():
                    for buf, sv in zip(self.sv, svs):
                        buf.copy_(sv)
        return self.weight / svs[0].to(self.weight.dtype)


class SNConv2d(nn.Conv2d, SN):
    """Conv2d with spectral normalisation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias: bool = True, num_svs: int = 1, num_itrs: int = 1,
                 eps: float = 1e-12):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                           dilation, groups, bias)
        self._setup_sn(num_svs, num_itrs, out_channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.W_(), self.bias)


class SNLinear(nn.Linear, SN):
    """Linear layer with spectral normalisation."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 num_svs: int = 1, num_itrs: int = 1, eps: float = 1e-12):
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._setup_sn(num_svs, num_itrs, out_features, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.W_(), self.bias)


class SNEmbedding(nn.Embedding, SN):
    """Embedding with spectral normalisation (u has num_embeddings entries, as in BigGAN-PyTorch)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, num_svs: int = 1,
                 num_itrs: int = 1, eps: float = 1e-12):
        nn.Embedding.__init__(self, num_embeddings, embedding_dim)
        self._setup_sn(num_svs, num_itrs, num_embeddings, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.embedding(x, self.W_())
