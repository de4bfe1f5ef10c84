"""The evaluator: a narrow ResNet classifier of frames, trained on the dataset's own labelled frames.

It plays the part of the paper's fine-tuned Inception: its average-pool feature serves FID, its class
logits serve IS and R@k. A second head regresses the drawn source size (the source's diameter as a
fraction of the frame side), which is how the volume control measures the drawn size in a generated
image without hand-made segmentation.

Input: RGB ``Tensor[B, 3, H, W]`` in [-1, 1] at any size; it is resized (bilinear, antialiased) to
``image_size`` inside :meth:`Evaluator.forward`, so real frames and generated images of any resolution
take the same path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.resnet import BasicBlock

from models.checkpoint import FromCheckpoint
from models.resnet import ResNetTrunk


@dataclass(frozen=True)
class EvaluatorConfig:
    """Evaluator size.

    Attributes:
        n_classes: number of classes (the class names are stored beside the checkpoint's weights).
        width: planes of the first ResNet stage (the last map has ``8 * width`` channels).
        layers: BasicBlocks per stage (``(2, 2, 2, 2)`` = ResNet-18).
        image_size: the square input the trunk sees.
        stem: ``imagenet`` (7x7 stride-2 conv + max pool: /4) or ``small`` (3x3 stride-2 conv, no pool: /2,
            which keeps the fine shapes and textures of small frames).
        pool: ``avg`` (global average of the last map) or ``avgmax`` (average and maximum, concatenated: a small
            source is not averaged away by the background around it).
    """

    n_classes: int = 8
    width: int = 16
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    image_size: int = 64
    stem: Literal["imagenet", "small"] = "small"
    pool: Literal["avg", "avgmax"] = "avgmax"

    def __post_init__(self) -> None:  # a stored checkpoint config gives a list
        object.__setattr__(self, "layers", tuple(self.layers))


class EvaluatorOutput(NamedTuple):
    """``logits [B, n_classes]``, ``size [B]`` (fraction of the frame side, in [0, 1]), ``pool [B, D]`` with
    D = ``8 * width`` (``avg``) or ``16 * width`` (``avgmax``)."""

    logits: Tensor
    size: Tensor
    pool: Tensor


class Evaluator(nn.Module, FromCheckpoint):
    """``Tensor[B, 3, H, W]`` in [-1, 1] -> :class:`EvaluatorOutput`."""

    config_cls = EvaluatorConfig
    official_prefix = ""  # there is no published evaluator

    def __init__(self, config: EvaluatorConfig = EvaluatorConfig()):
        super().__init__()
        self.config = config
        self.trunk = ResNetTrunk(BasicBlock, config.layers, in_channels=3, width=config.width)
        if config.stem == "small":
            self.trunk.conv1 = nn.Conv2d(3, config.width, kernel_size=3, stride=2, padding=1, bias=False)
            nn.init.kaiming_normal_(self.trunk.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.trunk.maxpool = nn.Identity()
        dim = self.trunk.out_dim * (2 if config.pool == "avgmax" else 1)
        self.classifier = nn.Linear(dim, config.n_classes)
        self.size_head = nn.Linear(dim, 1)

    @property
    def num_features(self) -> int:
        """Pool feature size (torchmetrics reads this attribute of a custom feature extractor)."""
        return self.classifier.in_features

    def prepare(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> ``[B, 3, S, S]`` float32, S = ``image_size``."""
        x = images.float()
        s = self.config.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return x

    def forward(self, images: Tensor) -> EvaluatorOutput:
        fmap = self.trunk.feature_map(self.prepare(images))
        pool = fmap.mean(dim=(2, 3))
        if self.config.pool == "avgmax":
            pool = torch.cat([pool, fmap.amax(dim=(2, 3))], dim=1)
        return EvaluatorOutput(self.classifier(pool), torch.sigmoid(self.size_head(pool)).squeeze(1), pool)


class PoolFeatures(nn.Module):
    """The evaluator's pool feature ``[B, D]`` of images in [-1, 1]: FID's feature extractor."""

    def __init__(self, evaluator: Evaluator):
        super().__init__()
        self.evaluator = evaluator.eval()
        self.num_features = evaluator.num_features

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.evaluator(images).pool


class ClassLogits(nn.Module):
    """The evaluator's class logits ``[B, C]`` of images in [-1, 1]: the Inception Score's classifier."""

    def __init__(self, evaluator: Evaluator):
        super().__init__()
        self.evaluator = evaluator.eval()

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.evaluator(images).logits
