"""DiffAugment: differentiable, reproducible from a generator state, correct geometry, strict policy."""
from __future__ import annotations

import pytest
import torch

from diffaug import DiffAugment, parse_policy, rand_cutout, rand_translation

POLICY = "color,translation,cutout"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 6, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=_gen(seed)) * 2 - 1


def test_gradients_flow_and_match_finite_differences():
    x = _images(2, 8).double().requires_grad_(True)
    # A fixed generator state makes the transform a fixed (piecewise-linear) function of x.
    assert torch.autograd.gradcheck(lambda t: DiffAugment(t, POLICY, _gen(3)), (x,))
    y = DiffAugment(x, POLICY, _gen(3))
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_same_generator_state_gives_identical_transforms_for_real_and_fake():
    real, fake = _images(seed=1), _images(seed=2)
    assert torch.equal(DiffAugment(real, POLICY, _gen(7)), DiffAugment(real.clone(), POLICY, _gen(7)))
    # translation and cutout are linear in x: the same transform maps real + fake to the sum.
    geo = "translation,cutout"
    both = DiffAugment(real + fake, geo, _gen(7))
    assert torch.allclose(DiffAugment(real, geo, _gen(7)) + DiffAugment(fake, geo, _gen(7)), both, atol=1e-6)
    # and a different state gives a different transform
    assert not torch.equal(DiffAugment(real, POLICY, _gen(7)), DiffAugment(real, POLICY, _gen(8)))


def test_translation_is_an_integer_shift_with_zero_fill():
    x = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16).repeat(8, 1, 1, 1) + 1
    y = rand_translation(x, _gen(0))
    for i in range(8):
        matches = []
        for dh in range(-2, 3):
            for dw in range(-2, 3):
                ref = torch.zeros(16, 16)
                src = x[i, 0]
                for r in range(16):
                    for c in range(16):
                        if 0 <= r + dh < 16 and 0 <= c + dw < 16:
                            ref[r, c] = src[r + dh, c + dw]
                matches.append(torch.equal(ref, y[i, 0]))
        assert sum(matches) == 1, f"image {i} is not a shift of at most 1/8 of the size"


def test_cutout_zeroes_one_half_size_rectangle_and_keeps_the_rest():
    x = torch.ones(32, 2, 16, 12)
    y = rand_cutout(x, _gen(5))
    for i in range(32):
        zero = y[i, 0] == 0
        assert torch.equal(zero, y[i, 1] == 0)  # same hole in every channel
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 0 < len(rows) <= 8 and 0 < len(cols) <= 6
        assert zero.sum() == len(rows) * len(cols)  # a rectangle
        assert (y[i][:, ~zero] == 1).all()
    assert any(int((y[i, 0] == 0).sum()) == 8 * 6 for i in range(32))  # unclipped holes are H/2 x W/2


def test_color_changes_intensity_but_not_geometry():
    x = _images(64, 8)
    y = DiffAugment(x, "color", _gen(1))
    assert y.shape == x.shape and not torch.equal(x, y)
    # brightness moves the mean by at most 0.5 and contrast/saturation keep it: |mean shift| <= 0.5
    shift = (y.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))).abs()
    assert shift.max() <= 0.5 + 1e-5 and shift.std() > 0


def test_policy_parser_rejects_unknown_names_and_empty_policy_is_identity():
    assert parse_policy(" color, cutout ") == ("color", "cutout")
    assert parse_policy("") == () and parse_policy(None) == ()
    with pytest.raises(ValueError, match="--diffaug.*color, translation, cutout"):
        parse_policy("color,zoom")
    x = _images()
    assert DiffAugment(x, "") is x
    with pytest.raises(ValueError, match="N, C, H, W"):
        DiffAugment(x[0], "color")


def test_bfloat16_input_keeps_dtype():
    x = _images().to(torch.bfloat16)
    assert DiffAugment(x, POLICY, _gen(0)).dtype == torch.bfloat16
