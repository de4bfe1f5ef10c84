"""A tiny end-to-end `dvc repro` of the real dvc.yaml in a temporary git repo."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(*cmd: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_params(root: Path, seed: int, selection: str = "top1") -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["seed"], params["selection"] = seed, selection
    params["data"]["world"].update(classes=8, clips_per_class=3, duration_s=2.0)
    params["localizer"].update(dim=8, width=4, n_mels=16, steps=2, batch_videos=4)
    params["pairs"].update(shard_size=4)
    # The visual half trains for a handful of steps at the smallest widths.
    params["image_encoder"].update(steps=2, batch=8, lr=0.001, width=2, hidden_dim=16, proj_dim=8, n_prototypes=8)
    params["generator"].update(steps=2, batch=4, g_ch=4, d_ch=4, dim_z=16, shared_dim_feat=8, sample_every=2,
                               eval_frames=8)
    params["embed"].update(batch=8, workers=0)
    params["audio_encoder"].update(width=4, epochs=1, max_steps=2, batch=8, workers=0)
    params["evaluator"].update(width=2, epochs=1, batch=16, threads=1)
    params["evaluate"].update(n_noise=2, volume_noise=1, mix_pairs=4, samples=2, batch=16, threads=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("proj")
    for d in ("pipeline", "stages", "models"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    set_params(root, 0)
    sh("git", "init", "-q", cwd=root)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    return root


@pytest.mark.slow
def test_repro_runs_then_does_nothing_then_follows_the_seed(project: Path) -> None:
    sh("dvc", "repro", cwd=project)
    data = project / "data"
    assert (data / "videos.parquet").is_file() and (data / "events.parquet").is_file()
    assert len(list((data / "videos").glob("*.mp4"))) == 24
    assert (project / "artifacts" / "localizer.pt").is_file() and (data / "moments.parquet").is_file()
    assert (data / "pairs.parquet").is_file() and (data / "shards" / "train-000000.tar").is_file()
    assert len(list((project / "reports" / "moments").glob("*.png"))) == 4
    first = {f: digest(data / f) for f in ("videos.parquet", "events.parquet")}
    assert (data / "images" / "train.npy").is_file() and (project / "artifacts" / "generator.pt").is_file()
    assert (project / "reports" / "image_encoder.json").is_file()
    assert (project / "reports" / "generator" / "samples.png").is_file()
    assert (project / "artifacts" / "audio_encoder.pt").is_file() and (data / "embeddings").is_dir()
    assert "val_r1" in (project / "reports" / "align" / "metrics.json").read_text()
    assert (project / "artifacts" / "evaluator.pt").is_file() and (project / "reports" / "evaluator.json").is_file()
    assert len(list((project / "reports" / "samples").glob("*.png"))) == 2
    shown = sh("dvc", "metrics", "show", cwd=project)
    assert "reports/metrics.json" in shown and "volume_spearman" in shown and "evaluator_acc" in shown

    again = sh("dvc", "repro", cwd=project)
    assert "didn't change, skipping" in again and "Running stage" not in again
    assert "up to date" in sh("dvc", "status", cwd=project).lower()

    set_params(project, 0, selection="mid")  # what `dvc exp run -S selection=mid` changes
    mid = sh("dvc", "repro", cwd=project)
    assert "Running stage 'pairs'" in mid
    assert not any(f"Running stage '{s}'" in mid for s in ("videos", "train_localizer", "score"))

    set_params(project, 1)
    rerun = sh("dvc", "repro", cwd=project)
    assert "Running stage 'videos'" in rerun and "Running stage 'train_generator'" in rerun
    assert digest(data / "events.parquet") != first["events.parquet"]

    set_params(project, 0)
    shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)  # force a real rerun, not a cache checkout
    sh("dvc", "repro", "--force", cwd=project)
    assert {f: digest(data / f) for f in first} == first  # same seed, byte-identical manifests
