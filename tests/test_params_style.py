"""The params files stay in the style DVC writes back, so `dvc exp run -S` / `dvc exp apply` change only the
lines they set: a user's `git diff params.yaml` after applying an experiment shows the experiment, not a
reformatted file. Checked with DVC's own rewrite (``dvc.utils.hydra.apply_overrides``, what ``-S`` runs)."""
from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FILES = ["params.yaml", "params/vggsound.yaml"]


def _set(tmp_path: Path, name: str, *overrides: str) -> tuple[list[str], list[str]]:
    """(lines before, lines after) DVC applies ``overrides`` to a copy of the repo's ``name``."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / Path(name).name
    shutil.copy(REPO / name, path)
    before = path.read_text().splitlines()
    apply_overrides(path, list(overrides))
    return before, path.read_text().splitlines()


def _changed(before: list[str], after: list[str]) -> list[tuple[str, str]]:
    """(old line, new line) of each one-line replacement; any other kind of change fails the test."""
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        assert tag == "replace" and i2 - i1 == j2 - j1, f"lines {i1 + 1}-{i2} rewritten: {after[j1:j2]}"
        out += list(zip(before[i1:i2], after[j1:j2]))
    return out


@pytest.mark.parametrize("name", FILES)
def test_dvc_rewrite_of_an_unchanged_value_leaves_the_file_byte_equal(tmp_path: Path, name: str) -> None:
    before, after = _set(tmp_path, name, "seed=0")
    assert after == before, _changed(before, after)


@pytest.mark.parametrize("name", FILES)
def test_dvc_set_changes_only_the_set_lines(tmp_path: Path, name: str) -> None:
    before, after = _set(tmp_path, name, "loss=l2", "selection=mid", "audio_encoder.spectrogram.n_mels=32")
    changed = _changed(before, after)
    assert [new.split("#")[0].strip() for _, new in changed] == ["loss: l2", "selection: mid", "n_mels: 32"]
    assert all(old.split("#")[1:] == new.split("#")[1:] for old, new in changed)  # comments kept


def test_a_float_dvc_writes_in_exponent_form_loads_as_that_float(tmp_path: Path) -> None:
    """`dvc exp run -S x=1e-8` writes ``1e-08`` (no dot), which YAML 1.1 reads as a string: the strict loader
    reads floats as YAML 1.2 (and DVC) do, so the stage gets the number, not an error."""
    from pipeline.params import load_all

    _, after = _set(tmp_path, "params.yaml", "audio_encoder.spectrogram.log_eps=1e-8", "audio_encoder.lr=2e-4")
    assert "    log_eps: 1e-08" in after  # DVC's own spelling, as a user's experiment leaves it
    params = load_all(tmp_path / "params.yaml")
    assert params["audio_encoder"].spectrogram.log_eps == 1e-8 and params["audio_encoder"].lr == 2e-4
