"""bench/g_variants.sh: its arguments, the params each variant trains with, and one clear stop for each bad
input (run for real, with bash, in a temporary project folder)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "g_variants.sh"
ARTIFACTS = ("data/images/train.npy", "data/events.parquet", "artifacts/image_encoder.pt",
             "artifacts/audio_encoder.pt", "artifacts/evaluator.pt")


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A project folder with the repository's params.yaml and empty stand-ins for the pipeline's outputs."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    for rel in ARTIFACTS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize("args, code, message", [
    ((), 2, "name at least one variant"),
    (("--jobs", "0", "A"), 2, "--jobs takes a whole number of at least 1, got 0"),
    (("--steps", "x", "A"), 2, "--steps takes a whole number of at least 1, got x"),
    (("--minutes", "-1", "A"), 2, "--minutes takes a number of at least 0, got -1"),
    (("A", "--steps"), 2, "--steps needs a value"),
    (("--bogus", "A"), 2, "unknown option --bogus"),
    ((":g_ch=4",), 2, "a variant's name is letters, digits"),
    (("A", "A:g_ch=16"), 2, "two variants are named A"),
    (("A:nope=1",), 1, "'nope=1' is not key=value with a key of params.yaml's generator block"),
    (("A:g_ch",), 1, "'g_ch' is not key=value"),
    (("A:composites=2",), 1, "variant A: generator.composites: expected a share in [0, 1], got 2.0"),
])
def test_bad_arguments_stop_with_one_sentence(project: Path, args: tuple, code: int, message: str) -> None:
    res = run(project, *args)
    assert res.returncode == code and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_outside_a_project_or_without_artifacts_it_says_what_is_missing(project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    res = run(empty, "A")
    assert res.returncode == 1 and f"no params.yaml in {empty}: run it from the project root" in res.stderr
    (project / "artifacts" / "evaluator.pt").unlink()
    res = run(project, "A")
    assert res.returncode == 1 and "artifacts/evaluator.pt does not exist: run `dvc repro` first" in res.stderr


def test_each_variant_trains_on_params_yaml_with_its_overrides(project: Path) -> None:
    """The variant's params.yaml is the project's with its overrides, steps and minutes; a variant whose
    training fails (here: the empty stand-in encoder) stops the script and names its log."""
    res = run(project, "--steps", "5", "--minutes", "1.5", "--out", "gv", 'B:g_ch=16,attn="16",feature_first=true')
    base = yaml.safe_load((project / "params.yaml").read_text())
    got = yaml.safe_load((project / "gv" / "B" / "params.yaml").read_text())
    want = {**base["generator"], "g_ch": 16, "attn": "16", "feature_first": True, "steps": 5, "minutes": 1.5}
    assert got["generator"] == want and {k: v for k, v in got.items() if k != "generator"} == \
        {k: v for k, v in base.items() if k != "generator"}
    assert res.returncode == 1 and "variant B failed to train: gv/B/train.log" in res.stderr
    log = (project / "gv" / "B" / "train.log").read_text()
    assert "cannot read artifacts/image_encoder.pt as a checkpoint (empty, truncated or not a torch file" in log
