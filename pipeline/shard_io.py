"""Reading the pair shards (``data/shards/{split}-%06d.tar``): raw samples, audio and image decoding.

A shard sample is ``KEY.jpg`` (the frame), ``KEY.flac`` (16 kHz mono audio window) and ``KEY.json``
(its pairs.parquet row). Readers never stop on a bad shard or sample: a shard that cannot be read
(truncated, not a tar, zero bytes) is logged and skipped, an empty shard simply yields nothing, and a
sample lacking a member is returned as it is, for the caller to count (see :func:`missing`).
Shard URLs may be local paths or anything webdataset opens (``pipe:`` commands of an object store).
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image
from webdataset.tariterators import tarfile_samples

log = logging.getLogger(__name__)

PAPER_SR = 16_000


def shard_urls(shards_dir: str | Path, split: str) -> list[str]:
    """The shards of ``split`` in ``shards_dir`` (``{split}-*.tar``), sorted; may be empty."""
    return sorted(str(p) for p in Path(shards_dir).glob(f"{split}-*.tar"))


def _warn_and_continue(exc: Exception) -> bool:
    log.warning("skipping unreadable shard data: %s", str(exc).splitlines()[0] if str(exc) else exc)
    return True


def read_samples(urls: Iterable[str], suffixes: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Raw samples ``{"__key__", "__url__", suffix: bytes ...}`` of ``urls`` in order, members limited
    to ``suffixes`` (others are not kept in memory). Unreadable shards are logged and skipped."""
    keep = tuple("." + s for s in suffixes)
    select: Callable[[str], bool] = lambda name: name.endswith(keep)
    yield from tarfile_samples(({"url": u} for u in urls), handler=_warn_and_continue, select_files=select)


def missing(sample: dict[str, Any], suffixes: tuple[str, ...]) -> list[str]:
    """The members of ``suffixes`` a raw sample lacks (empty when complete)."""
    return [s for s in suffixes if not sample.get(s)]


def _soundfile_mono(data: bytes, sr: int) -> np.ndarray | None:
    """FLAC/WAV bytes already mono at ``sr`` (what the pairs stage writes) -> float32 ``[N]`` through
    libsndfile, about twice as fast as a torchcodec decoder per small clip; None for anything else."""
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            if f.samplerate != sr or f.channels != 1:
                return None
            return f.read(dtype="float32")
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None  # not a format libsndfile reads: torchcodec decides (and words the error)


def decode_audio_bytes(data: bytes, *, sr: int = PAPER_SR) -> np.ndarray | str:
    """Any audio file's bytes (FLAC in the shards) -> mono float32 ``[N]`` at ``sr``, or a one-line error.

    Mono audio at ``sr`` is read by libsndfile; anything else goes through torchcodec, which downmixes
    channels as ffmpeg does ((L + R) / sqrt 2 for stereo) and resamples. Empty audio and NaN/inf samples
    are errors: they mean a broken file, not a quiet one.
    """
    wave = _soundfile_mono(data, sr)
    if wave is None:
        from torchcodec.decoders import AudioDecoder

        try:
            wave = AudioDecoder(data, sample_rate=sr, num_channels=1).get_all_samples().data.numpy()
        except Exception as exc:  # torchcodec raises RuntimeError/ValueError with long texts
            return f"cannot decode audio: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    wave = wave.reshape(-1).astype(np.float32, copy=False)
    if wave.size == 0:
        return "audio has no samples"
    if not np.isfinite(wave).all():
        return "audio has non-finite samples (NaN or inf)"
    return wave


def fit_samples(wave: np.ndarray, n: int) -> np.ndarray:
    """Repeat ``wave: [M]`` end to end and cut to ``[n]`` (the paper's tile-and-cut; ``M >= 1``)."""
    return np.resize(wave, n).astype(np.float32, copy=False)


def decode_image_bytes(data: bytes) -> Image.Image | str:
    """JPEG (any PIL format) bytes -> PIL RGB image, or a one-line error."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except Exception as exc:
        return f"cannot decode image: {exc}"


def sample_label(sample: dict[str, Any]) -> str | None:
    """The ``label`` of the sample's pairs row (``KEY.json``), None when absent or unreadable."""
    try:
        return json.loads(sample["json"]).get("label")
    except (KeyError, ValueError, AttributeError, TypeError):
        return None
