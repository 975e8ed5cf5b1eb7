"""Readers of the datasets that ship as arrays: Fashion-MNIST's IDX files and CIFAR-10/100's
python (pickle) or binary batches, each returned as a `datasets.ArrayDataset`.

CIFAR pickles are read with an unpickler that rebuilds numpy arrays and nothing else.
"""
from __future__ import annotations

import functools
import gzip
import os
import pickle
from pathlib import Path

import numpy as np

from datasets import (CIFAR10_CLASSES, DATASETS, FMNIST_CLASSES, FMNIST_SYSTEM_ROOT, ArrayDataset,
                      dataset_info)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (Fashion-MNIST / MNIST), gzipped or not, as a read-only uint8 array."""
    st = os.stat(path)
    return _read_idx_cached(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_idx_cached(path: str, size: int, mtime_ns: int) -> np.ndarray:
    # Decompressing the 26 MB training images takes about a second; selection, training and
    # make_hdf5 in one process share one read-only copy (the key changes if the file does).
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read IDX file {path}: {err}; download it again") from err
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an unsigned-byte IDX file; download it again")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    if len(data) != start + int(np.prod(dims)):
        raise ValueError(f"{path} is truncated ({len(data)} bytes for shape {dims}); download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fmnist32(data_root, augment: bool = False) -> ArrayDataset:
    """Fashion-MNIST's 60k training images, zero-padded 28 -> 32 and replicated to RGB."""
    info = DATASETS["FMNIST32"]
    root = Path(data_root or FMNIST_SYSTEM_ROOT)
    for folder in (root, root / info.root, root / "FashionMNIST" / "raw", Path(FMNIST_SYSTEM_ROOT)):
        images = _find_file(folder, "train-images-idx3-ubyte")
        labels = _find_file(folder, "train-labels-idx1-ubyte")
        if images and labels:
            break
    else:
        raise FileNotFoundError(f"Fashion-MNIST not found in {root}: "
                                f"{info.prepare.replace('DATA_ROOT', str(root))}")
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.shape != (x.shape[0],):
        raise ValueError(f"{images} and {labels} do not match (shapes {x.shape}, {y.shape})")
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))[..., None]
    return ArrayDataset(x, y, info.n_classes, [str(images), str(labels)], augment, classes=FMNIST_CLASSES)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays, lists, dicts and strings, and nothing else.

    torchvision's CIFAR folders are pickles; this refuses every global except the three
    numpy constructors an array needs (the same idea as torch.load(weights_only=True)).
    """

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return np._core.multiarray._reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # protocol-2 bytes written by Python 3
            return _latin1_encode
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing codec {encoding!r}")
    return text.encode("latin1")


def _read_cifar_pickle(path: Path, label_key: str) -> tuple[np.ndarray, list]:
    try:
        with open(path, "rb") as fh:
            d = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
        data, labels = np.asarray(d["data"], dtype=np.uint8), list(d[label_key])
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError, OSError) as err:
        raise ValueError(f"cannot read CIFAR batch {path}: {err}; download the dataset again") from err
    return data, labels


def _read_cifar_bin(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    rec = label_bytes + 3072
    if raw.size == 0 or raw.size % rec:
        raise ValueError(f"{path} is not a CIFAR binary batch ({raw.size} bytes); download it again")
    raw = raw.reshape(-1, rec)
    return raw[:, label_bytes:], raw[:, label_bytes - 1]  # CIFAR-100: (coarse, fine) -> fine


def load_cifar(name: str, data_root, augment: bool = False) -> ArrayDataset:
    """CIFAR-10/100 training split from torchvision's folder (restricted unpickling) or the binary one."""
    info = dataset_info(name)
    ten = info.n_classes == 10
    py_dir, bin_dir = (("cifar-10-batches-py", "cifar-10-batches-bin") if ten
                       else ("cifar-100-python", "cifar-100-binary"))
    py_files = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    bin_files = [f"data_batch_{i}.bin" for i in range(1, 6)] if ten else ["train.bin"]
    root = Path(data_root or "data")
    for folder in (root / info.root, root):
        for sub, names in ((bin_dir, bin_files), (py_dir, py_files)):
            for cand in (folder / sub, folder):
                paths = [cand / n for n in names]
                if all(p.is_file() for p in paths):
                    if names is bin_files:
                        parts = [_read_cifar_bin(p, 1 if ten else 2) for p in paths]
                    else:
                        parts = [_read_cifar_pickle(p, "labels" if ten else "fine_labels") for p in paths]
                    data = np.concatenate([p[0] for p in parts])
                    labels = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts])
                    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
                        raise ValueError(f"{cand} does not hold 32x32 RGB CIFAR images; download it again")
                    if labels.min() < 0 or labels.max() >= info.n_classes:
                        raise ValueError(f"{cand}: labels outside 0..{info.n_classes - 1}; is this {name}?")
                    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                    return ArrayDataset(np.ascontiguousarray(images), labels, info.n_classes,
                                        [str(p) for p in paths], augment, pad_crop=4,
                                        classes=CIFAR10_CLASSES if ten else None)
    raise FileNotFoundError(f"{name} not found in {root / info.root} or {root}: "
                            f"{info.prepare.replace('DATA_ROOT', str(root))}")
