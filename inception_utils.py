"""Sample-quality metrics: Inception Score, FID and precision/recall/density/coverage.

Every figure is computed against the ORIGINAL training distribution (never the instance-
selected subset): `calculate_inception_moments.py` stores mu/sigma of all the training data,
`prepare_manifold.py` a seeded random 10k subset of its features, and
`prepare_inception_metrics(config)` returns the function the training loop and sample.py call.
With `--save_features` the moments pass also keeps every image's features and logits
(`saved_features.py`), which the manifold, a grid's training-set rows and instance selection with the
same network then read instead of running it over the same images again.

Numerics (why they can be trusted):
* FID: statistics in float64; tr(sqrt(sigma1 sigma2)) from the eigenvalues of the symmetric
  PSD matrix L^T sigma2 L where sigma1 = L L^T (Cholesky, pivoted when sigma1 is singular).
  Same value as `scipy.linalg.sqrtm` (rel. 1e-8 in tests), never complex, never NaN, and
  15-30x faster at 2048 dimensions.
* PRDC: clovaai's `prdc` definitions and argument order, computed block by block with torch
  (memory O(block x N), never an N x N matrix); distances are formed in float64 and rounded
  to the features' dtype before comparing, as sklearn does, so results equal `prdc`'s.
* Files record the feature network, weights identity, input resolution and resize method;
  loading a file made with another network is refused.
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import scipy.linalg
import scipy.special
import torch

import backbones
import distributed
import feature_extraction
import io_utils
import metric_specs
import saved_features

# name -> (backbone, whether its FID is the standard one people compare with)
FEATURE_NETS: dict[str, dict[str, Any]] = {
    "inception_v3": {"backbone": "inception_v3", "standard": True,
                     "label": "PyTorch Inception-v3 (torchvision weights; as BigGAN-PyTorch)"},
    "inception_v3_tf": {"backbone": "inception_v3_tf", "standard": True,
                        "label": "TF FID Inception (pytorch-fid/TTUR weights; comparable with TF papers)"},
    "efficientnet_lite0": {"backbone": "efficientnet_lite0", "standard": False,
                           "label": "EfficientNet-Lite0 (offline; NON-STANDARD FID, not comparable)"},
    "random_inception_v3": {"backbone": "random_inception_v3", "standard": False,
                            "label": "random-weight Inception-v3 (tests only; NON-STANDARD)"},
}
META_KEYS = ("feature_net", "weights_id", "resolution", "resize_method", "normalization")


def load_feature_net(name: str, weights_path: str = "", device: torch.device | str | None = None,
                     resolution: int = 0) -> backbones.FeatureNet:
    """Feature network `name` (a key of FEATURE_NETS): images in [-1, 1] -> (pool, logits).

    Weights come from `weights_path` or the torch hub cache, never from the network.
    `resolution` > 0 overrides the input size (for quick tests; files record it).
    """
    if name not in FEATURE_NETS:
        raise ValueError(f"--feature_net {name!r} is unknown; choose one of {', '.join(FEATURE_NETS)}")
    net = backbones.build_backbone(FEATURE_NETS[name]["backbone"], weights_path, device,
                                   resolution, flag="--inception_weights")
    net.name = name
    return net


# --------------------------------------------------------------------------- Inception Score
def calculate_inception_score(logits_or_probs: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """The standard Inception Score: mean and std over `num_splits` equal splits.

    Rows that are non-negative and sum to 1 are taken as probabilities; anything else is
    treated as logits and softmaxed.
    """
    x = np.asarray(logits_or_probs, dtype=np.float64)
    if x.ndim != 2 or len(x) < num_splits or num_splits < 1:
        raise ValueError(f"need a [N, C] array with N >= num_splits={num_splits}, got shape {x.shape}")
    is_probs = x.min() >= 0 and np.allclose(x.sum(1), 1.0, atol=1e-4)
    probs = x if is_probs else scipy.special.softmax(x, axis=1)
    size = len(probs) // num_splits
    scores = []
    for i in range(num_splits):
        part = probs[i * size:(i + 1) * size]
        # rel_entr(p, q) = p log(p / q) with 0 log 0 = 0: one-hot rows are fine.
        kl = scipy.special.rel_entr(part, part.mean(0, keepdims=True)).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


# --------------------------------------------------------------------------- FID
def activation_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mu and sigma (float64, unbiased) of features [N, D]; N < 2 is an error, N < D a warning."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"FID statistics need at least 2 feature vectors [N, D], got shape {x.shape}")
    if len(x) < x.shape[1]:
        warnings.warn(f"{len(x)} samples for {x.shape[1]}-d features: the covariance is singular "
                      f"and FID is biased; use at least {x.shape[1]} (10k-50k is standard)", stacklevel=2)
    mu = x.mean(0)
    centered = x - mu
    sigma = centered.T @ centered / (len(x) - 1)
    return mu, sigma


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrtm(sigma1 @ sigma2)) for symmetric PSD matrices, from eigenvalues (float64).

    With sigma1 = L L^T, sigma1 sigma2 is similar to the symmetric PSD L^T sigma2 L, whose
    eigenvalues are real and >= 0; clipping rounding-level negatives keeps the result real.
    LAPACK's dsygst forms L^T sigma2 L using the symmetry (half the flops of two triangular
    products), and only lower triangles are read, so no symmetrised copies are made.
    """
    s1, s2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    lapack = scipy.linalg.lapack
    chol, info = lapack.dpotrf(s1, lower=1, clean=0)
    if info == 0:
        inner, info = lapack.dsygst(s2, chol, itype=2, lower=1)
        if info != 0:
            raise ValueError(f"LAPACK dsygst failed (info={info}) on the FID covariances")
    else:  # singular sigma1 (e.g. fewer samples than dimensions): pivoted Cholesky of its range
        piv_chol, piv, rank, _ = lapack.dpstrf(s1, lower=1)
        factor = np.tril(piv_chol)[:, :rank]                           # s1[p][:, p] = F F^T
        p = piv - 1
        inner = factor.T @ s2[np.ix_(p, p)] @ factor
    eig = scipy.linalg.eigh(inner, lower=True, eigvals_only=True, driver="evr",
                            check_finite=False, overwrite_a=True)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def calculate_frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                               sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != mu2.shape or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"FID statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma "
                         f"{sigma1.shape} vs {sigma2.shape} (different feature networks?)")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise ValueError("FID statistics contain NaN or inf (diverged generator or corrupt moments file)")
    diff = mu1 - mu2
    fid = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(fid, 0.0))  # only rounding can make it negative


# --------------------------------------------------------------------------- PRDC
# --------------------------------------------------------------------------- KID
def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between equal-sized sets with the cubic polynomial kernel
    k(a, b) = (a.b / d + 1)^3 of Binkowski et al. (2018): within-set sums leave out the
    diagonal, the cross-set sum keeps it (torch-fidelity's and clean-fid's estimator)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, d = x.shape
    if y.shape != (m, d) or m < 2:
        raise ValueError(f"KID subsets must be equal-sized [m >= 2, d] arrays, got {x.shape} and {y.shape}")
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def calculate_kid(real_features: np.ndarray, fake_features: np.ndarray, num_subsets: int = 100,
                  subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std (ddof 0) of `polynomial_mmd2` over `num_subsets`
    random subsets of `subset_size` images drawn without replacement from each set (clipped to
    the smaller set, as clean-fid does; torch-fidelity refuses instead). Seeded."""
    n = min(len(real_features), len(fake_features), subset_size)
    if n < 2 or num_subsets < 1:
        raise ValueError(f"KID needs >= 2 images per set and >= 1 subset (got {n} images, "
                         f"{num_subsets} subsets)")
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(real_features[rng.choice(len(real_features), n, replace=False)],
                              fake_features[rng.choice(len(fake_features), n, replace=False)])
              for _ in range(num_subsets)]
    return float(np.mean(values)), float(np.std(values))


def _as_tensor(x, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if t.ndim != 2 or not t.is_floating_point():
        raise ValueError(f"PRDC features must be a float [N, D] array, got {tuple(t.shape)} {t.dtype}")
    return t.to(device)


def _block_rows(n_cols: int, block_size: int) -> int:
    # ~256 MiB of float64 distances per block unless the caller chose.
    return max(1, block_size or min(4096, (1 << 25) // max(n_cols, 1)))


def _distances(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Euclidean distances [len(a), len(b)] formed in float64, rounded to `out_dtype` (as sklearn)."""
    a64 = a.double()
    d2 = (a64 * a64).sum(1, keepdim=True) + b_sq[None, :] - 2.0 * (a64 @ b.double().T)
    return d2.clamp_min_(0).to(out_dtype).sqrt_()


def nearest_neighbour_radii(features, nearest_k: int, block_size: int = 0,
                            device: torch.device | str | None = None) -> np.ndarray:
    """Distance of each row to its k-th nearest other row (prdc's radius), block by block."""
    dev = torch.device(device) if device else torch.device("cpu")
    x = _as_tensor(features, dev)
    n = x.shape[0]
    if nearest_k < 1 or n < nearest_k + 1:
        raise ValueError(f"nearest_k={nearest_k} needs >= 1 and at least {nearest_k + 1} samples, "
                         f"got {n}; use more samples (--num_pr_images) or a smaller --prdc_k")
    x_sq = (x.double() ** 2).sum(1)
    radii = torch.empty(n, dtype=x.dtype, device=dev)
    rows = _block_rows(n, block_size)
    for i in range(0, n, rows):
        d = _distances(x[i:i + rows], x, x_sq, x.dtype)
        d.diagonal(offset=i).zero_()  # self-distance exactly 0, as sklearn sets it
        radii[i:i + rows] = d.topk(nearest_k + 1, dim=1, largest=False).values[:, -1]
    return radii.cpu().numpy()


def nearest_neighbour_indices(queries, reference, exclude_self: bool = False, block_size: int = 0,
                              device: torch.device | str | None = None) -> np.ndarray:
    """Index into `reference` of each query row's nearest row (Euclidean), block by block.

    With `exclude_self` the queries are the reference itself and a row may not be its own
    neighbour (leave-one-out)."""
    dev = torch.device(device) if device else torch.device("cpu")
    q, ref = _as_tensor(queries, dev), _as_tensor(reference, dev)
    if q.shape[1] != ref.shape[1]:
        raise ValueError(f"queries are {q.shape[1]}-d but the reference {ref.shape[1]}-d (different feature networks?)")
    if exclude_self and q.shape[0] != ref.shape[0]:
        raise ValueError("exclude_self needs the queries to be the reference rows themselves")
    if ref.shape[0] < 1 + exclude_self:
        raise ValueError(f"a nearest neighbour needs at least {1 + exclude_self} reference rows, got {ref.shape[0]}")
    ref_sq = (ref.double() ** 2).sum(1)
    out = torch.empty(q.shape[0], dtype=torch.int64, device=dev)
    rows = _block_rows(ref.shape[0], block_size)
    for i in range(0, q.shape[0], rows):
        d = _distances(q[i:i + rows], ref, ref_sq, torch.float64)
        if exclude_self:
            d.diagonal(offset=i).fill_(float("inf"))
        out[i:i + rows] = d.argmin(1)
    return out.cpu().numpy()


def compute_prdc(real_features, fake_features, nearest_k: int = 5, block_size: int = 0,
                 device: torch.device | str | None = None,
                 real_radii: Optional[np.ndarray] = None) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020), as `prdc.compute_prdc`.

    Same arguments and meaning as clovaai's `prdc`; memory O(block x N). Both sets need at
    least `nearest_k + 1` samples (prdc itself needs k + 2). Identical sets give precision =
    recall = coverage = 1. `real_radii` lets a caller reuse the real set's radii.
    """
    dev = torch.device(device) if device else torch.device("cpu")
    real, fake = _as_tensor(real_features, dev), _as_tensor(fake_features, dev)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features are {real.shape[1]}-d but fake ones {fake.shape[1]}-d "
                         f"(different feature networks?)")
    out_dtype = torch.promote_types(real.dtype, fake.dtype)
    if real_radii is None:
        real_radii = nearest_neighbour_radii(real, nearest_k, block_size, dev)
    r_real = torch.as_tensor(real_radii, device=dev).to(out_dtype)
    r_fake = torch.as_tensor(nearest_neighbour_radii(fake, nearest_k, block_size, dev),
                             device=dev).to(out_dtype)
    same_object = real_features is fake_features  # sklearn zeroes the diagonal only in this case
    fake_sq = (fake.double() ** 2).sum(1)
    in_real_ball = torch.zeros(fake.shape[0], dtype=torch.bool, device=dev)
    real_ball_count = torch.zeros(fake.shape[0], dtype=torch.int64, device=dev)
    recalled = torch.empty(real.shape[0], dtype=torch.bool, device=dev)
    covered = torch.empty(real.shape[0], dtype=torch.bool, device=dev)
    rows = _block_rows(fake.shape[0], block_size)
    for i in range(0, real.shape[0], rows):
        d = _distances(real[i:i + rows], fake, fake_sq, out_dtype)
        if same_object:
            d.diagonal(offset=i).zero_()
        radius = r_real[i:i + rows, None]
        inside = d < radius
        in_real_ball |= inside.any(0)
        real_ball_count += inside.sum(0)
        recalled[i:i + rows] = (d < r_fake[None, :]).any(1)
        covered[i:i + rows] = d.min(1).values < radius[:, 0]
    return {"precision": in_real_ball.double().mean().item(),
            "recall": recalled.double().mean().item(),
            "density": real_ball_count.double().mean().item() / nearest_k,
            "coverage": covered.double().mean().item()}


# --------------------------------------------------------------------------- files
def moments_path(config: dict) -> Path:
    """`<derived folder>/<dataset>_inception_moments.npz` (`_<feature_net>_` for other networks);
    the derived folder is data_root, or `<data_root>.derived` for an image folder or HDF5 file
    (datasets.derived_folder)."""
    return saved_features.reference_path(config, "moments")


def manifold_path(config: dict) -> Path:
    """`<derived folder>/<dataset>_inception_activations.npz` (as moments_path)."""
    return saved_features.reference_path(config, "activations")


def _meta_arrays(meta: dict) -> dict[str, np.ndarray]:
    return {k: np.array(meta[k]) for k in META_KEYS}


def _check_meta(path: Path, data, meta: dict, script: str) -> None:
    """Refuse a file whose feature network, weights, resolution, resizing or input normalisation
    differ from `meta` (or that does not record one of them: an older or foreign file)."""
    missing = [k for k in META_KEYS if k not in data.files]
    if missing:
        raise ValueError(f"{path} does not record the feature network's {', '.join(missing)} (a file "
                         f"from an older version or another tool); delete it and re-run {script} "
                         f"--feature_net {meta['feature_net']}")
    found = {k: data[k].item() for k in META_KEYS}
    wrong = [k for k in META_KEYS if str(found[k]) != str(meta[k])]
    if wrong:
        details = ", ".join(f"{k} {found[k]!r} (now {meta[k]!r})" for k in wrong)
        raise ValueError(f"{path} was made with another network: {details}; re-run {script} "
                         f"--feature_net {meta['feature_net']} or use --feature_net {found['feature_net']}")


def moments_of(pool: np.ndarray, logits: Optional[np.ndarray]) -> dict[str, np.ndarray]:
    """mu, sigma (float64) and the Inception Score of images with these features and logits."""
    mu, sigma = activation_statistics(pool)
    is_mean, is_std = calculate_inception_score(logits) if logits is not None else (np.nan, np.nan)
    return {"mu": mu, "sigma": sigma, "is_mean": np.float64(is_mean), "is_std": np.float64(is_std),
            "num_images": np.int64(len(pool))}


def compute_moments(dataset, net: backbones.FeatureNet, batch_size: int = 128, num_workers: int = 4,
                    indices=None, progress: bool = True) -> dict[str, np.ndarray]:
    """mu, sigma (float64) and the Inception Score of `dataset` (all of it, or `indices`)."""
    return moments_of(*feature_extraction.extract_features(net, dataset, batch_size, num_workers, indices,
                                                           progress, desc="moments"))


def save_moments(path: str | Path, moments: dict, net: backbones.FeatureNet, dataset_name: str) -> None:
    """Write the moments with the feature network's record (atomic; rank 0 only)."""
    if distributed.is_main_process():
        io_utils.atomic_savez(path, dataset=np.array(dataset_name), **moments,
                              **_meta_arrays(net.metadata()))


def _read_npz(path: Path, net: backbones.FeatureNet, script: str) -> dict[str, np.ndarray]:
    """Every array of a reference file, after checking its record; a damaged file is a clear error."""
    try:
        with np.load(path, allow_pickle=False) as data:
            _check_meta(path, data, net.metadata(), script)
            return {k: data[k] for k in data.files}
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is damaged or not an npz file ({type(err).__name__}); delete it "
                         f"and re-run {script}") from err


def _check_arrays(path: Path, arrays: dict[str, np.ndarray], shapes: dict[str, Callable[[tuple], bool]],
                  script: str) -> None:
    """Refuse a reference file whose arrays are missing, not finite floats, or badly shaped."""
    for key, shape_ok in shapes.items():
        a = arrays.get(key)
        problem = ("has no" if a is None else
                   "has a non-float" if a.dtype.kind != "f" else
                   "has a badly shaped" if not shape_ok(a.shape) else
                   "has a non-finite" if not np.isfinite(a).all() else "")
        if problem:
            raise ValueError(f"{path} {problem} '{key}' array{'' if a is None else f' {a.dtype} {a.shape}'}; "
                             f"delete it and re-run {script}")


def load_moments(path: str | Path, net: backbones.FeatureNet) -> dict[str, np.ndarray]:
    """mu/sigma (and the real IS) from `path`, refused if made with another network or damaged."""
    path = Path(path)
    script = "calculate_inception_moments.py"
    if not path.is_file():
        raise FileNotFoundError(f"FID moments {path} not found; run {script} "
                                f"--dataset ... --feature_net {net.name} first, or pass --no_fid")
    arrays = _read_npz(path, net, script)
    dim = arrays["mu"].shape[0] if "mu" in arrays and arrays["mu"].ndim == 1 else -1
    _check_arrays(path, arrays, {"mu": lambda s: len(s) == 1 and s[0] > 0,
                                 "sigma": lambda s: s == (dim, dim)}, script)
    return arrays


def manifold_indices(n: int, num_images: int, seed: int) -> np.ndarray:
    """A seeded random subset (across classes) of `num_images` of `n` items, sorted for reading."""
    if num_images < 1:
        raise ValueError(f"--num_pr_images must be >= 1, got {num_images}")
    return np.sort(np.random.default_rng(seed).permutation(n)[:num_images])


def save_manifold(path: str | Path, features: np.ndarray, indices: np.ndarray, seed: int,
                  net: backbones.FeatureNet, dataset_name: str) -> None:
    """Write real-image features for PRDC with the feature network's record (rank 0 only)."""
    if distributed.is_main_process():
        io_utils.atomic_savez(path, features=np.asarray(features, np.float32),
                              indices=np.asarray(indices, np.int64), seed=np.int64(seed),
                              dataset=np.array(dataset_name), **_meta_arrays(net.metadata()))


def load_manifold(path: str | Path, net: backbones.FeatureNet) -> np.ndarray:
    """Real features [N, D] from `path`, refused if made with another network."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PRDC manifold {path} not found; run prepare_manifold.py "
                                f"--dataset ... --feature_net {net.name} first, or pass --no_prdc")
    arrays = _read_npz(path, net, "prepare_manifold.py")
    _check_arrays(path, arrays, {"features": lambda s: len(s) == 2 and min(s) > 0}, "prepare_manifold.py")
    return arrays["features"]


# The flags calculate_inception_moments.py and prepare_manifold.py read (their --help shows these).
REFERENCE_PASS_FLAGS = frozenset({"dataset", "data_root", "resolution", "load_in_mem", "feature_net",
                                  "feature_res", "inception_weights", "batch_size", "num_workers",
                                  "device", "pbar", "num_pr_images", "seed"})


def reference_pass_setup(argv: list[str] | None, description: str = "",
                         add_flags: Callable[[Any], None] | None = None) -> tuple[dict, Any, backbones.FeatureNet]:
    """Parse the flags of calculate_inception_moments.py / prepare_manifold.py (whose --help
    shows `description`, REFERENCE_PASS_FLAGS and what `add_flags(parser)` adds) and load the
    (original, unselected) dataset and the feature network they describe."""
    import datasets  # after parsing, so --help stays fast
    import utils
    parser = utils.focus_parser(utils.prepare_parser(), description, REFERENCE_PASS_FLAGS)
    if add_flags:
        add_flags(parser)
    config = vars(parser.parse_args(argv))
    device = utils.resolve_device(config["device"])
    distributed.init_distributed(device)
    dataset = datasets.get_dataset(config["dataset"], config["data_root"],
                                   resolution=config["resolution"] or None)
    net = load_feature_net(config["feature_net"], config["inception_weights"], device, config["feature_res"])
    return config, dataset, net


# --------------------------------------------------------------------------- training hook
class SampleMetrics:
    """IS, FID and P/R/D/C of images against the ORIGINAL data's moments and manifold, with one
    feature network: call it with a sampler (`get_metrics`), or give it features already computed
    with `net` (`of_features`, e.g. real images read back with `saved_features.load_features`)."""

    def __init__(self, net: backbones.FeatureNet, label: str, moments: Optional[dict[str, np.ndarray]],
                 real: Optional[np.ndarray], k: int, num_pr: int, device: torch.device | str) -> None:
        self.net, self.label, self.moments, self.real = net, label, moments, real
        self.k, self.num_pr, self.device = k, num_pr, device
        self._real_radii: Optional[np.ndarray] = None  # the real radii never change between evaluations

    def __call__(self, sample_fn: Callable[[], Any], num_images: int, num_splits: int = 10,
                 prints: bool = True) -> dict[str, float]:
        """The metrics of `num_images` images drawn from `sample_fn()`."""
        if prints:
            distributed.print0(f"Computing metrics with {self.label} on {num_images} samples...")
        pool, logits = feature_extraction.extract_sample_features(self.net, sample_fn, num_images, progress=prints)
        return self.of_features(pool, logits, num_splits)

    def of_features(self, pool: np.ndarray, logits: Optional[np.ndarray], num_splits: int = 10) -> dict[str, float]:
        """The metrics of images whose features (and logits) `self.net` gave, in the order drawn."""
        out = dict.fromkeys(metric_specs.result_keys(), float("nan"))
        if logits is not None:
            out["IS_mean"], out["IS_std"] = calculate_inception_score(logits, num_splits)
        if self.moments is not None:
            mu, sigma = activation_statistics(pool)
            out["FID"] = calculate_frechet_distance(mu, sigma, self.moments["mu"], self.moments["sigma"])
        if self.real is not None:
            if self._real_radii is None:
                self._real_radii = nearest_neighbour_radii(self.real, self.k, device=self.device)
            out.update(compute_prdc(self.real, pool[:self.num_pr], self.k, device=self.device,
                                    real_radii=self._real_radii))
        return out


def prepare_inception_metrics(config: dict, device: torch.device | str | None = None,
                              resolution: int | None = None) -> SampleMetrics:
    """Load the feature net and the ORIGINAL data's moments/manifold; return `get_metrics`.

    `get_metrics(sample_fn, num_images, num_splits=10, prints=True)` draws `num_images`
    images from `sample_fn` and returns {IS_mean, IS_std, FID, precision, recall, density,
    coverage}; FID is NaN under --no_fid and the PRDC entries under --no_prdc. Missing or
    mismatched files fail here, before training starts.
    """
    if device is None:
        import utils
        device = utils.resolve_device(config.get("device", "auto"))
    if resolution is None:
        resolution = int(config.get("feature_res", 0))
    net = load_feature_net(config["feature_net"], config.get("inception_weights", ""), device, resolution)
    moments = None if config.get("no_fid") else load_moments(moments_path(config), net)
    real = None if config.get("no_prdc") else load_manifold(manifold_path(config), net)
    return SampleMetrics(net, FEATURE_NETS[config["feature_net"]]["label"], moments, real,
                         int(config.get("prdc_k", 5)), int(config.get("num_pr_images", 10000)), device)
