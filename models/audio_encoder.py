"""Audio encoder: ResNet-18 on a 1-channel spectrogram, average pool, Linear(512 -> D), ReLU.

This is the published Sound2Scene audio net (``AVENet.audnet``, ``resnet18(num_classes=2048,
pool="avgpool")``): its forward is ``relu(fc(flatten(avgpool(layer4(...)))))`` and ``test.py`` feeds
that ReLU output, L2-normalised, to the generator. Nothing follows the ReLU. The state-dict keys are
the published ones without their ``audnet.`` prefix, so ``sound2scene.pth`` loads strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from models.checkpoint import FromCheckpoint
from models.resnet import RESNET18_LAYERS, ResNetTrunk


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Audio encoder size.

    Attributes:
        width: planes of the first ResNet stage (64 = the paper; the trunk ends at ``8 * width``).
        embed_dim: output dimension D (2048 = the paper, the image feature size).
    """

    width: int = 64
    embed_dim: int = 2048


class AudioEncoder(ResNetTrunk, FromCheckpoint):
    """``Tensor[B, 1, F, T]`` spectrogram -> ``Tensor[B, D]`` non-negative embedding z_A.

    ``AudioEncoder.from_checkpoint(path)`` reads an own-format file or ``sound2scene.pth``.
    """

    config_cls = AudioEncoderConfig
    official_prefix = "audnet."

    def __init__(self, config: AudioEncoderConfig = AudioEncoderConfig()):
        super().__init__(BasicBlock, RESNET18_LAYERS, in_channels=1, width=config.width)
        self.config = config
        self.fc = nn.Linear(self.out_dim, config.embed_dim)

    def pooled(self, spec: Tensor) -> Tensor:
        """``Tensor[B, 1, F, T]`` -> average-pooled trunk feature ``Tensor[B, 8 * width]``."""
        return super().forward(spec)

    def forward(self, spec: Tensor) -> Tensor:
        """``Tensor[B, 1, F, T]`` -> ``relu(fc(pooled))``, ``Tensor[B, D]`` (not normalised)."""
        return torch.relu(self.fc(self.pooled(spec)))
