"""Sample from a trained generator: sheets, interpolations, an npz of samples, metrics and
truncation sweeps (BigGAN-PyTorch's sample.py, rebuilt from the run's saved config).

    python sample.py --experiment_name NAME --sample_random --sample_sheets --sample_interps
    python sample.py --experiment_name NAME --use_ema --load_weights best0 --sample_npz
    python sample.py --experiment_name NAME --sample_inception_metrics --sample_trunc_curves 0.25_0.25_1.0
    python sample.py --experiment_name NAME --use_ema --seeds 0-99 --classes 3 --truncation 0.5 --outdir out/

The architecture comes from `weights/<experiment>/config.json` (or the config stored in
`state_dict.pth`), so it need not be retyped; the flags on the command line that concern
sampling (the sample_* flags, --load_weights, --use_ema, --G_eval_mode, batch sizes, roots,
device, metrics settings, ...) override it. An architecture flag given on the command line
that disagrees with the stored config is an error. Metrics are always computed against the
ORIGINAL dataset's moments and manifold, also for runs trained on a selected subset.
Outputs go to `<samples_root>/<experiment>/`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import BigGAN
import checkpoints
import datasets
import distributed as dist_utils
import metric_specs
import sampling
import utils
from io_utils import atomic_path, atomic_write_json
from training_utils import accumulate_standing_stats

# Flags whose command-line value always wins over the stored run config: how G is sampled and
# scored, where the results go, how the work runs, and how G's noise is drawn.
SAMPLE_KEYS = utils.flags_with("sampling", "metrics", "output", "logging", "runtime") | {
    "z_var", "batch_size", "G_batch_size", "seed", "amp", "skip_init", "data_root"}
# Sampling flags for which the run's own value beats the parser default when not typed:
# a run trained with --data_root X --feature_net Y is evaluated with X and Y. Output roots are
# never taken from the run: a copied or moved run is sampled into the roots given now.
RUN_DEFAULT_KEYS = utils.flags_with("metrics") | {"data_root"}
# Flags that define G and D: given on the command line, they must agree with the stored config.
ARCH_KEYS = utils.flags_with("architecture") | {"dataset", "resolution"}


def prepare_parser() -> argparse.ArgumentParser:
    """The training parser plus the sampling flags (BigGAN-PyTorch's names); --help shows the
    sampling flags only (the rest is read from the run)."""
    return utils.focus_parser(utils.add_sample_parser(utils.prepare_parser()),
                              " ".join(__doc__.split("\n\n")[0].split()),
                              SAMPLE_KEYS - (utils.flags_with("logging") - {"pbar"}))


def explicit_flags(argv: list[str] | None) -> set[str]:
    """Config keys the user actually typed."""
    return utils.explicit_flags(prepare_parser(), argv)


def _same(key: str, a: Any, b: Any) -> bool:
    if key == "G_nl":  # inplace_relu and relu are the same function
        a, b = (str(v).replace("inplace_", "") for v in (a, b))
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and float(a) == float(b)
    return str(a) == str(b)


def read_run_config(folder: Path, state: dict) -> tuple[dict, str]:
    """The stored config of a run: `config.json`, else the `config` entry of state_dict.pth."""
    path = folder / "config.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); restore it from the run or "
                             f"delete it to use the config inside state_dict.pth") from None
        if not isinstance(stored, dict):
            raise ValueError(f"{path} does not hold a config object; restore it from the run or "
                             f"delete it to use the config inside state_dict.pth")
        utils.check_stored_types(stored, str(path))
        return stored, str(path)
    if isinstance(state.get("config"), dict):
        utils.check_stored_types(state["config"], str(folder / "state_dict.pth"))
        return dict(state["config"]), str(folder / "state_dict.pth")
    raise FileNotFoundError(f"no config.json in {folder} and no config inside state_dict.pth; "
                            f"put the run's config.json beside the weights")


def merge_config(cli: dict, stored: dict, explicit: set[str], source: str) -> dict:
    """Stored run config, overridden by the sampling flags of the command line (for the
    RUN_DEFAULT_KEYS only when typed).

    Raises ValueError when an explicitly given architecture flag differs from the run's.
    """
    for key in sorted(ARCH_KEYS):
        if key in explicit and key in stored and not _same(key, cli[key], stored[key]):
            raise ValueError(f"--{key} {cli[key]} differs from the trained model's {stored[key]!r} "
                             f"(in {source}); drop --{key}: the architecture is read from the run")
    config = dict(cli)
    config.update({k: v for k, v in stored.items() if k not in SAMPLE_KEYS})
    config.update({k: stored[k] for k in RUN_DEFAULT_KEYS if k in stored and k not in explicit})
    info = datasets.dataset_info(config["dataset"])
    config["resolution"] = config.get("resolution") or info.image_size
    config["n_classes"] = config.get("n_classes") or info.n_classes
    if not config["resolution"] or not config["n_classes"]:
        raise ValueError(f"{source} has no resolution/n_classes for dataset "
                         f"{config['dataset']!r}; add them to the config JSON")
    return config


def checkpoint_folder(config: dict) -> tuple[Path, str | None]:
    """The run's weights folder and the --load_weights suffix (None = latest; validate_config checked it)."""
    suffix = config["load_weights"] or None
    folder = Path(config["weights_root"]) / utils.experiment_name(config)
    target = folder / checkpoints.file_name("state_dict", suffix)
    if not target.exists():
        found = [s or "''" for s in checkpoints.list_suffixes(folder)] if folder.is_dir() else []
        hint = (f"available --load_weights: {', '.join(found)}" if found else
                "train it first (train.py with the same flags) or pass --experiment_name "
                "of a trained run (and --weights_root/--base_root if it lives elsewhere)")
        raise FileNotFoundError(f"no checkpoint {target}; {hint}")
    return folder, suffix


def load_generator(config: dict, folder: Path, suffix: str | None, source: str,
                   device: torch.device) -> torch.nn.Module:
    """Build G from the config and load G.pth (or G_ema.pth with --use_ema) into it."""
    item = "G_ema" if config["use_ema"] else "G"
    path = folder / checkpoints.file_name(item, suffix)
    if not path.exists():
        extra = "; the run was trained without --ema, drop --use_ema" if item == "G_ema" else ""
        raise FileNotFoundError(f"{path} is missing{extra}")
    module = BigGAN.model_module(config["model"])
    G = module.Generator(**BigGAN.model_kwargs(module, {**config, "skip_init": True}, "G"))
    weights = checkpoints.load_item(folder, item, suffix)
    if not isinstance(weights, dict):
        raise ValueError(f"{path} does not hold a state dict")
    own = G.state_dict()
    problems = [f"missing {k}" for k in own if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in own]
    problems += [f"{k} is {tuple(weights[k].shape)} in the file but {tuple(own[k].shape)} in the "
                 f"model" for k in own if k in weights and weights[k].shape != own[k].shape]
    if problems:
        raise ValueError(f"{path} does not match the architecture in {source} ({len(problems)} "
                         f"differences, first: {problems[0]}); check that the config belongs "
                         f"to these weights")
    G.load_state_dict(weights)
    if not checkpoints.is_complete(folder, suffix):
        dist_utils.print0(f"warning: checkpoint files in {folder} (suffix {suffix or 'none'}) come from "
              f"different saves; the state_dict hashes do not match", flush=True)
    return BigGAN.apply_speed_flags(G.to(device), config, device)


def output_tag(config: dict) -> str:
    """'' for the latest G, else e.g. '_ema_best0': keeps outputs of different weights apart."""
    parts = ["ema"] if config["use_ema"] else []
    if config["load_weights"]:
        parts.append(config["load_weights"])
    return "".join("_" + p for p in parts)


def metrics_function(config: dict):
    """IS/FID/PRDC against the ORIGINAL dataset: a run trained on a selected subset is scored
    against the statistics of all of its data (retention ratio forced to 100)."""
    import inception_utils
    return inception_utils.prepare_inception_metrics({**config, "retention_ratio": 100})


def plot_trunc_curves(entries: list[dict], path: Path, title: str) -> None:
    """One panel per metric against the truncation value, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [m.key for m in metric_specs.TRAINING_METRICS if any(e.get(m.key) is not None for e in entries)]
    cols = min(3, max(1, len(keys)))
    rows = -(-max(1, len(keys)) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    xs = [e["truncation"] for e in entries]
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        ax.plot(xs, [np.nan if e.get(key) is None else e[key] for e in entries], marker="o")
        ax.set_xlabel("truncation")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _clean(value: Any) -> Any:
    value = float(value)
    return value if np.isfinite(value) else None


def run(config: dict, explicit: set[str]) -> dict[str, Any]:
    """Do everything the sample flags ask for; returns {output name: path or metrics}."""
    if not any(config[k] for k in ("seeds", "sample_npz", "sample_sheets", "sample_interps", "sample_random",
                                   "sample_inception_metrics", "sample_trunc_curves")):
        raise utils.UserError("nothing to do: pass at least one of --seeds, --sample_random, --sample_sheets, "
                              "--sample_interps, --sample_npz, --sample_inception_metrics, "
                              "--sample_trunc_curves start_step_end")
    utils.validate_config(config)
    seeds = sampling.parse_int_list(config["seeds"], "--seeds") if config["seeds"] else []
    classes = sampling.parse_int_list(config["classes"], "--classes") if config["classes"] else None
    if classes is not None and not seeds:
        raise utils.UserError("--classes picks the classes of --seeds; pass --seeds too (e.g. --seeds 0-9)")
    trunc_values = sampling.parse_trunc_curves(config["sample_trunc_curves"]) \
        if config["sample_trunc_curves"] else []
    utils.prepare_root(config)
    folder, suffix = checkpoint_folder(config)
    state = checkpoints.load_state_dict_file(folder, suffix)
    stored, source = read_run_config(folder, state)
    config = merge_config(config, stored, explicit, source)
    experiment = folder.name

    device = utils.resolve_device(config["device"])
    dist_utils.init_distributed(device)
    main = dist_utils.is_main_process()
    utils.seed_rng(config["seed"] + dist_utils.rank())
    G = load_generator(config, folder, suffix, source, device)
    itr = int(state.get("itr", 0))
    batch = max(config["G_batch_size"], config["batch_size"])
    use_amp = config.get("amp", "none") != "none" and device.type == "cuda"
    autocast = (lambda: BigGAN.autocast_context(config, device)) if use_amp else None
    if classes is not None and max(classes) >= config["n_classes"]:
        raise utils.UserError(f"--classes {config['classes']}: the model has {config['n_classes']} "
                              f"classes (0-{config['n_classes'] - 1})")
    sampler = sampling.ZYSampler(batch, G.dim_z, config["n_classes"], device, config["z_var"],
                                 config["truncation"])
    sample_fn = sampling.make_sample_fn(G, sampler, autocast)
    if config["G_eval_mode"]:
        G.eval()
    else:
        G.train()
    if config["accumulate_stats"]:
        accumulate_standing_stats(G, sampler, config["num_standing_accumulations"])

    out = Path(config["samples_root"]) / experiment
    tag = output_tag(config)
    folder_num = config["sample_sheet_folder_num"]
    sheet_dir = out / (str(folder_num) if folder_num >= 0 else f"sample_itr{itr}{tag}")
    done: dict[str, Any] = {}
    dist_utils.print0(f"Loaded {'G_ema' if config['use_ema'] else 'G'} of {experiment} "
                      f"(itr {itr}, weights '{suffix or 'latest'}') on {device}")

    if config["sample_npz"]:
        path = out / f"samples{tag}.npz"
        chunks = sampling.sample_chunks(sample_fn, config["sample_num_npz"], progress=main)
        if main:
            done["npz"] = sampling.write_npz_chunks(path, chunks, config["sample_num_npz"])
        else:
            for _ in chunks:
                pass
    draw = dict(z_var=config["z_var"], truncation=config["truncation"], autocast=autocast)
    if main and config["sample_sheets"]:
        per_sheet = datasets.classes_per_sheet(config["dataset"], config["n_classes"])
        done["sheets"] = sampling.class_sheets(G, sheet_dir, config["n_classes"], per_sheet,
                                               G.dim_z, device, class_names=config.get("class_names"), **draw)
    if main and config["sample_interps"]:
        done["interps"] = sampling.interp_sheets(G, sheet_dir, config["n_classes"], G.dim_z,
                                                 device, batch_size=batch, **draw)
    if main and config["sample_random"]:
        done["random"] = sampling.random_sheet(G, out / f"random_samples{tag}.png", batch, G.dim_z,
                                               config["n_classes"], device, batch_size=batch, **draw)

    if seeds and main:
        G.eval()  # running (or standing) statistics: an image never depends on its batch
        folder = Path(config["outdir"]) if config["outdir"] else out / f"generated{tag}"
        done["pngs"] = sampling.generate_pngs(G, folder, seeds, classes, config["n_classes"], device,
                                              batch_size=batch, **draw)
        G.train(not config["G_eval_mode"])

    if config["sample_inception_metrics"] or trunc_values:
        get_metrics = metrics_function(config)
        from backbones import input_resolution

        def measure() -> dict[str, Any]:
            raw = get_metrics(sample_fn, config["num_inception_images"])
            return {k: _clean(v) for k, v in raw.items()}

        # Every choice that moves the scores goes into the record: how G drew the samples (BN
        # statistics of which batch, the noise's std and truncation, the seed) and how they were scored.
        header = {"experiment": experiment, "itr": itr, "weights": suffix or "latest",
                  "use_ema": config["use_ema"], "G_eval_mode": config["G_eval_mode"],
                  "accumulate_stats": config["accumulate_stats"],
                  "num_standing_accumulations": (config["num_standing_accumulations"]
                                                 if config["accumulate_stats"] else 0),
                  "batch_size": batch, "z_var": config["z_var"], "seed": config["seed"],
                  "feature_net": config["feature_net"],
                  "feature_res": input_resolution(config["feature_net"], config["feature_res"]),
                  "dataset": config["dataset"], "num_images": config["num_inception_images"],
                  "num_pr_images": config["num_pr_images"], "prdc_k": config["prdc_k"],
                  "truncation": config["truncation"]}
        if config["sample_inception_metrics"]:
            sampler.truncation = config["truncation"]
            start = time.time()
            metrics = measure()
            record = {**header, **metrics, "seconds": round(time.time() - start, 1)}
            if main:
                atomic_write_json(out / f"metrics{tag}.json", record)
            done["metrics"] = record
            dist_utils.print0("Metrics: " + ", ".join(
                f"{k} {'-' if metrics[k] is None else format(metrics[k], '.4g')}" for k in metric_specs.result_keys()
                if k in metrics))
        if trunc_values:
            entries = []
            for value in tqdm(trunc_values, desc="truncation", disable=not main):
                sampler.truncation = value
                if config["accumulate_stats"]:
                    accumulate_standing_stats(G, sampler, config["num_standing_accumulations"])
                entries.append({"truncation": value, **measure()})
                if main:  # rewritten after every value so a long sweep keeps what it measured
                    atomic_write_json(out / f"trunc_curves{tag}.json", {**header, "curve": entries})
            if main:
                plot_trunc_curves(entries, out / f"trunc_curves{tag}.png", f"{experiment} {tag}")
            done["trunc_curves"] = out / f"trunc_curves{tag}.json"
    dist_utils.barrier()
    for name, value in done.items():
        if isinstance(value, (list, Path)):
            dist_utils.print0(f"{name}: {value[0].parent if isinstance(value, list) else value}")
    return done


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run; bad input exits with a one-line error."""
    config = vars(prepare_parser().parse_args(argv))
    run(config, explicit_flags(argv))


if __name__ == "__main__":
    utils.run_cli(main)
