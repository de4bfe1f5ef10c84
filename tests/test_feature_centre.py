"""generator.centre_features: G and D condition on unit(unit(h) - m), m the corpus' mean unit feature;
generator.whiten_features: on unit((unit(h) - m) W), W the corpus' ZCA matrix."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from image_corpus import write_corpus

from models.biggan import Discriminator, DiscriminatorConfig, FeatureCentre, Generator, GeneratorConfig, zca
from models.biggan_io import load_generator
from models.image_encoder import load_encoder
from pipeline import icgan
from pipeline.params import GeneratorParams, ImageEncoderParams, ParamsError
from stages import train_generator, train_image_encoder

ENC = ImageEncoderParams(lr=1e-3, width=2, hidden_dim=16, proj_dim=8, n_prototypes=6, steps=2, batch=8, crop_size=32,
                         small_crops=1, small_size=16, knn_k=3)
GEN = GeneratorParams(resolution=32, g_ch=4, d_ch=4, dim_z=16, shared_dim_feat=8, k_neighbours=3, batch=4,
                      steps=2, sample_every=2, checkpoint_every=2, eval_frames=8, ema_start=1, fid_every=0,
                      fid_images=16, centre_features=True)
SMALL = dict(ch=4, dim_z=16, resolution=32, attn="0", shared_dim=8, shared_dim_feat=8, n_classes=1, feat_dim=6)


def test_feature_centre_by_hand() -> None:
    torch.manual_seed(0)
    h = torch.randn(5, 6)
    centre = FeatureCentre(6)
    assert torch.allclose(centre(h), F.normalize(h, dim=1))  # zero mean: just the unit feature
    m = F.normalize(torch.randn(6), dim=0) * 0.8
    centre.mean.copy_(m)
    expected = (F.normalize(h, dim=1) - m) / (F.normalize(h, dim=1) - m).norm(dim=1, keepdim=True)
    assert torch.allclose(centre(h), expected, atol=1e-6)
    assert centre(h.bfloat16()).dtype == torch.bfloat16


def test_option_off_keeps_the_published_keys_and_on_adds_one_buffer() -> None:
    plain, centred = Generator(GeneratorConfig(**SMALL)), Generator(GeneratorConfig(**SMALL, centre_features=True))
    assert plain.feature_centre is None and "feature_centre.mean" not in plain.state_dict()
    assert set(centred.state_dict()) - set(plain.state_dict()) == {"feature_centre.mean"}
    d = Discriminator(DiscriminatorConfig(ch=4, resolution=32, attn="0", n_classes=1, feat_dim=6, centre_features=True))
    assert "feature_centre.mean" in d.state_dict()
    # the same weights and a zero mean draw the same images as the plain G from unit features
    centred.load_state_dict({**plain.state_dict(), "feature_centre.mean": torch.zeros(6)})
    z, h = torch.randn(3, plain.dim_z), F.normalize(torch.randn(3, 6), dim=1)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(z, feature=h), centred.eval()(z, feature=h), atol=1e-6)
        centred.feature_centre.mean.fill_(0.3)
        assert not torch.allclose(plain(z, feature=h), centred(z, feature=h), atol=1e-3)


def test_trainer_refuses_a_centre_for_networks_built_without_one() -> None:
    g, d = GeneratorConfig(**SMALL), DiscriminatorConfig(ch=4, resolution=32, attn="0", n_classes=1, feat_dim=6)
    trainer = icgan.Trainer(g, d, train_generator.recipe(GEN))
    with pytest.raises(ValueError, match="built without centre_features"):
        trainer.set_feature_centre(torch.zeros(6))


def test_stage_stores_the_corpus_mean_and_generation_uses_it(tmp_path: Path) -> None:
    root = write_corpus(tmp_path)
    train_image_encoder.run(ENC, images=root, out=root / "enc.pt", report=root / "enc.json")
    out = root / "gen.pt"
    train_generator.run(GEN, encoder=root / "enc.pt", images=root, out=out, reports=root / "rep")
    G = load_generator(out)
    assert G.cfg.centre_features and G.feature_centre is not None
    enc, size = load_encoder(root / "enc.pt")
    _, feats, _, _ = train_generator._corpus(enc, size, root, GEN)
    assert torch.allclose(G.feature_centre.mean, feats.mean(0), atol=1e-6)
    assert 0.0 < float(G.feature_centre.mean.norm()) < 1.0
    # with the option off the same stage writes a G without the buffer
    plain = dataclasses.replace(GEN, centre_features=False)
    train_generator.run(plain, encoder=root / "enc.pt", images=root, out=root / "plain.pt", reports=root / "rep2")
    assert load_generator(root / "plain.pt").feature_centre is None


def test_zca_whitens_and_its_eps_bounds_the_gain() -> None:
    torch.manual_seed(0)
    scale = torch.tensor([3.0, 1.0, 0.3, 0.1, 0.03, 0.01])
    h = F.normalize(torch.randn(4000, 6) * scale + torch.tensor([4.0, 0, 0, 0, 0, 0]), dim=1)
    mean, w = zca(h, 1e-6)
    white = (h - mean) @ w
    assert torch.allclose(mean, h.mean(0), atol=1e-6) and torch.allclose(w, w.T, atol=1e-5)
    assert torch.allclose(torch.cov(white.T), torch.eye(6), atol=0.02)  # nearly eps-free: the identity
    _, soft = zca(h, 1.0)
    var = torch.linalg.eigvalsh(torch.cov(((h - mean) @ soft).T))
    assert float(var.max()) < 1.0 and float(var.max() / var.min()) > 10  # small directions raised, not to 1
    with pytest.raises(ValueError, match="eps must be positive"):
        zca(h, 0.0)
    with pytest.raises(ParamsError, match="generator.whiten_eps: expected > 0"):
        dataclasses.replace(GEN, whiten_eps=0.0)


def test_zca_rank_whitens_the_top_directions_and_drops_the_rest() -> None:
    torch.manual_seed(2)
    scale = torch.tensor([3.0, 1.0, 0.3, 0.1, 0.03, 0.01])
    h = F.normalize(torch.randn(4000, 6) * scale + torch.tensor([4.0, 0, 0, 0, 0, 0]), dim=1)
    mean, full = zca(h, 1e-6)
    _, w = zca(h, 1e-6, rank=2)
    assert torch.linalg.matrix_rank(w.double(), rtol=1e-4) == 2 and torch.allclose(w, w.T, atol=1e-5)
    lam, u = torch.linalg.eigh(torch.cov((h - mean).T).double())
    top, rest = u[:, -2:].float(), u[:, :-2].float()
    white = (h - mean) @ w
    assert torch.allclose(torch.cov((white @ top).T), torch.eye(2), atol=0.02)  # the top two: whitened
    assert float((white @ rest).abs().max()) < 1e-3  # the other four: gone
    assert torch.allclose(white @ top, (h - mean) @ full @ top, atol=1e-3)  # as the full ZCA there
    assert torch.allclose(zca(h, 1.0, rank=6)[1], zca(h, 1.0)[1], atol=1e-5)  # rank = D: every direction
    with pytest.raises(ValueError, match="rank must be >= 0"):
        zca(h, 1.0, rank=-1)
    with pytest.raises(ParamsError, match="generator.whiten_rank: expected >= 0"):
        dataclasses.replace(GEN, whiten_rank=-1)


def test_whitening_by_hand_and_its_buffer() -> None:
    torch.manual_seed(1)
    h, m, w = torch.randn(5, 6), F.normalize(torch.randn(6), dim=0) * 0.5, torch.randn(6, 6)
    centre = FeatureCentre(6, whiten=True)
    assert torch.allclose(centre(h), F.normalize(h, dim=1), atol=1e-6)  # identity until set
    centre.mean.copy_(m)
    centre.whiten.copy_(w)
    assert torch.allclose(centre(h), F.normalize((F.normalize(h, dim=1) - m) @ w, dim=1), atol=1e-6)
    plain = Generator(GeneratorConfig(**SMALL))
    white = Generator(GeneratorConfig(**SMALL, whiten_features=True))
    assert set(white.state_dict()) - set(plain.state_dict()) == {"feature_centre.mean", "feature_centre.whiten"}
    trainer = icgan.Trainer(GeneratorConfig(**SMALL, centre_features=True),
                            DiscriminatorConfig(ch=4, resolution=32, attn="0", n_classes=1, feat_dim=6,
                                                centre_features=True), train_generator.recipe(GEN))
    with pytest.raises(ValueError, match="goes with whiten_features"):
        trainer.set_feature_centre(torch.zeros(6), torch.eye(6))


def test_stage_stores_the_zca_matrix_and_a_saved_generator_uses_it(tmp_path: Path) -> None:
    root = write_corpus(tmp_path)
    train_image_encoder.run(ENC, images=root, out=root / "enc.pt", report=root / "enc.json")
    p = dataclasses.replace(GEN, centre_features=False, whiten_features=True, whiten_eps=0.5, whiten_rank=3)
    train_generator.run(p, encoder=root / "enc.pt", images=root, out=root / "gen.pt", reports=root / "rep")
    G = load_generator(root / "gen.pt")
    enc, size = load_encoder(root / "enc.pt")
    _, feats, _, _ = train_generator._corpus(enc, size, root, p)
    mean, w = zca(feats, 0.5, rank=3)
    assert torch.linalg.matrix_rank(w.double(), rtol=1e-4) == 3
    assert torch.allclose(G.feature_centre.mean, mean, atol=1e-5)
    assert torch.allclose(G.feature_centre.whiten, w, atol=1e-3 * float(w.abs().max()))
    z, h = torch.randn(2, G.dim_z), feats[:2]
    with torch.no_grad():  # the stored matrix is what draws: an identity there changes the images
        before = G.eval()(z, feature=h)
        G.feature_centre.whiten.copy_(torch.eye(w.shape[0]))
        assert not torch.allclose(before, G(z, feature=h), atol=1e-4)



def test_neighbour_mean_conditions_on_the_unit_mean_of_the_neighbourhood() -> None:
    g, d = GeneratorConfig(**SMALL), DiscriminatorConfig(ch=4, resolution=32, attn="0", n_classes=1, feat_dim=6)
    feats = F.normalize(torch.randn(20, 6), dim=1)
    nbrs = icgan.neighbourhoods(feats, 4)
    real = torch.zeros(20, 32, 32, 3, dtype=torch.uint8)
    batches = {}
    for p in (0.0, 1.0):
        trainer = icgan.Trainer(g, d, train_generator.recipe(dataclasses.replace(GEN, neighbour_mean=p)))
        batches[p] = trainer._batch(real, feats, nbrs, torch.Generator().manual_seed(3))
    inst = torch.randint(0, 20, (GEN.batch,), generator=torch.Generator().manual_seed(3))  # the same draw
    torch.testing.assert_close(batches[0.0][1], feats[inst])  # off: the instance's own feature
    torch.testing.assert_close(batches[1.0][1], F.normalize(feats[nbrs[inst]].mean(1), dim=1))
    assert not torch.allclose(batches[0.0][1], batches[1.0][1])
    with pytest.raises(ParamsError, match="neighbour_mean"):
        GeneratorParams(neighbour_mean=1.5)
