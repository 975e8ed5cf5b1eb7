"""DiffAugment (Zhao et al., NeurIPS 2020): differentiable augmentation of D's inputs.

The same policy is applied to real and to generated images before *every* call of D,
in the D step and in the G step, so D never sees an un-augmented image and G receives
gradients through the augmentation. Operations (on images in [-1, 1], NCHW):

- ``color``: brightness (+U(-0.5, 0.5)), saturation (x U(0, 2) around the per-pixel
  channel mean), contrast (x U(0.5, 1.5) around the per-image mean);
- ``translation``: integer shift of up to 1/8 of the image size per axis, zero fill;
- ``cutout``: one zeroed square of half the image size per axis at a random centre.

Every random draw goes through ``generator`` when one is given, so two calls that start
from the same generator state apply identical transforms (e.g. to a real and a fake batch).

Integration (train_fns): ``x_aug = DiffAugment(x, config['diffaug'])`` on both the real and
the fake batch right before D, in the D step and in the G step; never on images that are
saved or scored.
"""
from __future__ import annotations

from typing import Callable

import torch

TRANSLATION_RATIO = 1 / 8   # Zhao et al.: shift up to 1/8 of the image per axis
CUTOUT_RATIO = 1 / 2        # Zhao et al.: the cut square is half the image per axis


def _rand(shape: tuple[int, ...], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U[0,1) numbers in float32 on x.device, drawn from `generator` (on its own device) if given."""
    if generator is None:
        return torch.rand(shape, device=x.device, dtype=torch.float32)
    return torch.rand(shape, generator=generator, device=generator.device,
                      dtype=torch.float32).to(x.device)


def _randint(low: int, high: int, n: int, x: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
    """n integers in [low, high) on x.device."""
    if generator is None:
        return torch.randint(low, high, (n,), device=x.device)
    return torch.randint(low, high, (n,), generator=generator, device=generator.device).to(x.device)


def rand_brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add one offset in [-0.5, 0.5) per image."""
    shift = _rand((x.shape[0], 1, 1, 1), x, generator) - 0.5
    return x + shift.to(x.dtype)


def rand_saturation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale the deviation from the channel mean of each pixel by a factor in [0, 2)."""
    factor = (_rand((x.shape[0], 1, 1, 1), x, generator) * 2).to(x.dtype)
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * factor + mean


def rand_contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale the deviation from the image mean by a factor in [0.5, 1.5)."""
    factor = (_rand((x.shape[0], 1, 1, 1), x, generator) + 0.5).to(x.dtype)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor + mean


def _shift_axis(x: torch.Tensor, shift: torch.Tensor, dim: int) -> torch.Tensor:
    """out[..., i, ...] = x[..., i + shift, ...] along `dim` (2 or 3), zero where out of range."""
    n, size = x.shape[0], x.shape[dim]
    src = torch.arange(size, device=x.device).unsqueeze(0) + shift.unsqueeze(1)   # [N, size]
    valid = (src >= 0) & (src < size)
    src = src.clamp(0, size - 1)
    view = [n, 1, 1, 1]
    view[dim] = size
    index = src.view(view).expand_as(x)
    # gather keeps the op differentiable w.r.t. x; the mask zeroes pixels shifted in from outside
    return x.gather(dim, index) * valid.view(view).to(x.dtype)


def rand_translation(x: torch.Tensor, generator: torch.Generator | None = None,
                     ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each image by integers in [-r*H, r*H] x [-r*W, r*W] (r = 1/8), filling with zeros."""
    n, _, h, w = x.shape
    max_h, max_w = int(h * ratio), int(w * ratio)
    shift_h = _randint(-max_h, max_h + 1, n, x, generator)
    shift_w = _randint(-max_w, max_w + 1, n, x, generator)
    return _shift_axis(_shift_axis(x, shift_h, 2), shift_w, 3)


def rand_cutout(x: torch.Tensor, generator: torch.Generator | None = None,
                ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero one (H*r) x (W*r) rectangle per image (r = 1/2), centred anywhere, clipped at the border."""
    n, _, h, w = x.shape
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    # Centre range as in Zhao et al.: [0, size] for even cut sizes, [0, size) for odd ones.
    centre_h = _randint(0, h + (1 - cut_h % 2), n, x, generator)
    centre_w = _randint(0, w + (1 - cut_w % 2), n, x, generator)
    top = (centre_h - cut_h // 2).unsqueeze(1)
    left = (centre_w - cut_w // 2).unsqueeze(1)
    rows = torch.arange(h, device=x.device).unsqueeze(0)
    cols = torch.arange(w, device=x.device).unsqueeze(0)
    in_rows = (rows >= top) & (rows < top + cut_h)          # [N, H]
    in_cols = (cols >= left) & (cols < left + cut_w)        # [N, W]
    cut = in_rows.unsqueeze(2) & in_cols.unsqueeze(1)       # [N, H, W]
    return x * (~cut).unsqueeze(1).to(x.dtype)


AUGMENTATIONS: dict[str, tuple[Callable[..., torch.Tensor], ...]] = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """Split a policy string such as 'color,translation,cutout' into checked operation names.

    '' or None means no augmentation. Unknown names raise ValueError listing the valid ones.
    """
    if not policy:
        return ()
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown DiffAugment operation(s) {unknown} in --diffaug '{policy}'; "
                         f"use a comma-separated subset of {', '.join(AUGMENTATIONS)}")
    return names


def DiffAugment(x: torch.Tensor, policy: str | None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the DiffAugment `policy` to a batch `x` [N, C, H, W] (differentiable w.r.t. x).

    Each image gets its own random parameters. With `generator`, the draws come from it (on the
    generator's device, then moved to x's device), so an identical generator state reproduces
    identical transforms; without it the global RNG of x's device is used. Returns x unchanged
    (same object) when the policy is empty.
    """
    names = parse_policy(policy)
    if not names:
        return x
    if x.dim() != 4:
        raise ValueError(f"DiffAugment expects an image batch [N, C, H, W], got shape {tuple(x.shape)}")
    for name in names:
        for op in AUGMENTATIONS[name]:
            x = op(x, generator)
    return x
