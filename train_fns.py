"""One BigGAN training iteration, `save_and_sample` and `test` (BigGAN-PyTorch's train_fns).

The iteration is BigGAN-PyTorch's: `num_D_steps` D updates, each accumulating
`num_D_accumulations` micro-batches of the loader batch, then one G update accumulating
`num_G_accumulations` micro-batches; hinge loss; `toggle_grads`; `split_D`; modified
orthogonal regularisation (`G_ortho`, `D_ortho`; G's shared embedding excluded); EMA of G
after the G step. Optional training modes (DiffAugment, InsGen, Re-GAN) hook in at the
points their papers prescribe and are off by default.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn

import BigGAN
import checkpoints
import datasets
import distributed as dist_utils
import losses
import metric_specs
import sampling
from training_modes import TrainingMode, checkpoint_items, compose_augment
from training_utils import (EMA, MetricsLog, NoiseSampler, accumulate_standing_stats, lr_decay_scale,
                            ortho, preserved_state, toggle_grad)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf; raised before the optimizer step, so the weights are still finite."""

    def __init__(self, itr: int, values: dict[str, float]):
        self.itr, self.values = itr, values
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
        super().__init__(f"non-finite loss at iteration {itr} ({bad})")


@dataclasses.dataclass
class Nets:
    """The networks of a run and the callables the training step runs them through.

    `G_train`/`D_train` are G and D or their DDP/DataParallel wrappers (used where their
    parameters get gradients); `D_frozen` runs D in the G step, where D gets no parameter
    gradients (plain D under DDP, so its reducer never waits for gradients that cannot come).
    """
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module | None = None
    G_train: Callable | None = None
    D_train: Callable | None = None
    D_frozen: Callable | None = None
    use_ema: bool = False

    def __post_init__(self) -> None:
        self.G_train = self.G_train or self.G
        self.D_train = self.D_train or self.D
        self.D_frozen = self.D_frozen or self.D

    def release_wrappers(self) -> None:
        """Run G and D unwrapped from here on and drop the references to their DDP/DataParallel
        wrappers, so that distributed.cleanup() can free the wrappers before the process group."""
        self.G_train, self.D_train, self.D_frozen = self.G, self.D, self.D

    @property
    def G_sample(self) -> nn.Module:
        """The G that sheets and metrics use: G_ema when it exists and --use_ema, else G."""
        return self.G_ema if self.G_ema is not None and self.use_ema else self.G


def _no_sync(module: Callable, last: bool):
    """DDP: skip the gradient all-reduce on every accumulation micro-batch but the last."""
    if not last and isinstance(module, nn.parallel.DistributedDataParallel):
        return module.no_sync()
    return contextlib.nullcontext()


def _fetch(values: list[torch.Tensor]) -> list[float]:
    """Loss values as floats in one device sync, averaged over the DDP ranks.

    The average is NaN/inf on every rank as soon as one rank's loss is, so all ranks take
    the same stop/skip decision.
    """
    t = torch.stack([v.detach().float() for v in values])
    if dist_utils.is_distributed():
        dist.all_reduce(t)
        t /= dist_utils.world_size()
    return t.tolist()


def GAN_training_function(nets: Nets, G_optim: torch.optim.Optimizer, D_optim: torch.optim.Optimizer,
                          noise: NoiseSampler, ema: EMA | None, state_dict: dict, config: dict,
                          device: torch.device, scalers: tuple | None = None,
                          modes: list[TrainingMode] | None = None) -> Callable[[torch.Tensor, torch.Tensor], dict]:
    """Return `train(x, y) -> dict of losses` doing one BigGAN iteration on a loader batch.

    `x`, `y` hold this process's share of `batch_size * num_D_steps * num_D_accumulations`
    images. A non-finite loss raises NonFiniteLossError before the optimizer step, or with
    --skip_nonfinite drops that step (its gradients) and counts it in the returned dict.
    Training modes (training_modes.py) act only through their hooks.
    """
    G, D = nets.G, nets.D
    modes = list(modes or [])
    bs = config["batch_size"] // dist_utils.world_size()
    n_D_steps, n_D_acc = config["num_D_steps"], config["num_D_accumulations"]
    n_G_acc = config["num_G_accumulations"]
    D_scaler, G_scaler = scalers or (torch.amp.GradScaler("cuda", enabled=False),) * 2
    shared_params = list(G.shared.parameters())
    augment = compose_augment(modes)
    generator_loss, discriminator_loss = losses.LOSSES[config["loss"]]

    def with_extra(loss: torch.Tensor, extras) -> torch.Tensor:
        for extra in extras:
            if extra is not None:
                loss = loss + extra
        return loss

    def run_D(G_z, gy, x, dy):
        if config["split_D"]:
            return nets.D_train(augment(G_z), gy), nets.D_train(augment(x), dy)
        out = nets.D_train(augment(torch.cat([G_z, x], 0)), torch.cat([gy, dy], 0))
        return torch.split(out, [G_z.shape[0], x.shape[0]])

    def nonfinite(values: dict[str, float]) -> bool:
        if all(math.isfinite(v) for v in values.values()):
            return False
        if not config["skip_nonfinite"]:
            raise NonFiniteLossError(state_dict["itr"], values)
        return True

    def train(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        x_chunks, y_chunks = torch.split(x, bs), torch.split(y, bs)
        if len(x_chunks) < n_D_steps * n_D_acc or x_chunks[-1].shape[0] != bs:
            raise ValueError(f"a loader batch of {x.shape[0]} images does not hold num_D_steps x "
                             f"num_D_accumulations micro-batches of {bs}")
        out = {"skipped_D_steps": 0.0, "skipped_G_steps": 0.0}
        # Set every iteration from the models' base rates, so that modes (Re-GAN) scale them on top.
        scale = lr_decay_scale(state_dict["itr"], config["num_iters"] or 0, config["lr_decay_iters"])
        for optim, net in ((G_optim, G), (D_optim, D)):
            for group in optim.param_groups:
                group["lr"] = net.lr * scale
        for m in modes:
            m.begin_iteration(state_dict["itr"], G_optim)
        counter = 0
        if config["toggle_grads"]:
            toggle_grad(D, True)
            toggle_grad(G, False)
        for _ in range(n_D_steps):
            D_optim.zero_grad(set_to_none=True)
            for m in modes:
                m.before_D_step()
            for acc in range(n_D_acc):
                z, gy = noise.sample_()
                with _no_sync(nets.D_train, acc == n_D_acc - 1):
                    with BigGAN.autocast_context(config, device):
                        with torch.no_grad():
                            G_z = G(z[:bs], G.shared(gy[:bs]))
                        D_fake, D_real = run_D(G_z, gy[:bs], x_chunks[counter], y_chunks[counter])
                        D_loss_real, D_loss_fake = discriminator_loss(D_fake, D_real)
                        D_loss = with_extra(D_loss_real + D_loss_fake,
                                            (m.extra_D_loss(D, x_chunks[counter], G_z) for m in modes))
                    D_scaler.scale(D_loss / float(n_D_acc)).backward()
                counter += 1
            real, fake = _fetch([D_loss_real, D_loss_fake])
            out.update(D_loss_real=real, D_loss_fake=fake)
            if nonfinite({"D_loss_real": real, "D_loss_fake": fake}):
                D_optim.zero_grad(set_to_none=True)
                out["skipped_D_steps"] += 1
                continue
            if config["D_ortho"] > 0.0:
                D_scaler.unscale_(D_optim)
                ortho(D, config["D_ortho"])
            for m in modes:
                m.after_D_step(D, D_scaler, before_step=True)
            D_scaler.step(D_optim)
            for m in modes:
                m.after_D_step(D, D_scaler, before_step=False)
            D_scaler.update()

        if config["toggle_grads"]:
            toggle_grad(D, False)
            toggle_grad(G, True)
        for m in modes:
            m.before_G_step()
        G_optim.zero_grad(set_to_none=True)
        for acc in range(n_G_acc):
            z, gy = noise.sample_()
            with _no_sync(nets.G_train, acc == n_G_acc - 1):
                with BigGAN.autocast_context(config, device):
                    G_z = nets.G_train(z, G.shared(gy))
                    G_loss = with_extra(generator_loss(nets.D_frozen(augment(G_z), gy)),
                                        (m.extra_G_loss(D, G_z) for m in modes))
                    # Logged divided, as BigGAN-PyTorch does (its D losses are logged undivided).
                    G_loss = G_loss / float(n_G_acc)
                G_scaler.scale(G_loss).backward()
        for m in modes:
            m.after_G_backward()
        (out["G_loss"],) = _fetch([G_loss])
        if nonfinite({"G_loss": out["G_loss"]}):
            G_optim.zero_grad(set_to_none=True)
            out["skipped_G_steps"] += 1
            return out
        if config["G_ortho"] > 0.0:
            G_scaler.unscale_(G_optim)
            # The shared class embedding is not a filter bank; BigGAN-PyTorch leaves it out too.
            ortho(G, config["G_ortho"], blacklist=shared_params)
        for m in modes:
            m.before_G_optimizer_step()
        G_scaler.step(G_optim)
        G_scaler.update()
        for m in modes:
            m.after_G_optimizer_step()
        if ema is not None:
            ema.update(state_dict["itr"])
            for m in modes:
                m.after_ema_update(nets.G_ema)
        return out

    return train


# ----------------------------------------------------------------------------- sampling
def sample_generator(config: dict, device: torch.device, *tags: int) -> torch.Generator:
    """A generator seeded from (seed, *tags): sampling never touches the training RNG."""
    g = torch.Generator(device=device)
    g.manual_seed(hash((int(config["seed"]),) + tuple(int(t) for t in tags)) & (2**63 - 1))
    return g


def save_weights(nets: Nets, G_optim, D_optim, state_dict: dict, config: dict, folder: Path,
                 suffix: str | None, extra_state: dict, modes: list[TrainingMode] | None = None) -> None:
    """Write one checkpoint set (rank 0) with BigGAN-PyTorch's names plus our training state."""
    if not dist_utils.is_main_process():
        return
    items = {"G": nets.G.state_dict(), "G_optim": G_optim.state_dict(),
             "D": nets.D.state_dict(), "D_optim": D_optim.state_dict()}
    if nets.G_ema is not None:
        items["G_ema"] = nets.G_ema.state_dict()
    items.update(checkpoint_items(modes or []))
    checkpoints.save_checkpoint(folder, items, {**state_dict, **extra_state}, config, suffix)


def save_and_sample(nets: Nets, G_optim, D_optim, state_dict: dict, config: dict,
                    experiment_name: str, fixed: tuple[torch.Tensor, torch.Tensor],
                    extra_state: dict, device: torch.device, modes: list[TrainingMode] | None = None) -> None:
    """Checkpoint (a rotating copy first, then the main set), then sample sheets.

    Sheets: `fixed_samples{itr}.jpg` (fixed z/y), per-class sheets and interpolations in
    `samples/<experiment>/<itr>/`. Sampling runs with its own RNG and leaves G as it was.
    """
    folder = Path(config["weights_root"]) / experiment_name
    if config["num_save_copies"] > 0:
        copy_num = state_dict["save_num"]
        state_dict["save_num"] = (copy_num + 1) % config["num_save_copies"]
        save_weights(nets, G_optim, D_optim, state_dict, config, folder, f"copy{copy_num}",
                     extra_state, modes)
    save_weights(nets, G_optim, D_optim, state_dict, config, folder, None, extra_state, modes)

    if not dist_utils.is_main_process():
        return
    itr = state_dict["itr"]
    G = nets.G_sample
    samples = Path(config["samples_root"]) / experiment_name
    generator = sample_generator(config, device, itr, 1)
    autocast = functools.partial(BigGAN.autocast_context, config, device)
    with preserved_state(G):
        if config["cross_replica"] and dist_utils.is_distributed():
            G.eval()  # SyncBatchNorm in training mode would wait for the other ranks
        if config["accumulate_stats"]:
            accumulate_standing_stats(G, sampling.ZYSampler(fixed[0].shape[0], G.dim_z, config["n_classes"],
                                                            device, config["z_var"], generator=generator),
                                      config["num_standing_accumulations"])
        sampling.save_grid(sampling.generate(G, fixed[0], fixed[1], autocast=autocast),
                           samples / f"fixed_samples{itr}.jpg")
        per_sheet = datasets.classes_per_sheet(config["dataset"], config["n_classes"])
        sampling.class_sheets(G, samples / str(itr), config["n_classes"], per_sheet, G.dim_z, device,
                              z_var=config["z_var"], generator=generator, autocast=autocast,
                              class_names=config.get("class_names"))
        sampling.interp_sheets(G, samples / str(itr), config["n_classes"], G.dim_z, device,
                               z_var=config["z_var"], generator=generator, autocast=autocast)


def test(nets: Nets, G_optim, D_optim, state_dict: dict, config: dict, experiment_name: str,
         get_metrics: Callable, test_log: MetricsLog, extra_state: dict, device: torch.device,
         modes: list[TrainingMode] | None = None) -> dict[str, float]:
    """Compute IS/FID/PRDC of G (or G_ema), keep the best copies, log one line.

    The best copy (`*_best{n}.pth`, `num_best_copies` rotating) is written when
    `which_best` improved: IS higher or FID lower than every earlier test.
    """
    dist_utils.print0("Gathering inception metrics...")
    itr = state_dict["itr"]
    G = nets.G_sample
    generator = sample_generator(config, device, itr, 2, dist_utils.rank())
    batch = max(config["G_batch_size"], config["batch_size"]) // dist_utils.world_size()
    with preserved_state(G):
        if config["accumulate_stats"]:
            accumulate_standing_stats(G, sampling.ZYSampler(batch, G.dim_z, config["n_classes"], device,
                                                            config["z_var"], generator=generator),
                                      config["num_standing_accumulations"])
        noise = sampling.ZYSampler(batch, G.dim_z, config["n_classes"], device, config["z_var"],
                                   generator=generator)
        sample_fn = sampling.make_sample_fn(
            G, noise, functools.partial(BigGAN.autocast_context, config, device))
        metrics = get_metrics(sample_fn, config["num_inception_images"])
    IS_mean, IS_std, FID = (float(metrics.get(k, float("nan"))) for k in ("IS_mean", "IS_std", "FID"))
    prdc = "".join(f", {m.key} {float(metrics[m.key]):.3f}" for m in metric_specs.PRDC if m.key in metrics)
    dist_utils.print0(f"Itr {itr}: Inception Score is {IS_mean:3.3f} +/- {IS_std:3.3f}, FID is {FID:5.4f}{prdc}")
    improved = (config["which_best"] == "IS" and IS_mean > state_dict["best_IS"]) or \
               (config["which_best"] == "FID" and FID < state_dict["best_FID"])
    state_dict["best_IS"] = max(state_dict["best_IS"], IS_mean)
    state_dict["best_FID"] = min(state_dict["best_FID"], FID)
    if improved and config["num_best_copies"] > 0:
        dist_utils.print0(f"{config['which_best']} improved over previous best, saving checkpoint...")
        best_num = state_dict["save_best_num"]
        state_dict["save_best_num"] = (best_num + 1) % config["num_best_copies"]
        save_weights(nets, G_optim, D_optim, state_dict, config,
                     Path(config["weights_root"]) / experiment_name, f"best{best_num}", extra_state, modes)
    record = {"itr": itr, "train_seconds": round(float(state_dict.get("train_seconds", 0.0)), 2),
              "IS_mean": IS_mean, "IS_std": IS_std, "FID": FID}
    for m in metric_specs.PRDC:
        if m.key in metrics:
            record[m.log_key] = float(metrics[m.key])
    test_log.log(**record)
    return record
