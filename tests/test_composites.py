"""Two-source composites and sound mixes: the mixing control taught to the evaluator, the generator and the
audio encoder (pipeline/composites.py, evaluator_data.composite, icgan composites, pipeline/mix_augment.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from image_corpus import write_clip_corpus

from pipeline import align_train, composites, evaluator_data, icgan
from pipeline.distributed import Dist
from pipeline.image_store import read_images
from pipeline.mix_augment import SoundMix
from pipeline.params import AudioEncoderParams, EvaluatorParams, GeneratorParams, ParamsError
from stages import train_evaluator, train_generator
from tests.eval_setup import write_world


def test_frame_masks_find_what_moved_into_the_clip(tmp_path: Path) -> None:
    """Clip corpus: each clip's square shows in frames 1-2 only, so the median scene leaves it out."""
    frames, table = read_images(write_clip_corpus(tmp_path, clips=3, frames=6), "train")
    groups = np.repeat(np.arange(3), 6)
    masks = composites.frame_masks(frames, groups)
    assert masks.shape == (18, 32, 32) and masks.dtype == bool
    shown = np.zeros(18, bool)
    shown[[1, 2, 7, 8, 13, 14]] = True
    assert not masks[~shown].any()
    # the 16 x 16 square, grown by a pixel (clipped at the frame's edge)
    assert all(256 <= masks[i].sum() <= 18 * 18 for i in np.flatnonzero(shown))


def test_paste_lays_the_top_frames_foreground_over_the_base() -> None:
    base, top = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    alpha = torch.zeros(1, 1, 4, 4)
    alpha[..., :2, :2] = 1.0
    out = composites.paste(base, top, alpha)
    assert out[..., :2, :2].eq(1).all() and out.sum() == 12


def test_apart_moves_the_second_foreground_to_the_farthest_quadrant() -> None:
    base, alpha = torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    base[0, :, 1, 1] = 1  # top left -> the second source goes to the bottom right
    base[1, :, 6, 1] = 1  # bottom left -> top right
    alpha[:, :, 0:2, 0:2] = 1
    top = torch.arange(64.0).view(1, 1, 8, 8).repeat(2, 3, 1, 1)
    moved, a = composites.apart(top, alpha, base)
    assert torch.equal(composites.centroids(a), torch.tensor([[5.5, 5.5], [1.5, 5.5]]))
    assert a.sum() == 8 and torch.equal(moved[0, :, 5:7, 5:7], top[0, :, 0:2, 0:2])
    assert moved[0, :, :5].eq(0).all()  # what came from beyond the frame's edge is empty
    empty = composites.centroids(torch.zeros(1, 1, 8, 8))
    assert torch.equal(empty, torch.tensor([[3.5, 3.5]]))


def test_evaluator_composites_make_two_source_rows_of_distinct_one_source_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    b = 64
    labels = torch.arange(b) % 4  # class 3 is `none`
    second = torch.full((b,), -1)
    second[:4] = (labels[:4] + 1) % 3  # four real two-source rows: never changed
    sizes = torch.rand(b)
    x = torch.rand(b, 3, 8, 8) * 2 - 1
    masks = torch.zeros(b, 8, 8, dtype=torch.bool)
    masks[:, 2:5, 2:5] = True
    out, sec, size = evaluator_data.composite(x, masks, labels, second, sizes, p=1.0, none=3, gen=gen)
    made = sec != second
    assert made.sum() > b // 4  # most one-source rows find a partner of another class
    assert torch.equal(sec[:4], second[:4]) and not made[labels == 3].any()
    assert (sec[made] != labels[made]).all() and (sec[made] != 3).all()
    assert torch.isnan(size[made]).all() and torch.equal(size[~made], sizes[~made])
    assert torch.equal(out[~made], x[~made]) and torch.equal(out[made][..., :4, :], x[made][..., :4, :])
    for i in made.nonzero().flatten().tolist():  # a second-class frame's patch, moved beside the row's own
        assert any(torch.equal(out[i][..., 4:7, 4:7], x[j][..., 2:5, 2:5]) for j in range(b) if labels[j] == sec[i])
    same, sec0, _ = evaluator_data.composite(x, masks, labels, second, sizes, p=0.0, none=3, gen=gen)
    assert torch.equal(same, x) and torch.equal(sec0, second)


def test_evaluator_stage_with_composites_trains_two_source_rows(tmp_path: Path) -> None:
    write_world(tmp_path)
    paths = dict(images=tmp_path / "images", videos=tmp_path / "videos.parquet", events=tmp_path / "events.parquet")
    data = evaluator_data.load(*paths.values(), none_class=True, max_frames=0, seed=0, two_source=True, masks=True)
    assert data.train.masks is not None and data.train.masks.shape == data.train.images.shape[:3]
    assert data.train.masks[data.train.labels != 3].any(axis=(1, 2)).mean() > 0.9  # sources differ from the scene
    p = EvaluatorParams(width=4, layers=(1, 1, 1, 1), image_size=32, epochs=2, batch=32, threads=1, composites=0.5)
    summary = train_evaluator.run(p, **paths, out=tmp_path / "e.pt", report=tmp_path / "e.json",
                                  curve_csv=tmp_path / "c.csv")
    assert summary["train_frames"] == len(data.train) and (tmp_path / "e.pt").is_file()


def _trainer(composites_share: float) -> tuple[icgan.Trainer, torch.Tensor, torch.Tensor, torch.Tensor]:
    p = GeneratorParams(resolution=32, g_ch=4, d_ch=4, dim_z=16, shared_dim_feat=8, batch=16)
    g, d = train_generator.configs(p, 8)
    trainer = icgan.Trainer(g, d, icgan.GanRecipe(batch=16, composites=composites_share))
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (30, 3, 32, 32), generator=gen, dtype=torch.uint8)
    feats = F.normalize(torch.randn(30, 8, generator=gen), dim=1)
    return trainer, real, feats, icgan.neighbourhoods(feats, 1)  # k = 1: each row's real image is its own


def test_generator_composites_paste_a_second_instance_and_condition_on_both() -> None:
    trainer, real, feats, nbrs = _trainer(1.0)
    with pytest.raises(ValueError, match="generator.composites needs"):
        trainer._batch(real, feats, nbrs, torch.Generator().manual_seed(1))
    alpha = torch.zeros(30, 1, 32, 32, dtype=torch.uint8)
    alpha[..., :8, :8] = 255
    trainer.set_composites(alpha)
    gen = torch.Generator().manual_seed(1)
    inst = torch.randint(0, 30, (16,), generator=torch.Generator().manual_seed(1))
    x, h = trainer._batch(real, feats, nbrs, gen)
    base = icgan.to_unit(real[inst])
    # the second image's top-left foreground lands in the quadrant farthest from the row's own (20..28)
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[20:28, 20:28] = False
    assert torch.equal(x[..., outside], base[..., outside])
    assert torch.allclose(h.norm(dim=1), torch.ones(16))
    # each condition is the unit sum of the row's feature and the feature of the instance whose corner shows
    for i in range(16):
        j = [k for k in range(30) if torch.equal(x[i, :, 20:28, 20:28], icgan.to_unit(real[k])[:, :8, :8])][0]
        assert torch.allclose(h[i], F.normalize(feats[inst[i]] + feats[j], dim=0), atol=1e-6)


def test_generator_without_composites_draws_the_same_batches_as_before() -> None:
    trainer, real, feats, nbrs = _trainer(0.0)
    x, h = trainer._batch(real, feats, nbrs, torch.Generator().manual_seed(3))
    inst = torch.randint(0, 30, (16,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(h, feats[inst]) and torch.equal(x, icgan.to_unit(real[inst]))


def test_generator_stage_composites_need_clip_runs_and_find_foregrounds(tmp_path: Path) -> None:
    frames, table = read_images(write_clip_corpus(tmp_path, clips=3, frames=6), "train")
    ids = table.column("video_id").to_pylist()
    p = GeneratorParams(resolution=16, composites=0.5, min_foreground=0.05)
    keep, alpha = train_generator._foreground_masks(frames, ids, p)
    assert keep.tolist() == [1, 2, 7, 8, 13, 14] and alpha.shape == (6, 1, 16, 16) and alpha.dtype == torch.uint8
    assert int(alpha.max()) == 255
    keep_all, none = train_generator._foreground_masks(frames, ids, GeneratorParams())
    assert len(keep_all) == 18 and none is None
    with pytest.raises(ValueError, match="grouped by clip"):
        train_generator._foreground_masks(frames, ids[::-1][:9] + ids[:9], p)


def test_sound_mix_mixes_valid_rows_and_moves_their_targets_to_both() -> None:
    torch.manual_seed(0)
    wave, feats = torch.randn(32, 100), torch.randn(32, 8) * 5
    valid = torch.ones(32, dtype=torch.bool)
    valid[:4] = False
    torch.manual_seed(1)
    mixed, target = SoundMix(1.0)(wave, feats, valid)
    torch.manual_seed(1)
    partner = torch.randperm(32)
    made = ~torch.all(mixed == wave, dim=1)
    assert not made[:4].any() and not made[torch.isin(partner, torch.arange(4))].any() and made.sum() >= 20
    i = int(made.nonzero()[0])
    j = int(partner[i])
    assert torch.allclose(mixed[i], 0.5 * (wave[i] + wave[j]))
    want = F.normalize(F.normalize(feats[i], dim=0) + F.normalize(feats[j], dim=0), dim=0) * feats[i].norm()
    assert torch.allclose(target[i], want, atol=1e-5) and torch.equal(target[~made], feats[~made])
    same, t0 = SoundMix(0.0)(wave, feats, valid)
    assert torch.equal(same, wave) and torch.equal(t0, feats)


def test_sound_mix_on_spectrogram_batches_is_one_clear_error() -> None:
    model = torch.nn.Linear(2, 2)
    d = Dist(rank=0, world=1, device=torch.device("cpu"))
    step = align_train.Step(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.MSELoss(),
                            lambda w: w, None, d, False, mix=SoundMix(0.5))
    batch = {"spec": torch.zeros(4, 1, 2, 2), "feature": torch.zeros(4, 2), "valid": torch.ones(4, dtype=torch.bool)}
    with pytest.raises(ValueError, match="mix_p mixes waveforms"):
        step(batch)


@pytest.mark.parametrize("cls, key", [(EvaluatorParams, "composites"), (GeneratorParams, "composites"),
                                      (AudioEncoderParams, "mix_p")])
def test_shares_outside_zero_one_are_named(cls: type, key: str) -> None:
    with pytest.raises(ParamsError, match=f"{key}: expected a share in \\[0, 1\\], got 1.5"):
        cls(**{key: 1.5})
    assert getattr(cls(**{key: 0.25}), key) == 0.25 and getattr(cls(**{key: 0}), key) == 0  # the bounds are allowed
