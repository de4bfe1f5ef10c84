"""bench/volume_chain.py: the per-gain response statistic, and a clear stop without the pipeline's artifacts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bench_module

REPO = Path(__file__).resolve().parents[1]
volume_chain = bench_module.load("volume_chain")


def test_gain_response_means_and_per_clip_spearman() -> None:
    gains = (0.25, 0.5, 1.0, 2.0, 4.0)
    rising = np.array([[1.0, 2, 3, 4, 5], [10, 11, 12, 13, 20]])
    means, rho = volume_chain.gain_response(rising, gains)
    assert means == [5.5, 6.5, 7.5, 8.5, 12.5] and rho == pytest.approx(1.0)
    mixed = np.array([[5.0, 4, 3, 2, 1], [1, 2, 3, 4, 5], [7, 7, 7, 7, 7]])  # the flat row has no Spearman
    assert volume_chain.gain_response(mixed, gains)[1] == pytest.approx(0.0)
    assert np.isnan(volume_chain.gain_response(np.ones((2, 5)), gains)[1])


def test_stops_with_one_sentence_without_artifacts(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(REPO / "bench" / "volume_chain.py"), "--data", str(tmp_path),
                          "--audio-encoder", str(tmp_path / "a.pt")], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode != 0 and "a.pt does not exist: run `dvc repro` first" in res.stderr
    assert "Traceback" not in res.stderr
