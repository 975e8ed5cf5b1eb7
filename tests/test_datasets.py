"""datasets.py on real files: generated image trees (many PIL modes), HDF5, CIFAR folders, Fashion-MNIST."""
from __future__ import annotations

import gzip
import os
import pickle
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

import datasets
import image_files

RNG = np.random.default_rng(0)


def rgb_image(w: int, h: int) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


def write_modes(folder: Path) -> list[str]:
    """One file per awkward PIL mode (and size/aspect), plus files that must be ignored."""
    folder.mkdir(parents=True, exist_ok=True)
    base = rgb_image(40, 24)
    base.save(folder / "rgb.jpg", quality=95)
    base.convert("L").save(folder / "gray.png")
    base.convert("RGBA").save(folder / "rgba.png")
    base.convert("P").save(folder / "palette.png")
    base.convert("CMYK").save(folder / "cmyk.jpg")
    base.convert("1").save(folder / "bilevel.bmp")
    Image.fromarray(RNG.integers(0, 65536, (30, 50), dtype=np.uint16)).save(folder / "deep16.PNG")
    (folder / "notes.txt").write_text("not an image")
    (folder / "labels.csv").write_text("a,b\n")
    rgb_image(8, 8).save(folder / ".hidden.png")
    return sorted(["rgb.jpg", "gray.png", "rgba.png", "palette.png", "cmyk.jpg", "bilevel.bmp", "deep16.PNG"])


def write_tree(root: Path, n_per_class=(3, 2)) -> Path:
    for c, n in enumerate(n_per_class):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(n):
            rgb_image(20 + 7 * i, 16 + 3 * c).save(d / f"img{i}.png")
        (d / "README").write_text("ignored")
    return root


def test_registry_matches_biggan_pytorch():
    i128 = datasets.dataset_info("I128_hdf5")
    assert (i128.image_size, i128.n_classes, i128.root, i128.classes_per_sheet) == (128, 1000, "ILSVRC128.hdf5", 20)
    assert datasets.dataset_info("I64").root == "ImageNet" and datasets.dataset_info("I64").classes_per_sheet == 50
    assert (datasets.dataset_info("C100").n_classes, datasets.dataset_info("C100").classes_per_sheet) == (100, 100)
    assert datasets.dataset_info("FMNIST32_hdf5").root == "FMNIST32.hdf5"
    for key in ("I32", "I256_hdf5", "C10", "FMNIST32", "custom"):
        assert key in datasets.DATASETS
    assert datasets.classes_per_sheet("custom", 1) == 1
    with pytest.raises(ValueError, match="valid keys: I32, I64.*FMNIST32"):
        datasets.dataset_info("I512")


def test_every_pil_mode_becomes_rgb_and_non_images_are_ignored(tmp_path):
    names = write_modes(tmp_path / "ImageNet" / "n000")
    write_modes(tmp_path / "ImageNet" / "n000" / ".ipynb_checkpoints")  # side folder: not data
    ds = datasets.get_dataset("I32", tmp_path)
    assert [os.path.basename(f) for f in ds.files] == names
    assert ds.n_classes == 1 and ds.labels.dtype == np.int64
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
        assert -1.0 <= x.min() and x.max() <= 1.0


def test_centre_crop_resize_equals_biggan_pytorch_transform(tmp_path):
    img = rgb_image(57, 33)
    img.save(tmp_path / "a.png")
    ours = image_files.to_float(image_files.read_image(tmp_path / "a.png", 24))
    ref = T.Compose([T.CenterCrop(33), T.Resize(24), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])(img)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_16bit_images_are_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32896, 65535, 65535]] * 4, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    x = image_files.read_image(tmp_path / "d.png", 4)
    assert x[0, 0].tolist() == [0, 128, 255, 255] and torch.equal(x[0], x[2])


def test_augment_is_a_random_long_edge_crop_plus_flip(tmp_path):
    img = rgb_image(24, 8)
    img.save(tmp_path / "wide.png")
    candidates = []
    for left in range(0, 17):
        crop = torch.from_numpy(np.array(img.crop((left, 0, left + 8, 8)))).permute(2, 0, 1)
        candidates += [image_files.to_float(crop), image_files.to_float(crop).flip(-1)]
    ds = datasets.get_dataset("custom", tmp_path, resolution=8, augment=True)
    torch.manual_seed(0)
    draws = [ds[0][0] for _ in range(40)]
    assert all(any(torch.equal(d, c) for c in candidates) for d in draws)
    assert len({d.numpy().tobytes() for d in draws}) > 5
    plain = datasets.get_dataset("custom", tmp_path, resolution=8)[0][0]
    assert torch.equal(plain, candidates[2 * 8])  # centre crop: left offset (24 - 8) / 2


def test_custom_flat_folder_is_unconditional_and_tree_is_conditional(tmp_path):
    flat = tmp_path / "flat"
    write_modes(flat)
    ds = datasets.get_dataset("custom", flat, resolution=16)
    assert ds.n_classes == 1 and set(ds.labels.tolist()) == {0} and len(ds) == 7
    assert ds[3][0].shape == (3, 16, 16)
    tree = write_tree(tmp_path / "tree", (3, 2))
    ds = datasets.get_dataset("custom", tree, resolution=16)
    assert ds.n_classes == 2 and ds.labels.tolist() == [0, 0, 0, 1, 1] and ds.classes == ["class0", "class1"]
    with pytest.raises(ValueError, match="--resolution is required"):
        datasets.get_dataset("custom", tree)


@pytest.mark.parametrize("layout, key, error, match", [
    ("empty", "custom", ValueError, "contains no images"),
    ("class_without_images", "custom", ValueError, "class folder .*cls_b contains no images"),
    ("mixed", "custom", ValueError, "both images and subfolders"),
    ("flat", "I32", ValueError, "expects one subfolder per class"),
    ("missing", "I32", FileNotFoundError, "ImageNet's train split"),
    ("missing", "I32_hdf5", FileNotFoundError, "make_hdf5.py --dataset I32"),
    ("missing", "custom", FileNotFoundError, "is not a folder"),
    ("missing", "C10", FileNotFoundError, "cifar-10-batches-py"),
])
def test_bad_folders_give_clear_errors(tmp_path, layout, key, error, match):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    (root / "junk.txt").write_text("x") if layout == "empty" else None
    if layout == "class_without_images":
        write_tree(root, (2,))
        (root / "cls_b").mkdir()
        (root / "cls_b" / "a.txt").write_text("no image")
    if layout in ("mixed", "flat"):
        rgb_image(8, 8).save(root / "loose.png")
    if layout == "mixed":
        write_tree(root, (1,))
    with pytest.raises(error, match=match):
        datasets.get_dataset(key, root, resolution=8 if key == "custom" else None)


def test_resolution_of_a_fixed_size_key_is_checked(tmp_path):
    with pytest.raises(ValueError, match="I32 is 32px but --resolution is 64"):
        datasets.get_dataset("I32", write_tree(tmp_path), resolution=64)


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n garbage", "truncated_jpeg"])
def test_corrupt_image_error_names_the_file(tmp_path, content):
    write_tree(tmp_path, (2,))
    bad = tmp_path / "class0" / "broken.jpg"
    if content == "truncated_jpeg":
        rgb_image(64, 64).save(bad, quality=90)
        bad.write_bytes(bad.read_bytes()[:400])
    else:
        bad.write_bytes(content)
    ds = datasets.get_dataset("custom", tmp_path, resolution=8)  # listing does not decode
    index = ds.files.index(str(bad))
    with pytest.raises(ValueError, match=f"cannot read image {bad}"):
        ds[index]


def write_hdf5(path: Path, n=6, r=8, **extra):
    imgs = RNG.integers(0, 256, (n, 3, r, r), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("imgs", data=imgs, chunks=(2, 3, r, r))
        f.create_dataset("labels", data=np.arange(n) % 3)
        f.attrs.update(extra)
    return imgs


def test_hdf5_lazy_per_worker_in_memory_and_picklable(tmp_path):
    imgs = write_hdf5(tmp_path / "custom.hdf5", n_classes=3)
    ds = datasets.get_dataset("custom_hdf5", tmp_path / "custom.hdf5")
    assert ds._h5 is None and ds.n_classes == 3 and ds.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(ds[4][0], image_files.to_float(torch.from_numpy(imgs[4])))
    assert ds._h5 is not None  # opened on first read ...
    clone = pickle.loads(pickle.dumps(ds))  # ... but never pickled
    assert clone._h5 is None and torch.equal(clone[5][0], ds[5][0])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    got = torch.cat([x for x, _ in loader])
    assert torch.equal(got, image_files.to_float(torch.from_numpy(imgs)))
    mem = datasets.get_dataset("custom_hdf5", tmp_path / "custom.hdf5", load_in_mem=True)
    assert all(torch.equal(mem[i][0], ds[i][0]) for i in range(6)) and mem.fingerprint() == ds.fingerprint()


def test_hdf5_registry_path_and_resolution(tmp_path):
    write_hdf5(tmp_path / "ILSVRC32.hdf5", r=32)
    assert len(datasets.get_dataset("I32_hdf5", tmp_path)) == 6
    write_hdf5(tmp_path / "ILSVRC64.hdf5", r=32)
    with pytest.raises(ValueError, match="holds 32px images but --resolution is 64"):
        datasets.get_dataset("I64_hdf5", tmp_path)


@pytest.mark.parametrize("kind", ["truncated", "foreign", "no_imgs", "wrong_shape", "empty", "float_labels",
                                  "negative_label", "label_past_n_classes", "bad_n_classes"])
def test_bad_hdf5_files_give_clear_errors(tmp_path, kind):
    path = tmp_path / "f.hdf5"
    labels = {"float_labels": np.array([0.0, 0.5, 1.0]), "negative_label": np.array([0, -1, 1]),
              "label_past_n_classes": np.array([0, 1, 3])}
    if kind in labels or kind in ("empty", "bad_n_classes"):
        n = 0 if kind == "empty" else 3
        with h5py.File(path, "w") as f:
            f.create_dataset("imgs", data=np.zeros((n, 3, 4, 4), np.uint8))
            f.create_dataset("labels", data=labels.get(kind, np.zeros(n, np.int64)))
            f.attrs["n_classes"] = 1.5 if kind == "bad_n_classes" else 3
    elif kind == "truncated":
        write_hdf5(path, n=40, r=16)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "foreign":
        path.write_text("this is a CSV file\n1,2,3\n")
    elif kind == "no_imgs":
        with h5py.File(path, "w") as f:
            f.create_dataset("images", data=np.zeros((2, 3, 4, 4), np.uint8))
    else:
        with h5py.File(path, "w") as f:
            f.create_dataset("imgs", data=np.zeros((2, 4, 4, 3), np.uint8))
            f.create_dataset("labels", data=np.zeros(2, np.int64))
    match = {"truncated": "truncated or not HDF5", "foreign": "truncated or not HDF5",
             "no_imgs": "not written by make_hdf5.py", "wrong_shape": "must be uint8 N x 3 x R x R",
             "empty": "holds no images", "float_labels": "'labels' are float64, not integers",
             "negative_label": r"outside \[0, 3\)", "label_past_n_classes": r"outside \[0, 3\)",
             "bad_n_classes": "attribute n_classes is 1.5"}[kind]
    with pytest.raises(ValueError, match=match):
        datasets.get_dataset("custom_hdf5", path)


def cifar_arrays(n, n_classes):
    return RNG.integers(0, 256, (n, 3072), dtype=np.uint8), RNG.integers(0, n_classes, n).tolist()


def test_cifar10_torchvision_pickles_and_binary_batches(tmp_path):
    py = tmp_path / "cifar" / "cifar-10-batches-py"
    py.mkdir(parents=True)
    parts = [cifar_arrays(4, 10) for _ in range(5)]
    for i, (data, labels) in enumerate(parts, 1):  # the format torchvision downloads (protocol 2)
        (py / f"data_batch_{i}").write_bytes(pickle.dumps({"data": data, "labels": labels,
                                                           "batch_label": "x"}, protocol=2))
    ds = datasets.get_dataset("C10", tmp_path)
    data = np.concatenate([p[0] for p in parts])
    assert len(ds) == 20 and ds.labels.tolist() == sum((p[1] for p in parts), [])
    img = torch.from_numpy(data[7].reshape(3, 32, 32))
    assert torch.equal(ds[7][0], image_files.to_float(img))
    torch.manual_seed(0)
    aug = datasets.get_dataset("C10", tmp_path, augment=True)
    assert aug[7][0].shape == (3, 32, 32) and any(not torch.equal(aug[7][0], ds[7][0]) for _ in range(5))

    binary = tmp_path / "bin" / "cifar-10-batches-bin"
    binary.mkdir(parents=True)
    for i, (d, labels) in enumerate(parts, 1):
        np.concatenate([np.asarray(labels, np.uint8)[:, None], d], 1).tofile(binary / f"data_batch_{i}.bin")
    ds_bin = datasets.get_dataset("C10", tmp_path / "bin")
    assert ds_bin.labels.tolist() == ds.labels.tolist() and torch.equal(ds_bin[7][0], ds[7][0])


def test_cifar100_and_refusal_of_foreign_pickles(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data, labels = cifar_arrays(6, 100)
    (folder / "train").write_bytes(pickle.dumps({"data": data, "fine_labels": labels,
                                                 "coarse_labels": [0] * 6}, protocol=2))
    ds = datasets.get_dataset("C100", tmp_path)
    assert ds.n_classes == 100 and ds.labels.tolist() == labels

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    (folder / "train").write_bytes(pickle.dumps({"data": Evil(), "fine_labels": labels}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load global"):
        datasets.get_dataset("C100", tmp_path)
    assert not (tmp_path / "pwned").exists()


def write_idx(path: Path, arr: np.ndarray):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_fmnist_idx_files_plain_or_gzipped(tmp_path, suffix):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    x = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", x)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", np.arange(5))
    ds = datasets.get_dataset("FMNIST32", tmp_path)
    assert len(ds) == 5 and ds.labels.tolist() == [0, 1, 2, 3, 4]
    u8 = ds.load_uint8(3)
    assert u8.shape == (3, 32, 32) and torch.equal(u8[:, 2:30, 2:30], torch.from_numpy(x[3]).expand(3, -1, -1))
    assert u8[:, :2].sum() == 0 and u8[:, :, 30:].sum() == 0
    (folder / f"train-images-idx3-ubyte{suffix}").unlink()
    write_idx(folder / "train-images-idx3-ubyte", x)
    raw = (folder / "train-images-idx3-ubyte").read_bytes()
    (folder / "train-images-idx3-ubyte").write_bytes(raw[:-10])  # a cut download
    with pytest.raises(ValueError, match="truncated"):
        datasets.get_dataset("FMNIST32", tmp_path)


def test_real_fashion_mnist(fmnist_root):
    ds = datasets.get_dataset("FMNIST32", fmnist_root)
    assert len(ds) == 60000 and ds.n_classes == 10
    assert np.bincount(ds.labels).tolist() == [6000] * 10
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == int(ds.labels[0]) == 9  # the first image is an ankle boot
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert (x[:, :2] == -1).all() and (x[:, :, -2:] == -1).all() and x.max() > 0.9
    assert ds.fingerprint() == datasets.get_dataset("FMNIST32", fmnist_root).fingerprint()


def test_fingerprint_is_stable_and_tracks_files_and_labels(tmp_path):
    root = write_tree(tmp_path / "t", (2, 2))
    fp = datasets.get_dataset("custom", root, resolution=8).fingerprint()
    assert fp == datasets.get_dataset("custom", root, resolution=8).fingerprint()
    assert fp != datasets.get_dataset("custom", root, resolution=16).fingerprint()
    (root / "class1" / "img1.png").rename(root / "class0" / "img9.png")  # same bytes, new label
    assert fp != datasets.get_dataset("custom", root, resolution=8).fingerprint()


# ----------------------------------------------------------------------------- walking a data folder
@pytest.mark.parametrize("hazard", ["symlink_loop", "link_up_the_tree", "two_links_one_folder",
                                    "link_to_other_class", "fifo", "socket", "broken_link"])
def test_walking_a_folder_never_hangs_or_duplicates(tmp_path, hazard):
    """Each hazard is added to a 2-class tree of 3 + 2 images; the scan must finish (a FIFO
    named like an image would block a reader forever) and list each image once."""
    import socket
    import threading
    root = write_tree(tmp_path / "data")
    a, b = root / "class0", root / "class1"
    expected = datasets.ImageFolderDataset(root, 8).files
    if hazard == "symlink_loop":
        (a / "loop").symlink_to(a, target_is_directory=True)
    elif hazard == "link_up_the_tree":
        (a / "sub").mkdir()
        (a / "sub" / "up").symlink_to(root, target_is_directory=True)
    elif hazard == "two_links_one_folder":
        (a / "x").symlink_to(b, target_is_directory=True)
        (a / "y").symlink_to(b, target_is_directory=True)
    elif hazard == "link_to_other_class":
        (a / "also_b").symlink_to(b, target_is_directory=True)
    elif hazard == "fifo":
        os.mkfifo(a / "pipe.png")
    elif hazard == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(a / "sock.jpg"))
    elif hazard == "broken_link":
        (a / "gone.png").symlink_to(tmp_path / "nowhere.png")
        (a / "gone_dir").symlink_to(tmp_path / "nowhere", target_is_directory=True)
    result = {}

    def scan():
        try:
            result["files"] = datasets.ImageFolderDataset(root, 8).files
        except ValueError as err:
            result["error"] = str(err)
    worker = threading.Thread(target=scan, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), f"scanning the folder hangs with a {hazard}"
    if hazard in ("two_links_one_folder", "link_to_other_class"):
        # class1's images are reached from class0 first (it sorts first), so they are listed
        # once, and class1, left without images of its own, is refused by name.
        assert re.search(r"class folder .*class1 contains no images .*another class folder", result["error"])
        return
    files = result["files"]
    assert files == expected and len(set(map(os.path.realpath, files))) == len(files)


def test_project_outputs_are_never_data(tmp_path):
    """Derived files live beside an image folder (`<folder>.derived`), never in it, and the
    scan ignores the project's own folders where an older version wrote them."""
    root = write_tree(tmp_path / "data")
    classes = datasets.ImageFolderDataset(root, 8).classes
    for own in ("instance_selection", "data.derived"):
        (root / own).mkdir()
        rgb_image(8, 8).save(root / own / "report.png")
    assert datasets.ImageFolderDataset(root, 8).classes == classes == ["class0", "class1"]
    assert datasets.derived_folder("custom", root) == tmp_path / "data.derived"
    assert datasets.derived_folder("custom_hdf5", tmp_path / "x.hdf5") == tmp_path / "x.hdf5.derived"
    assert datasets.derived_folder("I128_hdf5", tmp_path) == tmp_path  # a folder holding the file
    (tmp_path / "ImageNet").mkdir()
    assert datasets.derived_folder("I128", tmp_path) == tmp_path
    assert datasets.derived_folder("I128", root) == tmp_path / "data.derived"  # the class folder itself


def test_class_names_for_reports_and_sheets(tmp_path, fmnist_root):
    import loaders
    import make_hdf5
    fmnist = datasets.get_dataset("FMNIST32", fmnist_root)
    assert datasets.class_names(loaders.SelectedSubset(fmnist, np.arange(5)))[:2] == ["T-shirt/top", "Trouser"]
    root = write_tree(tmp_path / "imgs")
    assert datasets.class_names(datasets.get_dataset("custom", root, resolution=8)) == ["class0", "class1"]
    make_hdf5.main(["--dataset", "custom", "--data_root", str(root), "--resolution", "8",
                    "--out", str(tmp_path / "x.hdf5"), "--num_workers", "0"])
    assert datasets.class_names(datasets.get_dataset("custom_hdf5", tmp_path / "x.hdf5")) == ["class0", "class1"]
    (root / "synset_words.txt").write_text("class0 tench, Tinca tinca\nclass1 goldfish\n")
    assert datasets.class_names(datasets.get_dataset("custom", root, resolution=8)) == ["tench, Tinca tinca",
                                                                                     "goldfish"]
    flat = tmp_path / "flat"
    flat.mkdir()
    rgb_image(8, 8).save(flat / "a.png")
    assert datasets.class_names(datasets.get_dataset("custom", flat, resolution=8)) is None
