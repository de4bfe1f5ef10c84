"""train_audio_encoder on tiny real shards: outputs, resume, settings, bad pairs, DDP = one process."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from models.audio_encoder import AudioEncoder
from stages import train_audio_encoder as stage
from align_setup import TINY_SPEC, make_data, tiny_params

# Largest allowed |loss(2 ranks) - loss(1 process)| per step. The sums run in another order, and Adam's
# first steps are close to sign descent (update = lr * g / |g|), so a parameter whose gradient is at
# rounding level may step either way: the curves part at about lr per step. The test runs at lr 1e-4,
# where the parting is below 1e-5 over 4 steps; without global BatchNorm the loss is 1e-2 off at step 1.
DDP_TOL = 1e-4


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("align"), train=24, val=8, drop_flac=(5,))


def train(data: Path, out: Path, loss: str = "infonce", **kw) -> dict:
    return stage.run(tiny_params(**kw), loss=loss, seed=0, shards=data / "shards", embeddings=data / "embeddings",
                     out=out / "audio_encoder.pt", last=out / "last.pt", reports=out / "reports")


def steps(out: Path) -> np.ndarray:
    return np.loadtxt(out / "reports" / "steps.csv", delimiter=",", skiprows=1, ndmin=2)[:, 1]


def test_outputs_metrics_and_checkpoint(data: Path, tmp_path: Path) -> None:
    summary = train(data, tmp_path, epochs=2)
    assert summary["epochs"] == 2 and summary["steps"] == 2 * (23 // 8)  # one pair has no .flac
    csv = (tmp_path / "reports" / "epochs.csv").read_text().splitlines()
    assert csv[0].split(",")[:5] == ["epoch", "step", "train_loss", "val_r1", "val_r5"] and len(csv) == 3
    assert "skipped" in csv[0] and csv[1].endswith(",1")  # the pair without audio, counted once
    best = summary["best"]
    assert 0.0 <= best["val_r1"] <= 1.0 and best["val_pairs"] == 8 and "val_class_acc" in best
    ckpt = torch.load(tmp_path / "audio_encoder.pt", weights_only=True)
    assert ckpt["spectrogram"]["kind"] == "logmel" and ckpt["loss"] == "infonce"
    model = AudioEncoder.from_checkpoint(tmp_path / "audio_encoder.pt")
    assert model.config.embed_dim == 64 and model.config.width == 4
    assert len(steps(tmp_path)) == summary["steps"] and np.isfinite(steps(tmp_path)).all()


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_equals_an_uninterrupted_run(data: Path, tmp_path: Path, workers: int) -> None:
    """Also with SpecAugment masks and a worker: a DataLoader draws its workers' seed from torch's RNG when
    its iterator is made (persistent workers: once per process), which must not move the masks' draws."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    kw = dict(workers=workers, spectrogram=dataclasses.replace(TINY_SPEC, time_mask=4, freq_mask=3))
    train(data, straight, epochs=2, **kw)
    train(data, resumed, epochs=1, **kw)
    summary = train(data, resumed, epochs=2, **kw)  # same settings, more epochs: continues from last.pt
    assert summary["epochs"] == 2
    np.testing.assert_allclose(steps(resumed), steps(straight), rtol=0, atol=1e-6)
    a = torch.load(straight / "last.pt", weights_only=True)["model"]
    b = torch.load(resumed / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    for f in ("last.pt", "audio_encoder.pt"):  # byte for byte: a resumed `dvc repro` leaves dvc.lock as a straight one
        assert (resumed / f).read_bytes() == (straight / f).read_bytes(), f
    if workers == 0:  # the reports too: the speeds go to the sidecar (pipeline.timings)
        for f in ("metrics.json", "epochs.csv"):
            assert (resumed / "reports" / f).read_text() == (straight / "reports" / f).read_text(), f
        for d in (straight, resumed):
            timed = json.loads((d / "reports" / "metrics.timings.json").read_text())["epochs"]
            assert [e["epoch"] for e in timed] == [1, 2] and all(e["train_samples_per_s"] > 0 for e in timed)


def test_resume_file_from_before_the_timings_sidecar(data: Path, tmp_path: Path) -> None:
    """A last.pt whose epoch rows still hold train_samples_per_s (written before pipeline.timings) resumes, and
    the reports come out as a fresh run's."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(data, straight, epochs=2)
    train(data, resumed, epochs=1)
    state = torch.load(resumed / "last.pt", weights_only=False)
    state["history"] = [{**h, "train_samples_per_s": 123.4} for h in state["history"]]
    state["best"] = {**state["best"], "train_samples_per_s": 123.4}
    torch.save(state, resumed / "last.pt")
    (resumed / "reports" / "metrics.timings.json").unlink()
    train(data, resumed, epochs=2)
    for f in ("metrics.json", "epochs.csv", "steps.csv"):
        assert (resumed / "reports" / f).read_text() == (straight / "reports" / f).read_text(), f
    assert [e["epoch"] for e in json.loads((resumed / "reports" / "metrics.timings.json").read_text())["epochs"]] == [2]


@pytest.mark.parametrize("gain_on", ["spectrogram", "waveform"])
def test_gain_augmentation_trains_and_resumes_identically(data: Path, tmp_path: Path, caplog, gain_on: str) -> None:
    """The level direction is fit in a pass before the first epoch; a resumed run makes the same pass, so it
    continues on the same draws and targets (also when the gains are played on the waveform)."""
    kw = dict(workers=1, spectrogram=dataclasses.replace(TINY_SPEC, norm="none", log_eps=1e-12), gain_p=0.5,
              gain_on=gain_on)
    straight, resumed, plain = tmp_path / "straight", tmp_path / "resumed", tmp_path / "plain"
    with caplog.at_level("INFO", logger="stages.train_audio_encoder"):
        train(data, straight, epochs=2, **kw)
    assert "level direction from 16 pairs" in caplog.text  # 23 readable train pairs, full batches of 8
    assert f"gain augmentation on the {gain_on}" in caplog.text
    train(data, resumed, epochs=1, **kw)
    train(data, resumed, epochs=2, **kw)
    np.testing.assert_allclose(steps(resumed), steps(straight), rtol=0, atol=1e-6)
    train(data, plain, epochs=2, **{**kw, "gain_p": 0.0})
    assert not np.allclose(steps(plain), steps(straight), rtol=0, atol=1e-4)  # the augmentation acts


def test_ema_follows_the_weights_with_a_warm_up() -> None:
    """After t updates the average moves by 1 - min(decay, (1 + t) / (10 + t)) toward the weights; integer
    buffers (BatchNorm's batch count) are copied, not averaged."""
    from pipeline.align_train import Ema
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = Ema(net, 0.9)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked += 5
    ema.update(net)  # t = 1: weight 1 - 2/11
    np.testing.assert_allclose(ema.module[0].weight, start + 9 / 11, rtol=0, atol=1e-6)
    assert int(ema.module[1].num_batches_tracked) == 5
    for _ in range(200):
        ema.update(net)  # the decay caps at 0.9: the average converges to the weights
    np.testing.assert_allclose(ema.module[0].weight, start + 1.0, rtol=0, atol=1e-6)
    assert not ema.module[0].weight.requires_grad


def test_ema_weights_are_validated_kept_and_resumed(data: Path, tmp_path: Path) -> None:
    """With ema_decay the checkpoint kept is the average (not the last weights), and a resumed run continues
    the same average."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(data, straight, epochs=3, ema_decay=0.9)
    train(data, resumed, epochs=2, ema_decay=0.9)
    train(data, resumed, epochs=3, ema_decay=0.9)
    np.testing.assert_allclose(steps(resumed), steps(straight), rtol=0, atol=1e-6)
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (straight, resumed))
    assert a["ema"]["updates"] == b["ema"]["updates"] == 3 * (23 // 8)
    assert all(torch.allclose(a["ema"]["model"][k].float(), b["ema"]["model"][k].float(), atol=1e-6) for k in a["model"])
    one = tmp_path / "one"
    train(data, one, epochs=1, ema_decay=0.9)  # one epoch: it is the best, and the kept weights are its average
    kept, last = torch.load(one / "audio_encoder.pt", weights_only=True), torch.load(one / "last.pt", weights_only=True)
    assert all(torch.equal(kept["model"][k], last["ema"]["model"][k]) for k in kept["model"])
    assert any(not torch.equal(kept["model"][k], last["model"][k]) for k in kept["model"])  # not the raw weights
    plain = tmp_path / "plain"
    train(data, plain, epochs=3)
    assert "ema" not in torch.load(plain / "last.pt", weights_only=True)
    np.testing.assert_allclose(steps(plain), steps(straight), rtol=0, atol=1e-6)  # the average does not train


def test_other_settings_start_over(data: Path, tmp_path: Path) -> None:
    train(data, tmp_path, epochs=1)
    summary = train(data, tmp_path, loss="l2", epochs=1)  # loss changed: last.pt is not resumed
    assert summary["epochs"] == 1 and summary["steps"] == 23 // 8
    assert torch.load(tmp_path / "audio_encoder.pt", weights_only=True)["loss"] == "l2"


def test_other_features_for_the_same_keys_start_over(data: Path, tmp_path: Path) -> None:
    """selection=mid keeps every pair key and changes only the features (.npy): no resume from last.pt."""
    import shutil
    emb = tmp_path / "embeddings"
    shutil.copytree(data / "embeddings", emb)
    a = stage.run_key(tiny_params(), "infonce", 0, emb)
    train_npy = emb / "train.npy"
    feats = np.load(train_npy)
    np.save(train_npy, feats[::-1].copy())  # the same keys and shapes, other features
    assert stage.run_key(tiny_params(), "infonce", 0, emb) != a


def test_published_checkpoint_is_taken_as_is(data: Path, tmp_path: Path) -> None:
    model = AudioEncoder()
    torch.save({"audnet." + k: v for k, v in model.state_dict().items()}, tmp_path / "sound2scene.pth")
    summary = stage.run(tiny_params(checkpoint=str(tmp_path / "sound2scene.pth")), loss="infonce", seed=0,
                        shards=data / "shards", embeddings=data / "embeddings", out=tmp_path / "a.pt",
                        last=tmp_path / "last.pt", reports=tmp_path / "reports")
    assert summary["steps"] == 0 and not (tmp_path / "last.pt").exists()
    ckpt = torch.load(tmp_path / "a.pt", weights_only=True)
    assert ckpt["spectrogram"]["kind"] == "paper" and ckpt["config"] == {"width": 64, "embed_dim": 2048}
    loaded = AudioEncoder.from_checkpoint(tmp_path / "a.pt")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_the_audio_cache_changes_nothing_but_time(data: Path, tmp_path: Path, caplog) -> None:
    """3 epochs, 2 loader workers, SpecAugment masks on, with and without the cache: the same loss curve and
    weights, bit for bit; from epoch 2 the cache serves every val pair and the train pairs it has seen."""
    import dataclasses
    import logging
    import re

    from align_setup import TINY_SPEC

    caplog.set_level(logging.INFO)
    spec = dataclasses.replace(TINY_SPEC, time_mask=4, freq_mask=3)
    for name, mb in [("off", 0), ("on", 512)]:
        train(data, tmp_path / name, epochs=3, workers=2, cache_mb=mb, spectrogram=spec)
    assert np.array_equal(steps(tmp_path / "off"), steps(tmp_path / "on")) and len(steps(tmp_path / "on")) == 6
    a, b = (torch.load(tmp_path / n / "last.pt", weights_only=True)["model"] for n in ("off", "on"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    served = [tuple(map(int, re.findall(r"(\d+) of (\d+)", r.getMessage())[i])) for r in caplog.records
              if "from the audio cache" in r.getMessage() for i in (0, 1)]
    # (cached, rows) of train and val per epoch, logged only with a cache. 16 of the 23 train pairs make the
    # two full batches of an epoch; the last, incomplete batch is decoded too, so epoch 1 caches all 23
    assert served == [(0, 16), (0, 8)] + [(16, 16), (8, 8)] * 2


def run_cli(args: list[str], prefix: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([*prefix, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_two_gloo_ranks_give_the_one_process_loss_curve(data: Path, tmp_path: Path) -> None:
    """Same global batch (8) and data order: 1 process vs torchrun with 2 ranks of 4 (gloo)."""
    params = tmp_path / "params.yaml"
    params.write_text("seed: 3\nloss: infonce\naudio_encoder: {width: 4, spectrogram: {kind: logmel, n_mels: 16, "
                      "n_frames: 24, n_fft: 256, hop_length: 160}, epochs: 2, batch: 8, lr: 0.0001, "
                      "shuffle_buffer: 8, workers: 1, device: cpu, threads: 1}\n")
    args = ["stage", "train_audio_encoder", "--params", str(params), "--shards", str(data / "shards"),
            "--embeddings", str(data / "embeddings")]
    for name, prefix in [("one", [sys.executable]),
                         ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  "--nproc_per_node=2"])]:
        out = run_cli([*args, "--out", str(tmp_path / name / "a.pt"), "--last", str(tmp_path / name / "last.pt"),
                       "--reports", str(tmp_path / name / "reports")], prefix)
        assert out.stdout.count("train_audio_encoder: 2 epochs, 4 steps") == 1  # printed by rank 0 only
    one, two = steps(tmp_path / "one"), steps(tmp_path / "two")
    assert len(one) == len(two) == 4
    assert np.abs(one - two).max() <= DDP_TOL, (one, two)
    a, b = (torch.load(tmp_path / n / "last.pt", weights_only=True) for n in ("one", "two"))
    assert max(float((a["model"][k].float() - b["model"][k].float()).abs().max()) for k in a["model"]) <= 4e-4
    # Adam is blind to a gradient's scale, so compare the gradients themselves: Adam's first moment
    # (an average of the gradients) must agree to 1e-2 of its size in every parameter.
    for i, sa in a["optimizer"]["state"].items():
        ga, gb = sa["exp_avg"], b["optimizer"]["state"][i]["exp_avg"]
        assert float((ga - gb).abs().max()) <= 1e-2 * float(ga.abs().max()) + 1e-9, i


def test_a_batch_without_two_valid_pairs_is_a_zero_step() -> None:
    from models.losses import make_loss
    from pipeline import align_train, audio_input
    from pipeline.distributed import Dist

    p = tiny_params()
    d = Dist(0, 1, torch.device("cpu"))
    raw, model = align_train.build_model(p, 8, d)
    step = align_train.Step(model, align_train.make_optimizer(p, model), make_loss("infonce"),
                            audio_input.spectrogram_fn(p.spectrogram), None, d, False)
    n = audio_input.n_samples(p.spectrogram)
    batch = {"wave": torch.zeros(4, n), "feature": torch.randn(4, 8), "keys": list("abcd"),
             "valid": torch.tensor([False, True, False, False])}
    assert np.isnan(float(step(batch)))
    batch["valid"][:] = True
    assert np.isfinite(float(step(batch)))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_train_epoch_gives_the_losses_of_a_plain_loop(device: str) -> None:
    """train_epoch (on CUDA: side-stream copies, the losses read once at the epoch's end) steps exactly as
    calling the step on batches moved by hand, a batch with an invalid pair included."""
    from models.losses import make_loss
    from pipeline import align_train, audio_input
    from pipeline.distributed import Dist

    p, d = tiny_params(), Dist(0, 1, torch.device(device))
    n = audio_input.n_samples(p.spectrogram)
    g = torch.Generator().manual_seed(0)
    batches = [{"wave": torch.randn(6, n, generator=g) * 0.1, "feature": torch.randn(6, 8, generator=g),
                "valid": torch.tensor([True] * 5 + [i != 1]), "keys": list("abcdef"), "skipped": 0} for i in range(3)]

    def make() -> align_train.Step:
        torch.manual_seed(0)
        _, model = align_train.build_model(p, 8, d)
        return align_train.Step(model, align_train.make_optimizer(p, model), make_loss("infonce"),
                                audio_input.spectrogram_fn(p.spectrogram), None, d, False)

    res = align_train.train_epoch(make(), batches, shard_mode=False, max_steps=None)
    plain = make()
    ref = [float(plain({k: v.to(device) if k in ("wave", "feature") else v for k, v in b.items()}))
           for b in batches]
    assert res.samples == 18 and len(res.losses) == 3 and all(isinstance(v, float) for v in res.losses)
    if device == "cpu":  # the same arithmetic: the same bits
        assert res.losses == ref
    else:  # cuDNN may pick other kernels for the two models
        assert np.allclose(res.losses, ref, atol=1e-3), (res.losses, ref)
    assert align_train.train_epoch(make(), batches, shard_mode=False, max_steps=2).losses == res.losses[:2]


def test_paper_input_trains_through_the_stage(data: Path, tmp_path: Path) -> None:
    """kind: paper (1 x 257 x 1004 from 10 s, tiled from the 1 s windows) on a narrow encoder."""
    from pipeline.params import SpectrogramParams

    summary = train(data, tmp_path, epochs=1, max_steps=1, spectrogram=SpectrogramParams(kind="paper"))
    assert summary["steps"] == 1 and np.isfinite(steps(tmp_path)).all()
    assert torch.load(tmp_path / "audio_encoder.pt", weights_only=True)["spectrogram"]["kind"] == "paper"


def write_generator(path: Path, feat_dim: int, *, seed: int = 0) -> Path:
    """A tiny own-format generator whose input map has a random mean and whitening matrix."""
    from models.biggan import Generator, GeneratorConfig
    from models.checkpoint import save_checkpoint
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(ch=4, dim_z=16, resolution=32, attn="0", shared_dim_feat=8, feat_dim=feat_dim,
                                  centre_features=True, whiten_features=True))
    with torch.no_grad():
        G.feature_centre.mean.copy_(torch.nn.functional.normalize(torch.randn(feat_dim), dim=0) * 0.8)
        w = torch.randn(feat_dim, 8)
        G.feature_centre.whiten.copy_(w @ w.t())
    save_checkpoint(path, G, G.cfg, step=1)
    return path


def test_generator_space_trains_in_the_generators_input_map(data: Path, tmp_path: Path, caplog) -> None:
    gen = write_generator(tmp_path / "g.pt", 64)
    run = lambda out, space, g: stage.run(tiny_params(epochs=1, align_space=space), loss="infonce", seed=0,
                                          shards=data / "shards", embeddings=data / "embeddings", out=out / "a.pt",
                                          last=out / "last.pt", reports=out / "reports", generator=g)
    with caplog.at_level("INFO"):
        run(tmp_path / "g", "generator", gen)
    assert "centred and whitened" in caplog.text
    run(tmp_path / "u", "unit", tmp_path / "absent.pt")  # the generator is not read
    # the same seed and batches: only the space differs, and with it every step's loss
    assert not np.allclose(steps(tmp_path / "g"), steps(tmp_path / "u"), atol=1e-4)
    assert (tmp_path / "g" / "a.pt").is_file() and (tmp_path / "u" / "a.pt").is_file()
    space = stage.generator_space(tiny_params(align_space="generator"), gen, 64)
    assert space is not None and space.whiten is not None and float(space.mean.norm()) == pytest.approx(0.8)


def test_generator_space_is_part_of_the_run_key(data: Path, tmp_path: Path) -> None:
    p = tiny_params(align_space="generator")
    a = stage.generator_space(p, write_generator(tmp_path / "a.pt", 64, seed=0), 64)
    b = stage.generator_space(p, write_generator(tmp_path / "b.pt", 64, seed=1), 64)
    keys = [stage.run_key(p, "infonce", 0, data / "embeddings", s) for s in (a, b, None)]
    assert keys[0] != keys[1] and keys[0] != keys[2]
    assert stage.run_key(p, "infonce", 0, data / "embeddings", a) == keys[0]


def test_a_generator_without_a_centre_is_the_unit_map(data: Path, tmp_path: Path, caplog) -> None:
    from models.biggan import Generator, GeneratorConfig
    from models.checkpoint import save_checkpoint
    G = Generator(GeneratorConfig(ch=4, dim_z=16, resolution=32, attn="0", shared_dim_feat=8, feat_dim=64))
    save_checkpoint(tmp_path / "g.pt", G, G.cfg, step=1)
    with caplog.at_level("INFO"):
        space = stage.generator_space(tiny_params(align_space="generator"), tmp_path / "g.pt", 64)
    assert "same as align_space: unit" in caplog.text
    x = torch.randn(3, 64) * 5
    torch.testing.assert_close(space(x), torch.nn.functional.normalize(x, dim=1))


@pytest.mark.parametrize("case", ["missing", "wrong dim", "truncated"])
def test_generator_space_bad_generators(data: Path, tmp_path: Path, case: str) -> None:
    gen = tmp_path / "g.pt"
    if case != "missing":
        write_generator(gen, 32 if case == "wrong dim" else 64)
    if case == "truncated":
        gen.write_bytes(gen.read_bytes()[:200])
    error, match = {"missing": (FileNotFoundError, "run `dvc repro train_generator`"),
                    "wrong dim": (ValueError, "reads 32-d features, the embeddings are 64-d"),
                    "truncated": (ValueError, "truncated or not a torch file")}[case]
    with pytest.raises(error, match=match):
        stage.run(tiny_params(align_space="generator"), loss="infonce", seed=0, shards=data / "shards",
                  embeddings=data / "embeddings", out=tmp_path / "a.pt", last=tmp_path / "last.pt",
                  reports=tmp_path / "reports", generator=gen)
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "last.pt").exists()


def test_cli_names_the_missing_generator(data: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    spec = dataclasses.asdict(TINY_SPEC)
    params.write_text(yaml.safe_dump({"loss": "infonce", "seed": 0, "audio_encoder": {
        "width": 4, "spectrogram": spec, "epochs": 1, "batch": 8, "workers": 0, "device": "cpu",
        "align_space": "generator"}}))
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "stage", "train_audio_encoder", "--params", str(params),
                          "--shards", str(data / "shards"), "--embeddings", str(data / "embeddings"),
                          "--out", str(tmp_path / "a.pt"), "--last", str(tmp_path / "l.pt"),
                          "--reports", str(tmp_path / "r"), "--generator", str(tmp_path / "none.pt")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "none.pt: run `dvc repro train_generator`" in res.stderr + res.stdout
