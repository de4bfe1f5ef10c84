"""Evaluation: the metric functions on inputs with known answers, the evaluator learning a tiny world, and the
`evaluate` stage end to end through the CLI on tiny artifacts (with its bad inputs)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from models.evaluator import Evaluator
from pipeline import eval_metrics, evaluation, evaluator_data, manifests
from pipeline.evaluation import Judge
from pipeline.params import EvaluatorParams
from stages import train_evaluator
from tests.eval_setup import write_artifacts, write_clip, write_world

S2S = [sys.executable, "-m", "pipeline.cli"]


def test_recall_at_k_on_known_logits() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [0.0, 1.0, 2.0], [5.0, 0.0, 1.0]])
    labels = torch.tensor([0, 2, -1, 2])  # hit at 1; second best; unknown class; second best
    r = eval_metrics.recall_at_k(logits, labels, (1, 2, 3))
    assert r == {1: 0.25, 2: 0.75, 3: 0.75}
    assert eval_metrics.per_class_recall(logits, labels, 3)[:1] == [1.0]
    assert math.isnan(eval_metrics.recall_at_k(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))[1])


def test_spearman_and_volume() -> None:
    gains = np.array([0.25, 0.5, 1, 2, 4])
    assert eval_metrics.spearman(np.array([1, 2, 3, 4, 5.0]), gains) == pytest.approx(1.0)
    assert eval_metrics.spearman(np.array([5, 4, 3, 2, 1.0]), gains) == pytest.approx(-1.0)
    assert eval_metrics.spearman(np.full(5, 0.3), gains) == 0.0  # a constant size ranks nothing
    sizes = np.array([[0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.2, 0.1], [0.1, 0.3, 0.2, 0.4, 0.5]])
    assert eval_metrics.volume_spearman(sizes, gains) == pytest.approx((1 - 1 + 0.9) / 3)


def test_mix_top2_leaves_out_the_none_class() -> None:
    logits = torch.tensor([[5.0, 4.0, 0.0, 9.0], [5.0, 0.0, 4.0, 9.0], [0.0, 4.0, 5.0, 1.0]])
    a, b = torch.tensor([0, 0, 0]), torch.tensor([1, 1, 1])
    assert eval_metrics.mix_top2(logits, a, b, exclude=3) == pytest.approx(1 / 3)
    assert eval_metrics.mix_top2(logits, a, b) == 0.0  # with `none` (index 3) ranked, no row has both


def test_fid_and_inception_score_through_torchmetrics() -> None:
    torch.manual_seed(0)
    feat = nn.Flatten()  # images [N, 3, 2, 2] -> 12 features
    feat.num_features = 12
    real = torch.randn(400, 3, 2, 2)
    fid = eval_metrics.Fid(feat, real)
    assert fid(torch.randn(400, 3, 2, 2)) < 0.5  # the same distribution
    assert fid(torch.randn(400, 3, 2, 2) + 2.0) == pytest.approx(12 * 4.0, rel=0.1)  # mean shift 2 in 12 dims
    one_hot = torch.eye(4).repeat(50, 1).view(200, 4, 1, 1).expand(200, 4, 1, 1) * 50
    identity = nn.Flatten()
    assert eval_metrics.inception_score(identity, one_hot, splits=1) == pytest.approx(4.0, rel=1e-3)
    assert eval_metrics.inception_score(identity, one_hot[::4], splits=2) == pytest.approx(1.0, rel=1e-3)


def test_clip_rows_pick_each_clips_images_in_order() -> None:
    assert evaluation.clip_rows([2, 0], 3).tolist() == [6, 7, 8, 0, 1, 2]
    assert evaluation.clip_rows([], 3).tolist() == []


def test_derangement_and_mix_partners() -> None:
    perm = evaluation.derangement(7, seed=3)
    assert sorted(perm.tolist()) == list(range(7)) and not (perm == np.arange(7)).any()
    labels = ["a", "a", "b", "c", "a"]
    pairs = evaluation.mix_partners(labels, 10)
    assert pairs == [(0, 2), (1, 2), (2, 3), (3, 4), (4, 2)]
    assert evaluation.mix_partners(["a", "a"], 5) == []


def test_class_spread_takes_the_classes_in_turn() -> None:
    labels = ["a", "a", "a", "b", "b", "c"]
    assert evaluation.class_spread(labels, 4) == [0, 3, 5, 1]
    assert evaluation.class_spread(labels, 10) == [0, 3, 5, 1, 4, 2]  # every clip once
    assert evaluation.class_spread(labels, 0) == [] and evaluation.class_spread([], 3) == []


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The tiny world, an evaluator trained on it (the stage's run) and the evaluate stage's other inputs."""
    root = tmp_path_factory.mktemp("evalworld")
    write_world(root)
    p = EvaluatorParams(width=4, layers=(1, 1, 1, 1), image_size=32, epochs=12, batch=32, lr=0.005, rotate=0.0,
                        lowres=16, threads=1)
    summary = train_evaluator.run(p, images=root / "images", videos=root / "videos.parquet",
                                  events=root / "events.parquet", out=root / "evaluator.pt",
                                  report=root / "evaluator.json", curve_csv=root / "curve.csv")
    write_artifacts(root)
    write_clip(root)
    return root, summary


def test_evaluator_learns_the_tiny_world(world: tuple[Path, dict]) -> None:
    root, summary = world
    assert summary["classes"] == ["class0", "class1", "class2", "none"] and summary["labels_from"] == "events"
    assert summary["evaluator_acc"] >= 0.9, summary
    assert summary["evaluator_size_mae"] < 0.12, summary  # sizes span 0.25 .. 0.8 of the frame
    assert json.loads((root / "evaluator.json").read_text())["test_frames"] == 24
    curve = (root / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,step") and len(curve) == 13
    obj = torch.load(root / "evaluator.pt", weights_only=True)
    assert obj["classes"] == summary["classes"] and obj["has_size"] is True
    assert summary["two_source_frames"] == 0 and math.isnan(summary["two_source_top2"])  # no two-class frames
    out = Evaluator.from_checkpoint(obj)(torch.zeros(2, 3, 64, 64))  # any input size
    assert out.logits.shape == (2, 4) and out.size.shape == (2,) and out.pool.shape == (2, 64)  # avg + max of 32 channels


def test_frame_truth_keeps_two_classes_and_leaves_out_three() -> None:
    ev = [dict(label=c, on_screen=True, t_start=t0, t_end=1.0, size=px)
          for c, t0, px in (("dog", 0.0, 8.0), ("bell", 0.3, 4.0), ("car", 0.6, 2.0))]
    assert evaluator_data._frame_truth(ev, 0.1, 16.0, True) == (("dog",), 0.5)
    classes, size = evaluator_data._frame_truth(ev, 0.4, 16.0, True)
    assert classes == ("bell", "dog") and math.isnan(size)  # sorted; the size head is not trained on it
    assert evaluator_data._frame_truth(ev, 0.7, 16.0, True) is None  # three classes
    assert evaluator_data._frame_truth(ev, 1.5, 16.0, True) == (("none",), 0.0)
    assert evaluator_data._frame_truth(ev, 1.5, 16.0, False) is None


def test_loss_is_the_soft_cross_entropy_and_exactly_the_hard_one_without_pairs() -> None:
    torch.manual_seed(0)
    logits, size = torch.randn(4, 3), torch.rand(4)
    labels, second = torch.tensor([0, 1, 2, 0]), torch.tensor([-1, 2, -1, 1])
    target = F.one_hot(labels, 3).float()
    target[[1, 3]] = torch.tensor([[0, 0.5, 0.5], [0.5, 0.5, 0]])
    nan = torch.full((4,), float("nan"))
    loss = train_evaluator.loss_fn((logits, size), labels, second, nan, 1.0)
    assert loss == pytest.approx(float(F.cross_entropy(logits, target)), rel=1e-6)
    hard = train_evaluator.loss_fn((logits, size), labels, torch.full((4,), -1), nan, 1.0)
    assert torch.equal(hard, F.cross_entropy(logits, labels))  # bit for bit: two_source off trains as before


def _two_source_world(root: Path) -> None:
    """The tiny world plus a class1 source drawn beside class0 at 0.2 .. 0.4 s in train clips 0..5 of class0,
    and class1 and class2 beside it in clip 6 (three classes)."""
    write_world(root)
    events = manifests.read(root / "events.parquet", manifests.EVENTS).to_pylist()
    extra = [("class1", i) for i in range(7)] + [("class2", 6)]
    events += [dict(events[0], video_id=f"train_class0_{i}", label=c, t_start=0.2, t_end=0.4) for c, i in extra]
    manifests.write(events, manifests.EVENTS, root / "events.parquet")


def test_two_source_frames_train_with_both_classes_and_off_leaves_them_out(tmp_path: Path) -> None:
    _two_source_world(tmp_path)
    args = dict(none_class=True, max_frames=0, seed=0)
    paths = (tmp_path / "images", tmp_path / "videos.parquet", tmp_path / "events.parquet")
    on = evaluator_data.load(*paths, two_source=True, **args)
    two = on.train.second >= 0
    # 6 two-source clips, every third (clips 0 and 3) held out whole: 4 clips x 2 frames train, 2 x 2 held out
    assert two.sum() == 8 and set(on.train.labels[two]) == {0} and set(on.train.second[two]) == {1}
    assert np.isnan(on.train.sizes[two]).all() and np.isfinite(on.train.sizes[~two]).all()
    assert len(on.two_source) == 4 and set(on.two_source.labels) == {0} and set(on.two_source.second) == {1}
    # single-source: 28 clips x 4 - 4 x 2 (two classes) - 2 (three classes, left out) = 102; none: 102 / 3 = 34
    assert len(on.train) == 8 + 102 + 34 and (on.train.labels == 3).sum() == 34
    off = evaluator_data.load(*paths, two_source=False, **args)
    assert (off.train.second < 0).all() and len(off.two_source) == 4  # still reported on the same frames
    assert len(off.train) == 106 + 35 and (off.train.labels == 3).sum() == 35  # 30 x 4 - 7 x 2 singles
    p = EvaluatorParams(width=4, layers=(1, 1, 1, 1), image_size=32, epochs=1, batch=32, threads=1)
    summary = train_evaluator.run(p, images=paths[0], videos=paths[1], events=paths[2], out=tmp_path / "e.pt",
                                  report=tmp_path / "e.json", curve_csv=tmp_path / "c.csv")
    assert summary["two_source_train_frames"] == 8 and summary["two_source_frames"] == 4
    assert 0 <= json.loads((tmp_path / "e.json").read_text())["two_source_top2"] <= 1


def _params(root: Path, **evaluate: object) -> Path:
    base = dict(n_noise=2, volume_noise=1, mix_pairs=4, samples=3, batch=16, threads=1, is_splits=2)
    path = root / "params.yaml"
    path.write_text(json.dumps({"evaluate": {**base, **evaluate}}))
    return path


def evaluate_cli(root: Path, *extra: str, params: Path | None = None) -> subprocess.CompletedProcess:
    args = ["stage", "evaluate", "--params", str(params or _params(root)), "--shards", str(root / "shards"),
            "--audio-encoder", str(root / "audio_encoder.pt"), "--generator", str(root / "generator.pt"),
            "--evaluator", str(root / "evaluator.pt"), "--image-encoder", str(root / "image_encoder.pt"),
            "--embeddings", str(root / "embeddings"),
            "--images", str(root / "images"), "--pairs", str(root / "pairs.parquet"),
            "--videos", str(root / "videos.parquet"), "--events", str(root / "events.parquet"),
            "--metrics", str(root / "reports" / "metrics.json"), "--plots", str(root / "reports" / "evaluate"),
            "--samples", str(root / "reports" / "samples"), *extra]
    return subprocess.run([*S2S, *args], capture_output=True, text=True, timeout=300)


def test_evaluate_stage_end_to_end(world: tuple[Path, dict]) -> None:
    root, _ = world
    params = _params(root, clip_checkpoint=str(root / "tiny_clip.pt"), clip_model=str(root / "TinyClip.json"))
    out = evaluate_cli(root, params=params)
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads((root / "reports" / "metrics.json").read_text())
    for key in ("r1", "r5", "fid", "is", "r1_upper", "fid_upper", "r1_lower", "volume_spearman", "mix_top2",
                "moment_hit", "evaluator_acc", "fid_real"):
        assert m[key] is not None, key
    assert m["test_clips"] == 8 and m["images_per_clip"] == 2
    assert m["unknown_class_clips"] == 2 and "class3" in out.stderr  # reported, not a crash
    assert 0 <= m["r1"] <= m["r5"] <= 1 and m["fid"] >= 0 and m["is"] >= 1.0
    assert -1 <= m["volume_spearman"] <= 1 and 0 <= m["mix_top2"] <= 1 and 0 <= m["mix_top2_single"] <= 1
    assert 0 <= m["clip_r1"] <= m["clip_r5"] <= 1  # a random tiny CLIP: only the plumbing is checked
    assert m["moment_hit"] == 0.5  # half of the pairs were picked inside their event
    assert 0 <= m["r1_upper_frames"] <= m["r5_upper_frames"] <= 1 and 0 <= m["r1_real_pairs"] <= 1
    per_class = (root / "reports" / "evaluate" / "per_class.csv").read_text().splitlines()
    assert per_class[0] == "class,clips,r1,r1_upper,r1_lower,r1_real_pairs,r1_upper_frames,in_evaluator"
    assert per_class[-1].startswith("class3,2,")
    assert per_class[-1].endswith(",0")
    clips = pd.read_csv(root / "reports" / "evaluate" / "per_clip.csv", keep_default_na=False)
    assert list(clips.columns) == ["key", "label", "r1", "drawn", "drawn_share", "r1_upper", "pair_frame"]
    assert len(clips) == 8 and clips["key"].is_unique and set(clips["label"]) == {"class0", "class1", "class2", "class3"}
    assert clips["r1"].mean() == pytest.approx(m["r1"], abs=1e-4)  # the clips' shares average to R@1
    assert (clips.loc[clips["label"] == "class3", "r1"] == 0).all()  # a class the evaluator cannot name
    assert clips["drawn_share"].between(0.5, 1).all()  # 2 images a clip: the top class has at least one
    judge = Judge(root / "evaluator.pt")
    assert set(clips["drawn"]) | set(clips["pair_frame"]) <= set(judge.classes)
    assert len((root / "reports" / "evaluate" / "volume.csv").read_text().splitlines()) == 6
    grids = sorted((root / "reports" / "samples").glob("*.png"))
    assert len(grids) == 3 and grids[0].name == "000_test0000_0.png"


def test_missing_artifact_names_the_stage_that_makes_it(world: tuple[Path, dict]) -> None:
    root, _ = world
    out = evaluate_cli(root, "--generator", str(root / "nope" / "generator.pt"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{root / 'nope' / 'generator.pt'} is missing: run `dvc repro train_generator`" in out.stderr


def test_image_encoder_of_another_feature_size_is_one_clear_error(world: tuple[Path, dict], tmp_path: Path) -> None:
    from models.checkpoint import save_checkpoint
    from models.image_encoder import ImageEncoder, ImageEncoderConfig

    root, _ = world
    cfg = ImageEncoderConfig(width=2, hidden_dim=8, proj_dim=4, n_prototypes=4)  # 64-d, the generator takes 32-d
    save_checkpoint(tmp_path / "enc64.pt", ImageEncoder(cfg).eval(), cfg, step=1, input_size=32)
    out = evaluate_cli(root, "--image-encoder", str(tmp_path / "enc64.pt"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "gives 64-d features but the generator takes 32-d ones" in out.stderr
    missing = evaluate_cli(root, "--image-encoder", str(tmp_path / "none.pt"))
    assert missing.returncode == 2 and "run `dvc repro train_image_encoder`" in missing.stderr


def test_frame_features_equal_the_embed_stages_features_of_the_same_frames(world: tuple[Path, dict],
                                                                            tmp_path: Path) -> None:
    """r1_upper_frames must feed G what the embed stage would give for those frames (same input recipe)."""
    from pipeline import features, shard_io
    from pipeline.params import EmbedParams
    from stages import embed

    root, _ = world
    embed.run(EmbedParams(image_size=32, batch=4, workers=0, device="cpu"), shards=root / "shards",
              encoder=root / "image_encoder.pt", out_dir=tmp_path / "emb", splits=("test",))
    table = features.read(tmp_path / "emb", "test")
    samples = list(shard_io.read_samples(shard_io.shard_urls(root / "shards", "test"), ("jpg",)))
    frames = np.stack([np.asarray(shard_io.decode_image_bytes(s["jpg"])) for s in samples])
    got = evaluation.frame_features(root / "image_encoder.pt", frames, batch=3)
    want = np.stack([table.features[table.rows[s["__key__"]]] for s in samples])
    assert got.shape == (len(samples), 32) and np.allclose(got.numpy(), want, atol=1e-5)


def test_empty_test_split_is_one_clear_error(world: tuple[Path, dict]) -> None:
    root, _ = world
    (root / "no_shards").mkdir(exist_ok=True)
    out = evaluate_cli(root, "--shards", str(root / "no_shards"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: the test split is empty")


def test_missing_clip_weights_are_one_clear_error(world: tuple[Path, dict]) -> None:
    root, _ = world
    out = evaluate_cli(root, params=_params(root, clip_checkpoint=str(root / "no_clip.pt")))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"evaluate.clip_checkpoint {root / 'no_clip.pt'} is missing" in out.stderr


def test_spectrogram_tile_keeps_quiet_bins_visible_beside_one_loud_bin() -> None:
    from pipeline.sample_grid import spectrogram_tile
    spec = torch.linspace(-1, 1, 40 * 50).view(1, 40, 50)
    spec[0, 3, 7] = 1e4  # one loud bin: a min-max scale would push every other pixel to black
    tile = spectrogram_tile(spec, 32)
    assert tile.shape == (3, 32, 32)
    assert 0.3 < float(tile.median()) < 0.7 and float(tile.min()) >= 0 and float(tile.max()) <= 1
