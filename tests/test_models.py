"""Tests of layers.py, BigGAN.py, BigGANdeep.py and sync_batchnorm (tiny models, CPU)."""
from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import BigGAN
import BigGANdeep
import layers
import spectral_norm
import sync_batchnorm

REF = Path('/work/shared/reference/biggan_pytorch_state_dicts.json')
FAMILIES = {'BigGAN': BigGAN, 'BigGANdeep': BigGANdeep}


def _reference() -> dict:
    if not REF.exists():
        pytest.skip(f"reference state-dict facts not found at {REF}")
    return json.loads(REF.read_text())


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(module, resolution=32, ch=4, attn='0', n_classes=3, **kw):
    """A tiny (G, D) pair of the given family."""
    torch.manual_seed(0)
    g_kw = dict(G_ch=ch, resolution=resolution, G_attn=attn, n_classes=n_classes,
                G_shared=True, shared_dim=8, dim_z=12, hier=True)
    d_kw = dict(D_ch=ch, resolution=resolution, D_attn=attn, n_classes=n_classes)
    g_kw.update({k: v for k, v in kw.items() if not k.startswith('D_')})
    d_kw.update({k: v for k, v in kw.items() if k.startswith('D_') or k == 'skip_init'})
    return module.Generator(**g_kw), module.Discriminator(**d_kw)


def sample(G, n=2, n_classes=3):
    z = torch.randn(n, G.dim_z)
    y = torch.arange(n) % n_classes
    return z, y


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize('family,resolution', [
    ('BigGAN', 32), ('BigGAN', 64), ('BigGAN', 128), ('BigGAN', 256), ('BigGAN', 512),
    ('BigGANdeep', 32), ('BigGANdeep', 64), ('BigGANdeep', 128), ('BigGANdeep', 256)])
def test_output_shapes(family, resolution):
    ch = 1 if resolution == 512 else 4
    G, D = tiny(FAMILIES[family], resolution, ch=ch, skip_init=True)
    z, y = sample(G)
    with torch.no_grad():
        img = G(z, G.shared(y))
        assert img.shape == (2, 3, resolution, resolution)
        assert img.abs().max() <= 1
        out, h = D(img, y, return_features=True)
    assert out.shape == (2, 1) and h.shape == (2, D.arch['out_channels'][-1])


def test_deep_generator_512_and_unsupported_resolutions():
    G = BigGANdeep.Generator(G_ch=4, resolution=512, G_attn='0', n_classes=2, skip_init=True)
    assert G.arch['resolution'][-1] == 512
    with pytest.raises(ValueError, match=r'supported: \[32, 64, 128, 256\]'):
        BigGANdeep.Discriminator(D_ch=4, resolution=512, D_attn='0')
    with pytest.raises(ValueError, match=r'supported: \[32, 64, 128, 256, 512\]'):
        BigGAN.Generator(G_ch=4, resolution=96)
    with pytest.raises(ValueError, match='resolution 48'):
        BigGAN.Discriminator(D_ch=4, resolution=48)


# ----------------------------------------------------------------------------- layers
@pytest.mark.parametrize('shape', [(24, 40), (16, 8, 3, 3)])
def test_spectral_norm_converges_to_top_singular_values(shape):
    torch.manual_seed(0)
    if len(shape) == 2:
        layer = spectral_norm.SNLinear(shape[1], shape[0], num_svs=2, num_itrs=1)
        x = torch.randn(2, shape[1])
    else:
        layer = spectral_norm.SNConv2d(shape[1], shape[0], 3, padding=1, num_svs=2)
        x = torch.randn(2, shape[1], 5, 5)
    W = layer.weight.detach().reshape(shape[0], -1)
    true = torch.linalg.svdvals(W)
    with torch.no_grad():
        for _ in range(300):
            layer(x)
    assert torch.allclose(layer.sv0, torch.linalg.matrix_norm(W, 2).reshape(1), rtol=1e-4)
    assert torch.allclose(layer.sv1, true[1].reshape(1), rtol=1e-3)
    # The normalised weight has spectral norm 1; eval mode leaves u untouched.
    assert torch.linalg.matrix_norm(layer.W_().detach().reshape(shape[0], -1), 2) == \
        pytest.approx(1.0, rel=1e-4)
    layer.eval()
    u = layer.u0.clone()
    layer(x)
    assert torch.equal(u, layer.u0)


def test_conditional_bn_depends_on_class():
    torch.manual_seed(0)
    for which in (nn.Embedding, functools.partial(spectral_norm.SNLinear, bias=False)):
        bn = layers.ccbn(6, 5 if which is nn.Embedding else 7, which)
        x = torch.randn(1, 6, 3, 3).expand(4, -1, -1, -1)  # one image, four conditions
        y = torch.tensor([0, 1, 2, 3]) if which is nn.Embedding else torch.randn(4, 7)
        bn.eval()
        out = bn(x, y)
        assert not torch.allclose(out[0], out[1])
    G, _ = tiny(BigGAN, skip_init=False)
    G.eval()
    z = torch.randn(1, G.dim_z).expand(2, -1)
    with torch.no_grad():
        img = G(z, G.shared(torch.tensor([0, 1])))
    assert not torch.allclose(img[0], img[1])


def test_attention_starts_as_identity():
    torch.manual_seed(0)
    attn = layers.Attention(16)
    x = torch.randn(2, 16, 8, 8)
    assert attn.gamma.item() == 0
    assert torch.equal(attn(x), x)
    G, D = tiny(BigGAN, 64, ch=8, attn='32')
    gammas = [m.gamma for m in list(G.modules()) + list(D.modules())
              if isinstance(m, layers.Attention)]
    assert len(gammas) == 2 and all(g.item() == 0 for g in gammas)


def test_fused_resampling_matches_two_step_form():
    torch.manual_seed(0)
    conv = spectral_norm.SNConv2d(6, 5, 3, padding=1)
    conv.eval()  # the same normalised weight on both paths
    x = torch.randn(2, 6, 8, 8, requires_grad=True)
    W = conv.W_()
    pairs = [(layers.upsample2x_conv(conv, x), F.conv2d(F.interpolate(x, scale_factor=2), W,
                                                         conv.bias, 1, 1)),
             (layers.conv_avgpool2(conv, x), F.avg_pool2d(F.conv2d(x, W, conv.bias, 1, 1), 2))]
    for fast, ref in pairs:
        assert fast.shape == ref.shape
        assert torch.allclose(fast, ref, atol=1e-5)
        g_fast = torch.autograd.grad(fast.square().sum(), [x, conv.weight], retain_graph=True)
        g_ref = torch.autograd.grad(ref.square().sum(), [x, conv.weight], retain_graph=True)
        for a, b in zip(g_fast, g_ref):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('family', ['BigGAN', 'BigGANdeep'])
def test_whole_models_match_two_step_form(family):
    G, D = tiny(FAMILIES[family], 64, ch=8, attn='32')
    G2, D2 = tiny(FAMILIES[family], 64, ch=8, attn='32')
    layers.unfuse_resampling(G2), layers.unfuse_resampling(D2)
    assert G2.blocks[0][0].upsample is not layers.upsample2x
    for m in (G, D, G2, D2):
        m.eval()
    z, y = sample(G, 3)
    with torch.no_grad():
        img, img2 = G(z, G.shared(y)), G2(z, G2.shared(y))
        assert torch.allclose(img, img2, atol=1e-5)
        assert torch.allclose(D(img, y), D2(img, y), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- whole models
@pytest.mark.parametrize('family', ['BigGAN', 'BigGANdeep'])
def test_gradients_reach_every_parameter(family):
    G, D = tiny(FAMILIES[family], 64, ch=8, attn='32')
    with torch.no_grad():  # gamma = 0 would block the attention convs' gradients
        for m in list(G.modules()) + list(D.modules()):
            if isinstance(m, layers.Attention):
                m.gamma.fill_(0.5)
    z, y = sample(G, 4)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    D_fake, D_real = BigGAN.G_D(G, D)(z, y, x, y, train_G=True)
    (D_fake.square().mean() + D_real.mean()).backward()
    for model in (G, D):
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_state_dicts_match_reference_keys_shapes_and_order():
    for ref in _reference()['configs']:
        module = FAMILIES[ref['model']]
        config = dict(ref['config'], resolution=ref['resolution'], skip_init=True)
        with torch.device('meta'):
            G = module.Generator(**BigGAN.model_kwargs(module.Generator, config))
            D = module.Discriminator(**BigGAN.model_kwargs(module.Discriminator, config))
        for model, key in ((G, 'G'), (D, 'D')):
            got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
            assert got == ref[key], (ref['model'], ref['resolution'], key)
            assert sum(p.numel() for p in model.parameters()) == ref[f'{key}_params']


@pytest.mark.parametrize('family,res,ch,attn,dim_z,depth,n_g,n_d', [
    ('BigGAN', 128, 96, '64', 120, 1, 70_433_988, 87_982_370),
    ('BigGAN', 128, 64, '64', 120, 1, 31_978_628, 39_448_258),
    ('BigGAN', 256, 64, '64', 120, 1, 37_240_580, 44_445_890),
    ('BigGAN', 64, 32, '32', 120, 1, 8_553_092, 5_401_186),
    ('BigGANdeep', 128, 128, '64', 128, 2, 50_244_484, 34_590_210)])
def test_parameter_counts_of_the_issue(family, res, ch, attn, dim_z, depth, n_g, n_d):
    config = dict(model=family, resolution=res, G_ch=ch, D_ch=ch, G_attn=attn, D_attn=attn,
                  hier=True, G_shared=True, shared_dim=128, dim_z=dim_z, n_classes=1000,
                  G_depth=depth, D_depth=depth, skip_init=True)
    with torch.device('meta'):
        G, D = BigGAN.build_models(config)
    assert sum(p.numel() for p in G.parameters()) == n_g
    assert sum(p.numel() for p in D.parameters()) == n_d


@pytest.mark.parametrize('family', ['BigGAN', 'BigGANdeep'])
def test_state_dict_round_trip_gives_identical_outputs(family, tmp_path):
    G, D = tiny(FAMILIES[family], 32, ch=4)
    z, y = sample(G, 4)
    G(z, G.shared(y))  # move BN stats and u away from their initial values
    torch.save({'G': G.state_dict(), 'D': D.state_dict()}, tmp_path / 'ckpt.pth')
    state = torch.load(tmp_path / 'ckpt.pth', weights_only=True)
    G2, D2 = tiny(FAMILIES[family], 32, ch=4, skip_init=True)
    G2.load_state_dict(state['G'], strict=True)
    D2.load_state_dict(state['D'], strict=True)
    for train in (False, True):
        for m in (G, D, G2, D2):
            m.train(train)
        with torch.no_grad():
            img, img2 = G(z, G.shared(y)), G2(z, G2.shared(y))
            assert torch.equal(img, img2)
            assert torch.equal(D(img, y), D2(img, y))


def test_unconditional_single_class_and_features():
    G, D = tiny(BigGAN, 32, n_classes=1, G_shared=False, hier=False)
    z = torch.randn(3, G.dim_z)
    y = torch.zeros(3, dtype=torch.long)
    img = G(z, G.shared(y))
    D.eval()
    out, h = D(img, y, return_features=True)
    assert torch.equal(h, D.features(img))
    assert torch.allclose(out, D.linear(h) + (D.embed(y) * h).sum(1, keepdim=True))
    assert torch.allclose(D(img), D.linear(h))  # y=None: no projection term


def test_G_D_concatenated_and_split_agree():
    G, D = tiny(BigGAN, 32)
    G.eval(), D.eval()
    GD = BigGAN.G_D(G, D)
    z, y = sample(G, 3)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    dy = torch.tensor([0, 2])
    fake, real = GD(z, y, x, dy)
    fake_s, real_s = GD(z, y, x, dy, split_D=True)
    assert fake.shape == (3, 1) and real.shape == (2, 1)
    assert torch.allclose(fake, fake_s, atol=1e-5) and torch.allclose(real, real_s, atol=1e-5)
    out, G_z = GD(z, y, return_G_z=True)
    assert G_z.shape == (3, 3, 32, 32) and not G_z.requires_grad
    assert GD(z, y, train_G=True).requires_grad


# ----------------------------------------------------------------------------- config glue
def test_constructor_errors():
    with pytest.raises(TypeError):
        BigGAN.Generator(G_ch=4, resolution=32, not_a_flag=1)
    with pytest.raises(ValueError, match='SVD'):
        BigGAN.Generator(G_ch=4, resolution=32, G_param='SVD')
    with pytest.raises(ValueError, match=r"valid: \['SN', 'none'\]"):
        BigGAN.Discriminator(D_ch=4, resolution=32, D_param='spectral')
    with pytest.raises(ValueError, match='--G_init'):
        BigGAN.Generator(G_ch=4, resolution=32, G_init='kaiming')
    with pytest.raises(ValueError, match='--hier needs --G_shared'):
        BigGAN.Generator(G_ch=4, resolution=32, G_shared=False, hier=True)
    with pytest.raises(ValueError, match='--G_nl'):
        BigGAN.Generator(G_ch=4, resolution=32, G_activation='gelu')
    with pytest.raises(ValueError, match="valid: \\['BigGAN', 'BigGANdeep'\\]"):
        BigGAN.build_models({'model': 'StyleGAN'})


def test_minibatch_std_channel_is_each_groups_feature_spread():
    torch.manual_seed(0)
    h = torch.randn(8, 3, 2, 2)
    h[:4] = h[0]  # the first group of four: one image repeated
    out = layers.MinibatchStd(4)(h)
    assert out.shape == (8, 4, 2, 2) and torch.equal(out[:, :3], h)
    spread = out[:, 3]
    # per group: the population std of every feature over the group, averaged over features and positions
    expected = np.sqrt(h[4:].double().numpy().var(axis=0) + 1e-8).mean()
    assert torch.allclose(spread[4:], torch.full((4, 2, 2), expected, dtype=torch.float32), rtol=1e-6)
    assert torch.allclose(spread[:4], torch.full((4, 2, 2), 1e-4), rtol=1e-3)
    # a batch smaller than the group is one group; one that does not fill whole groups is refused
    assert torch.allclose(layers.MinibatchStd(16)(h)[:, 3], out.new_full((8, 2, 2), float(
        np.sqrt(h.double().numpy().var(axis=0) + 1e-8).mean())), rtol=1e-6)
    with pytest.raises(ValueError, match="batch of 6 images, not a multiple of --D_mbstd_group 4"):
        layers.MinibatchStd(4)(h[:6])
    with pytest.raises(ValueError, match="at least 2 images"):
        layers.MinibatchStd(1)


def test_minibatch_std_D_never_mixes_fakes_with_reals():
    G, D = tiny(BigGAN, 32, ch=4, D_mbstd_group=2)
    _, plain = tiny(BigGAN, 32, ch=4)
    D.eval()  # no power-iteration update between the two calls
    last = D.blocks[-1][0]
    assert (last.conv1.weight.shape, last.conv_sc.weight.shape) == ((16, 17, 3, 3), (16, 17, 1, 1))
    assert set(D.state_dict()) - set(plain.state_dict()) == {'blocks.3.0.conv_sc.weight', 'blocks.3.0.conv_sc.u0',
                                                             'blocks.3.0.conv_sc.sv0', 'blocks.3.0.conv_sc.bias'}
    torch.manual_seed(1)
    fakes, reals, y = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.arange(8) % 3
    with torch.no_grad():
        out = D(torch.cat([fakes, reals]), y)
        other_reals = D(torch.cat([fakes, torch.randn(4, 3, 32, 32)]), y)
        other_partner = D(torch.cat([fakes[:2], fakes[2:3], fakes[2:3], reals]), y)
    assert torch.equal(out[:4], other_reals[:4]) and not torch.equal(out[4:], other_reals[4:])
    # an image's logit depends on its group partner: the spread of its group is an input
    assert torch.equal(out[:2], other_partner[:2]) and not torch.allclose(out[2], other_partner[2])


def test_width_flags_set_each_stages_channels_and_default_to_biggans_architecture():
    def weights(G, D):
        return [t for net in (G, D) for t in net.state_dict().values()]

    base = weights(*tiny(BigGAN, 32, ch=4))
    # BigGAN's own widths spelled out build the same modules from the same random draws.
    same = weights(*tiny(BigGAN, 32, ch=4, G_ch_mults='4_4_4_4', D_ch_mults='4_4_4_4'))
    assert len(same) == len(base) and all(torch.equal(a, b) for a, b in zip(base, same))

    G, D = tiny(BigGAN, 32, ch=4, G_ch_mults='4_4_4_2', D_ch_mults='2_4_4_4')
    last, first = G.blocks[2][0], D.blocks[0][0]
    assert (last.conv1.weight.shape, last.conv2.weight.shape) == ((8, 16, 3, 3), (8, 8, 3, 3))
    assert G.output_layer[2].weight.shape == (3, 8, 3, 3) and G.blocks[1][0].conv2.weight.shape[0] == 16
    assert (first.conv1.weight.shape, first.conv2.weight.shape) == ((8, 3, 3, 3), (8, 8, 3, 3))
    assert D.blocks[1][0].conv1.weight.shape == (16, 8, 3, 3) and D.linear.weight.shape == (1, 16)
    z, y = sample(G)
    with torch.no_grad():
        assert D(G(z, G.shared(y)), y).shape == (2, 1)
    # 64 px: G has four stages (five widths), D five.
    G64, D64 = tiny(BigGAN, 64, ch=2, G_ch_mults='8_8_4_2_1', D_ch_mults='1_2_4_8_8')
    assert G64.arch['out_channels'] == [16, 8, 4, 2] and D64.arch['in_channels'] == [3, 2, 4, 8, 16]

    with pytest.raises(ValueError, match=r"'4_4_2' has 3 widths; this resolution needs 4 \(BigGAN's own: 4_4_4_4\)"):
        tiny(BigGAN, 32, ch=4, D_ch_mults='4_4_2')
    with pytest.raises(ValueError, match=r"needs 5 \(BigGAN's own: 16_16_8_4_2\)"):
        tiny(BigGAN, 64, ch=4, G_ch_mults='4_4_4_4')
    for bad in ('4_x_4_4', '0_4_4_4', '4,4,4,4'):
        with pytest.raises(ValueError, match="--G_ch_mults .* must be positive integers joined by '_'"):
            tiny(BigGAN, 32, ch=4, G_ch_mults=bad)


def test_model_kwargs_and_build_models_from_a_full_config():
    config = dict(model='BigGANdeep', resolution=32, G_ch=4, D_ch=4, G_attn='0', D_attn='0',
                  n_classes=5, G_shared=True, hier=True, shared_dim=0, dim_z=16, G_depth=1,
                  D_depth=1, G_nl='inplace_relu', D_nl='relu', G_lr=1e-4, D_lr=4e-4,
                  G_B1=0.0, D_B1=0.0, G_B2=0.99, D_B2=0.999, adam_eps=1e-6, BN_eps=1e-5,
                  SN_eps=1e-8, num_G_SVs=1, num_D_SVs=1, num_G_SV_itrs=1, num_D_SV_itrs=1,
                  G_init='N02', D_init='xavier', skip_init=False, G_param='SN', D_param='none',
                  cross_replica=False, mybn=False, norm_style='bn', G_fp16=False, D_fp16=False,
                  G_mixed_precision=False, D_mixed_precision=False, D_wide=True,
                  dataset='C10', batch_size=64, num_epochs=1, retention_ratio=50.0)
    kw = BigGAN.model_kwargs(BigGANdeep, config)
    assert 'D_lr' not in kw['G'] and 'batch_size' not in kw['D']
    assert kw['G']['G_activation'] == 'inplace_relu'
    G, D = BigGAN.build_models(config)
    assert isinstance(G, BigGANdeep.Generator) and isinstance(D, BigGANdeep.Discriminator)
    assert (G.lr, G.B2, G.adam_eps, D.lr) == (1e-4, 0.99, 1e-6, 4e-4)
    assert not isinstance(D.linear, spectral_norm.SN) and isinstance(G.linear, spectral_norm.SN)
    assert not hasattr(G, 'optim') and not hasattr(D, 'optim')
    with pytest.raises(ValueError, match='resolution'):
        BigGAN.model_kwargs(BigGAN.Generator, dict(config, resolution=0))


def test_bf16_on_a_cpu_without_bf16_units_falls_back_to_fp32_with_a_warning(monkeypatch):
    """Emulated bf16 convolutions are 10-16x slower than fp32: --amp bf16 must not make them (and says
    so once a process, not at every step)."""
    monkeypatch.setattr(BigGAN, 'cpu_runs_bf16_natively', lambda: False)
    BigGAN._warn_once.cache_clear()  # an earlier test in this process may have had the warning
    with pytest.warns(UserWarning, match='neither AVX512-BF16 nor AMX.*running fp32'):
        ctx = BigGAN.autocast_context({'amp': 'bf16'}, torch.device('cpu'))
    with ctx:
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    with warnings.catch_warnings():  # asked again at every step: said once a process
        warnings.simplefilter('error')
        assert BigGAN.amp_dtype({'amp': 'bf16'}, torch.device('cpu')) is None
    monkeypatch.setattr(BigGAN, 'cpu_runs_bf16_natively', lambda: True)
    with BigGAN.autocast_context({'amp': 'bf16'}, torch.device('cpu')):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16


def test_cpu_bf16_check_reads_the_cpu_flags():
    """The check agrees with what the kernel reports for this CPU (Linux /proc/cpuinfo)."""
    cpuinfo = Path('/proc/cpuinfo')
    if not cpuinfo.exists():
        pytest.skip('no /proc/cpuinfo on this system')
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith('flags')).split())
    assert BigGAN.cpu_runs_bf16_natively() == bool({'avx512_bf16', 'amx_bf16', 'amx_tile'} & flags)


def test_speed_flags_on_the_cpu_bf16_autocast_and_channels_last(monkeypatch):
    monkeypatch.setattr(BigGAN, 'cpu_runs_bf16_natively', lambda: True)  # whatever CPU runs the test
    G, _ = tiny(BigGAN, 32)
    z, y = sample(G, 4)
    with torch.no_grad():
        reference = G(z, G.shared(y))
    cfg = {'amp': 'bf16', 'channels_last': True}
    assert BigGAN.apply_speed_flags(G, cfg, 'cpu') is G
    conv = next(m for m in G.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(G(z, G.shared(y)), reference, atol=1e-5)  # same function, other layout
    with BigGAN.autocast_context(cfg, torch.device('cpu')):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
        with torch.no_grad():
            out = G(z, G.shared(y))
    assert (out.float() - reference).abs().max() < 0.1  # bf16 rounding, not another function
    assert not BigGAN.grad_scaler(cfg, 'cpu').is_enabled()  # bf16 needs no loss scaling
    with pytest.warns(UserWarning, match='--amp fp16'):
        ctx = BigGAN.autocast_context({'amp': 'fp16'}, torch.device('cpu'))
    with ctx:
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match='--amp'):
        BigGAN.autocast_context({'amp': 'fp8'}, 'cpu')


def test_cross_replica_and_mybn():
    G, _ = tiny(BigGAN, 32, cross_replica=True)
    keys = list(G.state_dict())
    assert 'blocks.0.0.bn1.bn.running_mean' in keys and 'blocks.0.0.bn1.stored_mean' not in keys
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    with pytest.warns(UserWarning, match='per process'):
        assert sync_batchnorm.count_sync_bn(sync_batchnorm.convert_model(G)) == 0
    converted = sync_batchnorm.convert_model(G, device='cuda')
    assert sync_batchnorm.count_sync_bn(converted) == n_bn > 0
    assert list(converted.state_dict()) == keys
    z, y = sample(converted, 4)
    assert converted(z, converted.shared(y)).shape == (4, 3, 32, 32)  # no process group: plain BN
    plain, _ = tiny(BigGAN, 32)
    with pytest.warns(UserWarning, match='cross_replica=True'):
        sync_batchnorm.convert_model(plain, device='cuda')
    Gm, _ = tiny(BigGAN, 32, mybn=True)
    assert 'blocks.0.0.bn1.bn.accumulation_counter' in Gm.state_dict()
    Gm(z, Gm.shared(y))
    Gm.eval()
    assert torch.isfinite(Gm(z, Gm.shared(y))).all()


def test_attention_resolution_the_model_lacks_is_warned():
    with pytest.warns(UserWarning, match='no block at resolution'):
        BigGAN.Generator(G_ch=4, resolution=32, G_attn='64', n_classes=2, skip_init=True)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        BigGAN.Generator(G_ch=4, resolution=32, G_attn='0', n_classes=2, skip_init=True)


@pytest.mark.parametrize('family', ['BigGAN', 'BigGANdeep'])
def test_models_built_from_a_whole_config_as_in_biggan_pytorch(family):
    """`Generator(**config)` / `Discriminator(**config)` (BigGAN-PyTorch's train.py, sample.py and
    notebooks): flags that are not arguments are ignored, --G_nl/--D_nl are honoured, the result
    equals the model built from model_kwargs, and a typo is still a TypeError."""
    import utils
    config = vars(utils.prepare_parser().parse_args(
        ['--model', family, '--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0', '--G_shared',
         '--hier', '--dim_z', '12', '--shared_dim', '6', '--G_nl', 'inplace_relu', '--D_nl', 'ir']))
    config.update(resolution=32, n_classes=5)
    module = FAMILIES[family]
    torch.manual_seed(0)
    G, D = module.Generator(**config), module.Discriminator(**config)
    torch.manual_seed(0)
    G2, D2 = BigGAN.build_models(config)
    assert G.activation.inplace and D.activation.inplace
    for a, b in ((G, G2), (D, D2)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(TypeError, match=r"\['G_chh'\]"):
        module.Generator(**{**config, 'G_chh': 8})
    with pytest.raises(TypeError, match='not_a_flag'):
        module.Discriminator(**config, not_a_flag=1)


def test_get_data_loaders_in_biggan_pytorchs_keyword_form(tmp_path):
    import utils
    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        for i in range(6):
            Image.fromarray(np.full((8, 8, 3), 40 * i + c, np.uint8)).save(tmp_path / f"c{c}" / f"{i}.png")
    config = vars(utils.prepare_parser().parse_args(
        ['--dataset', 'custom', '--data_root', str(tmp_path), '--resolution', '8', '--num_workers', '0']))
    (loader,) = utils.get_data_loaders(**{**config, 'batch_size': 4, 'start_itr': 0, 'hdf5': False})
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 8, 8) and len(loader) == 3
    (resumed,) = utils.get_data_loaders(**{**config, 'batch_size': 4, 'start_itr': 2})
    assert len(resumed) == 1
    with pytest.raises(TypeError, match='batch_sise'):
        utils.get_data_loaders(**config, batch_sise=4)
