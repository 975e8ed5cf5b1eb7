"""Manifold-density scores for instance selection (larger = denser), behind one registry.

Each scorer takes the embeddings of one pool (one class, or the whole unlabelled set)
and returns one float64 score per row, for the same rows it was fitted on:

- `gaussian`: log-likelihood under one full-covariance Gaussian (paper eq. 1), equal to
  `sklearn.mixture.GaussianMixture(1, covariance_type='full', reg_covar=1e-5)
  .fit(x).score_samples(x)` on float64 input.
- `ppca`: probabilistic-PCA log-likelihood (paper eq. 2) with the fewest components that
  explain 95 % of the variance, equal to `sklearn.decomposition.PCA(n_components=k,
  svd_solver='full').fit(x).score_samples(x)`.
- `nn_dist` / `knn`: minus the Euclidean distance to the k-th nearest *other* point (eq. 3).
- `uniform`: seeded uniform random numbers (the paper's random-subset control).

The likelihoods are closed-form in float64 from one eigendecomposition (or Cholesky) of
whichever Gram matrix is smaller, d x d or N x N, so 1,300 x 2,048 ImageNet classes
never factor a 2,048 x 2,048 matrix.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

GAUSSIAN_REG = 1e-5          # sklearn GaussianMixture's reg_covar used by the paper
PPCA_VARIANCE = 0.95         # fraction of variance the PPCA components must explain
KNN_MARGIN = 4               # extra float32 candidates re-ranked in float64
KNN_BLOCK_BYTES = 256 << 20  # size of one (block x N) float32 distance matrix


def _as_float64(x: np.ndarray | torch.Tensor, device: torch.device | None) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array [N, D], got shape {tuple(x.shape)}")
    x = x.to(device=device or x.device, dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf; recompute them (check the embedding "
                         "network and the input images)")
    return x


def _gram_eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric a @ a.T, in float64.

    On the CPU, LAPACK through scipy: dsyrk forms the product in half the flops of a matmul
    and the divide-and-conquer dsyevd is faster than torch's CPU eigh at these sizes
    (bench/bench_selection.py). Elsewhere (GPU) torch's own routines.
    """
    if a.device.type != "cpu":
        return torch.linalg.eigh(a @ a.T)
    import scipy.linalg
    m = a.numpy()
    # Pass whichever of m and m.T is Fortran-ordered so that BLAS reads it without a copy.
    gram = scipy.linalg.blas.dsyrk(1.0, m.T, trans=1, lower=1) if m.flags.c_contiguous \
        else scipy.linalg.blas.dsyrk(1.0, m, lower=1)
    evals, vecs = scipy.linalg.eigh(gram, lower=True, driver="evd", check_finite=False, overwrite_a=True)
    return torch.from_numpy(evals), torch.from_numpy(vecs)


def _gaussian_fallback_evals(evals: torch.Tensor, other_dim: int) -> torch.Tensor:
    """gaussian_scores' eigen fallback: warn, and set the eigenvalues (of a PSD matrix) that are
    below eigh's rounding error to exactly 0."""
    warnings.warn("gaussian scores: reg_covar=1e-5 is below the float64 rounding of this pool's "
                  "covariance (very large features, e.g. a random-weight network); the scores are "
                  "computed from an eigendecomposition but, with fewer images than dimensions, they "
                  "are nearly tied and the selection is close to arbitrary (the paper's random-"
                  "embedding control); normalise the features or use ppca/nn_dist for a real ranking",
                  RuntimeWarning, stacklevel=3)
    tol = float(evals.abs().max()) * max(len(evals), other_dim) * torch.finfo(evals.dtype).eps
    return torch.where(evals > tol, evals, torch.zeros_like(evals))


def gaussian_scores(x: np.ndarray | torch.Tensor, reg: float = GAUSSIAN_REG,
                    device: torch.device | None = None) -> np.ndarray:
    """Log-likelihood of each row under N(mean, cov/N-normalised + reg*I), in float64.

    The covariance is normalised by N (as sklearn's GaussianMixture, not N-1).
    """
    x = _as_float64(x, device)
    n, d = x.shape
    xc = x - x.mean(0)
    # A Cholesky factorisation is cheapest. When the features are so large that reg is below
    # the float64 rounding of the covariance (a random-weight network's activations), it fails;
    # then an eigendecomposition is used in which eigenvalues below the solver's rounding level
    # count as exactly 0, as they are in exact arithmetic for rank-deficient features.
    if n >= d:
        cov = xc.T @ xc / n
        cov.diagonal().add_(reg)
        chol, info = torch.linalg.cholesky_ex(cov)
        if info == 0:
            white = torch.linalg.solve_triangular(chol, xc.T, upper=False)
            maha = white.square().sum(0)
            logdet = 2.0 * chol.diagonal().log().sum()
        else:
            cov.diagonal().sub_(reg)
            evals, vecs = torch.linalg.eigh(cov)
            evals = _gaussian_fallback_evals(evals, n) + reg
            maha = ((xc @ vecs).square() / evals).sum(1)
            logdet = evals.log().sum()
    else:
        # N < d, Woodbury on the N x N Gram G = xc xc^T with c = N*reg and M = G + c*I:
        # row j's Mahalanobis term is N * (1 - c * inv(M)_jj) and
        # log|cov| = d*log(reg) + log|M| - N*log(c). One N x N Cholesky, no d x d matrix.
        c = n * reg
        gram = xc @ xc.T
        gram.diagonal().add_(c)
        chol, info = torch.linalg.cholesky_ex(gram)
        if info == 0:
            eye = torch.eye(n, dtype=chol.dtype, device=chol.device)
            inv_chol = torch.linalg.solve_triangular(chol, eye, upper=False)
            maha = n * (1.0 - c * inv_chol.square().sum(0))
            logdet_m = 2.0 * chol.diagonal().log().sum()
        else:
            gram.diagonal().sub_(c)
            evals, vecs = torch.linalg.eigh(gram)
            evals = _gaussian_fallback_evals(evals, d)
            # 1 - c/(lam + c) = lam/(lam + c), written without the cancellation.
            maha = n * (vecs.square() * (evals / (evals + c))).sum(1)
            logdet_m = (evals + c).log().sum()
        logdet = d * math.log(reg) + logdet_m - n * math.log(c)
    scores = -0.5 * (d * math.log(2 * math.pi) + logdet + maha)
    return scores.cpu().numpy()


def ppca_n_components(explained_variance: np.ndarray, fraction: float = PPCA_VARIANCE) -> int:
    """Fewest components whose cumulated explained-variance ratio exceeds `fraction`

    (the rule of sklearn's PCA(n_components=<float>)).
    """
    ratio_cumsum = np.cumsum(explained_variance / explained_variance.sum())
    return int(np.searchsorted(ratio_cumsum, fraction, side="right")) + 1


def ppca_scores(x: np.ndarray | torch.Tensor, fraction: float = PPCA_VARIANCE,
                device: torch.device | None = None) -> np.ndarray:
    """PPCA log-likelihood of each row (Tipping & Bishop), in float64.

    Follows sklearn's PCA: explained variances s^2/(N-1), the noise variance is the mean
    of the discarded ones among the min(N, d) available, and a kept component whose
    variance does not exceed the noise variance counts as noise (sklearn clips it).
    Pools of fewer than 3 rows have no spread to model and score 0 (all tied).
    """
    x = _as_float64(x, device)
    n, d = x.shape
    if n < 3:
        return np.zeros(n)
    xc = x - x.mean(0)
    # Eigenpairs of the smaller Gram matrix (ascending). For N < d its eigenvectors U give the
    # squared projections on the principal axes as U^2 * eigenvalue, without the d-dim axes.
    evals, vecs = _gram_eigh(xc.T if n >= d else xc)
    evals = evals.clamp(min=0)
    var = evals.flip(0) / (n - 1)  # descending, as sklearn's explained_variance_
    var_np = var.cpu().numpy()
    if var_np.sum() <= 0:
        return np.zeros(n)  # every row identical: nothing to rank
    rank = min(n, d)
    k = min(ppca_n_components(var_np, fraction), rank)
    noise = float(var_np[k:rank].mean()) if k < rank else 0.0
    if noise <= 0.0:
        # Degenerate data (exact rank <= k): sklearn would invert a singular matrix here;
        # a floor keeps the scores finite and the ranking by distance to the subspace.
        noise = 1e-12 * float(var_np[0])
    lam = var[:k].clamp(min=noise)
    # Model variance along every axis (kept: lam, discarded: noise), back in ascending order.
    inv_model = torch.cat([1.0 / lam, torch.full((len(var) - k,), 1.0 / noise, dtype=var.dtype,
                                                  device=var.device)]).flip(0)
    maha = (xc @ vecs).square() @ inv_model if n >= d else vecs.square() @ (evals * inv_model)
    logdet = lam.log().sum() + (d - k) * math.log(noise)
    scores = -0.5 * (d * math.log(2 * math.pi) + logdet + maha)
    return scores.cpu().numpy()


def knn_scores(x: np.ndarray | torch.Tensor, k: int = 5, device: torch.device | None = None,
               block_bytes: int = KNN_BLOCK_BYTES) -> np.ndarray:
    """Minus the Euclidean distance from each row to its k-th nearest other row.

    Candidates come from float32 squared distances computed block x N at a time (memory
    O(block x N), never N x N); the k + KNN_MARGIN nearest are then re-measured exactly in
    float64, so the returned distances match an exact float64 k-NN. Self-matches are
    excluded by index, so a duplicate image counts as a neighbour at distance 0.
    Pools with k or fewer rows use k = N - 1 (a single row scores 0).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1 for nn_dist (got {k}); set --nn_k to a positive integer")
    source = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    if source.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array [N, D], got shape {tuple(source.shape)}")
    source = source.to(device or source.device)
    n = source.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return np.zeros(n)
    if not torch.isfinite(source).all():
        raise ValueError("embeddings contain NaN or inf; recompute them (check the embedding "
                         "network and the input images)")
    # Centring keeps the |a|^2 + |b|^2 - 2ab float32 expansion from cancelling badly.
    search = source.float()
    search = search - search.mean(0)
    sq = search.square().sum(1)
    m = min(k + KNN_MARGIN, n - 1)
    block = max(1, min(n, block_bytes // (4 * n)))
    out = torch.empty(n, dtype=torch.float64, device=source.device)
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = torch.arange(stop - start, device=source.device)
        dist = torch.addmm(sq[None, :], search[start:stop], search.T, beta=1, alpha=-2)
        dist.add_(sq[start:stop, None])
        dist[rows, rows + start] = float("inf")
        cand = dist.topk(m, dim=1, largest=False).indices
        del dist
        diff = source[start:stop, None, :].double() - source[cand].double()
        exact = diff.square().sum(2).sqrt().sort(dim=1).values
        out[start:stop] = exact[:, k - 1]
    return (-out).cpu().numpy()


def uniform_scores(n: int, seed: int = 0, pool: int = 0) -> np.ndarray:
    """Seeded uniform random scores: ranking by them keeps a uniform random subset.

    `pool` (the class position) gives each class its own stream for the same seed.
    """
    return np.random.default_rng([int(seed), int(pool)]).random(n)


@dataclass(frozen=True)
class DensityMeasure:
    """One scoring function H. `score(x, pool=, device=, **settings)` returns float64 scores
    (larger = denser); `settings` maps each of its own settings to the config flag that sets it
    (they name the selection caches and are recorded in their metadata); `label` is its name in
    tables (the paper's Table 1); `uses_embedding` is False for a score that ignores the features."""
    score: Callable[..., np.ndarray]
    label: str
    settings: dict[str, str] = field(default_factory=dict)
    uses_embedding: bool = True


_KNN = DensityMeasure(lambda x, pool, device, k: knn_scores(x, k=k, device=device), "KNN Dist", {"k": "nn_k"})
DENSITY_MEASURES: dict[str, DensityMeasure] = {
    "gaussian": DensityMeasure(lambda x, pool, device: gaussian_scores(x, device=device), "Gaussian"),
    "ppca": DensityMeasure(lambda x, pool, device: ppca_scores(x, device=device), "PPCA"),
    "nn_dist": _KNN,
    "knn": _KNN,  # the same score under the name of the paper's code
    "uniform": DensityMeasure(lambda x, pool, device, seed: uniform_scores(len(x), seed=seed, pool=pool),
                              "Uniform", {"seed": "selection_seed"}, uses_embedding=False),
}
# Every config flag some density measure reads.
SETTING_FLAGS = frozenset(flag for m in DENSITY_MEASURES.values() for flag in m.settings.values())


def check_measure(name: str) -> DensityMeasure:
    """The registered density measure `name`, else a ValueError listing them."""
    if name not in DENSITY_MEASURES:
        raise ValueError(f"unknown density measure {name!r}; choose one of "
                         f"{', '.join(sorted(DENSITY_MEASURES))} (--density_measure)")
    return DENSITY_MEASURES[name]


def measure_settings(name: str, k: int = 5, seed: int = 0) -> dict[str, int]:
    """The settings measure `name` uses, out of the selection's k and seed (the others are ignored)."""
    values = {"k": int(k), "seed": int(seed)}
    settings = {arg: values[arg] for arg in check_measure(name).settings}
    if settings.get("k", 1) < 1:
        raise ValueError(f"k must be >= 1 for {name} (got {k}); set --nn_k")
    return settings


def score_embeddings(x: np.ndarray | torch.Tensor, measure: str, k: int = 5, seed: int = 0,
                     pool: int = 0, device: torch.device | None = None) -> np.ndarray:
    """Density scores (float64, larger = denser) of the rows of `x` under `measure`."""
    return check_measure(measure).score(x, pool=pool, device=device, **measure_settings(measure, k, seed))
