"""The one argparse parser: every BigGAN-PyTorch flag (same names, defaults and meanings),
the instance-selection flags of the paper, and the flags this project adds.

`utils.py` re-exports `prepare_parser`, `add_sample_parser` and `name_from_config`; what the
parser cannot check (ranges, cross-flag rules, what a resume may change) is in `config_rules.py`;
`config = vars(parser.parse_args())` is the plain dict passed everywhere. The resolved
config is written as JSON beside every checkpoint and read back by `sample.py`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from typing import Any

EMBEDDINGS = ("inceptionv3", "resnet50", "efficientnet_lite0", "random_inceptionv3",
              "places365", "swav", "resnextwsl")
DENSITY_MEASURES = ("gaussian", "ppca", "nn_dist", "knn", "uniform")
FEATURE_NETS = ("inception_v3", "inception_v3_tf", "efficientnet_lite0", "random_inception_v3")
MODELS = ("BigGAN", "BigGANdeep")
PARAMS = ("SN", "SVD", "none")
INITS = ("ortho", "N02", "xavier")
NONLINEARITIES = ("inplace_relu", "relu", "ir")
NORM_STYLES = ("bn", "in", "gn", "nonorm")
# BigGAN-PyTorch's 8 workers, but never more than the cores this process may use (PyTorch warns
# about each extra worker, and they only compete with the training for the cores).
DEFAULT_WORKERS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


# Every flag has one role, declared by the group it is defined in. The lists that other modules
# need (what a grid cell's signature covers, what sample.py takes from its command line, what a
# resume may change, ...) are derived from the roles below, so a new flag is classified once.
ROLES = {
    "data": "which images (the dataset and where it lives)",
    "selection": "which instances are kept (the paper's method)",
    "architecture": "the shapes and layers of G and D",
    "training": "the optimisation and its losses (modes included)",
    "schedule": "how long the run is and when it checkpoints and tests",
    "metrics": "how samples are scored (feature network, sample counts, k)",
    "sampling": "which G is sampled and how (EMA, eval mode, outputs of sample.py)",
    "output": "where results go and what the run is called",
    "logging": "what is printed and logged",
    "runtime": "how the work is executed (device, workers, memory layout, caches)",
}


def _group(p: argparse.ArgumentParser, title: str, role: str) -> Any:
    """An argument group whose flags all have `role` (read back by flag_roles)."""
    assert role in ROLES, role
    group = p.add_argument_group(title)
    group.role = role
    return group


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    g = _group(p, "data", "data")
    g.add_argument("--dataset", type=str, default="I128_hdf5",
                   help="Dataset key (I32..I256[_hdf5], C10, C100, FMNIST32[_hdf5], custom) (default: %(default)s)")
    g.add_argument("--resolution", type=int, default=0,
                   help="Image resolution; 0 = the dataset's own. Required with --dataset custom")
    g.add_argument("--data_root", type=str, default="data", help="Data folder (default: %(default)s)")
    g.add_argument("--augment", action="store_true", default=False,
                   help="Random crop and horizontal flip of training images")
    g.add_argument("--shuffle", action="store_true", default=False, help="Shuffle the data each epoch")
    g.add_argument("--use_multiepoch_sampler", action="store_true", default=False,
                   help="Draw all epochs' orders up front from the seed (resumes at the same position)")


def _add_selection_flags(p: argparse.ArgumentParser) -> None:
    g = _group(p, "instance selection (DeVries et al., 2020)", "selection")
    g.add_argument("--embedding", type=str, default="inceptionv3", choices=EMBEDDINGS,
                   help="Embedding network F (default: %(default)s)")
    g.add_argument("--density_measure", type=str, default="gaussian", choices=DENSITY_MEASURES,
                   help="Scoring function H; 'uniform' is the random-subset control (default: %(default)s)")
    g.add_argument("--retention_ratio", type=float, default=100,
                   help="Percent of each class kept, in (0, 100]; 100 = no selection (default: %(default)s)")
    g.add_argument("--embedding_res", type=int, default=0,
                   help="Resize images to this size before embedding; 0 = the network's own input size")
    g.add_argument("--embedding_weights", type=str, default="",
                   help="Explicit weights file for the embedding network (else the torch hub cache)")
    g.add_argument("--nn_k", type=int, default=5, help="K of the nn_dist (KNN distance) score")
    g.add_argument("--selection_seed", type=int, default=0, help="Seed of the 'uniform' control")


def _add_architecture_flags(p: argparse.ArgumentParser) -> None:
    g = _group(p, "model", "architecture")
    g.add_argument("--model", type=str, default="BigGAN", choices=MODELS, help="Model family (default: %(default)s)")
    g.add_argument("--G_param", type=str, default="SN", choices=PARAMS, help="Parameterization of G's layers")
    g.add_argument("--D_param", type=str, default="SN", choices=PARAMS, help="Parameterization of D's layers")
    g.add_argument("--G_ch", type=int, default=64, help="Channel multiplier of G (default: %(default)s)")
    g.add_argument("--D_ch", type=int, default=64, help="Channel multiplier of D (default: %(default)s)")
    g.add_argument("--G_ch_mults", type=str, default="",
                   help="G's widths in units of G_ch, joined by '_': the 4x4 input's, then each stage's output "
                        "(e.g. 4_4_4_2 narrows the last 32 px stage; default: BigGAN's architecture)")
    g.add_argument("--D_ch_mults", type=str, default="",
                   help="D's widths in units of D_ch, joined by '_': each stage's output (e.g. 2_4_4_4 narrows "
                        "the first 32 px stage; default: BigGAN's architecture)")
    g.add_argument("--D_mbstd_group", type=int, default=0,
                   help="Minibatch standard deviation in D (ProGAN; not in BigGAN): one channel before D's last "
                        "stage with the features' spread over groups of this many images; a diversity signal "
                        "for G. 0 = off (default); the batch size must be a multiple")
    g.add_argument("--G_depth", type=int, default=1, help="Resblocks per stage in G (BigGAN-deep)")
    g.add_argument("--D_depth", type=int, default=1, help="Resblocks per stage in D (BigGAN-deep)")
    g.add_argument("--D_thin", action="store_false", dest="D_wide", default=True,
                   help="Use the SN-GAN channel pattern in D")
    g.add_argument("--G_shared", action="store_true", default=False, help="Shared class embedding in G")
    g.add_argument("--shared_dim", type=int, default=0, help="Shared embedding size; 0 = dim_z")
    g.add_argument("--dim_z", type=int, default=128, help="Noise dimensionality (default: %(default)s)")
    g.add_argument("--hier", action="store_true", default=False, help="Hierarchical z in G")
    g.add_argument("--cross_replica", action="store_true", default=False,
                   help="Cross-replica (synchronised) BatchNorm in G under DDP")
    g.add_argument("--mybn", action="store_true", default=False, help="BigGAN-PyTorch's own BN implementation")
    g.add_argument("--G_nl", type=str, default="relu", choices=NONLINEARITIES, help="G activation")
    g.add_argument("--D_nl", type=str, default="relu", choices=NONLINEARITIES, help="D activation")
    g.add_argument("--G_attn", type=str, default="64",
                   help="Resolutions with self-attention in G, '_'-separated; '0' = none (default: %(default)s)")
    g.add_argument("--D_attn", type=str, default="64",
                   help="Resolutions with self-attention in D, '_'-separated; '0' = none (default: %(default)s)")
    g.add_argument("--norm_style", type=str, default="bn", choices=NORM_STYLES,
                   help="Normalisation in G's conditional BN (default: %(default)s)")
    g.add_argument("--BN_eps", type=float, default=1e-5, help="BatchNorm epsilon")
    g.add_argument("--SN_eps", type=float, default=1e-8, help="Spectral norm epsilon")
    g.add_argument("--num_G_SVs", type=int, default=1, help="Singular values tracked per G layer")
    g.add_argument("--num_D_SVs", type=int, default=1, help="Singular values tracked per D layer")
    g.add_argument("--num_G_SV_itrs", type=int, default=1, help="Power iterations per G forward")
    g.add_argument("--num_D_SV_itrs", type=int, default=1, help="Power iterations per D forward")


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    g = _group(p, "initialisation and optimisation", "training")
    g.add_argument("--seed", type=int, default=0, help="Random seed (default: %(default)s)")
    g.add_argument("--G_init", type=str, default="ortho", choices=INITS, help="Init of G's weights")
    g.add_argument("--D_init", type=str, default="ortho", choices=INITS, help="Init of D's weights")
    g.add_argument("--skip_init", action="store_true", default=False,
                   help="Skip weight init (when loading weights anyway)")
    g.add_argument("--z_var", type=float, default=1.0, help="Noise variance (default: %(default)s)")
    g.add_argument("--G_lr", type=float, default=5e-5, help="G learning rate (default: %(default)s)")
    g.add_argument("--D_lr", type=float, default=2e-4, help="D learning rate (default: %(default)s)")
    g.add_argument("--G_B1", type=float, default=0.0, help="G Adam beta1")
    g.add_argument("--D_B1", type=float, default=0.0, help="D Adam beta1")
    g.add_argument("--G_B2", type=float, default=0.999, help="G Adam beta2")
    g.add_argument("--D_B2", type=float, default=0.999, help="D Adam beta2")
    g.add_argument("--adam_eps", type=float, default=1e-8, help="Adam epsilon")
    g.add_argument("--batch_size", type=int, default=64, help="Batch size of one D/G micro-step, all processes together (default: %(default)s)")
    g.add_argument("--G_batch_size", type=int, default=0, help="G batch size when sampling; 0 = batch_size")
    g.add_argument("--num_G_accumulations", type=int, default=1, help="Micro-batches per G step")
    g.add_argument("--num_D_steps", type=int, default=2, help="D steps per G step (default: %(default)s)")
    g.add_argument("--num_D_accumulations", type=int, default=1, help="Micro-batches per D step")
    g.add_argument("--split_D", action="store_true", default=False,
                   help="Run D separately on real and fake instead of on one concatenated batch")
    g.add_argument("--loss", type=str, default="hinge", choices=("hinge", "dcgan"),
                   help="GAN loss: BigGAN's hinge, or DCGAN's non-saturating one (default: %(default)s)")
    g.add_argument("--G_ortho", type=float, default=0.0, help="Modified ortho reg strength for G")
    g.add_argument("--D_ortho", type=float, default=0.0, help="Modified ortho reg strength for D")
    g.add_argument("--toggle_grads", action="store_true", default=True,
                   help="Turn off D's grads in G steps and vice versa (always on, as in BigGAN-PyTorch)")
    g.add_argument("--which_train_fn", type=str, default="GAN", choices=("GAN",), help="Training function")
    g.add_argument("--ema", action="store_true", default=False, help="Keep an EMA copy of G")
    g.add_argument("--ema_decay", type=float, default=0.9999, help="EMA decay (default: %(default)s)")
    g.add_argument("--ema_start", type=int, default=0, help="Iteration at which the EMA starts")
    g.add_argument("--amp", type=str, default="none", choices=("none", "bf16", "fp16"),
                   help="Autocast precision on CUDA; fp16 adds a GradScaler (default: fp32)")
    g.add_argument("--G_fp16", action="store_true", default=False, help="Legacy: fp16 G (prefer --amp)")
    g.add_argument("--D_fp16", action="store_true", default=False, help="Legacy: fp16 D (prefer --amp)")
    g.add_argument("--D_mixed_precision", action="store_true", default=False,
                   help="Legacy: fp16 D with fp32 SN (prefer --amp)")
    g.add_argument("--G_mixed_precision", action="store_true", default=False,
                   help="Legacy: fp16 G with fp32 SN (prefer --amp)")


def _add_mode_flags(p: argparse.ArgumentParser) -> None:
    g = _group(p, "data-efficient training modes (off by default)", "training")
    g.add_argument("--diffaug", type=str, default="",
                   help="DiffAugment policy, e.g. 'color,translation,cutout'; '' = off")
    g.add_argument("--insgen", action="store_true", default=False, help="InsGen instance discrimination in D")
    g.add_argument("--insgen_real_queue", type=int, default=0, help="Real-key queue size; 0 = 5%% of the data")
    g.add_argument("--insgen_fake_queue", type=int, default=0, help="Fake-key queue size; 0 = 5%% of the data")
    g.add_argument("--insgen_temperature", type=float, default=0.07, help="Contrastive temperature")
    g.add_argument("--insgen_w_real", type=float, default=1.0, help="Weight of the real-image loss")
    g.add_argument("--insgen_w_fake", type=float, default=1.0, help="Weight of the fake-image loss")
    g.add_argument("--insgen_w_g", type=float, default=1.0, help="Weight of G's instance loss")
    g.add_argument("--insgen_momentum", type=float, default=0.999, help="Momentum of the key encoder")
    g.add_argument("--insgen_dim", type=int, default=128, help="Projection head output size")
    g.add_argument("--regan", action="store_true", default=False, help="Re-GAN prune-and-regrow of G")
    g.add_argument("--regan_sparsity", type=float, default=0.3, help="Fraction of G's weights pruned")
    g.add_argument("--regan_interval", type=int, default=100, help="Iterations per dense/sparse phase (g)")
    g.add_argument("--regan_warmup", type=int, default=0, help="Dense iterations before the first prune")


def _add_schedule_flags(p: argparse.ArgumentParser) -> None:
    g = _group(p, "schedule: length, checkpoints, tests", "schedule")
    g.add_argument("--num_epochs", type=int, default=100, help="Epochs to train (default: %(default)s)")
    g.add_argument("--num_iters", type=int, default=None, help="Stop after this many iterations")
    g.add_argument("--lr_decay_iters", type=int, default=0,
                   help="Decay G's and D's learning rates linearly over the last N of --num_iters "
                        "iterations (0 = constant, as BigGAN-PyTorch)")
    g.add_argument("--save_every", type=int, default=2000, help="Save every N iterations (default: %(default)s)")
    g.add_argument("--num_save_copies", type=int, default=2, help="Rotating checkpoint copies")
    g.add_argument("--num_best_copies", type=int, default=2, help="Best-so-far checkpoint copies")
    g.add_argument("--which_best", type=str, default="IS", choices=("IS", "FID"),
                   help="Metric that decides the best copies (default: %(default)s)")
    g.add_argument("--test_every", type=int, default=5000, help="Test every N iterations (default: %(default)s)")


def _add_metrics_flags(p: argparse.ArgumentParser) -> None:
    g = _group(p, "metrics (IS, FID, precision/recall/density/coverage)", "metrics")
    g.add_argument("--feature_net", type=str, default="inception_v3", choices=FEATURE_NETS,
                   help="Network for IS/FID/PRDC; efficientnet_lite0 is offline but NOT standard FID")
    g.add_argument("--feature_res", type=int, default=0,
                   help="Input size of the feature network; 0 = its own (299 for Inception). Lower is "
                        "faster but non-standard; the moments/manifold files record it")
    g.add_argument("--inception_weights", type=str, default="",
                   help="Explicit weights file for the feature network (else the torch hub cache)")
    g.add_argument("--num_inception_images", type=int, default=50000,
                   help="Samples for IS/FID (default: %(default)s)")
    g.add_argument("--num_pr_images", type=int, default=10000,
                   help="Real and fake samples for precision/recall/density/coverage (default: %(default)s)")
    g.add_argument("--prdc_k", type=int, default=5, help="K of precision/recall/density/coverage")
    g.add_argument("--no_fid", action="store_true", default=False, help="Skip FID when testing")
    g.add_argument("--no_prdc", action="store_true", default=False,
                   help="Skip precision/recall/density/coverage when testing")


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    g = _group(p, "the G that is sampled and tested", "sampling")
    g.add_argument("--use_ema", action="store_true", default=False, help="Sample/test with the EMA copy of G")
    g.add_argument("--G_eval_mode", action="store_true", default=False,
                   help="Put G in eval mode when sampling/testing")
    g.add_argument("--accumulate_stats", action="store_true", default=False,
                   help="Use standing statistics for G's BN when sampling/testing")
    g.add_argument("--num_standing_accumulations", type=int, default=16,
                   help="Forward passes used to accumulate standing stats (default: %(default)s)")


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    g = _group(p, "output folders and names", "output")
    g.add_argument("--base_root", type=str, default="", help="Prefix for all roots below")
    g.add_argument("--weights_root", type=str, default="weights", help="Checkpoints (default: %(default)s)")
    g.add_argument("--logs_root", type=str, default="logs", help="Logs (default: %(default)s)")
    g.add_argument("--samples_root", type=str, default="samples", help="Sample sheets (default: %(default)s)")
    g.add_argument("--experiment_name", type=str, default="", help="Override the generated experiment name")
    g.add_argument("--name_suffix", type=str, default="", help="Suffix of the experiment name")
    g.add_argument("--hashname", action="store_true", default=False,
                   help="Use a short hash of the config as the experiment name")
    g.add_argument("--config_from_name", action="store_true", default=False,
                   help="Accepted for BigGAN-PyTorch compatibility; sample.py always reads the run's config.json")
    g.add_argument("--resume", action="store_true", default=False, help="Resume the run of this experiment name")
    g.add_argument("--load_weights", type=str, default="",
                   help="Suffix of the weights to load: '' (latest), copyN, bestN")


def _add_logging_flags(p: argparse.ArgumentParser) -> None:
    g = _group(p, "logging", "logging")
    g.add_argument("--pbar", type=str, default="mine", choices=("mine", "tqdm", "none"),
                   help="Progress bar ('mine' and 'tqdm' both use tqdm)")
    g.add_argument("--log_every", type=int, default=50, help="Iterations between loss log lines")
    g.add_argument("--sv_log_interval", type=int, default=10, help="Iterations between SV logs")
    g.add_argument("--tensorboard", action="store_true", default=False,
                   help="Also write TensorBoard events (when tensorboard is installed)")
    g.add_argument("--logstyle", type=str, default="%3.3e",
                   help="Accepted for BigGAN-PyTorch compatibility; logs are JSON lines with full floats")
    g.add_argument("--log_G_spectra", action="store_true", default=False,
                   help="Accepted for compatibility; G's and D's singular values are always logged (sv.jsonl)")
    g.add_argument("--log_D_spectra", action="store_true", default=False,
                   help="Accepted for compatibility; see --log_G_spectra")


def _add_runtime_flags(p: argparse.ArgumentParser) -> None:
    g = _group(p, "runtime", "runtime")
    g.add_argument("--device", type=str, default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto = CUDA when present (default: %(default)s)")
    g.add_argument("--channels_last", action="store_true", default=False, help="channels_last memory format")
    g.add_argument("--compile", action="store_true", default=False, help="torch.compile G and D")
    g.add_argument("--parallel", action="store_true", default=False,
                   help="Use all visible GPUs from one process (prefer torchrun for DDP)")
    g.add_argument("--num_workers", type=int, default=DEFAULT_WORKERS,
                   help="DataLoader workers (default: 8, or this machine's cores if fewer: %(default)s)")
    g.add_argument("--no_pin_memory", action="store_false", dest="pin_memory", default=True,
                   help="Do not pin DataLoader memory (it is only ever pinned on CUDA)")
    g.add_argument("--load_in_mem", action="store_true", default=False,
                   help="Load the whole HDF5 file into RAM")
    g.add_argument("--selection_batch_size", type=int, default=128, help="Batch size for embedding")
    g.add_argument("--selection_cache_dir", type=str, default="",
                   help="Where embeddings/indices are cached (default: instance_selection/ beside the data: in data_root, or in <data_root>.derived for an image folder or HDF5 file)")
    g.add_argument("--skip_nonfinite", action="store_true", default=False,
                   help="Skip a step whose loss is NaN/inf instead of stopping the run")


def prepare_parser() -> argparse.ArgumentParser:
    """The training parser: every BigGAN-PyTorch flag plus instance selection and new flags."""
    parser = argparse.ArgumentParser(
        description="Train a BigGAN with instance selection (flags of BigGAN-PyTorch and the paper).",
        allow_abbrev=False)
    for add in (_add_data_flags, _add_selection_flags, _add_architecture_flags, _add_training_flags,
                _add_mode_flags, _add_schedule_flags, _add_metrics_flags, _add_sampling_flags,
                _add_output_flags, _add_logging_flags, _add_runtime_flags):
        add(parser)
    return parser


def flag_defaults() -> dict[str, Any]:
    """Every flag of train.py and sample.py with its default value."""
    return vars(add_sample_parser(prepare_parser()).parse_args([]))


def flag_roles() -> dict[str, str]:
    """The role (a ROLES key) of every flag of train.py and sample.py, by config key."""
    parser = add_sample_parser(prepare_parser())
    return {action.dest: group.role for group in parser._action_groups if hasattr(group, "role")
            for action in group._group_actions}


def flags_with(*roles: str) -> frozenset[str]:
    """Config keys of the flags whose role is one of `roles`."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise KeyError(f"unknown flag roles {sorted(unknown)}; roles are {list(ROLES)}")
    return frozenset(key for key, role in flag_roles().items() if role in roles)


def focus_parser(parser: argparse.ArgumentParser, description: str,
                 shown: set[str] | frozenset[str]) -> argparse.ArgumentParser:
    """Give a script built on the training parser its own --help: its description, and only
    the flags it uses (`shown`). The other flags are still accepted (a run's config can hold
    them) but hidden from --help."""
    parser.description = description
    for action in parser._actions:
        if action.option_strings and action.dest != "help" and action.dest not in shown:
            action.help = argparse.SUPPRESS
    return parser


def add_sample_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add sample.py's flags (BigGAN-PyTorch's names) to `parser`."""
    g = _group(parser, "sampling", "sampling")
    g.add_argument("--seeds", type=str, default="",
                   help="Write one PNG per seed to --outdir, e.g. 0-99 or 1,5,9 (the same seed always "
                        "gives the same image; G runs in eval mode)")
    g.add_argument("--classes", type=str, default="",
                   help="Classes for --seeds, e.g. 0-9 or 3: one PNG per seed and class (same z); "
                        "default: one class drawn from each seed")
    g.add_argument("--truncation", type=float, default=0.0,
                   help="Truncation threshold of z for every output: sheets, npz, PNGs and metrics "
                        "(0 = none) (default: %(default)s)")
    g.add_argument("--outdir", type=str, default="",
                   help="Folder of the --seeds PNGs (default: <samples_root>/<experiment>/generated<tag>)")
    g.add_argument("--sample_npz", action="store_true", default=False, help="Write samples to an npz file")
    g.add_argument("--sample_num_npz", type=int, default=50000, help="Samples in the npz (default: %(default)s)")
    g.add_argument("--sample_sheets", action="store_true", default=False, help="Write per-class sample sheets")
    g.add_argument("--sample_interps", action="store_true", default=False, help="Write interpolation sheets")
    g.add_argument("--sample_sheet_folder_num", type=int, default=-1, help="Folder number for the sheets")
    g.add_argument("--sample_random", action="store_true", default=False, help="Write a random sample sheet")
    g.add_argument("--sample_trunc_curves", type=str, default="",
                   help="Truncation sweep 'start_step_end', e.g. 0.05_0.05_1.0 (IS/FID/PRDC per value)")
    g.add_argument("--sample_inception_metrics", action="store_true", default=False,
                   help="Compute IS/FID/PRDC of the loaded G")
    return parser


def attn_resolutions(spec: str) -> list[int]:
    """Parse an attention spec such as '64' or '32_64' ('0' = none)."""
    try:
        values = [int(item) for item in str(spec).split("_") if item]
    except ValueError:
        raise ValueError(f"attention spec {spec!r} must be resolutions joined by '_', e.g. '64' or '32_64'")
    return [v for v in values if v > 0]


def ch_mults(spec: str, flag: str) -> list[int]:
    """Parse a width spec such as '4_4_4_2' ('' = the architecture's own widths)."""
    try:
        values = [int(item) for item in str(spec).split("_") if item]
    except ValueError:
        values = []
    if str(spec) and (not values or min(values) < 1):
        raise ValueError(f"{flag} {spec!r} must be positive integers joined by '_', e.g. 4_4_4_2")
    return values


def _fmt(value: float) -> str:
    return "%2.1e" % value


def name_from_config(config: dict[str, Any]) -> str:
    """Deterministic, readable experiment name (BigGAN-PyTorch's scheme plus selection/modes)."""
    c = config
    parts = [
        "Big%s" % c["which_train_fn"], c["dataset"],
        c["model"] if c["model"] != "BigGAN" else None,
        "seed%d" % c["seed"], "Gch%d" % c["G_ch"], "Dch%d" % c["D_ch"],
        "Gm" + c["G_ch_mults"].replace("_", "-") if c.get("G_ch_mults") else None,
        "Dm" + c["D_ch_mults"].replace("_", "-") if c.get("D_ch_mults") else None,
        "Dmbstd%d" % c["D_mbstd_group"] if c.get("D_mbstd_group") else None,
        "Gd%d" % c["G_depth"] if c["G_depth"] > 1 else None,
        "Dd%d" % c["D_depth"] if c["D_depth"] > 1 else None,
        "bs%d" % c["batch_size"],
        "Gfp16" if c["G_fp16"] else None, "Dfp16" if c["D_fp16"] else None,
        "nDs%d" % c["num_D_steps"] if c["num_D_steps"] > 1 else None,
        "nDa%d" % c["num_D_accumulations"] if c["num_D_accumulations"] > 1 else None,
        "nGa%d" % c["num_G_accumulations"] if c["num_G_accumulations"] > 1 else None,
        "Glr" + _fmt(c["G_lr"]), "Dlr" + _fmt(c["D_lr"]),
        "GB%3.3f" % c["G_B1"] if c["G_B1"] != 0.0 else None,
        "GBB%3.3f" % c["G_B2"] if c["G_B2"] != 0.999 else None,
        "DB%3.3f" % c["D_B1"] if c["D_B1"] != 0.0 else None,
        "DBB%3.3f" % c["D_B2"] if c["D_B2"] != 0.999 else None,
        "Gnl%s" % c["G_nl"], "Dnl%s" % c["D_nl"],
        "loss%s" % c["loss"] if c.get("loss", "hinge") != "hinge" else None,
        "Ginit%s" % c["G_init"], "Dinit%s" % c["D_init"],
        "G%s" % c["G_param"] if c["G_param"] != "SN" else None,
        "D%s" % c["D_param"] if c["D_param"] != "SN" else None,
        "Gattn%s" % c["G_attn"] if c["G_attn"] != "0" else None,
        "Dattn%s" % c["D_attn"] if c["D_attn"] != "0" else None,
        "Gortho" + _fmt(c["G_ortho"]) if c["G_ortho"] > 0.0 else None,
        "Dortho" + _fmt(c["D_ortho"]) if c["D_ortho"] > 0.0 else None,
        c["norm_style"] if c["norm_style"] != "bn" else None,
        "cr" if c["cross_replica"] else None,
        "Gshared" if c["G_shared"] else None,
        "hier" if c["hier"] else None,
        "ema" if c["ema"] else None,
    ]
    if c.get("retention_ratio", 100) < 100:
        parts.append("rr%g_%s_%s" % (c["retention_ratio"], c["embedding"], c["density_measure"]))
    if c.get("diffaug"):
        parts.append("DiffAug-" + c["diffaug"].replace(",", "-"))
    if c.get("insgen"):
        parts.append("insgen")
    if c.get("regan"):
        parts.append("regan%g" % c["regan_sparsity"])
    if c.get("name_suffix"):
        parts.append(c["name_suffix"])
    name = "_".join(p for p in parts if p is not None)
    if c.get("hashname"):
        # A stable hash (Python's hash() is salted per process, so BigGAN-PyTorch's animal
        # names changed between runs; this one does not).
        return "exp_" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return name


def config_to_json(config: dict[str, Any]) -> str:
    """Serialise a config dict (sorted keys) for the JSON beside the checkpoints."""
    return json.dumps(config, indent=2, sort_keys=True, default=str) + "\n"
