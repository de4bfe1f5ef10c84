"""s2s embed-audio: the published computation on 16 kHz files, and one defined outcome per bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch
import torchvision
from torch import nn

from models.audio_encoder import AudioEncoder, AudioEncoderConfig
from models.checkpoint import save_checkpoint
from pipeline.embed_audio import embed_files
from pipeline.params import SpectrogramParams
from test_spectrogram import published

SR = 16_000


def tone(seconds: float, sr: int = SR, f0: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    rng = np.random.default_rng(seed)
    return 0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 3 * f0 * t) + 0.01 * rng.normal(size=t.size)


def wav16(path: Path, wave: np.ndarray, sr: int = SR) -> Path:
    """16-bit PCM WAV (``wave: [N]`` or ``[N, C]`` in [-1, 1]); returns the path."""
    scipy.io.wavfile.write(path, sr, np.round(np.clip(wave, -1, 1) * 32767).astype(np.int16))
    return path


def wav_float(path: Path, wave: np.ndarray, sr: int = SR) -> Path:
    scipy.io.wavfile.write(path, sr, wave.astype(np.float32))
    return path


@pytest.fixture(scope="module")
def narrow(tmp_path_factory) -> Path:
    """A narrow own-format encoder that takes the paper's 257 x 1004 input."""
    torch.manual_seed(0)
    cfg = AudioEncoderConfig(width=4, embed_dim=16)
    path = tmp_path_factory.mktemp("ckpt") / "narrow.pt"
    save_checkpoint(path, AudioEncoder(cfg), cfg, step=0, spectrogram=SpectrogramParams(kind="paper").__dict__)
    return path


def embed(paths: list[Path], ckpt: Path) -> tuple[np.ndarray, list[str]]:
    return embed_files(paths, ckpt, batch=4)


def test_published_computation_on_a_16khz_file(tmp_path: Path) -> None:
    """scipy spectrogram of the file as soundfile reads it + torchvision ResNet-18 + ReLU (test.py)."""
    torch.manual_seed(1)
    model = AudioEncoder().eval()
    torch.save({"audnet." + k: v for k, v in model.state_dict().items()}, tmp_path / "sound2scene.pth")
    f = wav16(tmp_path / "a.wav", tone(3.2))
    feats, errors = embed([f], tmp_path / "sound2scene.pth")
    _, pcm = scipy.io.wavfile.read(f)
    spec = published(pcm / 32768.0)  # soundfile's float64 reading of 16-bit PCM
    ref = torchvision.models.resnet18(num_classes=2048)
    ref.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = torch.relu(ref.eval()(torch.from_numpy(spec).float()[None, None]))[0].numpy()
    assert errors == [""] and feats.shape == (1, 2048)
    np.testing.assert_allclose(feats[0], expected, atol=1e-4, rtol=1e-4)


def test_length_rules_short_tiled_long_cut(narrow: Path, tmp_path: Path) -> None:
    x = tone(1.0)
    long = tone(12.5, seed=3)
    files = [wav16(tmp_path / "short.wav", x), wav16(tmp_path / "short_tiled.wav", np.tile(x, 10)),
             wav16(tmp_path / "long.wav", long), wav16(tmp_path / "long_cut.wav", long[:160_000]),
             wav16(tmp_path / "tiny.wav", x[:700])]
    feats, errors = embed(files, narrow)
    assert errors == [""] * 5 and np.isfinite(feats).all()
    np.testing.assert_allclose(feats[0], feats[1], atol=1e-5)
    np.testing.assert_allclose(feats[2], feats[3], atol=1e-5)


def test_stereo_and_other_rates(narrow: Path, tmp_path: Path) -> None:
    x = tone(4.0)
    files = [wav16(tmp_path / "mono.wav", x), wav16(tmp_path / "stereo.wav", np.stack([x, x], axis=1)),
             wav16(tmp_path / "mono_x_sqrt2.wav", x * np.sqrt(2))]
    for sr in (8_000, 44_100, 48_000):
        files.append(wav16(tmp_path / f"r{sr}.wav", tone(4.0, sr=sr), sr=sr))
    feats, errors = embed(files, narrow)
    assert errors == [""] * 6 and np.isfinite(feats).all()
    # ffmpeg's downmix (the project's decode path) is (L + R) / sqrt(2): equal channels = mono * sqrt(2)
    np.testing.assert_allclose(feats[1], feats[2], rtol=1e-3, atol=1e-3)
    for row in feats[3:]:  # resampled to 16 kHz: close to the 16 kHz recording of the same sound
        cos = row @ feats[0] / (np.linalg.norm(row) * np.linalg.norm(feats[0]))
        assert cos > 0.95


def test_silence_clipping_nan_and_junk(narrow: Path, tmp_path: Path) -> None:
    loud = 3.0 * tone(2.0)
    nan = tone(2.0)
    nan[100] = np.nan
    inf = tone(2.0)
    inf[5] = np.inf
    (tmp_path / "junk.wav").write_bytes(b"RIFF but not really a wav file")
    files = [wav16(tmp_path / "silent.wav", np.zeros(SR)), wav_float(tmp_path / "loud.wav", loud),
             wav_float(tmp_path / "clipped.wav", np.clip(loud, -1, 1)), wav_float(tmp_path / "nan.wav", nan),
             wav_float(tmp_path / "inf.wav", inf), tmp_path / "junk.wav", tmp_path / "missing.wav"]
    feats, errors = embed(files, narrow)
    model = AudioEncoder.from_checkpoint(narrow).eval()
    with torch.no_grad():
        silent = model(torch.zeros(1, 1, 257, 1004))[0].numpy()
    np.testing.assert_allclose(feats[0], silent, atol=1e-6)  # silence: an all-zero spectrogram
    np.testing.assert_allclose(feats[1], feats[2], atol=1e-5)  # loud samples are clipped to [-1, 1]
    assert errors[:3] == ["", "", ""] and np.isfinite(feats[:3]).all()
    assert "non-finite" in errors[3] and "non-finite" in errors[4]
    assert errors[5] and "file not found" in errors[6]
    assert np.isnan(feats[3:]).all()


def test_cli_rows_in_input_order(narrow: Path, tmp_path: Path) -> None:
    files = [wav16(tmp_path / "b.wav", tone(1.0, f0=300)), tmp_path / "nope.wav", wav16(tmp_path / "a.wav", tone(2.0))]
    cmd = [sys.executable, "-m", "pipeline.cli", "embed-audio", *map(str, files), "--checkpoint", str(narrow),
           "--out", str(tmp_path / "f.npy"), "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "1 failed" in out.stdout
    assert out.stderr.strip() == f"warning: {files[1]}: file not found: {files[1]}"
    rows = np.load(tmp_path / "f.npy")
    feats, _ = embed([files[2], files[0]], narrow)
    assert rows.shape == (3, 16) and np.isnan(rows[1]).all()
    np.testing.assert_allclose(rows[[2, 0]], feats, atol=1e-6)
    bad = subprocess.run([sys.executable, "-m", "pipeline.cli", "embed-audio", str(files[0]), "--checkpoint",
                          str(tmp_path / "x.pt"), "--out", str(tmp_path / "g.npy")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: no audio encoder checkpoint")
