"""Loading IC-GAN / BigGAN models: published files and this project's checkpoints.

Published layout (facebookresearch/ic_gan): a folder such as ``icgan_biggan_imagenet_res128/`` holding
``G_ema_best0.pth`` / ``G_best0.pth`` / ``D_best0.pth`` (plain state dicts) and ``state_dict_best0.pth``
(``{'config': {...}, 'itr': ..., ...}``). The published training script stores its activation modules
(``G_activation`` / ``D_activation``, ``torch.nn.ReLU``) inside ``config``, so that one class is
allow-listed when the file is read with ``weights_only=True``; nothing else is.

Own format: ``{"model": state_dict, "config": dataclasses.asdict(cfg), "step": n}``, written by
:func:`models.checkpoint.save_checkpoint`; every state dict is loaded by :func:`models.checkpoint.load_state_strict`
(one strict loader and one error type, :class:`CheckpointMismatchError`, for every checkpoint of the project).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from models.biggan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from models.checkpoint import config_from_dict, load_file, load_state_strict

PathLike = str | os.PathLike[str]


def _load(path: PathLike) -> Any:
    with torch.serialization.safe_globals([nn.ReLU]):
        return load_file(path)


def load_published_config(folder: PathLike, suffix: str = "best0") -> dict[str, Any]:
    """The ``config`` dict of ``<folder>/state_dict_<suffix>.pth``."""
    path = Path(folder) / f"state_dict_{suffix}.pth"
    if not path.is_file():
        raise FileNotFoundError(f"no published config file {path}")
    blob = _load(path)
    if not isinstance(blob, dict) or not isinstance(blob.get("config"), dict):
        raise ValueError(f"{path} holds no 'config' dict")
    return blob["config"]


def generator_from_published(folder: PathLike, suffix: str = "best0", use_ema: bool = True) -> Generator:
    """The published generator of ``folder``, in eval mode.

    Weights from ``G_ema_<suffix>.pth`` (or ``G_<suffix>.pth`` without ``use_ema``), checked strictly.
    """
    cfg = GeneratorConfig.from_icgan_config(load_published_config(folder, suffix))
    weights = Path(folder) / f"{'G_ema' if use_ema else 'G'}_{suffix}.pth"
    return load_state_strict(Generator(cfg, skip_init=True), _load(weights), source=str(weights)).eval()


def discriminator_from_published(folder: PathLike, suffix: str = "best0") -> Discriminator:
    """Build the published discriminator of ``folder`` (``D_<suffix>.pth``)."""
    cfg = DiscriminatorConfig.from_icgan_config(load_published_config(folder, suffix))
    weights = Path(folder) / f"D_{suffix}.pth"
    return load_state_strict(Discriminator(cfg, skip_init=True), _load(weights), source=str(weights))


def _published_sibling_config(path: Path) -> dict[str, Any] | None:
    match = re.fullmatch(r"G(?:_ema)?_(.+)\.pth", path.name)
    if match and (path.parent / f"state_dict_{match.group(1)}.pth").is_file():
        return load_published_config(path.parent, match.group(1))
    return None


def load_generator(path: PathLike, config: GeneratorConfig | None = None) -> Generator:
    """Load a generator, in eval mode, from any of:

    - our checkpoint ``{"model", "config", "step"}``;
    - a published folder (``G_ema_best0.pth`` + ``state_dict_best0.pth``);
    - a published weights file ``G_ema_<suffix>.pth`` next to its ``state_dict_<suffix>.pth``, or any
      plain state dict together with ``config``.
    ``config``, when given, overrides the stored one.
    """
    path = Path(path)
    if path.is_dir():
        return generator_from_published(path)
    blob = _load(path)
    if isinstance(blob, dict) and "model" in blob and "config" in blob:
        state, cfg = blob["model"], config or config_from_dict(GeneratorConfig, blob["config"])
    else:
        published = _published_sibling_config(path)
        if config is None and published is None:
            raise ValueError(
                f"{path} is a bare state dict: pass config=GeneratorConfig(...) or keep its"
                " state_dict_<suffix>.pth beside it"
            )
        state = blob
        cfg = config or GeneratorConfig.from_icgan_config(published)  # type: ignore[arg-type]
    return load_state_strict(Generator(cfg, skip_init=True), state, source=str(path)).eval()
