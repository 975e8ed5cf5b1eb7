"""Train a BigGAN (with instance selection when --retention_ratio < 100).

    python train.py --dataset FMNIST32 --batch_size 64 --num_iters 2000 ...   # one process
    torchrun --nproc_per_node=8 train.py ...                                  # DDP, 8 GPUs
    python train.py ... --resume                                              # continue a run

The loop below is BigGAN-PyTorch's train.py: build everything from the config, then for
every loader batch run one iteration (train_fns), log, test every `test_every` and save
every `save_every` iterations. Checkpoints are crash-proof and a resumed run continues
bit for bit (RNG states and the data position are saved with the weights).
"""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
from tqdm import tqdm

import BigGAN
import checkpoints
import datasets
import distributed as dist_utils
import loaders
import sync_batchnorm
import train_fns
import training_modes
import utils
from io_utils import atomic_write_json
from resume import Resume
from training_utils import (EMA, MetricsLog, NoiseSampler, TrainLog, build_optimizer, get_SVs,
                            tune_cpu_allocator)


class Preempted(Exception):
    """Training stopped on SIGTERM/SIGUSR1/SIGUSR2 after checkpointing; exit with `exit_code`."""

    def __init__(self, signum: int, itr: int, weights_dir: Path):
        self.exit_code = 128 + signum  # what a shell reports for a process ended by that signal
        super().__init__(f"preempted by {signal.Signals(signum).name} after iteration {itr}; checkpoint "
                         f"saved in {weights_dir}. Continue with --resume (exit status {self.exit_code})")


class PreemptionGuard:
    """SIGTERM, SIGUSR1 and SIGUSR2 (how Slurm, cloud schedulers and submitit preempt) only set a
    flag: the iteration running finishes, the loop stops at the next `requested()`, checkpoints,
    and the process exits with 128 + the signal number for the scheduler to requeue it."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum

    def requested(self, device: torch.device) -> bool:
        """True once any process got a signal (all DDP ranks agree, so they stop together)."""
        flag = self.signum or 0
        if dist_utils.is_distributed():
            t = torch.tensor([flag], device=device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = int(t.item())
        self.signum = flag or None
        return self.signum is not None

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _wrap(G: nn.Module, D: nn.Module, config: dict, device: torch.device) -> train_fns.Nets:
    """DDP under torchrun, DataParallel for --parallel on several GPUs of one process."""
    if dist_utils.is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        return train_fns.Nets(G, D, G_train=nn.parallel.DistributedDataParallel(G, device_ids=ids),
                              D_train=nn.parallel.DistributedDataParallel(D, device_ids=ids), D_frozen=D)
    if config["parallel"] and device.type == "cuda" and torch.cuda.device_count() > 1:
        G_dp, D_dp = nn.DataParallel(G), nn.DataParallel(D)
        return train_fns.Nets(G, D, G_train=G_dp, D_train=D_dp, D_frozen=D_dp)
    if config["parallel"]:
        dist_utils.print0("--parallel: one device visible, running in one process "
                          "(use torchrun --nproc_per_node=N for DDP)")
    return train_fns.Nets(G, D)


def _prepare_metrics(config: dict):
    """inception_utils' metric function, prepared once (fails early if moments are missing)."""
    import inception_utils
    return inception_utils.prepare_inception_metrics(config)


def _gather_rng() -> list[dict]:
    """Every rank's RNG states, in rank order (collective under DDP)."""
    state = checkpoints.capture_rng_state()
    if not dist_utils.is_distributed():
        return [state]
    states = [None] * dist_utils.world_size()
    torch.distributed.all_gather_object(states, state)
    return states


def log_iteration(train_log: TrainLog, itr: int, metrics: dict, G: nn.Module, D: nn.Module,
                  modes: list[training_modes.TrainingMode], config: dict, last: bool = False) -> None:
    """Losses (and mode stats) every --log_every, at the last iteration and when a step was
    skipped; SVs every --sv_log_interval."""
    if itr % config["log_every"] == 0 or last or metrics["skipped_D_steps"] or metrics["skipped_G_steps"]:
        for name, value in metrics.items():
            train_log.report(name, value)
        for mode in modes:
            for name, value in mode.stats().items():
                train_log.report(f"modes/{name}", value)
    if config["sv_log_interval"] > 0 and itr % config["sv_log_interval"] == 0:
        for name, value in {**get_SVs(G, "G"), **get_SVs(D, "D")}.items():
            train_log.report(f"sv/{name}", value)
    train_log.write(itr)


def run(config: dict, explicit: set[str] | None = None) -> train_fns.Nets:
    """Train as described by `config` (the parsed flags); returns the trained networks.

    With --resume the run's stored config fills every flag not in `explicit` (the flags typed
    on the command line; None: those that differ from the defaults), so `--experiment_name X
    --resume` alone continues run X (see config.resume_config for what may change)."""
    utils.validate_config(config)
    legacy = [f for f in ("G_fp16", "D_fp16", "G_mixed_precision", "D_mixed_precision") if config[f]]
    if legacy and config["amp"] == "none":
        dist_utils.print0(f"note: --{' --'.join(legacy)} now mean --amp fp16 (autocast + loss scaling)")
        config["amp"] = "fp16"
    experiment_name = utils.experiment_name(config)
    # Rank 0 (known from torchrun's RANK before the process group exists) guards the experiment
    # and owns its folders.
    rank0 = int(os.environ.get("RANK", "0")) == 0
    new_paths = _new_output_paths(config, experiment_name) if rank0 else []
    with _removed_unless_started(new_paths) as started:
        try:
            utils.prepare_root(config)
        except OSError as err:
            raise utils.UserError(f"cannot create the output folders ({err}); make them writable or "
                                  f"choose another --weights_root / --logs_root / --samples_root / "
                                  f"--base_root") from None
        weights_dir = Path(config["weights_root"]) / experiment_name
        with checkpoints.run_lock(weights_dir, enabled=rank0), PreemptionGuard() as preemption:
            return _train(config, experiment_name, weights_dir, started, explicit, preemption)


def _new_output_paths(config: dict, experiment_name: str) -> list[Path]:
    """The output folders and files of this run that do not exist yet."""
    roots = {k: Path(v) for k, v in utils.output_roots(config).items()}
    paths = [*roots.values(), roots["weights_root"] / experiment_name, roots["logs_root"] / experiment_name,
             roots["logs_root"] / f"{experiment_name}_log.jsonl", roots["samples_root"] / experiment_name]
    if config.get("base_root"):
        paths.append(Path(config["base_root"]))
    return [p for p in paths if not os.path.lexists(p)]


@contextlib.contextmanager
def _removed_unless_started(paths: list[Path]) -> Iterator[Callable[[], None]]:
    """Yield `started()`; if the block fails before calling it (a refused start: bad data,
    missing moments, a run already holding the lock, an unreadable first batch...), remove
    `paths` again, so that a refused start leaves no folder, lock file or log behind. A failure
    after the start keeps everything (its logs explain it)."""
    state = {"started": False}
    try:
        yield lambda: state.update(started=True)
    except BaseException:
        if not state["started"]:
            for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                elif os.path.lexists(path):
                    path.unlink()
        raise


def _train(config: dict, experiment_name: str, weights_dir: Path, started: Callable[[], None],
           explicit: set[str] | None, preemption: PreemptionGuard) -> train_fns.Nets:
    """Everything after the experiment is locked: data, models, resume, the loop (which
    calls `started()` once an iteration has trained)."""
    device = utils.resolve_device(config["device"])
    tune_cpu_allocator()
    dist_utils.init_distributed(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif config["amp"] == "fp16":
        dist_utils.print0(f"warning: --amp fp16 only applies on CUDA; training in fp32 on {device} "
                          f"(--amp bf16 runs on the CPU)")
    dist_utils.print0(f"Experiment name is {experiment_name}")

    resume = Resume.open(config, weights_dir, experiment_name, explicit)  # counters and the run's config
    state_dict = resume.counters

    # Data first: the number of classes of a custom folder is only known from the data.
    train_loader = loaders.get_data_loaders(config, start_itr=state_dict["itr"])[0]
    dataset = train_loader.dataset
    config["n_classes"] = int(dataset.n_classes)
    config["class_names"] = datasets.class_names(dataset)  # sheet labels (sample.py reads them too)
    config["resolution"] = config["resolution"] or int(dataset.resolution)
    batches_per_epoch = train_loader.sampler.per_rank // train_loader.batch_size

    utils.seed_rng(config["seed"])
    G, D = BigGAN.build_models(config)
    G_ema = copy.deepcopy(G) if config["ema"] else None
    if config["cross_replica"] and dist_utils.is_distributed():
        G = sync_batchnorm.convert_model(G, device=device)
    G, D = G.to(device), D.to(device)
    G_ema = G_ema.to(device) if G_ema is not None else None
    dist_utils.print0("Number of params in G: {} D: {}".format(
        *[sum(p.numel() for p in net.parameters()) for net in (G, D)]))
    G_optim, D_optim = build_optimizer(G), build_optimizer(D)
    ema = EMA(G, G_ema, config["ema_decay"], config["ema_start"]) if G_ema is not None else None
    modes = training_modes.build_modes(G, D, config, len(dataset))
    scalers = (BigGAN.grad_scaler(config, device), BigGAN.grad_scaler(config, device))
    for net in (G, D, G_ema):
        if net is not None:
            BigGAN.apply_speed_flags(net, config, device)
    nets = _wrap(G, D, config, device)
    nets.G_ema, nets.use_ema = G_ema, config["use_ema"]

    # Logs: losses/SVs under logs/<experiment>/, one line per test in logs/<experiment>_log.jsonl.
    train_log = TrainLog(Path(config["logs_root"]) / experiment_name, reinitialize=not config["resume"],
                         tensorboard=config["tensorboard"])
    test_log = MetricsLog(Path(config["logs_root"]) / f"{experiment_name}_log.jsonl",
                          reinitialize=not config["resume"])
    total = config["num_iters"] or batches_per_epoch * config["num_epochs"]
    # Prepared up front so that missing Inception moments fail now, not after the first test_every.
    get_metrics = _prepare_metrics(config) if total >= config["test_every"] else None

    # z_/y_ for training come from the global RNG (BigGAN-PyTorch); the fixed sheet's from the seed.
    G_batch_size = max(config["G_batch_size"], config["batch_size"]) // dist_utils.world_size()
    noise = NoiseSampler(G_batch_size, G.dim_z, config["n_classes"], device, config["z_var"])
    fixed = NoiseSampler(G_batch_size, G.dim_z, config["n_classes"], device, config["z_var"],
                         train_fns.sample_generator(config, device, 0)).sample_()
    train = train_fns.GAN_training_function(nets, G_optim, D_optim, noise, ema, state_dict, config,
                                            device, scalers, modes)
    data_id = {"n": len(dataset), "world_size": dist_utils.world_size(),
               "loader_batch": loaders.loader_batch_size(config), "seed": config["seed"]}

    def extra_state() -> dict:
        # Collective under DDP: every rank calls it at the same iterations.
        return {"config": config, "rng": _gather_rng(), "data_position": {"batches": state_dict["itr"], **data_id},
                "scalers": {"D": scalers[0].state_dict(), "G": scalers[1].state_dict()}}

    def to_eval_mode() -> None:
        # --G_eval_mode: metrics and samples use BN running statistics, for G and G_ema alike.
        if config["G_eval_mode"]:
            for net in (G, G_ema):
                if net is not None:
                    net.eval()

    def checkpoint() -> None:
        started()  # a run with a checkpoint is never cleaned away
        to_eval_mode()
        train_fns.save_and_sample(nets, G_optim, D_optim, state_dict, config, experiment_name, fixed,
                                  extra_state(), device, modes)

    # Last before the loop, so the RNG streams continue exactly where the checkpoint left them.
    resume.restore(G=G, D=D, G_ema=G_ema, G_optim=G_optim, D_optim=D_optim, modes=modes, scalers=scalers,
                   logs=(train_log, test_log), data_id=data_id, batches_per_epoch=batches_per_epoch,
                   config=config)
    if dist_utils.is_main_process():
        atomic_write_json(Path(config["logs_root"]) / experiment_name / "config.json", config)

    pbar = tqdm(total=total, initial=state_dict["itr"], dynamic_ncols=True,
                disable=not dist_utils.is_main_process() or config["pbar"] == "none")
    dist_utils.print0(f"Beginning training at epoch {state_dict['epoch']} (iteration {state_dict['itr']})...")
    last_saved, start = state_dict["itr"], time.time()
    tick = time.perf_counter()
    main_set_current = resume.main_set_current
    epochs = range(state_dict["epoch"], state_dict["epoch"] + 1 if config["use_multiepoch_sampler"]
                   else loaders.planned_epochs(config, batches_per_epoch))
    try:
        for epoch in epochs:
            for x, y in train_loader:
                if config["num_iters"] and state_dict["itr"] >= config["num_iters"] or preemption.requested(device):
                    break
                state_dict["itr"] += 1
                itr = state_dict["itr"]
                G.train()
                D.train()
                if G_ema is not None:
                    G_ema.train()
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                try:
                    metrics = train(x, y)
                except train_fns.NonFiniteLossError as err:
                    raise utils.UserError(
                        f"{err}; stopped without saving: the last good checkpoint in {weights_dir} "
                        f"(iteration {last_saved}) is kept. Lower --G_lr/--D_lr, check the data, or pass "
                        f"--skip_nonfinite to skip such steps") from None
                except torch.OutOfMemoryError:
                    raise utils.UserError(
                        f"out of memory at iteration {itr} on {device} with --batch_size "
                        f"{config['batch_size']}; halve --batch_size and double --num_D_accumulations and "
                        f"--num_G_accumulations to keep the same effective batch, or try --amp bf16") from None

                started()  # one iteration trained: from here on a failure keeps the run's folders
                log_iteration(train_log, itr, metrics, G, D, modes, config, last=itr == total)
                # The postfix first: update() redraws the bar, which then shows this iteration's losses.
                pbar.set_postfix({k: f"{v:+.3f}" for k, v in metrics.items() if not k.startswith("skipped")},
                                 refresh=False)
                pbar.update(1)
                state_dict["train_seconds"] += time.perf_counter() - tick

                if itr % config["test_every"] == 0:
                    to_eval_mode()
                    record = train_fns.test(nets, G_optim, D_optim, state_dict, config, experiment_name,
                                            get_metrics, test_log, extra_state(), device, modes)
                    train_log.tensorboard_scalars("metrics", record, itr)
                if itr % config["save_every"] == 0:
                    checkpoint()
                    last_saved, main_set_current = itr, True
                    train_log.tensorboard_image("samples/fixed", Path(config["samples_root"]) / experiment_name
                                                / f"fixed_samples{itr}.jpg", itr)
                tick = time.perf_counter()
            else:
                state_dict["epoch"] += 1
                continue
            break
        if state_dict["itr"] != last_saved or not main_set_current:
            checkpoint()
    finally:
        pbar.close()
        train_log.close()
        nets.release_wrappers()  # DDP wrappers alive at exit can abort the process (see distributed.cleanup)
    if preemption.signum is not None:
        raise Preempted(preemption.signum, state_dict["itr"], weights_dir)
    dist_utils.print0(f"Done: {state_dict['itr']} iterations in {time.time() - start:.1f} s; checkpoints in "
                      f"{weights_dir}, logs in {Path(config['logs_root']) / experiment_name} (metrics: "
                      f"{test_log.path}), samples in {Path(config['samples_root']) / experiment_name}")
    return nets


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and train."""
    parser = utils.prepare_parser()
    config = vars(parser.parse_args(argv))
    try:
        run(config, utils.explicit_flags(parser, argv))
    except Preempted as stop:
        print(f"{stop}", file=sys.stderr, flush=True)
        raise SystemExit(stop.exit_code) from None
    except OSError as err:  # a full disk, a read-only folder: one line, not a traceback
        raise utils.UserError(err.strerror if err.strerror and "cannot" in err.strerror else str(err)) from None
    finally:
        dist_utils.cleanup()


if __name__ == "__main__":
    utils.run_cli(main)
