"""A tiny alignment setup for tests: shards, an image encoder, its embeddings, and small params."""
from __future__ import annotations

from pathlib import Path

from pipeline.params import AudioEncoderParams, EmbedParams, SpectrogramParams
from stages import embed
from pipeline.synthetic_pairs import write_image_encoder, write_shards

TINY_SPEC = SpectrogramParams(kind="logmel", n_mels=16, n_frames=24, n_fft=256, hop_length=160)


def make_data(root: Path, *, train: int = 24, val: int = 8, drop_flac: tuple[int, ...] = ()) -> Path:
    """``root/shards``, ``root/image_encoder.pt`` and ``root/embeddings``; returns ``root``."""
    write_shards(root / "shards", "train", train, per_shard=6, drop_flac=drop_flac)
    write_shards(root / "shards", "val", val, per_shard=6)
    write_image_encoder(root / "image_encoder.pt", width=2)
    embed.run(EmbedParams(image_size=32, batch=16, workers=0, device="cpu"), shards=root / "shards",
              encoder=root / "image_encoder.pt", out_dir=root / "embeddings", splits=("train", "val"))
    return root


def tiny_params(**kw) -> AudioEncoderParams:
    base = dict(width=4, spectrogram=TINY_SPEC, epochs=2, batch=8, shuffle_buffer=8, workers=0, device="cpu",
                threads=1)
    return AudioEncoderParams(**{**base, **kw})
