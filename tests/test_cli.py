"""The s2s command line: help everywhere, manifest show, one-sentence errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import manifests

S2S = [sys.executable, "-m", "pipeline.cli"]
COMMANDS = [[], ["stage"], ["stage", "videos"], ["stage", "train_localizer"], ["stage", "score"], ["stage", "pairs"],
            ["stage", "images"], ["stage", "train_image_encoder"], ["stage", "train_generator"], ["stage", "embed"],
            ["stage", "train_audio_encoder"], ["stage", "train_evaluator"], ["stage", "evaluate"], ["generate"],
            ["interpolate"], ["edit"], ["embed-audio"], ["embed-image"], ["annotations"], ["annotations", "import"],
            ["manifest"], ["manifest", "show"], ["moments"], ["moments", "show"]]


def s2s(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*S2S, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "s2s")
def test_help_everywhere(cmd: list[str]) -> None:
    out = s2s(*cmd, "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout and "--help" in out.stdout


def test_manifest_show_prints_schema_counts_and_rows(tmp_path: Path) -> None:
    row = dict(video_id="v1", path="videos/v1.mp4", source="world", label="bell", split="train", duration_s=6.0,
               fps=10.0, width=64, height=64, audio_sr=16000, has_audio=True, status="ok", error="")
    bad = {**row, "video_id": "v2", "status": "failed", "error": "ffprobe failed: moov atom not found"}
    f = manifests.write([row, bad], manifests.VIDEOS, tmp_path / "videos.parquet")
    out = s2s("manifest", "show", str(f))
    assert out.returncode == 0, out.stderr
    assert "2 rows" in out.stdout and "video_id: string" in out.stdout
    assert "status: ok=1, failed=1" in out.stdout and "moov atom" in out.stdout


@pytest.mark.parametrize("content", [None, b"not parquet at all"])
def test_manifest_show_bad_file_is_one_sentence(tmp_path: Path, content: bytes | None) -> None:
    f = tmp_path / "x.parquet"
    if content is not None:
        f.write_bytes(content)
    out = s2s("manifest", "show", str(f))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr


def test_stage_with_unknown_param_key_names_it(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("seed: 0\ndata: {source: world, world: {clases: 2}}\n")
    out = s2s("stage", "videos", "--params", str(p), "--out-dir", str(tmp_path / "v"),
              "--manifest", str(tmp_path / "v.parquet"), "--events", str(tmp_path / "e.parquet"))
    assert out.returncode == 2
    assert "unknown key 'data.world.clases'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "v.parquet").exists()
