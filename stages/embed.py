"""Stage `embed`: the frozen image encoder's feature of every pair's frame, computed once.

For each split, every shard sample's ``KEY.jpg`` goes through the image encoder's input transform
(the published one, or an ``S x S`` resize with ImageNet statistics for the narrow world encoder) and
the encoder's average-pool feature (not normalised) is stored by key (pipeline/features.py). The
published training loop runs this ResNet-50 forward pass on every image at every step; here it runs
once per pair. Samples without a readable frame are skipped and counted; the output folder is written
under a temporary name and renamed when every split is done.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from models.checkpoint import read_checkpoint
from models.image_encoder import PUBLISHED_INPUT, ImageEncoder, stored_input_size
from pipeline import features, shard_io
from pipeline.devices import pick_device
from pipeline.manifests import tmp_name
from pipeline.params import EmbedParams
from pipeline.preprocess import encoder_tensor

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass
class Frame:
    key: str
    label: str | None
    image: Tensor | None  # [3, S, S]; None when the sample has no readable frame
    error: str = ""


class FrameStream(IterableDataset):
    """The frames of ``urls`` as :class:`Frame`, shards split over DataLoader workers."""

    def __init__(self, urls: list[str], size: int | None):
        self.urls, self.size = urls, size

    def __iter__(self) -> Iterator[Frame]:
        info = get_worker_info()
        urls = self.urls if info is None else self.urls[info.id::info.num_workers]
        for s in shard_io.read_samples(urls, ("jpg", "json")):
            key, label = s["__key__"], shard_io.sample_label(s)
            if shard_io.missing(s, ("jpg",)):
                yield Frame(key, label, None, "no .jpg member")
                continue
            image = shard_io.decode_image_bytes(s["jpg"])
            if isinstance(image, str):
                yield Frame(key, label, None, image)
            else:
                yield Frame(key, label, encoder_tensor(image, self.size))


def _collate(frames: list[Frame]) -> list[Frame]:
    return frames


@torch.no_grad()
def embed_split(encoder: ImageEncoder, urls: list[str], p: EmbedParams, device: torch.device,
                out: features.FeatureWriter) -> int:
    """Feature of every readable frame of ``urls`` into ``out``; returns the number skipped."""
    loader = DataLoader(FrameStream(urls, p.image_size), batch_size=p.batch, collate_fn=_collate,
                        num_workers=min(p.workers, len(urls)))
    skipped = 0
    for frames in loader:
        good = [f for f in frames if f.image is not None]
        for f in frames:
            if f.image is None:
                skipped += 1
                log.warning("pair %s skipped: %s", f.key, f.error)
        if good:
            feats = encoder(torch.stack([f.image for f in good]).to(device)).float().cpu().numpy()
            out.add([f.key for f in good], [f.label for f in good], feats)
    return skipped


def check_input_size(p: EmbedParams, blob: Mapping[str, Any]) -> None:
    """Raise ValueError when the checkpoint says which input size it was trained at and
    ``embed.image_size`` asks for another (features at another size are not the encoder's features)."""
    trained = stored_input_size(blob)
    asked = PUBLISHED_INPUT if p.image_size is None else p.image_size
    if trained is not None and trained != asked:
        setting = "null (the published 224)" if p.image_size is None else str(p.image_size)
        raise ValueError(f"embed.image_size is {setting} but the image encoder was trained on {trained} px "
                         f"inputs: set embed.image_size: {trained if trained != PUBLISHED_INPUT else 'null'}")


def run(p: EmbedParams, *, shards: Path, encoder: Path, out_dir: Path,
        splits: tuple[str, ...] = SPLITS) -> dict[str, dict[str, int]]:
    """Write ``out_dir/{split}.npy`` + ``.parquet`` for each split; return {split: {total, ok, skipped}}."""
    device = pick_device(p.device)
    blob = read_checkpoint(encoder)
    check_input_size(p, blob)
    model = ImageEncoder.from_checkpoint(blob).eval().to(device)
    out_dir = Path(out_dir)
    tmp = tmp_name(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    summary = {}
    try:
        for split in splits:
            urls = shard_io.shard_urls(shards, split)
            writer = features.FeatureWriter(tmp, split, model.out_dim)
            skipped = embed_split(model, urls, p, device, writer)
            ok = writer.finish()
            summary[split] = dict(total=ok + skipped, ok=ok, skipped=skipped)
            log.info("embed %s: %d shards, %d pairs, %d skipped", split, len(urls), ok, skipped)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary
