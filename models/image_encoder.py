"""Image encoder: SwAV ResNet-50 whose 2048-d average-pool feature conditions the generator.

The trunk is torchvision's ResNet-50 layout (SwAV's own ``ConstantPad2d(1)`` + ``padding=2`` stem is
the same computation as torchvision's ``padding=3``). The published pipeline (IC-GAN's
``load_pretrained_feature_extractor``) uses the flattened average pool of ``layer4`` as the feature;
SwAV's projection head ``Linear -> BatchNorm1d -> ReLU -> Linear`` and its prototypes are kept here so
that ``swav_800ep_pretrain.pth.tar`` (keys ``module.*``) loads strictly and SwAV training can go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.resnet import Bottleneck

from models.checkpoint import FromCheckpoint, Source, load_model, read_checkpoint
from models.resnet import RESNET50_LAYERS, ResNetTrunk


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Image encoder size (defaults: SwAV ResNet-50, 800 epochs release).

    Attributes:
        width: planes of the first ResNet stage (64 = ResNet-50; feature dim is ``32 * width``).
        hidden_dim: hidden size of the projection MLP (SwAV ``hidden_mlp``).
        proj_dim: projection output size (SwAV ``feat_dim``).
        n_prototypes: number of prototype vectors (SwAV ``nmb_prototypes``).
        stem: ``imagenet`` (the published 7x7 stride-2 conv + max pool: /4) or ``small`` (3x3 stride-2 conv,
            no pool: /2), so that small frames keep their fine textures and outlines into the first stage.
    """

    width: int = 64
    hidden_dim: int = 2048
    proj_dim: int = 128
    n_prototypes: int = 3000
    stem: str = "imagenet"


class ImageEncoder(ResNetTrunk, FromCheckpoint):
    """``Tensor[B, 3, H, W]`` normalised RGB -> ``Tensor[B, 32 * width]`` feature (2048 at full size).

    ``ImageEncoder.from_checkpoint(path)`` reads an own-format file or the published SwAV file.
    """

    config_cls = ImageEncoderConfig
    official_prefix = "module."

    def __init__(self, config: ImageEncoderConfig = ImageEncoderConfig()):
        if config.stem not in ("imagenet", "small"):
            raise ValueError(f"stem must be 'imagenet' or 'small', got {config.stem!r}")
        super().__init__(Bottleneck, RESNET50_LAYERS, in_channels=3, width=config.width)
        self.config = config
        if config.stem == "small":
            self.conv1 = nn.Conv2d(3, config.width, kernel_size=3, stride=2, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()
        self.projection_head = nn.Sequential(
            nn.Linear(self.out_dim, config.hidden_dim),
            nn.BatchNorm1d(config.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden_dim, config.proj_dim),
        )
        self.prototypes = nn.Linear(config.proj_dim, config.n_prototypes, bias=False)

    def project(self, feature: Tensor) -> Tensor:
        """``Tensor[B, out_dim]`` -> unit-norm SwAV embedding ``Tensor[B, proj_dim]``."""
        return F.normalize(self.projection_head(feature), dim=1, p=2)

    def swav_forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``Tensor[B, 3, H, W]`` -> (embedding ``[B, proj_dim]``, prototype scores ``[B, K]``)."""
        z = self.project(self(images))
        return z, self.prototypes(z)

    @torch.no_grad()
    def normalize_prototypes_(self) -> None:
        """Rescale every prototype vector to unit norm, in place (SwAV does this each step)."""
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1, p=2))


PUBLISHED_INPUT = 224  # the published input: Resize((256, 256)), then bicubic to 224


def load_encoder(src: Source) -> tuple[ImageEncoder, int]:
    """(encoder in eval mode, input size) from our checkpoint or a published SwAV file, strictly.

    Our checkpoints store ``input_size`` (the square images are resized to; 224 = the published input);
    a published file has no such key and gets 224.
    """
    blob: Mapping[str, Any] = read_checkpoint(src)
    model = load_model(ImageEncoder, ImageEncoderConfig, blob, official_prefix=ImageEncoder.official_prefix)
    return model.eval(), stored_input_size(blob) or PUBLISHED_INPUT


def stored_input_size(blob: Mapping[str, Any]) -> int | None:
    """The input size an own checkpoint says its encoder was trained on; None when it does not say (a
    published file, or an own file written without ``input_size``)."""
    size = blob.get("input_size") if "model" in blob else None
    return None if size is None else int(size)
