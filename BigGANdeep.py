"""BigGAN-deep generator and discriminator, state-dict compatible with BigGAN-PyTorch.

Bottleneck residual blocks (1x1 down by `channel_ratio`, two 3x3, 1x1 up), G_depth/D_depth
blocks per stage, channel-dropping (G) and channel-concatenating (D) shortcuts.
Selected with `--model BigGANdeep`; `G_D` and the config helpers live in BigGAN.py.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

import layers
from BigGAN import (G_D, G_arch, absorb_config, check_init, init_weights, parse_attention,  # noqa: F401
                    project, select_arch)  # (G_D re-exported for --model BigGANdeep)


class GBlock(nn.Module):
    """BigGAN-deep G block: BN-act-1x1, BN-act-(up)-3x3, BN-act-3x3, BN-act-1x1 + shortcut."""

    def __init__(self, in_channels: int, out_channels: int, which_conv: Callable,
                 which_bn: Callable, activation: nn.Module, upsample: Callable | None = None,
                 channel_ratio: int = 4):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.hidden_channels = in_channels // channel_ratio
        self.activation, self.upsample = activation, upsample
        hid = self.hidden_channels
        self.conv1 = which_conv(in_channels, hid, kernel_size=1, padding=0)
        self.conv2 = which_conv(hid, hid)
        self.conv3 = which_conv(hid, hid)
        self.conv4 = which_conv(hid, out_channels, kernel_size=1, padding=0)
        self.bn1 = which_bn(in_channels)
        self.bn2 = which_bn(hid)
        self.bn3 = which_bn(hid)
        self.bn4 = which_bn(hid)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        act = self.activation
        h = self.conv1(act(self.bn1(x, y)))
        h = act(self.bn2(h, y))
        if self.upsample is layers.upsample2x:
            h = layers.upsample2x_conv(self.conv2, h)
        else:
            if self.upsample is not None:
                h = self.upsample(h)
            h = self.conv2(h)
        h = self.conv3(act(self.bn3(h, y)))
        h = self.conv4(act(self.bn4(h, y)))
        if self.in_channels != self.out_channels:
            x = x[:, :self.out_channels]  # the shortcut drops channels
        if self.upsample is not None:
            x = self.upsample(x)
        return h + x


class DBlock(nn.Module):
    """BigGAN-deep D block: relu-1x1, act-3x3, act-3x3, act-(pool)-1x1 + concat shortcut."""

    def __init__(self, in_channels: int, out_channels: int, which_conv: Callable,
                 activation: nn.Module, downsample: nn.Module | None = None,
                 channel_ratio: int = 4):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.hidden_channels = out_channels // channel_ratio
        self.activation, self.downsample = activation, downsample
        hid = self.hidden_channels
        self.conv1 = which_conv(in_channels, hid, kernel_size=1, padding=0)
        self.conv2 = which_conv(hid, hid)
        self.conv3 = which_conv(hid, hid)
        self.conv4 = which_conv(hid, out_channels, kernel_size=1, padding=0)
        self.learnable_sc = in_channels != out_channels
        if self.learnable_sc:
            # Only the extra channels are learned; the input channels pass through.
            self.conv_sc = which_conv(in_channels, out_channels - in_channels,
                                      kernel_size=1, padding=0)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        if self.learnable_sc:
            x = torch.cat([x, self.conv_sc(x)], 1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The first ReLU is always out-of-place (F.relu), as in BigGAN-PyTorch.
        h = self.conv1(F.relu(x))
        h = self.conv2(self.activation(h))
        h = self.activation(self.conv3(self.activation(h)))
        if self.downsample is not None:
            h = self.downsample(h)
        return self.conv4(h) + self.shortcut(x)


def D_arch(ch: int = 64) -> dict[int, dict[str, list]]:
    """Channels per BigGAN-deep D stage, keyed by input resolution."""
    arch = {}
    for res, ins in {256: [1, 2, 4, 8, 8, 16], 128: [1, 2, 4, 8, 16],
                     64: [1, 2, 4, 8]}.items():
        outs = ins[1:] + [16]
        pows = [2 ** i for i in range(2, res.bit_length())][::-1][1:] + [4]
        arch[res] = {'in_channels': [ch * m for m in ins], 'out_channels': [ch * m for m in outs],
                     'downsample': [True] * len(ins), 'resolution': pows[:len(ins)]}
    arch[32] = {'in_channels': [ch * 4] * 3, 'out_channels': [ch * 4] * 3,
                'downsample': [True, True, False], 'resolution': [16] * 3}
    return arch


class Generator(nn.Module):
    """BigGAN-deep generator: [y, z] -> images in [-1, 1] (needs G_shared and hier)."""

    def __init__(self, G_ch: int = 128, G_depth: int = 2, dim_z: int = 128,
                 bottom_width: int = 4, resolution: int = 128, G_kernel_size: int = 3,
                 G_attn: str = '64', n_classes: int = 1000, num_G_SVs: int = 1,
                 num_G_SV_itrs: int = 1, G_shared: bool = True, shared_dim: int = 0,
                 hier: bool = True, cross_replica: bool = False, mybn: bool = False,
                 G_activation: nn.Module | str | None = None, G_lr: float = 5e-5,
                 G_B1: float = 0.0, G_B2: float = 0.999, adam_eps: float = 1e-8,
                 BN_eps: float = 1e-5, SN_eps: float = 1e-12, G_mixed_precision: bool = False,
                 G_fp16: bool = False, G_init: str = 'ortho', skip_init: bool = False,
                 no_optim: bool = False, G_param: str = 'SN', norm_style: str = 'bn',
                 **config: Any):
        super().__init__()
        check_init(G_init)
        if not (G_shared and hier):
            raise ValueError("BigGAN-deep needs --G_shared and --hier (its first linear layer "
                             "and conditional BNs take [z, shared(y)])")
        self.ch, self.G_depth, self.dim_z = G_ch, G_depth, dim_z
        self.bottom_width, self.resolution = bottom_width, resolution
        self.kernel_size, self.attention, self.n_classes = G_kernel_size, G_attn, n_classes
        self.G_shared, self.hier = G_shared, hier
        self.shared_dim = shared_dim if shared_dim > 0 else dim_z
        self.cross_replica, self.mybn = cross_replica, mybn
        self.activation = layers.get_activation(
            absorb_config(config, 'Generator', 'G', G_activation))
        self.init, self.G_param, self.norm_style = G_init, G_param, norm_style
        self.BN_eps, self.SN_eps = BN_eps, SN_eps
        self.fp16, self.mixed_precision, self.no_optim = G_fp16, G_mixed_precision, no_optim
        self.lr, self.B1, self.B2, self.adam_eps = G_lr, G_B1, G_B2, adam_eps
        self.arch = select_arch(G_arch(G_ch), resolution, 'BigGAN-deep Generator')

        self.which_conv, self.which_linear, _ = layers.layer_factory(
            G_param, num_G_SVs, num_G_SV_itrs, SN_eps, G_kernel_size)
        self.which_embedding = nn.Embedding
        self.which_bn = functools.partial(
            layers.ccbn, which_linear=functools.partial(self.which_linear, bias=False),
            cross_replica=cross_replica, mybn=mybn, input_size=self.shared_dim + dim_z,
            norm_style=norm_style, eps=BN_eps)

        self.shared = self.which_embedding(n_classes, self.shared_dim)
        self.linear = self.which_linear(dim_z + self.shared_dim,
                                        self.arch['in_channels'][0] * bottom_width ** 2)
        attn = parse_attention(G_attn, self.arch['resolution'], '--G_attn')
        blocks = []
        for i, (cin, cout) in enumerate(zip(self.arch['in_channels'], self.arch['out_channels'])):
            for g in range(G_depth):
                last = g == G_depth - 1
                blocks.append([GBlock(cin, cout if last else cin, self.which_conv, self.which_bn,
                                      self.activation,
                                      layers.upsample2x if self.arch['upsample'][i] and last
                                      else None)])
            if self.arch['resolution'][i] in attn:
                blocks[-1].append(layers.Attention(cout, self.which_conv))
        self.blocks = nn.ModuleList(nn.ModuleList(stage) for stage in blocks)
        self.output_layer = nn.Sequential(
            layers.bn(self.arch['out_channels'][-1], cross_replica=cross_replica, mybn=mybn),
            self.activation, self.which_conv(self.arch['out_channels'][-1], 3))
        self.param_count = 0 if skip_init else init_weights(self, G_init)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z: [N, dim_z]; y: G.shared(classes) [N, shared_dim]."""
        # [y, z] in this order: BigGAN-PyTorch's released weights expect it.
        z = torch.cat([y, z], 1)
        h = self.linear(z)
        h = h.view(h.size(0), -1, self.bottom_width, self.bottom_width)
        for stage in self.blocks:
            for block in stage:
                h = block(h, z)
        return torch.tanh(self.output_layer(h))


class Discriminator(nn.Module):
    """BigGAN-deep projection discriminator."""

    def __init__(self, D_ch: int = 64, D_wide: bool = True, D_depth: int = 2,
                 resolution: int = 128, D_kernel_size: int = 3, D_attn: str = '64',
                 n_classes: int = 1000, num_D_SVs: int = 1, num_D_SV_itrs: int = 1,
                 D_activation: nn.Module | str | None = None, D_lr: float = 2e-4,
                 D_B1: float = 0.0, D_B2: float = 0.999, adam_eps: float = 1e-8,
                 SN_eps: float = 1e-12, output_dim: int = 1, D_mixed_precision: bool = False,
                 D_fp16: bool = False, D_init: str = 'ortho', skip_init: bool = False,
                 D_param: str = 'SN', **config: Any):
        super().__init__()
        check_init(D_init)
        self.ch, self.D_wide, self.D_depth, self.resolution = D_ch, D_wide, D_depth, resolution
        self.kernel_size, self.attention, self.n_classes = D_kernel_size, D_attn, n_classes
        self.activation = layers.get_activation(
            absorb_config(config, 'Discriminator', 'D', D_activation))
        self.init, self.D_param, self.SN_eps = D_init, D_param, SN_eps
        self.fp16, self.mixed_precision = D_fp16, D_mixed_precision
        self.lr, self.B1, self.B2, self.adam_eps = D_lr, D_B1, D_B2, adam_eps
        self.arch = select_arch(D_arch(D_ch), resolution, 'BigGAN-deep Discriminator')
        self.which_conv, self.which_linear, self.which_embedding = layers.layer_factory(
            D_param, num_D_SVs, num_D_SV_itrs, SN_eps, D_kernel_size)

        self.input_conv = self.which_conv(3, self.arch['in_channels'][0])
        attn = parse_attention(D_attn, self.arch['resolution'], '--D_attn')
        blocks = []
        for i, (cin, cout) in enumerate(zip(self.arch['in_channels'], self.arch['out_channels'])):
            stage = [DBlock(cin if d == 0 else cout, cout, self.which_conv, self.activation,
                            nn.AvgPool2d(2) if self.arch['downsample'][i] and d == 0 else None)
                     for d in range(D_depth)]
            if self.arch['resolution'][i] in attn:
                stage.append(layers.Attention(cout, self.which_conv))
            blocks.append(nn.ModuleList(stage))
        self.blocks = nn.ModuleList(blocks)
        self.linear = self.which_linear(self.arch['out_channels'][-1], output_dim)
        self.embed = self.which_embedding(n_classes, self.arch['out_channels'][-1])
        self.param_count = 0 if skip_init else init_weights(self, D_init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features h [N, C]: activations summed over space, before D.linear."""
        h = self.input_conv(x)
        for stage in self.blocks:
            for block in stage:
                h = block(h)
        return torch.sum(self.activation(h), [2, 3])

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                return_features: bool = False):
        """Logits [N, output_dim] (y=None: no projection term); (logits, h) with return_features."""
        return project(self, self.features(x), y, return_features)
