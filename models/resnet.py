"""ResNet trunk with a channel-width option, key-compatible with torchvision.

The state-dict keys (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0`` ...) are the
ones torchvision's ResNet uses, which is also what the published Sound2Scene audio net (``audnet.*``)
and SwAV's ResNet-50 (``module.*``) store. SwAV pads by 1 with a ``ConstantPad2d`` and then convolves
with padding 2; that is the same as torchvision's padding 3, so one trunk serves both.

At ``width=64`` the trunk is exactly torchvision's ResNet-18 / ResNet-50; a smaller ``width`` scales
every stage (``width, 2 width, 4 width, 8 width`` planes) for the narrow CPU-sized models.
"""

from __future__ import annotations

from typing import Sequence, Type

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

Block = Type[BasicBlock] | Type[Bottleneck]

RESNET18_LAYERS = (2, 2, 2, 2)
RESNET50_LAYERS = (3, 4, 6, 3)


class ResNetTrunk(nn.Module):
    """Stem, four residual stages and a global average pool.

    Args:
        block: ``BasicBlock`` (ResNet-18/34) or ``Bottleneck`` (ResNet-50).
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)``.
        in_channels: input channels (1 for spectrograms, 3 for RGB).
        width: planes of the first stage (64 in the published nets).

    ``forward``: ``Tensor[B, in_channels, H, W]`` -> ``Tensor[B, out_dim]`` with
    ``out_dim = 8 * width * block.expansion`` (512 for ResNet-18, 2048 for ResNet-50 at width 64).
    """

    def __init__(self, block: Block, layers: Sequence[int], *, in_channels: int, width: int = 64):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        self._inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(block, width, layers[0], stride=1)
        self.layer2 = self._make_stage(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_stage(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_stage(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.out_dim = 8 * width * block.expansion
        self._init_weights()

    def _make_stage(self, block: Block, planes: int, n_blocks: int, *, stride: int) -> nn.Sequential:
        out = planes * block.expansion
        downsample = None
        if stride != 1 or self._inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out),
            )
        blocks = [block(self._inplanes, planes, stride, downsample)]
        self._inplanes = out
        blocks += [block(out, planes) for _ in range(1, n_blocks)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_map(self, x: Tensor) -> Tensor:
        """``Tensor[B, C, H, W]`` -> last stage map ``Tensor[B, out_dim, H/32, W/32]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        """``Tensor[B, C, H, W]`` -> average-pooled feature ``Tensor[B, out_dim]``."""
        return torch.flatten(self.avgpool(self.feature_map(x)), 1)
