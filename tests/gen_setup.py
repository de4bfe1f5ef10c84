"""Tiny models and real media files for the generation-command tests (tests/test_generate_cli.py).

The models are narrow versions of the pipeline's own classes, saved with the project's checkpoint
functions (random weights): an audio encoder on the world's log-mel input, an IC-GAN generator at 32 px
and a SwAV image encoder, all with 32-d features. Media are made with the real ffmpeg.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from media_files import ffmpeg, make, tone
from models.audio_encoder import AudioEncoder, AudioEncoderConfig
from models.biggan import Generator, GeneratorConfig
from models.checkpoint import save_checkpoint
from models.image_encoder import ImageEncoder, ImageEncoderConfig
from pipeline.params import SpectrogramParams

FEAT = 32
S2S = [sys.executable, "-m", "pipeline.cli"]
GEN_CFG = GeneratorConfig(ch=4, dim_z=16, resolution=32, attn="0", shared_dim_feat=8, feat_dim=FEAT)


def tiny_models(root: Path) -> dict[str, Path]:
    """Write ``audio_encoder.pt``, ``generator.pt`` and ``image_encoder.pt`` under ``root``."""
    torch.manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    a_cfg = AudioEncoderConfig(width=4, embed_dim=FEAT)
    spec = SpectrogramParams(kind="logmel", n_mels=32, n_frames=64)
    save_checkpoint(root / "audio_encoder.pt", AudioEncoder(a_cfg), a_cfg, step=0,
                    spectrogram=dataclasses.asdict(spec))
    G = Generator(GEN_CFG)
    with torch.no_grad():  # move BN statistics and SN vectors off their initial values
        G.train()(torch.randn(8, GEN_CFG.dim_z), None, torch.randn(8, FEAT))
    save_checkpoint(root / "generator.pt", G, G.cfg, step=1)
    i_cfg = ImageEncoderConfig(width=1, hidden_dim=8, proj_dim=4, n_prototypes=4)
    save_checkpoint(root / "image_encoder.pt", ImageEncoder(i_cfg), i_cfg, step=0, input_size=32)
    return {"audio": root / "audio_encoder.pt", "generator": root / "generator.pt", "image": root / "image_encoder.pt"}


def model_args(models: dict[str, Path], image: bool = True) -> list[str]:
    """The command-line options naming the tiny models (``--image-encoder`` only where a command has it)."""
    args = ["--audio-encoder", str(models["audio"]), "--generator", str(models["generator"]), "--device", "cpu",
            "--threads", "1"]
    return args + (["--image-encoder", str(models["image"])] if image else [])


def wav(path: Path, freq: float, seconds: float = 10.0, sr: int = 16_000) -> Path:
    """A 16 kHz mono 16-bit wav: a tone with a little noise, from ffmpeg."""
    ffmpeg(["-f", "lavfi", "-i", f"{tone(freq, sr, seconds)}", "-f", "lavfi", "-i",
            f"anoisesrc=a=0.02:d={seconds:g}:r={sr}:seed=1", "-filter_complex", "amix=inputs=2:normalize=0",
            "-ac", "1", "-ar", str(sr), "-c:a", "pcm_s16le", str(path)])
    return path


def encode(src: Path, dst: Path, *args: str) -> Path:
    """``src`` re-encoded by ffmpeg to ``dst`` (format from the suffix, codec args ``args``)."""
    ffmpeg(["-i", str(src), *args, str(dst)])
    return dst


def video_with_audio(src: Path, dst: Path) -> Path:
    """An mp4 (H.264 + AAC) whose audio track is ``src``; the picture is a grey test pattern."""
    ffmpeg(["-f", "lavfi", "-i", "testsrc=size=32x32:rate=5:duration=10", "-i", str(src), "-map", "0:v",
            "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-shortest", str(dst)])
    return dst


def silent_video(dst: Path) -> Path:
    """An mp4 with a video stream and no audio stream."""
    return make(dst, frames=np.full((10, 16, 16, 3), 128, np.uint8), fps=5)


def two_hour_mp3(dst: Path, freq: float = 440.0) -> Path:
    """A two-hour 8 kbit/s mp3 (~7 MB), made cheaply: one minute encoded, then its packets looped 120 times."""
    minute = dst.with_name("minute.mp3")
    ffmpeg(["-f", "lavfi", "-i", tone(freq, 16_000, 60), "-c:a", "libmp3lame", "-b:a", "8k", "-id3v2_version", "0",
            "-write_xing", "0", str(minute)])
    ffmpeg(["-stream_loop", "119", "-i", str(minute), "-c", "copy", "-id3v2_version", "0", "-write_xing", "0",
            str(dst)])
    return dst


def picture(path: Path, size: int = 48) -> Path:
    """A colourful PNG: horizontal and vertical gradients."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    rgb = np.stack([x, y, 1 - x * y], axis=-1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return path


def s2s(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*S2S, *args], capture_output=True, text=True, timeout=timeout)
