"""Embedding networks: real pretrained weights, offline errors, batch/DDP independence, subsets."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import torch
import torchvision

import backbones
import config
import datasets
import embeddings
import feature_extraction

torch.set_num_threads(2)


def _image(name: str) -> torch.Tensor:
    """An skimage sample photo as a [1, 3, H, W] tensor in [-1, 1]."""
    return torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1)[None].float() / 127.5 - 1


def test_registry_matches_the_flag_choices():
    assert tuple(embeddings.EMBEDDINGS) == config.EMBEDDINGS
    assert all(v.backbone in backbones.BACKBONES for v in embeddings.EMBEDDINGS.values())
    with pytest.raises(ValueError, match="choose one of inceptionv3"):
        embeddings.load_embedding("vgg16")


def test_efficientnet_lite0_weights_are_real_imagenet_weights():
    emb = embeddings.load_embedding("efficientnet_lite0")
    assert emb.net.resolution == 224 and emb.net.weights_id.startswith("efficientnet-lite0-57934424.pth")
    cat, coffee = (emb.net(_image(n))[1].argmax(1).item() for n in ("chelsea", "coffee"))
    assert 281 <= cat <= 285, cat               # tabby / tiger cat / Persian / Siamese / Egyptian
    assert coffee in (967, 968, 504), coffee    # espresso / cup / coffee mug
    assert emb(_image("chelsea")).shape == (1, 1280)


def _stem_variance_ratio(net: backbones.FeatureNet, images: torch.Tensor, mean01, std01) -> float:
    """Variance of the first conv's output on `images` normalised with (mean01, std01), over
    the variance its batch norm saw in training (running_var), summed over channels."""
    body = net.body.net
    mean = torch.tensor([2 * m - 1 for m in mean01]).view(1, 3, 1, 1)
    std = torch.tensor([2 * s for s in std01]).view(1, 3, 1, 1)
    with torch.no_grad():
        stem = body._conv_stem((images - mean) / std)
    return float(stem.var(dim=(0, 2, 3)).sum() / body._bn0.running_var.sum())


def test_efficientnet_lite0_sees_its_training_normalisation():
    """The Lite weights were trained on (pixel - 127) / 128: on real photos the first layer's
    output then has about the variance its BN expects; ImageNet mean/std inflates it ~3.5x."""
    net = backbones.build_backbone("efficientnet_lite0")
    assert net.normalization == "efficientnet_lite" and net.metadata()["normalization"] == "efficientnet_lite"
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket(),
              skimage.data.stereo_motorcycle()[0]]
    x = torch.cat([torch.nn.functional.interpolate(
        torch.from_numpy(p[..., :3]).permute(2, 0, 1)[None].float() / 127.5 - 1, size=(224, 224),
        mode="bilinear", antialias=True) for p in photos])
    ours = _stem_variance_ratio(net, x, *backbones.NORMALIZATIONS["efficientnet_lite"])
    imagenet = _stem_variance_ratio(net, x, *backbones.NORMALIZATIONS["imagenet"])
    assert 0.5 < ours < 1.5, ours
    assert imagenet > 2.5, imagenet
    # The wrapper applies exactly that normalisation: [-1, 1] in, (255 x01 - 127) / 128 to the body.
    seen = {}
    hook = net.body.net._conv_stem.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    with torch.no_grad():
        probs = net(x)[1].softmax(1)
    hook.remove()
    expected = ((x + 1) / 2 * 255 - 127) / 128
    assert torch.allclose(seen["x"], expected, atol=1e-5)
    top_p, top = probs.max(1)
    assert 281 <= top[1] <= 285 and top_p[1] > 0.6     # chelsea: a cat, confidently
    assert top[2] == 967 and top_p[2] > 0.6            # coffee: espresso, confidently


@pytest.mark.parametrize("name,filename", [("inceptionv3", "inception_v3_google-0cc3c7bd.pth"),
                                           ("resnet50", "resnet50-0676ba61.pth"),
                                           ("places365", "resnet50_places365.pth.tar"),
                                           ("swav", "swav_800ep_pretrain.pth.tar"),
                                           ("resnextwsl", "ig_resnext101_32x8-c38310e5.pth")])
def test_missing_weights_offline_name_the_file_and_folder(name, filename, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        embeddings.load_embedding(name)
    message = str(err.value)
    assert f"put {filename} in {tmp_path / 'hub' / 'checkpoints'}/" in message
    assert "--embedding_weights" in message and "\n" not in message


def test_wrapped_prefixed_checkpoint_loads_and_a_wrong_one_is_refused(tmp_path, monkeypatch):
    # SwAV's file: {'state_dict': {'module.conv1.weight': ..., 'module.projection_head...': ...}}
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    trunk = torchvision.models.resnet50(weights=None)
    state = {f"module.{k}": v for k, v in trunk.state_dict().items() if not k.startswith("fc.")}
    state["module.projection_head.0.weight"] = torch.zeros(4, 2048)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"epoch": 800, "state_dict": state}, folder / "swav_800ep_pretrain.pth.tar")
    emb = embeddings.load_embedding("swav", resolution=64)
    x = torch.rand(2, 3, 40, 40) * 2 - 1
    trunk.eval()
    expected = torch.nn.Sequential(*list(trunk.children())[:-1])(
        torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        .add(1).div(2).sub(torch.tensor(backbones.IMAGENET_MEAN).view(1, 3, 1, 1))
        .div(torch.tensor(backbones.IMAGENET_STD).view(1, 3, 1, 1))).flatten(1)
    torch.testing.assert_close(emb(x), expected, rtol=1e-4, atol=1e-4)
    assert emb.net(x)[1] is None  # SwAV has no classifier
    bad = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="does not fit this network"):
        embeddings.load_embedding("resnet50", weights_path=str(bad))


def test_batch_size_indices_and_resolution(fmnist_root):
    ds = datasets.get_dataset("FMNIST32", str(fmnist_root))
    idx = [11, 3, 29, 7, 0, 18, 5, 2, 40]
    emb = embeddings.load_embedding("random_inceptionv3", resolution=80)
    assert emb.net.resolution == 80 and emb.net.weights_id == "random seed 0"
    runs = [feature_extraction.extract_features(emb.net, ds, bs, 0, idx, progress=False)[0] for bs in (1, 7, 64)]
    assert runs[0].shape == (9, 2048) and runs[0].dtype == np.float32
    scale = np.abs(runs[0]).max()  # random-init features are huge (no trained BN statistics)
    for other in runs[1:]:
        assert np.abs(other - runs[0]).max() <= 1e-5 * scale
    # indices select and order rows; random-init weights are the same every time (seed 0).
    sub = embeddings.compute_embeddings(ds, "random_inceptionv3", batch_size=4, num_workers=0,
                                        resolution=80, device="cpu", indices=[7, 11], progress=False)
    assert np.abs(sub - runs[0][[3, 0]]).max() <= 1e-5 * scale


_DDP_SCRIPT = """
import sys, numpy as np, torch
import distributed, embeddings
torch.set_num_threads(1)
distributed.init_distributed(torch.device("cpu"))
data = torch.rand(13, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
out = embeddings.compute_embeddings(data, "efficientnet_lite0", batch_size=4, num_workers=0,
                                    resolution=32, device="cpu", progress=False)
np.save(f"{sys.argv[1]}/rank{distributed.rank()}.npy", out)
distributed.cleanup()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_sharding_gives_the_single_process_result_on_every_rank(tmp_path, repo_root):
    script = tmp_path / "ddp_embed.py"
    script.write_text(_DDP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(repo_root), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={_free_port()}", str(script), str(tmp_path)],
                         cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    data = torch.rand(13, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    single = embeddings.compute_embeddings(data, "efficientnet_lite0", batch_size=5, num_workers=0,
                                           resolution=32, device="cpu", progress=False)
    ranks = [np.load(tmp_path / f"rank{r}.npy") for r in (0, 1)]
    np.testing.assert_array_equal(ranks[0], ranks[1])
    np.testing.assert_allclose(ranks[0], single, rtol=1e-4, atol=1e-5)
