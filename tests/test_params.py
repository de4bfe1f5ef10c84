"""Strict params: unknown keys and wrong types are errors that name the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.params import (SCALARS, SECTIONS, DataParams, DecodeParams, EvaluateParams, EvaluatorParams,
                             ParamsError, load_all, read_yaml, scalar, section)

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


def _field_paths(cls: type, where: str) -> set[str]:
    """Dotted paths of every field of dataclass ``cls``, nested dataclasses expanded."""
    import dataclasses
    import typing

    hints, out = typing.get_type_hints(cls), set()
    for f in dataclasses.fields(cls):
        sub = hints[f.name]
        out |= _field_paths(sub, f"{where}.{f.name}") if dataclasses.is_dataclass(sub) else {f"{where}.{f.name}"}
    return out


def _key_paths(value: object, cls: type, where: str) -> set[str]:
    """Dotted paths of the keys a params mapping sets, descending where ``cls`` has a nested dataclass."""
    import dataclasses
    import typing

    hints, out = typing.get_type_hints(cls), set()
    for k, v in (value or {}).items():
        sub = hints.get(k)
        nested = sub is not None and dataclasses.is_dataclass(sub)
        out |= _key_paths(v, sub, f"{where}.{k}") if nested else {f"{where}.{k}"}
    return out


def test_whole_repo_params_file_loads_strictly(tmp_path: Path) -> None:
    loaded = load_all(REPO / "params.yaml")
    assert set(loaded) == set(SCALARS) | set(SECTIONS)
    with pytest.raises(ParamsError, match="unknown top-level key 'genrator'"):
        load_all(_write(tmp_path, (REPO / "params.yaml").read_text() + "genrator: {steps: 3}\n"))


def test_paper_scale_params_file_sets_every_key_and_loads_strictly() -> None:
    """params/vggsound.yaml: a whole params file (every key of every section) at the paper's settings."""
    path = REPO / "params" / "vggsound.yaml"
    p, raw = load_all(path), read_yaml(path)
    assert set(SCALARS) <= set(raw)
    for name, cls in SECTIONS.items():
        missing = _field_paths(cls, name) - _key_paths(raw.get(name), cls, name)
        assert not missing, f"{path.name} does not set {sorted(missing)}"
    assert p["data"].source == "vggsound" and p["data"].clip.seconds == 10.0 and p["decode"].fps == 10
    assert p["generator"].resolution == 128 and p["generator"].g_ch == 96 and p["generator"].dim_z == 120
    assert p["generator"].attn == "64" and p["generator"].shared_dim_feat == 512
    enc = p["image_encoder"]
    assert (enc.width, enc.hidden_dim, enc.proj_dim, enc.n_prototypes, enc.crop_size) == (64, 2048, 128, 3000, 224)
    assert p["embed"].image_size is None  # the published 256 -> 224 input
    a = p["audio_encoder"]
    assert a.width == 64 and a.spectrogram.kind == "paper" and a.amp
    assert (a.batch, a.lr, a.weight_decay, a.optimizer) == (64, 1e-3, 1e-5, "adam")
    assert p["loss"] == "infonce" and p["selection"] == "top1"


def test_paper_spectrogram_is_257_by_1004() -> None:
    import torch

    from pipeline import audio_input

    sp = load_all(REPO / "params" / "vggsound.yaml")["audio_encoder"].spectrogram
    n = audio_input.n_samples(sp)
    assert n == 160_000
    assert audio_input.spectrogram_fn(sp)(torch.zeros(1, n)).shape == (1, 1, 257, 1004)


def test_yaml_reads_on_and_yes_as_strings_like_dvc(tmp_path: Path) -> None:
    from pipeline.params import AudioEncoderParams

    p = _write(tmp_path, "audio_encoder:\n  amp: false\n  spectrogram:\n    on: workers\n")
    a = section(p, "audio_encoder", AudioEncoderParams)
    assert a.spectrogram.on == "workers" and a.amp is False
    assert read_yaml(_write(tmp_path, "x: yes\ny: True\n")) == {"x": "yes", "y": True}


def test_evaluation_sections_load_and_name_unknown_keys(tmp_path: Path) -> None:
    assert section(REPO / "params.yaml", "evaluator", EvaluatorParams) == EvaluatorParams()
    assert section(REPO / "params.yaml", "evaluate", EvaluateParams).gains == (0.25, 0.5, 1.0, 2.0, 4.0)
    with pytest.raises(ParamsError, match="unknown key 'evaluate.n_noize'"):
        section(_write(tmp_path, "evaluate: {n_noize: 3}"), "evaluate", EvaluateParams)
    for layers in ("[1, a, 1, 1]", "[1, 1, 1]"):
        with pytest.raises(ParamsError, match="evaluator.layers"):
            section(_write(tmp_path, f"evaluator: {{layers: {layers}}}"), "evaluator", EvaluatorParams)
    assert EvaluatorParams().two_source is True
    assert section(_write(tmp_path, "evaluator: {two_source: false}"), "evaluator", EvaluatorParams).two_source is False
    with pytest.raises(ParamsError, match="evaluator.two_source: expected bool"):
        section(_write(tmp_path, "evaluator: {two_source: 1}"), "evaluator", EvaluatorParams)


@pytest.mark.parametrize("name, text, match", [
    ("image_encoder", "image_encoder: {device: gpu}", "image_encoder.device: 'gpu' is not one of"),
    ("image_encoder", "image_encoder: {amp: 1}", "image_encoder.amp: expected bool"),
    ("generator", "generator: {device: cuda0}", "generator.device: 'cuda0' is not one of"),
    ("generator", "generator: {amp: yes}", "generator.amp: expected bool"),
    ("image_encoder", "image_encoder: {objective: byol}", "image_encoder.objective: 'byol' is not one of"),
    ("image_encoder", "image_encoder: {stem: tiny}", "image_encoder.stem: 'tiny' is not one of"),
    ("image_encoder", "image_encoder: {bg_swap: 1.5}", "image_encoder.bg_swap: expected a probability"),
    ("image_encoder", "image_encoder: {min_foreground: 1.0}", "image_encoder.min_foreground: expected a share"),
    ("image_encoder", "image_encoder: {nce_temperature: 0}", "image_encoder.nce_temperature: expected > 0"),
    ("image_encoder", "image_encoder: {crop_scale: [0.9, 0.5]}", "image_encoder.crop_scale: expected \\[min, max\\]"),
])
def test_visual_half_device_and_amp_are_checked(tmp_path: Path, name: str, text: str, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        section(_write(tmp_path, text), name, SECTIONS[name])
    ok = section(_write(tmp_path, f"{name}: {{device: cpu, amp: false}}"), name, SECTIONS[name])
    assert ok.device == "cpu" and ok.amp is False
    paper = load_all(REPO / "params" / "vggsound.yaml")[name]
    assert paper.device == "auto" and paper.amp is True
