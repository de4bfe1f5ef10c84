"""Finding the moment: audio windows, train_localizer and score on a tiny world with bad inputs."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import manifests, moments
from pipeline.ffmpeg import write_mp4
from pipeline.params import DataParams, DecodeParams, LocalizerParams, ScoreParams, WorldParams
from stages import score, train_localizer, videos

TINY = WorldParams(classes=8, clips_per_class=2, duration_s=2.0, val_frac=0.0, test_frac=0.5, workers=2)
FAST = LocalizerParams(dim=8, width=4, n_mels=16, steps=3, batch_videos=4, workers=2)


def test_windows_are_centred_clamped_and_the_track_logmel_matches_per_window() -> None:
    audio = np.random.default_rng(0).normal(scale=0.1, size=3 * moments.SR).astype(np.float32)
    times = moments.frame_times(3.0, 10)
    assert len(times) == 30 and times[-1] == pytest.approx(2.9)
    starts = moments.window_starts(times, len(audio), 1.0)
    assert starts[0] == 0 and starts[-1] == 2 * moments.SR and starts[15] == int(1.0 * moments.SR)
    assert np.all(starts % moments.HOP == 0)
    win = moments.audio_windows(audio, times, 1.0)
    np.testing.assert_array_equal(win[15], audio[moments.SR:2 * moments.SR])
    fast = moments.window_logmels(audio, times, n_mels=16, window_s=1.0)
    assert fast.shape == (30, 1, 16, moments.n_mel_frames(1.0))
    torch.testing.assert_close(fast, moments.logmel(win, n_mels=16, window_s=1.0), atol=1e-4, rtol=0)


def test_resize_frames() -> None:
    frames = np.full((2, 128, 96, 3), 200, np.uint8)
    small = moments.resize_frames(frames, 64)
    assert small.shape == (2, 64, 64, 3) and small.dtype == np.uint8 and np.all(small == 200)
    assert moments.resize_frames(small, 64) is small


def test_unscorable_audio_is_named() -> None:
    assert "silent" in moments.check_audio(np.zeros(moments.SR * 2, np.float32), 1.0)
    assert "shorter than one window" in moments.check_audio(np.ones(100, np.float32) * 0.1, 1.0)
    assert moments.check_audio(np.full(moments.SR, 0.1, np.float32), 1.0) is None


def test_selections_and_top_k() -> None:
    assert moments.mid_time(6.0, 10) == pytest.approx(3.0)
    assert moments.random_time(6.0, 10, 0, "a") == moments.random_time(6.0, 10, 0, "a")
    assert 0 <= moments.random_time(6.0, 10, 0, "a") < 6.0
    assert score.top_k(np.array([0.1, 0.5, 0.5, 0.2]), 3).tolist() == [1, 2, 3]
    assert score.parse_shard("1/3") == (1, 3)
    with pytest.raises(ValueError, match="i/n"):
        score.parse_shard("x")


def _add_bad_videos(root: Path) -> None:
    """Append to videos.parquet: no audio, a silent track, a 0.5 s clip, a truncated file, a failed row."""
    rows = manifests.read(root / "videos.parquet").to_pylist()
    frames = np.full((20, 64, 64, 3), 90, np.uint8)
    made = {"noaudio": write_mp4(root / "videos" / "noaudio.mp4", frames, None, fps=10, sr=16000),
            "silent": write_mp4(root / "videos" / "silent.mp4", frames, np.zeros(32000), fps=10, sr=16000),
            "short": write_mp4(root / "videos" / "short.mp4", frames[:5], np.full(8000, 0.1), fps=10, sr=16000)}
    assert set(made.values()) == {None}
    good = (root / rows[0]["path"]).read_bytes()
    (root / "videos" / "cut.mp4").write_bytes(good[: len(good) // 3])
    for vid in ("noaudio", "silent", "short", "cut", "gone"):
        rows.append({**rows[0], "video_id": vid, "path": f"videos/{vid}.mp4", "split": "test",
                     **({"status": "failed", "error": "download failed"} if vid == "gone" else {})})
    manifests.write(rows, manifests.VIDEOS, root / "videos.parquet")


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("moments")
    videos.run(5, DataParams(world=TINY), out_dir=root / "videos", manifest=root / "videos.parquet",
               events=root / "events.parquet")
    _add_bad_videos(root)
    summary = train_localizer.run(0, FAST, DecodeParams(), videos=root / "videos.parquet", out=root / "loc.pt")
    assert summary["ok"] == 8 and summary["steps"] == 3
    score.run(ScoreParams(k=4, sheets=2), DecodeParams(), videos=root / "videos.parquet",
              checkpoint=root / "loc.pt", out=root / "moments.parquet", summary=root / "moments.json",
              sheets=root / "sheets")
    return root


def test_score_writes_top_k_per_video_and_counts_failures(scored: Path) -> None:
    assert len(list((scored / "sheets").glob("*.png"))) == 2
    s = json.loads((scored / "moments.json").read_text())
    assert (s["total"], s["ok"], s["failed"], s["skipped"]) == (21, 16, 4, 1)
    assert s["skipped_ids"] == ["gone"]
    assert "no audio stream" in s["errors"]["noaudio"] and "silent" in s["errors"]["silent"]
    assert "shorter than one window" in s["errors"]["short"] and s["errors"]["cut"]
    rows = manifests.read(scored / "moments.parquet", manifests.MOMENTS).to_pylist()
    by_video: dict[str, list[dict]] = {}
    for r in rows:
        by_video.setdefault(r["video_id"], []).append(r)
    assert len(by_video) == 16 and all(len(v) == 4 for v in by_video.values())
    for v in by_video.values():
        assert [r["rank"] for r in v] == [0, 1, 2, 3]
        assert all(a["score"] >= b["score"] for a, b in zip(v, v[1:]))
        assert all(r["t_s"] == pytest.approx(r["frame_index"] / 10) for r in v)


def test_shards_partition_the_videos(scored: Path) -> None:
    ids = []
    for i in range(2):
        out = scored / f"m{i}.parquet"
        score.run(ScoreParams(k=1), DecodeParams(), videos=scored / "videos.parquet", checkpoint=scored / "loc.pt",
                  out=out, summary=scored / f"m{i}.json", shard=(i, 2))
        ids += manifests.read(out).column("video_id").to_pylist()
    whole = manifests.read(scored / "moments.parquet").column("video_id").to_pylist()
    assert sorted(ids) == sorted(set(whole))


def test_external_checkpoint_is_copied(scored: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifacts" / "localizer.pt"
    train_localizer.run(0, replace(FAST, checkpoint=str(scored / "loc.pt")), DecodeParams(), videos=Path("nope"),
                        out=out)
    assert out.read_bytes() == (scored / "loc.pt").read_bytes()
    shutil.copy(scored / "moments.parquet", tmp_path / "bad.pt")
    with pytest.raises(Exception):
        train_localizer.run(0, replace(FAST, checkpoint=str(tmp_path / "bad.pt")), DecodeParams(),
                            videos=Path("nope"), out=tmp_path / "x.pt")


def _read_shards(folder: Path) -> dict[str, dict]:
    """Every sample of every shard through plain webdataset: {key: {jpg, flac, json}} (bytes)."""
    import webdataset as wds

    urls = sorted(str(f) for f in folder.glob("*.tar"))
    out = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        assert sample["__key__"] not in out
        out[sample["__key__"]] = sample
    return out


@pytest.mark.parametrize("selection", ["top1", "mid"])
def test_pairs_rows_equal_shard_samples(scored: Path, selection: str) -> None:
    from pipeline import shards
    from pipeline.params import PairsParams
    from stages import pairs

    out, folder = scored / f"pairs-{selection}.parquet", scored / f"shards-{selection}"
    summary = pairs.run(selection, 0, PairsParams(shard_size=3), DecodeParams(), videos=scored / "videos.parquet",
                        moments_path=scored / "moments.parquet", out=out, shard_dir=folder)
    rows = manifests.read(out, manifests.PAIRS).to_pylist()
    assert summary["ok"] == len(rows) == 16 and summary["failed"] == 0
    assert len({r["key"] for r in rows}) == 16 and {r["selection"] for r in rows} == {selection}
    assert sorted(f.name for f in folder.glob("*.tar")) == summary["shards"] == sorted({r["shard"] for r in rows})
    assert {"train-000000.tar", "train-000002.tar", "test-000002.tar"} <= set(summary["shards"])
    assert not list(folder.glob(".*"))  # no temporaries left
    samples = _read_shards(folder)
    assert set(samples) == {r["key"] for r in rows}
    top1 = {m["video_id"]: m for m in manifests.read(scored / "moments.parquet").to_pylist() if m["rank"] == 0}
    for r in rows[:4]:
        s = samples[r["key"]]
        assert json.loads(s["json"]) == r
        clip = moments.decode_clip(scored / "videos" / f"{r['video_id']}.mp4", fps=10, window_s=1.0)
        k = int(round(r["t_s"] * 10))
        assert s["jpg"] == shards.encode_jpeg(clip.frames[k], 95)  # exactly the decoded frame, encoded
        frame = shards.decode_jpeg(s["jpg"])
        assert np.abs(frame.astype(int) - clip.frames[k].astype(int)).mean() < 2  # JPEG q95 4:4:4
        wave, sr = shards.decode_flac(s["flac"])
        want = moments.audio_windows(clip.audio, np.array([r["t_s"]]), 1.0)[0]
        assert sr == 16000 and wave.shape == want.shape and np.abs(wave - want).max() < 1e-4
        if selection == "top1":
            assert r["t_s"] == top1[r["video_id"]]["t_s"] and r["score"] == top1[r["video_id"]]["score"]
        else:
            assert r["t_s"] == pytest.approx(1.0)


def test_video_normalised_score_is_the_raw_score_minus_its_mean_over_frames(scored: Path) -> None:
    from models.localizer import Localizer, load

    model = load(scored / "loc.pt")
    clip = moments.decode_clip(scored / "videos" / "world_00000.mp4", fps=10, window_s=1.0)
    mels = moments.window_logmels(clip.audio, clip.times, n_mels=model.cfg.n_mels, window_s=1.0)
    raw, norm = score.score_clip(model, clip, mels, "none"), score.score_clip(model, clip, mels, "video", batch=7)
    with torch.no_grad():
        sim = Localizer.similarity_maps(model.embed_frames(torch.from_numpy(clip.frames)), model.embed_audio(mels))
    s = sim.flatten(2).amax(2).double().numpy()
    np.testing.assert_allclose(raw, np.diag(s), atol=1e-6)
    np.testing.assert_allclose(norm, np.diag(s) - s.mean(axis=0), atol=1e-6)


def test_contact_sheet_marks_the_best_frame() -> None:
    from pipeline.sheet import RED, contact_sheet

    frames = np.zeros((25, 64, 64, 3), np.uint8)
    scores = np.sin(np.arange(25) / 4.0)
    img = np.asarray(contact_sheet(frames, np.arange(25) / 10, scores, cols=10, cell=72, plot_height=100))
    assert img.shape == (3 * 72 + 100, 720, 3)
    best = int(np.argmax(scores))
    x, y = (best % 10) * 72, (best // 10) * 72
    assert tuple(img[y, x + 30]) == RED and tuple(img[y + 72, x + 30]) != RED
    with pytest.raises(ValueError):
        contact_sheet(frames, np.arange(3), scores)


def test_moments_show_cli(scored: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "pipeline.cli", "moments", "show", "world_00001", "--out", str(scored / "s.png"),
           "--params", str(repo / "params.yaml"), "--videos", str(scored / "videos.parquet"),
           "--checkpoint", str(scored / "loc.pt"), "--events", str(scored / "events.parquet")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (scored / "s.png").stat().st_size > 1000
    bad = subprocess.run(cmd[:5] + ["silent"] + cmd[6:], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "silent audio track" in bad.stderr and "Traceback" not in bad.stderr


def test_training_resumes_to_the_same_model(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    data = train_localizer.TrainSet(
        frames=torch.randint(0, 255, (24, 64, 64, 3), dtype=torch.uint8, generator=gen),
        mels=torch.randn(24, 1, 16, 97, generator=gen).half(),
        video=torch.arange(6).repeat_interleave(4), time=torch.arange(4).repeat(6).double() * 0.5)
    p = replace(FAST, steps=6, save_every=2, min_gap_s=1.0)
    whole, losses = train_localizer.train(data, p, 0)
    resume = tmp_path / "loc.pt.resume"
    train_localizer.train(data, p, 0, resume=resume, stop_at=3)
    assert torch.load(resume, weights_only=True)["step"] == 2
    again, losses2 = train_localizer.train(data, p, 0, resume=resume)
    assert losses2 == losses
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v, atol=0, rtol=0)
    other = replace(p, lr=0.01)  # other params: the saved state is ignored, training starts over
    _, losses3 = train_localizer.train(data, other, 0, resume=resume, stop_at=1)
    assert len(losses3) == 1


def test_score_under_torchrun_merges_the_ranks(scored: Path) -> None:
    import subprocess
    import sys

    (scored / "p.yaml").write_text("score: {k: 4}\n")
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "pipeline.cli", "stage", "score",
           "--params", str(scored / "p.yaml"), "--videos", str(scored / "videos.parquet"),
           "--checkpoint", str(scored / "loc.pt"), "--out", str(scored / "tr.parquet"),
           "--summary", str(scored / "tr.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    want = manifests.read(scored / "moments.parquet").to_pylist()
    got = manifests.read(scored / "tr.parquet").to_pylist()
    assert [(r["video_id"], r["rank"], r["frame_index"]) for r in got] == \
        [(r["video_id"], r["rank"], r["frame_index"]) for r in want]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-6)
    s, w = json.loads((scored / "tr.json").read_text()), json.loads((scored / "moments.json").read_text())
    assert {k: s[k] for k in ("total", "ok", "failed", "skipped", "errors")} == \
        {k: w[k] for k in ("total", "ok", "failed", "skipped", "errors")}
    assert not list(scored.glob(".*part*"))


def _toy_set() -> train_localizer.TrainSet:
    gen = torch.Generator().manual_seed(0)
    return train_localizer.TrainSet(
        frames=torch.randint(0, 255, (24, 64, 64, 3), dtype=torch.uint8, generator=gen),
        mels=torch.randn(24, 1, 16, 97, generator=gen).half(),
        video=torch.arange(6).repeat_interleave(4), time=torch.arange(4).repeat(6).double() * 0.5)


def test_ensemble_members_equal_lone_runs_of_their_seeds_and_resume(tmp_path: Path) -> None:
    from models.localizer import LocalizerEnsemble

    data = _toy_set()
    p = replace(FAST, steps=6, save_every=2, members=3)
    lone = [train_localizer.train(data, replace(p, members=1), 5 + 10_000 * i)[0] for i in range(3)]
    out = tmp_path / "loc.pt"
    # member 1 was interrupted at step 2 in an earlier run: it resumes, the others start afresh
    train_localizer.train(data, p, 5 + 10_000, resume=train_localizer.member_resume(out, 1), stop_at=3)
    assert train_localizer.member_resume(out, 1).name == "loc.pt.resume1"
    ens, curves = train_localizer.train_members(data, p, 5, out)
    assert isinstance(ens, LocalizerEnsemble) and len(curves) == 3 and all(len(c) == 6 for c in curves)
    for member, want in zip(ens.members, lone):
        for k, v in want.state_dict().items():
            torch.testing.assert_close(member.state_dict()[k], v, atol=0, rtol=0)
    assert {f.name for f in tmp_path.iterdir()} == {"loc.pt.resume", "loc.pt.resume1", "loc.pt.resume2"}


def test_ensemble_scores_are_the_mean_of_its_members(scored: Path, tmp_path: Path) -> None:
    from models.localizer import Localizer, LocalizerEnsemble, load, save

    a = load(scored / "loc.pt")
    b = Localizer(a.cfg).eval()
    save(LocalizerEnsemble.of([a, b]), tmp_path / "ens.pt", step=0)
    ens = score.load_model(tmp_path / "ens.pt")
    clip = moments.decode_clip(scored / "videos" / "world_00000.mp4", fps=10, window_s=1.0)
    mels = moments.window_logmels(clip.audio, clip.times, n_mels=a.cfg.n_mels, window_s=1.0)
    for norm in ("none", "video"):
        want = (score.score_clip(a, clip, mels, norm) + score.score_clip(b, clip, mels, norm)) / 2
        np.testing.assert_allclose(score.score_clip(ens, clip, mels, norm), want, atol=1e-6)


def test_two_member_stage_writes_one_ensemble_and_cleans_up(scored: Path, tmp_path: Path) -> None:
    from models.localizer import LocalizerEnsemble, load

    out = tmp_path / "loc.pt"
    summary = train_localizer.run(0, replace(FAST, members=2), DecodeParams(), videos=scored / "videos.parquet",
                                  out=out)
    assert summary["members"] == 2 and summary["ok"] == 8
    ens = load(out)
    assert isinstance(ens, LocalizerEnsemble) and ens.cfg.members == 2
    single = load(scored / "loc.pt")  # the fixture's lone localizer of seed 0 is member 0
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ens.members[0].state_dict()[k], v, atol=0, rtol=0)
    assert [f.name for f in tmp_path.iterdir()] == ["loc.pt"]
    with pytest.raises(ValueError, match="localizer.members must be at least 1"):
        replace(FAST, members=0)
