"""Unsupervised foreground: clip scenes by temporal median, foreground shares, the generator's corpus filter."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.foreground import clip_scenes, foreground, foreground_share, swap_background
from pipeline.params import GeneratorParams
from stages.train_generator import _foreground_masks


def two_clips() -> tuple[np.ndarray, list[str], np.ndarray]:
    """Two clips of 6 frames on their own noisy gradient; a 16x16 square shows in frames 1-2 of each."""
    rng = np.random.default_rng(0)
    frames, ids, shown = [], [], []
    for c in range(2):
        scene = np.clip(np.linspace(30, 120, 32)[None, :, None] + rng.normal(0, 4, (32, 32, 3)) + 40 * c, 0, 255)
        for t in range(6):
            f = scene.copy()
            if t in (1, 2):
                f[8:24, 8:24] = (230, 20, 20)
            frames.append(f.astype(np.uint8))
            ids.append(f"clip{c}")
            shown.append(t in (1, 2))
    return np.stack(frames), ids, np.array(shown)


def test_the_median_scene_leaves_out_what_shows_in_a_minority_of_frames() -> None:
    frames, _, shown = two_clips()
    scenes = clip_scenes(frames, np.repeat([0, 1], 6))
    assert scenes.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(scenes[0], np.median(frames[:6][~shown[:6]], axis=0).round().astype(np.uint8))


def test_foreground_share_is_the_object_area_and_zero_without_it() -> None:
    frames, _, shown = two_clips()
    share = foreground_share(frames, np.repeat([0, 1], 6))
    grown = 18 * 18 / (32 * 32)  # the 16x16 square grown by one pixel on each side
    np.testing.assert_allclose(share[shown], grown, atol=0.01)
    assert (share[~shown] == 0).all()


def test_the_generator_corpus_keeps_frames_with_a_foreground() -> None:
    frames, ids, shown = two_clips()
    share = GeneratorParams(min_foreground=0.1)
    kept, alpha = _foreground_masks(frames, ids, share)
    np.testing.assert_array_equal(frames[kept], frames[shown])
    assert alpha is None  # masks only for composites
    scattered = ids[:3] + ids[6:9] + ids[3:6] + ids[9:]
    assert len(_foreground_masks(frames, scattered, share)[0]) == 12  # scattered rows: all
    with pytest.raises(ValueError, match="lower generator.min_foreground"):
        _foreground_masks(frames, ids, GeneratorParams(min_foreground=0.9))


def test_background_swap_keeps_the_foreground_and_takes_another_clips_scene() -> None:
    scenes = torch.stack([torch.full((3, 8, 8), v) for v in (0.1, 0.4, 0.7)])  # three flat clip scenes
    x = scenes[torch.tensor([0, 1])].clone()
    x[:, :, 2:5, 2:5] = 1.0  # a white square in both frames
    own = torch.tensor([0, 1])
    mask = foreground(x, scenes[own], 0.1, grow=0)
    assert mask.sum() == 2 * 9
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(swap_background(x, mask, scenes, own, 0.0, gen), x)
    for _ in range(5):
        y = swap_background(x, mask, scenes, own, 1.0, gen)
        assert torch.equal(y[:, :, 2:5, 2:5], x[:, :, 2:5, 2:5])
        back = y[:, 0, 0, 0]
        assert all(torch.isclose(b, scenes[:, 0, 0, 0]).sum() == 1 and not torch.isclose(b, scenes[o, 0, 0, 0])
                   for b, o in zip(back, own))
        assert torch.equal(y * (1 - mask), back.view(2, 1, 1, 1) * (1 - mask).expand_as(y))
