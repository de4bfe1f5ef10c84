"""Render a planned world `Clip` into frames (uint8 (T, H, W, 3)) and a waveform (float32 (N,)).

Shapes are drawn with 2x supersampling; textures modulate brightness. Sounds are synthesised per event
(peak 0.5 x loudness) over background noise. Pure numpy, deterministic in the clip's seeds.
"""
from __future__ import annotations

import numpy as np

from pipeline.world import CLASSES, Clip

SS = 2  # supersampling factor for antialiased edges


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size * SS) + 0.5) / SS
    return np.meshgrid(c, c)  # xs, ys: (H*SS, W*SS) pixel coordinates


def _polygon(u: np.ndarray, v: np.ndarray, n: int, r: float, star: bool = False) -> np.ndarray:
    """Inside a regular n-gon (or star) of circumradius r centred at 0, in rotated coords u, v."""
    ang = np.arctan2(v, u)
    rad = np.hypot(u, v)
    sector = 2 * np.pi / n
    a = np.mod(ang, sector) - sector / 2
    if star:
        inner = 0.45 * r
        t = np.abs(a) / (sector / 2)
        return rad <= inner + (r - inner) * (1 - t) ** 1.6
    return rad * np.cos(a) <= r * np.cos(sector / 2)


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray, size: float) -> np.ndarray:
    """Boolean mask of ``shape`` with diameter ~``size`` in local (rotated, centred) coordinates."""
    r = size / 2
    if shape == "circle":
        return np.hypot(u, v) <= r
    if shape == "ring":
        d = np.hypot(u, v)
        return (d <= r) & (d >= 0.55 * r)
    if shape == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == "triangle":
        return _polygon(u, v, 3, r)
    if shape == "hexagon":
        return _polygon(u, v, 6, r)
    if shape == "diamond":
        return np.abs(u) / r + np.abs(v) / (0.65 * r) <= 1
    if shape == "star":
        return _polygon(u, v, 5, r, star=True)
    if shape == "cross":
        w = 0.3 * r
        return ((np.abs(u) <= w) & (np.abs(v) <= r)) | ((np.abs(v) <= w) & (np.abs(u) <= r))
    if shape == "heart":
        x, y = u / r * 1.2, -v / r * 1.2 + 0.25
        return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
    if shape == "moon":
        return (np.hypot(u, v) <= r) & (np.hypot(u - 0.45 * r, v) >= 0.75 * r)
    if shape == "bar":
        return (np.abs(u) <= r) & (np.abs(v) <= 0.12 * r)
    if shape == "ellipse":
        return (u / r) ** 2 + (v / (0.35 * r)) ** 2 <= 1
    if shape == "frame":
        inside = (np.abs(u) <= 0.9 * r) & (np.abs(v) <= 0.6 * r)
        return inside & ~((np.abs(u) <= 0.7 * r) & (np.abs(v) <= 0.4 * r))
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray, size: float) -> np.ndarray:
    """Brightness factor (same shape as u) for a texture, scaled to the object's size."""
    period = max(size / 4, 2.0)
    if texture == "stripes":
        return 0.8 + 0.35 * (np.sin(2 * np.pi * u / period) > 0)
    if texture == "dots":
        du, dv = np.mod(u, period) - period / 2, np.mod(v, period) - period / 2
        return np.where(np.hypot(du, dv) < period / 4, 0.55, 1.05)
    if texture == "checker":
        return np.where((np.floor(u / period) + np.floor(v / period)) % 2 == 0, 0.65, 1.1)
    return np.ones_like(u)


def _sprite(xs: np.ndarray, ys: np.ndarray, shape: str, color, x: float, y: float, size: float,
            angle: float, texture: str = "solid", shade: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One object on the supersampled grid: its mask (H*SS, W*SS) and its pixel colours (M, 3)."""
    ca, sa = np.cos(angle), np.sin(angle)
    dx, dy = xs - x, ys - y
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    mask = shape_mask(shape, u, v, size)
    light = _texture(texture, u, v, size)[mask] * shade
    return mask, np.clip(np.asarray(color, np.float32)[None, :] * light[:, None], 0, 255)


def background(clip: Clip) -> np.ndarray:
    """The clip's static background, float32 (H*SS, W*SS, 3): a linear gradient plus fixed grain."""
    xs, ys = _grid(clip.size)
    t = (np.cos(clip.bg_angle) * xs + np.sin(clip.bg_angle) * ys) / clip.size
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    a, b = (np.asarray(c, np.float32) for c in clip.bg)
    grain = np.random.default_rng(clip.seed).normal(0, 6, size=xs.shape).astype(np.float32)
    return a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None] + grain[..., None]


def render_frames(clip: Clip, *, sources: bool = True) -> np.ndarray:
    """All frames of a clip, uint8 (T, H, W, 3); ``sources=False`` leaves the sounding sources out.
    Objects are static while shown, so each is rasterised once and pasted into its frames."""
    xs, ys = _grid(clip.size)
    layers = [(d.f0, d.f1, *_sprite(xs, ys, d.shape, d.color, d.x, d.y, d.size, d.angle)) for d in clip.distractors]
    if sources:
        for e in clip.events:
            if e.on_screen:
                c = CLASSES[e.cls]
                layers.append((e.f0, e.f1, *_sprite(xs, ys, c.shape, c.color, e.x, e.y, e.size, e.angle,
                                                    c.texture, e.shade)))
    bg = background(clip)
    out = np.empty((clip.n_frames, clip.size, clip.size, 3), np.uint8)
    for i in range(clip.n_frames):
        canvas = bg.copy()
        for f0, f1, mask, pixels in layers:
            if f0 <= i < f1:
                canvas[mask] = pixels
        small = canvas.reshape(clip.size, SS, clip.size, SS, 3).mean(axis=(1, 3))
        out[i] = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    return out
