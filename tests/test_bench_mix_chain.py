"""bench/mix_chain.py: its statistics on hand-made inputs, and a clear stop without the pipeline's artifacts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench_module

REPO = Path(__file__).resolve().parents[1]
mix_chain = bench_module.load("mix_chain")


def test_two_source_frames_are_the_times_exactly_two_classes_are_drawn() -> None:
    e = lambda vid, label, t0, t1, on=True: dict(video_id=vid, label=label, t_start=t0, t_end=t1, on_screen=on,  # noqa: E731
                                                  size=10.0)
    ev = {"v": [e("v", "dog", 0.0, 1.0), e("v", "bell", 0.5, 2.0), e("v", "car", 0.0, 2.0, on=False)],  # car: heard
          "w": [e("w", "dog", 0.0, 2.0), e("w", "dog", 0.0, 2.0)],  # the same class twice
          "x": [e("x", "dog", 0.0, 1.0), e("x", "bell", 0.0, 1.0), e("x", "horn", 0.0, 1.0)],  # three classes
          "y": [e("y", "horn", 0.0, 1.0), e("y", "bell", 0.0, 1.0)]}
    table = [dict(video_id=v, t_s=t) for v, t in [("v", 0.2), ("v", 0.6), ("v", 1.5), ("w", 0.6), ("x", 0.5),
                                                   ("y", 0.5)]]
    rows, pairs, held = mix_chain.two_source_frames(table, ev, 10)
    assert rows == [1, 5] and pairs == [("bell", "dog"), ("bell", "horn")]
    assert held == [True, False]  # every third clip by sorted id (v, y): v is held out of the evaluator's training
    assert mix_chain.two_source_frames(table, ev, 1)[:2] == ([1], [("bell", "dog")])


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
