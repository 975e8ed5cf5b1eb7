"""Pack a dataset into one HDF5 file (`imgs` uint8 N x 3 x R x R, `labels` int64), like BigGAN-PyTorch.

    python make_hdf5.py --dataset I128 --data_root data            # -> data/ILSVRC128.hdf5
    python make_hdf5.py --dataset FMNIST32 --data_root data        # -> data/FMNIST32.hdf5
    python make_hdf5.py --dataset custom --data_root data/faces --resolution 64   # -> data/faces_64.hdf5

Images are decoded by DataLoader workers with exactly the folder pipeline of datasets.py
(centre crop of the long edge, resize), so training on the file equals training on the
folder pixel for pixel. The file is written under a temporary name and renamed when
complete; an existing file is never replaced without --overwrite.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import datasets
import utils
from io_utils import atomic_path, atomic_write_text


def prepare_parser() -> argparse.ArgumentParser:
    """The command line of make_hdf5.py (BigGAN-PyTorch's flags plus safety options)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="I128", help="registry key of the source, e.g. I128, C10, "
                   "FMNIST32, custom (an _hdf5 key means its source) (default: %(default)s)")
    p.add_argument("--data_root", default="data", help="where the source lives; the file is "
                   "written here (default: %(default)s)")
    p.add_argument("--resolution", type=int, default=0, help="image size (0 = the key's; "
                   "required for custom) (default: %(default)s)")
    p.add_argument("--batch_size", type=int, default=256, help="images per loader batch (default: %(default)s)")
    p.add_argument("--num_workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader workers decoding images (default: %(default)s)")
    p.add_argument("--chunk_size", type=int, default=500, help="HDF5 chunk length in images (default: %(default)s)")
    p.add_argument("--compression", nargs="?", const="lzf", default="none", choices=["none", "gzip", "lzf"],
                   help="HDF5 compression; a bare --compression means lzf as in BigGAN-PyTorch (default: %(default)s)")
    p.add_argument("--skip_bad", action="store_true", help="skip unreadable images and list them "
                   "in OUT.skipped.txt instead of stopping")
    p.add_argument("--out", default="", help="output file (default: DATA_ROOT/<registry name>, "
                   "e.g. data/ILSVRC128.hdf5; for custom DATA_ROOT_<res>.hdf5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--max_images", type=int, default=0, help="only the first N images (0 = all)")
    return p


def source_key(name: str) -> str:
    """The dataset a file is made from: `I128_hdf5` -> `I128`; ValueError on unknown keys."""
    datasets.dataset_info(name)
    return name[:-len("_hdf5")] if name.endswith("_hdf5") else name


def default_out(key: str, data_root: str, resolution: int) -> Path:
    """BigGAN-PyTorch's naming: DATA_ROOT/ILSVRC128.hdf5, DATA_ROOT/FMNIST32.hdf5, ...; custom: DIR_<res>.hdf5."""
    if key == "custom":
        return Path(f"{str(data_root).rstrip('/')}_{resolution}.hdf5")
    return Path(data_root) / datasets.DATASETS[f"{key}_hdf5"].root


class _Guarded(Dataset):
    """Items as (uint8 image, label, ok, error message), so one bad file never kills a worker."""

    def __init__(self, dataset: datasets.ImageDataset):
        self.dataset = dataset
        self.shape = (3, dataset.resolution, dataset.resolution)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset.load_uint8(index), int(self.dataset.labels[index]), True, ""
        except ValueError as err:
            return torch.zeros(self.shape, dtype=torch.uint8), -1, False, str(err)


class _GuardedFile:
    """The file object HDF5 writes through (h5py's file-object driver), hiding write errors
    from HDF5. A write that fails inside HDF5 (a full disk) leaves dirty buffers that it tries
    to flush again at every close and at interpreter exit, where the process then crashes
    (SIGSEGV). Here the first OSError is kept in `error`, HDF5 is told every write succeeded
    (later writes are discarded), and the caller raises `error` once the file is closed; the
    temporary file is deleted anyway."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def _guard(self, op, result):
        if self.error is None:
            try:
                return op()
            except OSError as err:
                # A fresh exception: the caught one's traceback holds frames of HDF5's callback.
                self.error = OSError(err.errno, err.strerror)
        return result

    def _write_all(self, data) -> int:
        # An unbuffered write may be short (a disk filling up); the next one then raises.
        view = memoryview(data).cast("B")
        while view:
            view = view[self.fh.write(view):]
        return len(data)

    def write(self, data) -> int:
        return self._guard(lambda: self._write_all(data), len(data))

    def truncate(self, size: int | None = None) -> int | None:
        return self._guard(lambda: self.fh.truncate(size), size)

    def flush(self) -> None:
        self._guard(self.fh.flush, None)

    def read(self, size: int = -1) -> bytes:
        return self.fh.read(size)

    def readinto(self, buffer) -> int:
        return self.fh.readinto(buffer)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()


@contextlib.contextmanager
def _hdf5_writer(path: Path) -> Iterator[tuple[h5py.File, _GuardedFile]]:
    """(HDF5 file open for writing at `path`, its guarded file object); a write error is raised
    after the file has been closed cleanly (check `sink.error` to stop early)."""
    with open(path, "w+b", buffering=0) as fh:  # unbuffered: every write error reaches the guard
        sink = _GuardedFile(fh)
        f = h5py.File(sink, "w")
        try:
            yield f, sink
        finally:
            f.close()
        if sink.error is not None:
            raise sink.error


def write_hdf5(dataset: datasets.ImageDataset, out: Path, args: argparse.Namespace, key: str) -> list[str]:
    """Write `dataset` to `out` atomically (never replacing a file that appeared meanwhile,
    unless --overwrite); returns the messages of skipped images."""
    n = len(dataset) if not args.max_images else min(args.max_images, len(dataset))
    source = _Guarded(dataset)
    if n < len(dataset):
        source = torch.utils.data.Subset(source, range(n))
    loader = DataLoader(source, batch_size=args.batch_size, num_workers=args.num_workers, shuffle=False)
    r, chunk = dataset.resolution, max(1, min(args.chunk_size, n))
    comp = None if args.compression == "none" else args.compression
    skipped: list[str] = []
    with atomic_path(out, replace=args.overwrite) as tmp, _hdf5_writer(tmp) as (f, sink):
        imgs = f.create_dataset("imgs", (0, 3, r, r), maxshape=(None, 3, r, r), dtype="uint8",
                                chunks=(chunk, 3, r, r), compression=comp)
        labels = f.create_dataset("labels", (0,), maxshape=(None,), dtype="int64",
                                  chunks=(chunk,), compression=comp)
        with tqdm(total=n, desc=f"writing {out.name}", unit="img") as bar:
            for x, y, ok, messages in loader:
                bad = [m for m, good in zip(messages, ok.tolist()) if not good]
                if bad and not args.skip_bad:
                    raise ValueError(f"{bad[0]}; or rerun with --skip_bad")
                skipped += bad
                x, y = x[ok].numpy(), y[ok].numpy().astype(np.int64)
                if len(x):
                    start = imgs.shape[0]
                    imgs.resize(start + len(x), axis=0)
                    labels.resize(start + len(x), axis=0)
                    imgs[start:], labels[start:] = x, y
                if sink.error is not None:
                    break  # a full disk: stop now, the error is raised on closing
                bar.update(len(ok))
        if imgs.shape[0] == 0:
            raise ValueError(f"no readable images in {args.data_root}; nothing written")
        f.attrs.update({"dataset": key, "resolution": r, "n_classes": dataset.n_classes,
                        "source": str(args.data_root), "skipped": len(skipped)})
        names = datasets.class_names(dataset)
        if names:
            f.attrs["classes"] = json.dumps(names)
    return skipped


def run(argv: list[str] | None = None) -> Path:
    """Parse `argv`, build the source dataset and write its HDF5 file; returns the path written."""
    args = prepare_parser().parse_args(argv)
    for flag in ("batch_size", "chunk_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1")
    if args.num_workers < 0 or args.max_images < 0:
        raise ValueError("--num_workers and --max_images must be >= 0")
    key = source_key(args.dataset)
    dataset = datasets.get_dataset(key, args.data_root, resolution=args.resolution or None)
    out = Path(args.out) if args.out else default_out(key, args.data_root, dataset.resolution)
    if out.exists() and not args.overwrite:
        raise utils.UserError(f"{out} already exists; pass --overwrite to replace it or --out to "
                              f"choose another file")
    sidecar = out.with_name(out.name + ".skipped.txt")
    skipped = write_hdf5(dataset, out, args, key)
    if args.skip_bad:
        atomic_write_text(sidecar, "".join(m + "\n" for m in skipped))
        print(f"skipped {len(skipped)} unreadable image(s); listed in {sidecar}")
    elif sidecar.exists():
        sidecar.unlink()  # a list left by an earlier --skip_bad run no longer describes this file
    print(f"wrote {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI entry: a one-line `error: ...` and exit code 2 on bad input or an unwritable/unreadable file."""
    try:
        run(argv)
    except (utils.UserError, ValueError, OSError) as err:
        utils.fail(str(err).splitlines()[0])


if __name__ == "__main__":
    main()
