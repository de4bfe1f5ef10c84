"""``s2s edit``: put a real image into the generator, then move it with a sound (paper Fig. 7).

1. Inversion: the target is the image at the generator's resolution in [-1, 1] (at 128 px the published
   comparison image, ``pipeline.preprocess.generator_target``). Starting from z = 0 and the image
   encoder's feature of the image (IC-GAN's own conditioning for that image), Adam optimises z and the
   feature h together to minimise ``MSE + L1`` between ``G(z, unit(h))`` and the target, the generator
   frozen in eval mode. The error before and after is reported (MSE, L1, PSNR with peak-to-peak 2).
2. Direction, on unit features: ``d = unit(z_A(AUDIO x gain hi)) - unit(z_A(AUDIO x gain lo))`` (louder
   minus quieter, default gains 2 and 0.5), or with AUDIO2 ``d = unit(z_A(AUDIO2)) - unit(z_A(AUDIO))``.
   The sounds are decoded before the models load (``pipeline.inputs.edit_sounds``).
3. Edit: ``G(z, unit(h) + s * d)`` for ``s`` from 0 (the reconstruction) to the strength.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.transforms import functional as TF
from tqdm import tqdm

from models.biggan import Generator
from pipeline import inputs, pictures
from pipeline.generate import generate
from pipeline.inputs import InputError
from pipeline.atomic import write_json
from pipeline.preprocess import generator_target
from pipeline.sound2image import Models, encode_audio, encode_images


def target_image(image: Image.Image, resolution: int) -> Tensor:
    """``Tensor[1, 3, R, R]`` in [-1, 1]: the published 128 px recipe at 128, else a bilinear resize."""
    if resolution == 128:
        return generator_target(image)[None]
    return TF.to_tensor(image.resize((resolution, resolution), Image.BILINEAR))[None] * 2 - 1


def errors(x: Tensor, target: Tensor) -> dict[str, float]:
    """MSE, L1 and PSNR (peak-to-peak 2) of images in [-1, 1]."""
    mse = float(F.mse_loss(x, target))
    return {"mse": mse, "l1": float(F.l1_loss(x, target)), "psnr_db": 10 * math.log10(4.0 / max(mse, 1e-12))}


def invert(G: Generator, target: Tensor, h0: Tensor, *, steps: int, lr: float) -> tuple[Tensor, Tensor, dict]:
    """Optimise ``z [1, dim_z]`` (from 0) and ``h [1, D]`` (from ``h0 [D]``) so that ``G(z, unit(h))`` matches
    ``target [1, 3, R, R]``; returns (z, h, {"start": errors, "end": errors, "steps"})."""
    dev = next(G.parameters()).device
    target = target.to(dev)
    z = torch.zeros(1, G.dim_z, device=dev, requires_grad=True)
    h = h0.detach().clone()[None].to(dev).requires_grad_(True)
    G.eval().requires_grad_(False)
    opt = torch.optim.Adam([z, h], lr=lr)
    with torch.no_grad():
        start = errors(G(z, feature=F.normalize(h, dim=1)), target)
    for _ in tqdm(range(steps), desc="inversion", unit="step", leave=False):
        x = G(z, feature=F.normalize(h, dim=1))
        loss = F.mse_loss(x, target) + F.l1_loss(x, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = errors(G(z, feature=F.normalize(h, dim=1)), target)
    return z.detach().cpu(), h.detach().cpu(), {"start": start, "end": end, "steps": steps}


def direction(m: Models, sounds: list[np.ndarray]) -> Tensor:
    """``[D]``: unit feature of ``sounds[0]`` minus that of ``sounds[1]`` (``pipeline.inputs.edit_sounds``)."""
    feats = F.normalize(encode_audio(m, np.stack([inputs.fit(w, m.n_samples) for w in sounds]))[0], dim=1)
    return feats[0] - feats[1]


def edit(m: Models, image: Image.Image, sounds: list[np.ndarray], out: Path, *, strength: float, steps: int = 100,
         lr: float = 0.05, frames: int = 5, about: dict | None = None) -> dict:
    """Write ``out/{target,before,after,strip}.png`` and ``out/edit.json`` (with ``about`` in it); return the
    report. ``sounds``: the two waveforms of :func:`direction`."""
    if steps < 0 or frames < 2 or not lr > 0:
        raise InputError(f"need --steps >= 0, --frames >= 2 and --lr > 0 (got {steps}, {frames}, {lr:g})")
    target = target_image(image, m.G.cfg.resolution)
    d = direction(m, sounds)
    z, h, err = invert(m.G, target, encode_images(m, [image])[0], steps=steps, lr=lr)
    strengths = np.linspace(0.0, strength, frames)
    feats = F.normalize(h, dim=1) + torch.as_tensor(strengths, dtype=torch.float32)[:, None] * d[None]
    images = pictures.to_uint8(generate(m.G, feats.numpy(), np.repeat(z.numpy(), frames, axis=0)))
    goal = pictures.to_uint8(target)[0]
    pictures.save_png(goal, out / "target.png")
    pictures.save_png(images[0], out / "before.png")
    pictures.save_png(images[-1], out / "after.png")
    pictures.save_png(pictures.sheet([[goal, *images]]), out / "strip.png")
    report = {**(about or {}), "direction_norm": float(d.norm()), "strengths": strengths.round(6).tolist(),
              "steps": steps, "lr": lr, "reconstruction": err}
    write_json(report, out / "edit.json")
    return report
