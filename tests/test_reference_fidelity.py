"""Our models against BigGAN-PyTorch's forward passes, op for op, on the same weights.

The reference functions below follow the operation order of BigGAN-PyTorch's `layers.py`,
`BigGAN.py` and `BigGANdeep.py` (written here from that code's documented order, using our
modules' parameters), including where it deliberately uses an out-of-place `F.relu`
whatever `--D_nl` says. Models are put in BigGAN-PyTorch's two-step resampling form and in
eval mode with non-trivial batch-norm statistics and attention gains, so that every block
contributes and the comparison is exact up to float rounding.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import BigGAN
import BigGANdeep
import layers


pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_activation(name: str) -> nn.Module:
    """BigGAN-PyTorch's utils.activation_dict entry for a --G_nl/--D_nl name."""
    return nn.ReLU(inplace=name in ('inplace_relu', 'ir'))


def _perturb(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random BN running statistics and attention gains (at init they make BN and attention
    identities, which would hide op-order differences); two-step resampling; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    layers.unfuse_resampling(model)
    for name, buf in model.named_buffers():
        if name.endswith('running_mean'):
            buf.copy_(0.3 * torch.randn(buf.shape, generator=gen))
        elif name.endswith('running_var'):
            buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, layers.Attention):
                m.gamma.fill_(0.7)
    return model.eval()


def _is_block(m: nn.Module) -> bool:
    return not isinstance(m, layers.Attention)


# ----------------------------------------------------------------------------- BigGAN
def ref_biggan_G(G: BigGAN.Generator, z, y, act: nn.Module):
    if G.hier:
        zs = torch.split(z, G.z_chunk_size, 1)
        z = zs[0]
        ys = [torch.cat([y, item], 1) for item in zs[1:]]
    else:
        ys = [y] * len(G.blocks)
    h = G.linear(z).view(z.shape[0], -1, G.bottom_width, G.bottom_width)
    for stage, y_stage in zip(G.blocks, ys):
        for b in stage:
            if not _is_block(b):
                h = b(h, y_stage)
                continue
            x = h
            h = act(b.bn1(h, y_stage))
            h, x = F.interpolate(h, scale_factor=2), F.interpolate(x, scale_factor=2)
            h = b.conv1(h)
            h = b.conv2(act(b.bn2(h, y_stage)))
            h = h + b.conv_sc(x)
    bn, _, conv = G.output_layer
    return torch.tanh(conv(act(bn(h))))


def ref_biggan_D(D: BigGAN.Discriminator, x, y, act: nn.Module):
    h = x
    for index, stage in enumerate(D.blocks):
        for b in stage:
            if not _is_block(b):
                h = b(h)
                continue
            inp = h
            # BigGAN-PyTorch: "This line *must* be an out-of-place ReLU" (the shortcut
            # reads the block's input).
            h = F.relu(inp) if b.preactivation else inp
            h = b.conv2(act(b.conv1(h)))
            if b.downsample is not None:
                h = F.avg_pool2d(h, 2)
            sc = inp
            if b.preactivation:
                if b.learnable_sc:
                    sc = b.conv_sc(sc)
                if b.downsample is not None:
                    sc = F.avg_pool2d(sc, 2)
            else:
                if b.downsample is not None:
                    sc = F.avg_pool2d(sc, 2)
                if b.learnable_sc:
                    sc = b.conv_sc(sc)
            h = h + sc
    h = torch.sum(act(h), [2, 3])
    return D.linear(h) + torch.sum(D.embed(y) * h, 1, keepdim=True)


# ----------------------------------------------------------------------------- BigGAN-deep
def ref_deep_G(G: BigGANdeep.Generator, z, y, act: nn.Module):
    z = torch.cat([y, z], 1)  # BigGANdeep.py: class embedding first
    y = z
    h = G.linear(z).view(z.shape[0], -1, G.bottom_width, G.bottom_width)
    for stage in G.blocks:
        for b in stage:
            if not _is_block(b):
                h = b(h, y)
                continue
            x = h
            h = b.conv1(act(b.bn1(h, y)))
            h = act(b.bn2(h, y))
            if b.in_channels != b.out_channels:
                x = x[:, :b.out_channels]
            if b.upsample is not None:
                h, x = F.interpolate(h, scale_factor=2), F.interpolate(x, scale_factor=2)
            h = b.conv2(h)
            h = b.conv3(act(b.bn3(h, y)))
            h = b.conv4(act(b.bn4(h, y)))
            h = h + x
    bn, _, conv = G.output_layer
    return torch.tanh(conv(act(bn(h))))


def ref_deep_D(D: BigGANdeep.Discriminator, x, y, act: nn.Module):
    h = D.input_conv(x)
    for stage in D.blocks:
        for b in stage:
            if not _is_block(b):
                h = b(h)
                continue
            inp = h
            h = b.conv1(F.relu(inp))
            h = b.conv2(act(h))
            h = act(b.conv3(act(h)))
            if b.downsample is not None:
                h = F.avg_pool2d(h, 2)
            h = b.conv4(h)
            sc = F.avg_pool2d(inp, 2) if b.downsample is not None else inp
            if b.learnable_sc:
                sc = torch.cat([sc, b.conv_sc(sc)], 1)
            h = h + sc
    h = torch.sum(act(h), [2, 3])
    return D.linear(h) + torch.sum(D.embed(y) * h, 1, keepdim=True)


REFERENCES = {'BigGAN': (BigGAN, ref_biggan_G, ref_biggan_D),
              'BigGANdeep': (BigGANdeep, ref_deep_G, ref_deep_D)}


@pytest.mark.parametrize('nl', sorted(layers.ACTIVATIONS))
@pytest.mark.parametrize('family,resolution,attn', [
    ('BigGAN', 32, '16'), ('BigGAN', 64, '32'), ('BigGANdeep', 32, '16'),
    ('BigGANdeep', 64, '32')])
def test_models_equal_biggan_pytorch_op_order(family, resolution, attn, nl):
    module, ref_G, ref_D = REFERENCES[family]
    torch.manual_seed(0)
    G = module.Generator(G_ch=8, resolution=resolution, G_attn=attn, n_classes=5,
                         G_shared=True, shared_dim=6, dim_z=20, hier=True, G_activation=nl)
    D = module.Discriminator(D_ch=8, resolution=resolution, D_attn=attn, n_classes=5,
                             D_activation=nl)
    _perturb(G), _perturb(D)
    act = _reference_activation(nl)
    z, cls = torch.randn(4, G.dim_z), torch.tensor([0, 1, 3, 4])
    with torch.no_grad():
        y = G.shared(cls)
        img = G(z, y)
        assert torch.allclose(img, ref_G(G, z, y, act), atol=1e-5)
        # Mean-free images with unit-scale features, so that a rectified shortcut shows.
        x = torch.randn(4, 3, resolution, resolution)
        out = D(x, cls)
        ref = ref_D(D, x, cls, act)
        assert out.shape == (4, 1)
        assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4), (out - ref).abs().max()


def test_the_comparison_catches_the_old_op_orders(monkeypatch):
    """The old DBlock (in-place activation on the block input, so the shortcut saw a
    rectified input) and the old BigGAN-deep [z, y] order both fail the comparison above."""
    torch.manual_seed(0)
    D = _perturb(BigGAN.Discriminator(D_ch=8, resolution=32, D_attn='0', n_classes=5,
                                      D_activation='inplace_relu'))
    G = _perturb(BigGANdeep.Generator(G_ch=8, resolution=32, G_attn='0', n_classes=5,
                                      shared_dim=6, dim_z=20))
    x, cls = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 3, 4])
    z, y = torch.randn(4, 20), torch.randn(4, 6)
    act = nn.ReLU(inplace=True)

    def old_dblock_forward(self, x):
        h = self.activation(x) if self.preactivation else x
        h = self.conv2(self.activation(self.conv1(h)))
        if self.downsample is not None:
            h = self.downsample(h)
        return h + self.shortcut(x)

    def old_deep_forward(self, z, y):
        z = torch.cat([z, y], 1)
        h = self.linear(z).view(z.shape[0], -1, self.bottom_width, self.bottom_width)
        for stage in self.blocks:
            for block in stage:
                h = block(h, z)
        return torch.tanh(self.output_layer(h))

    with torch.no_grad():
        assert torch.allclose(D(x, cls), ref_biggan_D(D, x, cls, act), rtol=1e-4, atol=1e-4)
        assert torch.allclose(G(z, y), ref_deep_G(G, z, y, act), atol=1e-5)
        monkeypatch.setattr(layers.DBlock, 'forward', old_dblock_forward)
        monkeypatch.setattr(BigGANdeep.Generator, 'forward', old_deep_forward)
        assert (D(x, cls) - ref_biggan_D(D, x, cls, act)).abs().max() > 1e-2
        assert (G(z, y) - ref_deep_G(G, z, y, act)).abs().max() > 1e-2
