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


def cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): only then is CPU autocast faster."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def amp_on(device: torch.device, amp: bool, cpu: bool = False) -> bool:
    """Whether :func:`autocast` will run bfloat16: ``amp`` on CUDA, and with ``cpu`` also on a CPU with
    native bfloat16 (:func:`cpu_bf16`)."""
    return amp and (device.type == "cuda" or (cpu and device.type == "cpu" and cpu_bf16()))


def autocast(device: torch.device, amp: bool, cpu: bool = False) -> torch.autocast:
    """bfloat16 autocast when :func:`amp_on`; a disabled context elsewhere (float32 results). Stages pass
    ``cpu=True`` only where bf16 on CPU was measured to keep their quality (the IC-GAN step)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp_on(device, amp, cpu))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (a CPU batch) on ``device``: through pinned memory without blocking on CUDA, as is on CPU."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
