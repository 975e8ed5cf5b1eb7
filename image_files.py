"""One image file to pixels: decode, convert to RGB, crop the long edge to a square and resize
(BigGAN-PyTorch's CenterCropLongEdge/RandomCropLongEdge + Resize), as a uint8 CHW tensor; the
uint8 -> [-1, 1] conversion every dataset uses; and which file names count as images.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def to_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 CHW -> float CHW in [-1, 1]; the single conversion every dataset uses."""
    return img.float().div_(127.5).sub_(1.0)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. 16/32-bit integer images are scaled, not clipped, to 8 bits."""
    if img.mode.startswith("I;16") or img.mode == "I":
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        img = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL asks for this route for palettes with transparency
    return img if img.mode == "RGB" else img.convert("RGB")


def square_crop_resize(img: Image.Image, size: int, augment: bool) -> Image.Image:
    """BigGAN-PyTorch's CenterCropLongEdge (or RandomCropLongEdge) then Resize(size)."""
    w, h = img.size
    s = min(w, h)
    if augment:
        left = int(torch.randint(0, w - s + 1, ()))
        top = int(torch.randint(0, h - s + 1, ()))
    else:  # torchvision's CenterCrop rounding
        left, top = int(round((w - s) / 2.0)), int(round((h - s) / 2.0))
    img = img.crop((left, top, left + s, top + s))
    return img if s == size else img.resize((size, size), Image.BILINEAR)


def read_image(path: str | os.PathLike, size: int, augment: bool = False) -> torch.Tensor:
    """Decode `path` to a uint8 CHW RGB tensor of `size`; ValueError naming the file if unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            img = square_crop_resize(to_rgb(img), size, augment)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}; delete or replace it "
                         f"(make_hdf5.py --skip_bad skips unreadable images)") from err
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())


def is_image(name: str) -> bool:
    """Whether a file name is an image this project reads (by extension; hidden files never)."""
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)
