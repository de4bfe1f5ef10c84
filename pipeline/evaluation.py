"""Sound -> image -> evaluator, as the `evaluate` stage runs it (pipeline/eval_metrics.py has the numbers).

* :func:`read_test`: every test pair of the shards (its audio window, frame and label); broken samples are
  logged and skipped.
* :class:`SoundToImage`: the audio encoder (with its own spectrogram recipe, as in training) and the
  generator: waveforms (optionally scaled by a gain, before the spectrogram) -> features -> images.
* :class:`Judge`: the trained evaluator with its class names: images -> logits, drawn sizes.
* :func:`frame_features`: the image encoder's features of frames, with the `embed` stage's input.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from models.biggan_io import load_generator
from models.checkpoint import read_checkpoint
from models.evaluator import Evaluator
from models.image_encoder import load_encoder
from pipeline import audio_input, embed_audio, generate, shard_io
from pipeline.preprocess import encoder_tensor

log = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """Inputs the `evaluate` stage cannot work with; the message says which and why."""


@dataclass
class TestSet:
    """The test pairs: keys, labels, 16 kHz waveforms ``[n_i]`` and frames uint8 ``[N, S, S, 3]``."""

    keys: list[str]
    labels: list[str]
    waves: list[np.ndarray]
    frames: np.ndarray


def read_test(shards: Path, frame_size: int) -> TestSet:
    """The readable test pairs of ``shards`` (``test-*.tar``), frames resized to ``frame_size`` squares.

    Raises:
        EvaluationError: no test shard, or no readable test pair in them.
    """
    urls = shard_io.shard_urls(shards, "test")
    if not urls:
        raise EvaluationError(f"the test split is empty: {shards} holds no test-*.tar shards (run `dvc repro pairs`)")
    keys, labels, waves, frames, skipped = [], [], [], [], 0
    for s in shard_io.read_samples(urls, ("flac", "jpg", "json")):
        lacks = shard_io.missing(s, ("flac", "jpg", "json"))
        wave = shard_io.decode_audio_bytes(s["flac"]) if not lacks else "lacks " + ", ".join(lacks)
        image = shard_io.decode_image_bytes(s["jpg"]) if not isinstance(wave, str) else wave
        label = shard_io.sample_label(s)
        if isinstance(image, str) or label is None:
            skipped += 1
            log.warning("test pair %s skipped: %s", s["__key__"], image if isinstance(image, str) else "no label")
            continue
        keys.append(s["__key__"])
        labels.append(label)
        waves.append(wave)
        frames.append(np.asarray(image.resize((frame_size, frame_size), Image.BILINEAR)))
    if not keys:
        raise EvaluationError(f"the test split is empty: no readable test pair in {len(urls)} shard(s) of {shards}"
                              f" ({skipped} skipped)")
    log.info("test split: %d pairs read, %d skipped", len(keys), skipped)
    return TestSet(keys, labels, waves, np.stack(frames))


class SoundToImage:
    """Waveforms -> audio features -> generated images, on CPU in float32."""

    def __init__(self, audio_encoder: Path, generator: Path, batch: int = 64):
        self.encoder, self.sp = embed_audio.load_encoder(audio_encoder, torch.device("cpu"))
        self.n_samples, self.spec_fn = audio_input.n_samples(self.sp), audio_input.spectrogram_fn(self.sp)
        self.G = load_generator(generator)
        self.batch = batch
        if self.G.cfg.feat_dim != self.encoder.config.embed_dim:
            raise EvaluationError(f"the generator {generator} takes {self.G.cfg.feat_dim}-d features but the audio "
                                  f"encoder {audio_encoder} gives {self.encoder.config.embed_dim}-d ones")

    @property
    def dim_z(self) -> int:
        return self.G.dim_z

    def fit(self, waves: list[np.ndarray], gain: float = 1.0) -> Tensor:
        """Tile/cut each waveform to the encoder's input length, times ``gain``: ``Tensor[N, n_samples]``."""
        return torch.from_numpy(np.stack([shard_io.fit_samples(w, self.n_samples) for w in waves])) * gain

    def spectrogram(self, waves: Tensor) -> Tensor:
        """``Tensor[N, n_samples]`` -> the encoder's input ``Tensor[N, 1, F, T]``."""
        return self.spec_fn(waves)

    @torch.no_grad()
    def features(self, waves: Tensor) -> Tensor:
        """``Tensor[N, n_samples]`` -> audio features ``Tensor[N, D]`` (not normalised; the generator does)."""
        self.encoder.eval()
        return torch.cat([self.encoder(self.spectrogram(waves[s:s + self.batch]))
                          for s in range(0, len(waves), self.batch)]) if len(waves) else torch.zeros(0, 1)

    def images(self, features: Tensor, z: Tensor) -> Tensor:
        """Every feature row with every noise row: ``[N, D]``, ``[K, dim_z]`` -> ``Tensor[N, K, 3, R, R]``."""
        n, k = len(features), len(z)
        feats = features.float().repeat_interleave(k, 0).numpy()
        out = generate.generate(self.G, feats, z.repeat(n, 1).numpy(), batch=self.batch)
        return out.view(n, k, *out.shape[1:])


class Judge:
    """The trained evaluator (eval mode) with its class names, size-head flag and test accuracy."""

    def __init__(self, checkpoint: Path, batch: int = 256):
        obj = read_checkpoint(checkpoint)
        if "classes" not in obj:
            raise EvaluationError(f"{checkpoint} is not an evaluator checkpoint (no class names): "
                                  "run `dvc repro train_evaluator`")
        self.model = Evaluator.from_checkpoint(obj).eval()
        self.classes: list[str] = list(obj["classes"])
        self.has_size, self.test_acc = bool(obj.get("has_size", False)), obj.get("test_acc")
        self.batch = batch

    def index(self, labels: list[str]) -> Tensor:
        """Class index of each label, -1 for a label the evaluator has no class for: ``Tensor[N]``."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([lookup.get(v, -1) for v in labels], dtype=torch.long)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``[N, 3, H, W]`` in [-1, 1] -> (logits ``[N, C]``, drawn size ``[N]``)."""
        outs = [self.model(images[s:s + self.batch]) for s in range(0, len(images), self.batch)]
        if not outs:
            return torch.zeros(0, len(self.classes)), torch.zeros(0)
        return torch.cat([o.logits for o in outs]), torch.cat([o.size for o in outs])


@torch.no_grad()
def frame_features(encoder: Path, frames: np.ndarray, batch: int = 256) -> Tensor:
    """The image encoder's features (not normalised) of uint8 frames ``[N, S, S, 3]``: ``Tensor[N, D]``.

    Each frame gets the input the `embed` stage gives a pair's frame (:func:`pipeline.preprocess.encoder_tensor`
    at the checkpoint's stored input size), so these features are comparable with the `embed` stage's."""
    model, size = load_encoder(encoder)
    out = [model(torch.stack([encoder_tensor(Image.fromarray(np.asarray(f)), size) for f in frames[s:s + batch]]))
           for s in range(0, len(frames), batch)]
    return torch.cat(out).float() if out else torch.zeros(0, model.out_dim)


def frames_like(frames: np.ndarray, resolution: int) -> Tensor:
    """Real frames uint8 ``[N, S, S, 3]`` -> ``Tensor[N, 3, R, R]`` in [-1, 1] at the generator's resolution
    (antialiased), so that real and generated images reach the evaluator through the same resize."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1, 1)


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation of ``range(n)`` with no fixed point (n >= 2; identity for n < 2), seeded."""
    if n < 2:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    while (perm == np.arange(n)).any():
        perm = rng.permutation(n)
    return perm


def clip_rows(clips: list[int], k: int) -> Tensor:
    """Rows ``Tensor[len(clips) * k]`` of the given clips' images in a clip-major ``[N * k]`` flattening
    (clip i's k images are rows i*k .. i*k+k-1), in the order of ``clips``."""
    return (torch.tensor(clips, dtype=torch.long)[:, None] * k + torch.arange(k)).flatten()


def mix_partners(labels: list[str], limit: int) -> list[tuple[int, int]]:
    """Up to ``limit`` pairs (i, j): clip i with the next clip (cyclically) of another class."""
    pairs = []
    for i in range(len(labels)):
        j = next((j % len(labels) for j in range(i + 1, i + len(labels)) if labels[j % len(labels)] != labels[i]), None)
        if j is not None:
            pairs.append((i, j))
        if len(pairs) >= limit:
            break
    return pairs


def class_spread(labels: list[str], n: int) -> list[int]:
    """Up to ``n`` clip indices taking the classes in turn: the first clip of every class (classes in the order
    they first appear), then the second of every class, and so on. Sample grids drawn in this order show every
    class, where the first ``n`` clips of a class-sorted split show only the first few."""
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    order = [clips[r] for r in range(max(map(len, by_class.values()), default=0))
             for clips in by_class.values() if r < len(clips)]
    return order[:max(n, 0)]
