"""A tiny end-to-end `dvc repro` of the real dvc.yaml in a temporary git repo."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from dvc_project import make_project, set_params, sh, stages


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("proj") / "repo", seed=0)


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
    rerun_writes_the_same_lock_and_reports(project)

    set_params(project, 0, selection="mid")  # what `dvc exp run -S selection=mid` changes
    mid = sh("dvc", "repro", cwd=project)
    assert "Running stage 'pairs'" in mid
    assert not any(f"Running stage '{s}'" in mid for s in ("videos", "train_localizer", "score"))

    set_params(project, 1)
    rerun = sh("dvc", "repro", "videos", cwd=project)  # the world itself; the stages reading it are stale
    assert "Running stage 'videos'" in rerun and digest(data / "events.parquet") != first["events.parquet"]
    stale = sh("dvc", "status", cwd=project)  # (later stages show up once their inputs are rebuilt)
    assert all(f"{s}:" in stale for s in ("train_localizer", "score", "pairs", "images", "train_evaluator")), stale

    set_params(project, 0)
    shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)  # force a real rerun, not a cache checkout
    sh("dvc", "repro", "--force", "videos", cwd=project)
    assert {f: digest(data / f) for f in first} == first  # same seed, byte-identical manifests


TIMED = {"score": ("data/moments.summary.timings.json", "wall_s"),
         "train_image_encoder": ("reports/image_encoder.timings.json", "seconds"),
         "train_generator": ("reports/generator.timings.json", "s_per_step"),
         "train_audio_encoder": ("reports/align/metrics.timings.json", "epochs"),
         "train_evaluator": ("reports/evaluator.timings.json", "epoch_seconds"),
         "evaluate": ("reports/metrics.timings.json", "seconds")}


def rerun_writes_the_same_lock_and_reports(project: Path) -> None:
    """The stages that time themselves, run again from scratch, write the same dvc.lock and git-tracked reports
    byte for byte (what a fresh clone's `dvc repro` should): their timings go to git-ignored sidecars
    (pipeline.timings), not into outputs whose hashes dvc.lock records."""
    import json

    for path, key in TIMED.values():
        assert key in json.loads((project / path).read_text()), path
    assert "seconds" not in (project / "reports" / "evaluator_curve.csv").read_text().splitlines()[0]
    assert "train_samples_per_s" not in (project / "reports" / "align" / "epochs.csv").read_text()
    sh("git", "add", "-A", cwd=project)
    assert not [f for f in sh("git", "status", "--porcelain", cwd=project).split() if f.endswith(".timings.json")]
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "run", cwd=project)
    lock = (project / "dvc.lock").read_bytes()
    (project / "artifacts" / "audio_encoder.last.pt").unlink()  # the audio encoder starts over, as in a clone
    ran = sh("dvc", "repro", "--force", "--single-item", "--no-run-cache", *TIMED, cwd=project)
    assert not [s for s in TIMED if f"Running stage '{s}'" not in ran], ran
    assert (project / "dvc.lock").read_bytes() == lock
    assert sh("git", "status", "--porcelain", cwd=project).strip() == "", sh("git", "diff", cwd=project)


CLASSES = {"bell": ((230, 200, 40), 660.0), "drum": ((40, 90, 220), 150.0), "bird": ((60, 200, 80), 2400.0)}


def local_videos(folder: Path, per_class: int = 5) -> Path:
    """``per_class`` real H.264 + AAC clips per class (3.5 s, 10 fps, 64x48): a square of the class's colour
    moving over a noisy background while the class's tone sounds over noise; and a labels CSV naming some
    splits and leaving the rest to the hash. Returns the CSV."""
    import numpy as np
    from media_files import make

    rows = ["path,label,split"]
    rng = np.random.default_rng(0)
    for c, (name, (colour, hz)) in enumerate(CLASSES.items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            frames = rng.integers(0, 90, (35, 48, 64, 3), dtype=np.uint8)
            for t in range(35):
                y, x = 8 + (t + 3 * i) % 20, 4 + (2 * t + 5 * i) % 40
                frames[t, y:y + 16, x:x + 16] = colour
            audio = (f"sine=frequency={hz * (1 + 0.05 * i):g}:sample_rate=16000:duration=3.5,"
                     f"volume=0.5[s];anoisesrc=color=pink:amplitude=0.05:duration=3.5:sample_rate=16000[n];"
                     f"[s][n]amix=inputs=2")
            make(folder / name / f"clip {i}.mp4", frames=frames, audio=[audio])
            split = ["train", "train", "test", "val", ""][i % 5]  # the last one: assigned by hash
            rows.append(f"{name}/clip {i}.mp4,{name},{split}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


@pytest.mark.slow
def test_dvc_exp_run_on_a_local_folder_runs_every_stage(tmp_path: Path) -> None:
    """`dvc exp run -S data.source=local -S data.local.dir=DIR -S data.local.labels=CSV` on a folder of real
    videos runs the whole pipeline (every stage of dvc.yaml; tiny params from tests/dvc_project.py)."""
    import json

    import yaml

    from pipeline import manifests

    folder = tmp_path / "my videos"
    labels = local_videos(folder)
    project = make_project(tmp_path / "repo", commit=True)
    out = sh("dvc", "exp", "run", "-S", "data.source=local", "-S", f"data.local.dir={folder}",
             "-S", f"data.local.labels={labels}", cwd=project)
    names = stages()
    assert not [s for s in names if f"Running stage '{s}'" not in out], out
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(names)
    for name in names:
        for o in lock[name].get("outs", []):
            assert (project / o["path"]).exists(), f"stage {name}: {o['path']} is missing"
    clips = manifests.read(project / "data" / "videos.parquet").to_pylist()
    assert len(clips) == 15 and all(c["status"] == "ok" and c["has_audio"] for c in clips)
    assert {c["label"] for c in clips} == set(CLASSES)
    assert {c["split"] for c in clips} == {"train", "val", "test"}
    pairs = manifests.read(project / "data" / "pairs.parquet").to_pylist()
    assert len(pairs) == 15 and all(p["label"] in CLASSES for p in pairs)
    assert not list((project / "data" / "raw").glob(".work-*"))
    # The health figures work from clip labels (no events.parquet): val frames are the bank, test the queries.
    health = json.loads((project / "reports" / "image_encoder.json").read_text())
    assert health["knn_acc"] is not None and health["bank"] > 0 and health["queries"] > 0
    assert health["classes"] == sorted(CLASSES)
    gen = json.loads((project / "reports" / "generator" / "metrics.json").read_text())
    assert gen["class_acc"] is not None and gen["fid"] is not None
    assert "val_r1" in json.loads((project / "reports" / "align" / "metrics.json").read_text())
    assert (project / "reports" / "generator" / "fid.csv").read_text().startswith("step,fid\n")

