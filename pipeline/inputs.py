"""A user's files for ``s2s generate / interpolate / edit``: checks, and sound files -> the encoder's waveform.

Nothing here imports torch, so a bad file name or option fails in well under a second.

Any audio or video file ffmpeg reads (wav, flac, mp3, ogg, m4a, mp4, webm, ...): the first audio stream,
downmixed to mono, resampled to 16 kHz (`pipeline.media`). Only the window ``[start, start + duration)``
(default 10 s, the paper's clip) is decoded, so a two-hour file costs what ten seconds cost; a 16 kHz mono
16-bit wav or flac heard from its start is read in this process instead (`plain_pcm`: the same samples). What is
heard is that window, optionally mixed with a second file's first seconds (tiled/cut to the same length),
times a gain:

    heard = gain * ((1 - mix_ratio) * x + mix_ratio * other)

It is decoded before any model is loaded (a bad file fails fast), and later tiled/cut to the encoder's
input length; the spectrogram clips it to [-1, 1], as the published code does. Every failure is an
:class:`InputError` whose message is one sentence naming the file.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline import media

SR = 16_000
DEFAULT_SECONDS = 10.0  # heard when --duration is not given: the paper's clip length
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4", ".m4v", ".mov", ".mkv",
                  ".webm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class InputError(ValueError):
    """A file, array or option a user gave that cannot be used; the message is one sentence saying why."""


@dataclass(frozen=True)
class SoundOptions:
    """Which part of a file is heard and how: ``duration_s`` seconds (None: 10) from ``start_s``, times
    ``gain``, mixed with ``mix`` (from its beginning, same length) at ``mix_ratio``."""

    start_s: float = 0.0
    duration_s: float | None = None
    gain: float = 1.0
    mix: Path | None = None
    mix_ratio: float = 0.5

    def check(self) -> None:
        """Raise :class:`InputError` for a negative start, a non-positive duration or gain, a ratio outside
        [0, 1]."""
        if self.start_s < 0:
            raise InputError(f"--start must not be negative, got {self.start_s:g}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise InputError(f"--duration must be positive, got {self.duration_s:g}")
        if not self.gain > 0:
            raise InputError(f"--gain must be positive, got {self.gain:g}")
        if not 0.0 <= self.mix_ratio <= 1.0:
            raise InputError(f"--mix-ratio must be in [0, 1], got {self.mix_ratio:g}")


def kind_of(path: Path) -> str:
    """``"audio"`` (audio or video file) or ``"image"`` by the file name's suffix; else :class:`InputError`."""
    suffix = path.suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    sounds, images = (", ".join(s[1:] for s in group) for group in (AUDIO_SUFFIXES, IMAGE_SUFFIXES))
    raise InputError(f"{path}: unsupported format {suffix or '(no suffix)'!r}; expected audio or video ({sounds}) "
                     f"or an image ({images})")


def check_file(path: Path, kinds: tuple[str, ...] = ("audio",)) -> str:
    """The kind of ``path`` (see :func:`kind_of`) if it is an existing file of one of ``kinds``."""
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a file")
    kind = kind_of(path)
    if kind not in kinds:
        raise InputError(f"{path}: unsupported format {path.suffix.lower()!r} for {' or '.join(kinds)} input")
    return kind


def _decoder_message(error: str) -> str:
    """A decoder's one-line error without torchcodec's ``function, /source/file.cpp:LINE,`` prefix."""
    return re.sub(r"\w+, \S+\.cpp:\d+, ", "", error)


def check_sound(path: Path, start_s: float = 0.0) -> media.Probe:
    """The header probe of an audio or video file that has an audio track lasting past ``start_s`` (nothing
    decoded); else one :class:`InputError` sentence."""
    check_file(path)
    info = media.probe_audio(path)
    if isinstance(info, str):
        raise InputError(f"cannot read {path}: {_decoder_message(info)}")
    if not info.has_audio:
        raise InputError(f"{path} has no audio track")
    if info.duration_s > 0 and start_s >= info.duration_s:
        raise InputError(f"--start {start_s:g} s is past the end of {path} ({info.duration_s:.1f} s)")
    return info


PLAIN_PCM = {".wav": "WAV", ".flac": "FLAC"}  # lossless 16-bit files soundfile reads to the decoder's samples


def plain_pcm(path: Path, start_s: float, duration_s: float) -> np.ndarray | None:
    """The window of a 16 kHz mono 16-bit PCM wav or flac read in this process (``float32 [M]``, the samples /
    32768, as the decoder gives them), from its start only; None for any other file (or an unreadable or empty
    one), which then takes the decoder's path and its checks. For a 10 s file it takes 1-4 ms, against about
    20 ms (wav) and 7-8 ms (flac) through the decoder (``bench/listen.py``)."""
    container = PLAIN_PCM.get(Path(path).suffix.lower())
    if start_s != 0 or container is None:
        return None
    try:
        import soundfile

        info = soundfile.info(str(path))
        if (info.format, info.subtype, info.samplerate, info.channels) != (container, "PCM_16", SR, 1) \
                or info.frames < 1:
            return None
        wave, _ = soundfile.read(str(path), frames=int(round(duration_s * SR)), dtype="float32", always_2d=False)
    except Exception:  # noqa: BLE001 - whatever soundfile cannot read, the decoder reads or names
        return None
    return wave if wave.size else None


def load_window(path: Path, start_s: float, duration_s: float) -> np.ndarray:
    """16 kHz mono float32 ``[M]`` (``1 <= M``) of ``path`` from ``start_s`` for at most ``duration_s``."""
    fast = plain_pcm(path, start_s, duration_s)
    if fast is not None:
        return fast
    info = check_sound(path, start_s)
    # a little more is decoded, then cut: the decoder may stop a few samples short of a window's end
    wave = media.decode_audio(path, sr=SR, start_s=start_s, duration_s=duration_s + 0.25, info=info)
    if (isinstance(wave, str) and "No audio frames were decoded" in wave) or getattr(wave, "size", 1) == 0:
        where = "" if start_s == 0 else f" from {start_s:g} s on"
        raise InputError(f"{path} has no audio samples{where} (zero-length audio)")
    if isinstance(wave, str):
        raise InputError(f"cannot decode the audio of {path} (corrupt or truncated?): {_decoder_message(wave)}")
    if not np.isfinite(wave).all():
        raise InputError(f"{path} decodes to non-finite samples (NaN or inf)")
    return wave[: int(round(duration_s * SR))]


def listen(path: Path, opts: SoundOptions) -> np.ndarray:
    """What is heard of ``path`` under ``opts``: ``float32 [M]`` at 16 kHz (see the module docstring)."""
    seconds = opts.duration_s if opts.duration_s is not None else DEFAULT_SECONDS
    wave = load_window(path, opts.start_s, seconds)
    if opts.mix is not None and opts.mix_ratio > 0:
        other = np.resize(load_window(opts.mix, 0.0, seconds), wave.shape)  # tiled or cut to the same length
        wave = (1.0 - opts.mix_ratio) * wave + opts.mix_ratio * other
    return (opts.gain * wave).astype(np.float32)


def fit(wave: np.ndarray, n_samples: int) -> np.ndarray:
    """``wave [M]`` repeated end to end and cut to ``float32 [n_samples]`` (the paper's tile-and-cut)."""
    from pipeline.shard_io import fit_samples  # webdataset: imported only when a sound reaches the encoder

    return fit_samples(wave, n_samples)


def prepare(path: Path, opts: SoundOptions, n_samples: int) -> np.ndarray:
    """The encoder's waveform ``float32 [n_samples]``: :func:`listen`, then :func:`fit`."""
    return fit(listen(path, opts), n_samples)


def edit_sounds(audio: Path, audio2: Path | None, opts: SoundOptions, gains: tuple[float, float]) -> list[np.ndarray]:
    """The two sounds whose feature difference steers ``s2s edit``: [AUDIO2, AUDIO], or AUDIO at the louder and
    at the quieter gain."""
    if audio2 is not None:
        return [listen(audio2, opts), listen(audio, opts)]
    wave = listen(audio, opts)
    return [g * wave for g in gains]


def read_image(path: Path) -> Image.Image:
    """The image at ``path`` as PIL RGB; an unreadable file is an :class:`InputError`."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot read the image {path}: {str(exc).splitlines()[0]}") from None


def names(paths: list[Path]) -> list[str]:
    """File stems for output names, prefixed with the input's index when two inputs share a stem."""
    stems = [p.stem for p in paths]
    return stems if len(set(stems)) == len(stems) else [f"{i:03d}_{s}" for i, s in enumerate(stems)]


def ensure_writable(out: Path) -> None:
    """Create ``out`` (a folder, or the parent of a file ending in .npy/.png) and prove a file can be written
    there; otherwise one :class:`InputError` sentence."""
    folder = out.parent if out.suffix in (".npy", ".png") else out
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".s2s-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write to {folder}: {exc.strerror or type(exc).__name__}") from None
