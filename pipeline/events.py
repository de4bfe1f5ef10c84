"""Ground truth of the built-in world from ``events.parquet``: what is drawn in a frame, and whether a
selected moment hits a main event.

A main event is a sound of the video's own class whose source is drawn while it sounds (``label`` = the
video's label and ``on_screen``); a time t is inside an event when ``t_start <= t < t_end``.
"""
from __future__ import annotations

from pathlib import Path

from pipeline import manifests

AMBIENT = "ambient"
EPS = 1e-6  # frame times are k / fps: keep a frame that starts an event inside it despite rounding


def by_clip(events: Path) -> dict[str, list[dict]]:
    """``{video_id: [event row, ...]}`` of an events.parquet (empty for real-world sources)."""
    out: dict[str, list[dict]] = {}
    for e in manifests.read(events, manifests.EVENTS).to_pylist():
        out.setdefault(e["video_id"], []).append(e)
    return out


def inside(t: float, spans: list[tuple[float, float]]) -> bool:
    """Whether ``t`` lies in one of the ``[start, end)`` spans."""
    return any(a - EPS <= t < b - EPS for a, b in spans)


def drawn_at(events: list[dict], t: float) -> dict[str, float]:
    """``{label: largest drawn size in pixels}`` of the sources on screen at time ``t`` of one clip."""
    out: dict[str, float] = {}
    for e in events:
        if e["on_screen"] and e["label"] != AMBIENT and inside(t, [(e["t_start"], e["t_end"])]):
            out[e["label"]] = max(out.get(e["label"], 0.0), float(e["size"] or 0.0))
    return out


def main_events(events: list[dict], videos: dict[str, dict]) -> dict[str, list[tuple[float, float]]]:
    """``{video_id: [(t_start, t_end), ...]}`` of the main events (own class, on screen)."""
    out: dict[str, list[tuple[float, float]]] = {}
    for e in events:
        v = videos.get(e["video_id"])
        if v is not None and e["on_screen"] and e["label"] == v["label"]:
            out.setdefault(e["video_id"], []).append((e["t_start"], e["t_end"]))
    return out


def moment_hits(picks: dict[str, float], events: list[dict], videos: dict[str, dict]) -> tuple[int, int]:
    """(hits, videos): how many of the picked times ``{video_id: t_s}`` fall inside a main event of their
    video, over the picked videos that have a main event."""
    spans = main_events(events, videos)
    scored = [vid for vid in picks if vid in spans]
    return sum(inside(picks[vid], spans[vid]) for vid in scored), len(scored)
