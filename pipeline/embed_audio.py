"""Audio files -> audio-encoder features, as the published ``test.py`` computes them (before normalising).

Each file is decoded to 16 kHz mono by the project's decode path (``pipeline.media``: other rates
resampled, channels downmixed by ffmpeg as ``(L + R) / sqrt(2)``; the published code reads a file at its
own rate and breaks on stereo), then goes through the checkpoint's own input
(``spectrogram`` stored with our checkpoints; the paper's 257 x 1004 for ``sound2scene.pth``) and the
network. For 16 kHz mono files this is exactly the published computation: tile to 10 s, cut, clip to
[-1, 1], scipy's spectrogram, log, z-score, ResNet-18, ReLU.

Edge cases have one defined outcome each: shorter clips are repeated, longer ones cut, loud samples
clipped, a silent clip gets an all-zero spectrogram (the published z-score would divide 0 by 1e-9), and a
file that cannot be decoded or holds NaN/inf samples gets a row of NaN plus an error message.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models.audio_encoder import AudioEncoder
from models.checkpoint import read_checkpoint
from pipeline import audio_input, media, shard_io
from pipeline.params import SpectrogramParams

SR = 16_000


def load_encoder(checkpoint: str | Path, device: torch.device) -> tuple[AudioEncoder, SpectrogramParams]:
    """The encoder (eval mode) and its input recipe: stored with ours, the paper's for a published file."""
    obj = read_checkpoint(checkpoint)
    model = AudioEncoder.from_checkpoint(obj).eval().to(device)
    spec = obj.get("spectrogram")
    sp = SpectrogramParams(**spec) if isinstance(spec, dict) else SpectrogramParams(kind="paper")
    if sp.kind == "paper":
        sp = dataclasses.replace(sp, float64=True)  # scipy-exact
    return model, sp


def decode(path: str | Path, n_samples: int) -> np.ndarray | str:
    """16 kHz mono float32 ``[M]`` (at most ``n_samples``; a little more is decoded, then cut) or an error."""
    wave = media.decode_audio(path, sr=SR, duration_s=n_samples / SR + 0.5)
    if isinstance(wave, str):
        return wave
    if wave.size == 0:
        return "no audio samples"
    if not np.isfinite(wave).all():
        return "non-finite audio samples (NaN or inf)"
    return wave[:n_samples]


@torch.no_grad()
def embed_files(paths: Sequence[str | Path], checkpoint: str | Path, *, batch: int = 16,
                device: torch.device = torch.device("cpu")) -> tuple[np.ndarray, list[str]]:
    """Features of ``paths`` in order: (``float32 [N, D]``, one error per path, "" when ok).

    Rows of failed paths are NaN. Clips are tiled/cut to the input length and batched.
    """
    model, sp = load_encoder(checkpoint, device)
    n, spec_fn = audio_input.n_samples(sp), audio_input.spectrogram_fn(sp)
    out = np.full((len(paths), model.config.embed_dim), np.nan, dtype=np.float32)
    errors = [""] * len(paths)
    for start in range(0, len(paths), batch):
        idx, waves = [], []
        for i in range(start, min(start + batch, len(paths))):
            wave = decode(paths[i], n)
            if isinstance(wave, str):
                errors[i] = wave
            else:
                idx.append(i)
                waves.append(shard_io.fit_samples(wave, n))
        if idx:
            x = torch.from_numpy(np.stack(waves)).to(device)
            out[idx] = model(spec_fn(x)).float().cpu().numpy()
    return out, errors
