"""Drawing scenes from sound files and steering them: ``s2s generate`` (files) and ``s2s interpolate``.

Noise: ``n`` vectors drawn once from the seed (or read from a file) are shared by every input, so column k
of a grid holds the same noise for every sound and the sounds are what differs. Features are the audio
(or image) encoder's output, L2-normalised before the generator, as the published ``test.py`` does.
Interpolation runs over unit features: ``slerp`` (default; every step stays on the unit sphere the
generator was trained on) or ``lerp`` (straight line, renormalised by the generator).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from pipeline import inputs, pictures
from pipeline.features import save_npy
from pipeline.inputs import InputError
from pipeline.generate import generate, load_array, truncated_noise, write
from pipeline.sound2image import Models, encode_audio, encode_images


def noise(m: Models, n: int, path: Path | None, truncation: float | None, seed: int) -> np.ndarray:
    """``float32 [n, dim_z]``: the rows of ``path`` (all of them; ``n`` is then ignored) or drawn from ``seed``."""
    if path is None:
        if n < 1:
            raise InputError(f"--n must be at least 1, got {n}")
        return truncated_noise(n, m.G.dim_z, truncation, seed).numpy()
    z = load_array(path, "noise")
    if z.ndim != 2 or z.shape[1] != m.G.dim_z or len(z) == 0:
        raise InputError(f"noise must be [n, {m.G.dim_z}] (one row per image of each input), got {list(z.shape)}")
    return z


def write_rows(out: Path, names: Sequence[str], specs: Tensor, images: Tensor) -> list[Path]:
    """``images [N, n, 3, R, R]`` -> ``out/NAME_KK.png`` each, and ``out/grid.png``: one row per input,
    headed by its spectrogram ``specs[i]`` (drawn R high, 2R wide)."""
    r = images.shape[-1]
    written, rows = [], []
    for name, spec, row in zip(names, specs, images):
        tiles = pictures.to_uint8(row)
        written += [pictures.save_png(t, out / f"{name}_{k:02d}.png") for k, t in enumerate(tiles)]
        rows.append([pictures.spectrogram_picture(spec, r, 2 * r), *tiles])
    written.append(pictures.save_png(pictures.sheet(rows), out / "grid.png"))
    return written


def generate_from_sounds(m: Models, names: Sequence[str], heard: Sequence[np.ndarray], z: np.ndarray, out: Path,
                         *, batch: int = 16, save_features: Path | None = None) -> list[Path]:
    """Images of every heard waveform (``pipeline.inputs.listen``) x every noise row; ``out`` ending .npy:
    float32 ``[N * n, 3, R, R]`` (input-major), else PNGs and a grid (:func:`write_rows`).
    ``save_features``: the raw features ``[N, D]`` as .npy."""
    waves = np.stack([inputs.fit(w, m.n_samples) for w in heard])
    feats, specs = encode_audio(m, waves, batch)
    if save_features is not None:
        save_npy(save_features, feats.numpy())
    n = len(z)
    images = generate(m.G, np.repeat(feats.numpy(), n, axis=0), np.tile(z, (len(waves), 1)), batch=batch)
    if out.suffix == ".npy":
        return write(images, out)
    return write_rows(out, names, specs, images.view(len(waves), n, *images.shape[1:]))


def endpoint(m: Models, source: np.ndarray | Image.Image) -> tuple[Tensor, np.ndarray]:
    """(feature ``[D]``, picture ``uint8 [R, w, 3]``) of a heard waveform (its spectrogram) or an image."""
    r = m.G.cfg.resolution
    if isinstance(source, Image.Image):
        return encode_images(m, [source])[0], pictures.fit(source, r)
    feats, specs = encode_audio(m, inputs.fit(source, m.n_samples)[None])
    return feats[0], pictures.spectrogram_picture(specs[0], r, 2 * r)


def path_between(a: Tensor, b: Tensor, steps: int, mode: str = "slerp") -> Tensor:
    """``steps`` features from unit(a) to unit(b), both ends included: ``[steps, D]``."""
    if steps < 2:
        raise InputError(f"--steps must be at least 2, got {steps}")
    if mode not in ("slerp", "lerp"):
        raise InputError(f"--mode must be slerp or lerp, got {mode!r}")
    a, b = F.normalize(a.double(), dim=0), F.normalize(b.double(), dim=0)
    t = torch.linspace(0, 1, steps, dtype=torch.float64)[:, None]
    omega = math.acos(float((a @ b).clamp(-1.0, 1.0)))
    if mode == "lerp" or omega < 1e-6:
        return ((1 - t) * a + t * b).float()
    return ((torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / math.sin(omega)).float()


def interpolate(m: Models, a: np.ndarray | Image.Image, b: np.ndarray | Image.Image, out: Path, z: np.ndarray, *,
                steps: int, mode: str) -> tuple[Path, Tensor]:
    """A strip ``[picture of A, steps images, picture of B]`` at ``out``; returns (path, images ``[steps, 3, R, R]``).
    A and B are heard waveforms or images (see :func:`endpoint`)."""
    (fa, pa), (fb, pb) = endpoint(m, a), endpoint(m, b)
    feats = path_between(fa, fb, steps, mode)
    images = generate(m.G, feats.numpy(), np.repeat(z[:1], steps, axis=0))
    strip = pictures.sheet([[pa, *pictures.to_uint8(images), pb]])
    return pictures.save_png(strip, out), images
