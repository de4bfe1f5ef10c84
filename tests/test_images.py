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


def test_real_videos_without_events_get_eval_frames_labelled_by_their_clip(world: Path, tmp_path: Path) -> None:
    """No events.parquet rows (a local folder, VGGSound): val/test frames carry the clip's label."""
    empty = manifests.write([], manifests.EVENTS, tmp_path / "events.parquet")
    summary = images.run(ImagesParams(every=3, eval_every=5), DecodeParams(), videos=world / "videos.parquet",
                         events=empty, out=tmp_path / "images")
    clips = {c["video_id"]: c for c in manifests.read(world / "videos.parquet").to_pylist()}
    held_out = [c for c in clips.values() if c["split"] != "train"]
    frames, table = read_images(tmp_path / "images", "eval")
    rows = table.to_pylist()
    assert summary["eval"] == len(rows) == 6 * len(held_out)  # 30 frames at 10 fps, every 5th
    assert all(r["label"] == clips[r["video_id"]]["label"] and r["split"] == clips[r["video_id"]]["split"]
               for r in rows)
    assert [r["t_s"] for r in rows[:6]] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    first = held_out[0]
    assert np.array_equal(frames[:2], media.decode_frames(world / first["path"], [0.0, 0.5]))


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


def _shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A tar shard holding ``members`` (name, bytes), in order (what webdataset writers make)."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _encoded(colour: tuple[int, int, int], fmt: str, size: tuple[int, int] = (24, 18)) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def test_webdataset_source_reads_jpg_png_webp_and_counts_corrupt_images(tmp_path: Path) -> None:
    shards = tmp_path / "wds"
    shards.mkdir()
    _shard(shards / "corpus-000.tar", [("a.jpg", _encoded((250, 0, 0), "JPEG")), ("a.cls", b"3"),
                                       ("b.png", _encoded((0, 250, 0), "PNG")),
                                       ("c.jpg", b"\xff\xd8 a broken jpeg"),
                                       ("d.txt", b"a sample without an image is not an input")])
    _shard(shards / "corpus-001.tar", [("e.webp", _encoded((0, 0, 250), "WEBP", (9, 40))),
                                       ("f.seg.png", _encoded((250, 250, 0), "PNG")),
                                       ("g.png", _encoded((0, 250, 0), "PNG")[:40])])  # truncated
    (shards / "corpus-002.tar").write_bytes(b"not a tar file")  # an unreadable shard is logged and skipped
    p = ImagesParams(source="webdataset", webdataset=str(shards / "corpus-{000..003}.tar"), size=8)
    summary = images.run(p, DecodeParams(), videos=tmp_path / "none", events=tmp_path / "none", out=tmp_path / "out")
    assert summary == {"clips": 6, "failed": 2, "train": 4, "eval": 0}
    frames, table = read_images(tmp_path / "out", "train")
    assert table.column("video_id").to_pylist() == ["a", "b", "e", "f"]
    assert frames.shape == (4, 8, 8, 3)
    centre = [tuple(int(v) for v in f[4, 4]) for f in frames]
    assert all(abs(c - e) <= 6 for got, want in zip(centre, [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)])
               for c, e in zip(got, want)), centre

    # The same first shard through a pipe: command, as an object store's CLI would stream it.
    piped = ImagesParams(source="webdataset", webdataset=f"pipe:cat {shards / 'corpus-000.tar'}", size=8)
    summary = images.run(piped, DecodeParams(), videos=tmp_path / "none", events=tmp_path / "none",
                         out=tmp_path / "piped")
    assert summary == {"clips": 3, "failed": 1, "train": 2, "eval": 0}
    assert np.array_equal(read_images(tmp_path / "piped", "train")[0], frames[:2])


def test_webdataset_source_without_readable_images_is_an_error(tmp_path: Path) -> None:
    _shard(tmp_path / "only-bad.tar", [("x.jpg", b"garbage")])
    p = ImagesParams(source="webdataset", webdataset=str(tmp_path / "only-bad.tar"))
    with pytest.raises(ValueError, match=r"image corpus is empty \(1 inputs, 1 failed\)"):
        images.run(p, DecodeParams(), videos=tmp_path / "none", events=tmp_path / "none", out=tmp_path / "out")
    with pytest.raises(ValueError, match="names no shards"):
        images.run(ImagesParams(source="webdataset"), DecodeParams(), videos=tmp_path / "none",
                   events=tmp_path / "none", out=tmp_path / "out")
