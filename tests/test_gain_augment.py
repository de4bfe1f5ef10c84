"""Gain augmentation (pipeline/gain_augment.py): the spectrogram of a scaled waveform, the level direction."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline import gain_augment as ga
from pipeline.params import AudioEncoderParams, ParamsError, SpectrogramParams
from pipeline.spectrogram import logmel_spectrogram

KW = dict(n_mels=32, n_frames=20, n_fft=512, hop_length=320, norm="none")


def quiet_waves() -> torch.Tensor:
    """Four clips at the world's loudness (peaks 0.02-0.3, nothing clipped at x4)."""
    t = torch.arange(16000) / 16000
    gen = torch.Generator().manual_seed(0)
    rows = [a * torch.sin(2 * torch.pi * f * t) + 0.005 * (torch.rand(16000, generator=gen) - 0.5)
            for a, f in ((0.02, 300), (0.05, 800), (0.1, 1500), (0.2, 3000))]
    return torch.stack(rows)


@pytest.mark.parametrize("eps", [1e-7, 1e-12])
def test_scaling_the_power_is_the_spectrogram_of_the_scaled_wave(eps: float) -> None:
    x = quiet_waves()
    g = torch.tensor([0.25, 0.5, 2.0, 4.0])
    spec = logmel_spectrogram(x, **KW, log_eps=eps)
    want = logmel_spectrogram(x * g[:, None], **KW, log_eps=eps)
    got = ga.scale_power(spec, 2 * g.log(), eps)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=0)
    level = ga.clip_level(spec, eps)
    torch.testing.assert_close(ga.clip_level(want, eps) - level, 2 * g.log(), atol=1e-3, rtol=0)


def test_level_direction_is_fit_within_clusters_not_between_them() -> None:
    """Two far-apart groups (sound types), the louder group elsewhere in feature space: the within-cluster
    slope finds the planted size direction; a plain regression over all pairs would mostly find the groups."""
    gen = torch.Generator().manual_seed(0)
    d = 16
    centres = F.normalize(torch.randn(2, d, generator=gen), dim=1) * 3
    size_dir = F.normalize(torch.randn(d, generator=gen), dim=0)
    group = torch.arange(200) % 2
    level = torch.randn(200, generator=gen) + 4.0 * group  # group 1 is far louder
    feats = centres[group] + 0.05 * level[:, None] * size_dir + 0.01 * torch.randn(200, d, generator=gen)
    direction, share = ga.level_direction(level, feats, clusters=2)
    assert F.cosine_similarity(direction, _tangent(feats, size_dir), dim=0) > 0.9
    naive = ((feats - feats.mean(0)) * (level - level.mean())[:, None]).sum(0)
    assert F.cosine_similarity(naive, centres[1] - centres[0], dim=0) > 0.9  # what clusters keep out
    assert 0.0 < share < 0.3  # most of the level variance lies between the groups
    with pytest.raises(ValueError, match="do not vary"):
        ga.level_direction(torch.ones(200), feats, clusters=2)


def _tangent(feats: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``direction`` as seen on the unit sphere near ``feats`` (the fit works on unit features)."""
    f = F.normalize(feats, dim=1)
    return (direction[None] / feats.norm(dim=1, keepdim=True) - f * (f @ direction)[:, None]
            / feats.norm(dim=1, keepdim=True)).mean(0)


def test_gain_shift_moves_louder_rows_along_the_direction() -> None:
    x = quiet_waves()
    spec = logmel_spectrogram(x, **KW, log_eps=1e-12)
    feats = 19 * F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), dim=1)  # raw norms
    direction = F.normalize(torch.ones(8), dim=0) * 0.05
    off = ga.GainShift(direction, p=0.0, low=0.25, high=4.0, eps=1e-12)
    s0, f0 = off(spec, feats)
    assert torch.equal(s0, spec) and torch.equal(f0, feats)
    torch.manual_seed(0)
    s1, f1 = ga.GainShift(direction, p=1.0, low=0.25, high=4.0, eps=1e-12)(spec, feats)
    moved = ga.clip_level(s1, 1e-12) - ga.clip_level(spec, 1e-12)  # 2 log g per row
    assert bool((moved.abs() > 1e-3).all()) and bool((moved.abs() <= 2 * math.log(4) + 1e-3).all())
    torch.testing.assert_close(f1.norm(dim=1), feats.norm(dim=1))  # l2 / l1 targets keep their scale
    along = (F.normalize(f1, dim=1) - F.normalize(feats, dim=1)) @ direction  # louder: along it, quieter: against
    assert bool((torch.sign(along) == torch.sign(moved)).all())


def test_waveform_gains_equal_spectrogram_gains_until_the_wave_clips() -> None:
    """Same draws, same rows: without clipping the two ways agree (spectrograms and moved targets); a loud
    row clipped at full scale gains less level, and its target moves less."""
    from functools import partial
    spec_fn = partial(logmel_spectrogram, **KW, log_eps=1e-12)
    feats = 19 * F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    shift = ga.GainShift(F.normalize(torch.ones(8), dim=0) * 0.05, p=1.0, low=2.0, high=4.0, eps=1e-12)
    x = quiet_waves()
    torch.manual_seed(0)
    s_spec, f_spec = shift(spec_fn(x), feats)
    torch.manual_seed(0)
    s_wave, f_wave = shift.waveform(x, feats, spec_fn)
    torch.testing.assert_close(s_wave, s_spec, atol=2e-4, rtol=0)
    torch.testing.assert_close(f_wave, f_spec, atol=1e-4, rtol=0)
    loud = x * torch.tensor([1.0, 1.0, 1.0, 4.0])[:, None]  # peak 0.8: x2 .. x4 clips it
    torch.manual_seed(0)
    s_loud, f_loud = shift.waveform(loud, feats, spec_fn)
    torch.manual_seed(0)
    s_exact, f_exact = shift(spec_fn(loud), feats)  # what an unclipped gain would give
    assert float((s_loud - s_exact)[3].abs().max()) > 0.5 and torch.equal(f_loud[:3], f_wave[:3])
    gained = ga.clip_level(s_loud, 1e-12)[3] - ga.clip_level(spec_fn(loud), 1e-12)[3]
    nominal = ga.clip_level(s_exact, 1e-12)[3] - ga.clip_level(spec_fn(loud), 1e-12)[3]
    assert 0 < float(gained) < float(nominal) - 0.3
    base = F.normalize(feats[3], dim=0)
    assert 0 < float((F.normalize(f_loud[3], dim=0) - base).norm()) < float((F.normalize(f_exact[3], dim=0) - base).norm())


def test_gain_params_are_checked() -> None:
    none = SpectrogramParams(norm="none")
    assert AudioEncoderParams(gain_p=0.5, spectrogram=none).gain_range == (0.25, 4.0)
    with pytest.raises(ParamsError, match="needs spectrogram.norm: none"):
        AudioEncoderParams(gain_p=0.5)
    with pytest.raises(ParamsError, match="gain_p"):
        AudioEncoderParams(gain_p=1.5, spectrogram=none)
    with pytest.raises(ParamsError, match="gain_range"):
        AudioEncoderParams(gain_p=0.5, gain_range=(4.0, 0.25), spectrogram=none)
    with pytest.raises(ParamsError, match="gain_scale"):
        AudioEncoderParams(gain_p=0.5, gain_scale=0.0, spectrogram=none)
    with pytest.raises(ParamsError, match="log_eps"):
        SpectrogramParams(log_eps=0.0)
    from pipeline.strict import from_dict
    with pytest.raises(ParamsError, match="gain_on"):
        from_dict(AudioEncoderParams, {"gain_on": "mel"}, where="audio_encoder")


def test_bounded_levels_stop_a_target_at_the_pairs_range() -> None:
    """``levels``: the target moves with the level up to the loudest / quietest training pair, no further;
    a row already past the bound keeps its place (not moved back) unless the gain takes it inward."""
    shift = ga.GainShift(torch.ones(2), p=1.0, low=0.25, high=4.0, eps=1e-12, levels=(-2.0, 3.0))
    before = torch.tensor([0.0, 0.0, 2.0, -1.0, 4.0, 4.0, -3.0])
    after = torch.tensor([1.0, 5.0, 4.0, -5.0, 6.0, 2.0, -4.0])
    torch.testing.assert_close(shift.bounded(before, after), torch.tensor([1.0, 3.0, 1.0, -1.0, 0.0, -2.0, 0.0]))
    free = ga.GainShift(torch.ones(2), p=1.0, low=0.25, high=4.0, eps=1e-12)
    torch.testing.assert_close(free.bounded(before, after), after - before)


@pytest.mark.parametrize("way", ["spectrogram", "waveform"])
def test_bounded_gain_shift_moves_targets_less_past_the_loudest_pair(way: str) -> None:
    """Same draws with and without bounds: the spectrograms are the same; rows whose played level passes
    the bound get a smaller target move, the others the same one."""
    from functools import partial
    spec_fn = partial(logmel_spectrogram, **KW, log_eps=1e-12)
    x = quiet_waves()
    level = ga.clip_level(spec_fn(x), 1e-12)
    feats = 19 * F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    direction = F.normalize(torch.ones(8), dim=0) * 0.05
    loudest = float(level.max())
    kw = dict(p=1.0, low=2.0, high=4.0, eps=1e-12)  # every row louder by 2 log 2 .. 2 log 4
    play = (lambda s: s(spec_fn(x), feats)) if way == "spectrogram" else (lambda s: s.waveform(x, feats, spec_fn))
    torch.manual_seed(0)
    s_free, f_free = play(ga.GainShift(direction, **kw))
    torch.manual_seed(0)
    s_cap, f_cap = play(ga.GainShift(direction, **kw, levels=(float(level.min()), loudest)))
    torch.testing.assert_close(s_cap, s_free)
    base = F.normalize(feats, dim=1)
    move_free = (F.normalize(f_free, dim=1) - base).norm(dim=1)
    move_cap = (F.normalize(f_cap, dim=1) - base).norm(dim=1)
    loudest_row = int(level.argmax())
    assert float(move_cap[loudest_row]) < 1e-6 < float(move_free[loudest_row])  # already the loudest: stays
    assert bool((move_cap <= move_free + 1e-6).all()) and float(move_cap.sum()) > 0
    inside = level + 2 * math.log(4.0) < loudest - 0.1  # played at most 4x, still quieter than the loudest
    assert bool(inside.any())
    torch.testing.assert_close(move_cap[inside], move_free[inside], atol=1e-5, rtol=0)
