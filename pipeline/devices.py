"""Choosing the device a stage computes on."""
from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error (one sentence)."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {name!r} (choose auto, cpu or cuda)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU")
    return torch.device(name)
