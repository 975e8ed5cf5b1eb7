"""BigGAN generator and projection discriminator, state-dict compatible with BigGAN-PyTorch.

`Generator` / `Discriminator` take BigGAN-PyTorch's constructor arguments, or a whole config
as in BigGAN-PyTorch (`Generator(**config)`: flags that are not arguments are ignored, any
other unknown keyword is a TypeError); `model_kwargs` picks them out of a full config and
`build_models(config)` builds (G, D) for `--model BigGAN|BigGANdeep`. The optimizers are
created by the training code from the stored `lr`, `B1`, `B2`, `adam_eps` attributes.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import types
import warnings
from typing import Any

import torch
import torch.nn as nn

import layers
from cli import UserError
from config import ch_mults


# ----------------------------------------------------------------------------- init, attention spec
INITS = ('ortho', 'N02', 'glorot', 'xavier')


def check_init(init: str) -> None:
    """Raise on an unknown --G_init/--D_init name."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r} (--G_init/--D_init); valid: {list(INITS)}")


def init_weights(model: nn.Module, init: str) -> int:
    """Initialise every conv/linear/embedding weight of model in BigGAN-PyTorch's order.

    Returns the number of parameters of the initialised layers (BigGAN-PyTorch's param_count).
    """
    check_init(init)
    count = 0
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
            if init == 'ortho':
                nn.init.orthogonal_(module.weight)
            elif init == 'N02':
                nn.init.normal_(module.weight, 0, 0.02)
            else:
                nn.init.xavier_uniform_(module.weight)
            count += sum(p.numel() for p in module.parameters())
    return count


# Keys BigGAN-PyTorch's train.py (and ours: class_names) adds to the config before `Generator(**config)`.
_DERIVED_CONFIG_KEYS = frozenset({'n_classes', 'G_activation', 'D_activation', 'no_optim',
                                  'skip_init', 'resolution', 'experiment_name', 'class_names'})


def absorb_config(extra: dict[str, Any], cls: str, part: str,
                  activation: nn.Module | str | None) -> nn.Module | str:
    """Make `Generator(**config)` / `Discriminator(**config)` work as in BigGAN-PyTorch.

    `extra` holds the keyword arguments the constructor does not name: keys of a full config
    (flags of train.py / sample.py, or keys BigGAN-PyTorch's train.py derives) are ignored,
    anything else is a TypeError, so a typo never passes silently. Returns the activation:
    the one given, else the config's `--G_nl`/`--D_nl`, else ReLU.
    """
    import config as flags
    known = flags.flag_defaults()
    unknown = sorted(k for k in extra if k not in known and k not in _DERIVED_CONFIG_KEYS)
    if unknown:
        raise TypeError(f"{cls}() got unexpected keyword argument(s) {unknown}: neither a "
                        f"constructor argument nor a flag of train.py")
    return activation if activation is not None else extra.get(f'{part}_nl', 'relu')


def parse_attention(spec: str, valid: list[int], flag: str) -> set[int]:
    """Resolutions named by an attention spec like '64' or '32_64' ('0' = none).

    Resolutions the architecture does not have are ignored, as in BigGAN-PyTorch, but warned about.
    """
    try:
        wanted = {int(item) for item in str(spec).split('_')} - {0}
    except ValueError:
        raise ValueError(f"{flag} must look like '0', '64' or '32_64', got {spec!r}") from None
    unused = sorted(wanted - set(valid))
    if unused:
        warnings.warn(f"{flag}={spec}: no block at resolution(s) {unused} for this model "
                      f"(available: {sorted(set(valid))}); no attention added there")
    return wanted & set(valid)


def _pows(res: int, first: int) -> list[int]:
    return [2 ** i for i in range(first, res.bit_length())]


def G_arch(ch: int = 64) -> dict[int, dict[str, list]]:
    """Channels per G stage, keyed by output resolution (one 2x upsampling per stage)."""
    mults = {512: ([16, 16, 8, 8, 4, 2, 1], [16, 8, 8, 4, 2, 1, 1]),
             256: ([16, 16, 8, 8, 4, 2], [16, 8, 8, 4, 2, 1]),
             128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1]),
             64: ([16, 16, 8, 4], [16, 8, 4, 2]),
             32: ([4, 4, 4], [4, 4, 4])}
    return {res: {'in_channels': [ch * m for m in ins], 'out_channels': [ch * m for m in outs],
                  'upsample': [True] * len(ins), 'resolution': _pows(res, 3)}
            for res, (ins, outs) in mults.items()}


def D_arch(ch: int = 64) -> dict[int, dict[str, list]]:
    """Channels per D stage, keyed by input resolution ('resolution' keys the attention)."""
    arch = {}
    for res, outs in {512: [1, 1, 2, 4, 8, 8, 16, 16], 256: [1, 2, 4, 8, 8, 16, 16],
                      128: [1, 2, 4, 8, 16, 16], 64: [1, 2, 4, 8, 16]}.items():
        arch[res] = {'in_channels': [3] + [ch * m for m in outs[:-1]],
                     'out_channels': [ch * m for m in outs],
                     'downsample': [True] * (len(outs) - 1) + [False],
                     'resolution': _pows(res, 2)[::-1][1:] + [4]}
    arch[32] = {'in_channels': [3] + [ch * 4] * 3, 'out_channels': [ch * 4] * 4,
                'downsample': [True, True, False, False], 'resolution': [16] * 4}
    return arch


def with_widths(arch: dict, ch: int, spec: str, flag: str, first_in: int | None) -> dict:
    """`arch` with its channels set by a --G_ch_mults/--D_ch_mults spec (in units of `ch`).

    G (first_in None): the spec names the 4x4 input's width, then each stage's output. D (first_in
    = 3 image channels): each stage's output. '' keeps the architecture as it is.
    """
    if not spec:
        return arch
    mults = ch_mults(spec, flag)
    count = len(arch['out_channels']) + (first_in is None)
    if len(mults) != count:
        own = arch['in_channels'][:1] if first_in is None else []
        default = "_".join(str(c // ch) for c in own + arch['out_channels'])
        raise ValueError(f"{flag} {spec!r} has {len(mults)} widths; this resolution needs {count} "
                         f"(BigGAN's own: {default})")
    widths = [ch * m for m in mults]
    if first_in is None:
        return {**arch, 'in_channels': widths[:-1], 'out_channels': widths[1:]}
    return {**arch, 'in_channels': [first_in] + widths[:-1], 'out_channels': widths}


def select_arch(archs: dict[int, dict], resolution: int, what: str) -> dict:
    """The architecture dict for resolution, or a ValueError listing the supported ones."""
    if resolution not in archs:
        raise ValueError(f"{what} does not support resolution {resolution} (--resolution); "
                         f"supported: {sorted(archs)}")
    return archs[resolution]


class Generator(nn.Module):
    """BigGAN generator: z (and y, already through `G.shared`) -> images in [-1, 1]."""

    def __init__(self, G_ch: int = 64, G_ch_mults: str = '', dim_z: int = 128, bottom_width: int = 4,
                 resolution: int = 128, G_kernel_size: int = 3, G_attn: str = '64',
                 n_classes: int = 1000, num_G_SVs: int = 1, num_G_SV_itrs: int = 1,
                 G_shared: bool = True, shared_dim: int = 0, hier: bool = False,
                 cross_replica: bool = False, mybn: bool = False,
                 G_activation: nn.Module | str | None = None, G_lr: float = 5e-5,
                 G_B1: float = 0.0, G_B2: float = 0.999, adam_eps: float = 1e-8,
                 BN_eps: float = 1e-5, SN_eps: float = 1e-12, G_mixed_precision: bool = False,
                 G_fp16: bool = False, G_init: str = 'ortho', skip_init: bool = False,
                 no_optim: bool = False, G_param: str = 'SN', norm_style: str = 'bn',
                 **config: Any):
        super().__init__()
        check_init(G_init)
        if hier and not G_shared:
            raise ValueError("--hier needs --G_shared (the hierarchical z chunks are "
                             "concatenated to the shared class embedding)")
        self.ch, self.dim_z, self.bottom_width = G_ch, dim_z, bottom_width
        self.resolution, self.kernel_size, self.attention = resolution, G_kernel_size, G_attn
        self.n_classes, self.G_shared, self.hier = n_classes, G_shared, hier
        self.shared_dim = shared_dim if shared_dim > 0 else dim_z
        self.cross_replica, self.mybn = cross_replica, mybn
        self.activation = layers.get_activation(
            absorb_config(config, 'Generator', 'G', G_activation))
        self.init, self.G_param, self.norm_style = G_init, G_param, norm_style
        self.BN_eps, self.SN_eps = BN_eps, SN_eps
        self.fp16, self.mixed_precision, self.no_optim = G_fp16, G_mixed_precision, no_optim
        # Optimizer settings, for the training code (the model owns no optimizer).
        self.lr, self.B1, self.B2, self.adam_eps = G_lr, G_B1, G_B2, adam_eps
        self.arch = with_widths(select_arch(G_arch(G_ch), resolution, 'BigGAN Generator'), G_ch,
                                G_ch_mults, '--G_ch_mults', None)

        if hier:
            # One z chunk for the linear layer and one per stage; dim_z rounds down to a multiple.
            self.num_slots = len(self.arch['in_channels']) + 1
            self.z_chunk_size = self.dim_z // self.num_slots
            self.dim_z = self.z_chunk_size * self.num_slots
        else:
            self.num_slots, self.z_chunk_size = 1, 0

        self.which_conv, self.which_linear, _ = layers.layer_factory(
            G_param, num_G_SVs, num_G_SV_itrs, SN_eps, G_kernel_size)
        # G's embedding is never spectrally normalised (as in BigGAN-PyTorch).
        self.which_embedding = nn.Embedding
        bn_linear = (functools.partial(self.which_linear, bias=False) if G_shared
                     else self.which_embedding)
        self.which_bn = functools.partial(
            layers.ccbn, which_linear=bn_linear, cross_replica=cross_replica, mybn=mybn,
            input_size=(self.shared_dim + self.z_chunk_size if G_shared else n_classes),
            norm_style=norm_style, eps=BN_eps)

        self.shared = (self.which_embedding(n_classes, self.shared_dim) if G_shared
                       else layers.identity())
        self.linear = self.which_linear(self.dim_z // self.num_slots,
                                        self.arch['in_channels'][0] * bottom_width ** 2)
        attn = parse_attention(G_attn, self.arch['resolution'], '--G_attn')
        blocks = []
        for i, (cin, cout) in enumerate(zip(self.arch['in_channels'], self.arch['out_channels'])):
            stage = [layers.GBlock(cin, cout, self.which_conv, self.which_bn, self.activation,
                                   layers.upsample2x if self.arch['upsample'][i] else None)]
            if self.arch['resolution'][i] in attn:
                stage.append(layers.Attention(cout, self.which_conv))
            blocks.append(nn.ModuleList(stage))
        self.blocks = nn.ModuleList(blocks)
        # The output BN keeps BigGAN-PyTorch's default eps (BN_eps is not passed there either).
        self.output_layer = nn.Sequential(
            layers.bn(self.arch['out_channels'][-1], cross_replica=cross_replica, mybn=mybn),
            self.activation, self.which_conv(self.arch['out_channels'][-1], 3))
        self.param_count = 0 if skip_init else init_weights(self, G_init)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z: [N, dim_z]; y: G.shared(classes) ([N, shared_dim]) or class indices if not G_shared."""
        if self.hier:
            zs = torch.split(z, self.z_chunk_size, 1)
            z = zs[0]
            ys = [torch.cat([y, item], 1) for item in zs[1:]]
        else:
            ys = [y] * len(self.blocks)
        h = self.linear(z)
        h = h.view(h.size(0), -1, self.bottom_width, self.bottom_width)
        for stage, y_stage in zip(self.blocks, ys):
            for block in stage:
                h = block(h, y_stage)
        return torch.tanh(self.output_layer(h))


class Discriminator(nn.Module):
    """BigGAN projection discriminator: logits [N, output_dim] = linear(h) + <embed(y), h>."""

    def __init__(self, D_ch: int = 64, D_ch_mults: str = '', D_wide: bool = True, resolution: int = 128,
                 D_kernel_size: int = 3, D_attn: str = '64', n_classes: int = 1000,
                 num_D_SVs: int = 1, num_D_SV_itrs: int = 1,
                 D_activation: nn.Module | str | None = None, D_lr: float = 2e-4,
                 D_B1: float = 0.0, D_B2: float = 0.999, adam_eps: float = 1e-8,
                 SN_eps: float = 1e-12, output_dim: int = 1, D_mixed_precision: bool = False,
                 D_fp16: bool = False, D_init: str = 'ortho', skip_init: bool = False,
                 D_param: str = 'SN', D_mbstd_group: int = 0, **config: Any):
        super().__init__()
        check_init(D_init)
        self.ch, self.D_wide, self.resolution = D_ch, D_wide, resolution
        self.kernel_size, self.attention, self.n_classes = D_kernel_size, D_attn, n_classes
        self.activation = layers.get_activation(
            absorb_config(config, 'Discriminator', 'D', D_activation))
        self.init, self.D_param, self.SN_eps = D_init, D_param, SN_eps
        self.fp16, self.mixed_precision = D_fp16, D_mixed_precision
        self.lr, self.B1, self.B2, self.adam_eps = D_lr, D_B1, D_B2, adam_eps
        self.arch = with_widths(select_arch(D_arch(D_ch), resolution, 'BigGAN Discriminator'), D_ch,
                                D_ch_mults, '--D_ch_mults', 3)
        self.which_conv, self.which_linear, self.which_embedding = layers.layer_factory(
            D_param, num_D_SVs, num_D_SV_itrs, SN_eps, D_kernel_size)

        attn = parse_attention(D_attn, self.arch['resolution'], '--D_attn')
        # --D_mbstd_group: the minibatch-std channel joins the input of the last stage.
        self.mbstd = layers.MinibatchStd(D_mbstd_group) if D_mbstd_group else None
        last = len(self.arch['in_channels']) - 1
        blocks = []
        for i, (cin, cout) in enumerate(zip(self.arch['in_channels'], self.arch['out_channels'])):
            cin += int(self.mbstd is not None and i == last)
            stage = [layers.DBlock(cin, cout, self.which_conv, wide=D_wide,
                                   preactivation=i > 0, activation=self.activation,
                                   downsample=nn.AvgPool2d(2) if self.arch['downsample'][i]
                                   else None)]
            if self.arch['resolution'][i] in attn:
                stage.append(layers.Attention(cout, self.which_conv))
            blocks.append(nn.ModuleList(stage))
        self.blocks = nn.ModuleList(blocks)
        self.linear = self.which_linear(self.arch['out_channels'][-1], output_dim)
        self.embed = self.which_embedding(n_classes, self.arch['out_channels'][-1])
        self.param_count = 0 if skip_init else init_weights(self, D_init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features h [N, C]: activations summed over space, before D.linear."""
        h = x
        for i, stage in enumerate(self.blocks):
            if self.mbstd is not None and i == len(self.blocks) - 1:
                h = self.mbstd(h)
            for block in stage:
                h = block(h)
        return torch.sum(self.activation(h), [2, 3])

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                return_features: bool = False):
        """Logits [N, output_dim]; y=None leaves out the projection term. With
        return_features, returns (logits, h)."""
        return project(self, self.features(x), y, return_features)


def project(D: nn.Module, h: torch.Tensor, y: torch.Tensor | None, return_features: bool):
    """Projection-discriminator head shared by BigGAN and BigGAN-deep."""
    out = D.linear(h)
    if y is not None:
        out = out + torch.sum(D.embed(y) * h, 1, keepdim=True)
    return (out, h) if return_features else out


class G_D(nn.Module):
    """G and D in one module so DataParallel/DDP runs them together (BigGAN-PyTorch's G_D)."""

    def __init__(self, G: nn.Module, D: nn.Module):
        super().__init__()
        self.G, self.D = G, D

    def forward(self, z: torch.Tensor, gy: torch.Tensor, x: torch.Tensor | None = None,
                dy: torch.Tensor | None = None, train_G: bool = False,
                return_G_z: bool = False, split_D: bool = False):
        """D on G(z, gy) (and on real x, dy): (D_fake, D_real) when x is given, else D_fake
        (and G_z with return_G_z). Without split_D fake and real go through D as one batch."""
        with torch.set_grad_enabled(train_G):
            G_z = self.G(z, self.G.shared(gy))
            if self.G.fp16 and not self.D.fp16:
                G_z = G_z.float()
            if self.D.fp16 and not self.G.fp16:
                G_z = G_z.half()
        if split_D:
            D_fake = self.D(G_z, gy)
            if x is not None:
                return D_fake, self.D(x, dy)
            return (D_fake, G_z) if return_G_z else D_fake
        D_input = torch.cat([G_z, x], 0) if x is not None else G_z
        D_class = torch.cat([gy, dy], 0) if dy is not None else gy
        D_out = self.D(D_input, D_class)
        if x is not None:
            return torch.split(D_out, [G_z.shape[0], x.shape[0]])
        return (D_out, G_z) if return_G_z else D_out


# ----------------------------------------------------------------------------- config glue
MODELS = ('BigGAN', 'BigGANdeep')


def model_module(name: str) -> types.ModuleType:
    """The Python module (BigGAN or BigGANdeep) for --model."""
    if name not in MODELS:
        raise ValueError(f"unknown --model {name!r}; valid: {list(MODELS)}")
    return importlib.import_module(name)


def model_kwargs(module: Any, config: dict, part: str | None = None) -> dict:
    """Constructor kwargs picked out of a full config.

    module: a model class (returns its kwargs), or the BigGAN / BigGANdeep Python module with
    part 'G' or 'D' (kwargs of its Generator / Discriminator), or without part a dict
    {'G': ..., 'D': ...}. --G_nl/--D_nl become G_activation/D_activation; config keys the
    constructor does not take are left out.
    """
    if isinstance(module, types.ModuleType):
        if part is None:
            return {p: model_kwargs(module, config, p) for p in ('G', 'D')}
        if part not in ('G', 'D'):
            raise ValueError(f"part must be 'G' or 'D', got {part!r}")
        module = module.Generator if part == 'G' else module.Discriminator
    names = {name for name, p in inspect.signature(module.__init__).parameters.items()
             if name != 'self' and p.kind is not inspect.Parameter.VAR_KEYWORD}
    cfg = dict(config)
    for who in ('G', 'D'):
        if f'{who}_nl' in cfg:
            cfg[f'{who}_activation'] = cfg[f'{who}_nl']
    if 'resolution' in names and 'resolution' in cfg and not cfg['resolution']:
        raise ValueError("config['resolution'] is 0: resolve --resolution from the dataset "
                         "before building the models")
    return {k: cfg[k] for k in names if k in cfg}


def build_models(config: dict) -> tuple[nn.Module, nn.Module]:
    """(G, D) for config['model'] in BigGAN|BigGANdeep, built from the config's flags."""
    module = model_module(config.get('model', 'BigGAN'))
    kw = model_kwargs(module, config)
    return module.Generator(**kw['G']), module.Discriminator(**kw['D'])


# ----------------------------------------------------------------------------- speed flags
@functools.cache  # asked at every autocast_context (each step); the CPU does not change
def cpu_runs_bf16_natively() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX tiles), which oneDNN's bf16
    convolutions need to be fast: on an AVX2-only CPU (measured: a 2-core AMD EPYC, Zen 3) the CPU
    recipe's step runs 10-16x slower in bf16 than in fp32; on an AVX512-BF16 EPYC, 1.9x faster."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


@functools.cache
def _warn_once(message: str) -> None:
    """warnings.warn, once a process for each message: amp_dtype's fallbacks are asked at every step, and
    under torch.compile Python's once-per-location filter did not hold (a compiled training log had the
    CPU's eight times)."""
    warnings.warn(message, stacklevel=3)


def amp_dtype(config: dict, device: torch.device) -> torch.dtype | None:
    """The dtype --amp autocasts to on `device` (None: fp32), warning where it falls back to fp32."""
    amp = config.get('amp', 'none') or 'none'
    if amp not in ('none', 'bf16', 'fp16'):
        raise ValueError(f"unknown --amp {amp!r}; valid: none, bf16, fp16")
    if amp == 'none':
        return None
    device = torch.device(device)
    if device.type == 'cuda':
        if amp == 'bf16' and not torch.cuda.is_bf16_supported():
            _warn_once("--amp bf16: this GPU has no bf16 support; running fp32")
            return None
        return torch.bfloat16 if amp == 'bf16' else torch.float16
    if amp == 'bf16' and device.type == 'cpu':
        if not cpu_runs_bf16_natively():
            _warn_once("--amp bf16: this CPU has neither AVX512-BF16 nor AMX, and oneDNN's bf16 convolutions "
                       "run 10-16x slower than fp32 without them; running fp32 (pass --amp none to silence this)")
            return None
        return torch.bfloat16  # bf16 needs no loss scaling
    _warn_once(f"--amp {amp} is not supported on {device} (bf16 is, on the CPU); running fp32")
    return None


def autocast_context(config: dict, device: torch.device | str):
    """Autocast for --amp bf16|fp16 on CUDA and --amp bf16 on the CPU; a null context otherwise."""
    device = torch.device(device)
    dtype = amp_dtype(config, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(config: dict, device: torch.device | str) -> torch.amp.GradScaler:
    """GradScaler enabled only for --amp fp16 on CUDA (bf16 needs none)."""
    dtype = amp_dtype(config, torch.device(device))
    return torch.amp.GradScaler('cuda', enabled=dtype == torch.float16)


def apply_speed_flags(model: nn.Module, config: dict, device: torch.device | str) -> nn.Module:
    """Apply --channels_last and --compile to model in place (on CUDA and on the CPU).

    `nn.Module.compile` is used so the state-dict keys stay BigGAN-PyTorch's.
    """
    if config.get('channels_last'):
        model.to(memory_format=torch.channels_last)
    if config.get('compile'):
        if torch.device(device).type == 'cpu':
            require_cpp_compiler()
        model.compile()
    return model


def require_cpp_compiler() -> str:
    """The C++ compiler TorchInductor will build its CPU kernels with; refuses --compile without one.

    Compilation is lazy, so without this check the first forward pass would fail deep inside
    torch.compile, minutes into a run and with an error that does not name the fix.
    """
    from torch._inductor import cpp_builder  # imported here: only --compile on the CPU needs it
    try:
        compiler = cpp_builder.get_cpp_compiler()
    except Exception as err:  # InvalidCxxCompiler, or whatever this torch release raises instead
        raise UserError("--compile on the CPU needs a C++ compiler for TorchInductor's kernels, and none was "
                        "found (it tries $CXX, then g++): install one (Debian/Ubuntu: apt install g++) or "
                        "set CXX to it, or train eager without --compile (the quickstart: QS_COMPILE=0)") from err
    return compiler
