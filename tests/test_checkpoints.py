"""Checkpoints: BigGAN-PyTorch names and keys, weights_only loads, detection of sets mixed by a
crash, choice of the newest complete set, RNG round trips, and the JSONL loggers."""
from __future__ import annotations

import json
import pickle
import random
import shutil

import numpy as np
import pytest
import torch

import BigGAN
import checkpoints
import utils
from training_utils import MetricsLog, TrainLog, build_optimizer


def tiny_config(**overrides) -> dict:
    config = vars(utils.prepare_parser().parse_args([]))
    config.update(dataset="FMNIST32", resolution=32, n_classes=10, G_ch=8, D_ch=8, dim_z=16,
                  G_attn="0", D_attn="0", G_shared=True, shared_dim=8, **overrides)
    return config


def stepped_models(seed: int = 0):
    """Tiny G and D with optimizers that have taken one step (so Adam has state)."""
    torch.manual_seed(seed)
    G, D = BigGAN.build_models(tiny_config())
    G_optim, D_optim = build_optimizer(G), build_optimizer(D)
    z, y = torch.randn(4, G.dim_z), torch.randint(0, 10, (4,))
    D(G(z, G.shared(y)), y).mean().backward()
    G_optim.step()
    D_optim.step()
    return G, D, G_optim, D_optim


def save_set(folder, G, D, G_optim, D_optim, itr, suffix=None, G_ema=None):
    items = {"G": G.state_dict(), "G_optim": G_optim.state_dict(), "D": D.state_dict(),
             "D_optim": D_optim.state_dict()}
    if G_ema is not None:
        items["G_ema"] = G_ema.state_dict()
    state = {"itr": itr, "epoch": 0, "save_num": 0, "save_best_num": 0, "best_IS": 0,
             "best_FID": 999999, "config": {"G_ch": 8}}
    checkpoints.save_checkpoint(folder, items, state, {"G_ch": 8}, suffix)


def test_file_names_are_biggan_pytorch_ones():
    assert checkpoints.file_name("G") == "G.pth"
    assert checkpoints.file_name("G_ema", "copy1") == "G_ema_copy1.pth"
    assert checkpoints.file_name("state_dict", "best0") == "state_dict_best0.pth"


def test_round_trip_restores_everything(tmp_path):
    G, D, G_optim, D_optim = stepped_models(0)
    save_set(tmp_path, G, D, G_optim, D_optim, itr=7, G_ema=G)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["D.pth", "D_optim.pth", "G.pth", "G_ema.pth", "G_optim.pth", "config.json",
                     "state_dict.pth"]
    # Each weights file is a plain state dict, loadable by BigGAN-PyTorch's load_weights.
    raw = torch.load(tmp_path / "G.pth", weights_only=True)
    assert set(raw) == set(G.state_dict())
    assert json.loads((tmp_path / "config.json").read_text()) == {"G_ch": 8}

    G2, D2, G2_optim, D2_optim = stepped_models(1)
    G2_ema = BigGAN.build_models(tiny_config())[0]
    state = checkpoints.load_weights(tmp_path, None, G=G2, D=D2, G_ema=G2_ema,
                                     G_optim=G2_optim, D_optim=D2_optim)
    assert state["itr"] == 7 and state["best_FID"] == 999999 and "G" in state["files"]
    for a, b in [(G, G2), (D, D2), (G, G2_ema)]:
        for (k, v), v2 in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(v, v2), k
    s1, s2 = G_optim.state_dict(), G2_optim.state_dict()
    for key in s1["state"]:
        assert torch.equal(s1["state"][key]["exp_avg"], s2["state"][key]["exp_avg"])


def test_mixed_set_is_detected_and_resume_picks_newest_complete(tmp_path):
    G, D, G_optim, D_optim = stepped_models(0)
    save_set(tmp_path, G, D, G_optim, D_optim, itr=2, suffix="copy0")
    save_set(tmp_path, G, D, G_optim, D_optim, itr=2)
    assert checkpoints.find_resume_suffix(tmp_path) is None  # main wins a tie
    G_new, D_new, G_new_optim, D_new_optim = stepped_models(5)
    save_set(tmp_path, G_new, D_new, G_new_optim, D_new_optim, itr=4, suffix="copy1")
    # A crash while writing the main set at itr 4: G.pth is new, the rest is from itr 2.
    shutil.copy(tmp_path / "G_copy1.pth", tmp_path / "G.pth")
    assert not checkpoints.is_complete(tmp_path, None)
    assert checkpoints.is_complete(tmp_path, "copy1")
    assert checkpoints.find_resume_suffix(tmp_path) == "copy1"
    with pytest.raises(ValueError, match="incomplete"):
        checkpoints.load_weights(tmp_path, None, G=G)
    # A set whose state_dict never landed is no candidate: the older copy0 survives.
    (tmp_path / "state_dict_copy1.pth").unlink()
    assert checkpoints.find_resume_suffix(tmp_path) == "copy0"
    (tmp_path / "state_dict_copy0.pth").unlink()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        checkpoints.find_resume_suffix(tmp_path)


def test_set_without_hashes_counts_as_complete(tmp_path):
    """Sets written by BigGAN-PyTorch itself carry no hashes."""
    G, D, _, _ = stepped_models(0)
    torch.save(G.state_dict(), tmp_path / "G.pth")
    torch.save({"itr": 3, "epoch": 0, "save_num": 0, "save_best_num": 0, "best_IS": 0,
                "best_FID": 999999}, tmp_path / "state_dict.pth")
    assert checkpoints.is_complete(tmp_path) and checkpoints.find_resume_suffix(tmp_path) is None
    assert checkpoints.load_weights(tmp_path, G=G)["itr"] == 3


class Evil:
    """Stands for any pickled object (BigGAN-PyTorch stored nn.ReLU modules in its config)."""


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"itr": 1, "config": {"G_activation": Evil()}}, tmp_path / "state_dict.pth")
    with pytest.raises(ValueError, match="weights_only"):
        checkpoints.load_state_dict_file(tmp_path)
    (tmp_path / "G.pth").write_bytes(pickle.dumps(Evil))
    with pytest.raises(ValueError, match="G.pth"):
        checkpoints.load_item(tmp_path, "G")


def test_rng_state_round_trip(tmp_path):
    state = checkpoints.capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    path = tmp_path / "rng.pth"
    torch.save(state, path)
    checkpoints.restore_rng_state(torch.load(path, weights_only=True))
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_train_log_streams_truncate_and_torn_lines(tmp_path):
    log = TrainLog(tmp_path / "exp", reinitialize=True)
    for itr in (1, 2, 3):
        log.report("G_loss", itr * 0.5)
        log.report("sv/G_linear_sv0", float(itr))
        log.write(itr)
    with open(tmp_path / "exp" / "losses.jsonl", "a") as fh:
        fh.write('{"itr": 4, "G_lo')  # a crash in the middle of an append
    log.truncate(2)
    losses = [json.loads(l) for l in (tmp_path / "exp" / "losses.jsonl").read_text().splitlines()]
    svs = [json.loads(l) for l in (tmp_path / "exp" / "sv.jsonl").read_text().splitlines()]
    assert [r["itr"] for r in losses] == [1, 2] and losses[1]["G_loss"] == 1.0
    assert [r["G_linear_sv0"] for r in svs] == [1.0, 2.0]
    TrainLog(tmp_path / "exp", reinitialize=True)
    assert not list((tmp_path / "exp").glob("*.jsonl"))


def test_metrics_log_is_valid_json_and_truncates(tmp_path):
    path = tmp_path / "exp_log.jsonl"
    log = MetricsLog(path, reinitialize=True)
    log.log(itr=2, IS_mean=1.5, FID=float("nan"))
    log.log(itr=4, IS_mean=2.0, FID=10.0)
    log.truncate(3)
    records = [json.loads(l) for l in path.read_text().splitlines()]
    assert len(records) == 1 and records[0]["itr"] == 2 and records[0]["FID"] is None


@pytest.mark.parametrize("state, problem", [
    ({"itr": -3}, "counter itr = -3"),
    ({"itr": 10, "epoch": 1.5}, "counter epoch = 1.5"),
    ({"itr": "10"}, "counter itr = '10'"),
    ({"itr": 10, "config": [1, 2]}, "a config that is not a dict"),
    ({"epoch": 0}, r"not a training state \(no 'itr' key\)"),
])
def test_a_state_dict_with_wrong_types_is_refused_naming_the_file(tmp_path, state, problem):
    torch.save(state, tmp_path / "state_dict.pth")
    with pytest.raises(ValueError, match=rf"state_dict\.pth (holds |is )?{problem}"):
        checkpoints.load_state_dict_file(tmp_path)
    assert not checkpoints.is_complete(tmp_path)
