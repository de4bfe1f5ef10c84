"""IC-GAN / BigGAN generator and discriminator: published-format compatibility and training helpers."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import compat_file
import torch
import torch.nn as nn

from models.biggan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from models.biggan_io import discriminator_from_published, generator_from_published, load_generator
from models.checkpoint import CheckpointMismatchError, load_state_strict, save_checkpoint
from models.biggan_layers import SNLinear
from models.gan_training import d_hinge_loss, ema_update, g_hinge_loss
from pipeline import icgan
from pipeline.params import GeneratorParams
from stages import train_generator

PUBLISHED = "icgan_biggan_imagenet_res128"

# The published icgan_res128.json plus the argparse defaults it relies on, as the training script
# stores it in state_dict_best0.pth (activation modules included).
ICGAN_CONFIG = {
    "G_ch": 96, "D_ch": 96, "dim_z": 120, "resolution": 128, "G_attn": "64", "D_attn": "64",
    "hier": True, "G_shared": True, "G_shared_feat": True, "shared_dim": 128, "shared_dim_feat": 512,
    "instance_cond": True, "class_cond": False, "n_classes": 1000, "G_param": "SN", "D_param": "SN",
    "norm_style": "bn", "BN_eps": 1e-5, "SN_eps": 1e-6, "num_G_SVs": 1, "num_G_SV_itrs": 1,
    "num_D_SVs": 1, "num_D_SV_itrs": 1, "D_wide": True, "G_init": "ortho", "D_init": "ortho",
    "feature_extractor": "selfsupervised", "experiment_name": PUBLISHED, "ema": True, "use_ema": True,
    "cross_replica": False, "mybn": False, "G_nl": "relu", "D_nl": "relu",
    "G_activation": nn.ReLU(inplace=False), "D_activation": nn.ReLU(inplace=False),
}


def _official_keys(name: str) -> list[list]:
    keys = json.loads(compat_file("official_checkpoint_keys.json").read_text())
    return keys[f"{PUBLISHED}/{name}"]


def _key_shapes(module: nn.Module) -> list[list]:
    return [[k, list(v.shape)] for k, v in module.state_dict().items()]


@pytest.fixture(scope="module")
def ch8_state() -> dict[str, torch.Tensor]:
    state = torch.load(compat_file("icgan_G_ch8_res128.pth"), map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and "shared.weight" in state, "expected a plain state dict"
    return state


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    data = np.load(compat_file("golden_dev.npz"))
    return {k: data[k] for k in ("g_z", "g_feature", "g_image")}


def _ch8_config() -> GeneratorConfig:
    return GeneratorConfig(ch=8, dim_z=120, resolution=128, attn="64", hier=True, shared_dim=128,
                           shared_dim_feat=512, class_cond=False, instance_cond=True)


def test_published_ch8_generator_reproduces_golden_images(ch8_state, golden):
    generator = load_state_strict(Generator(_ch8_config(), skip_init=True), ch8_state).eval()
    with torch.no_grad():
        image = generator(torch.from_numpy(golden["g_z"]), None, torch.from_numpy(golden["g_feature"]))
    assert image.shape == (4, 3, 128, 128)
    assert np.abs(image.numpy() - golden["g_image"]).max() <= 1e-3


def test_load_generator_accepts_bare_published_file_with_config(ch8_state, golden):
    generator = load_generator(compat_file("icgan_G_ch8_res128.pth"), config=_ch8_config())
    assert not generator.training
    with torch.no_grad():
        image = generator(torch.from_numpy(golden["g_z"][:1]), None,
                          torch.from_numpy(golden["g_feature"][:1]))
    assert np.abs(image.numpy() - golden["g_image"][:1]).max() <= 1e-3
    with pytest.raises(ValueError, match="bare state dict"):
        load_generator(compat_file("icgan_G_ch8_res128.pth"))


def test_full_size_modules_have_the_published_keys_in_order():
    with torch.device("meta"):
        generator = Generator(GeneratorConfig.from_icgan_config(ICGAN_CONFIG), skip_init=True)
        discriminator = Discriminator(DiscriminatorConfig.from_icgan_config(ICGAN_CONFIG), skip_init=True)
    assert _key_shapes(generator) == _official_keys("G_ema_best0.pth")
    assert _key_shapes(discriminator) == _official_keys("D_best0.pth")


def test_config_from_published_dict():
    cfg = GeneratorConfig.from_icgan_config(ICGAN_CONFIG)
    assert cfg == GeneratorConfig()
    assert DiscriminatorConfig.from_icgan_config(ICGAN_CONFIG) == DiscriminatorConfig()
    # shared_dim 0 means dim_z in the published code
    assert GeneratorConfig.from_icgan_config({**ICGAN_CONFIG, "shared_dim": 0}).shared_dim == 120
    with pytest.raises(ValueError, match="G_param"):
        GeneratorConfig.from_icgan_config({**ICGAN_CONFIG, "G_param": "SVD"})


def test_published_folder_loads_full_size_generator(tmp_path):
    folder = tmp_path / PUBLISHED
    folder.mkdir()
    torch.manual_seed(0)
    source = Generator(GeneratorConfig(), skip_init=True)
    torch.save(source.state_dict(), folder / "G_ema_best0.pth")
    torch.save({"itr": 1, "epoch": 0, "best_FID": 9.0, "config": ICGAN_CONFIG},
               folder / "state_dict_best0.pth")

    generator = load_generator(folder)
    assert not generator.training
    for key, value in source.state_dict().items():
        assert torch.equal(generator.state_dict()[key], value), key
    with torch.no_grad():
        image = generator(torch.randn(1, 120), None, torch.randn(1, 2048))
    assert image.shape == (1, 3, 128, 128)
    assert torch.isfinite(image).all() and image.abs().max() <= 1.0 and image.std() > 0.01


def test_published_folder_loads_discriminator(tmp_path):
    config = {**ICGAN_CONFIG, "D_ch": 8}
    source = Discriminator(DiscriminatorConfig.from_icgan_config(config), skip_init=True)
    torch.save(source.state_dict(), tmp_path / "D_best0.pth")
    torch.save({"config": config}, tmp_path / "state_dict_best0.pth")
    discriminator = discriminator_from_published(tmp_path)
    x, feature = torch.randn(2, 3, 128, 128), torch.randn(2, 2048)
    with torch.no_grad():
        assert torch.equal(discriminator.eval()(x, None, feature), source.eval()(x, None, feature))
        assert discriminator(x, None, feature).shape == (2, 1)


def test_shape_mismatch_names_key_and_both_shapes(ch8_state):
    bad = dict(ch8_state)
    bad["blocks.1.0.conv1.weight"] = torch.zeros(64, 128, 1, 1)
    with pytest.raises(CheckpointMismatchError) as err:
        load_state_strict(Generator(_ch8_config(), skip_init=True), bad)
    message = str(err.value)
    assert "'blocks.1.0.conv1.weight'" in message
    assert "[64, 128, 1, 1]" in message and "[64, 128, 3, 3]" in message


def test_missing_and_unexpected_keys_are_named(ch8_state):
    bad = {k: v for k, v in ch8_state.items() if k != "blocks.3.1.gamma"}
    bad["embed.weight"] = torch.zeros(1000, 128)
    with pytest.raises(CheckpointMismatchError) as err:
        load_state_strict(Generator(_ch8_config(), skip_init=True), bad)
    message = str(err.value)
    assert "missing key 'blocks.3.1.gamma'" in message
    assert "unexpected key 'embed.weight'" in message and "[1000, 128]" in message


def test_wrong_width_folder_is_refused(tmp_path, ch8_state):
    torch.save(ch8_state, tmp_path / "G_ema_best0.pth")
    torch.save({"config": ICGAN_CONFIG}, tmp_path / "state_dict_best0.pth")  # says G_ch 96
    with pytest.raises(CheckpointMismatchError, match=r"G_ema_best0.pth does not match Generator: .*"
                                                      r"'linear.weight': checkpoint shape \[2048, 20\]"):
        generator_from_published(tmp_path)


def test_spectral_norm_updates_only_in_training_mode():
    torch.manual_seed(0)
    layer = SNLinear(16, 8)
    x = torch.randn(4, 16)
    u_start, sv_start = layer.u0.clone(), layer.sv0.clone()
    layer.train()
    layer(x)
    assert not torch.equal(layer.u0, u_start) and not torch.equal(layer.sv0, sv_start)
    for _ in range(50):
        layer(x)
    assert torch.allclose(layer.sv0, torch.linalg.matrix_norm(layer.weight.detach(), ord=2), rtol=1e-3)
    layer.eval()
    u_eval, sv_eval = layer.u0.clone(), layer.sv0.clone()
    out = layer(x)
    assert torch.equal(layer.u0, u_eval) and torch.equal(layer.sv0, sv_eval)
    expected = x @ (layer.weight / layer.sv0).t() + layer.bias
    assert torch.allclose(out, expected, atol=1e-5)


def test_generator_eval_forward_leaves_buffers_alone(ch8_state, golden):
    generator = load_state_strict(Generator(_ch8_config(), skip_init=True), copy.deepcopy(ch8_state))
    z, feature = torch.from_numpy(golden["g_z"]), torch.from_numpy(golden["g_feature"])
    with torch.no_grad():
        generator.eval()(z, None, feature)
        assert all(torch.equal(v, ch8_state[k]) for k, v in generator.state_dict().items())
        generator.train()(z, None, feature)
    changed = {k for k, v in generator.state_dict().items() if not torch.equal(v, ch8_state[k])}
    assert "linear.u0" in changed and "blocks.0.0.bn1.stored_mean" in changed
    assert "linear.weight" not in changed


def test_own_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    cfg = GeneratorConfig(ch=4, dim_z=24, resolution=32, attn="16", shared_dim_feat=16, feat_dim=32)
    generator = Generator(cfg)
    with torch.no_grad():
        generator.train()(torch.randn(3, 24), None, torch.randn(3, 32))  # move BN stats and SN vectors
    path = tmp_path / "generator.pt"
    save_checkpoint(path, generator, cfg, step=7)
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"model", "config", "step"} and blob["step"] == 7
    assert blob["config"]["feat_dim"] == 32
    loaded = load_generator(path)
    z, feature = torch.randn(2, 24), torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(loaded(z, None, feature), generator.eval()(z, None, feature))


def test_hinge_losses():
    d_real = torch.tensor([[2.0], [0.5], [-1.0]])
    d_fake = torch.tensor([[-2.0], [0.0], [1.0]])
    assert d_hinge_loss(d_real, d_fake).item() == pytest.approx((0 + 0.5 + 2) / 3 + (0 + 1 + 2) / 3)
    assert g_hinge_loss(d_fake).item() == pytest.approx(1.0 / 3)


def test_ema_update_moves_parameters_and_buffers():
    cfg = GeneratorConfig(ch=4, dim_z=24, resolution=32, attn="", shared_dim_feat=8, feat_dim=16)
    torch.manual_seed(2)
    model, ema = Generator(cfg), Generator(cfg)
    with torch.no_grad():
        model.train()(torch.randn(2, 24), None, torch.randn(2, 16))  # move BN stats and SN vectors
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    ema_update(ema, model, decay=0.75)
    for key in ("linear.weight", "linear.u0", "blocks.0.0.bn1.stored_var", "shared_feat.sv0"):
        expected = 0.75 * before[key] + 0.25 * model.state_dict()[key]
        assert torch.allclose(ema.state_dict()[key], expected), key
    ema_update(ema, model, decay=0.0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ema.state_dict().items())


def test_class_and_instance_conditioned_variant_shapes():
    """cc-IC-GAN: the published D splits its projection in half between class and instance."""
    config = {**ICGAN_CONFIG, "G_ch": 8, "D_ch": 8, "class_cond": True}
    generator = Generator(GeneratorConfig.from_icgan_config(config), skip_init=True).eval()
    discriminator = Discriminator(DiscriminatorConfig.from_icgan_config(config), skip_init=True)
    shapes = dict(_key_shapes(generator)) | dict(_key_shapes(discriminator))
    assert shapes["blocks.0.0.bn1.gain.weight"] == [128, 20 + 128 + 512]
    assert shapes["linear_feat.weight"] == [64, 2048] and shapes["embed.weight"] == [1000, 64]
    label, feature = torch.tensor([3, 7]), torch.randn(2, 2048)
    with torch.no_grad():
        image = generator(torch.randn(2, 120), label, feature)
        assert discriminator(image, label, feature).shape == (2, 1)


def test_feature_first_gives_the_feature_a_route_into_the_layout(tmp_path):
    """feature_first: the condition joins the first z chunk before the first Linear, so two features give
    different bottom_width layouts for the same noise; off (the published layout), that Linear sees z only."""
    cfg = dict(ch=4, dim_z=24, resolution=32, attn="0", shared_dim_feat=8, feat_dim=16, n_classes=1)
    torch.manual_seed(3)
    plain, first = Generator(GeneratorConfig(**cfg)), Generator(GeneratorConfig(**cfg, feature_first=True))
    chunk = plain.z_chunk_size
    assert plain.linear.weight.shape[1] == chunk and first.linear.weight.shape[1] == chunk + 8
    assert set(plain.state_dict()) == set(first.state_dict())
    layouts = {}
    for name, net in (("plain", plain), ("first", first)):
        seen = []
        hook = net.linear.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
        z = torch.randn(1, 24).repeat(2, 1)
        with torch.no_grad():
            net.eval()(z, None, torch.randn(2, 16))
        hook.remove()
        layouts[name] = seen[0]
    assert torch.equal(layouts["plain"][0], layouts["plain"][1])
    assert not torch.allclose(layouts["first"][0], layouts["first"][1])
    with torch.no_grad():
        first.train()(torch.randn(3, 24), None, torch.randn(3, 16))
    save_checkpoint(tmp_path / "g.pt", first, first.cfg, step=1)
    loaded = load_generator(tmp_path / "g.pt")
    assert loaded.cfg.feature_first
    z, feature = torch.randn(2, 24), torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(loaded(z, None, feature), first.eval()(z, None, feature))


def test_feature_first_from_params_trains_the_layout_columns():
    """``generator.feature_first`` reaches the stage's G config; one IC-GAN step moves the first Linear's
    condition columns (the feature's route into the layout), which the published layout does not have."""
    p = GeneratorParams(resolution=32, g_ch=4, d_ch=4, dim_z=16, shared_dim_feat=8, batch=4, feature_first=True)
    g_cfg, d_cfg = train_generator.configs(p, 8)
    assert g_cfg.feature_first and not train_generator.configs(GeneratorParams(), 8)[0].feature_first
    torch.manual_seed(4)
    trainer = icgan.Trainer(g_cfg, d_cfg, icgan.GanRecipe(batch=4, augment=""))
    chunk = trainer.G.z_chunk_size
    before = trainer.G.linear.weight.detach().clone()
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (6, 3, 32, 32), generator=gen, dtype=torch.uint8)
    feats = torch.nn.functional.normalize(torch.randn(6, 8, generator=gen), dim=1)
    trainer.step(real, feats, icgan.neighbourhoods(feats, 2), gen)
    moved = (trainer.G.linear.weight.detach() - before).abs().sum(0)
    assert moved[:chunk].sum() > 0 and moved[chunk:].sum() > 0
