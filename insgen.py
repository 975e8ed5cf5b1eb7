"""InsGen (Yang et al., NeurIPS 2021): instance discrimination as an auxiliary task of D.

D learns to tell every individual image apart, for real images and for generated ones,
MoCo-style: a query comes from D's pooled features of one augmented view through a
projection head; its positive key comes from a *momentum* (EMA) copy of D and of the head
applied to a second view; the negatives are keys of earlier batches kept in a queue. One
head and one queue for real images, another pair for fakes. G is trained to make its
images easy to tell apart (the fake-instance loss, back-propagated into G).

Integration in a BigGAN-style loop (train_fns; `ig = InsGen.from_config(D, config, n_train)`,
`ig_optim = Adam(ig.trainable_parameters(), D's lr/betas/eps)`):

D step (per D step, after computing the usual D loss on DiffAugment'ed real/fake):
    real_views = ig.make_views(x_real)               # x_real: the un-augmented real batch
    fake_views = ig.make_views(G_z.detach())         # G_z: the fakes of this D step
    D_loss = D_loss + ig.d_loss(D, real_views, fake_views)
    D_optim.zero_grad(); ig_optim.zero_grad()   -> backward ->
    ig.sync_head_grads(); D_optim.step(); ig_optim.step()
    ig.update_momentum(D)                            # after the D optimizer step
G step (heads frozen, like D):  ig.heads_requires_grad(False) ... G_loss = G_loss +
    ig.g_loss(D, ig.make_views(G_z)) ... G step ...  ig.heads_requires_grad(True)
Checkpoint: `InsGen.pth` <- ig.state_dict(), `InsGen_optim.pth` <- ig_optim.state_dict()
(suffixed like G/D for copies). Pass D itself (DDP/DataParallel/compiled wrappers are
unwrapped here); under DDP, D's gradients from these extra forward passes are reduced by
D's own DDP hooks as long as D (or G_D) ran a DDP forward in the same step.
"""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import distributed
from distributed import unwrap
from diffaug import DiffAugment, parse_policy, rand_translation

QUEUE_FRACTION = 0.05   # InsGen: both queues default to 5 % of the training images


def default_queue_size(n_train: int, requested: int = 0) -> int:
    """`requested` if > 0, else 5 % of the training-set size (at least 1), as in InsGen."""
    if requested < 0:
        raise ValueError(f"--insgen_real_queue/--insgen_fake_queue must be >= 0, got {requested}")
    return requested if requested > 0 else max(1, int(round(QUEUE_FRACTION * n_train)))


def projection_head(in_dim: int, out_dim: int) -> nn.Sequential:
    """InsGen's head: Linear(C, C) - ReLU - Linear(C, dim); the output is L2-normalised by the caller."""
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))


class InsGen(nn.Module):
    """Projection heads, momentum key encoders and key queues of InsGen for one D.

    Args:
        D: the discriminator; must expose `features(x) -> [N, C]`.
        feat_dim: C; read from `D.linear.in_features` when None.
        dim: output size of the heads (`--insgen_dim`).
        real_queue, fake_queue: number of negative keys kept per queue.
        temperature: softmax temperature of the contrastive logits.
        momentum: EMA factor of the key encoders (`--insgen_momentum`).
        w_real, w_fake, w_g: loss weights (`--insgen_w_real/_fake/_g`).
        policy: DiffAugment policy for the two views; '' = flips + translation.
    """

    def __init__(self, D: nn.Module, feat_dim: int | None = None, dim: int = 128,
                 real_queue: int = 1024, fake_queue: int = 1024, temperature: float = 0.07,
                 momentum: float = 0.999, w_real: float = 1.0, w_fake: float = 1.0,
                 w_g: float = 1.0, policy: str = "") -> None:
        super().__init__()
        D = unwrap(D)
        if feat_dim is None:
            linear = getattr(D, "linear", None)
            if not isinstance(linear, nn.Linear):
                raise ValueError("InsGen needs feat_dim: D has no nn.Linear `linear` to read "
                                 "the size of D.features(x) from")
            feat_dim = linear.in_features
        if not 0 <= momentum < 1:
            raise ValueError(f"--insgen_momentum must be in [0, 1), got {momentum}")
        if temperature <= 0:
            raise ValueError(f"--insgen_temperature must be > 0, got {temperature}")
        if real_queue < 1 or fake_queue < 1 or dim < 1:
            raise ValueError("--insgen_real_queue, --insgen_fake_queue and --insgen_dim must be >= 1")
        self.policy = ",".join(parse_policy(policy))
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.w_real, self.w_fake, self.w_g = float(w_real), float(w_fake), float(w_g)
        self.real_head = projection_head(feat_dim, dim)
        self.fake_head = projection_head(feat_dim, dim)
        # Key encoders: EMA copies, never trained by gradients, always in eval mode.
        self.D_momentum = copy.deepcopy(D)
        self.real_head_momentum = copy.deepcopy(self.real_head)
        self.fake_head_momentum = copy.deepcopy(self.fake_head)
        for module in self._momentum_modules():
            module.requires_grad_(False).eval()
        # MoCo/InsGen start the queues with random unit vectors so the shapes never change.
        self.register_buffer("real_queue", F.normalize(torch.randn(real_queue, dim), dim=1))
        self.register_buffer("fake_queue", F.normalize(torch.randn(fake_queue, dim), dim=1))
        self.register_buffer("real_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("fake_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("real_count", torch.zeros((), dtype=torch.long))  # keys ever enqueued
        self.register_buffer("fake_count", torch.zeros((), dtype=torch.long))
        self.stats: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, D: nn.Module, config: dict, n_train: int) -> "InsGen":
        """Build from the --insgen_* flags; `n_train` is the size of the (selected) training set."""
        return cls(D, dim=config["insgen_dim"],
                   real_queue=default_queue_size(n_train, config["insgen_real_queue"]),
                   fake_queue=default_queue_size(n_train, config["insgen_fake_queue"]),
                   temperature=config["insgen_temperature"], momentum=config["insgen_momentum"],
                   w_real=config["insgen_w_real"], w_fake=config["insgen_w_fake"],
                   w_g=config["insgen_w_g"], policy=config.get("diffaug", ""))

    def _momentum_modules(self) -> tuple[nn.Module, ...]:
        return (self.D_momentum, self.real_head_momentum, self.fake_head_momentum)

    def train(self, mode: bool = True) -> "InsGen":
        """Set the heads' mode; the momentum encoders stay in eval mode (their state is copied from D)."""
        super().train(mode)
        for module in self._momentum_modules():
            module.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the two heads: give these (and only these) to InsGen's optimizer."""
        return list(self.real_head.parameters()) + list(self.fake_head.parameters())

    def heads_requires_grad(self, on: bool) -> None:
        """Freeze/unfreeze the heads (freeze them in the G step, as BigGAN does with D)."""
        for p in self.trainable_parameters():
            p.requires_grad_(on)

    def make_views(self, x: torch.Tensor,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independently augmented views of the batch `x`.

        DiffAugment with the configured policy when there is one, else a random horizontal
        flip plus a translation of up to 1/8 of the image (pad-and-crop). Differentiable.
        """
        return self._augment(x, generator), self._augment(x, generator)

    def _augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.policy:
            return DiffAugment(x, self.policy, generator)
        if generator is None:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
        else:
            flip = (torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5).to(x.device)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        return rand_translation(x, generator)

    def _query(self, D: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # Logits in float32: under AMP the heads may run in bf16/fp16, the softmax should not.
        return F.normalize(head(D.features(x)).float(), dim=1)

    @torch.no_grad()
    def _key(self, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(head(self.D_momentum.features(x)).float(), dim=1)

    def _contrastive(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        """InfoNCE: the positive key k[i] against every key in the queue, at the temperature."""
        positive = (q * k).sum(dim=1, keepdim=True)
        # clone(): the queue is overwritten in place after this call, before backward runs.
        negative = q @ queue.clone().t()
        logits = torch.cat([positive, negative], dim=1) / self.temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target)

    def instance_loss(self, D: nn.Module, views: tuple[torch.Tensor, torch.Tensor],
                      kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, keys) of instance discrimination for `kind` in {'real', 'fake'} without enqueuing."""
        D = unwrap(D)
        head, head_m = ((self.real_head, self.real_head_momentum) if kind == "real"
                        else (self.fake_head, self.fake_head_momentum))
        queue = self.real_queue if kind == "real" else self.fake_queue
        q = self._query(D, head, views[0])
        k = self._key(head_m, views[1])
        return self._contrastive(q, k, queue), k

    def d_loss(self, D: nn.Module, real_views: tuple[torch.Tensor, torch.Tensor],
               fake_views: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """w_real * L_real + w_fake * L_fake for D and the heads; enqueues this batch's keys.

        `fake_views` should be detached from G (D step). Components land in `self.stats`.
        """
        loss_real, k_real = self.instance_loss(D, real_views, "real")
        loss_fake, k_fake = self.instance_loss(D, fake_views, "fake")
        self.enqueue(k_real, "real")
        self.enqueue(k_fake, "fake")
        self.stats["insgen_real"] = loss_real.detach()
        self.stats["insgen_fake"] = loss_fake.detach()
        return self.w_real * loss_real + self.w_fake * loss_fake

    def g_loss(self, D: nn.Module, fake_views: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """w_g * L_fake with gradients into G (views not detached); the queues are left unchanged."""
        loss, _ = self.instance_loss(D, fake_views, "fake")
        self.stats["insgen_g"] = loss.detach()
        return self.w_g * loss

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, kind: str) -> None:
        """Write `keys` [B, dim] into the ring buffer of `kind`, wrapping around at the end.

        Under DDP the keys of all ranks are gathered first (same batch size on every rank), so
        every rank holds the same queue. A batch larger than the queue keeps its last keys.
        """
        keys = distributed.all_gather_cat(keys.detach().float().contiguous())
        queue = self.real_queue if kind == "real" else self.fake_queue
        ptr = self.real_ptr if kind == "real" else self.fake_ptr
        count = self.real_count if kind == "real" else self.fake_count
        size, n = queue.shape[0], keys.shape[0]
        if n >= size:
            queue.copy_(keys[n - size:])
            ptr.zero_()
        else:
            start = int(ptr)
            first = min(n, size - start)
            queue[start:start + first] = keys[:first]
            queue[:n - first] = keys[first:]
            ptr.fill_((start + n) % size)
        count.add_(n)

    @torch.no_grad()
    def update_momentum(self, D: nn.Module) -> None:
        """EMA step of the key encoders towards D and the heads; D's buffers (SN u/sv) are copied.

        Call once after every D optimizer step.
        """
        D = unwrap(D)
        m = self.momentum
        pairs = [(self.D_momentum, D), (self.real_head_momentum, self.real_head),
                 (self.fake_head_momentum, self.fake_head)]
        for ema, live in pairs:
            ema_params, live_params = list(ema.parameters()), list(live.parameters())
            if len(ema_params) != len(live_params):
                raise ValueError("InsGen's momentum D no longer matches D's parameters; "
                                 "build InsGen after D's architecture is final")
            torch._foreach_lerp_(ema_params, [p.detach() for p in live_params], 1.0 - m)
            for b_ema, b in zip(ema.buffers(), live.buffers()):
                b_ema.copy_(b)

    @torch.no_grad()
    def sync_head_grads(self) -> None:
        """Average the heads' gradients over ranks (the heads are not inside any DDP wrapper).

        Call after backward and before InsGen's optimizer step; no-op in a single process.
        """
        if not distributed.is_distributed():
            return
        grads = [p.grad for p in self.trainable_parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(distributed.world_size())
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def queue_fill(self) -> dict[str, float]:
        """Fraction of each queue holding real keys (1.0 once it has wrapped); for logs."""
        return {"insgen_real_fill": min(1.0, int(self.real_count) / self.real_queue.shape[0]),
                "insgen_fake_fill": min(1.0, int(self.fake_count) / self.fake_queue.shape[0])}

