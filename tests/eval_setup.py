"""A tiny world for the evaluation tests: clips whose frames show a coloured square exactly while its event
sounds (the `images` stage's layout, videos.parquet and events.parquet with sizes), plus tiny artifacts
(audio encoder, generator, image features, test shards, pairs) for the `evaluate` stage."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from models.audio_encoder import AudioEncoder, AudioEncoderConfig
from models.biggan import Generator, GeneratorConfig
from models.checkpoint import save_checkpoint
from models.image_encoder import ImageEncoder, ImageEncoderConfig
from pipeline import features, manifests
from pipeline.image_store import ImageWriter
from pipeline.params import SpectrogramParams
from pipeline.synthetic_pairs import COLOURS, write_shards

CLASSES = ("class0", "class1", "class2")  # the test shards also hold class3: a class without train frames
SIZE, FPS, FRAMES = 32, 10, 8
EVENT = (0.2, 0.6)  # every clip's one on-screen event, seconds
TINY_SPEC = SpectrogramParams(kind="logmel", n_mels=16, n_frames=24, n_fft=256, hop_length=160)
FEAT = 32  # 32 x the tiny image encoder's width 1


def frame(label: str | None, frac: float, rng: np.random.Generator) -> np.ndarray:
    """A grey-background frame with class ``label``'s square of side ``frac`` x SIZE (none: background only)."""
    img = np.full((SIZE, SIZE, 3), rng.integers(70, 190), np.uint8)
    if label is not None:
        side = int(round(frac * SIZE))
        y, x = rng.integers(0, SIZE - side + 1, 2)
        img[y:y + side, x:x + side] = COLOURS[CLASSES.index(label)]
    return img


def clips(per_class: dict[str, int]) -> list[dict]:
    """videos.parquet rows: ``per_class[split]`` clips of each class and split."""
    rows = []
    for split, n in per_class.items():
        for c in CLASSES:
            for i in range(n):
                rows.append(dict(video_id=f"{split}_{c}_{i}", path=f"videos/{split}_{c}_{i}.mp4", source="world",
                                 label=c, split=split, duration_s=FRAMES / FPS, fps=float(FPS), width=SIZE,
                                 height=SIZE, audio_sr=16000, has_audio=True, status="ok", error=""))
    return rows


def write_world(root: Path, per_class: dict[str, int] | None = None, seed: int = 0) -> dict[str, float]:
    """videos.parquet, events.parquet and images/{train,eval}.* in ``root``; returns each clip's size fraction."""
    rng = np.random.default_rng(seed)
    rows = clips(per_class or {"train": 10, "val": 2, "test": 2})
    fracs = {r["video_id"]: float(rng.uniform(0.25, 0.8)) for r in rows}
    events = [dict(video_id=r["video_id"], label=r["label"], t_start=EVENT[0], t_end=EVENT[1], loudness=0.5,
                   on_screen=True, size=fracs[r["video_id"]] * SIZE, x=SIZE / 2, y=SIZE / 2) for r in rows]
    manifests.write(rows, manifests.VIDEOS, root / "videos.parquet")
    manifests.write(events, manifests.EVENTS, root / "events.parquet")
    train, evals = ImageWriter(root / "images", "train", SIZE), ImageWriter(root / "images", "eval", SIZE)
    for r in rows:
        for f in range(FRAMES):
            t, on = f / FPS, EVENT[0] <= f / FPS < EVENT[1]
            if r["split"] != "train" and not on:
                continue
            img = frame(r["label"] if on else None, fracs[r["video_id"]], rng)[None]
            label = None if r["split"] == "train" else r["label"]
            meta = dict(video_id=r["video_id"], split=r["split"], t_s=t, label=label)
            (train if r["split"] == "train" else evals).add(img, [meta])
    train.close()
    evals.close()
    return fracs


def write_artifacts(root: Path, n_test: int = 8) -> list[str]:
    """Test shards (classes class0..class3), a tiny audio encoder, image encoder and generator, test image
    features and pairs.parquet (half of the world's test clips picked inside their event). Returns the shard keys."""
    keys = write_shards(root / "shards", "test", n_test, per_shard=4, classes=4)
    torch.manual_seed(0)
    acfg = AudioEncoderConfig(width=2, embed_dim=FEAT)
    save_checkpoint(root / "audio_encoder.pt", AudioEncoder(acfg), acfg, step=1,
                    spectrogram=dataclasses.asdict(TINY_SPEC))
    gcfg = GeneratorConfig(ch=4, dim_z=16, resolution=32, attn="0", hier=True, shared_dim=16, shared_dim_feat=8,
                           n_classes=1, class_cond=False, instance_cond=True, feat_dim=FEAT)
    save_checkpoint(root / "generator.pt", Generator(gcfg).eval(), gcfg, step=1)
    ecfg = ImageEncoderConfig(width=1, hidden_dim=8, proj_dim=4, n_prototypes=4)
    save_checkpoint(root / "image_encoder.pt", ImageEncoder(ecfg).eval(), ecfg, step=1, input_size=32)
    rng = np.random.default_rng(0)
    features.write(root / "embeddings", "test", keys, [f"class{i % 4}" for i in range(n_test)],
                   rng.normal(size=(n_test, FEAT)).astype(np.float32))
    tests = [r for r in manifests.read(root / "videos.parquet").to_pylist() if r["split"] == "test"]
    pairs = [dict(key=r["video_id"], video_id=r["video_id"], split="test", label=r["label"],
                  t_s=0.3 if i % 2 == 0 else 0.7, score=1.0, selection="top1", shard="test-000000.tar")
             for i, r in enumerate(tests)]
    manifests.write(pairs, manifests.PAIRS, root / "pairs.parquet")
    return keys


def write_clip(root: Path) -> tuple[Path, Path]:
    """A tiny open_clip model of our own (config JSON + random weights), built offline: (weights, config)."""
    import json

    import open_clip

    config = root / "TinyClip.json"
    config.write_text(json.dumps({"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                                                   "head_width": 16, "patch_size": 16},
                                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                               "layers": 1}}))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("TinyClip").state_dict(), root / "tiny_clip.pt")
    return root / "tiny_clip.pt", config
