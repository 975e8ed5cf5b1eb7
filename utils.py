"""Entry-point helpers shared by every script: the parser (from config.py), errors that
exit cleanly and devices (from cli.py), seeding, folders, and the data loaders (from loaders.py).

BigGAN-PyTorch kept all of this in one 1,200-line utils.py; here each topic has its own
module and this file keeps BigGAN-PyTorch's names importable.
"""
from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from cli import UserError, fail, resolve_device, run_cli
from config import (add_sample_parser, attn_resolutions, config_to_json, flag_defaults, flags_with,
                    focus_parser, name_from_config, prepare_parser)
from config_rules import check_stored_types, explicit_flags, resume_config, validate_config

__all__ = ["UserError", "fail", "prepare_parser", "add_sample_parser", "name_from_config",
           "validate_config", "attn_resolutions", "config_to_json", "check_stored_types", "explicit_flags",
           "resume_config", "focus_parser", "flag_defaults", "flags_with",
           "seed_rng", "resolve_device", "prepare_root", "experiment_name", "get_data_loaders", "run_cli"]


def seed_rng(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


OUTPUT_ROOTS = ("weights_root", "logs_root", "samples_root")


def output_roots(config: dict[str, Any]) -> dict[str, str]:
    """The output roots as `prepare_root` will set them (each prefixed with --base_root)."""
    base = config.get("base_root")
    return {key: os.path.join(base, config[key]) if base else config[key] for key in OUTPUT_ROOTS}


def prepare_root(config: dict[str, Any]) -> None:
    """Prefix every root with --base_root and create the output folders."""
    for key, root in output_roots(config).items():
        config[key] = root
        try:
            os.makedirs(config[key], exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create --{key} {config[key]} ({os.strerror(err.errno)}); point "
                            f"--base_root or --{key} at a writable folder") from None
    if config.get("base_root") and not os.path.isabs(config["data_root"]):
        config["data_root"] = os.path.join(config["base_root"], config["data_root"])


def experiment_name(config: dict[str, Any]) -> str:
    """--experiment_name if given, else the deterministic name derived from the config."""
    return config.get("experiment_name") or name_from_config(config)


# Keywords of BigGAN-PyTorch's get_data_loaders that are not flags (`hdf5` is implied by the
# dataset key, training loaders always drop the last incomplete batch).
_LOADER_KEYWORDS = ("start_itr", "hdf5", "drop_last")


def get_data_loaders(config: dict[str, Any] | None = None, **kwargs):
    """BigGAN-PyTorch's `utils.get_data_loaders` (the implementation lives in loaders.py).

    Two forms: `get_data_loaders(config, start_itr=..., batch_size=..., train=..., dataset=...)`,
    and BigGAN-PyTorch's keyword form `get_data_loaders(**{**config, 'batch_size': B,
    'start_itr': itr})`, where `batch_size` is the loader batch (BigGAN-PyTorch's D_batch_size)
    and missing flags take their defaults. A keyword that is neither a flag nor one of
    BigGAN-PyTorch's loader keywords is a TypeError.
    """
    from loaders import get_data_loaders as _get_data_loaders
    if config is not None:
        return _get_data_loaders(config, **kwargs)
    defaults = flag_defaults()
    unknown = sorted(k for k in kwargs if k not in defaults and k not in _LOADER_KEYWORDS
                     and k not in ("n_classes", "G_activation", "D_activation"))
    if unknown:
        raise TypeError(f"get_data_loaders() got unexpected keyword argument(s) {unknown}")
    config = {**defaults, **{k: v for k, v in kwargs.items() if k not in _LOADER_KEYWORDS}}
    return _get_data_loaders(config, start_itr=int(kwargs.get("start_itr", 0)),
                             batch_size=kwargs.get("batch_size"))
