"""WebDataset shards of pairs: ``KEY.jpg`` (the frame), ``KEY.flac`` (16 kHz mono window), ``KEY.json``.

Shards are plain POSIX tar files, one sample's members in a row, readable by ``webdataset.WebDataset``.
They are written deterministically (mtime 0, uid/gid 0, members in key order) to a temporary name in
the same folder and renamed when complete, so an interrupted run never leaves a tar a rerun would trust.
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

PATTERN = "{split}-{index:06d}.tar"


def safe_key(video_id: str) -> str:
    """A WebDataset key from an id: no dots (they start the extension) and no path separators."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", video_id)


def encode_jpeg(frame: np.ndarray, quality: int = 95) -> bytes:
    """uint8 ``(H, W, 3)`` -> JPEG bytes (4:4:4, no chroma subsampling: small frames keep their colour)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> uint8 ``(H, W, 3)``."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def encode_flac(wave: np.ndarray, sr: int = 16000) -> bytes:
    """Mono float32 ``(N,)`` in [-1, 1] -> FLAC bytes."""
    from torchcodec.encoders import AudioEncoder

    samples = torch.as_tensor(np.clip(wave, -1.0, 1.0), dtype=torch.float32)[None]
    return AudioEncoder(samples, sample_rate=sr).to_tensor("flac").numpy().tobytes()


def decode_flac(data: bytes) -> tuple[np.ndarray, int]:
    """FLAC bytes -> (mono float32 ``(N,)``, sample rate)."""
    from torchcodec.decoders import AudioDecoder

    s = AudioDecoder(data).get_all_samples()
    return s.data.mean(dim=0).numpy(), int(s.sample_rate)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples: Iterable[tuple[str, bytes, bytes, dict]]) -> Path:
    """Write ``(key, jpg, flac, row)`` samples to the tar ``path`` via a temporary name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key, jpg, flac, row in samples:
                _add(tar, f"{key}.jpg", jpg)
                _add(tar, f"{key}.flac", flac)
                _add(tar, f"{key}.json", json.dumps(row, sort_keys=True).encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def clear(folder: Path) -> None:
    """Remove the shards (and temporaries) a previous run left in ``folder``; create it if needed."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.is_file() and (f.suffix == ".tar" or ".tar.tmp-" in f.name):
            f.unlink()
