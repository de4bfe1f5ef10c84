"""bench/cli_controls.py: a clear stop without the pipeline's artifacts (its figures need the world's artifacts)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cli_controls_stops_with_one_sentence_without_artifacts(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(REPO / "bench" / "cli_controls.py"), "--data", str(tmp_path),
                          "--evaluator", str(tmp_path / "e.pt")], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode != 0 and "does not exist: run `dvc repro` first" in res.stderr
    assert "Traceback" not in res.stderr
