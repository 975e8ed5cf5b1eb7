"""Readers of the array file formats the array datasets come in: IDX (Fashion-MNIST, MNIST;
gzipped or not) and CIFAR's two layouts (torchvision's pickled batches, read with a restricted
unpickler, and the binary batches). Each returns plain uint8 numpy arrays; `datasets.py` turns
them into datasets.
"""
from __future__ import annotations

import functools
import gzip
import os
import pickle
from pathlib import Path

import numpy as np


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


def find_file(folder: Path, stem: str) -> Path | None:
    """`folder/stem` or `folder/stem.gz`, whichever is a file (the plain name first); None if neither."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


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


def read_cifar_pickle(path: Path, label_key: str) -> tuple[np.ndarray, list]:
    """(N x 3072 uint8 rows, labels) of one batch of torchvision's CIFAR folder, unpickled with
    nothing but numpy arrays allowed."""
    try:
        with open(path, "rb") as fh:
            d = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
        data, labels = np.asarray(d["data"], dtype=np.uint8), list(d[label_key])
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError, OSError) as err:
        raise ValueError(f"cannot read CIFAR batch {path}: {err}; download the dataset again") from err
    return data, labels


def read_cifar_bin(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(N x 3072 uint8 rows, labels) of one batch of the binary CIFAR folder (`label_bytes` 1 for
    CIFAR-10, 2 for CIFAR-100)."""
    raw = np.fromfile(path, dtype=np.uint8)
    rec = label_bytes + 3072
    if raw.size == 0 or raw.size % rec:
        raise ValueError(f"{path} is not a CIFAR binary batch ({raw.size} bytes); download it again")
    raw = raw.reshape(-1, rec)
    return raw[:, label_bytes:], raw[:, label_bytes - 1]  # CIFAR-100: (coarse, fine) -> fine
