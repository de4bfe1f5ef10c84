"""CPU latency of drawing a scene from a 10 s wav: our path against the same work done as published test.py does it.

    python bench/generate.py [--clips 1] [--threads 1] [--long]

Two sizes, random weights, the same model objects for both paths:

- world: the default params.yaml audio encoder (ResNet-18 width 16, 256-d, log-mel input) and generator (32 px);
- published: the full sound2scene ResNet-18 (257 x 1004 input) and the full IC-GAN generator (G_ch 96, 128 px),
  written as published files whose keys and shapes are checked against ../shared/compat's key list, and
  loaded the way ``s2s generate --official`` loads them.

Ours (``s2s generate``'s code, files not written): each file decoded by pipeline.media (ffprobe, then the
window in the decode worker), the spectrograms of all clips in one torch call, the audio net and the generator
batched. Published way (per clip, one clip at a time): read the wav (scipy, float64 as soundfile gives),
tile/cut, clip, scipy.signal.spectrogram (log-mel: the same filterbank on it), log, z-score, the audio net on
that clip, normalise, the generator on that clip, clamp. One warm-up call of each path, then one timed run.
``--long`` adds the peak memory of decoding a 10 s window of a two-hour mp3 against decoding all of it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.io.wavfile
import scipy.signal
import torch
import torchaudio

from models.audio_encoder import AudioEncoder, AudioEncoderConfig
from models.biggan import Generator, GeneratorConfig
from models.checkpoint import save_checkpoint
from pipeline import inputs, sound2image
from pipeline.generate import generate
from pipeline.params import AudioEncoderParams, GeneratorParams, ImageEncoderParams, SpectrogramParams, section
from stages.train_generator import configs

COMPAT = Path(os.environ.get("S2S_COMPAT_DIR", Path(__file__).resolve().parents[2] / "shared" / "compat"))
PUBLISHED_G = {"G_ch": 96, "dim_z": 120, "resolution": 128, "G_attn": "64", "hier": True, "G_shared": True,
               "shared_dim": 128, "shared_dim_feat": 512, "instance_cond": True, "class_cond": False,
               "G_param": "SN", "norm_style": "bn", "BN_eps": 1e-5, "SN_eps": 1e-6}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=300)


def make_wavs(folder: Path, n: int) -> list[Path]:
    """``n`` 10 s 16 kHz mono 16-bit wavs: a tone (one pitch each) with noise."""
    paths = []
    for i in range(n):
        paths.append(folder / f"clip{i}.wav")
        ffmpeg("-f", "lavfi", "-i", f"sine=frequency={300 + 150 * i}:sample_rate=16000:duration=10", "-f", "lavfi",
               "-i", "anoisesrc=a=0.05:d=10:r=16000", "-filter_complex", "amix=inputs=2:normalize=0", "-ac", "1",
               "-c:a", "pcm_s16le", str(paths[-1]))
    return paths


def _same_keys(state: dict, name: str) -> None:
    expected = json.loads((COMPAT / "official_checkpoint_keys.json").read_text())[name]
    got = [[k, list(v.shape)] for k, v in state.items()]
    assert got == expected, f"{name}: keys or shapes differ from the published list"


def world_files(folder: Path, params: Path) -> sound2image.ModelFiles:
    """Random-weight world models of ``params`` in our checkpoint format."""
    pa, pg = section(params, "audio_encoder", AudioEncoderParams), section(params, "generator", GeneratorParams)
    feat = 32 * section(params, "image_encoder", ImageEncoderParams).width
    cfg = AudioEncoderConfig(width=pa.width, embed_dim=feat)
    save_checkpoint(folder / "audio.pt", AudioEncoder(cfg), cfg, step=0, spectrogram=dataclasses.asdict(pa.spectrogram))
    save_checkpoint(folder / "generator.pt", Generator(configs(pg, feat)[0]), configs(pg, feat)[0], step=0)
    return sound2image.ModelFiles(folder / "audio.pt", folder / "generator.pt", folder / "none.pt")


def published_files(folder: Path) -> sound2image.ModelFiles:
    """Random-weight published files: sound2scene.pth and icgan_biggan_imagenet_res128/ (keys checked)."""
    gdir = folder / "icgan_biggan_imagenet_res128"
    gdir.mkdir(parents=True)
    audio = {"audnet." + k: v for k, v in AudioEncoder().state_dict().items()}
    _same_keys(audio, "sound2scene.pth")
    torch.save(audio, folder / "sound2scene.pth")
    g_state = Generator(GeneratorConfig.from_icgan_config(PUBLISHED_G)).state_dict()
    _same_keys(g_state, "icgan_biggan_imagenet_res128/G_ema_best0.pth")
    torch.save(g_state, gdir / "G_ema_best0.pth")
    torch.save({"config": PUBLISHED_G}, gdir / "state_dict_best0.pth")
    return sound2image.model_files(folder)


def numpy_spectrogram(sp: SpectrogramParams) -> Callable[[np.ndarray], np.ndarray]:
    """The encoder's input for one clip, in numpy/scipy float64, as the published code computes it."""
    def z_score(power: np.ndarray) -> np.ndarray:  # norm "none" (the world's default): the log alone
        s = np.log(power + sp.log_eps)
        return s if sp.norm == "none" else (s - s.mean()) / (s.std() + 1e-9)

    if sp.kind == "paper":
        def paper(x: np.ndarray) -> np.ndarray:
            x = np.clip(np.tile(x, 10)[:160_000], -1.0, 1.0)
            return z_score(scipy.signal.spectrogram(x, 16000, nperseg=512, noverlap=353)[2])
        return paper
    fbank = torchaudio.functional.melscale_fbanks(sp.n_fft // 2 + 1, 0.0, 8000.0, sp.n_mels, 16000).double().numpy()

    def logmel(x: np.ndarray) -> np.ndarray:
        x = np.clip(np.resize(x, sp.n_fft + sp.hop_length * (sp.n_frames - 1)), -1.0, 1.0)
        _, _, p = scipy.signal.spectrogram(x, 16000, window="hann", nperseg=sp.n_fft, noverlap=sp.n_fft - sp.hop_length)
        return z_score(fbank.T @ p)
    return logmel


@torch.no_grad()
def published_way(m: sound2image.Models, paths: list[Path], z: torch.Tensor) -> torch.Tensor:
    """One clip at a time: read, scipy spectrogram, audio net, normalise, generator, clamp."""
    spec_fn, out = numpy_spectrogram(m.spec), []
    for path, zi in zip(paths, z):
        _, pcm = scipy.io.wavfile.read(path)
        spec = torch.from_numpy(spec_fn(pcm / 32768.0)).float()[None, None]
        emb = m.audio(spec)
        emb = emb / torch.linalg.norm(emb, dim=-1, keepdim=True)
        out.append(m.G(zi[None], None, emb).clamp(-1.0, 1.0))
    return torch.cat(out)


def our_way(m: sound2image.Models, paths: list[Path], z: torch.Tensor) -> torch.Tensor:
    """``s2s generate``'s code without writing files: decode, batched torch spectrogram, batched nets."""
    heard = [inputs.listen(p, inputs.SoundOptions()) for p in paths]
    feats, _ = sound2image.encode_audio(m, np.stack([inputs.fit(w, m.n_samples) for w in heard]))
    return generate(m.G, feats.numpy(), z.numpy())


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    fn()  # warm-up: the decode worker starts, lazy initialisations run
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def window_memory(folder: Path) -> list[tuple[str, str]]:
    """Peak RSS growth of decoding a 10 s window of a two-hour mp3 and all of it (fresh processes; the peak is
    reset after the imports, Linux ``/proc/self/clear_refs``)."""
    one, long = folder / "minute.mp3", folder / "two_hours.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=60", "-c:a", "libmp3lame", "-b:a",
           "8k", "-id3v2_version", "0", "-write_xing", "0", str(one))
    ffmpeg("-stream_loop", "119", "-i", str(one), "-c", "copy", "-id3v2_version", "0", "-write_xing", "0", str(long))
    code = ("import sys, time; from pipeline import backends; import torchcodec.decoders\n"
            "mb = lambda key: int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]) / 1024\n"
            "open('/proc/self/clear_refs', 'w').write('5')  # peak RSS := RSS now\n"
            "b = mb('VmRSS:'); t = time.perf_counter(); d = None if sys.argv[3] == 'all' else float(sys.argv[3])\n"
            "w = backends.audio('torchcodec', sys.argv[1], 0, 16000, float(sys.argv[2]), d); p = mb('VmHWM:')\n"
            "print(f'{len(w) / 16000:.0f} s of audio in {time.perf_counter() - t:.2f} s, peak RSS {p:.0f} MB '\n"
            "      f'({p - b:+.0f} MB over the {b:.0f} MB after importing torchcodec)')")
    rows = [(f"two-hour mp3 ({long.stat().st_size / 1e6:.1f} MB)", "")]
    for label, start, dur in (("10 s window at 1 h", "3600", "10"), ("the whole file", "0", "all")):
        out = subprocess.run([sys.executable, "-c", code, str(long), start, dur], capture_output=True, text=True,
                             timeout=600, check=True)
        rows.append((f"decode {label}", out.stdout.strip()))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--clips", type=int, default=1, help="10 s wavs, one image each")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--long", action="store_true", help="also the two-hour-file memory figures")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        wavs = make_wavs(root, args.clips)
        print(f"threads {args.threads}, {args.clips} clip(s) of 10 s, one image each\n")
        print("| models | ours (ms/image) | published way (ms/image) | published / ours | max abs image diff |")
        print("|---|---|---|---|---|")
        for name, build in (("world", lambda: world_files(root, args.params)),
                            ("published size", lambda: published_files(root / "official"))):
            m = sound2image.load(build(), torch.device("cpu"))
            z = torch.randn(args.clips, m.G.dim_z, generator=torch.Generator().manual_seed(0))
            t_ours, ours = timed(lambda: our_way(m, wavs, z))
            t_pub, pub = timed(lambda: published_way(m, wavs, z))
            res = m.G.cfg.resolution
            print(f"| {name} ({res} px) | {1e3 * t_ours / args.clips:.0f} | {1e3 * t_pub / args.clips:.0f} | "
                  f"{t_pub / t_ours:.2f} | {float((ours - pub).abs().max()):.1e} |", flush=True)
        if args.long:
            print()
            for label, value in window_memory(root):
                print(f"{label}: {value}" if value else label)


if __name__ == "__main__":
    main()
