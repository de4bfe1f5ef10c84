"""The built-in world: its ground truth must match what its mp4 files show and sound like."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.ndimage import binary_erosion

from pipeline import manifests, media, world
from pipeline.params import DataParams, WorldParams
from pipeline.world_render import render_frames, shape_mask
from stages import videos

TINY = WorldParams(classes=8, clips_per_class=3, duration_s=4.0, two_source_frac=0.5, val_frac=0.34,
                   test_frac=0.34, workers=2)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    summary = videos.run(3, DataParams(world=TINY), out_dir=root / "videos", manifest=root / "videos.parquet",
                         events=root / "events.parquet")
    assert (summary["total"], summary["ok"], summary["failed"]) == (24, 24, 0)
    return root


def _clip(row: dict) -> world.Clip:
    """Re-plan the clip of a manifest row (the plan is a pure function of seed and index)."""
    jobs = {f"world_{j.index:05d}": j for j in videos.world_jobs(3, TINY)}
    j = jobs[row["video_id"]]
    return world.plan_clip(3, j.index, j.label, n_classes=TINY.classes, duration_s=TINY.duration_s, fps=TINY.fps,
                           size=TINY.size, sr=TINY.audio_sr, two_source=j.two_source)


def _shape(e: world.Event, size: int, scale: float = 1.0) -> np.ndarray:
    """The drawn source's pixels (its shape at ``scale`` x its size), (H, W) bool."""
    c = np.arange(size) + 0.5
    xs, ys = np.meshgrid(c, c)
    dx, dy = xs - e.x, ys - e.y
    ca, sa = np.cos(e.angle), np.sin(e.angle)
    return shape_mask(world.CLASSES[e.cls].shape, ca * dx + sa * dy, -sa * dx + ca * dy, e.size * scale)


def _inner_mask(e: world.Event, clip: world.Clip) -> np.ndarray:
    """Pixels well inside the drawn source (its shape eroded by 2 px), minus any other source drawn
    over it at the same time, (H, W) bool."""
    inner = binary_erosion(_shape(e, clip.size), iterations=2)
    for o in clip.events:
        if o is not e and o.on_screen and o.f0 < e.f1 and e.f0 < o.f1:
            inner &= ~_shape(o, clip.size, 1.2)
    return inner


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _loudest_20ms(x: np.ndarray, sr: int = 16000) -> float:
    """The largest RMS over 20 ms frames (clicks and pulses are loud in short frames only)."""
    n = sr // 50
    frames = x[: len(x) // n * n].reshape(-1, n).astype(np.float64)
    return float(np.sqrt((frames**2).mean(axis=1)).max())


def test_manifests_follow_the_schemas(tiny_world: Path) -> None:
    v = manifests.read(tiny_world / "videos.parquet", manifests.VIDEOS).to_pylist()
    ev = manifests.read(tiny_world / "events.parquet", manifests.EVENTS).to_pylist()
    assert {r["status"] for r in v} == {"ok"} and all(r["error"] == "" for r in v)
    assert all((tiny_world / r["path"]).is_file() for r in v)
    assert {(r["width"], r["height"], r["fps"], r["audio_sr"], r["has_audio"]) for r in v} == {(64, 64, 10.0, 16000, True)}
    assert all(abs(r["duration_s"] - 4.0) < 0.1 for r in v)
    for r in v:  # split by video, stratified by class
        assert r["split"] in ("train", "val", "test")
    per_class = {}
    for r in v:
        per_class.setdefault(r["label"], set()).add(r["split"])
    assert all(s == {"train", "val", "test"} for s in per_class.values()) and len(per_class) == 8
    on = [e for e in ev if e["on_screen"]]
    assert all(e["size"] == pytest.approx(world.size_for(e["loudness"], 64), abs=1e-3) for e in on)
    assert all(e["size"] is None and e["x"] is None for e in ev if not e["on_screen"])
    assert any(e["label"] == world.AMBIENT for e in ev)


def test_source_is_drawn_exactly_while_it_sounds(tiny_world: Path) -> None:
    rows = pq.read_table(tiny_world / "videos.parquet").to_pylist()
    checked_on = checked_off = 0
    for row in rows[::3]:
        clip = _clip(row)
        path = tiny_world / row["path"]
        frames = media.decode_frames(path, np.arange(clip.n_frames) / clip.fps)
        assert not isinstance(frames, str), frames
        empty = render_frames(clip, sources=False).astype(np.float32)
        full = render_frames(clip).astype(np.float32)
        for e in (e for e in clip.events if e.on_screen):
            inner = _inner_mask(e, clip)
            if inner.sum() < 4:
                continue
            colour = np.asarray(world.CLASSES[e.cls].color, np.float32)
            mid = (e.f0 + e.f1) // 2
            seen = frames[mid][inner].astype(np.float32).mean(axis=0)
            cos = seen @ colour / (np.linalg.norm(seen) * np.linalg.norm(colour))
            assert cos > 0.97, (row["video_id"], e.cls, seen, colour)  # the class's colour at the recorded place
            shown = [i for i in range(clip.n_frames)
                     if any(o.on_screen and o.f0 <= i < o.f1 and _shape(o, clip.size, 1.2)[inner].any() for o in clip.events)]
            look = full[mid][inner]  # the source as drawn at its event
            for i in sorted(set(range(clip.n_frames)) - set(shown))[::4]:
                seen_i = frames[i][inner].astype(np.float32)
                gap_empty = np.abs(seen_i - empty[i][inner]).mean()
                gap_source = np.abs(seen_i - look).mean()
                assert gap_empty < 0.5 * gap_source, (row["video_id"], i, gap_empty, gap_source)
                checked_off += 1
            checked_on += 1
    assert checked_on >= 8 and checked_off >= 8


def test_drawn_area_follows_the_recorded_size(tiny_world: Path) -> None:
    """The pixels that change when the source appears cover the shape at its recorded place and size."""
    rows = pq.read_table(tiny_world / "videos.parquet").to_pylist()
    expected, measured, ious = [], [], []
    for row in rows:
        clip = _clip(row)
        e = next(e for e in clip.events if e.on_screen and e.cls == clip.label)
        mid = (e.f0 + e.f1) // 2
        frame = media.decode_frames(tiny_world / row["path"], [mid / clip.fps])[0].astype(np.float32)
        changed = np.abs(frame - render_frames(clip, sources=False)[mid]).sum(axis=-1) > 60
        drawn = _shape(e, clip.size)
        for o in clip.events:  # leave out a second source drawn at the same time
            if o is not e and o.on_screen and o.f0 <= mid < o.f1:
                changed &= ~_shape(o, clip.size, 1.2)
                drawn &= ~_shape(o, clip.size, 1.2)
        expected.append(drawn.sum())
        measured.append(changed.sum())
        ious.append((changed & drawn).sum() / max(1, (changed | drawn).sum()))
    rank = lambda a: np.argsort(np.argsort(a))
    assert np.median(ious) > 0.7, ious
    assert np.corrcoef(rank(expected), rank(measured))[0, 1] > 0.9


def test_sound_is_heard_exactly_during_events(tiny_world: Path) -> None:
    rows = pq.read_table(tiny_world / "videos.parquet").to_pylist()
    for row in rows[::2]:
        clip = _clip(row)
        wave = media.decode_audio(tiny_world / row["path"])
        assert not isinstance(wave, str), wave
        sr, fps = clip.sr, clip.fps
        floor = clip.noise_level
        for e in clip.events:
            a, b = e.f0 * sr // fps, e.f1 * sr // fps
            quarter = (b - a) // 4
            assert _loudest_20ms(wave[a + quarter:b - quarter]) > 5 * floor, (row["video_id"], e)
        busy = np.zeros(len(wave), bool)
        for e in clip.events:
            busy[max(0, e.f0 * sr // fps - 800):e.f1 * sr // fps + 800] = True
        quiet = wave[~busy]
        if len(quiet) > 1600:
            assert _rms(quiet) < 1.5 * floor and _loudest_20ms(quiet) < 2.5 * floor, row["video_id"]


def test_same_seed_same_bytes_other_seed_other_world(tmp_path: Path) -> None:
    p = DataParams(world=replace(TINY, classes=2, clips_per_class=2, duration_s=2.0))
    outs = []
    for run, seed in enumerate((5, 5, 6)):
        d = tmp_path / str(run)
        videos.run(seed, p, out_dir=d / "videos", manifest=d / "videos.parquet", events=d / "events.parquet")
        outs.append([(d / f).read_bytes() for f in ("videos.parquet", "events.parquet", "videos/world_00000.mp4")])
    assert outs[0] == outs[1]
    assert outs[0][1] != outs[2][1] and outs[0][2] != outs[2][2]


def test_default_world_has_the_promised_variety() -> None:
    p = WorldParams()
    jobs = videos.world_jobs(0, p)
    assert len(jobs) == p.classes * p.clips_per_class and p.classes >= 8
    looks = {(c.shape, c.color, c.texture) for c in world.CLASSES}
    sounds = {(c.timbre, c.pitch) for c in world.CLASSES}
    assert len(looks) == len(sounds) == len(world.CLASSES)
    assert len({c.color for c in world.CLASSES}) < len(world.CLASSES)  # some classes share a colour
    clips = [world.plan_clip(0, j.index, j.label, n_classes=p.classes, duration_s=p.duration_s, fps=p.fps,
                             size=p.size, sr=p.audio_sr, two_source=j.two_source) for j in jobs[::5]]
    two = sum(len({e.cls for e in c.events if e.on_screen}) > 1 for c in clips)
    assert 0 < two < len(clips)
    assert all(any(not e.on_screen and e.cls >= 0 for e in c.events) for c in clips)  # off-screen sounds
    mids = [np.mean([(e.f0 + e.f1) / 2 for e in c.events if e.cls == c.label]) for c in clips]
    assert np.std(mids) > 5  # the moment is not always in the middle


def test_bad_world_params_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.world.classes"):
        videos.run(0, DataParams(world=replace(TINY, classes=99)), out_dir=tmp_path / "v",
                   manifest=tmp_path / "v.parquet", events=tmp_path / "e.parquet")
