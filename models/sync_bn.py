"""BatchNorm whose training statistics cover the global batch of all DDP ranks, on any backend.

``torch.nn.SyncBatchNorm`` refuses CPU modules (gloo); this layer all-reduces per-channel sums with
the autograd-aware ``torch.distributed.nn.all_reduce`` instead, so one process with batch B and W
processes with batch B / W each compute the same normalisation and the same gradients. Outside
training, or without an initialised process group of more than one rank, it is ``nn.BatchNorm2d``.
The state-dict keys are BatchNorm2d's, so checkpoints do not change.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.nn import all_reduce


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``Tensor[B, C, H, W]`` -> same shape, normalised with the statistics of every rank's batch."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=torch.float32)
        xf = x.float()
        stats = all_reduce(torch.cat([xf.sum(dims), xf.square().sum(dims), count]))
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean.square()).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * n / (n - 1).clamp_min(1.0)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
                self.num_batches_tracked.add_(1)
        shape = (1, c, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_global_bn(module: nn.Module) -> nn.Module:
    """Swap every ``nn.BatchNorm2d`` of ``module`` (in place) for :class:`GlobalBatchNorm2d`, same state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats, device=child.weight.device)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_global_bn(child)
    return module
