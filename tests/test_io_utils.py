"""The atomic writer: complete file or the old one, never a partial file."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import io_utils


def test_atomic_savez_and_json_round_trip(tmp_path):
    io_utils.atomic_savez(tmp_path / "a.npz", x=np.arange(5))
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:
        assert f["x"].tolist() == [0, 1, 2, 3, 4]
    io_utils.atomic_write_json(tmp_path / "c.json", {"b": 1, "a": 2})
    assert json.loads((tmp_path / "c.json").read_text()) == {"a": 2, "b": 1}
    io_utils.atomic_torch_save({"w": torch.ones(2)}, tmp_path / "w.pth")
    assert torch.load(tmp_path / "w.pth", weights_only=True)["w"].sum() == 2


def test_failure_keeps_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "state.json"
    io_utils.atomic_write_json(target, {"v": 1})

    def broken(tmp):
        tmp.write_text("partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        io_utils.atomic_write_with(target, broken)
    assert json.loads(target.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["state.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OSError, match="cannot write"):
            io_utils.atomic_write_text(folder / "x.txt", "x")
    finally:
        folder.chmod(0o700)
