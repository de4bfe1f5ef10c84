"""Strict params: unknown keys and wrong types are errors that name the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.params import DataParams, DecodeParams, EvaluateParams, EvaluatorParams, ParamsError, scalar, section

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_repo_params_load_with_their_sections() -> None:
    data = section(REPO / "params.yaml", "data", DataParams)
    assert data.source == "world" and data.world.classes >= 8 and data.world.fps == 10
    assert section(REPO / "params.yaml", "decode", DecodeParams).backend in ("torchcodec", "decord")
    assert scalar(REPO / "params.yaml", "seed", int, -1) == 0


@pytest.mark.parametrize("text, key", [
    ("data: {sourse: world}", "data.sourse"),
    ("data: {world: {clases: 3}}", "data.world.clases"),
    ("data: {local: {dir: x, lables: y}}", "data.local.lables"),
])
def test_unknown_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ParamsError, match=f"unknown key '{key}'"):
        section(_write(tmp_path, text), "data", DataParams)


@pytest.mark.parametrize("text, match", [
    ("data: {world: {classes: eight}}", "data.world.classes: expected int"),
    ("data: {world: {classes: true}}", "data.world.classes: expected int"),
    ("data: {source: youtube}", "data.source: 'youtube' is not one of"),
    ("data: [1, 2]", "data: expected a mapping"),
])
def test_wrong_values_are_named(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        section(_write(tmp_path, text), "data", DataParams)


def test_ints_are_accepted_for_floats_and_other_sections_are_ignored(tmp_path: Path) -> None:
    p = _write(tmp_path, "data: {world: {duration_s: 3}}\nunrelated: {anything: 1}\n")
    assert section(p, "data", DataParams).world.duration_s == 3.0


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        section(tmp_path / "nope.yaml", "data", DataParams)
    with pytest.raises(ParamsError, match="not valid YAML"):
        section(_write(tmp_path, "data: {world: [}"), "data", DataParams)


def test_evaluation_sections_load_and_name_unknown_keys(tmp_path: Path) -> None:
    assert section(REPO / "params.yaml", "evaluator", EvaluatorParams) == EvaluatorParams()
    assert section(REPO / "params.yaml", "evaluate", EvaluateParams).gains == (0.25, 0.5, 1.0, 2.0, 4.0)
    with pytest.raises(ParamsError, match="unknown key 'evaluate.n_noize'"):
        section(_write(tmp_path, "evaluate: {n_noize: 3}"), "evaluate", EvaluateParams)
    for layers in ("[1, a, 1, 1]", "[1, 1, 1]"):
        with pytest.raises(ParamsError, match="evaluator.layers"):
            section(_write(tmp_path, f"evaluator: {{layers: {layers}}}"), "evaluator", EvaluatorParams)
