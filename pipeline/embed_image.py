"""Image files -> image-encoder features (``s2s embed-image``), as the published pipeline computes them.

Input recipe: a published SwAV file (keys ``module.*``) gets the published input (PIL RGB,
``Resize((256, 256))`` bilinear, ``ToTensor``, ImageNet mean/std, bicubic to 224 with
``align_corners=True``); our ``image_encoder.pt`` gets its stored ``input_size``: 224 means the published
input (what the train_image_encoder stage stores for published weights), any other S a bilinear resize to
S x S with the same statistics (the narrow world encoder). The feature is the 2048-d (``32 * width``)
average pool of ``layer4``, not normalised.

Inputs are all-or-nothing: a missing or unreadable image, or a checkpoint that does not load, raises
:class:`EmbedImageError` (one sentence) before anything is written.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from models.checkpoint import CheckpointMismatchError, CheckpointReadError
from models.image_encoder import PUBLISHED_INPUT, ImageEncoder, load_encoder
from pipeline.preprocess import encoder_tensor


class EmbedImageError(ValueError):
    """An input of ``embed-image`` that cannot be used; the message is one sentence."""


def load(checkpoint: str | Path) -> tuple[ImageEncoder, int | None]:
    """(encoder in eval mode, input size; None = the published 256 -> 224 input) of ``checkpoint``."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise EmbedImageError(f"no image encoder checkpoint at {checkpoint}")
    try:
        model, size = load_encoder(checkpoint)
    except (CheckpointMismatchError, CheckpointReadError) as exc:
        raise EmbedImageError(str(exc).splitlines()[0]) from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, AttributeError) as exc:
        raise EmbedImageError(f"cannot read {checkpoint} as a checkpoint (truncated or not a torch file: "
                              f"{type(exc).__name__})") from None
    return model, None if size == PUBLISHED_INPUT else size


def read_image(path: str | Path) -> Image.Image:
    """The image at ``path`` fully decoded, in RGB; EmbedImageError when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise EmbedImageError(f"no such image: {path}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # convert() decodes every pixel: a truncated file fails here
    except Exception as exc:  # PIL raises many types for corrupt files
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EmbedImageError(f"cannot read {path} as an image ({why})") from None


@torch.no_grad()
def embed_files(paths: Sequence[str | Path], checkpoint: str | Path, *, batch: int = 32,
                device: torch.device = torch.device("cpu")) -> np.ndarray:
    """Features of the images at ``paths``, in order: ``float32 [N, 32 * width]`` (2048 for ResNet-50)."""
    for p in paths:  # fail on a missing file before the (slow) checkpoint load
        if not Path(p).is_file():
            raise EmbedImageError(f"no such image: {p}")
    model, size = load(checkpoint)
    model = model.to(device)
    out = np.zeros((len(paths), model.out_dim), dtype=np.float32)
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        x = torch.stack([encoder_tensor(read_image(p), size) for p in chunk]).to(device)
        out[start:start + len(chunk)] = model(x).float().cpu().numpy()
    return out
