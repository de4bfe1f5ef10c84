"""The embed stage on tiny real shards: one feature per pair, by key, equal to a direct forward pass."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from models.image_encoder import ImageEncoder
from pipeline import features, shard_io
from pipeline.params import EmbedParams
from pipeline.preprocess import encoder_tensor
from stages import embed
from pipeline.synthetic_pairs import write_image_encoder, write_shards


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("embed")
    write_shards(root / "shards", "train", 10, per_shard=4)
    write_shards(root / "shards", "val", 3, drop_flac=(1,))
    (root / "shards" / "test-000000.tar").write_bytes(b"")  # a zero-byte shard: skipped, logged
    write_image_encoder(root / "image_encoder.pt")
    return root


def test_every_pair_gets_its_encoder_feature(data: Path, tmp_path: Path) -> None:
    p = EmbedParams(image_size=32, batch=4, workers=2, device="cpu")
    summary = embed.run(p, shards=data / "shards", encoder=data / "image_encoder.pt", out_dir=tmp_path / "emb")
    assert summary == {"train": dict(total=10, ok=10, skipped=0), "val": dict(total=3, ok=3, skipped=0),
                       "test": dict(total=0, ok=0, skipped=0)}
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == [
        "test.npy", "test.parquet", "train.npy", "train.parquet", "val.npy", "val.parquet"]
    table = features.read(tmp_path / "emb", "train")
    assert sorted(table.keys) == [f"train{i:04d}_0" for i in range(10)]
    assert table.features.shape == (10, 128) and table.features.dtype == np.float32
    assert table.labels[table.rows["train0005_0"]] == "class1"
    # the stored row of one key equals the encoder's forward pass of that key's frame
    model = ImageEncoder.from_checkpoint(data / "image_encoder.pt").eval()
    sample = next(s for s in shard_io.read_samples(shard_io.shard_urls(data / "shards", "train"), ("jpg",))
                  if s["__key__"] == "train0005_0")
    x = encoder_tensor(shard_io.decode_image_bytes(sample["jpg"]), 32)[None]
    with torch.no_grad():
        expected = model(x)[0].numpy()
    np.testing.assert_allclose(table.features[table.rows["train0005_0"]], expected, rtol=1e-5, atol=1e-4)
    assert features.read(tmp_path / "emb", "test").features.shape == (0, 128)


def test_published_input_and_bad_frames(data: Path, tmp_path: Path, caplog) -> None:
    bad = tmp_path / "shards"
    bad.mkdir()
    for f in (data / "shards").glob("val-*.tar"):
        (bad / f.name).write_bytes(f.read_bytes())
    import webdataset as wds
    with wds.TarWriter(str(bad / "val-000001.tar")) as sink:
        sink.write({"__key__": "broken_0", "jpg": b"not a jpeg", "json": b"{}"})
        sink.write({"__key__": "nojpg_0", "json": b"{}"})
    p = EmbedParams(image_size=None, batch=2, workers=0, device="cpu")
    with caplog.at_level(logging.WARNING):
        summary = embed.run(p, shards=bad, encoder=data / "image_encoder.pt", out_dir=tmp_path / "emb",
                            splits=("val",))
    assert summary == {"val": dict(total=5, ok=3, skipped=2)}
    assert "broken_0 skipped: cannot decode image" in caplog.text and "nojpg_0 skipped: no .jpg" in caplog.text
    assert features.read(tmp_path / "emb", "val").features.shape == (3, 128)


def test_missing_features_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the embed stage"):
        features.read(tmp_path, "train")


def test_cli_stage_embed(data: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    params = tmp_path / "params.yaml"
    params.write_text("embed: {image_size: 32, batch: 8, workers: 0, device: cpu}\n")
    cmd = [sys.executable, "-m", "pipeline.cli", "stage", "embed", "--params", str(params),
           "--shards", str(data / "shards"), "--out-dir", str(tmp_path / "emb")]
    out = subprocess.run([*cmd, "--encoder", str(data / "image_encoder.pt")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "embed train: 10 pairs, 10 embedded, 0 skipped" in out.stdout
    out = subprocess.run([*cmd, "--encoder", str(tmp_path / "nope.pt")], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip() == f"error: no image encoder checkpoint at {tmp_path / 'nope.pt'}"


def test_feature_writer_streams_batches_into_one_npy(tmp_path: Path) -> None:
    w = features.FeatureWriter(tmp_path, "train", 3)
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), -np.ones((1, 3), np.float32)
    w.add(["k0", "k1"], ["x", None], a)
    w.add(["k2"], ["y"], b)
    assert w.finish() == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["train.npy", "train.parquet"]
    t = features.read(tmp_path, "train")
    np.testing.assert_array_equal(np.asarray(t.features), np.concatenate([a, b]))
    assert t.keys == ["k0", "k1", "k2"] and t.labels == ["x", None, "y"]
    w = features.FeatureWriter(tmp_path, "val", 3)
    w.add(["k", "k"], [None, None], a)
    with pytest.raises(ValueError, match="duplicate keys"):
        w.finish()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_image_size_must_match_the_encoders_training_size(data: Path, tmp_path: Path) -> None:
    """An encoder trained on 96 px crops, embedded at 64 px, would give features it never learned: refused."""
    from models.checkpoint import read_checkpoint, save_checkpoint

    blob = read_checkpoint(data / "image_encoder.pt")
    model = ImageEncoder.from_checkpoint(blob)
    save_checkpoint(tmp_path / "enc96.pt", model, model.config, step=1, input_size=96)
    for size, setting in ((64, "64"), (None, "null (the published 224)")):
        message = f"embed.image_size is {setting} but the image encoder was trained on 96 px inputs"
        with pytest.raises(ValueError, match=re.escape(message + ": set embed.image_size: 96")):
            embed.run(EmbedParams(image_size=size, batch=4, workers=0, device="cpu"), shards=data / "shards",
                      encoder=tmp_path / "enc96.pt", out_dir=tmp_path / "emb")
    assert not (tmp_path / "emb").exists()
    summary = embed.run(EmbedParams(image_size=96, batch=4, workers=0, device="cpu"), shards=data / "shards",
                        encoder=tmp_path / "enc96.pt", out_dir=tmp_path / "emb", splits=("val",))
    assert summary == {"val": dict(total=3, ok=3, skipped=0)}
    import subprocess
    import sys

    params = tmp_path / "params.yaml"
    params.write_text("embed: {image_size: 64, batch: 8, workers: 0, device: cpu}\n")
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "stage", "embed", "--params", str(params),
                          "--shards", str(data / "shards"), "--out-dir", str(tmp_path / "emb2"),
                          "--encoder", str(tmp_path / "enc96.pt")], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("error: embed.image_size is 64 but the image encoder was trained on 96 px inputs: "
                                  "set embed.image_size: 96")
