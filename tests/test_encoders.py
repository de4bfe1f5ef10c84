"""Audio and image encoders: published checkpoints load strictly, own format round-trips, shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import compat_file
import torch
import torchvision
from torch import nn

from models.audio_encoder import AudioEncoder, AudioEncoderConfig
from models.biggan_io import load_generator
from models.checkpoint import CheckpointMismatchError, CheckpointReadError, save_checkpoint
from models.image_encoder import ImageEncoder, ImageEncoderConfig
from pipeline.preprocess import encoder_input, generator_target

AUDIO_FILE, SWAV_FILE = "sound2scene.pth", "swav_800ep_pretrain.pth.tar"


@pytest.fixture(scope="module")
def official_keys() -> dict[str, list]:
    return json.loads(compat_file("official_checkpoint_keys.json").read_text())


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(compat_file("golden_dev.npz")) as z:
        return {k: z[k] for k in z.files}


def random_state(keys: list, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors under exactly the published key names and shapes, in the published order."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in keys:
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7, dtype=torch.long)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = torch.randn(shape, generator=g) * 0.05
    return state


def write_official(keys: dict, name: str, seed: int, tmp_path_factory) -> tuple[Path, dict]:
    """Save a random published-format state dict as ``name``; return its path and the dict."""
    state = random_state(keys[name], seed=seed)
    path = tmp_path_factory.mktemp("official") / name
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def audio_file(official_keys, tmp_path_factory) -> tuple[Path, dict]:
    return write_official(official_keys, AUDIO_FILE, 1, tmp_path_factory)


@pytest.fixture(scope="module")
def swav_file(official_keys, tmp_path_factory) -> tuple[Path, dict]:
    return write_official(official_keys, SWAV_FILE, 2, tmp_path_factory)


def assert_loaded(model: nn.Module, state: dict, prefix: str) -> None:
    ours = model.state_dict()
    assert len(ours) == len(state)
    for key, value in state.items():
        assert torch.equal(ours[key[len(prefix):]], value), key


def test_published_audio_checkpoint_loads_strictly(audio_file):
    path, state = audio_file
    model = AudioEncoder.from_checkpoint(path)
    assert model.config == AudioEncoderConfig()
    assert_loaded(model, state, "audnet.")


def test_published_swav_checkpoint_loads_strictly(swav_file):
    path, state = swav_file
    model = ImageEncoder.from_checkpoint(path)
    assert model.config == ImageEncoderConfig()
    assert_loaded(model, state, "module.")
    wrapped = ImageEncoder.from_checkpoint({"state_dict": state})
    assert torch.equal(wrapped.prototypes.weight, state["module.prototypes.weight"])


def test_audio_forward_is_published_head(audio_file, golden):
    """relu(fc(avgpool(resnet18 trunk))): checked against torchvision's ResNet-18 with our weights."""
    path, state = audio_file
    model = AudioEncoder.from_checkpoint(path).eval()
    ref = torchvision.models.resnet18(num_classes=2048)
    ref.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    ref.load_state_dict({k[len("audnet."):]: v for k, v in state.items()})
    spec = torch.from_numpy(golden["spec_a"])[None, None]
    with torch.no_grad():
        z = model(spec)
        expected = torch.relu(ref.eval()(spec))
    assert z.shape == (1, 2048) and (z >= 0).all() and (z > 0).any()
    assert torch.allclose(z, expected, atol=1e-5)
    assert model.pooled(spec).shape == (1, 512)


def test_image_feature_is_published_extractor(swav_file, golden):
    """IC-GAN's extractor is torchvision's ResNet-50 without fc; SwAV's stem pads 1 + 2 = 3."""
    path, state = swav_file
    model = ImageEncoder.from_checkpoint(path).eval()
    ref = torchvision.models.resnet50()
    ref.fc = nn.Identity()
    ref.load_state_dict({k[7:]: v for k, v in state.items() if ".projection_head" not in k
                         and ".prototypes" not in k})
    image = encoder_input(golden["image_uint8"])[None]
    with torch.no_grad():
        feat = model(image)
        assert torch.allclose(feat, ref.eval()(image), atol=1e-5)
        swav_stem = nn.functional.conv2d(nn.functional.pad(image, (1, 1, 1, 1)), model.conv1.weight,
                                         stride=2, padding=2)
        assert torch.allclose(swav_stem, model.conv1(image), atol=1e-5)
    assert feat.shape == (1, 2048)


@pytest.mark.parametrize("key,shape", [("audnet.fc.weight", [1024, 512]),
                                       ("audnet.layer2.0.conv1.weight", [128, 64, 1, 1])])
def test_mismatched_shape_names_key_and_shapes(audio_file, key, shape):
    _, state = audio_file
    bad = dict(state, **{key: torch.zeros(shape)})
    with pytest.raises(CheckpointMismatchError) as err:
        AudioEncoder.from_checkpoint(bad)
    expected = list(state[key].shape)
    assert f"{key!r}: checkpoint shape {shape} != model shape {expected}" in str(err.value)


def test_missing_and_unexpected_keys_are_named(swav_file):
    _, state = swav_file
    bad = {k: v for k, v in state.items() if k != "module.prototypes.weight"}
    bad["module.fc.weight"] = torch.zeros(1000, 2048)
    with pytest.raises(CheckpointMismatchError) as err:
        ImageEncoder.from_checkpoint(bad)
    msg = str(err.value)
    assert "missing key 'module.prototypes.weight'" in msg and "unexpected key 'module.fc.weight'" in msg


def test_wrong_prefix_is_rejected(audio_file):
    _, state = audio_file
    with pytest.raises(CheckpointMismatchError, match="unexpected key 'module.conv1.weight'"):
        AudioEncoder.from_checkpoint({"module." + k[7:]: v for k, v in state.items()})


def test_narrow_audio_encoder_round_trip(tmp_path):
    cfg = AudioEncoderConfig(width=8, embed_dim=32)
    torch.manual_seed(0)
    model = AudioEncoder(cfg).eval()
    spec = torch.randn(2, 1, 64, 128)
    out = model(spec)
    assert out.shape == (2, 32) and model.pooled(spec).shape == (2, 64)
    save_checkpoint(tmp_path / "a.pt", model, cfg, step=12)
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    stored = torch.load(tmp_path / "a.pt", weights_only=True)
    assert stored["step"] == 12 and stored["config"] == {"width": 8, "embed_dim": 32}
    loaded = AudioEncoder.from_checkpoint(tmp_path / "a.pt").eval()
    assert loaded.config == cfg and torch.equal(loaded(spec), out)


def test_narrow_image_encoder_round_trip(tmp_path):
    cfg = ImageEncoderConfig(width=8, hidden_dim=64, proj_dim=16, n_prototypes=10)
    model = ImageEncoder(cfg)
    images = torch.randn(4, 3, 64, 64)
    z, scores = model.swav_forward(images)
    assert model(images).shape == (4, 256) and z.shape == (4, 16) and scores.shape == (4, 10)
    assert torch.allclose(z.norm(dim=1), torch.ones(4))
    model.normalize_prototypes_()
    assert torch.allclose(model.prototypes.weight.norm(dim=1), torch.ones(10))
    save_checkpoint(tmp_path / "i.pt", model, cfg, step=3)
    loaded = ImageEncoder.from_checkpoint(tmp_path / "i.pt")
    assert loaded.config == cfg
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 model.state_dict().values()))


def test_small_stem_keeps_twice_the_resolution_and_round_trips(tmp_path):
    cfg = ImageEncoderConfig(width=2, hidden_dim=16, proj_dim=8, n_prototypes=4, stem="small")
    torch.manual_seed(0)
    model = ImageEncoder(cfg).eval()
    images = torch.randn(2, 3, 64, 64)
    assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, nn.Identity)
    assert model.feature_map(images).shape[-2:] == (4, 4)  # /16, against /32 with the published stem
    assert ImageEncoder(ImageEncoderConfig(width=2, hidden_dim=16, proj_dim=8, n_prototypes=4)
                        ).feature_map(images).shape[-2:] == (2, 2)
    save_checkpoint(tmp_path / "s.pt", model, cfg, step=1)
    assert torch.load(tmp_path / "s.pt", weights_only=True)["config"]["stem"] == "small"
    loaded = ImageEncoder.from_checkpoint(tmp_path / "s.pt").eval()
    assert loaded.config == cfg and torch.equal(loaded(images), model(images))
    stored = torch.load(tmp_path / "s.pt", weights_only=True)
    stored["config"]["stem"] = "imagenet"
    with pytest.raises(CheckpointMismatchError, match="'conv1.weight': checkpoint shape"):
        ImageEncoder.from_checkpoint(stored)
    with pytest.raises(ValueError, match="stem must be 'imagenet' or 'small'"):
        ImageEncoder(ImageEncoderConfig(width=2, stem="tiny"))


def test_own_format_config_mismatches_are_errors(tmp_path):
    cfg = AudioEncoderConfig(width=8, embed_dim=32)
    save_checkpoint(tmp_path / "a.pt", AudioEncoder(cfg), cfg, step=0)
    with pytest.raises(CheckpointMismatchError, match="saved with"):
        AudioEncoder.from_checkpoint(tmp_path / "a.pt", config=AudioEncoderConfig())
    stored = torch.load(tmp_path / "a.pt", weights_only=True)
    stored["config"]["depth"] = 34
    with pytest.raises(CheckpointMismatchError, match="depth"):
        AudioEncoder.from_checkpoint(stored)
    stored = torch.load(tmp_path / "a.pt", weights_only=True)
    stored["config"]["embed_dim"] = 16
    with pytest.raises(CheckpointMismatchError, match="'fc.weight': checkpoint shape"):
        AudioEncoder.from_checkpoint(stored)


def test_image_encoder_input_matches_published(golden):
    x = encoder_input(golden["image_uint8"])
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert np.abs(x.numpy() - golden["image_224"]).max() <= 1e-4


def test_generator_target_is_128px_in_range(golden):
    from PIL import Image

    y = generator_target(Image.fromarray(golden["image_uint8"]).convert("L"))
    assert y.shape == (3, 128, 128) and y.min() >= -1 and y.max() <= 1
    assert torch.equal(y[0], y[1])  # grey input -> equal RGB channels
    z = generator_target(golden["image_uint8"])
    mean = golden["image_uint8"].reshape(-1, 3).mean(0) / 127.5 - 1
    assert np.abs(z.mean(dim=(1, 2)).numpy() - mean).max() < 0.02
    with pytest.raises(ValueError):
        generator_target(golden["image_uint8"].astype(np.float32))


@pytest.mark.parametrize("case", ["empty", "truncated", "not a torch file"])
def test_unreadable_checkpoint_is_one_error_naming_the_file(tmp_path, case):
    cfg = AudioEncoderConfig(width=2, embed_dim=8)
    good = tmp_path / "good.pt"
    save_checkpoint(good, AudioEncoder(cfg), cfg, step=1)
    bad = tmp_path / "bad.pt"
    bad.write_bytes({"empty": b"", "truncated": good.read_bytes()[:300], "not a torch file": b"hello\n" * 50}[case])
    for load in (lambda: AudioEncoder.from_checkpoint(bad), lambda: load_generator(bad)):
        with pytest.raises(CheckpointReadError) as err:
            load()
        msg = str(err.value)
        assert msg.startswith(f"cannot read {bad} as a checkpoint (empty, truncated or not a torch file")
        assert len(msg.splitlines()) == 1 and len(msg) < 250
    assert isinstance(err.value, ValueError)  # the stages' command line turns ValueError into one line


def test_save_file_is_atomic_and_read_resume_skips_what_it_cannot_read(tmp_path, monkeypatch, caplog):
    from models import checkpoint

    path = tmp_path / "state.resume"
    checkpoint.save_file({"step": 1}, path)

    def broken_save(obj, f):  # torch.save dying half-way through its file
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        checkpoint.save_file({"step": 2}, path)
    monkeypatch.undo()
    assert checkpoint.read_resume(path) == {"step": 1} and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    path.write_bytes(b"PK\x03\x04 half a zip")
    with caplog.at_level("WARNING", logger="models.checkpoint"):
        assert checkpoint.read_resume(path) is None
    assert "ignoring the resume state: cannot read" in caplog.text
    assert checkpoint.read_resume(tmp_path / "none") is None and checkpoint.read_resume(None) is None
