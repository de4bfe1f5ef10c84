"""bench/generator.py: runs on a tiny generator and prints every row, the bf16 ones where the CPU has bf16."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.devices import cpu_bf16

REPO = Path(__file__).resolve().parents[1]


def test_bench_prints_sampling_and_step_costs_in_each_precision(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["generator"].update(g_ch=2, d_ch=2, dim_z=8, shared_dim_feat=8, batch=4, k_neighbours=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = subprocess.run([sys.executable, str(REPO / "bench" / "generator.py"), "--params", str(tmp_path / "params.yaml"),
                          "--repeat", "1", "--feat-dim", "32"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert f"native CPU bf16: {cpu_bf16()}" in out
    kinds = ["float32", "bf16 autocast"] if cpu_bf16() else ["float32"]
    for name in ["world G sampling, batch 1", "world G sampling, batch 8"]:
        assert re.search(rf"\| {name} \| [0-9.]+ images/s \|", out)
    for kind in kinds:
        weight = params["generator"]["feature_weight"]  # the default's encoder pass is timed too
        assert re.search(rf"\| IC-GAN step, {kind} \(.*batch 4, 32 px.*feature_weight {weight:g}\) \| [0-9.]+ s \|", out)
        assert re.search(rf"\| DCGAN step, {kind} \(.*\) \| [0-9.]+ s \|", out)
        ratio = re.search(rf"\| IC-GAN / DCGAN step cost, {kind} \| ([0-9.]+)x \|", out)
        assert ratio and float(ratio.group(1)) > 0
    assert ("bf16 autocast" in out) is cpu_bf16()
