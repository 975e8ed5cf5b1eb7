"""What the parser cannot say about a config: the valid range of every numeric flag, names
that become paths, cross-flag rules (`validate_config`), and which flags a resumed run may
change (`resume_config`). `utils.py` re-exports the public functions.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import re
from typing import Any

from config import add_sample_parser, attn_resolutions, ch_mults, flag_defaults, flags_with, prepare_parser


# ----------------------------------------------------------------------------- resume
# Flags a resumed run may change: how long, how often, where, how fast and how it is measured
# (every flag of those roles), plus the learning rates (applied to the restored optimizers and
# recorded), the precision, and two paths that may move with the files. Every other flag defines
# the experiment (data, selection, architecture, batch, losses, seed) and a resume that changes
# one is refused. The output flags are always the ones given now.
def resume_changeable() -> frozenset[str]:
    """Config keys a resumed run may change (see above)."""
    return flags_with("schedule", "metrics", "sampling", "output", "logging", "runtime") | {
        "G_lr", "D_lr", "amp", "G_fp16", "D_fp16", "G_mixed_precision", "D_mixed_precision",
        "data_root", "embedding_weights"}


def check_stored_types(stored: dict[str, Any], source: str) -> None:
    """Refuse a stored config (config.json, a checkpoint's config) whose values do not have
    their flags' types (e.g. "G_ch": "eight"), naming the file and the key."""
    parser = add_sample_parser(prepare_parser())
    for action in parser._actions:
        if action.dest not in stored or stored[action.dest] is None:
            continue
        value = stored[action.dest]
        if isinstance(action.default, bool) or action.nargs == 0:
            ok, want = isinstance(value, bool), "true/false"
        elif action.type is int:
            ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif action.type is float:
            ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        else:
            ok, want = isinstance(value, str), "a string"
        if ok and action.choices is not None and value not in action.choices:
            ok, want = False, f"one of {list(action.choices)}"
        if not ok:
            raise ValueError(f"{source}: {action.dest} is {value!r}, expected {want}; restore the "
                             f"file from the run (or from state_dict.pth's config)")


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """Config keys the user actually typed (argv parsed again with every default suppressed)."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:  # argparse has no public way to tell typed from default
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def resume_config(config: dict[str, Any], stored: dict[str, Any], explicit: set[str] | None,
                  source: str) -> tuple[dict[str, Any], list[str]]:
    """The config of a resumed run: the run's stored config, with the flags typed now on top.

    `explicit` holds the flags typed now (None: those that differ from the parser defaults).
    Returns (config, changed flags). Raises ValueError naming every typed flag that would change
    the experiment (see resume_changeable), so a resume never mixes settings silently.
    """
    check_stored_types(stored, source)
    defaults = flag_defaults()
    if explicit is None:
        explicit = {k for k in defaults if k in config and config[k] != defaults[k]}
    always_now, changeable = flags_with("output"), resume_changeable()
    differs = [k for k in sorted(explicit) if k in stored and k not in always_now
               and str(config[k]) != str(stored[k])]
    refused = [k for k in differs if k not in changeable]
    if refused:
        shown = {"": "''"}  # an empty value (e.g. the default --D_ch_mults) stays visible
        listed = ", ".join(f"--{k} {shown.get(config[k], config[k])} (run: {shown.get(stored[k], stored[k])})"
                           for k in refused)
        raise ValueError(f"--resume would change the experiment: {listed} (in {source}); drop "
                         f"{'these flags' if len(refused) > 1 else 'the flag'} to continue the run "
                         f"as it was, or start a new --experiment_name")
    merged = dict(config)
    merged.update({k: v for k, v in stored.items()
                   if k in defaults and k not in explicit and k not in always_now})
    return merged, [k for k in differs if k in changeable]


CHECKPOINT_SUFFIX = re.compile(r"^(copy|best)\d+$")


def check_name(value: str, flag: str) -> None:
    """Refuse a name that becomes a folder or file name but would leave its root
    ('..', an absolute path, a path separator, a NUL byte)."""
    if value in (".", "..") or any(c in value for c in "/\\\0") or os.path.isabs(value):
        raise ValueError(f"--{flag} {value!r} must be a plain name (no '/', '\\', '..' or absolute "
                         f"path): it names a folder under --base_root; e.g. --{flag} my_run")


# Valid range of every numeric flag: (low, high, low included, high included); None = unbounded.
_POSITIVE, _NON_NEGATIVE = (1, None, True, False), (0, None, True, False)
RANGES: dict[str, tuple] = {
    **dict.fromkeys(("batch_size", "num_D_steps", "num_D_accumulations", "num_G_accumulations",
                     "save_every", "test_every", "dim_z", "G_ch", "D_ch", "num_epochs", "num_iters",
                     "log_every", "G_depth", "D_depth", "num_G_SVs", "num_D_SVs", "num_G_SV_itrs",
                     "num_D_SV_itrs", "num_inception_images", "num_pr_images", "prdc_k",
                     "num_standing_accumulations", "selection_batch_size", "nn_k", "insgen_dim",
                     "regan_interval", "sample_num_npz"), _POSITIVE),
    "D_mbstd_group": (0, None, True, False),
    **dict.fromkeys(("num_workers", "G_batch_size", "shared_dim", "num_save_copies", "num_best_copies",
                     "ema_start", "sv_log_interval", "resolution", "embedding_res", "feature_res",
                     "insgen_real_queue", "insgen_fake_queue", "regan_warmup", "seed", "selection_seed",
                     "lr_decay_iters"),
                    _NON_NEGATIVE),
    **dict.fromkeys(("G_lr", "D_lr", "z_var", "adam_eps", "BN_eps", "SN_eps", "insgen_temperature"),
                    (0, None, False, False)),
    **dict.fromkeys(("G_B1", "D_B1", "G_B2", "D_B2", "regan_sparsity"), (0, 1, True, False)),
    **dict.fromkeys(("G_ortho", "D_ortho", "insgen_w_real", "insgen_w_fake", "insgen_w_g"),
                    (0, None, True, False)),
    "truncation": (0, None, True, False),
    "ema_decay": (0, 1, False, True),
    "insgen_momentum": (0, 1, True, True),
    "retention_ratio": (0, 100, False, True),
    "sample_sheet_folder_num": (-1, None, True, False),
}


def _range_text(low, high, low_in: bool, high_in: bool) -> str:
    if (low, high, low_in) == (1, None, True):
        return "positive"
    if high is None:
        return f"{'>=' if low_in else '>'} {low}"
    return f"in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"


def check_range(key: str, value: Any) -> None:
    """Raise ValueError naming --key when `value` is outside RANGES[key] (NaN and inf included)."""
    low, high, low_in, high_in = RANGES[key]
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value >= low if low_in else value > low)
          and (high is None or (value <= high if high_in else value < high)))
    if not ok:
        raise ValueError(f"--{key} must be {_range_text(low, high, low_in, high_in)}, got {value}")


def validate_config(config: dict[str, Any]) -> None:
    """Check what the parser cannot express (every numeric range, names that become paths,
    attention specs) before any work; raise ValueError naming the flag."""
    for key in ("experiment_name", "name_suffix"):
        if config.get(key):
            check_name(str(config[key]), key)
    if config.get("load_weights") and not CHECKPOINT_SUFFIX.match(str(config["load_weights"])):
        raise ValueError(f"--load_weights {config['load_weights']!r} must be '' (latest), copyN or bestN")
    for key in RANGES:
        if config.get(key) is not None:
            check_range(key, config[key])
    for key in ("G_attn", "D_attn"):
        if key in config:
            attn_resolutions(config[key])
    for key in ("G_ch_mults", "D_ch_mults"):
        if config.get(key):
            ch_mults(config[key], f"--{key}")
            if config.get("model", "BigGAN") != "BigGAN":
                raise ValueError(f"--{key} applies to --model BigGAN only (BigGAN-deep keeps its own widths)")
    if config.get("D_mbstd_group"):
        _check_mbstd(config)
    if config.get("lr_decay_iters") and not 0 < config["lr_decay_iters"] <= (config.get("num_iters") or 0):
        raise ValueError(f"--lr_decay_iters {config['lr_decay_iters']} needs --num_iters of at least as many "
                         f"iterations (the decay ends at --num_iters)")


def _check_mbstd(config: dict[str, Any]) -> None:
    """--D_mbstd_group: BigGAN's D only, a group of at least 2, and batches that fill whole groups
    (D's batch is [fakes; reals], so a partial group would mix the two)."""
    group = config["D_mbstd_group"]
    if config.get("model", "BigGAN") != "BigGAN":
        raise ValueError("--D_mbstd_group applies to --model BigGAN only")
    if group < 2:
        raise ValueError(f"--D_mbstd_group must be 0 (off) or at least 2, got {group}")
    for key in ("batch_size", "G_batch_size"):
        if config.get(key) and config[key] % group:
            raise ValueError(f"--{key} {config[key]} is not a multiple of --D_mbstd_group {group}")
