"""bench/paper_gpu.py (run by bench/paper_gpu.sh on a GPU) at tiny widths on the CPU: it runs end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.devices import cpu_bf16

REPO = Path(__file__).resolve().parents[1]


def test_paper_gpu_bench_runs_at_tiny_widths_and_prints_images_per_s(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "bench" / "paper_gpu.py"), "--tiny", "--device", "cpu", "--amp", "on,off",
           "--swav-steps", "3", "--gan-steps", "2", "--out", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    assert [r["stage"].split()[0] for r in rows] == ["train_image_encoder"] * 2 + ["train_generator"] * 2
    assert all(r["images_per_s"] > 0 and r["device"] == "cpu" for r in rows)
    # on the CPU the SwAV stage ignores amp; the IC-GAN step uses bf16 where the CPU has it natively
    assert [r["amp"] for r in rows] == [False, False, cpu_bf16(), False]
    assert (tmp_path / "images" / "train.npy").is_file() and (tmp_path / "gen_True" / "metrics.json").is_file()
    assert "| train_generator (IC-GAN) | cpu | fp32 |" in res.stdout
    assert (REPO / "bench" / "paper_gpu.sh").stat().st_mode & 0o111  # the lead runs it directly
