"""GAN training helpers shared by the generator stages: hinge losses and the EMA generator update."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def d_hinge_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean(relu(1 - D(real))) + mean(relu(1 + D(fake))); scores [B, 1]."""
    return torch.mean(F.relu(1.0 - d_real)) + torch.mean(F.relu(1.0 + d_fake))


def g_hinge_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -mean(D(G(z)))."""
    return -torch.mean(d_fake)


@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, over every state-dict entry (parameters and buffers:
    BN statistics and spectral-norm vectors too, as the published BigGAN ``ema`` does).

    Entries that are not floating point are copied. ``decay=0`` copies the model (use it before the EMA
    start step).
    """
    source = model.state_dict()
    for key, target in ema_model.state_dict().items():
        value = source[key].detach()
        if target.is_floating_point():
            target.copy_(target * decay + value * (1.0 - decay))
        else:
            target.copy_(value)
