"""Building blocks of BigGAN and BigGAN-deep, state-dict compatible with BigGAN-PyTorch.

Activations, plain / class-conditional / cross-replica batch norm, SAGAN self-attention, the
fused 2x resampling convs, the BigGAN residual blocks and ProGAN's minibatch-std layer (the SN
layers live in spectral_norm.py). Layer choices for `--G_param/--D_param` are made once by
`layer_factory` and handed to the blocks as `which_conv` etc.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from spectral_norm import SN, SNConv2d, SNEmbedding, SNLinear

# Activation names accepted by --G_nl / --D_nl (BigGAN-PyTorch's utils.activation_dict).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    'relu': lambda: nn.ReLU(inplace=False),
    'inplace_relu': lambda: nn.ReLU(inplace=True),
    'ir': lambda: nn.ReLU(inplace=True),
}


def get_activation(name_or_module: str | nn.Module) -> nn.Module:
    """Return the activation module for a --G_nl/--D_nl name (modules pass through)."""
    if isinstance(name_or_module, nn.Module):
        return name_or_module
    if name_or_module not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name_or_module!r} (--G_nl/--D_nl); "
                         f"valid: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name_or_module]()


class identity(nn.Module):
    """Pass-through (G.shared when G_shared is off)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# ----------------------------------------------------------------------------- layer factory
def _svd_unsupported(*_a, **_k):
    raise ValueError("--G_param/--D_param SVD is not implemented (BigGAN-PyTorch lists it in "
                     "--help but has no SVD layers either); use SN or none")


PARAMETERIZATIONS = ('SN', 'none')


def layer_factory(param: str, num_svs: int = 1, num_itrs: int = 1, eps: float = 1e-12,
                  kernel_size: int = 3) -> tuple[Callable, Callable, Callable]:
    """(which_conv, which_linear, which_embedding) for --G_param/--D_param in SN|none.

    which_conv defaults to a kernel_size x kernel_size 'same' conv (callers override
    kernel_size=1, padding=0 for 1x1 convs).
    """
    if param == 'SVD':
        _svd_unsupported()
    if param not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterisation {param!r} (--G_param/--D_param); "
                         f"valid: {list(PARAMETERIZATIONS)}")
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel size must be odd (--G_kernel_size/--D_kernel_size), "
                         f"got {kernel_size}")
    pad = kernel_size // 2
    if param == 'SN':
        sn = dict(num_svs=num_svs, num_itrs=num_itrs, eps=eps)
        return (functools.partial(SNConv2d, kernel_size=kernel_size, padding=pad, **sn),
                functools.partial(SNLinear, **sn), functools.partial(SNEmbedding, **sn))
    return (functools.partial(nn.Conv2d, kernel_size=kernel_size, padding=pad),
            nn.Linear, nn.Embedding)


# ----------------------------------------------------------------------------- batch norm
def fused_bn(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, gain=None, bias=None,
             eps: float = 1e-5) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * gain + bias as one scale and one shift."""
    scale = torch.rsqrt(var + eps)
    if gain is not None:
        scale = scale * gain
    shift = mean * scale
    if bias is not None:
        shift = shift - bias
    return x * scale - shift


def manual_bn(x: torch.Tensor, gain=None, bias=None, eps: float = 1e-5):
    """Batch norm from E[x] and E[x^2] (in fp32); returns (out, mean, var)."""
    xf = x.float()
    m = torch.mean(xf, [0, 2, 3], keepdim=True)
    var = torch.mean(xf ** 2, [0, 2, 3], keepdim=True) - m ** 2
    m, var = m.to(x.dtype), var.to(x.dtype)
    return fused_bn(x, m, var, gain, bias, eps), m.squeeze(), var.squeeze()


class myBN(nn.Module):
    """BigGAN-PyTorch's --mybn batch norm, which supports standing statistics."""

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer('stored_mean', torch.zeros(num_channels))
        self.register_buffer('stored_var', torch.ones(num_channels))
        self.register_buffer('accumulation_counter', torch.zeros(1))
        self.accumulate_standing = False

    def reset_stats(self) -> None:
        """Zero the statistics before accumulating standing stats."""
        self.stored_mean.zero_()
        self.stored_var.zero_()
        self.accumulation_counter.zero_()

    def forward(self, x: torch.Tensor, gain=None, bias=None) -> torch.Tensor:
        if self.training:
            out, mean, var = manual_bn(x, gain, bias, self.eps)
            with torch.no_grad():
                if self.accumulate_standing:
                    self.stored_mean.add_(mean)
                    self.stored_var.add_(var)
                    self.accumulation_counter.add_(1.0)
                else:
                    self.stored_mean.mul_(1 - self.momentum).add_(mean * self.momentum)
                    self.stored_var.mul_(1 - self.momentum).add_(var * self.momentum)
            return out
        mean, var = self.stored_mean.view(1, -1, 1, 1), self.stored_var.view(1, -1, 1, 1)
        if self.accumulate_standing:
            mean, var = mean / self.accumulation_counter, var / self.accumulation_counter
        return fused_bn(x, mean, var, gain, bias, self.eps)


def _group_norm(x: torch.Tensor, norm_style: str) -> torch.Tensor:
    """--norm_style gn / gn_ch_N (N channels per group) / gn_grp_N (N groups)."""
    if 'ch' in norm_style:
        groups = max(x.shape[1] // int(norm_style.split('_')[-1]), 1)
    elif 'grp' in norm_style:
        groups = int(norm_style.split('_')[-1])
    else:
        groups = 16
    return F.group_norm(x, groups)


NORM_STYLES = ('bn', 'in', 'gn', 'nonorm')


def _check_norm_style(norm_style: str) -> None:
    if not (norm_style in NORM_STYLES or norm_style.startswith(('gn_ch_', 'gn_grp_'))):
        raise ValueError(f"unknown --norm_style {norm_style!r}; valid: bn, in, gn, gn_ch_N, "
                         f"gn_grp_N, nonorm")


class ccbn(nn.Module):
    """Class-conditional batch norm: gain = 1 + gain(y), bias = bias(y) per sample.

    `which_linear` is a linear layer on the shared embedding (G_shared) or an embedding
    table on class indices. The normalisation is BigGAN-PyTorch's: functional batch norm on
    `stored_mean/stored_var` buffers, or with cross_replica an inner affine-free
    nn.BatchNorm2d `bn` (converted to nn.SyncBatchNorm by sync_batchnorm.convert_model),
    or with mybn a myBN `bn`.
    """

    def __init__(self, output_size: int, input_size: int, which_linear: Callable,
                 eps: float = 1e-5, momentum: float = 0.1, cross_replica: bool = False,
                 mybn: bool = False, norm_style: str = 'bn'):
        super().__init__()
        _check_norm_style(norm_style)
        self.output_size, self.input_size = output_size, input_size
        self.gain = which_linear(input_size, output_size)
        self.bias = which_linear(input_size, output_size)
        self.eps, self.momentum = eps, momentum
        self.cross_replica, self.mybn, self.norm_style = cross_replica, mybn, norm_style
        if cross_replica:
            self.bn = nn.BatchNorm2d(output_size, eps=eps, momentum=momentum, affine=False)
        elif mybn:
            self.bn = myBN(output_size, eps, momentum)
        elif norm_style in ('bn', 'in'):
            self.register_buffer('stored_mean', torch.zeros(output_size))
            self.register_buffer('stored_var', torch.ones(output_size))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gain = (1 + self.gain(y)).view(y.size(0), -1, 1, 1)
        bias = self.bias(y).view(y.size(0), -1, 1, 1)
        if self.mybn and not self.cross_replica:
            return self.bn(x, gain=gain, bias=bias)
        if self.cross_replica:
            out = self.bn(x)
        elif self.norm_style == 'bn':
            out = F.batch_norm(x, self.stored_mean, self.stored_var, None, None,
                               self.training, self.momentum, self.eps)
        elif self.norm_style == 'in':
            out = F.instance_norm(x, self.stored_mean, self.stored_var, None, None,
                                  self.training, self.momentum, self.eps)
        elif self.norm_style.startswith('gn'):
            out = _group_norm(x, self.norm_style)
        else:
            out = x
        return out * gain + bias

    def extra_repr(self) -> str:
        return (f'out: {self.output_size}, in: {self.input_size}, '
                f'cross_replica={self.cross_replica}')


class bn(nn.Module):
    """Unconditional batch norm with BigGAN-PyTorch's parameter/buffer names (gain, bias,
    stored_mean, stored_var; or an inner `bn` with cross_replica / mybn)."""

    def __init__(self, output_size: int, eps: float = 1e-5, momentum: float = 0.1,
                 cross_replica: bool = False, mybn: bool = False):
        super().__init__()
        self.output_size = output_size
        self.gain = nn.Parameter(torch.ones(output_size))
        self.bias = nn.Parameter(torch.zeros(output_size))
        self.eps, self.momentum = eps, momentum
        self.cross_replica, self.mybn = cross_replica, mybn
        if cross_replica:
            self.bn = nn.BatchNorm2d(output_size, eps=eps, momentum=momentum, affine=False)
        elif mybn:
            self.bn = myBN(output_size, eps, momentum)
        else:
            self.register_buffer('stored_mean', torch.zeros(output_size))
            self.register_buffer('stored_var', torch.ones(output_size))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.cross_replica:
            return self.bn(x) * self.gain.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.mybn:
            return self.bn(x, gain=self.gain.view(1, -1, 1, 1), bias=self.bias.view(1, -1, 1, 1))
        return F.batch_norm(x, self.stored_mean, self.stored_var, self.gain, self.bias,
                            self.training, self.momentum, self.eps)


# ----------------------------------------------------------------------------- attention
class Attention(nn.Module):
    """SAGAN non-local block; gamma starts at 0 so the block starts as the identity."""

    def __init__(self, ch: int, which_conv: Callable = SNConv2d, name: str = 'attention'):
        super().__init__()
        self.ch = ch
        one = dict(kernel_size=1, padding=0, bias=False)
        self.theta = which_conv(ch, ch // 8, **one)
        self.phi = which_conv(ch, ch // 8, **one)
        self.g = which_conv(ch, ch // 2, **one)
        self.o = which_conv(ch // 2, ch, **one)
        self.gamma = nn.Parameter(torch.tensor(0.), requires_grad=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        n, _, hgt, wid = x.shape
        theta = self.theta(x).reshape(n, self.ch // 8, hgt * wid)
        phi = F.max_pool2d(self.phi(x), [2, 2]).reshape(n, self.ch // 8, hgt * wid // 4)
        g = F.max_pool2d(self.g(x), [2, 2]).reshape(n, self.ch // 2, hgt * wid // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).view(n, self.ch // 2, hgt, wid))
        return self.gamma * o + x


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling (BigGAN's F.interpolate(scale_factor=2))."""
    return F.interpolate(x, scale_factor=2)


# ----------------------------------------------------------------------------- fused resampling
# Nearest 2x upsampling followed by a 3x3 conv, and a 3x3 conv followed by 2x2 average
# pooling, are each one linear map: a stride-2 (transposed) conv with a 4x4 kernel built
# from the 3x3 one. Same function, 0.44x the multiply-adds; results differ from the
# two-step form only by float rounding. Anything but a plain 3x3 'same' conv takes the
# two-step path.
def conv_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The weight a conv layer uses in its forward (spectrally normalised for SN layers)."""
    return conv.W_() if isinstance(conv, SN) else conv.weight


def _fusable(conv: nn.Module) -> bool:
    return (type(conv) in (nn.Conv2d, SNConv2d) and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1) and conv.padding == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding_mode == 'zeros')


def _box2(w: torch.Tensor) -> torch.Tensor:
    """(k+1)x(k+1) kernel: sum of the kxk kernel w at the four 0/1 shifts."""
    return (F.pad(w, (0, 1, 0, 1)) + F.pad(w, (1, 0, 0, 1))
            + F.pad(w, (0, 1, 1, 0)) + F.pad(w, (1, 0, 1, 0)))


def is_avgpool2(m: nn.Module | None) -> bool:
    """True for nn.AvgPool2d(2) (the BigGAN D's downsampling)."""
    return (isinstance(m, nn.AvgPool2d) and m.kernel_size in (2, (2, 2))
            and m.stride in (2, (2, 2)) and m.padding in (0, (0, 0)) and not m.ceil_mode)


def conv_avgpool2(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """F.avg_pool2d(conv(x), 2) computed as one stride-2 conv."""
    if not (_fusable(conv) and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0):
        return F.avg_pool2d(conv(x), 2)
    return F.conv2d(x, _box2(conv_weight(conv)) * 0.25, conv.bias, 2, 1)


def upsample2x_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """conv(upsample2x(x)) computed as one stride-2 transposed conv."""
    if not _fusable(conv):
        return conv(upsample2x(x))
    kernel = _box2(conv_weight(conv).flip(2, 3))
    return F.conv_transpose2d(x, kernel.transpose(0, 1), conv.bias, 2, 1)


def unfuse_resampling(model: nn.Module) -> nn.Module:
    """Make every block of model resample in BigGAN-PyTorch's two-step order (in place).

    The same function up to float rounding, but slower; for checks and benchmarks.
    """
    for m in model.modules():
        if getattr(m, 'upsample', None) is upsample2x:
            m.upsample = functools.partial(F.interpolate, scale_factor=2)
        if is_avgpool2(getattr(m, 'downsample', None)):
            m.downsample = nn.Sequential(m.downsample)
    return model


# ----------------------------------------------------------------------------- blocks
class GBlock(nn.Module):
    """BigGAN generator residual block: BN-act-(up)-conv-BN-act-conv + (up)-1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, which_conv: Callable = nn.Conv2d,
                 which_bn: Callable = bn, activation: nn.Module | None = None,
                 upsample: Callable | None = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.which_conv, self.which_bn = which_conv, which_bn
        self.activation, self.upsample = activation, upsample
        self.conv1 = which_conv(in_channels, out_channels)
        self.conv2 = which_conv(out_channels, out_channels)
        self.learnable_sc = in_channels != out_channels or upsample is not None
        if self.learnable_sc:
            self.conv_sc = which_conv(in_channels, out_channels, kernel_size=1, padding=0)
        self.bn1 = which_bn(in_channels)
        self.bn2 = which_bn(out_channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.activation(self.bn1(x, y))
        if self.upsample is upsample2x:
            # 1x1 conv and nearest upsampling commute: convolve at the low resolution.
            h = upsample2x_conv(self.conv1, h)
            x = upsample2x(self.conv_sc(x) if self.learnable_sc else x)
        else:
            if self.upsample is not None:
                h, x = self.upsample(h), self.upsample(x)
            h = self.conv1(h)
            if self.learnable_sc:
                x = self.conv_sc(x)
        return self.conv2(self.activation(self.bn2(h, y))) + x


class DBlock(nn.Module):
    """BigGAN discriminator residual block (optionally pre-activated, downsampling)."""

    def __init__(self, in_channels: int, out_channels: int, which_conv: Callable = SNConv2d,
                 wide: bool = True, preactivation: bool = False,
                 activation: nn.Module | None = None, downsample: nn.Module | None = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.hidden_channels = out_channels if wide else in_channels
        self.which_conv, self.preactivation = which_conv, preactivation
        self.activation, self.downsample = activation, downsample
        self.conv1 = which_conv(in_channels, self.hidden_channels)
        self.conv2 = which_conv(self.hidden_channels, out_channels)
        self.learnable_sc = in_channels != out_channels or downsample is not None
        if self.learnable_sc:
            self.conv_sc = which_conv(in_channels, out_channels, kernel_size=1, padding=0)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        # BigGAN-PyTorch pools after the 1x1 conv in pre-activated blocks; the two commute,
        # and pooling first is 4x cheaper.
        if self.preactivation and not is_avgpool2(self.downsample):
            if self.learnable_sc:
                x = self.conv_sc(x)
            if self.downsample is not None:
                x = self.downsample(x)
        else:
            if self.downsample is not None:
                x = self.downsample(x)
            if self.learnable_sc:
                x = self.conv_sc(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Out of place whatever --D_nl says, as in BigGAN-PyTorch: an in-place ReLU here
        # would also rectify x, which the shortcut reads.
        h = F.relu(x) if self.preactivation else x
        h = self.activation(self.conv1(h))
        if is_avgpool2(self.downsample):
            h = conv_avgpool2(self.conv2, h)
        else:
            h = self.conv2(h)
            if self.downsample is not None:
                h = self.downsample(h)
        return h + self.shortcut(x)


class MinibatchStd(nn.Module):
    """ProGAN's minibatch standard deviation (Karras et al. 2018, sec. 3), not in BigGAN: appends
    one channel holding, for each group of `group` images, the standard deviation over the group
    of every feature, averaged over features and positions. A D that sees how varied a batch is
    can penalise a G whose samples are alike. Groups are runs of consecutive images (StyleGAN
    strides them instead) so that D's [fakes; reals] batch never mixes the two when the number
    of fakes is a multiple of `group`.
    """

    def __init__(self, group: int):
        super().__init__()
        if group < 2:
            raise ValueError(f"a minibatch-std group needs at least 2 images, got {group}")
        self.group = group

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, _, height, width = h.shape
        group = min(self.group, n)
        if n % group:
            raise ValueError(f"D got a batch of {n} images, not a multiple of --D_mbstd_group "
                             f"{self.group}; use batch sizes divisible by it")
        # fp32 statistics under autocast: a bf16 variance of near-equal features is mostly rounding.
        grouped = h.float().reshape(n // group, group, *h.shape[1:])
        # The population variance written out: torch.var's CPU kernel over this middle dimension is
        # ~20x slower (9 ms against 0.5 ms forward for D's 32x64x8x8 features at batch 16): in a
        # profile of the CPU recipe's step it came right after the convolutions.
        centred = grouped - grouped.mean(dim=1, keepdim=True)
        spread = torch.sqrt(centred.square().mean(dim=1) + 1e-8).mean(dim=(1, 2, 3))
        channel = spread.repeat_interleave(group).to(h.dtype).view(n, 1, 1, 1).expand(n, 1, height, width)
        return torch.cat([h, channel], 1)
