"""Training data: ImageNet-style class folders, flat folders, HDF5, CIFAR and Fashion-MNIST.

Every dataset yields `(image, label)`: a float tensor CHW in [-1, 1] and an int label
(collated to int64). Every dataset also carries `.labels` (np.int64, read without decoding
any image), `.n_classes`, `.resolution`, `.augment` and `.fingerprint()`, and can hand out
the undecorated uint8 image with `load_uint8(i)` (what `make_hdf5.py` stores), so the
folder pipeline and its HDF5 copy give bit-identical tensors.

`DATASETS` is the one table of registry keys (BigGAN-PyTorch's `I32`...`I256`, `C10`,
`C100`, plus `FMNIST32`, `custom` and an `_hdf5` twin of each).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from array_readers import find_file, read_cifar_bin, read_cifar_pickle, read_idx
from image_files import IMG_EXTENSIONS, is_image, read_image, to_float

FMNIST_SYSTEM_ROOT = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class DatasetInfo:
    """One registry row. `image_size`/`n_classes` 0 mean "set by the data" (custom)."""
    name: str
    kind: str  # imagefolder | custom | hdf5 | cifar | fmnist
    image_size: int
    n_classes: int
    root: str  # file or folder name under --data_root ('' = --data_root itself)
    classes_per_sheet: int
    prepare: str  # how to get the data, shown when it is missing


def _row(name, kind, size, n_classes, root, per_sheet, prepare):
    return name, DatasetInfo(name, kind, size, n_classes, root, per_sheet, prepare)


def _hdf5_hint(source: str) -> str:
    return f"create it with: python make_hdf5.py --dataset {source} --data_root DATA_ROOT"


_IMAGENET = ("put ImageNet's train split (one subfolder per class, e.g. n01440764/) in "
             "DATA_ROOT/ImageNet")
_CIFAR = ("put torchvision's '{py}' folder (or the binary '{bin}' one) in "
          "DATA_ROOT/cifar, e.g. torchvision.datasets.CIFAR{n}('DATA_ROOT/cifar', download=True)")
_FMNIST = ("run 'apt-get install dataset-fashion-mnist' (files land in /usr/share/datasets/"
           "fashion-mnist) or put train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz "
           "in DATA_ROOT/fashion-mnist")

DATASETS: dict[str, DatasetInfo] = dict([
    *[_row(f"I{r}", "imagefolder", r, 1000, "ImageNet", 50 if r <= 64 else 20, _IMAGENET)
      for r in (32, 64, 128, 256)],
    *[_row(f"I{r}_hdf5", "hdf5", r, 1000, f"ILSVRC{r}.hdf5", 50 if r <= 64 else 20,
           _hdf5_hint(f"I{r}")) for r in (32, 64, 128, 256)],
    _row("C10", "cifar", 32, 10, "cifar", 10,
         _CIFAR.format(py="cifar-10-batches-py", bin="cifar-10-batches-bin", n=10)),
    _row("C100", "cifar", 32, 100, "cifar", 100,
         _CIFAR.format(py="cifar-100-python", bin="cifar-100-binary", n=100)),
    _row("C10_hdf5", "hdf5", 32, 10, "C10.hdf5", 10, _hdf5_hint("C10")),
    _row("C100_hdf5", "hdf5", 32, 100, "C100.hdf5", 100, _hdf5_hint("C100")),
    _row("FMNIST32", "fmnist", 32, 10, "fashion-mnist", 10, _FMNIST),
    _row("FMNIST32_hdf5", "hdf5", 32, 10, "FMNIST32.hdf5", 10, _hdf5_hint("FMNIST32")),
    _row("custom", "custom", 0, 0, "", 10,
         "pass --data_root DIR: a folder of images (unconditional) or of class subfolders"),
    _row("custom_hdf5", "hdf5", 0, 0, "", 10,
         "pass --data_root FILE.hdf5 written by make_hdf5.py --dataset custom"),
])


def dataset_info(name: str) -> DatasetInfo:
    """The registry row of `name`; ValueError listing the valid keys otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (--dataset); valid keys: {', '.join(DATASETS)}")
    return DATASETS[name]


def classes_per_sheet(name: str, n_classes: int) -> int:
    """Classes per sample sheet for `name`, never more than the data has."""
    return max(1, min(dataset_info(name).classes_per_sheet, n_classes))


# ----------------------------------------------------------------------------- class names

FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                  "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# ImageNet's synset -> words files (folder names like n01440764 become "tench, Tinca tinca").
SYNSET_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")


def class_names(dataset) -> list[str] | None:
    """Human-readable class names of `dataset` (through subsets), or None when unknown: Fashion-MNIST
    and CIFAR-10 names, folder names (ImageNet synsets translated when LOC_synset_mapping.txt or
    synset_words.txt lies beside the class folders or one level up), names stored in an HDF5 file."""
    while not hasattr(dataset, "classes") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    names = getattr(dataset, "classes", None)
    if not names or names == [""]:
        return None
    root = getattr(dataset, "root", None)
    for folder in ((root, root.parent) if root is not None else ()):
        for file in SYNSET_FILES:
            if (folder / file).is_file():
                words = dict(line.strip().split(" ", 1) for line in (folder / file).read_text().splitlines()
                             if " " in line.strip())
                return [words.get(n, n) for n in names]
    return list(names)


# Folders the project itself writes: never data, even where an older version put them inside
# an image folder (`instance_selection/` was the selection cache's default there).
DERIVED_SUFFIX = ".derived"
_OWN_FOLDERS = ("instance_selection",)


def _is_own_output(name: str) -> bool:
    return name.endswith(DERIVED_SUFFIX) or name in _OWN_FOLDERS


def derived_folder(name: str, data_root) -> Path:
    """Where files derived from dataset `name` go (metric moments/activations, selection caches
    and reports): never inside an image folder, whose scan would take them for a class, nor
    under an HDF5 file. An image folder or HDF5 file given as --data_root (`custom`,
    `custom_hdf5`, a class folder given directly) gets `<data_root>.derived` beside it; a
    folder that holds the dataset's files (BigGAN-PyTorch's layout) is used as it is."""
    root = Path(data_root or "data")
    info = dataset_info(name)
    holds_data_itself = (info.kind == "custom" or root.is_file()
                         or (info.kind == "hdf5" and not info.root)  # custom_hdf5: the file
                         or (info.kind == "imagefolder" and root.is_dir()
                             and not (root / info.root).is_dir()))
    return root.with_name(root.name + DERIVED_SUFFIX) if holds_data_itself else root


def _walk_images(top: str, seen: set) -> list[str]:
    """Image files below `top`, in `sorted(os.walk(top))` order (folder path, then file name).

    Symlinked folders are followed once each: a folder reached again (a symlink loop, a link
    back up the tree, two links to one folder) is not walked twice, so the scan neither hangs
    nor duplicates. Hidden folders are skipped, and so is anything named like an image that
    is not a regular file (FIFO, socket, device: reading it could block).
    """
    found: list[tuple[str, list[str]]] = []
    pending = [top]
    while pending:
        path = pending.pop()
        try:
            info = os.stat(path)
            entries = list(os.scandir(path))
        except OSError:
            continue  # a broken or unreadable link: not data
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        found.append((path, sorted(e.path for e in entries if is_image(e.name) and e.is_file())))
        pending += [e.path for e in entries if not e.name.startswith(".") and e.is_dir()]
    return [f for _, files in sorted(found) for f in files]


def digest(*parts) -> str:
    """Short stable hash of `parts` (bytes are hashed as is, anything else by its repr)."""
    h = hashlib.sha1()
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
    return h.hexdigest()[:16]


def _files_fingerprint(files) -> list:
    return [(os.path.basename(f), os.path.getsize(f)) for f in files]


# ----------------------------------------------------------------------------- datasets

class ImageDataset(Dataset):
    """Shared behaviour: uint8 decode hook -> [-1, 1] floats, optional horizontal flip."""

    resolution: int
    labels: np.ndarray
    n_classes: int
    augment: bool

    def __len__(self) -> int:
        return len(self.labels)

    def load_uint8(self, index: int) -> torch.Tensor:
        """The uint8 CHW image at `index` (random crop under augment, never flipped)."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """Where item `index` comes from (a file path, or FILE[index])."""
        raise NotImplementedError

    def _fingerprint_parts(self) -> list:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Cheap identity of the data: file names/sizes (or HDF5 size+mtime), labels, resolution."""
        return digest(type(self).__name__, self.resolution, self._fingerprint_parts(),
                       self.labels.tobytes())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = to_float(self.load_uint8(index))
        if self.augment and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return x, int(self.labels[index])


class ImageFolderDataset(ImageDataset):
    """Images in class subfolders (ImageNet's train layout) or, if `allow_flat`, a flat folder.

    Class indices follow the sorted folder names; files are walked recursively inside each
    class folder, like torchvision's ImageFolder. Non-image files are ignored.
    `load_in_mem` decodes every (centre-cropped) image once; augmentation is then the flip only.
    """

    def __init__(self, root, resolution: int, augment: bool = False, load_in_mem: bool = False,
                 allow_flat: bool = True):
        self.root, self.resolution, self.augment = Path(root), int(resolution), bool(augment)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist (--data_root)")
        entries = sorted(os.scandir(self.root), key=lambda e: e.name)
        class_dirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")
                      and not _is_own_output(e.name)]
        top_images = [e.path for e in entries if e.is_file() and is_image(e.name)]
        if class_dirs and top_images:
            raise ValueError(f"{self.root} holds both images and subfolders; put all images in "
                             f"class subfolders (conditional) or all directly in it (unconditional)")
        if class_dirs:
            self.classes = [e.name for e in class_dirs]
            files, labels, seen = [], [], {(os.stat(self.root).st_dev, os.stat(self.root).st_ino)}
            for label, d in enumerate(class_dirs):
                found = _walk_images(d.path, seen)
                if not found:
                    raise ValueError(f"class folder {d.path} contains no images "
                                     f"({', '.join(IMG_EXTENSIONS)}) that another class folder "
                                     f"does not already hold; add images or remove the folder")
                files += found
                labels += [label] * len(found)
        elif top_images and allow_flat:
            self.classes, files, labels = [""], top_images, [0] * len(top_images)
        elif top_images:
            raise ValueError(f"{self.root} has no class subfolders; this dataset key expects one "
                             f"subfolder per class (use --dataset custom for a flat folder of images)")
        else:
            raise ValueError(f"{self.root} contains no images ({', '.join(IMG_EXTENSIONS)}) and no "
                             f"class subfolders; point --data_root at your images")
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)
        self.n_classes = len(self.classes)
        self._cache = None
        if load_in_mem:
            from tqdm import tqdm
            self._cache = torch.stack([read_image(f, self.resolution) for f in
                                       tqdm(self.files, desc=f"loading {self.root} into memory")])

    def load_uint8(self, index: int) -> torch.Tensor:
        if self._cache is not None:
            return self._cache[index]
        return read_image(self.files[index], self.resolution, self.augment)

    def describe(self, index: int) -> str:
        return self.files[index]

    def _fingerprint_parts(self) -> list:
        return [(os.path.relpath(f, self.root), os.path.getsize(f)) for f in self.files]


class HDF5Dataset(ImageDataset):
    """`imgs` (uint8 N x 3 x R x R) and `labels` (int64) of a file written by make_hdf5.py.

    The file is opened lazily in whichever process reads it (each DataLoader worker gets its
    own handle; an open handle is never pickled). `load_in_mem` reads all images at once.
    Augmentation is a horizontal flip (the crop is baked into the file).
    """

    def __init__(self, path, resolution: int = 0, augment: bool = False, load_in_mem: bool = False):
        self.path, self.augment = Path(path), bool(augment)
        if not self.path.is_file():
            raise FileNotFoundError(f"HDF5 file {self.path} does not exist")
        try:
            with h5py.File(self.path, "r") as f:
                if "imgs" not in f or "labels" not in f:
                    raise ValueError(f"{self.path} is an HDF5 file without 'imgs'/'labels'; it was "
                                     f"not written by make_hdf5.py, recreate it with make_hdf5.py")
                imgs = f["imgs"]
                shape = imgs.shape
                if (imgs.dtype != np.uint8 or len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]
                        or f["labels"].shape != (shape[0],)):
                    raise ValueError(f"{self.path}: 'imgs' must be uint8 N x 3 x R x R with one label "
                                     f"per image (found {imgs.dtype} {shape}); recreate it with make_hdf5.py")
                labels = f["labels"][:]
                n_classes = f.attrs.get("n_classes", int(labels.max(initial=-1)) + 1)
                problem = ("it holds no images" if shape[0] == 0 else
                           f"'labels' are {labels.dtype}, not integers" if labels.dtype.kind not in "iu" else
                           f"attribute n_classes is {n_classes}, not a positive integer" if not (
                               np.issubdtype(type(n_classes), np.integer) and n_classes >= 1) else
                           f"'labels' hold values outside [0, {n_classes})" if (
                               labels.min() < 0 or labels.max() >= n_classes) else "")
                if problem:
                    raise ValueError(f"{self.path}: {problem}; recreate it with make_hdf5.py")
                self.labels = labels.astype(np.int64)
                self.n_classes = int(n_classes)
                if "classes" in f.attrs:  # names of the source's classes (make_hdf5.py)
                    self.classes = [str(c) for c in json.loads(f.attrs["classes"])]
                self._mem = imgs[:] if load_in_mem else None
        except OSError as err:
            raise ValueError(f"cannot read {self.path} as HDF5 ({err}); the file is truncated or not "
                             f"HDF5, recreate it with make_hdf5.py") from err
        self.resolution = int(shape[2])
        if resolution and resolution != self.resolution:
            raise ValueError(f"{self.path} holds {self.resolution}px images but --resolution is "
                             f"{resolution}; use --resolution 0 or remake the file")
        self._h5, self._pid = None, None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_h5"], state["_pid"] = None, None  # an open h5py handle must not cross processes
        return state

    def load_uint8(self, index: int) -> torch.Tensor:
        if self._mem is not None:
            return torch.from_numpy(self._mem[index])
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        try:
            return torch.from_numpy(self._h5["imgs"][index])
        except (OSError, KeyError) as err:
            raise ValueError(f"cannot read image {index} of {self.path}: {err}; the file is "
                             f"damaged, recreate it with make_hdf5.py") from err

    def describe(self, index: int) -> str:
        return f"{self.path}[{index}]"

    def _fingerprint_parts(self) -> list:
        st = self.path.stat()
        return [self.path.name, st.st_size, st.st_mtime_ns]


class ArrayDataset(ImageDataset):
    """Images already decoded into a uint8 N x H x W x C array (CIFAR, Fashion-MNIST)."""

    def __init__(self, images: np.ndarray, labels, n_classes: int, files: list, augment: bool,
                 pad_crop: int = 0, classes: list[str] | None = None):
        self.images, self.files, self.augment = images, files, bool(augment)
        if classes is not None:
            self.classes = list(classes)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.n_classes, self.resolution, self.pad_crop = n_classes, images.shape[1], pad_crop

    def load_uint8(self, index: int) -> torch.Tensor:
        img = torch.from_numpy(self.images[index]).permute(2, 0, 1).expand(3, -1, -1)
        if self.augment and self.pad_crop:  # BigGAN-PyTorch's RandomCrop(32, padding=4) for CIFAR
            p, r = self.pad_crop, self.resolution
            padded = torch.nn.functional.pad(img, (p, p, p, p))
            top, left = (int(v) for v in torch.randint(0, 2 * p + 1, (2,)))
            img = padded[:, top:top + r, left:left + r]
        return img.contiguous()

    def describe(self, index: int) -> str:
        return f"{self.files[0]}[{index}]"

    def _fingerprint_parts(self) -> list:
        return _files_fingerprint(self.files)


# ----------------------------------------------------------------------------- array datasets

def load_fmnist32(data_root, augment: bool = False) -> ArrayDataset:
    """Fashion-MNIST's 60k training images, zero-padded 28 -> 32 and replicated to RGB."""
    info = DATASETS["FMNIST32"]
    root = Path(data_root or FMNIST_SYSTEM_ROOT)
    for folder in (root, root / info.root, root / "FashionMNIST" / "raw", Path(FMNIST_SYSTEM_ROOT)):
        images = find_file(folder, "train-images-idx3-ubyte")
        labels = find_file(folder, "train-labels-idx1-ubyte")
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
                        parts = [read_cifar_bin(p, 1 if ten else 2) for p in paths]
                    else:
                        parts = [read_cifar_pickle(p, "labels" if ten else "fine_labels") for p in paths]
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


# ----------------------------------------------------------------------------- entry point

def get_dataset(name: str, data_root, resolution: int | None = None, augment: bool = False,
                load_in_mem: bool = False) -> ImageDataset:
    """Build the training dataset `name` found under `data_root` (BigGAN-PyTorch's layout).

    `data_root` is the folder holding the dataset's entry (`ImageNet/`, `ILSVRC128.hdf5`,
    `cifar/`, ...) or the dataset itself; for `custom` it is the image folder and for
    `custom_hdf5` the file. `resolution` None/0 means the key's size (required for custom).
    """
    info = dataset_info(name)
    res = int(resolution or info.image_size)
    if info.kind == "custom" and not res:
        raise ValueError("--resolution is required with --dataset custom (e.g. --resolution 64)")
    if info.image_size and res != info.image_size:
        raise ValueError(f"--dataset {name} is {info.image_size}px but --resolution is {res}; use "
                         f"--resolution 0, another key, or --dataset custom")
    root = Path(data_root) if data_root else None
    if info.kind == "fmnist":
        return load_fmnist32(root, augment)
    if info.kind == "cifar":
        return load_cifar(name, root, augment)
    if root is None:
        raise ValueError(f"--data_root is required for --dataset {name}")
    if info.kind == "hdf5":
        path = root if root.is_file() or not info.root else root / info.root
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (--dataset {name}); "
                                    f"{info.prepare.replace('DATA_ROOT', str(root))}")
        return HDF5Dataset(path, res, augment, load_in_mem)
    if info.kind == "custom":
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder (--data_root); {info.prepare}")
        return ImageFolderDataset(root, res, augment, load_in_mem, allow_flat=True)
    folder = root / info.root
    if not folder.is_dir():
        if not root.is_dir() or not any(e.is_dir() and not e.name.startswith(".") or is_image(e.name)
                                        for e in os.scandir(root)):
            raise FileNotFoundError(f"no class folders in {folder} or {root} (--dataset {name}); "
                                    f"{info.prepare.replace('DATA_ROOT', str(root))}")
        folder = root
    return ImageFolderDataset(folder, res, augment, load_in_mem, allow_flat=False)


class SelectedSubset(Subset):
    """A `Subset` that keeps the dataset API (`labels`, `n_classes`, `resolution`, `fingerprint`)."""

    def __init__(self, dataset: ImageDataset, indices: np.ndarray):
        super().__init__(dataset, indices)
        self.labels = dataset.labels[indices]
        self.n_classes, self.resolution = dataset.n_classes, dataset.resolution

    def fingerprint(self) -> str:
        """The parent's fingerprint combined with the kept indices."""
        return digest(self.dataset.fingerprint(), np.asarray(self.indices, np.int64).tobytes())


def get_dataset_from_config(config: dict, augment: bool | None = None) -> ImageDataset:
    """`datasets.get_dataset` with --dataset, --data_root, --resolution, --augment, --load_in_mem."""
    return get_dataset(config["dataset"], config.get("data_root", "data"),
                                resolution=config.get("resolution") or None,
                                augment=bool(config.get("augment", False) if augment is None else augment),
                                load_in_mem=bool(config.get("load_in_mem", False)))
