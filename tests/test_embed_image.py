"""`s2s embed-image`: published-format and own checkpoints, through the real CLI, and its bad inputs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import compat_file
from PIL import Image
from torch import nn

from models.checkpoint import save_checkpoint
from models.image_encoder import ImageEncoder, ImageEncoderConfig
from pipeline.preprocess import encoder_input, resized_input

S2S = [sys.executable, "-m", "pipeline.cli"]


def s2s(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([*S2S, *map(str, args)], capture_output=True, text=True, timeout=300)


def published_swav(path: Path) -> nn.Module:
    """A published-format SwAV file (every key and shape of the release, ``module.*``): the trunk is a
    freshly initialised torchvision ResNet-50 (so features stay finite), the head random. Returns that
    ResNet-50 without its fc: the published feature extractor."""
    keys = json.loads(compat_file("official_checkpoint_keys.json").read_text())["swav_800ep_pretrain.pth.tar"]
    torch.manual_seed(0)
    ref = torchvision.models.resnet50()
    ref.fc = nn.Identity()
    trunk = ref.state_dict()
    with torch.no_grad():  # BN statistics away from (0, 1), so a wrong eval-mode path would show
        for k, v in trunk.items():
            if k.endswith("running_mean"):
                v.normal_(0, 0.1)
            elif k.endswith("running_var"):
                v.uniform_(0.5, 1.5)
    state = {name: trunk[name[7:]] if name[7:] in trunk else torch.randn(shape) * 0.02 for name, shape in keys}
    assert [list(v.shape) for v in state.values()] == [s for _, s in keys]
    torch.save(state, path)
    return ref.eval()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    with np.load(compat_file("golden_dev.npz")) as z:
        golden = z["image_uint8"]
    rng = np.random.default_rng(0)
    paths = {"golden": root / "golden.png", "photo": root / "photo.jpg", "grey": root / "grey.png",
             "bad": root / "bad.png", "cut": root / "cut.jpg"}
    Image.fromarray(golden).save(paths["golden"])
    Image.fromarray(rng.integers(0, 256, (97, 311, 3), dtype=np.uint8)).save(paths["photo"], quality=90)
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(paths["grey"])
    paths["bad"].write_bytes(b"this is not an image at all")
    paths["cut"].write_bytes(paths["photo"].read_bytes()[:600])
    return paths


def test_published_checkpoint_gives_the_published_features(images: dict[str, Path], tmp_path: Path) -> None:
    ref = published_swav(tmp_path / "swav.pth.tar")
    order = [images["golden"], images["photo"], images["grey"], images["golden"]]
    out = s2s("embed-image", *order, "--checkpoint", tmp_path / "swav.pth.tar", "--out", tmp_path / "f.npy",
              "--batch", "3", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    feats = np.load(tmp_path / "f.npy")
    assert feats.shape == (4, 2048) and feats.dtype == np.float32 and np.isfinite(feats).all()
    with np.load(compat_file("golden_dev.npz")) as z:  # the published code's own preprocessing output
        x = torch.from_numpy(z["image_224"])[None].float()
    with torch.no_grad():
        golden = ref(x)[0].numpy()
        others = ref(torch.stack([encoder_input(Image.open(images[k])) for k in ("photo", "grey")])).numpy()
    scale = np.abs(golden).max()
    assert scale > 0.01
    assert np.abs(feats[0] - golden).max() <= 1e-4 * max(1.0, scale)
    assert np.abs(feats[1:3] - others).max() <= 1e-4 * max(1.0, scale)
    assert np.array_equal(feats[3], feats[0])  # input order, one row per image
    assert not np.allclose(feats[1], feats[2])


def test_own_checkpoint_uses_its_input_size(images: dict[str, Path], tmp_path: Path) -> None:
    cfg = ImageEncoderConfig(width=2, hidden_dim=16, proj_dim=8, n_prototypes=4)
    torch.manual_seed(1)
    model = ImageEncoder(cfg).eval()
    save_checkpoint(tmp_path / "enc.pt", model, cfg, step=5, input_size=48)
    out = s2s("embed-image", images["photo"], images["golden"], "--checkpoint", tmp_path / "enc.pt",
              "--out", tmp_path / "sub" / "f.npy")
    assert out.returncode == 0, out.stderr
    feats = np.load(tmp_path / "sub" / "f.npy")
    with torch.no_grad():
        expected = model(torch.stack([resized_input(Image.open(images[k]), 48) for k in ("photo", "golden")]))
    assert feats.shape == (2, 64)
    # same weights and input; float32 sums in another order (the CLI's process, its threads) differ by ulps,
    # and these features reach ~75, where one ulp is 7.6e-6: a relative tolerance
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-5, atol=1e-5)


def _resnet18_as_swav(path: Path) -> None:
    torch.save({f"module.{k}": v for k, v in torchvision.models.resnet18().state_dict().items()}, path)


def _truncated(path: Path) -> None:
    cfg = ImageEncoderConfig(width=2, hidden_dim=16, proj_dim=8, n_prototypes=4)
    save_checkpoint(path, ImageEncoder(cfg), cfg, step=0, input_size=32)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("case,message", [
    ("missing image", "no such image:"),
    ("corrupt image", "cannot read"),
    ("truncated image", "cannot read"),
    ("missing checkpoint", "no image encoder checkpoint at"),
    ("wrong architecture", "'module.layer1.0.conv1.weight': checkpoint shape [64, 64, 3, 3] != model shape "
                           "[64, 64, 1, 1]"),
    ("truncated checkpoint", "truncated or not a torch file"),
])
def test_bad_input_is_one_sentence(images: dict[str, Path], tmp_path: Path, case: str, message: str) -> None:
    ckpt, pics = tmp_path / "enc.pt", [images["golden"]]
    if case == "wrong architecture":
        _resnet18_as_swav(ckpt)
    elif case == "missing checkpoint":
        ckpt = tmp_path / "nowhere.pt"
    else:
        _truncated(ckpt) if case == "truncated checkpoint" else save_checkpoint(
            ckpt, ImageEncoder(ImageEncoderConfig(width=2, hidden_dim=16, proj_dim=8, n_prototypes=4)),
            ImageEncoderConfig(width=2, hidden_dim=16, proj_dim=8, n_prototypes=4), step=0, input_size=32)
        pics += {"missing image": [tmp_path / "gone.png"], "corrupt image": [images["bad"]],
                 "truncated image": [images["cut"]]}.get(case, [])
    out = s2s("embed-image", *pics, "--checkpoint", ckpt, "--out", tmp_path / "f.npy")
    assert out.returncode == 2, out.stdout
    assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "f.npy").exists()
