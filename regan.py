"""Re-GAN (Saxena et al., CVPR 2023): prune and regrow G's connections during training.

After `warmup` dense iterations, G alternates between a *sparse* phase and a *dense* phase
of `interval` iterations each (the paper's g), starting with a sparse one. Entering a sparse
phase prunes, in every prunable layer separately, the fraction `sparsity` of weights with
the smallest magnitude; they stay exactly zero (their gradients are zeroed before the
optimizer step and the weights are zeroed again after it) until the dense phase lets them
regrow from zero. Prunable: the weight of every Linear / Conv layer, including
spectral-normalised ones (BigGAN's SN layers, `weight_orig` of torch's spectral_norm, the
`original` of a parametrization); never biases, BN parameters or embeddings (G.shared).

As in Re-GAN's code the dense phase trains with a 10x smaller learning rate
(`dense_lr_scale`), warm-up and sparse phases with the base one: `lr_scale()` says which.

Adam's moment estimates are left alone, as Re-GAN does: with masked gradients the first
moment of a pruned weight decays to zero and the second decays slowly (beta2 ** steps), so a
regrown weight restarts with a well-scaled step instead of the ~1/sqrt(1 - beta2) jump a reset
second moment would give. Unlike Re-GAN, which zeroes weights only *before* the step (so
Adam's momentum moves them off zero for the next forward pass) and recomputes the masks
every epoch/iteration of the sparse phase, we fix the masks for the whole sparse phase and
zero the weights after every step, so pruned weights are exactly zero in every forward pass.

Integration in a BigGAN-style loop (train_fns / train.py):
    regan = ReGAN.from_config(G, config)              # after G is built (and loaded)
    each iteration, before the D steps:  event = regan.step(state_dict['itr'])
        if event: set G_optim's lr to config['G_lr'] * regan.lr_scale() for every param group
    G step:  G_loss.backward(); regan.mask_grads(); G_optim.step() (or scaler.step);
             regan.mask_weights()
    after the EMA update of G_ema:  regan.mask_weights(G_ema)   (Re-GAN zeroes G_ema too)
    log every log_every:  regan.stats()  -> {'regan_sparse', 'regan_sparsity'}
    checkpoint: `ReGAN.pth` <- regan.state_dict() (suffixed like G/D for copies); on resume,
        regan.load_state_dict(torch.load(path, weights_only=True)) before the first step().
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import distributed
from distributed import unwrap

PHASES = ("warmup", "sparse", "dense")
DENSE_LR_SCALE = 0.1   # Re-GAN: the dense phase runs at lr / 10
_BITS = (1, 2, 4, 8, 16, 32, 64, 128)


def _weight_param(module: nn.Module) -> nn.Parameter | None:
    """The trainable weight tensor of a Linear/Conv layer, looking through spectral norm wrappers."""
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return parametrizations["weight"].original
    if isinstance(module._parameters.get("weight_orig"), nn.Parameter):
        return module._parameters["weight_orig"]
    weight = module._parameters.get("weight")
    return weight if isinstance(weight, nn.Parameter) else None


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """{name: weight} of every Linear / Conv / ConvTranspose layer of `model` (names as in
    `model.named_parameters()`); biases, norm layers and embeddings are not included."""
    model = unwrap(model)
    name_of = {id(p): n for n, p in model.named_parameters()}
    found: dict[str, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            weight = _weight_param(module)
            if weight is not None and id(weight) in name_of:
                found[name_of[id(weight)]] = weight
    return found


def smallest_magnitude_mask(weight: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool mask (True = prune) of exactly round(fraction * numel) smallest-|w| entries.

    Uses kthvalue (no torch.quantile, which refuses more than 16M elements) in float32;
    ties at the threshold are broken by position so the count is exact.
    """
    flat = weight.detach().abs().float().flatten()
    k = int(round(fraction * flat.numel()))
    if k <= 0:
        return torch.zeros_like(weight, dtype=torch.bool)
    if k >= flat.numel():
        return torch.ones_like(weight, dtype=torch.bool)
    threshold = flat.kthvalue(k).values
    mask = flat < threshold
    missing = k - int(mask.sum())
    if missing > 0:
        ties = torch.nonzero(flat == threshold).flatten()[:missing]
        mask[ties] = True
    return mask.view_as(weight)


def _pack(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor -> uint8 bit array (8x smaller in checkpoints), on the CPU."""
    flat = mask.detach().flatten().to("cpu", torch.uint8)
    flat = F.pad(flat, (0, (-flat.numel()) % 8))
    bits = torch.tensor(_BITS, dtype=torch.uint8)
    return (flat.view(-1, 8) * bits).sum(dim=1, dtype=torch.uint8)


def _unpack(packed: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    bits = torch.tensor(_BITS, dtype=torch.uint8)
    flat = (packed.to(torch.uint8).unsqueeze(1) & bits) != 0
    return flat.flatten()[:like.numel()].view(like.shape).to(like.device)


class ReGAN:
    """Dense/sparse phase schedule and pruning masks of G's prunable weights.

    Args:
        G: the generator (DDP / compile wrappers are looked through).
        sparsity: fraction of each layer's weights pruned in a sparse phase (`--regan_sparsity`).
        interval: iterations per sparse or dense phase (`--regan_interval`, the paper's g).
        warmup: dense iterations before the first sparse phase (`--regan_warmup`).
        dense_lr_scale: G's learning-rate factor in dense phases (Re-GAN: 0.1).
    """

    def __init__(self, G: nn.Module, sparsity: float, interval: int, warmup: int = 0,
                 dense_lr_scale: float = DENSE_LR_SCALE) -> None:
        if not 0 <= sparsity < 1:
            raise ValueError(f"--regan_sparsity must be in [0, 1), got {sparsity}")
        if interval < 1:
            raise ValueError(f"--regan_interval must be >= 1 iteration, got {interval}")
        if warmup < 0:
            raise ValueError(f"--regan_warmup must be >= 0 iterations, got {warmup}")
        self.sparsity, self.interval, self.warmup = float(sparsity), int(interval), int(warmup)
        self.dense_lr_scale = float(dense_lr_scale)
        self.layers = prunable_parameters(G)
        if not self.layers:
            raise ValueError("Re-GAN found no Linear/Conv weights to prune in G")
        self.masks: dict[str, torch.Tensor] = {}   # name -> bool, True = pruned; empty unless sparse
        self.phase, self.cycle = "warmup", -1

    @classmethod
    def from_config(cls, G: nn.Module, config: dict) -> "ReGAN":
        """Build from the --regan_* flags."""
        return cls(G, config["regan_sparsity"], config["regan_interval"], config["regan_warmup"])

    def phase_at(self, itr: int) -> tuple[str, int]:
        """(phase, cycle) of iteration `itr` (1 = the first iteration); cycle -1 during warm-up."""
        if itr <= self.warmup:
            return "warmup", -1
        cycle = (itr - self.warmup - 1) // self.interval
        return ("sparse" if cycle % 2 == 0 else "dense"), cycle

    def step(self, itr: int) -> str | None:
        """Move to the phase of iteration `itr` (BigGAN's state_dict['itr'] after its increment).

        Returns 'prune' when a sparse phase starts (masks computed and applied), 'regrow' when
        it ends, else None. Resuming inside a saved sparse phase keeps the saved masks.
        """
        phase, cycle = self.phase_at(itr)
        event = None
        if phase == "sparse" and (self.phase != "sparse" or self.cycle != cycle):
            self.prune()
            event = "prune"
        elif phase != "sparse" and self.phase == "sparse":
            self.masks = {}
            event = "regrow"
        self.phase, self.cycle = phase, cycle
        if event is not None:
            distributed.print0(f"Re-GAN: iteration {itr}: {event} -> {phase} phase"
                               + (f", {self._describe()}" if event == "prune" else ""))
        return event

    @torch.no_grad()
    def prune(self) -> None:
        """Prune the smallest-|w| fraction of every prunable layer now and zero those weights."""
        self.masks = {name: smallest_magnitude_mask(w, self.sparsity) for name, w in self.layers.items()}
        self.mask_weights()

    def _describe(self) -> str:
        per_layer = self.layer_sparsity()
        total = self.stats()["regan_sparsity"]
        return (f"sparsity reached {100 * total:.2f}% over {len(per_layer)} layers "
                f"(per layer {100 * min(per_layer.values()):.2f}-{100 * max(per_layer.values()):.2f}%)")

    @torch.no_grad()
    def mask_grads(self) -> None:
        """Zero the gradients of pruned weights; call after backward, before G's optimizer step."""
        for name, mask in self.masks.items():
            grad = self.layers[name].grad
            if grad is not None:
                grad.masked_fill_(mask, 0)

    @torch.no_grad()
    def mask_weights(self, module: nn.Module | None = None) -> None:
        """Zero the pruned weights of G (default) or of a copy with the same structure (G_ema).

        Call after every G optimizer step in the sparse phase (no-op outside it).
        """
        if not self.masks:
            return
        if module is None:
            params = self.layers
        else:
            params = dict(unwrap(module).named_parameters())
            missing = [n for n in self.masks if n not in params]
            if missing:
                raise ValueError(f"Re-GAN cannot mask {type(module).__name__}: it lacks G's "
                                 f"parameters {missing[:3]}; pass a copy of G (e.g. G_ema)")
        for name, mask in self.masks.items():
            params[name].masked_fill_(mask, 0)

    def lr_scale(self) -> float:
        """G's learning-rate factor for the current phase: dense_lr_scale in dense phases, else 1."""
        return self.dense_lr_scale if self.phase == "dense" else 1.0

    @torch.no_grad()
    def layer_sparsity(self) -> dict[str, float]:
        """Fraction of exactly-zero weights in each prunable layer, as G holds them now."""
        return {name: float((w == 0).sum()) / w.numel() for name, w in self.layers.items()}

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        """{'regan_sparse': 1.0 in a sparse phase else 0.0, 'regan_sparsity': zero fraction of all
        prunable weights}; costs one pass over G's weights, so call it at logging time."""
        zeros = sum(int((w == 0).sum()) for w in self.layers.values())
        total = sum(w.numel() for w in self.layers.values())
        return {"regan_sparse": float(self.phase == "sparse"), "regan_sparsity": zeros / total}

    def state_dict(self) -> dict:
        """Phase, cycle, settings and bit-packed masks; loadable with torch.load(weights_only=True)."""
        return {"phase": self.phase, "cycle": self.cycle, "sparsity": self.sparsity,
                "interval": self.interval, "warmup": self.warmup,
                "masks": {name: _pack(mask) for name, mask in self.masks.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore the phase and masks saved by state_dict(); checks they fit this G."""
        if state.get("phase") not in PHASES:
            raise ValueError(f"not a Re-GAN state (phase {state.get('phase')!r}); "
                             "pass the contents of ReGAN.pth")
        if (state["sparsity"], state["interval"], state["warmup"]) != (self.sparsity, self.interval, self.warmup):
            distributed.print0("Re-GAN: resuming with different --regan_sparsity/--regan_interval/"
                               "--regan_warmup than the checkpoint; the saved masks are kept")
        unknown = [n for n in state["masks"] if n not in self.layers]
        if unknown:
            raise ValueError(f"Re-GAN state has masks for layers G does not have ({unknown[:3]}); "
                             "resume with the architecture flags of the checkpoint")
        masks = {}
        for name, packed in state["masks"].items():
            weight = self.layers[name]
            if packed.numel() != (weight.numel() + 7) // 8:
                raise ValueError(f"Re-GAN mask for {name} does not fit its weight {tuple(weight.shape)}; "
                                 "resume with the architecture flags of the checkpoint")
            masks[name] = _unpack(packed, weight)
        self.phase, self.cycle, self.masks = state["phase"], int(state["cycle"]), masks
        self.mask_weights()
