"""A contact sheet users can check by eye: a video's frames in a grid, C[t] plotted beneath, the pick marked.

Drawn with PIL only. The chosen frame gets a red box in the grid and a red line in the plot; optional
``spans`` (e.g. ground-truth events of the built-in world) are shaded green in the plot.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

RED, GREEN, GREY, WHITE = (230, 40, 40), (120, 200, 120), (90, 90, 90), (255, 255, 255)


def _grid(frames: np.ndarray, cols: int, cell: int, chosen: int) -> Image.Image:
    """Frames ``(N, H, W, 3)`` uint8 -> a grid image, ``cell`` px per frame, the chosen one boxed."""
    rows = -(-len(frames) // cols)
    img = Image.new("RGB", (cols * cell, rows * cell), WHITE)
    draw = ImageDraw.Draw(img)
    for i, f in enumerate(frames):
        x, y = (i % cols) * cell, (i // cols) * cell
        img.paste(Image.fromarray(f).resize((cell - 4, cell - 4)), (x + 2, y + 2))
        if i == chosen:
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=RED, width=2)
    return img


def _plot(scores: np.ndarray, times: np.ndarray, width: int, height: int, chosen: int,
          spans: Sequence[tuple[float, float]]) -> Image.Image:
    """C[t] as a polyline over the clip's time axis, ``width x height`` px."""
    img = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(img)
    t_end = float(times[-1]) + (float(times[1] - times[0]) if len(times) > 1 else 1.0)
    x_of = lambda t: 4 + (width - 8) * float(t) / t_end  # noqa: E731
    for a, b in spans:
        draw.rectangle([x_of(a), 0, x_of(b), height - 1], fill=GREEN)
    lo, hi = float(np.min(scores)), float(np.max(scores))
    y_of = lambda s: height - 14 - (height - 28) * (float(s) - lo) / ((hi - lo) or 1.0)  # noqa: E731
    draw.line([(x_of(t), y_of(s)) for t, s in zip(times, scores)], fill=GREY, width=2)
    draw.line([(x_of(times[chosen]), 0), (x_of(times[chosen]), height)], fill=RED, width=2)
    draw.text((4, height - 12), f"C[t] {lo:.3f}..{hi:.3f}, pick t={times[chosen]:.1f} s", fill=(0, 0, 0))
    return img


def contact_sheet(frames: np.ndarray, times: np.ndarray, scores: np.ndarray, *, chosen: int | None = None,
                  spans: Sequence[tuple[float, float]] = (), cols: int = 10, cell: int = 72,
                  plot_height: int = 120) -> Image.Image:
    """Frames ``(N, H, W, 3)`` uint8 at ``times`` ``(N,)`` with scores ``(N,)`` -> one RGB image.
    ``chosen`` defaults to the best score (ties: the earlier frame)."""
    if not len(frames) == len(times) == len(scores) or len(frames) == 0:
        raise ValueError("frames, times and scores must be non-empty and of one length")
    chosen = int(np.argmax(scores)) if chosen is None else chosen
    grid = _grid(frames, cols, cell, chosen)
    plot = _plot(np.asarray(scores), np.asarray(times), grid.width, plot_height, chosen, spans)
    sheet = Image.new("RGB", (grid.width, grid.height + plot.height), WHITE)
    sheet.paste(grid, (0, 0))
    sheet.paste(plot, (0, grid.height))
    return sheet
