"""End-to-end DVC tests' setup, in one place: a temporary git + DVC repo holding a copy of the code and
dvc.yaml, and tiny params for every dvc.yaml stage (written as its params.yaml) so each stage runs in seconds.

A new stage adds its overrides to :func:`tiny_params`; the end-to-end tests iterate over dvc.yaml's stages.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tiny_params(seed: int = 0, selection: str = "top1") -> dict[str, Any]:
    """The repo's params.yaml with every stage shrunk (same keys, smaller numbers)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["seed"], params["selection"] = seed, selection
    params["data"]["world"].update(classes=8, clips_per_class=3, duration_s=2.0)
    params["data"].update(workers=2)
    params["data"]["clip"].update(short_side=64)
    # One decode process per stage: on 2 shared cores a second one (and its torch import) only adds waiting.
    params["localizer"].update(dim=8, width=4, n_mels=16, steps=2, batch_videos=4, workers=1)
    params["score"].update(workers=1)
    params["pairs"].update(shard_size=4, workers=1)
    # The visual half trains for a handful of steps at the smallest widths.
    params["image_encoder"].update(steps=2, batch=8, lr=0.001, width=2, hidden_dim=16, proj_dim=8, n_prototypes=8)
    params["generator"].update(steps=2, batch=4, g_ch=4, d_ch=4, dim_z=16, shared_dim_feat=8, sample_every=2,
                               eval_frames=8, fid_images=8)
    params["embed"].update(batch=8, workers=0)
    params["audio_encoder"].update(width=4, epochs=1, max_steps=2, batch=8, workers=0)
    params["evaluator"].update(width=2, epochs=1, batch=16, threads=1)
    params["evaluate"].update(n_noise=2, volume_noise=1, mix_pairs=4, samples=2, batch=16, threads=1)
    return params


def set_params(root: Path, seed: int = 0, selection: str = "top1") -> None:
    """Write :func:`tiny_params` as ``root/params.yaml``."""
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(seed, selection), sort_keys=False))


def sh(*cmd: str | Path, cwd: Path, timeout: float = 600) -> str:
    """Run ``cmd`` in ``cwd`` with this venv first on PATH and ``cwd``'s code importable; its output, or a
    failed assertion showing it."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def make_project(root: Path, *, commit: bool = False, **params: Any) -> Path:
    """A git + DVC repo at ``root`` with the code, dvc.yaml and the tiny params (``params``: tiny_params's
    arguments); ``commit`` commits it all (what ``dvc exp run`` needs)."""
    root.mkdir(parents=True, exist_ok=True)
    for d in ("pipeline", "stages", "models"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(REPO / ".gitignore", root / ".gitignore")  # the timings sidecars (pipeline.timings) stay out of git
    set_params(root, **params)
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    if commit:
        sh("git", "add", "-A", cwd=root)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init", cwd=root)
    return root


def stages() -> list[str]:
    """The stage names of the repo's dvc.yaml, in file order."""
    return list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
