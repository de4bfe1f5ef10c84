"""s2s generate (sound files), interpolate and edit: real media from ffmpeg, tiny models, the published path."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch
import torchvision
from PIL import Image
from conftest import compat_file
from gen_setup import (FEAT, GEN_CFG, encode, model_args, picture, s2s, silent_video, tiny_models, two_hour_mp3,
                       video_with_audio, wav)
from media_files import ffmpeg
from test_generator import ICGAN_CONFIG, _ch8_config
from test_spectrogram import published
from torch import nn
from typer.testing import CliRunner

from models.audio_encoder import AudioEncoder
from models.biggan import Generator
from models.checkpoint import load_state_strict
from models.image_encoder import ImageEncoder
from pipeline import controls, inputs, media, sound2image
from pipeline.cli import app
from pipeline.edit import direction
from pipeline.generate import generate

R = GEN_CFG.resolution


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gen")
    files = tiny_models(root / "models")
    a, b = wav(root / "a.wav", 440.0), wav(root / "b.wav", 1500.0)
    files.update(a=a, b=b, png=picture(root / "p.png"), mp4=video_with_audio(b, root / "b.mp4"), root=root,
                 mp3=encode(a, root / "a.mp3", "-c:a", "libmp3lame", "-b:a", "96k"))
    # 3 s of a, then 3 s of b: --start 3 must hear b
    ffmpeg(["-i", str(a), "-i", str(b), "-filter_complex",
            "[0]atrim=0:3[x];[1]atrim=0:3,asetpts=PTS-STARTPTS[y];[x][y]concat=n=2:v=0:a=1", "-c:a", "pcm_s16le",
            str(root / "ab.wav")])
    files["ab"] = root / "ab.wav"
    return files


def models(env: dict[str, Path], image: bool = False) -> sound2image.Models:
    files = sound2image.ModelFiles(env["audio"], env["generator"], env["image"])
    return sound2image.load(files, torch.device("cpu"), image=image)


def feature(m: sound2image.Models, path: Path, **opts) -> torch.Tensor:
    wave = inputs.prepare(path, inputs.SoundOptions(**opts), m.n_samples)
    return sound2image.encode_audio(m, wave[None])[0][0]


def test_generate_sound_files_writes_pngs_grid_and_features(env: dict[str, Path]) -> None:
    out = env["root"] / "out"
    files = [env["a"], env["mp3"], env["mp4"], env["b"]]
    run = s2s("generate", *map(str, files), "--n", "2", "--seed", "3", "--out", str(out),
              "--save-features", str(out / "f.npy"), *model_args(env, image=False))
    assert run.returncode == 0, run.stderr
    # two inputs share the stem "a" (and two "b"): the names carry the input's index
    expected = [f"{i:03d}_{s}_{k:02d}.png" for i, s in enumerate("aabb") for k in range(2)] + ["grid.png"]
    assert sorted(p.name for p in out.glob("*.png")) == expected
    grid = Image.open(out / "grid.png")
    assert grid.size == (2 + (2 * R + 2) + 2 * (R + 2), 2 + 4 * (R + 2))  # spectrogram (2R wide) + 2 images a row
    f = np.load(out / "f.npy")
    cos = lambda u, v: float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))  # noqa: E731
    assert f.shape == (4, FEAT) and cos(f[0], f[1]) > 0.99 and cos(f[2], f[3]) > 0.99  # mp3 ~ wav, mp4 ~ wav
    assert not np.allclose(f[0], f[3], atol=1e-3)  # different sounds, different features
    # the PNGs are the images of those features and of seed 3's noise, shared by every input
    m = models(env)
    z = controls.noise(m, 2, None, None, 3)
    mine = generate(m.G, np.repeat(f[[0, 3]], 2, axis=0), np.tile(z, (2, 1)))
    png = np.asarray(Image.open(out / "003_b_01.png"))
    assert np.abs(png.astype(int) - ((mine[3].permute(1, 2, 0).numpy() + 1) * 127.5).round()).max() <= 1


def test_generate_is_deterministic_and_gain_mix_start_act_on_the_waveform(env: dict[str, Path]) -> None:
    root, runner = env["root"], CliRunner()
    args = ["generate", str(env["a"]), "--n", "3", *model_args(env, image=False)]
    for name in ("x.npy", "y.npy"):
        result = runner.invoke(app, [*args, "--out", str(root / name)])
        assert result.exit_code == 0, result.output
    x, y = np.load(root / "x.npy"), np.load(root / "y.npy")
    assert x.shape == (3, 3, R, R) and np.array_equal(x, y) and not np.array_equal(x[0], x[1])
    m = models(env)
    fa, fb = feature(m, env["a"]), feature(m, env["b"])
    assert torch.allclose(feature(m, env["a"], mix=env["b"], mix_ratio=1.0), fb)
    half = feature(m, env["a"], mix=env["b"], mix_ratio=0.5)
    assert not torch.allclose(half, fa, atol=1e-3) and not torch.allclose(half, fb, atol=1e-3)
    assert not torch.allclose(feature(m, env["a"], gain=8.0), fa, atol=1e-3)  # clipped: another spectrum
    assert torch.allclose(feature(m, env["ab"], start_s=3.0, duration_s=1.0), feature(m, env["b"], duration_s=1.0),
                          atol=1e-4)


def test_interpolate_image_to_sound_strip_ends_at_both_features(env: dict[str, Path]) -> None:
    out = env["root"] / "strip.png"
    run = CliRunner().invoke(app, ["interpolate", str(env["png"]), str(env["a"]), "--steps", "5", "--out", str(out),
                                   *model_args(env)])
    assert run.exit_code == 0, run.output
    strip = np.asarray(Image.open(out))
    assert strip.shape == (R + 4, 2 + (R + 2) * 6 + (2 * R + 2), 3)
    m = models(env, image=True)
    f_img = sound2image.encode_images(m, [inputs.read_image(env["png"])])[0]
    f_snd = feature(m, env["a"])
    z = controls.noise(m, 1, None, None, 0)
    ends = pictures_of(generate(m.G, torch.stack([f_img, f_snd]).numpy(), np.repeat(z, 2, axis=0)))
    first, last = strip[2:2 + R, 2 + R + 2:2 + 2 * R + 2], strip[2:2 + R, 2 + (R + 2) * 5:2 + (R + 2) * 5 + R]
    assert np.abs(first.astype(int) - ends[0]).max() <= 1 and np.abs(last.astype(int) - ends[1]).max() <= 1


def pictures_of(images: torch.Tensor) -> np.ndarray:
    return ((images.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(int)


def test_slerp_and_lerp_paths() -> None:
    a, b = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 2.0])
    s = controls.path_between(a, b, 5, "slerp")
    assert torch.allclose(s.norm(dim=1), torch.ones(5), atol=1e-6)
    assert torch.allclose(s[0], torch.tensor([1.0, 0, 0])) and torch.allclose(s[-1], torch.tensor([0, 0, 1.0]))
    assert torch.allclose(s[2], torch.tensor([0.5**0.5, 0, 0.5**0.5]), atol=1e-6)
    assert torch.allclose(controls.path_between(a, b, 3, "lerp")[1], torch.tensor([0.5, 0, 0.5]))
    with pytest.raises(inputs.InputError, match="steps"):
        controls.path_between(a, b, 1)


def test_edit_inverts_the_image_and_moves_it_with_the_sound(env: dict[str, Path]) -> None:
    out = env["root"] / "edit"
    run = CliRunner().invoke(app, ["edit", str(env["png"]), str(env["a"]), "--strength", "4", "--steps", "40",
                                   "--lr", "0.1", "--out", str(out), *model_args(env)])
    assert run.exit_code == 0, run.output
    assert "reconstruction MSE" in run.output
    report = json.loads((out / "edit.json").read_text())
    rec = report["reconstruction"]
    assert rec["end"]["mse"] < 0.9 * rec["start"]["mse"] and report["direction_norm"] > 0
    for name in ("target", "before", "after", "strip"):
        assert (out / f"{name}.png").is_file()
    before, after = (np.asarray(Image.open(out / f"{n}.png")).astype(int) for n in ("before", "after"))
    assert before.shape == (R, R, 3) and np.abs(before - after).max() > 0
    strip = np.asarray(Image.open(out / "strip.png"))
    assert strip.shape == (R + 4, 2 + 6 * (R + 2), 3)
    # toward AUDIO2: the direction is unit(b) - unit(a); by volume: unit(2 a) - unit(a / 2)
    m = models(env)
    unit = torch.nn.functional.normalize
    d = direction(m, inputs.edit_sounds(env["a"], env["b"], inputs.SoundOptions(), (2.0, 0.5)))
    assert torch.allclose(d, unit(feature(m, env["b"]), dim=0) - unit(feature(m, env["a"]), dim=0), atol=1e-6)
    d = direction(m, inputs.edit_sounds(env["a"], None, inputs.SoundOptions(), (2.0, 0.5)))
    louder, quieter = feature(m, env["a"], gain=2.0), feature(m, env["a"], gain=0.5)
    assert torch.allclose(d, unit(louder, dim=0) - unit(quieter, dim=0), atol=1e-6)


@pytest.fixture(scope="module")
def official(env: dict[str, Path]) -> Path:
    """A folder of published-format files: random full-size sound2scene.pth and swav_800ep_pretrain.pth.tar, and
    the compat ch8 IC-GAN."""
    folder = env["root"] / "official"
    (folder / "icgan_biggan_imagenet_res128").mkdir(parents=True)
    torch.manual_seed(5)
    net = AudioEncoder()
    torch.save({"audnet." + k: v for k, v in net.state_dict().items()}, folder / "sound2scene.pth")
    swav = ImageEncoder()
    torch.save({"module." + k: v for k, v in swav.state_dict().items()}, folder / "swav_800ep_pretrain.pth.tar")
    state = torch.load(compat_file("icgan_G_ch8_res128.pth"), map_location="cpu", weights_only=True)
    torch.save(state, folder / "icgan_biggan_imagenet_res128" / "G_ema_best0.pth")
    torch.save({"config": {**ICGAN_CONFIG, "G_ch": 8}},
               folder / "icgan_biggan_imagenet_res128" / "state_dict_best0.pth")
    return folder


def published_feature(state: dict, path: Path) -> np.ndarray:
    """What the published test.py computes for a 16 kHz wav: scipy spectrogram, torchvision ResNet-18, ReLU."""
    _, pcm = scipy.io.wavfile.read(path)
    ref = torchvision.models.resnet18(num_classes=2048)
    ref.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    ref.load_state_dict({k[len("audnet."):]: v for k, v in state.items()})
    with torch.no_grad():
        return torch.relu(ref.eval()(torch.from_numpy(published(pcm / 32768.0)).float()[None, None]))[0].numpy()


def test_official_folder_gives_the_published_features_and_images(env: dict[str, Path], official: Path) -> None:
    golden = np.load(compat_file("golden_dev.npz"))
    root = env["root"]
    np.save(root / "gf.npy", golden["g_feature"])
    np.save(root / "gz.npy", golden["g_z"])
    result = CliRunner().invoke(app, ["generate", "--official", str(official), "--features", str(root / "gf.npy"),
                                      "--noise", str(root / "gz.npy"), "--out", str(root / "g.npy"), "--device", "cpu",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert np.abs(np.load(root / "g.npy") - golden["g_image"]).max() <= 1e-3
    run = CliRunner().invoke(app, ["generate", str(env["a"]), "--official", str(official), "--noise",
                                   str(root / "gz.npy"), "--save-features", str(root / "of.npy"), "--out",
                                   str(root / "o.npy"), "--device", "cpu", "--threads", "1"])
    assert run.exit_code == 0, run.output
    expected = published_feature(torch.load(official / "sound2scene.pth", weights_only=True), env["a"])
    np.testing.assert_allclose(np.load(root / "of.npy")[0], expected, atol=1e-4, rtol=1e-4)
    G = load_state_strict(Generator(_ch8_config(), skip_init=True),
                          torch.load(compat_file("icgan_G_ch8_res128.pth"), weights_only=True)).eval()
    h = torch.nn.functional.normalize(torch.from_numpy(expected)[None], dim=1).repeat(4, 1)
    with torch.no_grad():
        images = G(torch.from_numpy(golden["g_z"]), None, h).numpy()
    assert np.load(root / "o.npy").shape == (4, 3, 128, 128)
    assert np.abs(np.load(root / "o.npy") - images).max() <= 1e-3
    # an image's feature (interpolate / edit): the published SwAV input of the image, through the published net
    m = sound2image.load(sound2image.model_files(official), torch.device("cpu"), audio=False, image=True)
    mine = sound2image.encode_images(m, [Image.fromarray(golden["image_uint8"])])
    with torch.no_grad():
        theirs = m.image(torch.from_numpy(golden["image_224"]).float()[None])
    assert m.image_size == 224 and torch.allclose(mine, theirs, atol=1e-4)


def _bad_media(env: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    root = env["root"]
    bad = root / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "notes.txt").write_text("not a sound\n")
    ffmpeg(["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", "-c:a", "pcm_s16le", str(bad / "zero.wav")])
    data = env["mp3"].read_bytes()
    (bad / "corrupt.mp3").write_bytes(data[:600] + bytes(range(256)) * ((len(data) - 600) // 256))
    silent_video(bad / "silent.mp4")
    (bad / "file").write_text("a file where a folder should be\n")
    state = torch.load(env["audio"], weights_only=True)
    state["model"]["fc.weight"] = torch.zeros(FEAT, 8)
    torch.save(state, bad / "audio_encoder.pt")
    out = ["--out", str(root / "bad_out")]
    ours = model_args(env, image=False)
    return {
        "missing": ([str(bad / "nope.wav"), *out, *ours], "no such file"),
        "directory": ([str(bad), *out, *ours], "is a directory"),
        "text file": ([str(bad / "notes.txt"), *out, *ours], "unsupported format '.txt'"),
        "png as audio": ([str(env["png"]), *out, *ours], "unsupported format '.png' for audio"),
        "zero-length": ([str(bad / "zero.wav"), *out, *ours], "zero-length audio"),
        "corrupt mp3": ([str(bad / "corrupt.mp3"), *out, *ours], "cannot decode the audio"),
        "no audio track": ([str(bad / "silent.mp4"), *out, *ours], "has no audio track"),
        "start past end": ([str(env["a"]), "--start", "60", *out, *ours], "past the end"),
        "mismatch": ([str(env["a"]), *out, *ours, "--audio-encoder", str(bad / "audio_encoder.pt")],
                     "key 'fc.weight': checkpoint shape [32, 8] != model shape [32, 32]"),
        "unwritable out": ([str(env["a"]), "--out", str(bad / "file" / "sub"), *ours], "cannot write to"),
    }


def test_bad_input_is_one_sentence(env: dict[str, Path]) -> None:
    for name, (args, phrase) in _bad_media(env).items():
        run = s2s("generate", *args)
        assert run.returncode == 2, (name, run.stdout, run.stderr)
        assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, (name, run.stderr)
        assert phrase in run.stderr and "Traceback" not in run.stderr, (name, run.stderr)


def test_two_hour_file_decodes_only_the_window(env: dict[str, Path]) -> None:
    long = two_hour_mp3(env["root"] / "long.mp3")
    assert long.stat().st_size < 10_000_000
    info = media.probe_audio(long)  # the header, read in the decode worker: no pass over the file
    assert not isinstance(info, str) and abs(info.duration_s - 7200) < 30 and info.audio_index == 0
    run = CliRunner().invoke(app, ["generate", str(long), "--start", "3600", "--n", "1", "--out",
                                   str(env["root"] / "long.npy"), *model_args(env, image=False)])
    assert run.exit_code == 0, run.output
    # peak memory of the decode the worker runs, in a fresh process: the window, not the 460 MB of the whole file
    code = ("import sys; from pipeline import backends; import torchcodec.decoders\n"
            "mb = lambda key: int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]) / 1024\n"
            "open('/proc/self/clear_refs', 'w').write('5')  # peak RSS := RSS now\n"
            "before = mb('VmRSS:'); w = backends.audio('torchcodec', sys.argv[1], 0, 16000, 3600.0, 10.0)\n"
            "print(len(w), mb('VmHWM:') - before)")
    out = subprocess.run([sys.executable, "-c", code, str(long)], capture_output=True, text=True, timeout=120)
    samples, grown_mb = out.stdout.split()
    assert int(samples) == 160_000 and float(grown_mb) < 60, out.stdout
