"""bench/mix_chain.py: its statistics on hand-made inputs, and a clear stop without the pipeline's artifacts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import bench_module

REPO = Path(__file__).resolve().parents[1]
mix_chain = bench_module.load("mix_chain")


def test_two_source_frames_are_the_times_two_classes_are_on_screen() -> None:
    events = pd.DataFrame([
        dict(video_id="v", label="dog", t_start=0.0, t_end=1.0, on_screen=True),
        dict(video_id="v", label="bell", t_start=0.5, t_end=2.0, on_screen=True),
        dict(video_id="v", label="car", t_start=0.0, t_end=2.0, on_screen=False),  # heard, not seen
        dict(video_id="w", label="dog", t_start=0.0, t_end=2.0, on_screen=True),
        dict(video_id="w", label="dog", t_start=0.0, t_end=2.0, on_screen=True),  # the same class twice
    ])
    table = pd.DataFrame(dict(video_id=["v", "v", "v", "w"], t_s=[0.2, 0.6, 1.5, 0.6]))
    assert mix_chain.two_source_frames(table, events, 10) == ([1], [("dog", "bell")])
    assert mix_chain.two_source_frames(table, events, 0)[0] == [1]  # the limit stops after a find


def test_centroid_top2_needs_both_classes_among_the_two_nearest() -> None:
    cents = torch.eye(3)
    names = ["a", "b", "c"]
    feats = torch.tensor([[1.0, 0.9, 0.0], [1.0, 0.0, 0.9], [0.0, 0.5, 1.0]])
    assert mix_chain.centroid_top2(feats, cents, names, ["a", "a", "a"], ["b", "b", "c"]) == pytest.approx(1 / 3)


def test_stops_with_one_sentence_without_artifacts(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(REPO / "bench" / "mix_chain.py"), "--data", str(tmp_path),
                          "--generator", str(tmp_path / "g.pt")], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode != 0 and "does not exist: run `dvc repro` first" in res.stderr
    assert "Traceback" not in res.stderr
