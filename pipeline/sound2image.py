"""The models behind ``s2s generate / interpolate / edit``, loaded once, and the features they give.

Files: the pipeline's artifacts by default (``artifacts/audio_encoder.pt``, ``artifacts/generator.pt``,
``artifacts/image_encoder.pt``), or with ``official=DIR`` the published ones: ``DIR/sound2scene.pth``,
``DIR/icgan_biggan_imagenet_res128/`` and ``DIR/swav.pth.tar`` (or ``swav_800ep_pretrain.pth.tar``).
A published audio net gets the published input (257 x 1004 scipy-exact spectrogram, in torch, float64),
so its features are the published ``test.py``'s; the generator is the published forward pass.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from models.audio_encoder import AudioEncoder
from models.biggan import Generator
from models.biggan_io import load_generator
from models.checkpoint import CheckpointMismatchError, CheckpointReadError
from models.image_encoder import PUBLISHED_INPUT, ImageEncoder, load_encoder
from pipeline import audio_input
from pipeline.embed_audio import load_encoder as load_audio_encoder
from pipeline.inputs import InputError
from pipeline.params import SpectrogramParams
from pipeline.preprocess import encoder_input, resized_input

DEFAULTS = (Path("artifacts/audio_encoder.pt"), Path("artifacts/generator.pt"), Path("artifacts/image_encoder.pt"))
OFFICIAL_SWAV = ("swav.pth.tar", "swav_800ep_pretrain.pth.tar")
T = TypeVar("T")


@dataclass(frozen=True)
class ModelFiles:
    """Where the three models come from."""

    audio: Path
    generator: Path
    image: Path


def model_files(official: Path | None, audio: Path | None = None, generator: Path | None = None,
                image: Path | None = None) -> ModelFiles:
    """Explicit paths win; then ``official`` (a folder of published files); then the artifacts."""
    defaults = DEFAULTS
    if official is not None:
        if not official.is_dir():
            raise InputError(f"--official {official} is not a folder")
        swav = next((official / n for n in OFFICIAL_SWAV if (official / n).is_file()), official / OFFICIAL_SWAV[0])
        defaults = (official / "sound2scene.pth", official / "icgan_biggan_imagenet_res128", swav)
    return ModelFiles(audio or defaults[0], generator or defaults[1], image or defaults[2])


def _load(path: Path, what: str, fn: Callable[[Path], T]) -> T:
    """``fn(path)`` with every failure turned into one :class:`InputError` sentence naming ``what``."""
    if not path.exists():
        raise InputError(f"no {what} at {path}")
    try:
        return fn(path)
    except CheckpointMismatchError as exc:
        msg = str(exc).splitlines()[0]
        raise InputError(f"the {what} " + (msg if str(path) in msg else f"{path}: {msg}")) from None
    except CheckpointReadError:
        raise InputError(f"cannot read the {what} {path} (empty, truncated or not a checkpoint)") from None
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(f"the {what} {path}: {str(exc).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read the {what} {path} (truncated or not a checkpoint: "
                         f"{type(exc).__name__})") from None


@dataclass
class Models:
    """The loaded models (eval mode, on ``device``); ``audio`` / ``image`` are None when not asked for."""

    G: Generator
    device: torch.device
    audio: AudioEncoder | None = None
    spec: SpectrogramParams | None = None
    image: ImageEncoder | None = None
    image_size: int = PUBLISHED_INPUT

    @property
    def n_samples(self) -> int:
        """16 kHz samples one clip is tiled/cut to (160000 for the paper)."""
        assert self.spec is not None, "no audio encoder loaded"
        return audio_input.n_samples(self.spec)


def _check_dim(dim: int, what: str, G: Generator, files: ModelFiles) -> None:
    if dim != G.cfg.feat_dim:
        raise InputError(f"the {what} gives {dim}-d features but the generator {files.generator} takes "
                         f"{G.cfg.feat_dim}-d ones (models of different runs?)")


def load(files: ModelFiles, device: torch.device, *, audio: bool = True, image: bool = False) -> Models:
    """Load the generator and, when asked for, the audio and image encoders; their sizes must agree."""
    G = _load(files.generator, "generator", load_generator).to(device)
    m = Models(G=G, device=device)
    if audio:
        m.audio, m.spec = _load(files.audio, "audio encoder", lambda p: load_audio_encoder(p, device))
        _check_dim(m.audio.config.embed_dim, "audio encoder", G, files)
    if image:
        enc, m.image_size = _load(files.image, "image encoder", load_encoder)
        m.image = enc.to(device)
        _check_dim(m.image.out_dim, "image encoder", G, files)
    return m


@torch.no_grad()
def encode_audio(m: Models, waves: np.ndarray, batch: int = 16) -> tuple[Tensor, Tensor]:
    """``waves: float32 [N, n_samples]`` -> (features ``[N, D]`` before normalising, spectrograms
    ``[N, F, T]``), both float32 on the CPU. Batches of ``batch`` clips; the spectrogram runs in torch."""
    assert m.audio is not None and m.spec is not None, "no audio encoder loaded"
    spec_fn = audio_input.spectrogram_fn(m.spec)
    feats, specs = [], []
    for s in range(0, len(waves), batch):
        x = spec_fn(torch.from_numpy(np.ascontiguousarray(waves[s:s + batch])).to(m.device))
        feats.append(m.audio(x).float().cpu())
        specs.append(x[:, 0].float().cpu())
    return torch.cat(feats), torch.cat(specs)


@torch.no_grad()
def encode_images(m: Models, images: Sequence[Image.Image]) -> Tensor:
    """Image-encoder features ``[N, D]`` (before normalising, CPU) of PIL images, with the encoder's input:
    the published one (Resize 256, ImageNet mean/std, bicubic 224) for 224, else an S x S resize."""
    assert m.image is not None, "no image encoder loaded"
    if not images:
        return torch.zeros(0, m.image.out_dim)
    size = m.image_size
    x = torch.stack([encoder_input(im) if size == PUBLISHED_INPUT else resized_input(im, size) for im in images])
    return m.image(x.to(m.device)).float().cpu()
