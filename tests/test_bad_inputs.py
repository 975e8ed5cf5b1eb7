"""A catalogue of bad inputs across every entry point.

Each CLI case must end with exit status 2 and a last stderr line `error: ...` (or argparse's
`prog: error: ...`) that names the problem and says what to do, print no traceback, leave
every file that existed before byte-identical and leave no temporary file behind. Pickles
where tensors/arrays are expected must be refused without being executed: their payload
would create a marker file, which must never appear. `select_instances` (a library
function) must raise ValueError/FileNotFoundError with such a message instead.

The unknown-flag cases run each script in a real subprocess; the others call the same
`main` in-process through `utils.run_cli`, exactly what `if __name__ == "__main__"` does.
"""
from __future__ import annotations

import hashlib
import importlib
import math
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import utils


class Evil:
    """Unpickling this object opens (creates) `marker`: stands for arbitrary code execution."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_evil_pth(path: Path, marker: Path) -> None:
    torch.save({"weight": torch.zeros(2), "payload": Evil(marker)}, path)


def write_evil_npz(path: Path, marker: Path) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array([Evil(marker)], dtype=object), indices=np.arange(3))


def tree_hashes(root: Path) -> dict[str, str]:
    """Every path under root: files by content hash, folders as 'dir'."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


# ----------------------------------------------------------------------------- workspace
@pytest.fixture(scope="module")
def ws(fmnist_root, tmp_path_factory) -> Path:
    """20 real Fashion-MNIST images (2 per class) as class folders, a trained tiny run
    (G_ch 8, 2 iterations, EMA) and EfficientNet-Lite0 moments for the folder."""
    import calculate_inception_moments
    import array_readers
    import train

    root = tmp_path_factory.mktemp("bad_inputs")
    images = array_readers.read_idx(next(fmnist_root.glob("train-images-idx3-ubyte*")))
    labels = array_readers.read_idx(next(fmnist_root.glob("train-labels-idx1-ubyte*")))
    for c in range(10):
        (root / "imgs" / f"class{c}").mkdir(parents=True)
        for i in np.flatnonzero(labels == c)[:2]:
            Image.fromarray(images[i]).save(root / "imgs" / f"class{c}" / f"{i:05d}.png")
    train.run(vars(utils.prepare_parser().parse_args(train_args(root, "--num_iters", "2", name="tiny"))))
    calculate_inception_moments.main(["--dataset", "custom", "--data_root", str(root / "imgs"), "--resolution",
                                      "32", "--feature_net", "efficientnet_lite0", "--feature_res", "64",
                                      "--num_workers", "0", "--batch_size", "20", "--device", "cpu",
                                      "--pbar", "none"])
    # Control: the payload really runs when unpickled without weights_only.
    marker = root / "control_marker"
    write_evil_pth(root / "control.pth", marker)
    torch.load(root / "control.pth", weights_only=False)
    assert marker.exists()
    marker.unlink()
    write_evil_npz(root / "control.npz", marker)
    np.load(root / "control.npz", allow_pickle=True)["meta"]
    assert marker.exists()
    marker.unlink()
    (root / "control.pth").unlink()
    (root / "control.npz").unlink()
    return root


def train_args(root: Path, *extra: str, name: str = "fresh") -> list[str]:
    return ["--dataset", "custom", "--data_root", str(root / "imgs"), "--resolution", "32",
            "--base_root", str(root / "out"), "--experiment_name", name, "--G_ch", "8", "--D_ch", "8",
            "--dim_z", "16", "--G_shared", "--shared_dim", "8", "--G_attn", "0", "--D_attn", "0",
            "--batch_size", "4", "--num_D_steps", "1", "--num_workers", "0", "--device", "cpu",
            "--pbar", "none", "--ema", "--save_every", "2", "--test_every", "1000", "--num_iters", "2",
            "--feature_net", "efficientnet_lite0", "--feature_res", "64", *extra]


def sample_args(root: Path, *extra: str) -> list[str]:
    return ["--base_root", str(root / "out"), "--experiment_name", "tiny", "--device", "cpu", "--pbar",
            "none", "--batch_size", "4", "--num_workers", "0", *extra]


def data_args(root: Path, *extra: str) -> list[str]:
    return ["--dataset", "custom", "--data_root", str(root / "imgs"), "--resolution", "32", "--device", "cpu",
            "--num_workers", "0", "--pbar", "none", "--batch_size", "10", *extra]


def hdf5_args(root: Path, *extra: str) -> list[str]:
    return ["--dataset", "custom", "--data_root", str(root / "imgs"), "--resolution", "32",
            "--num_workers", "0", "--batch_size", "10", "--out", str(root / "out.hdf5"), *extra]


def selection_args(root: Path, *extra: str) -> list[str]:
    return ["--dataset", "custom", "--data_root", str(root / "imgs"), "--resolution", "32", "--device", "cpu",
            "--num_workers", "0", "--pbar", "none", "--embedding", "efficientnet_lite0", "--embedding_res", "32",
            "--retention_ratio", "50", "--selection_cache_dir", str(root / "cache"), *extra]


# ----------------------------------------------------------------------------- setups
def corrupt_first_image(root: Path) -> None:
    (next((root / "imgs" / "class0").glob("*.png"))).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0garbage" * 20)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def other_arch_G(root: Path) -> None:
    import BigGAN
    config = vars(utils.prepare_parser().parse_args(train_args(root)))
    config.update(G_ch=16, n_classes=10, resolution=32)
    G, _ = BigGAN.build_models(config)
    torch.save(G.state_dict(), root / "out" / "weights" / "tiny" / "G.pth")


def edit_json(path: Path, **changes) -> None:
    import json
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def moments_of_other_net(root: Path) -> None:
    # A file made by EfficientNet-Lite0 where the random Inception-v3's moments are expected.
    shutil.copy(root / "imgs.derived" / "custom_efficientnet_lite0_moments.npz",
                root / "imgs.derived" / "custom_random_inception_v3_moments.npz")


def existing_hdf5(root: Path) -> None:
    (root / "out.hdf5").write_bytes(b"an earlier output that must survive")


def hdf5_without_imgs(root: Path) -> None:
    with h5py.File(root / "FMNIST32.hdf5", "w") as f:
        f.create_dataset("pixels", data=np.zeros((2, 32, 32), np.uint8))


def junk_hdf5(root: Path) -> None:
    (root / "FMNIST32.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)


def truncated_idx(root: Path, fmnist_root: Path) -> None:
    import gzip
    folder = root / "fmnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        data = gzip.decompress(next(fmnist_root.glob(name + "*")).read_bytes())
        (folder / name).write_bytes(data[: len(data) // 3] if "images" in name else data)


def junk_selection_cache(root: Path) -> None:
    import instance_selection
    (root / "cache").mkdir()
    name = instance_selection.Selection(50.0, "efficientnet_lite0", "gaussian", 32).filename(prefix="custom")
    (root / "cache" / name).write_bytes(b"PK\x03\x04 not really a zip")


@dataclass
class Case:
    id: str
    entry: str
    args: Callable[[Path], list[str]]
    expect: tuple[str, ...]  # regexes the last stderr line must match: the problem, what to do
    setup: Callable[[Path], None] | None = None
    marker: bool = False  # the case plants a pickle payload: its marker must never appear
    needs_no_cuda: bool = False


M = "marker_created_by_unpickling"
CASES = [
    # ---------------------------------------------------------------- train.py
    Case("train-wrong-type", "train", lambda r: train_args(r, "--batch_size", "sixteen"),
         (r"--batch_size", r"invalid int value")),
    Case("train-batch-zero", "train", lambda r: train_args(r, "--batch_size", "0"),
         (r"--batch_size must be positive",)),
    Case("train-lr-decay-without-num-iters", "train", lambda r: train_args(r, "--lr_decay_iters", "100"),
         (r"--lr_decay_iters 100 needs --num_iters",)),
    Case("train-widths-malformed", "train", lambda r: train_args(r, "--D_ch_mults", "4,4,4,4"),
         (r"--D_ch_mults '4,4,4,4' must be positive integers joined by '_', e\.g\. 4_4_4_2",)),
    Case("train-widths-wrong-count", "train", lambda r: train_args(r, "--G_ch_mults", "4_4_2"),
         (r"--G_ch_mults '4_4_2' has 3 widths; this resolution needs 4 \(BigGAN's own: 4_4_4_4\)",)),
    Case("train-widths-deep", "train", lambda r: train_args(r, "--model", "BigGANdeep", "--G_ch_mults", "4_4_4_4"),
         (r"--G_ch_mults applies to --model BigGAN only",)),
    Case("train-mbstd-batch", "train", lambda r: train_args(r, "--D_mbstd_group", "3"),
         (r"--batch_size \d+ is not a multiple of --D_mbstd_group 3",)),
    Case("train-mbstd-deep", "train", lambda r: train_args(r, "--model", "BigGANdeep", "--D_mbstd_group", "2"),
         (r"--D_mbstd_group applies to --model BigGAN only",)),
    Case("train-mbstd-one", "train", lambda r: train_args(r, "--D_mbstd_group", "1"),
         (r"--D_mbstd_group must be 0 \(off\) or at least 2, got 1",)),
    Case("train-retention-range", "train", lambda r: train_args(r, "--retention_ratio", "150"),
         (r"--retention_ratio", r"\(0, 100\]")),
    Case("train-custom-no-resolution", "train", lambda r: train_args(r, "--resolution", "0"),
         (r"--resolution is required", r"e\.g\. --resolution")),
    Case("train-missing-data-folder", "train",
         lambda r: train_args(r, "--data_root", str(r / "no_such_folder")), (r"no_such_folder", r"--data_root")),
    Case("train-corrupt-image", "train", lambda r: train_args(r), (r"cannot read image .*class0", r"delete or replace"),
         setup=corrupt_first_image),
    Case("train-bad-attention", "train", lambda r: train_args(r, "--G_attn", "sixteen"), (r"attention spec", r"e\.g\.")),
    Case("train-bad-diffaug", "train", lambda r: train_args(r, "--diffaug", "color,zoom"),
         (r"unknown DiffAugment .*zoom", r"use a comma-separated subset")),
    Case("train-cuda-absent", "train", lambda r: train_args(r, "--device", "cuda"),
         (r"no CUDA device", r"--device cpu"), needs_no_cuda=True),
    Case("train-load-weights-without-resume", "train", lambda r: train_args(r, "--load_weights", "copy0"),
         (r"--load_weights", r"pass --resume")),
    Case("train-resume-other-architecture", "train",
         lambda r: train_args(r, "--resume", "--G_ch", "16", name="tiny"),
         (r"G", r"architecture|config\.json|--G_ch")),
    Case("train-resume-all-sets-corrupt", "train", lambda r: train_args(r, "--resume", "--num_iters", "4", name="tiny"),
         (r"no complete checkpoint", r"--experiment_name|restore|delete|move"),
         setup=lambda r: [truncate(r / "out" / "weights" / "tiny" / f) for f in ("G.pth", "G_copy0.pth")]),
    Case("train-resume-pickled-state", "train",
         lambda r: train_args(r, "--resume", "--load_weights", "copy0", "--num_iters", "4", name="tiny"),
         (r"state_dict_copy0\.pth", r"weights_only|pickled", r"re-save"), marker=True,
         setup=lambda r: write_evil_pth(r / "out" / "weights" / "tiny" / "state_dict_copy0.pth", r / M)),
    Case("train-moments-of-other-network", "train",
         lambda r: train_args(r, "--feature_net", "random_inception_v3", "--feature_res", "0", "--test_every", "1",
                              "--no_prdc"),
         (r"made with another network", r"re-run calculate_inception_moments\.py|use --feature_net"),
         setup=moments_of_other_net),
    Case("train-truncated-moments-npz", "train", lambda r: train_args(r, "--test_every", "1", "--no_prdc"),
         (r"custom_efficientnet_lite0_moments\.npz", r"re-run calculate_inception_moments\.py|delete"),
         setup=lambda r: truncate(r / "imgs.derived" / "custom_efficientnet_lite0_moments.npz")),
    Case("train-beta-range", "train", lambda r: train_args(r, "--G_B1", "1.5"), (r"--G_B1 must be in \[0, 1\), got 1.5",)),
    Case("train-lr-nan", "train", lambda r: train_args(r, "--D_lr", "nan"), (r"--D_lr must be > 0, got nan",)),
    Case("sample-zero-images", "sample", lambda r: sample_args(r, "--sample_inception_metrics", "--num_inception_images",
                                                               "0"), (r"--num_inception_images must be positive",)),
    Case("train-name-escapes-root", "train", lambda r: train_args(r, name="../escaped"),
         (r"--experiment_name '\.\./escaped' must be a plain name", r"e\.g\. --experiment_name")),
    Case("train-name-absolute", "train", lambda r: train_args(r, name=str(r / "abs_run")),
         (r"--experiment_name .*abs_run' must be a plain name", r"e\.g\. --experiment_name")),
    Case("train-name-dotdot", "train", lambda r: train_args(r, name=".."), (r"--experiment_name '\.\.' must be",)),
    Case("train-suffix-with-separator", "train",
         lambda r: train_args(r, "--name_suffix", "x/../../y", name=""), (r"--name_suffix .* must be a plain name",)),
    Case("train-load-weights-path", "train",
         lambda r: train_args(r, "--resume", "--load_weights", "../../imgs/x", name="tiny"),
         (r"--load_weights '\.\./\.\./imgs/x' must be '' \(latest\), copyN or bestN",)),
    # ---------------------------------------------------------------- sample.py
    Case("sample-name-escapes-root", "sample", lambda r: sample_args(r, "--experiment_name", "../out/weights/tiny",
                                                                     "--sample_random"),
         (r"--experiment_name .* must be a plain name",)),
    Case("sample-no-such-run", "sample", lambda r: sample_args(r, "--experiment_name", "nope", "--sample_random"),
         (r"no checkpoint .*nope", r"train it first")),
    Case("sample-bad-load-weights", "sample", lambda r: sample_args(r, "--load_weights", "latest", "--sample_random"),
         (r"--load_weights 'latest'", r"copyN or bestN")),
    Case("sample-nothing-to-do", "sample", lambda r: sample_args(r), (r"nothing to do", r"--sample_random")),
    Case("sample-corrupt-G", "sample", lambda r: sample_args(r, "--sample_random"),
         (r"G\.pth", r"corrupt"), setup=lambda r: truncate(r / "out" / "weights" / "tiny" / "G.pth")),
    Case("sample-pickled-G", "sample", lambda r: sample_args(r, "--sample_random", "--use_ema"),
         (r"G_ema\.pth", r"weights_only|pickled", r"re-save"), marker=True,
         setup=lambda r: write_evil_pth(r / "out" / "weights" / "tiny" / "G_ema.pth", r / M)),
    Case("sample-G-of-other-architecture", "sample", lambda r: sample_args(r, "--sample_random"),
         (r"does not match the architecture", r"check that the config belongs"), setup=other_arch_G),
    Case("sample-corrupt-config-json", "sample", lambda r: sample_args(r, "--sample_random"),
         (r"config\.json is not valid JSON", r"restore it|delete it"),
         setup=lambda r: (r / "out" / "weights" / "tiny" / "config.json").write_text('{"G_ch": 8,')),
    Case("sample-config-json-wrong-type", "sample", lambda r: sample_args(r, "--sample_random"),
         (r"config\.json: G_ch is 'eight', expected an integer", r"restore the file"),
         setup=lambda r: edit_json(r / "out" / "weights" / "tiny" / "config.json", G_ch="eight")),
    Case("sample-config-json-bad-choice", "sample", lambda r: sample_args(r, "--sample_random"),
         (r"config\.json: G_nl is 'gelu', expected one of", r"restore the file"),
         setup=lambda r: edit_json(r / "out" / "weights" / "tiny" / "config.json", G_nl="gelu")),
    Case("sample-config-json-not-an-object", "sample", lambda r: sample_args(r, "--sample_random"),
         (r"config\.json does not hold a config object", r"restore it|delete it"),
         setup=lambda r: (r / "out" / "weights" / "tiny" / "config.json").write_text("[1, 2]")),
    Case("sample-arch-flag-disagrees", "sample", lambda r: sample_args(r, "--G_ch", "16", "--sample_random"),
         (r"--G_ch 16 differs", r"drop --G_ch")),
    Case("sample-bad-trunc-curve", "sample", lambda r: sample_args(r, "--sample_trunc_curves", "1.0_0_0.5"),
         (r"--sample_trunc_curves", r"need 0 < start <= end|e\.g\.")),
    Case("sample-moments-of-other-network", "sample",
         lambda r: sample_args(r, "--sample_inception_metrics", "--feature_net", "random_inception_v3",
                               "--data_root", str(r / "imgs"), "--no_prdc", "--num_inception_images", "8"),
         (r"made with another network", r"re-run calculate_inception_moments\.py|use --feature_net"),
         setup=moments_of_other_net),
    # ---------------------------------------------------------------- make_hdf5.py
    Case("hdf5-unknown-dataset", "make_hdf5", lambda r: hdf5_args(r, "--dataset", "I99"),
         (r"unknown dataset 'I99'", r"valid keys")),
    Case("hdf5-batch-zero", "make_hdf5", lambda r: hdf5_args(r, "--batch_size", "0"), (r"--batch_size must be",)),
    Case("hdf5-bad-compression", "make_hdf5", lambda r: hdf5_args(r, "--compression", "zip"),
         (r"--compression", r"invalid choice")),
    Case("hdf5-exists-no-overwrite", "make_hdf5", lambda r: hdf5_args(r), (r"already exists", r"--overwrite"),
         setup=existing_hdf5),
    Case("hdf5-corrupt-image", "make_hdf5", lambda r: hdf5_args(r, "--out", str(r / "new.hdf5")),
         (r"cannot read image .*class0", r"--skip_bad"), setup=corrupt_first_image),
    Case("hdf5-out-under-a-file", "make_hdf5", lambda r: hdf5_args(r, "--out", str(r / "imgs" / "class0" / "x" / "o.hdf5")),
         (r"cannot write", r"writable|another folder"),
         setup=lambda r: (r / "imgs" / "class0" / "x").write_text("a file, not a folder")),
    Case("hdf5-truncated-idx", "make_hdf5",
         lambda r: hdf5_args(r, "--dataset", "FMNIST32", "--data_root", str(r / "fmnist"), "--resolution", "0"),
         (r"truncated", r"download it again"), setup="truncated_idx"),
    # ---------------------------------------------------------------- instance_selection.py
    Case("select-ratio-zero", "instance_selection", lambda r: selection_args(r, "--retention_ratio", "0"),
         (r"retention_ratio must be in \(0, 100\]", r"e\.g\. --retention_ratio")),
    Case("select-ratio-type", "instance_selection", lambda r: selection_args(r, "--retention_ratio", "half"),
         (r"--retention_ratio", r"invalid float value")),
    Case("select-unknown-measure", "instance_selection", lambda r: selection_args(r, "--density_measure", "kde"),
         (r"--density_measure", r"invalid choice")),
    Case("select-knn-k-zero", "instance_selection",
         lambda r: selection_args(r, "--density_measure", "nn_dist", "--nn_k", "0"), (r"k must be >= 1", r"--nn_k")),
    Case("select-negative-max-images", "instance_selection", lambda r: selection_args(r, "--max_images", "-5"),
         (r"--max_images must be >= 0",)),
    Case("select-junk-cache", "instance_selection", lambda r: selection_args(r),
         (r"not an instance-selection cache", r"delete it"), setup=junk_selection_cache),
    Case("select-pickled-embedding-weights", "instance_selection",
         lambda r: selection_args(r, "--embedding_weights", str(r / "evil.pth")),
         (r"evil\.pth", r"delete it|re-save|download"), marker=True,
         setup=lambda r: write_evil_pth(r / "evil.pth", r / M)),
    Case("select-missing-embedding-weights", "instance_selection",
         lambda r: selection_args(r, "--embedding_weights", str(r / "none.pth")), (r"none\.pth: no such file", r"pass the path")),
    Case("select-junk-hdf5", "instance_selection",
         lambda r: selection_args(r, "--dataset", "FMNIST32_hdf5", "--data_root", str(r), "--resolution", "0"),
         (r"FMNIST32\.hdf5", r"recreate it with make_hdf5\.py"), setup=junk_hdf5),
    # ---------------------------------------------------------------- calculate_inception_moments.py
    Case("moments-unknown-network", "calculate_inception_moments",
         lambda r: data_args(r, "--feature_net", "inception_v4"), (r"--feature_net", r"invalid choice")),
    Case("moments-missing-weights", "calculate_inception_moments",
         lambda r: data_args(r, "--inception_weights", str(r / "none.pth")), (r"none\.pth: no such file", r"pass the path")),
    Case("moments-pickled-weights", "calculate_inception_moments",
         lambda r: data_args(r, "--inception_weights", str(r / "evil.pth")),
         (r"evil\.pth", r"delete it|re-save|download"), marker=True,
         setup=lambda r: write_evil_pth(r / "evil.pth", r / M)),
    Case("moments-junk-weights", "calculate_inception_moments",
         lambda r: data_args(r, "--inception_weights", str(r / "junk.pth")), (r"junk\.pth", r"delete it|download"),
         setup=lambda r: (r / "junk.pth").write_bytes(b"\x80\x02junk" * 10)),
    Case("moments-hdf5-without-imgs", "calculate_inception_moments",
         lambda r: data_args(r, "--dataset", "FMNIST32_hdf5", "--data_root", str(r), "--resolution", "0"),
         (r"without 'imgs'/'labels'", r"recreate it with make_hdf5\.py"), setup=hdf5_without_imgs),
    # ---------------------------------------------------------------- prepare_manifold.py
    Case("manifold-zero-images", "prepare_manifold",
         lambda r: data_args(r, "--feature_net", "efficientnet_lite0", "--num_pr_images", "0"),
         (r"--num_pr_images must be >= 1",)),
    Case("manifold-corrupt-image", "prepare_manifold",
         lambda r: data_args(r, "--feature_net", "efficientnet_lite0", "--feature_res", "64"),
         (r"cannot read image .*class0", r"delete or replace"), setup=corrupt_first_image),
    Case("manifold-truncated-idx", "prepare_manifold",
         lambda r: data_args(r, "--dataset", "FMNIST32", "--data_root", str(r / "fmnist"), "--resolution", "0",
                             "--feature_net", "efficientnet_lite0"),
         (r"truncated", r"download it again"), setup="truncated_idx"),
]


def invoke(entry: str, argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """Run an entry point's main in-process the way its __main__ block does; (exit code, stderr)."""
    module = importlib.import_module(entry)
    # argparse names the program after sys.argv[0]: `python train.py` gives "train.py", a pytest-xdist
    # worker "-c".
    monkeypatch.setattr(sys, "argv", [f"{entry}.py", *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        if entry == "make_hdf5":
            module.main(argv)  # make_hdf5 turns errors into exit 2 itself
        else:
            utils.run_cli(module.main, argv)
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_with_one_line_and_touches_nothing(case: Case, ws, fmnist_root, tmp_path, capsys,
                                                           monkeypatch):
    if case.needs_no_cuda and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    root = tmp_path / "w"
    root.mkdir()
    for name in ("imgs", "imgs.derived", "out"):
        shutil.copytree(ws / name, root / name)
    if case.setup == "truncated_idx":
        truncated_idx(root, fmnist_root)
    elif case.setup is not None:
        case.setup(root)
    before = tree_hashes(root)
    code, err = invoke(case.entry, case.args(root), capsys, monkeypatch)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    print(f"CATALOGUE {case.id} | {case.entry} | {last}")  # shown with -rP; the README table
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert re.match(r"(error|[\w.]+: error): ", last), last
    for pattern in case.expect:
        assert re.search(pattern, last), f"{pattern!r} not in: {last}"
    after = tree_hashes(root)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert changed == [], f"existing files changed or removed: {changed}"
    assert not [name for name in after if Path(name).name.endswith(".tmp")], after
    created = sorted(set(after) - set(before))
    assert created == [], f"a refused start left behind: {created}"
    if case.marker:
        assert not (root / M).exists(), "the pickle was executed"


# ----------------------------------------------------------------------------- unknown flags (subprocess)
SCRIPTS = ["train.py", "sample.py", "make_hdf5.py", "instance_selection.py", "calculate_inception_moments.py",
           "prepare_manifold.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_flag_is_a_usage_error(script, run_py):
    proc = run_py(script, "--retention_ration", "50")  # a typo of --retention_ratio
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    print(f"CATALOGUE unknown-flag | {script} | {last}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert re.search(r"error: unrecognized arguments: --retention_ration", last), last
    assert "usage:" in proc.stderr  # argparse's usage line says what is accepted


# ----------------------------------------------------------------------------- select_instances (library)
class FloatLabels(torch.utils.data.Dataset):
    labels = np.linspace(0.0, 1.0, 8)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.zeros(3, 32, 32), 0


class Empty(torch.utils.data.Dataset):
    def __len__(self):
        return 0

    def __getitem__(self, i):
        raise IndexError(i)


def folder(ws: Path):
    import datasets
    return datasets.get_dataset("custom", ws / "imgs", resolution=32)


LIB_CASES = [
    ("ratio-zero", lambda ws, t: (folder(ws), 0), {}, (r"retention_ratio must be in \(0, 100\]", r"e\.g\.")),
    ("ratio-nan", lambda ws, t: (folder(ws), math.nan), {}, (r"retention_ratio must be in \(0, 100\]",)),
    ("ratio-string", lambda ws, t: (folder(ws), "half"), {}, (r"retention_ratio", r"'half'")),
    ("unknown-measure", lambda ws, t: (folder(ws), 50), {"density_measure": "kde"}, (r"kde", r"gaussian")),
    ("unknown-embedding", lambda ws, t: (folder(ws), 50), {"embedding": "vgg16"},
     (r"--embedding 'vgg16' is unknown", r"choose one of")),
    ("knn-k-zero", lambda ws, t: (folder(ws), 50), {"density_measure": "nn_dist", "k": 0}, (r"k must be >= 1",)),
    ("float-labels", lambda ws, t: (FloatLabels(), 50), {"density_measure": "uniform"},
     (r"dataset\.labels", r"one integer label per item")),
    ("empty-dataset", lambda ws, t: (Empty(), 50), {"density_measure": "uniform"}, (r"empty",)),
    ("junk-indices-file", lambda ws, t: (folder(ws), 50), {"indices_file": "junk"},
     (r"not an instance-selection cache", r"delete it")),
    ("pickled-indices-file", lambda ws, t: (folder(ws), 50), {"indices_file": "evil"},
     (r"not an instance-selection cache", r"delete it")),
]


@pytest.mark.parametrize("name, make, kw, expect", LIB_CASES, ids=[c[0] for c in LIB_CASES])
def test_select_instances_rejects_bad_input(name, make, kw, expect, ws, tmp_path):
    import instance_selection
    kw = dict(kw)
    marker = tmp_path / M
    if kw.pop("indices_file", None) is not None:
        path = tmp_path / "selection.npz"
        if name.startswith("junk"):
            path.write_bytes(b"PK\x03\x04 not a zip")
        else:
            write_evil_npz(path, marker)
        kw["indices_filepath"] = path
    embedding = kw.pop("embedding", "efficientnet_lite0")
    before = tree_hashes(tmp_path)
    dataset, ratio = make(ws, tmp_path)
    with pytest.raises((ValueError, FileNotFoundError)) as exc:
        instance_selection.select_instances(dataset, ratio, embedding=embedding, num_workers=0,
                                            device=torch.device("cpu"), progress=False, embedding_res=32, **kw)
    message = str(exc.value)
    print(f"CATALOGUE lib-{name} | select_instances | {type(exc.value).__name__}: {message}")
    assert "\n" not in message.strip(), message
    for pattern in expect:
        assert re.search(pattern, message), f"{pattern!r} not in: {message}"
    assert tree_hashes(tmp_path) == before
    assert not marker.exists(), "the pickle was executed"
