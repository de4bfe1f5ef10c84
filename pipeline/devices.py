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


def autocast(device: torch.device, amp: bool) -> torch.autocast:
    """bfloat16 autocast on CUDA when ``amp``; a disabled context elsewhere (CPU results stay exact)."""
    on = amp and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=on)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (a CPU batch) on ``device``: through pinned memory without blocking on CUDA, as is on CPU."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
