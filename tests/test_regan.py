"""Re-GAN on the real BigGAN generator: schedule, exact per-layer sparsity, zeros kept, regrowth, resume."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import BigGAN
from regan import ReGAN, prunable_parameters, smallest_magnitude_mask


def _G(seed: int = 0) -> BigGAN.Generator:
    torch.manual_seed(seed)
    return BigGAN.Generator(G_ch=8, resolution=32, G_attn='0', n_classes=10, dim_z=16,
                            shared_dim=16, hier=True, G_shared=True)


def _train_steps(G, opt, regan, itrs, seed_base=0):
    """A few real G updates (regress G's output to a fixed target) with the Re-GAN calls in place."""
    target = torch.linspace(-0.5, 0.5, 3 * 32 * 32).view(1, 3, 32, 32)
    for itr in itrs:
        event = regan.step(itr)
        if event:
            for group in opt.param_groups:
                group["lr"] = 1e-3 * regan.lr_scale()
        g = torch.Generator().manual_seed(seed_base + itr)
        z = torch.randn(4, 16, generator=g)
        y = torch.randint(0, 10, (4,), generator=g)
        loss = (G(z, G.shared(y)) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        regan.mask_grads()
        opt.step()
        regan.mask_weights()


def test_only_linear_and_conv_weights_are_prunable_including_spectral_norm_wrappers():
    names = set(prunable_parameters(_G()))
    assert "linear.weight" in names and "output_layer.2.weight" in names
    assert not any(n.endswith("bias") or n.startswith("shared") for n in names)
    assert not any(".bn" in n and not (n.endswith("gain.weight") or n.endswith("bias.weight")) for n in names)
    model = nn.Sequential(nn.utils.spectral_norm(nn.Conv2d(2, 4, 3)),
                          nn.utils.parametrizations.spectral_norm(nn.Linear(4, 3)),
                          nn.BatchNorm1d(3), nn.Embedding(5, 3))
    assert set(prunable_parameters(model)) == {"0.weight_orig", "1.parametrizations.weight.original"}


def test_phase_schedule_alternates_after_warmup_and_sets_lr_scale():
    regan = ReGAN(_G(), sparsity=0.3, interval=2, warmup=3)
    events = [(itr, regan.step(itr), regan.phase, regan.lr_scale()) for itr in range(1, 11)]
    assert [e[2] for e in events] == ["warmup"] * 3 + ["sparse"] * 2 + ["dense"] * 2 + ["sparse"] * 2 + ["dense"]
    assert [e[1] for e in events] == [None, None, None, "prune", None, "regrow", None, "prune", None, "regrow"]
    assert [e[3] for e in events] == [1, 1, 1, 1, 1, 0.1, 0.1, 1, 1, 0.1]
    with pytest.raises(ValueError, match="--regan_sparsity"):
        ReGAN(_G(), sparsity=1.0, interval=2)


def test_each_layer_reaches_the_requested_sparsity_and_ties_are_counted_exactly():
    G = _G()
    regan = ReGAN(G, sparsity=0.3, interval=5)
    assert regan.step(1) == "prune"
    for name, frac in regan.layer_sparsity().items():
        n = regan.layers[name].numel()
        assert abs(frac - round(0.3 * n) / n) < 1e-9, name
    assert abs(regan.stats()["regan_sparsity"] - 0.3) < 1e-3 and regan.stats()["regan_sparse"] == 1.0
    assert G.shared.weight.ne(0).all()  # embeddings untouched
    ties = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 2.0])
    assert int(smallest_magnitude_mask(ties, 0.5).sum()) == 3


def test_layer_larger_than_quantile_limit_is_pruned_exactly():
    torch.manual_seed(0)
    big = nn.Linear(4100, 4100, bias=False)  # 16.81M weights, beyond torch.quantile's 16M limit
    assert big.weight.numel() > 2 ** 24
    regan = ReGAN(big, sparsity=0.3, interval=1)
    regan.step(1)
    zeros = int((big.weight == 0).sum())
    assert zeros == round(0.3 * big.weight.numel())
    assert regan.masks["weight"].sum() == zeros  # the zeros are exactly the masked entries


def test_pruned_weights_stay_zero_through_adam_steps_and_regrow_in_dense_phase():
    G = _G()
    opt = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.999))
    G_ema = copy.deepcopy(G)
    regan = ReGAN(G, sparsity=0.3, interval=4, warmup=2)
    _train_steps(G, opt, regan, range(1, 3))            # warm-up: dense, builds Adam moments
    _train_steps(G, opt, regan, range(3, 7))            # sparse phase: 4 Adam steps
    masks = {n: m.clone() for n, m in regan.masks.items()}
    assert regan.phase == "sparse" and masks
    for name, mask in masks.items():
        assert regan.layers[name][mask].eq(0).all(), name
        assert regan.layers[name][~mask].ne(0).all(), name
    regan.mask_weights(G_ema)
    assert all(dict(G_ema.named_parameters())[n][m].eq(0).all() for n, m in masks.items())
    _train_steps(G, opt, regan, range(7, 9))            # dense phase: regrowth at lr / 10
    assert regan.phase == "dense" and not regan.masks
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    regrown = sum(int(regan.layers[n][m].ne(0).sum()) for n, m in masks.items())
    assert regrown > 0.9 * sum(int(m.sum()) for m in masks.values())


def test_resume_in_the_middle_of_a_sparse_phase_is_bit_identical(tmp_path):
    def fresh():
        G = _G()
        return G, torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.999)), None

    G, opt, _ = fresh()
    regan = ReGAN(G, sparsity=0.3, interval=3, warmup=1)
    _train_steps(G, opt, regan, range(1, 4))             # warm-up + 2 of 3 sparse iterations
    assert regan.phase == "sparse"
    torch.save({"G": G.state_dict(), "opt": opt.state_dict(), "regan": regan.state_dict()},
               tmp_path / "ckpt.pth")
    _train_steps(G, opt, regan, range(4, 9))              # to the middle of the next sparse phase
    reference = {k: v.clone() for k, v in G.state_dict().items()}

    G2, opt2, _ = fresh()
    state = torch.load(tmp_path / "ckpt.pth", weights_only=True)
    G2.load_state_dict(state["G"])
    opt2.load_state_dict(state["opt"])
    regan2 = ReGAN(G2, sparsity=0.3, interval=3, warmup=1)
    regan2.load_state_dict(state["regan"])
    assert regan2.step(4) is None                          # same sparse phase: masks kept, no re-prune
    _train_steps(G2, opt2, regan2, range(4, 9))
    for k, v in G2.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert regan2.phase == regan.phase and regan2.cycle == regan.cycle
    assert all(torch.equal(regan.masks[n], regan2.masks[n]) for n in regan.masks)


def test_load_state_dict_rejects_a_different_generator():
    regan = ReGAN(_G(), sparsity=0.3, interval=2)
    regan.step(1)
    other = ReGAN(nn.Sequential(nn.Linear(3, 3)), sparsity=0.3, interval=2)
    with pytest.raises(ValueError, match="architecture flags"):
        other.load_state_dict(regan.state_dict())
    with pytest.raises(ValueError, match="ReGAN.pth"):
        other.load_state_dict({"phase": "nonsense"})
