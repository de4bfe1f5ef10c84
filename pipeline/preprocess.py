"""Image preprocessing of the published pipeline (``a2s_dataloader.py``).

* Image-encoder input: PIL RGB -> ``Resize((256, 256))`` (bilinear, PIL) -> ``ToTensor`` -> ImageNet
  mean/std -> ``interpolate(size=224, mode="bicubic", align_corners=True)``.
* Generator-comparison image (what generated 128 px images are compared with): ``Resize((128, 128))``
  -> ``ToTensor`` -> mean/std 0.5 -> bicubic to 128 (align_corners=True) -> clamp to [-1, 1].

The resize goes through PIL, as in the published code, so the numbers match it; a tensor resize
would antialias differently.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ImageLike = Image.Image | np.ndarray


def to_pil_rgb(image: ImageLike) -> Image.Image:
    """A PIL RGB image from a PIL image (any mode) or a ``uint8`` array ``[H, W, 3]`` / ``[H, W]``."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 [H, W, 3] array, got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    return image.convert("RGB")


def _resized_tensor(image: ImageLike, size: int, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """PIL bilinear ``Resize((size, size))``, ``ToTensor``, normalise: ``Tensor[1, 3, size, size]``."""
    pil = TF.resize(to_pil_rgb(image), [size, size], interpolation=InterpolationMode.BILINEAR)
    return TF.normalize(TF.to_tensor(pil), list(mean), list(std)).unsqueeze(0)


def encoder_input(image: ImageLike) -> Tensor:
    """The published image-encoder input, ``Tensor[3, 224, 224]`` float32."""
    x = _resized_tensor(image, 256, IMAGENET_MEAN, IMAGENET_STD)
    return F.interpolate(x, size=224, mode="bicubic", align_corners=True)[0]


def resized_input(image: ImageLike, size: int) -> Tensor:
    """A narrow encoder's input: PIL bilinear ``Resize((size, size))``, ImageNet mean/std, ``[3, S, S]``."""
    return _resized_tensor(image, size, IMAGENET_MEAN, IMAGENET_STD)[0]


def encoder_tensor(image: ImageLike, size: int | None) -> Tensor:
    """An image encoder's input ``Tensor[3, S, S]``: the published one (S = 224) when ``size`` is None,
    else :func:`resized_input` at ``size``."""
    return encoder_input(image) if size is None else resized_input(image, size)


def generator_target(image: ImageLike) -> Tensor:
    """The published 128 px comparison image, ``Tensor[3, 128, 128]`` in [-1, 1]."""
    x = _resized_tensor(image, 128, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return F.interpolate(x, size=128, mode="bicubic", align_corners=True)[0].clamp(-1.0, 1.0)


def encoder_batch(images: Sequence[ImageLike]) -> Tensor:
    """:func:`encoder_input` of each image, stacked: ``Tensor[B, 3, 224, 224]``."""
    return torch.stack([encoder_input(im) for im in images])


def generator_batch(images: Sequence[ImageLike]) -> Tensor:
    """:func:`generator_target` of each image, stacked: ``Tensor[B, 3, 128, 128]``."""
    return torch.stack([generator_target(im) for im in images])
