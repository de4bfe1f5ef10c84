"""Importing the published frame annotations (top1_boxes_top10_moments.json) as moments.parquet."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import manifests
from pipeline.annotations import frames_of, import_annotations, moments_rows

REPO = Path(__file__).resolve().parents[1]


def video_row(video_id: str, duration: float, status: str = "ok") -> dict:
    return dict(video_id=video_id, path=f"videos/{video_id}.mp4", source="vggsound", label="dog", split="test",
                duration_s=duration, fps=10.0, width=32, height=32, audio_sr=16000, has_audio=True,
                status=status, error="" if status == "ok" else "not_found: x")


@pytest.mark.parametrize("value, frames", [
    ([5, 3, 99], [5, 3, 99]), ([[5, 0.1], [3, 0.2]], [5, 3]), ({"top10_moments": [1, 2]}, [1, 2]),
    ([{"frame": 7}], [7]), ([1.0, 2.0], [1, 2]),
])
def test_frames_of_accepts_the_plausible_shapes(value: object, frames: list[int]) -> None:
    assert frames_of(value) == frames


@pytest.mark.parametrize("value", [[], "12", [1.5], [True], {"boxes": [1]}, [None]])
def test_frames_of_rejects_with_a_reason(value: object) -> None:
    assert isinstance(frames_of(value), str)


def test_rows_zero_based_rank_order_and_clamping(tmp_path: Path) -> None:
    ann = tmp_path / "ann.json"
    frames = [50, 99, 0, 120, 10, 20, 30, 40, 60, 70]
    ann.write_text(json.dumps({"abc_1000_11000": frames, "short_0_10000": [5, 98], "gone_0_10000": [1],
                               "bad_0_10000": "x"}))
    videos = tmp_path / "videos.parquet"
    manifests.write([video_row("abc_1000_11000", 10.0), video_row("short_0_10000", 9.5),
                     video_row("gone_0_10000", 10.0, "failed")], manifests.VIDEOS, videos)
    rows, counts = moments_rows(ann, videos=videos)
    assert counts == dict(clips=2, malformed=1, not_in_videos=1, clamped=2)
    abc = [r for r in rows if r["video_id"] == "abc_1000_11000"]
    assert [r["rank"] for r in abc] == list(range(10)) and abc[0]["t_s"] == 5.0 and abc[0]["frame_index"] == 50
    assert abc[3]["frame_index"] == 99 and abc[3]["t_s"] == pytest.approx(9.9)  # 120 > last frame 99: clamped
    assert [r["score"] for r in abc] == sorted((r["score"] for r in abc), reverse=True) and abc[0]["score"] == 1.0
    short = [r for r in rows if r["video_id"] == "short_0_10000"]
    assert [r["frame_index"] for r in short] == [5, 94]  # a 9.5 s clip has frames 0..94


def test_one_based_and_other_decode_fps(tmp_path: Path) -> None:
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"v_0_10000": [1, 11]}))
    rows, _ = moments_rows(ann, base=1, decode_fps=25)
    assert [(r["t_s"], r["frame_index"]) for r in rows] == [(0.0, 0), (1.0, 25)]


def test_import_writes_the_moments_schema_and_the_cli(tmp_path: Path) -> None:
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"v_0_10000": list(range(10))}))
    out = tmp_path / "m.parquet"
    assert import_annotations(ann, out)["clips"] == 1
    assert manifests.read(out, manifests.MOMENTS).num_rows == 10
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cli = [sys.executable, "-c", "from pipeline.cli import app; app()", "annotations", "import"]
    done = subprocess.run([*cli, str(ann), "--out", str(tmp_path / "c.parquet")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "1 clips written" in done.stdout, done.stderr
    (tmp_path / "bad.json").write_text("[1, 2")
    bad = subprocess.run([*cli, str(tmp_path / "bad.json")], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "cannot read" in bad.stderr
