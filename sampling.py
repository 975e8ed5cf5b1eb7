"""Reusable sampling helpers: noise and labels, the truncation trick, sample sheets,
per-class sheets, interpolations and a streaming npz writer.

Used by `sample.py` and by `train_fns.save_and_sample`. Every function takes an optional
`torch.Generator` so that a caller inside the training loop can draw its noise from a
dedicated stream and leave the global RNG (and with it exact resume) untouched; without
one, the global RNG is used, as in BigGAN-PyTorch.

Images come out of G in [-1, 1]; the writers map that range linearly to [0, 255] (no
per-sheet min-max stretch) and round to the nearest integer.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torchvision.utils as vutils
from PIL import Image
from tqdm import tqdm

import distributed as dist_utils
from io_utils import atomic_path

SampleFn = Callable[[], tuple[torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------- noise and labels
def _draw_device(device: torch.device | str, generator: torch.Generator | None) -> torch.device:
    return torch.device(device) if generator is None else generator.device


def truncated_normal(shape: tuple[int, ...], threshold: float, std: float = 1.0,
                     device: torch.device | str = "cpu",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Samples of N(0, std^2) restricted to [-threshold*std, threshold*std] (BigGAN's truncation).

    Drawn exactly by inverting the normal CDF on the truncated interval, so small
    thresholds cost no rejection rounds.
    """
    if threshold <= 0:
        raise ValueError(f"truncation threshold must be > 0, got {threshold}")
    draw_on = _draw_device(device, generator)
    u = torch.rand(shape, device=draw_on, generator=generator, dtype=torch.float64)
    # Phi(t) - Phi(-t) = erf(t / sqrt(2)); map u to (-erf, erf) and invert.
    half = math.erf(threshold / math.sqrt(2.0))
    z = math.sqrt(2.0) * torch.erfinv((2 * u - 1) * half)
    return (std * z.clamp_(-threshold, threshold)).to(device=device, dtype=torch.float32)


def sample_z(n: int, dim_z: int, device: torch.device | str = "cpu", z_var: float = 1.0,
             truncation: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """z ~ N(0, z_var^2) of shape [n, dim_z] (z_var is used as the std, as in BigGAN-PyTorch);
    with `truncation` > 0 every entry lies within +-truncation standard deviations."""
    if truncation > 0:
        return truncated_normal((n, dim_z), truncation, z_var, device, generator)
    draw_on = _draw_device(device, generator)
    z = torch.randn(n, dim_z, device=draw_on, generator=generator) * z_var
    return z.to(device)


def sample_y(n: int, n_classes: int, device: torch.device | str = "cpu",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Class labels uniform over [0, n_classes), int64 [n]."""
    draw_on = _draw_device(device, generator)
    return torch.randint(0, n_classes, (n,), device=draw_on, generator=generator).to(device)


class ZYSampler:
    """Batches of (z, y), the interface of training_utils.NoiseSampler (`sample_()`), plus the
    truncation trick: `truncation` > 0 draws z from the truncated normal.

    Usable with `training_utils.accumulate_standing_stats` and as the noise of `sample_fn`.
    """

    def __init__(self, batch_size: int, dim_z: int, n_classes: int, device: torch.device | str,
                 z_var: float = 1.0, truncation: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        self.batch_size, self.dim_z, self.n_classes = batch_size, dim_z, n_classes
        self.device, self.z_var, self.truncation = torch.device(device), z_var, truncation
        self.generator = generator
        self.z = torch.zeros(batch_size, dim_z, device=self.device)
        self.y = torch.zeros(batch_size, dtype=torch.int64, device=self.device)

    def sample_(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a new batch (z first, then y) into `self.z`, `self.y`; returns both."""
        self.z.copy_(sample_z(self.batch_size, self.dim_z, self.device, self.z_var,
                              self.truncation, self.generator))
        self.y.copy_(sample_y(self.batch_size, self.n_classes, self.device, self.generator))
        return self.z, self.y


@torch.no_grad()
def generate(G: nn.Module, z: torch.Tensor, y: torch.Tensor, batch_size: int = 0,
             autocast=None) -> torch.Tensor:
    """G(z, G.shared(y)) in float32, in batches of `batch_size` (0 = all at once).

    `y` holds class indices (int) or already-embedded class vectors (float, e.g.
    interpolated embeddings). `autocast` is an optional context-manager factory (--amp).
    """
    outs = []
    step = batch_size or z.shape[0]
    for start in range(0, z.shape[0], step):
        zb, yb = z[start:start + step], y[start:start + step]
        if autocast is None:
            out = G(zb, G.shared(yb) if not yb.is_floating_point() else yb)
        else:
            with autocast():
                out = G(zb, G.shared(yb) if not yb.is_floating_point() else yb)
        outs.append(out.float())
    return torch.cat(outs)


def make_sample_fn(G: nn.Module, sampler: ZYSampler, autocast=None) -> SampleFn:
    """A `sample_fn() -> (images in [-1, 1], labels)` drawing one batch from `sampler`."""
    @torch.no_grad()
    def sample_fn() -> tuple[torch.Tensor, torch.Tensor]:
        z, y = sampler.sample_()
        return generate(G, z, y, autocast=autocast), y.clone()
    return sample_fn


# ----------------------------------------------------------------------------- pictures
def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float NCHW -> uint8 NCHW in [0, 255], rounded (out-of-range values clamp)."""
    return ((images.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float NCHW tensor -> uint8 NHWC numpy array (the npz layout)."""
    return to_uint8(images).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 0, padding: int = 2,
              row_labels: list[str] | None = None) -> Path:
    """Write images in [-1, 1] as one grid picture (format from the suffix, PNG by default),
    atomically. `nrow` images per row (0 = a square grid); `row_labels` are written in a
    margin left of the rows (class names on class sheets)."""
    path = Path(path)
    nrow = nrow or max(1, int(math.sqrt(images.shape[0])))
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    grid = vutils.make_grid(to_uint8(images), nrow=nrow, padding=padding)
    picture = Image.fromarray(grid.permute(1, 2, 0).numpy())
    if row_labels:
        picture = _with_row_labels(picture, row_labels, images.shape[-2] + padding, padding)
    with atomic_path(path) as tmp:
        picture.save(tmp, format=fmt)
    return path


def _with_row_labels(picture: Image.Image, labels: list[str], row_height: int, padding: int) -> Image.Image:
    """`picture` with a white margin on the left holding one label per row (vertically centred)."""
    from PIL import ImageDraw, ImageFont
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(picture)
    width = max(int(draw.textlength(label, font=font)) for label in labels) + 8
    out = Image.new("RGB", (picture.width + width, picture.height), "white")
    out.paste(picture, (width, 0))
    draw = ImageDraw.Draw(out)
    for row, label in enumerate(labels):
        draw.text((4, padding + row * row_height + (row_height - padding) // 2), label, fill="black",
                  font=font, anchor="lm")
    return out


@torch.no_grad()
def random_sheet(G: nn.Module, path: str | Path, num: int, dim_z: int, n_classes: int,
                 device: torch.device | str, z_var: float = 1.0, truncation: float = 0.0,
                 batch_size: int = 0, generator: torch.Generator | None = None,
                 autocast=None) -> Path:
    """A sheet of `num` random samples (random z and classes) written to `path`."""
    z = sample_z(num, dim_z, device, z_var, truncation, generator)
    y = sample_y(num, n_classes, device, generator)
    return save_grid(generate(G, z, y, batch_size, autocast), path)


@torch.no_grad()
def class_sheets(G: nn.Module, folder: str | Path, n_classes: int, classes_per_sheet: int,
                 dim_z: int, device: torch.device | str, samples_per_class: int = 10,
                 z_var: float = 1.0, truncation: float = 0.0,
                 generator: torch.Generator | None = None, autocast=None,
                 class_names: list[str] | None = None) -> list[Path]:
    """Per-class sheets `folder/samples{i}.png`: one row per class, `samples_per_class` columns,
    `classes_per_sheet` classes per sheet (BigGAN-PyTorch's sample_sheet layout), each row
    labelled with its class name when `class_names` are known.

    As in BigGAN-PyTorch, every forward batch holds one sample of each class on the sheet
    (column j is one batch), so a G in train mode takes its BN statistics over all classes.
    """
    paths = []
    for sheet, first in enumerate(range(0, n_classes, classes_per_sheet)):
        classes = torch.arange(first, min(first + classes_per_sheet, n_classes), device=device)
        n = classes.shape[0]
        y = classes.repeat(samples_per_class)  # batch j = column j: classes first..first+n-1
        z = sample_z(y.shape[0], dim_z, device, z_var, truncation, generator)
        images = generate(G, z, y, n, autocast)
        rows = images.view(samples_per_class, n, *images.shape[1:]).transpose(0, 1)
        labels = [class_names[c] for c in classes.tolist()] if class_names else None
        paths.append(save_grid(rows.reshape(images.shape), Path(folder) / f"samples{sheet}.png",
                               samples_per_class, row_labels=labels))
    return paths


def interp(x0: torch.Tensor, x1: torch.Tensor, num_midpoints: int) -> torch.Tensor:
    """Linear interpolation: [N, 1, D] endpoints -> [N, num_midpoints + 2, D] (ends included)."""
    alpha = torch.linspace(0, 1, num_midpoints + 2, device=x0.device, dtype=x0.dtype)
    return torch.lerp(x0, x1, alpha.view(1, -1, 1))


def interp_name(fix_z: bool, fix_y: bool, sheet_number: int = 0) -> str:
    """BigGAN-PyTorch's interpolation file name, letters for what is interpolated:
    `interpZY0.png` (both), `interpZ0.png` (fixed y), `interpY0.png` (fixed z)."""
    return "interp%s%s%d.png" % ("" if fix_z else "Z", "" if fix_y else "Y", sheet_number)


@torch.no_grad()
def interp_sheet(G: nn.Module, path: str | Path, n_classes: int, dim_z: int,
                 device: torch.device | str, fix_z: bool = False, fix_y: bool = False,
                 num_per_sheet: int = 16, num_midpoints: int = 8, z_var: float = 1.0,
                 truncation: float = 0.0, batch_size: int = 0,
                 generator: torch.Generator | None = None, autocast=None) -> Path:
    """One interpolation sheet: `num_per_sheet` rows of `num_midpoints + 2` images.

    fix_z: one z per row, class embeddings interpolated; fix_y: one class per row, z
    interpolated; neither: both interpolated. Interpolating classes needs a shared class
    embedding (`--G_shared`); without one it raises ValueError.
    """
    if not fix_y and not isinstance(G.shared, nn.Embedding):
        raise ValueError("class interpolation needs G's shared embedding (--G_shared); only "
                         "the fixed-class (fix_y) sheet can be drawn for this model")
    n, cols = num_per_sheet, num_midpoints + 2

    def z_end() -> torch.Tensor:
        return sample_z(n, dim_z, device, z_var, truncation, generator).view(n, 1, -1)

    zs = z_end().expand(n, cols, -1) if fix_z else interp(z_end(), z_end(), num_midpoints)
    if fix_y:
        ys = sample_y(n, n_classes, device, generator).repeat_interleave(cols)
    else:
        def y_end() -> torch.Tensor:
            return G.shared(sample_y(n, n_classes, device, generator)).float().view(n, 1, -1)
        ys = interp(y_end(), y_end(), num_midpoints).reshape(n * cols, -1)
    images = generate(G, zs.reshape(n * cols, -1), ys, batch_size, autocast)
    return save_grid(images, path, cols)


def interp_sheets(G: nn.Module, folder: str | Path, n_classes: int, dim_z: int,
                  device: torch.device | str, sheet_number: int = 0, **kwargs) -> list[Path]:
    """The three BigGAN-PyTorch interpolation sheets (both, fixed y, fixed z) in `folder`.

    Models without a shared embedding get only the fixed-y sheet. `kwargs` go to
    `interp_sheet` (num_per_sheet, num_midpoints, z_var, truncation, generator, ...).
    """
    variants = [(False, False), (False, True), (True, False)]
    if not isinstance(G.shared, nn.Embedding):
        variants = [(False, True)]
    return [interp_sheet(G, Path(folder) / interp_name(fz, fy, sheet_number), n_classes, dim_z,
                         device, fix_z=fz, fix_y=fy, **kwargs) for fz, fy in variants]


# ----------------------------------------------------------------------------- npz
def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> dict:
    return {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
            "shape": tuple(int(s) for s in shape)}


def write_npz_chunks(path: str | Path, chunks: Iterable[tuple[np.ndarray, np.ndarray]],
                     num: int) -> Path:
    """Stream `num` samples into `path` as an npz with 'x' (uint8 [num, H, W, C]) and 'y' (int64).

    `chunks` yields (x, y) pairs of any batch size; the images go straight into the zip
    member, so only one chunk (and the labels) is ever in memory. The file is written
    atomically: an interrupted run leaves no partial npz. Raises ValueError when the
    chunks run out before `num` samples.
    """
    if num <= 0:
        raise ValueError(f"--sample_num_npz must be positive, got {num}")
    path = Path(path)
    labels = np.empty(num, dtype=np.int64)
    iterator: Iterator = iter(chunks)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            written, header_done = 0, False
            with zf.open("x.npy", "w", force_zip64=True) as fh:
                while written < num:
                    try:
                        x, y = next(iterator)
                    except StopIteration:
                        raise ValueError(f"only {written} of {num} samples were produced "
                                         f"for {path}") from None
                    x = np.ascontiguousarray(x[:num - written], dtype=np.uint8)
                    if not header_done:
                        np.lib.format.write_array_header_1_0(
                            fh, _npy_header(np.uint8, (num, *x.shape[1:])))
                        header_done = True
                    fh.write(x.tobytes())
                    labels[written:written + len(x)] = np.asarray(y)[:len(x)]
                    written += len(x)
            with zf.open("y.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, labels, allow_pickle=False)
    return path


def sample_chunks(sample_fn: SampleFn, num: int, progress: bool = False
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (uint8 NHWC images, int64 labels) batches from `sample_fn` until `num` are drawn.

    Under DDP every rank must iterate: each draws a batch and the batches are gathered in
    rank order, so every rank yields the same chunks (rank 0 writes them).
    """
    produced = 0
    bar = tqdm(total=num, desc="samples", unit="img", disable=not progress)
    while produced < num:
        images, labels = sample_fn()
        x = dist_utils.all_gather_cat(to_uint8(images).permute(0, 2, 3, 1).contiguous())
        y = dist_utils.all_gather_cat(labels.to(torch.int64))
        produced += x.shape[0]
        bar.update(min(x.shape[0], num - bar.n))
        yield x.cpu().numpy(), y.cpu().numpy()
    bar.close()


# ----------------------------------------------------------------------------- generation by seed
def parse_int_list(spec: str, flag: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]: comma-separated integers and inclusive ranges, each once."""
    values: list[int] = []
    try:
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            low, sep, high = part.partition("-")
            values += list(range(int(low), int(high) + 1)) if sep and low else [int(part)]
    except ValueError:
        raise ValueError(f"{flag} {spec!r} must be integers or ranges joined by commas, "
                         f"e.g. 0-99 or 1,5,9") from None
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise ValueError(f"{flag} {spec!r} must name at least one non-negative value, each once")
    return values


def seed_noise(seed: int, dim_z: int, n_classes: int, z_var: float = 1.0,
               truncation: float = 0.0) -> tuple[torch.Tensor, int]:
    """(z [dim_z], class) of one seed, as StyleGAN2-ADA's generate.py: the same seed gives the
    same z (and drawn class) whatever else is generated, on any device."""
    gen = torch.Generator().manual_seed(seed)
    z = sample_z(1, dim_z, "cpu", z_var, truncation, gen)[0]
    return z, int(torch.randint(n_classes, (1,), generator=gen))


@torch.no_grad()
def generate_pngs(G: nn.Module, folder: str | Path, seeds: list[int], classes: list[int] | None,
                  n_classes: int, device: torch.device | str, z_var: float = 1.0,
                  truncation: float = 0.0, batch_size: int = 64, autocast=None) -> list[Path]:
    """One PNG per (seed, class) in `folder`, named `seed0042_class3.png`: every class of
    `classes` for each seed (the same z), or the class drawn from the seed when `classes` is
    None. G should be in eval mode so that an image does not depend on its batch."""
    jobs = []
    for seed in seeds:
        z, drawn = seed_noise(seed, G.dim_z, n_classes, z_var, truncation)
        jobs += [(seed, c, z) for c in (classes if classes is not None else [drawn])]
    paths = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        z = torch.stack([j[2] for j in chunk]).to(device)
        y = torch.tensor([j[1] for j in chunk], device=device)
        images = to_uint8_nhwc(generate(G, z, y, autocast=autocast))
        for (seed, c, _), image in zip(chunk, images):
            path = Path(folder) / f"seed{seed:04d}_class{c}.png"
            with atomic_path(path) as tmp:
                Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(tmp, format="PNG")
            paths.append(path)
    return paths


# ----------------------------------------------------------------------------- truncation sweep
def parse_trunc_curves(spec: str) -> list[float]:
    """'start_step_end' -> [start, start+step, ..., end] (end included, rounded to 1e-6)."""
    try:
        start, step, end = (float(v) for v in spec.split("_"))
    except ValueError:
        raise ValueError(f"--sample_trunc_curves {spec!r} must be 'start_step_end', "
                         f"e.g. 0.05_0.05_1.0") from None
    if step <= 0 or start <= 0 or end < start:
        raise ValueError(f"--sample_trunc_curves {spec!r}: need 0 < start <= end and step > 0")
    count = int(math.floor((end - start) / step + 1e-6)) + 1
    return [round(start + i * step, 6) for i in range(count)]
