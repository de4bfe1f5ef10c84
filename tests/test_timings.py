"""pipeline.timings: where a stage's own timings go, apart from its outputs."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline import timings


def test_sidecar_sits_beside_a_report_file_or_folder() -> None:
    assert timings.sidecar("reports/metrics.json") == Path("reports/metrics.timings.json")
    assert timings.sidecar(Path("data/moments.summary.json")) == Path("data/moments.summary.timings.json")
    assert timings.sidecar("reports/generator") == Path("reports/generator.timings.json")  # not inside the output
    assert timings.sidecar("reports/generator/") == Path("reports/generator.timings.json")


def test_write_report_splits_the_timings_off_and_read_gets_them_back(tmp_path: Path) -> None:
    report = tmp_path / "r" / "metrics.json"
    obj = {"r1": 0.5, "seconds": 12.3, "n": 3, "wall_s": 1.0}
    side = timings.write_report(obj, report, ("seconds", "wall_s", "absent"))
    assert json.loads(report.read_text()) == {"r1": 0.5, "n": 3}
    assert list(json.loads(report.read_text())) == ["r1", "n"]  # the report's order is kept
    assert side == tmp_path / "r" / "metrics.timings.json" and timings.read(report) == {"seconds": 12.3, "wall_s": 1.0}
    assert obj == {"r1": 0.5, "seconds": 12.3, "n": 3, "wall_s": 1.0}  # the caller's summary keeps everything
    assert sorted(p.name for p in report.parent.iterdir()) == ["metrics.json", "metrics.timings.json"]  # no temp left


def test_read_without_a_sidecar_or_with_a_broken_one_is_empty(tmp_path: Path) -> None:
    assert timings.read(tmp_path / "metrics.json") == {}
    (tmp_path / "metrics.timings.json").write_text("{not json")
    assert timings.read(tmp_path / "metrics.json") == {}
