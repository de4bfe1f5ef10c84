"""IC-GAN training, the train_generator stage (train, resume, published folder) and `s2s generate`."""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor
from image_corpus import write_corpus
from typer.testing import CliRunner

from models.biggan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from models.biggan_io import load_generator
from pipeline import devices, icgan
from pipeline.fid import FeatureConsistency
from pipeline.cli import app
from pipeline.generate import InputError, generate, truncated_noise
from pipeline.params import GeneratorParams, ImageEncoderParams
from stages import train_generator, train_image_encoder

ENC = ImageEncoderParams(lr=1e-3, width=2, hidden_dim=16, proj_dim=8, n_prototypes=6, steps=2, batch=8, crop_size=32,
                         small_crops=1, small_size=16, knn_k=3)
GEN = GeneratorParams(resolution=32, g_ch=4, d_ch=4, dim_z=16, shared_dim_feat=8, k_neighbours=3, batch=4,
                      steps=3, sample_every=2, checkpoint_every=2, eval_frames=8, ema_start=1, fid_every=2,
                      fid_images=16)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_corpus(tmp_path_factory.mktemp("gan"))
    train_image_encoder.run(ENC, images=root, out=root / "enc.pt", report=root / "enc.json")
    return root


def test_neighbourhoods_start_with_self_and_follow_similarity() -> None:
    f = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.9]]), dim=1)
    nb = icgan.neighbourhoods(f, 2, chunk=3)
    assert nb.tolist() == [[0, 1], [1, 0], [2, 3], [3, 2]]


def test_discriminator_at_32px_halves_twice() -> None:
    d = Discriminator(DiscriminatorConfig(ch=4, resolution=32, attn="0", feat_dim=8, n_classes=1))
    assert [b[0].downsample for b in d.blocks] == [True, True, False, False]
    assert d(torch.randn(2, 3, 32, 32), feature=torch.randn(2, 8)).shape == (2, 1)


def test_trainer_step_updates_and_round_trips() -> None:
    g_cfg, d_cfg = train_generator.configs(GEN, 8)
    torch.manual_seed(0)
    trainer = icgan.Trainer(g_cfg, d_cfg, train_generator.recipe(GEN))
    real = torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8)
    feats = torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
    nbrs = icgan.neighbourhoods(feats, 3)
    before = trainer.G.linear.weight.clone()
    losses = trainer.step(real, feats, nbrs, torch.Generator().manual_seed(0))
    assert np.isfinite(list(losses.values())).all() and not torch.equal(before, trainer.G.linear.weight)
    assert torch.equal(trainer.G_ema.linear.weight, trainer.G.linear.weight)  # before ema_start: a copy
    state = copy.deepcopy(trainer.state())  # as torch.save / torch.load would: no shared tensors
    other = icgan.Trainer(g_cfg, d_cfg, train_generator.recipe(GEN))
    other.load(state)
    a = trainer.step(real, feats, nbrs, torch.Generator().manual_seed(5))
    b = other.step(real, feats, nbrs, torch.Generator().manual_seed(5))
    assert a == b and other.steps == 2


def test_feature_consistency_pulls_g_toward_its_feature_and_leaves_the_encoder(setup: Path) -> None:
    from models.image_encoder import load_encoder

    enc, size = load_encoder(setup / "enc.pt")
    frozen = {k: v.clone() for k, v in enc.state_dict().items()}
    g_cfg, d_cfg = train_generator.configs(GEN, enc.out_dim)
    with pytest.raises(ValueError, match="needs the image encoder"):
        icgan.Trainer(g_cfg, d_cfg, dataclasses.replace(train_generator.recipe(GEN), feature_weight=1.0))
    consistency = FeatureConsistency(enc, size)
    real = torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8)
    feats = consistency(icgan.to_unit(real)).detach()
    feats = torch.nn.functional.normalize(feats, dim=1)
    nbrs = icgan.neighbourhoods(feats, 3)

    def first_steps(weight: float) -> tuple[dict, Tensor]:
        torch.manual_seed(0)
        r = dataclasses.replace(train_generator.recipe(GEN), feature_weight=weight, augment="")
        trainer = icgan.Trainer(g_cfg, d_cfg, r, encoder=consistency)
        losses = trainer.step(real, feats, nbrs, torch.Generator().manual_seed(0))
        return losses, trainer.G.linear.weight.detach().clone()

    plain, g_plain = first_steps(0.0)
    pulled, g_pulled = first_steps(10.0)
    assert "feat_loss" not in plain and 0.0 < pulled["feat_loss"] <= 2.0
    assert plain["d_loss"] == pulled["d_loss"]  # the same draws; only G's loss gains the term
    assert pulled["g_loss"] > plain["g_loss"] and not torch.equal(g_plain, g_pulled)
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in frozen.items())
    assert all(p.grad is None for p in enc.parameters())


def test_stage_trains_writes_checkpoint_grid_and_metrics(setup: Path) -> None:
    out, rep = setup / "gen.pt", setup / "rep"
    summary = train_generator.run(GEN, encoder=setup / "enc.pt", images=setup, out=out, reports=rep)
    G = load_generator(out)
    assert G.cfg.resolution == 32 and G.cfg.feat_dim == 64 and not G.training
    assert torch.load(out, weights_only=True)["step"] == 3
    assert (rep / "samples.png").is_file() and (rep / "step_000002.png").is_file()
    saved, timed = json.loads((rep / "metrics.json").read_text()), json.loads((setup / "rep.timings.json").read_text())
    assert [c["step"] for c in summary["curve"]] == [2, 3]
    # the timings go beside the reports folder, so that metrics.json is the same on every run (pipeline.timings)
    assert set(summary) - set(saved) == {"seconds", "s_per_step", "images_per_s", "resumed_at"}
    assert {k: summary[k] for k in saved if k != "curve"} == {k: v for k, v in saved.items() if k != "curve"}
    assert saved["curve"] == [{k: v for k, v in c.items() if k != "seconds"} for c in summary["curve"]]
    assert timed["s_per_step"] == summary["s_per_step"] > 0 and timed["resumed_at"] == 0
    assert timed["curve"] == [{"step": c["step"], "seconds": c["seconds"]} for c in summary["curve"]]
    assert 0.0 <= summary["class_acc"] <= 1.0 and summary["eval_frames"] == 8
    assert not out.with_name("gen.pt.resume").exists()
    fid = (rep / "fid.csv").read_text().splitlines()
    assert fid[0] == "step,fid" and [r.split(",")[0] for r in fid[1:]] == ["2", "3"]
    assert all(float(r.split(",")[1]) > 0 for r in fid[1:]) and summary["fid"] == float(fid[-1].split(",")[1])
    assert summary["fid_images"] == 16


def test_stage_at_64px_uses_the_generators_own_noise_size(setup: Path) -> None:
    """At 64 px z splits into 5 slots; dim_z 16 leaves 15 (published rule), and the checks must draw 15."""
    out, rep = setup / "gen64.pt", setup / "rep64"
    p = GeneratorParams(**{**GEN.__dict__, "resolution": 64, "steps": 2, "fid_every": 1})
    summary = train_generator.run(p, encoder=setup / "enc.pt", images=setup, out=out, reports=rep)
    G = load_generator(out)
    assert G.cfg.resolution == 64 and G.dim_z == 15 and summary["steps"] == 2
    assert [r.split(",")[0] for r in (rep / "fid.csv").read_text().splitlines()[1:]] == ["1", "2"]
    image = G(torch.zeros(1, 15), None, torch.nn.functional.normalize(torch.ones(1, 64), dim=1))
    assert image.shape == (1, 3, 64, 64)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 30 images, 64 dims: singular covariances
def test_fid_curve_is_the_frechet_distance_of_encoder_features(setup: Path) -> None:
    """FidCurve (torchmetrics on the encoder) against the formula computed here with scipy, on the same images."""
    from scipy import linalg

    from models.image_encoder import load_encoder
    from pipeline.fid import EncoderFeatures, FidCurve
    from pipeline.image_store import read_images

    enc, size = load_encoder(setup / "enc.pt")
    frames = read_images(setup, "train")[0]
    curve = FidCurve(EncoderFeatures(enc, size), frames, 32, 30, 16, seed=3)
    g_cfg, _ = train_generator.configs(GEN, enc.out_dim)
    torch.manual_seed(0)
    G = Generator(g_cfg)
    got = curve.score(G)
    feat = EncoderFeatures(enc, size)
    real = feat(icgan.to_unit(icgan.to_gan_images(np.asarray(frames[np.linspace(0, 39, 30).round().astype(int)]), 32)))
    fake = feat(icgan.sample(G, curve.feats, curve.z))
    a, b = real.double().numpy(), fake.double().numpy()
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    want = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)
    assert len(curve) == 30 and got is not None and got > 1e-3
    assert abs(got - want) <= 1e-3 * want + 1e-4, (got, want)
    assert curve.score(G) == got  # the real statistics stay, the fake ones are redrawn identically


def test_stage_resumes_and_stops_at_steps(setup: Path) -> None:
    out, rep = setup / "gen2.pt", setup / "rep2"
    partial = GeneratorParams(**{**GEN.__dict__, "steps": 2, "checkpoint_every": 1})
    train_generator.run(partial, encoder=setup / "enc.pt", images=setup, out=out, reports=rep)
    resume = out.with_name("gen2.pt.resume")
    assert not resume.exists()
    g_cfg, d_cfg = train_generator.configs(GEN, 64)
    trainer = icgan.Trainer(g_cfg, d_cfg, train_generator.recipe(GEN))
    trainer.steps = 2
    torch.save({**trainer.state(), "curve": "[]", "seconds": 1.0}, resume)
    summary = train_generator.run(GEN, encoder=setup / "enc.pt", images=setup, out=out, reports=rep)
    assert summary["resumed_at"] == 2 and summary["steps"] == 3 and not resume.exists()
    assert summary["stopped_by"] == "steps" and summary["steps_asked"] == 3


def test_stage_with_a_truncated_resume_starts_over(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A resume file cut short (a run killed while saving, before saves were atomic) is ignored with a warning."""
    out, rep = setup / "gen4.pt", setup / "rep4"
    resume = out.with_name("gen4.pt.resume")
    resume.write_bytes((setup / "enc.pt").read_bytes()[:300])
    with caplog.at_level("WARNING", logger="models.checkpoint"):
        summary = train_generator.run(GEN, encoder=setup / "enc.pt", images=setup, out=out, reports=rep)
    assert summary["resumed_at"] == 0 and summary["steps"] == 3 and not resume.exists()
    assert f"ignoring the resume state: cannot read {resume} as a checkpoint" in caplog.text


def test_stage_stopped_by_minutes_says_so(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A resume whose clock is past ``minutes`` trains no further step; the warning and summary say why."""
    out, rep = setup / "gen3.pt", setup / "rep3"
    g_cfg, d_cfg = train_generator.configs(GEN, 64)
    trainer = icgan.Trainer(g_cfg, d_cfg, train_generator.recipe(GEN))
    trainer.steps = 2
    torch.save({**trainer.state(), "curve": "[]", "seconds": 3600.0}, out.with_name("gen3.pt.resume"))
    p = GeneratorParams(**{**GEN.__dict__, "minutes": 1.0})
    with caplog.at_level("WARNING", logger="stages.train_generator"):
        summary = train_generator.run(p, encoder=setup / "enc.pt", images=setup, out=out, reports=rep)
    assert summary["steps"] == 2 and summary["steps_asked"] == 3 and summary["stopped_by"] == "minutes"
    assert torch.load(out, weights_only=True)["step"] == 2
    assert "stopped by generator.minutes (1) at step 2 of 3" in caplog.text


def _published_folder(root: Path) -> Path:
    from test_generator import ICGAN_CONFIG, PUBLISHED

    folder = root / PUBLISHED
    folder.mkdir(exist_ok=True)
    torch.manual_seed(0)
    torch.save(Generator(GeneratorConfig(), skip_init=True).state_dict(), folder / "G_ema_best0.pth")
    torch.save({"itr": 1, "config": ICGAN_CONFIG}, folder / "state_dict_best0.pth")
    return folder


def test_published_folder_skips_training_and_generates_128px(setup: Path, tmp_path: Path) -> None:
    folder = _published_folder(tmp_path)
    p = GeneratorParams(checkpoint=str(folder))
    summary = train_generator.run(p, encoder=setup / "enc.pt", images=setup, out=tmp_path / "g.pt",
                                  reports=tmp_path / "rep")
    assert summary["trained"] is False and summary["resolution"] == 128
    feats = np.random.default_rng(0).standard_normal((2, 2048)).astype(np.float32)
    result = CliRunner().invoke(app, ["generate", "--generator", str(folder), "--features", _npy(tmp_path, feats),
                                      "--out", str(tmp_path / "x.npy"), "--truncation", "1.0"])
    assert result.exit_code == 0, result.output
    images = np.load(tmp_path / "x.npy")
    assert images.shape == (2, 3, 128, 128) and images.dtype == np.float32 and np.abs(images).max() <= 1.0
    mine = generate(load_generator(tmp_path / "g.pt"), feats, truncation=1.0).numpy()
    assert np.array_equal(images, mine)  # our copy of the published weights draws the same images


def _npy(root: Path, array: np.ndarray, name: str = "f.npy") -> str:
    np.save(root / name, array)
    return str(root / name)


def test_generate_cli_is_deterministic_and_rejects_bad_input(setup: Path, tmp_path: Path) -> None:
    gen = setup / "gen.pt"
    if not gen.exists():
        train_generator.run(GEN, encoder=setup / "enc.pt", images=setup, out=gen, reports=setup / "rep")
    feats = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    noise = truncated_noise(3, load_generator(gen).dim_z, None, 4).numpy()
    args = ["generate", "--generator", str(gen), "--features", _npy(tmp_path, feats),
            "--noise", _npy(tmp_path, noise, "z.npy")]
    runner = CliRunner()
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "a.npy")]).exit_code == 0
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "b.npy")]).exit_code == 0
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "png")]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["000000.png", "000001.png", "000002.png",
                                                                   "grid.png"]
    bad = runner.invoke(app, ["generate", "--generator", str(gen), "--features", _npy(tmp_path, feats[:, :5], "w.npy"),
                              "--out", str(tmp_path / "c.npy")])
    assert bad.exit_code == 2 and "features must be [N, 64]" in bad.output
    bad = runner.invoke(app, [*args[:-1], _npy(tmp_path, noise[:2], "z2.npy"), "--out", str(tmp_path / "d.npy")])
    assert bad.exit_code == 2 and "noise must be [3, 16]" in bad.output
    (tmp_path / "cut.pt").write_bytes(gen.read_bytes()[:500])
    bad = runner.invoke(app, [*args[:2], str(tmp_path / "cut.pt"), *args[3:], "--out", str(tmp_path / "e.npy")])
    assert bad.exit_code == 2 and "cannot read the generator" in bad.output
    with pytest.raises(InputError, match="truncation"):
        truncated_noise(2, 4, -1.0, 0)
    assert truncated_noise(50, 8, 0.5, 0).abs().max() <= 0.5


def test_stage_without_labelled_frames_trains_and_draws_a_grid(tmp_path: Path) -> None:
    root = write_corpus(tmp_path, n_eval=0)
    train_image_encoder.run(ENC, images=root, out=root / "enc.pt", report=root / "enc.json")
    summary = train_generator.run(GEN, encoder=root / "enc.pt", images=root, out=root / "g.pt", reports=root / "rep")
    assert summary["class_acc"] is None and summary["steps"] == 3 and (root / "rep" / "samples.png").is_file()


@pytest.mark.parametrize("native", [False, True])
def test_amp_on_cpu_is_bf16_only_where_the_cpu_computes_it(setup: Path, monkeypatch: pytest.MonkeyPatch,
                                                           native: bool) -> None:
    """``amp`` on a CPU: bf16 autocast where the CPU has native bf16 (the step differs from float32, the
    convolutions run in bf16), else exactly the float32 step. Both branches are forced through
    ``devices.cpu_bf16`` (autocast itself runs on any CPU); the stage reports what it used."""
    monkeypatch.setattr(devices, "cpu_bf16", lambda: native)
    g_cfg, d_cfg = train_generator.configs(GEN, 8)
    real = torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8)
    feats = torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
    nbrs, states, dtypes = icgan.neighbourhoods(feats, 3), [], []
    for amp in (False, True):
        torch.manual_seed(0)
        trainer = icgan.Trainer(g_cfg, d_cfg, dataclasses.replace(train_generator.recipe(GEN), amp=amp))
        conv = next(m for m in trainer.D.modules() if isinstance(m, torch.nn.Conv2d))
        hook = conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
        losses = trainer.step(real, feats, nbrs, torch.Generator().manual_seed(0))
        hook.remove()
        assert np.isfinite(list(losses.values())).all()
        states.append(trainer.state())
    same = all(torch.equal(states[0][n][k], states[1][n][k]) for n in ("G", "D", "model") for k in states[0][n])
    assert same is not native
    assert set(dtypes[:3]) == {torch.float32} and set(dtypes[3:]) == {torch.bfloat16 if native else torch.float32}
    p = dataclasses.replace(GEN, steps=2, device="cpu", amp=True)
    out = setup / f"g_amp{int(native)}.pt"
    summary = train_generator.run(p, encoder=setup / "enc.pt", images=setup, out=out, reports=setup / "r3")
    assert summary["device"] == "cpu" and summary["amp"] is native and summary["images_per_s"] > 0


def test_stage_with_an_unreadable_encoder_is_one_clear_error(setup: Path, tmp_path: Path) -> None:
    """An empty or truncated image encoder file: one sentence naming it, exit code 2, nothing written."""
    (tmp_path / "params.yaml").write_text("generator: {steps: 2}\n")
    for name, data in (("empty.pt", b""), ("cut.pt", (setup / "enc.pt").read_bytes()[:400])):
        (tmp_path / name).write_bytes(data)
        res = CliRunner().invoke(app, ["stage", "train_generator", "--params", str(tmp_path / "params.yaml"),
                                       "--encoder", str(tmp_path / name), "--images", str(setup),
                                       "--out", str(tmp_path / "g.pt"), "--reports", str(tmp_path / "rep")])
        assert res.exit_code == 2, res.output
        assert f"cannot read {tmp_path / name} as a checkpoint (empty, truncated or not a torch file" in res.output
        assert "Traceback" not in res.output and not (tmp_path / "g.pt").exists()
