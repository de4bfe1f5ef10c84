"""The `images` stage: train-split frames as the unlabeled corpus, labelled eval frames, folders, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import manifests, media
from pipeline.image_store import ImageWriter, labels_of, read_images
from pipeline.params import DataParams, DecodeParams, ImagesParams, WorldParams
from stages import images, videos

TINY = WorldParams(classes=4, clips_per_class=3, duration_s=3.0, val_frac=0.34, test_frac=0.34, workers=2)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imworld")
    videos.run(5, DataParams(world=TINY), out_dir=root / "videos", manifest=root / "videos.parquet",
               events=root / "events.parquet")
    return root


def test_corpus_is_every_kth_frame_of_train_clips_only(world: Path) -> None:
    p = ImagesParams(every=3, eval_every=2)
    summary = images.run(p, DecodeParams(), videos=world / "videos.parquet", events=world / "events.parquet",
                         out=world / "images")
    frames, table = read_images(world / "images", "train")
    clips = manifests.read(world / "videos.parquet").to_pylist()
    train = [c for c in clips if c["split"] == "train"]
    assert summary["failed"] == 0 and summary["train"] == len(frames) == 10 * len(train)  # 30 frames / 3
    assert frames.dtype == np.uint8 and frames.shape[1:] == (64, 64, 3)
    rows = table.to_pylist()
    assert {r["split"] for r in rows} == {"train"} and all(r["label"] is None for r in rows)
    first = train[0]
    got = media.decode_frames(world / first["path"], [0.0, 0.3])
    idx = [i for i, r in enumerate(rows) if r["video_id"] == first["video_id"]][:2]
    assert np.array_equal(frames[idx], got)


def test_eval_frames_are_labelled_on_screen_frames_of_val_and_test(world: Path) -> None:
    frames, table = read_images(world / "images", "eval")
    rows = table.to_pylist()
    assert len(rows) > 0 and {r["split"] for r in rows} <= {"val", "test"}
    events = manifests.read(world / "events.parquet").to_pylist()
    for r in rows:
        hits = [e for e in events if e["video_id"] == r["video_id"] and e["on_screen"]
                and e["t_start"] <= r["t_s"] < e["t_end"]]
        assert {e["label"] for e in hits} == {r["label"]}
    labels, classes = labels_of(table)
    assert len(classes) <= 4 and labels.max() < len(classes)
    # A frame showing a source differs from the same clip's frames where nothing sounds (not background only).
    assert frames.std() > 10


def test_eval_times_skip_frames_where_another_class_is_drawn() -> None:
    ev = [dict(label="bell", on_screen=True, t_start=0.0, t_end=1.0),
          dict(label="drum", on_screen=True, t_start=0.5, t_end=1.2),
          dict(label="horn", on_screen=False, t_start=0.0, t_end=2.0),
          dict(label="ambient", on_screen=False, t_start=1.0, t_end=2.0)]
    got = images.eval_times(ev, 10.0, 2)
    assert [t for t, lab in got if lab == "bell"] == [0.0, 0.2, 0.4]
    assert [t for t, lab in got if lab == "drum"] == [1.1]


def test_folder_source_skips_and_counts_corrupt_images(tmp_path: Path) -> None:
    src = tmp_path / "corpus"
    (src / "cats").mkdir(parents=True)
    (src / "dogs").mkdir()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(src / "cats" / "a.png")
    Image.new("L", (20, 20), 128).save(src / "dogs" / "b.jpg")
    (src / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    summary = images.run(ImagesParams(source="folder", folder=str(src), size=16), DecodeParams(),
                         videos=tmp_path / "none", events=tmp_path / "none", out=tmp_path / "out")
    assert summary == {"clips": 3, "failed": 1, "train": 2, "eval": 0}
    frames, table = read_images(tmp_path / "out", "train")
    assert frames.shape == (2, 16, 16, 3) and table.column("video_id").to_pylist() == ["cats/a.png", "dogs/b.jpg"]
    assert tuple(frames[0, 8, 8]) == (255, 0, 0) and tuple(frames[1, 8, 8]) == (128, 128, 128)


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="corpus is empty"):
        images.run(ImagesParams(source="folder", folder=str(tmp_path / "empty")), DecodeParams(),
                   videos=tmp_path, events=tmp_path, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_writer_rejects_wrong_shapes(tmp_path: Path) -> None:
    w = ImageWriter(tmp_path, "x", 8)
    with pytest.raises(ValueError, match="uint8"):
        w.add(np.zeros((1, 8, 9, 3), np.uint8), [{}])
    with pytest.raises(ValueError, match="rows"):
        w.add(np.zeros((2, 8, 8, 3), np.uint8), [{}])
