"""Cross-replica batch norm (--cross_replica) with torch.nn.SyncBatchNorm.

BigGAN-PyTorch shipped its own synchronised BN with hand-written communication; here the
BN layers are converted to torch.nn.SyncBatchNorm, which does the all-reduce under DDP.

Models built with cross_replica=True hold their normalisation in plain nn.BatchNorm2d
submodules (`bn1.bn`, `output_layer.0.bn`, ... with `running_mean/running_var/
num_batches_tracked`, the keys of BigGAN-PyTorch's cross-replica checkpoints); the
class-conditional gain and bias are applied after it, per sample, which is exactly what the
synchronised statistics need. `convert_model` swaps those (and any other BatchNorm*d) for
SyncBatchNorm. Layers built without cross_replica normalise with F.batch_norm on their
`stored_mean/stored_var` buffers; those stay per replica (a warning says so).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

# Name kept from BigGAN-PyTorch's package for code that imports it.
SynchronizedBatchNorm2d = nn.SyncBatchNorm

_SYNC_DEVICES = ('cuda', 'xpu', 'hpu')


def _functional_bn_layers(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules()
            if 'stored_mean' in m._buffers and not isinstance(m, nn.modules.batchnorm._NormBase)]


def convert_model(model: nn.Module, process_group=None,
                  device: torch.device | str | None = None) -> nn.Module:
    """Convert every BatchNorm*d of model to torch.nn.SyncBatchNorm (call before wrapping in DDP).

    SyncBatchNorm only synchronises CUDA/XPU/HPU tensors; for a model on the CPU the model is
    returned unchanged with a warning (under gloo each process keeps its own statistics).
    Without an initialised process group SyncBatchNorm behaves like BatchNorm2d.
    device: where the model will run (default: where its parameters are now).
    """
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise ValueError("sync_batchnorm.convert_model: convert the bare model before "
                         "wrapping it in DataParallel/DistributedDataParallel")
    functional = _functional_bn_layers(model)
    if functional:
        warnings.warn(f"--cross_replica: {len(functional)} BN layers (e.g. {functional[0]}) use "
                      "per-replica statistics; build the model with cross_replica=True to "
                      "synchronise them")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else 'cpu'
    device = torch.device(device).type
    if device not in _SYNC_DEVICES:
        warnings.warn(f"--cross_replica: torch.nn.SyncBatchNorm cannot synchronise {device} "
                      "tensors; BN statistics stay per process")
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group)


def count_sync_bn(model: nn.Module) -> int:
    """Number of SyncBatchNorm layers in model."""
    return sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())


__all__ = ['SynchronizedBatchNorm2d', 'convert_model', 'count_sync_bn']
