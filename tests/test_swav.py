"""SwAV training of the image encoder: Sinkhorn codes, swapped loss, the stage, resume, published weights."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from conftest import compat_file
from image_corpus import write_clip_corpus, write_corpus

from models.checkpoint import CheckpointMismatchError
from models.image_encoder import ImageEncoder, ImageEncoderConfig
from pipeline import metrics, swav
from pipeline.augment import box_crop, diff_augment, hue_shuffle, mask_boxes, random_resized_crop
from pipeline.foreground import shuffle_foreground
from pipeline.image_store import clip_groups, read_images
from pipeline.params import ImageEncoderParams, ParamsError
from stages import train_image_encoder as stage

TINY = ImageEncoderParams(lr=1e-3, width=2, hidden_dim=16, proj_dim=8, n_prototypes=6, steps=4, batch=8, crop_size=32,
                          small_crops=1, small_size=16, freeze_prototypes_steps=1, knn_k=3)


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path)


def test_sinkhorn_gives_equal_partition_codes() -> None:
    scores = torch.randn(12, 4, generator=torch.Generator().manual_seed(0)) * 0.1
    scores[:, 0] += 0.3  # every sample prefers prototype 0 ...
    assert (scores.argmax(1) == 0).all()
    q = swav.sinkhorn(scores, epsilon=0.1, iters=100)
    assert torch.allclose(q.sum(1), torch.ones(12), atol=1e-4)
    assert torch.allclose(q.sum(0), torch.full((4,), 3.0), atol=1e-2)  # ... but codes share them out


def test_swapped_loss_is_lower_when_views_agree() -> None:
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(16, 8), dim=1) * 1.0
    agree = swav.swapped_loss([a * 5, a * 5, a * 5], 2, 0.1, 0.05, 3)
    shuffled = swav.swapped_loss([a * 5, a[torch.randperm(16)] * 5, a * 5], 2, 0.1, 0.05, 3)
    assert agree < shuffled


def test_queued_scores_change_the_codes_not_the_loss_terms() -> None:
    torch.manual_seed(1)
    a = torch.rand(4, 6) * 2 - 1  # scores are cosines
    queue = [torch.rand(32, 6) * 2 - 1, torch.rand(32, 6) * 2 - 1]
    plain = swav.swapped_loss([a, a, a], 2, 0.1, 0.05, 3)
    queued = swav.swapped_loss([a, a, a], 2, 0.1, 0.05, 3, queue)
    assert torch.isfinite(queued) and not torch.isclose(plain, queued)
    with pytest.raises(RuntimeError):
        swav.swapped_loss([a, a, a], 2, 0.1, 0.05, 3, [torch.randn(8, 5)] * 2)


def test_nt_xent_by_hand_at_chance_and_when_views_agree():
    same = torch.ones(4, 3)
    assert torch.isclose(swav.nt_xent(same, same, 0.5), torch.tensor(math.log(7)))  # all 2B - 1 rows alike
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 6), torch.randn(5, 6)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    terms = []
    for i in range(10):
        others = [j for j in range(10) if j != i]
        logits = torch.stack([z[i] @ z[j] / 0.3 for j in others])
        terms.append(-(logits[others.index((i + 5) % 10)] - torch.logsumexp(logits, 0)))
    assert torch.isclose(swav.nt_xent(z1, z2, 0.3), torch.stack(terms).mean(), atol=1e-6)
    eye = torch.eye(8)
    assert swav.nt_xent(eye, eye, 0.1) < 1e-3 < swav.nt_xent(eye, eye.roll(1, 0), 0.1)
    with pytest.raises(ValueError, match="temperature must be positive"):
        swav.nt_xent(z1, z2, 0.0)
    with pytest.raises(ValueError, match="two \\[B, D\\] views"):
        swav.nt_xent(z1, z2[:3], 0.3)



def test_nt_xent_hard_negatives_by_hand():
    """beta > 0: each negative's exp(logit) is weighted by (2B - 2) softmax(beta x logit) over the negatives."""
    torch.manual_seed(1)
    z1, z2 = torch.randn(4, 6), torch.randn(4, 6)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    terms = []
    for i in range(8):
        pos = (i + 4) % 8
        neg = torch.stack([z[i] @ z[j] / 0.3 for j in range(8) if j not in (i, pos)])
        w = 6 * torch.softmax(2.0 * neg, 0)
        logit_pos = z[i] @ z[pos] / 0.3
        terms.append(-(logit_pos - torch.log(logit_pos.exp() + (w * neg.exp()).sum())))
    assert torch.isclose(swav.nt_xent(z1, z2, 0.3, hard_negatives=2.0), torch.stack(terms).mean(), atol=1e-5)
    same = torch.ones(4, 3)  # all negatives alike: the weights are all 1, the plain loss
    assert torch.isclose(swav.nt_xent(same, same, 0.5, hard_negatives=3.0), torch.tensor(math.log(7)))
    # a close negative costs more once it is weighted up
    assert swav.nt_xent(z1, z2, 0.3, hard_negatives=2.0) > swav.nt_xent(z1, z2, 0.3)
    with pytest.raises(ParamsError, match="image_encoder.hard_negatives: expected >= 0, got -1"):
        dataclasses.replace(TINY, hard_negatives=-1.0)

def test_augmentations_keep_shapes_and_ranges() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 32, 32)
    assert random_resized_crop(x, 16, (0.2, 0.5), g).shape == (5, 3, 16, 16)
    perm = hue_shuffle(x, 1.0, 0.0, g)
    assert torch.allclose(perm.sum(1), x.sum(1)) and not torch.equal(perm, x)
    y = diff_augment(x * 2 - 1, "translation,color,cutout", g)
    assert y.shape == x.shape and not torch.equal(y, x * 2 - 1)
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(x, "rotate", g)


def _bar_angle(img: torch.Tensor) -> float:
    """Orientation (degrees, mod 180) of the bright pixels' principal axis in ``img`` [3, H, W]."""
    ys, xs = torch.nonzero(img[0] > 0.5, as_tuple=True)
    pts = torch.stack([xs, ys], 1).float()
    _, vecs = torch.linalg.eigh(torch.cov(pts.T))
    return math.degrees(math.atan2(float(vecs[1, 1]), float(vecs[0, 1]))) % 180


def test_rotated_crops_turn_the_content() -> None:
    bar = torch.zeros(64, 3, 64, 64)
    bar[:, :, 12:52, 29:35] = 1.0  # a vertical bar: 90 degrees
    plain = random_resized_crop(bar, 64, (1.0, 1.0), torch.Generator().manual_seed(0), ratio=(1.0, 1.0))
    assert all(abs(_bar_angle(v) - 90) < 3 for v in plain)
    g = torch.Generator().manual_seed(0)
    turned = random_resized_crop(bar, 64, (1.0, 1.0), g, ratio=(1.0, 1.0), rotate=90)
    angles = torch.tensor([_bar_angle(v) for v in turned])
    off = torch.minimum((angles - 90).abs(), 180 - (angles - 90).abs())
    assert off.max() > 45 and off.std() > 15  # turned, by different angles
    area = turned[:, 0].gt(0.5).sum((1, 2)).float()
    assert (area / plain[:, 0].gt(0.5).sum((1, 2)).float() - 1).abs().max() < 0.15  # a turn, not a squash
    with pytest.raises(ParamsError, match="image_encoder.rotate: expected degrees in \\[0, 180\\], got 200"):
        dataclasses.replace(TINY, rotate=200.0)


def test_mask_boxes_and_box_crop_zoom_onto_the_foreground() -> None:
    mask = torch.zeros(3, 1, 64, 64)
    mask[0, 0, 8:24, 40:48] = 1  # a 16 x 8 box left of centre
    mask[1, 0, 0:64, 0:64] = 1   # everything
    boxes = mask_boxes(mask)     # mask[2] is empty: the whole image
    assert torch.allclose(boxes[0], torch.tensor([(40 + 48) / 64 - 1, (8 + 24) / 64 - 1, 8 / 64, 16 / 64]))
    assert torch.allclose(boxes[1], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.allclose(boxes[2], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    x = torch.zeros(3, 3, 64, 64)
    x[:, 0] = mask[:, 0]  # the foreground painted red
    z = box_crop(x, boxes, 32, torch.Generator().manual_seed(0), margin=(1.5, 1.5))
    assert z.shape == (3, 3, 32, 32)
    # zoomed: the 16 x 8 source (3% of the frame) fills 16 / 24 x 8 / 24 = 22% of the 24 px view
    assert 0.15 < float(z[0, 0].gt(0.5).float().mean()) < 0.3 and float(x[0, 0].mean()) < 0.04
    assert float(z[1, 0].mean()) > 0.99  # the whole frame is foreground: the zoom keeps it all
    with pytest.raises(ParamsError, match="image_encoder.fg_zoom: expected a probability in \\[0, 1\\], got 2"):
        dataclasses.replace(TINY, fg_zoom=2.0)


def test_knn_and_centroids() -> None:
    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    query = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.2, 1.0]]), dim=1)
    assert metrics.knn_predict(bank, labels, query, 2, 2).tolist() == [0, 1]
    cents = metrics.centroids(bank, labels, 2)
    assert metrics.nearest_centroid(query, cents).tolist() == [0, 1]
    with pytest.raises(ValueError, match="no labelled"):
        metrics.centroids(bank, labels, 3)


def test_stage_trains_writes_checkpoint_and_report(corpus: Path) -> None:
    out, report = corpus / "enc.pt", corpus / "enc.json"
    summary = stage.run(TINY, images=corpus, out=out, report=report)
    blob = torch.load(out, weights_only=True)
    assert set(blob) == {"model", "config", "step", "input_size"} and blob["step"] == 4
    assert blob["config"]["width"] == 2 and blob["input_size"] == 32
    model, size = stage.load_encoder(out)
    assert size == 32 and torch.allclose(model.prototypes.weight.norm(dim=1), torch.ones(6), atol=1e-5)
    torch.manual_seed(TINY.seed)
    fresh = ImageEncoder(model.config)
    assert not torch.equal(fresh.conv1.weight, model.conv1.weight)  # it trained
    saved, timed = json.loads(report.read_text()), json.loads(report.with_name("enc.timings.json").read_text())
    assert saved == {k: v for k, v in summary.items() if k not in ("seconds", "images_per_s")}  # pipeline.timings
    assert timed == {"seconds": summary["seconds"], "images_per_s": summary["images_per_s"]}
    assert summary["bank"] == 12 and summary["queries"] == 12
    assert 0.0 <= summary["knn_acc"] <= 1.0 and summary["random_init"]["knn_acc"] is not None
    assert summary["projection_spread"] > 0.0


def test_stage_resumes_from_its_resume_file(corpus: Path) -> None:
    out = corpus / "enc.pt"
    stage.run(TINY, images=corpus, out=out, report=corpus / "r.json")
    first = torch.load(out, weights_only=True)
    resume = out.with_name(out.name + ".resume")
    assert not resume.exists()
    blob = dict(first, step=3)
    torch.save(blob, resume)
    stage.run(TINY, images=corpus, out=out, report=corpus / "r.json")  # one step from step 3
    again = torch.load(out, weights_only=True)
    assert not resume.exists() and again["step"] == 4
    assert not torch.equal(again["model"]["conv1.weight"], first["model"]["conv1.weight"])


def test_stage_starts_over_from_an_unreadable_resume_file(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "enc.pt"
    resume = out.with_name(out.name + ".resume")
    resume.write_bytes(b"")  # an empty file, e.g. a disk that filled up
    stage.run(TINY, images=corpus, out=out, report=tmp_path / "r.json")
    assert not resume.exists() and torch.load(out, weights_only=True)["step"] == TINY.steps


def test_published_swav_checkpoint_skips_training(corpus: Path, tmp_path: Path) -> None:
    keys = json.loads(compat_file("official_checkpoint_keys.json").read_text())["swav_800ep_pretrain.pth.tar"]
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.tensor(1) if k.endswith("num_batches_tracked") else
                 torch.rand(s, generator=g) + 0.5 if k.endswith("running_var") else torch.randn(s, generator=g) * 0.02)
             for k, s in keys}
    torch.save(state, tmp_path / "swav.pth.tar")
    p = ImageEncoderParams(checkpoint=str(tmp_path / "swav.pth.tar"))
    summary = stage.run(p, images=corpus, out=tmp_path / "enc.pt", report=tmp_path / "r.json")
    assert summary["trained"] is False and summary["feature_dim"] == 2048 and summary["input_size"] == 224
    model, _ = stage.load_encoder(tmp_path / "enc.pt")
    assert torch.equal(model.layer4[2].conv3.weight, state["module.layer4.2.conv3.weight"])
    del state["module.prototypes.weight"]
    torch.save(state, tmp_path / "bad.pth.tar")
    with pytest.raises(CheckpointMismatchError, match="prototypes.weight"):
        stage.run(ImageEncoderParams(checkpoint=str(tmp_path / "bad.pth.tar")), images=corpus,
                  out=tmp_path / "enc2.pt", report=tmp_path / "r2.json")


def test_projection_spread_flags_a_collapsed_embedding(corpus: Path) -> None:
    torch.manual_seed(0)
    model = ImageEncoder(stage.ImageEncoderConfig(width=2, hidden_dim=16, proj_dim=8, n_prototypes=6))
    assert stage.projection_spread(model, 32, corpus) > 0.05
    with torch.no_grad():  # the collapse seen on the world: the last bias dominates, every z is the same
        model.projection_head[3].weight.zero_()
        model.projection_head[3].bias.fill_(1.0)
    assert stage.projection_spread(model, 32, corpus) < 1e-6


def test_health_needs_val_and_test_frames(tmp_path: Path) -> None:
    root = write_corpus(tmp_path, n_eval=0)
    torch.manual_seed(0)
    model = ImageEncoder(stage.ImageEncoderConfig(width=2, hidden_dim=16, proj_dim=8, n_prototypes=6)).eval()
    assert stage.health(model, 32, root, 3) == {"knn_acc": None, "centroid_acc": None, "bank": 0, "queries": 0}
    full = stage.health(model, 32, write_corpus(tmp_path / "b"), 3)
    assert full["bank"] == 12 and full["queries"] == 12 and full["classes"] == ["blue", "red"]


def test_grouped_batches_take_whole_groups_of_frames_from_one_clip() -> None:
    groups = stage.clip_groups(["a"] * 5 + ["b"] * 3 + ["c"] * 7)
    assert groups is not None and groups.tolist() == [0] * 5 + [1] * 3 + [2] * 7
    r = swav.SwavRecipe(steps=1, batch=12, lr=0.1, weight_decay=0.0, temperature=0.1, epsilon=0.05,
                        sinkhorn_iters=3, crop_size=16, small_crops=0, small_size=8,
                        freeze_prototypes_steps=0, seed=0, group_size=4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = swav.batch_indices(groups, r, gen, len(groups))
        assert len(idx) == 12 and list(idx) == sorted(idx)
        counts = {int(g): int((groups[idx] == g).sum()) for g in set(groups[idx].tolist())}
        assert all(c % 4 == 0 for c in counts.values())  # whole groups of 4 frames per drawn clip
    assert stage.clip_groups(["a", "b", "a"]) is None  # a clip's rows scattered: no grouping
    free = swav.batch_indices(None, r, gen, 15)
    assert len(free) == 12 and free.max() < 15


def test_amp_is_ignored_on_cpu_and_the_report_gives_throughput(corpus: Path) -> None:
    """``amp: true`` on the CPU trains exactly as ``amp: false``; the report says where it ran and how fast."""
    import dataclasses

    runs = []
    for amp in (False, True):
        p = dataclasses.replace(TINY, device="cpu", amp=amp, queue=16)
        summary = stage.run(p, images=corpus, out=corpus / f"enc{amp}.pt", report=corpus / f"r{amp}.json")
        assert summary["device"] == "cpu" and summary["amp"] is False and summary["images_per_s"] > 0
        runs.append(torch.load(corpus / f"enc{amp}.pt", weights_only=True)["model"])
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_sentence(corpus: Path) -> None:
    import dataclasses

    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        stage.run(dataclasses.replace(TINY, device="cuda"), images=corpus, out=corpus / "e.pt", report=corpus / "r.json")


def test_foreground_corpus_filters_frames_and_gives_scenes_for_the_swap(tmp_path: Path) -> None:
    frames, table = read_images(write_clip_corpus(tmp_path), "train")
    groups = clip_groups(table.column("video_id").to_pylist())
    cpu = torch.device("cpu")
    same = swav.foreground_corpus(frames, groups, stage.recipe(TINY), cpu)
    assert same[0] is frames and same[2] is None
    kept, kept_groups, scenes = swav.foreground_corpus(
        frames, groups, stage.recipe(dataclasses.replace(TINY, min_foreground=0.1)), cpu)
    assert len(kept) == 12 and scenes is None  # frames 1-2 of each of the 6 clips show the square
    assert kept_groups.tolist() == sorted(list(range(6)) * 2)
    _, _, scenes = swav.foreground_corpus(frames, groups, stage.recipe(dataclasses.replace(TINY, bg_swap=0.5)), cpu)
    assert scenes.shape == (6, 3, 32, 32) and torch.allclose(scenes[0], scenes[0, :, :1, :1].expand(3, 32, 32))
    with pytest.raises(ValueError, match="need the clip of each frame"):
        swav.foreground_corpus(frames, None, stage.recipe(dataclasses.replace(TINY, bg_swap=0.5)), cpu)
    with pytest.raises(ValueError, match="lower image_encoder.min_foreground"):
        swav.foreground_corpus(frames, groups, stage.recipe(dataclasses.replace(TINY, min_foreground=0.5)), cpu)


def test_nt_xent_takes_two_views_and_trains_with_the_swap_deterministically(tmp_path: Path) -> None:
    folder = write_clip_corpus(tmp_path)
    p = dataclasses.replace(TINY, objective="nt_xent", bg_swap=1.0, min_foreground=0.1, small_crops=2)
    x = torch.rand(3, 3, 32, 32)
    assert len(swav.views(x, stage.recipe(p), torch.Generator())) == 2
    assert len(swav.views(x, stage.recipe(dataclasses.replace(p, objective="swav")), torch.Generator())) == 4
    first = stage.run(p, images=folder, out=tmp_path / "a.pt", report=tmp_path / "a.json")
    stage.run(p, images=folder, out=tmp_path / "b.pt", report=tmp_path / "b.json")
    a, b = (torch.load(tmp_path / f, weights_only=True)["model"] for f in ("a.pt", "b.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(p.seed)
    assert not torch.equal(ImageEncoder(stage.load_encoder(tmp_path / "a.pt")[0].config).conv1.weight,
                           a["conv1.weight"])  # it trained
    assert first["knn_acc"] is not None and first["projection_spread"] > 0.0


def test_fg_zoom_trains_without_the_swap_and_changes_the_run(tmp_path: Path) -> None:
    folder = write_clip_corpus(tmp_path)
    p = dataclasses.replace(TINY, objective="nt_xent", bg_swap=0.0, min_foreground=0.1)
    stage.run(p, images=folder, out=tmp_path / "a.pt", report=tmp_path / "a.json")
    stage.run(dataclasses.replace(p, fg_zoom=1.0), images=folder, out=tmp_path / "z.pt", report=tmp_path / "z.json")
    a, z = (torch.load(tmp_path / f, weights_only=True)["model"] for f in ("a.pt", "z.pt"))
    assert torch.isfinite(z["conv1.weight"]).all() and not torch.equal(a["conv1.weight"], z["conv1.weight"])


def _striped_square(solid: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A 16 px blue square (dark stripes every 4 rows unless ``solid``) on grey: ([1, 3, 32, 32], mask)."""
    x = torch.full((1, 3, 32, 32), 0.4)
    x[:, :, 8:24, 8:24] = torch.tensor([0.1, 0.2, 0.9]).view(1, 3, 1, 1)
    if not solid:
        x[:, :, 8:24:4, 8:24] *= 0.3
        x[:, :, 9:24:4, 8:24] *= 0.3
    mask = torch.zeros(1, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1
    return x, mask


def test_shuffle_foreground_keeps_colours_outline_and_place_and_loses_the_texture() -> None:
    x, mask = _striped_square()
    out, ok = shuffle_foreground(x, mask, torch.Generator().manual_seed(0))
    assert ok.tolist() == [True] and out.shape == x.shape
    inside = mask[0, 0] > 0
    assert torch.equal(out[0][:, ~inside], x[0][:, ~inside])  # the scene is untouched
    same_values = lambda a, b: torch.equal(a.sort(dim=1).values, b.sort(dim=1).values)  # noqa: E731
    assert same_values(out[0][:, inside], x[0][:, inside])  # the same pixels, moved
    rows = out[0, 2, 8:24, 8:24]  # the stripes are gone: each row now mixes dark and bright pixels
    assert (rows.std(dim=1) > 0.1).float().mean() > 0.8 and (x[0, 2, 8:24, 8:24].std(dim=1) < 1e-6).all()
    solid, solid_mask = _striped_square(solid=True)
    same, ok = shuffle_foreground(solid, solid_mask, torch.Generator())
    assert ok.tolist() == [False] and torch.equal(same, solid)  # nothing to lose: not a negative
    empty, ok = shuffle_foreground(x, torch.zeros_like(mask), torch.Generator())
    assert ok.tolist() == [False] and torch.equal(empty, x)


def test_nt_xent_extra_negatives_by_hand() -> None:
    torch.manual_seed(2)
    z1, z2, extra = torch.randn(4, 6), torch.randn(4, 6), torch.randn(3, 6)
    z, e = F.normalize(torch.cat([z1, z2]), dim=1), F.normalize(extra, dim=1)
    terms = []
    for i in range(8):
        others = [z[j] for j in range(8) if j != i] + list(e)
        logits = torch.stack([z[i] @ o / 0.3 for o in others])
        terms.append(-(logits[[j for j in range(8) if j != i].index((i + 4) % 8)] - torch.logsumexp(logits, 0)))
    assert torch.isclose(swav.nt_xent(z1, z2, 0.3, extra=extra), torch.stack(terms).mean(), atol=1e-6)
    assert torch.equal(swav.nt_xent(z1, z2, 0.3, extra=extra[:0]), swav.nt_xent(z1, z2, 0.3))
    eye = torch.eye(8)  # a negative equal to each anchor halves its positive's share; far ones cost nothing
    assert torch.isclose(swav.nt_xent(eye, eye, 0.1, extra=eye), torch.tensor(math.log(2)), atol=1e-3)
    assert swav.nt_xent(eye, eye, 0.1, extra=-eye) < 1e-3
    hard = swav.nt_xent(z1, z2, 0.3, hard_negatives=1.0, extra=extra)
    assert torch.isfinite(hard) and not torch.isclose(hard, swav.nt_xent(z1, z2, 0.3, extra=extra))


def test_texture_negatives_leave_the_batchnorm_statistics_and_need_nt_xent() -> None:
    p = dataclasses.replace(TINY, objective="nt_xent", bg_swap=1.0, texture_negatives=True)
    torch.manual_seed(0)
    model = ImageEncoder(ImageEncoderConfig(width=p.width, hidden_dim=p.hidden_dim, proj_dim=p.proj_dim,
                                            n_prototypes=p.n_prototypes))
    model.train()
    x, mask = _striped_square()
    x = torch.cat([x, x.flip(-1), _striped_square(solid=True)[0]])
    scenes, own, masks = torch.full((3, 3, 32, 32), 0.4), torch.tensor([0, 1, 2]), torch.cat([mask] * 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    z = swav.texture_negatives(model, x, scenes, own, masks, stage.recipe(p), torch.Generator().manual_seed(0))
    assert z.shape == (2, model.config.proj_dim)  # the striped frames only: the solid one has no texture
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" in k)
    # one textured frame is too few for BatchNorm's training mode: no negatives that step
    assert swav.texture_negatives(model, x[1:], scenes, own[1:], masks[1:], stage.recipe(p),
                                  torch.Generator()) is None
    with pytest.raises(ParamsError, match="texture_negatives: needs objective nt_xent"):
        dataclasses.replace(TINY, objective="swav", texture_negatives=True)


def test_texture_negatives_train_and_change_the_run(tmp_path: Path) -> None:
    folder = write_clip_corpus(tmp_path, stripes=True)
    p = dataclasses.replace(TINY, objective="nt_xent", bg_swap=1.0, min_foreground=0.1)
    stage.run(p, images=folder, out=tmp_path / "a.pt", report=tmp_path / "a.json")
    t = dataclasses.replace(p, texture_negatives=True)
    report = stage.run(t, images=folder, out=tmp_path / "t.pt", report=tmp_path / "t.json")
    a, t_ = (torch.load(tmp_path / f, weights_only=True)["model"] for f in ("a.pt", "t.pt"))
    assert torch.isfinite(t_["conv1.weight"]).all() and not torch.equal(a["conv1.weight"], t_["conv1.weight"])
    assert report["knn_acc"] is not None

