"""make_hdf5.py: pixel-exact round trips, naming, atomic writes, bad input (in-process and as a CLI)."""
from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import datasets
import make_hdf5

RNG = np.random.default_rng(1)


def write_tree(root, sizes=((30, 20), (17, 41), (25, 25)), classes=("cat", "dog")):
    modes = ["RGB", "L", "RGBA", "P", "CMYK"]
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            img = Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(modes[(c + i) % 5])
            img.save(root / name / f"{i}.{'jpg' if img.mode == 'CMYK' else 'png'}")
        (root / name / "Thumbs.db").write_bytes(b"\0\1")
    return root


def assert_same_items(a, b, n=None):
    n = len(a) if n is None else n
    assert np.array_equal(a.labels[:n], b.labels[:n])
    for i in range(n):
        xa, ya = a[i]
        xb, yb = b[i]
        assert ya == yb and torch.equal(xa, xb), f"item {i} differs"


def cli(monkeypatch, capsys, *args):
    """Run make_hdf5's real entry point in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["make_hdf5.py", *map(str, args)])
    code = 0
    try:
        make_hdf5.main()
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_imagenet_layout_round_trip_and_biggan_naming(tmp_path):
    write_tree(tmp_path / "ImageNet")
    out = make_hdf5.run(["--dataset", "I32", "--data_root", str(tmp_path), "--num_workers", "2",
                         "--batch_size", "4", "--chunk_size", "3"])
    assert out == tmp_path / "ILSVRC32.hdf5" and not list(tmp_path.glob(".*tmp"))
    folder, packed = datasets.get_dataset("I32", tmp_path), datasets.get_dataset("I32_hdf5", tmp_path)
    assert len(packed) == len(folder) == 6 and packed.n_classes == 2
    assert_same_items(folder, packed)
    with h5py.File(out, "r") as f:
        assert f["imgs"].dtype == np.uint8 and f["imgs"].chunks == (3, 3, 32, 32) and f["labels"].dtype == np.int64
        assert f.attrs["dataset"] == "I32" and f.attrs["resolution"] == 32


def test_custom_folder_with_compression(tmp_path):
    src = write_tree(tmp_path / "faces", classes=("only",))
    out = make_hdf5.run(["--dataset", "custom", "--data_root", str(src), "--resolution", "16",
                         "--num_workers", "0", "--compression"])
    assert out == tmp_path / "faces_16.hdf5"
    with h5py.File(out, "r") as f:
        assert f["imgs"].compression == "lzf"
    assert_same_items(datasets.get_dataset("custom", src, resolution=16),
                      datasets.get_dataset("custom_hdf5", out))


def test_fashion_mnist_subset_round_trip(tmp_path, fmnist_root):
    out = tmp_path / "FMNIST32.hdf5"
    make_hdf5.run(["--dataset", "FMNIST32_hdf5", "--data_root", str(fmnist_root), "--out", str(out),
                   "--max_images", "300", "--num_workers", "0", "--compression", "gzip"])
    packed = datasets.get_dataset("FMNIST32_hdf5", tmp_path)
    assert len(packed) == 300 and packed.n_classes == 10 and packed.resolution == 32
    assert_same_items(datasets.get_dataset("FMNIST32", fmnist_root), packed, n=300)


def test_existing_output_is_never_replaced_without_overwrite(tmp_path, monkeypatch, capsys):
    src = write_tree(tmp_path / "src")
    out = tmp_path / "out.hdf5"
    out.write_bytes(b"precious")
    code, _, err = cli(monkeypatch, capsys, "--dataset", "custom", "--data_root", src, "--resolution", 8,
                       "--out", out, "--num_workers", 0)
    assert code == 2 and "already exists; pass --overwrite" in err and out.read_bytes() == b"precious"
    code, _, _ = cli(monkeypatch, capsys, "--dataset", "custom", "--data_root", src, "--resolution", 8,
                     "--out", out, "--num_workers", 0, "--overwrite")
    assert code == 0 and len(datasets.get_dataset("custom_hdf5", out)) == 6


@pytest.mark.parametrize("case, match", [
    ("unknown", "unknown dataset 'I100'.*valid keys: I32"),
    ("missing_root", "make_hdf5|ImageNet's train split"),
    ("empty", "contains no images"),
    ("class_without_images", "class folder .*empty_class contains no images"),
    ("no_resolution", "--resolution is required"),
    ("bad_flag", "--chunk_size must be at least 1"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, monkeypatch, capsys, case, match):
    root = tmp_path / "data"
    args = ["--dataset", "custom", "--data_root", root, "--resolution", 8, "--num_workers", 0]
    if case == "unknown":
        args[1] = "I100"
    elif case == "missing_root":
        args = ["--dataset", "I64", "--data_root", root]
    elif case == "empty":
        root.mkdir()
        (root / "a.txt").write_text("x")
    elif case == "class_without_images":
        write_tree(root)
        (root / "empty_class").mkdir()
    elif case == "no_resolution":
        write_tree(root)
        args = args[:4]
    else:
        write_tree(root)
        args += ["--chunk_size", 0]
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert __import__("re").search(match, err), err
    assert not list(tmp_path.rglob("*.hdf5"))


def corrupt_tree(tmp_path):
    src = write_tree(tmp_path / "src")
    bad = src / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    out = tmp_path / "out.hdf5"
    out.write_bytes(b"old complete file")
    return src, bad, out


def test_corrupt_image_stops_the_cli_and_leaves_the_old_file(tmp_path, run_py):
    src, bad, out = corrupt_tree(tmp_path)
    res = run_py("make_hdf5.py", "--dataset", "custom", "--data_root", src, "--resolution", 8,
                 "--out", out, "--overwrite", "--num_workers", 2, "--batch_size", 2)
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot read image") and str(bad) in last and "--skip_bad" in last
    assert out.read_bytes() == b"old complete file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.hdf5", "src"]  # no temporary left


def test_skip_bad_lists_the_file_and_prints_the_count(tmp_path, monkeypatch, capsys):
    src, bad, out = corrupt_tree(tmp_path)
    code, stdout, err = cli(monkeypatch, capsys, "--dataset", "custom", "--data_root", src, "--resolution", 8,
                            "--out", out, "--overwrite", "--skip_bad", "--num_workers", 2, "--batch_size", 3)
    assert code == 0, err
    assert "skipped 1 unreadable image(s)" in stdout
    sidecar = tmp_path / "out.hdf5.skipped.txt"
    assert str(bad) in sidecar.read_text() and len(sidecar.read_text().splitlines()) == 1
    packed = datasets.get_dataset("custom_hdf5", out)
    folder = datasets.get_dataset("custom", src, resolution=8)
    good = [i for i, f in enumerate(folder.files) if f != str(bad)]
    assert len(packed) == 6 and packed.labels.tolist() == folder.labels[good].tolist()
    assert all(torch.equal(packed[j][0], folder[i][0]) for j, i in enumerate(good))
