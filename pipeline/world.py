"""The built-in audio-visual world: sound-source classes and the timeline of one clip (DESIGN section 4).

A clip is planned from a seed (`plan_clip`) into a `Clip`: its background, silent distractors, and its
sound events. Main events are the labelled class's source: drawn (at a place, a size set by loudness)
exactly while it sounds. Off-screen events are other classes' sounds with nothing drawn; ambient events
are broadband bursts of no class. `pipeline.world_render` turns a `Clip` into frames and a waveform.

Shortcut guards: look and sound vary within a class; classes share colours (bell/horn, drum/engine,
water/siren) and pitch ranges (bell/siren/horn, bird/water), so shape and timbre matter; distractors reuse
the source colours; off-screen sounds are as loud as sources, so loudness alone cannot find the moment.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RED, BLUE, YELLOW, GREEN, CYAN, ORANGE, MAGENTA, WHITE = (
    (220, 40, 40), (40, 80, 230), (235, 215, 40), (40, 190, 70), (40, 210, 220), (245, 140, 30),
    (200, 50, 200), (235, 235, 235))


@dataclass(frozen=True)
class SourceClass:
    """One sound-source class: how it looks and how it sounds."""

    name: str
    shape: str  # circle | square | triangle | star | hexagon | diamond | ring | cross | heart | moon
    color: tuple[int, int, int]
    texture: str  # solid | stripes | dots | checker
    timbre: str  # sine | square | saw | noise | fm | pluck | chirp | clicks
    pitch: tuple[float, float]  # Hz range of the fundamental / band centre
    rate: tuple[float, float]  # pulses per second (0, 0): continuous


CLASSES: tuple[SourceClass, ...] = (
    SourceClass("bell", "circle", RED, "solid", "sine", (500.0, 900.0), (0.0, 0.0)),
    SourceClass("drum", "square", BLUE, "stripes", "noise", (150.0, 400.0), (3.0, 5.0)),
    SourceClass("horn", "triangle", RED, "stripes", "square", (300.0, 600.0), (0.0, 0.0)),
    SourceClass("bird", "star", YELLOW, "dots", "chirp", (1800.0, 3200.0), (4.0, 7.0)),
    SourceClass("engine", "hexagon", BLUE, "checker", "saw", (70.0, 140.0), (0.0, 0.0)),
    SourceClass("siren", "diamond", CYAN, "solid", "fm", (550.0, 900.0), (0.4, 0.9)),
    SourceClass("water", "ring", CYAN, "dots", "noise", (2500.0, 4500.0), (0.0, 0.0)),
    SourceClass("clock", "cross", ORANGE, "solid", "clicks", (1000.0, 1600.0), (1.5, 3.0)),
    SourceClass("harp", "heart", MAGENTA, "stripes", "pluck", (220.0, 440.0), (2.0, 4.0)),
    SourceClass("whistle", "moon", GREEN, "solid", "sine", (1500.0, 2500.0), (0.0, 0.0)),
)
DISTRACTOR_SHAPES = ("bar", "ellipse", "frame")
AMBIENT = "ambient"
SIZE_MIN, SIZE_MAX = 0.22, 0.62  # drawn size as a fraction of the frame, at loudness 0 and 1
LOUD_MIN = 0.3


def size_for(loudness: float, frame: int) -> float:
    """Drawn size (pixels, the source's diameter) for a loudness in [0, 1]: louder = bigger."""
    return frame * (SIZE_MIN + (SIZE_MAX - SIZE_MIN) * float(loudness))


@dataclass(frozen=True)
class Event:
    """One sound in a clip, in frames [f0, f1) of the clip's frame grid."""

    cls: int  # index into CLASSES, or -1 for an ambient burst
    f0: int
    f1: int
    loudness: float
    on_screen: bool
    x: float = float("nan")  # centre, pixels (on screen only)
    y: float = float("nan")
    size: float = float("nan")
    angle: float = 0.0  # rotation, radians
    shade: float = 1.0  # brightness factor of the colour
    pitch: float = 440.0
    rate: float = 0.0
    seed: int = 0  # for the sound's own randomness (timbre details, noise)


@dataclass(frozen=True)
class Distractor:
    """A silent object drawn in frames [f0, f1)."""

    shape: str
    color: tuple[int, int, int]
    f0: int
    f1: int
    x: float
    y: float
    size: float
    angle: float


@dataclass(frozen=True)
class Clip:
    """Everything needed to render one clip, deterministically."""

    video_id: str
    label: int
    n_frames: int
    fps: int
    size: int
    sr: int
    bg: tuple[tuple[int, int, int], tuple[int, int, int]]  # gradient end colours
    bg_angle: float
    noise_level: float  # background noise amplitude (audio)
    seed: int
    events: tuple[Event, ...] = field(default=())
    distractors: tuple[Distractor, ...] = field(default=())


def _free_slot(rng: np.random.Generator, busy: list[tuple[int, int]], n: int, length: int, gap: int) -> tuple[int, int] | None:
    """A random [f0, f1) of ``length`` frames inside [0, n) at least ``gap`` frames from every busy range."""
    for _ in range(50):
        f0 = int(rng.integers(0, n - length + 1))
        if all(f0 + length + gap <= b0 or f0 >= b1 + gap for b0, b1 in busy):
            return f0, f0 + length
    return None


def _place(rng: np.random.Generator, size: float, frame: int, avoid: list[tuple[float, float, float]]) -> tuple[float, float]:
    """A centre where a source of ``size`` fits the frame, away from the sources in ``avoid``."""
    half = size / 2 + 1
    for _ in range(50):
        x, y = rng.uniform(half, frame - half, size=2)
        if all(np.hypot(x - ax, y - ay) > (size + asz) / 2 for ax, ay, asz in avoid):
            break
    return float(x), float(y)


def _sound_event(rng: np.random.Generator, cls: int, f0: int, f1: int, on_screen: bool, frame: int,
                 avoid: list[tuple[float, float, float]]) -> Event:
    c = CLASSES[cls]
    loud = float(rng.uniform(LOUD_MIN, 1.0))
    common = dict(cls=cls, f0=f0, f1=f1, loudness=round(loud, 4), on_screen=on_screen,
                  pitch=float(rng.uniform(*c.pitch)), rate=float(rng.uniform(*c.rate)),
                  seed=int(rng.integers(2**31)))
    if not on_screen:
        return Event(**common)
    size = size_for(common["loudness"], frame)
    x, y = _place(rng, size, frame, avoid)
    return Event(**common, x=x, y=y, size=size, angle=float(rng.uniform(0, 2 * np.pi)),
                 shade=float(rng.uniform(0.75, 1.15)))


def plan_clip(seed: int, index: int, label: int, *, n_classes: int, duration_s: float, fps: int,
              size: int, sr: int, two_source: bool) -> Clip:
    """Plan clip ``index`` of class ``label``: 1-2 main events, 1-2 off-screen sounds, 0-2 ambient
    bursts, 0-3 distractors, and (``two_source``) a second class sounding and drawn during the first
    main event. Deterministic in (seed, index)."""
    rng = np.random.default_rng([seed, index])
    n = int(round(duration_s * fps))
    busy: list[tuple[int, int]] = []
    events: list[Event] = []
    for k in range(int(rng.integers(1, 3))):
        slot = _free_slot(rng, busy, n, int(rng.integers(int(0.8 * fps), int(2.0 * fps) + 1)), gap=fps // 2)
        if slot is None:
            continue
        busy.append(slot)
        events.append(_sound_event(rng, label, *slot, True, size, []))
    others = [c for c in range(n_classes) if c != label]
    if two_source and others:
        main = events[0]
        second = int(rng.choice(others))
        f0 = int(rng.integers(main.f0, max(main.f0 + 1, main.f1 - fps // 2)))
        ev = _sound_event(rng, second, f0, int(rng.integers(f0 + fps // 2, main.f1 + 1)), True, size,
                          [(main.x, main.y, main.size)])
        events.append(ev)
    for k in range(int(rng.integers(1, 3))):
        slot = (_free_slot(rng, busy, n, int(rng.integers(int(0.5 * fps), int(1.5 * fps) + 1)), gap=fps // 5)
                or _free_slot(rng, busy, n, max(1, fps // 2), gap=1))  # at least a short one
        if slot is not None and others:
            busy.append(slot)
            events.append(_sound_event(rng, int(rng.choice(others)), *slot, False, size, []))
    for k in range(int(rng.integers(0, 3))):
        slot = _free_slot(rng, busy, n, int(rng.integers(max(1, fps // 5), max(2, fps // 2) + 1)), gap=fps // 5)
        if slot is not None:
            busy.append(slot)
            events.append(Event(cls=-1, f0=slot[0], f1=slot[1], loudness=round(float(rng.uniform(0.5, 1.0)), 4),
                                on_screen=False, seed=int(rng.integers(2**31))))
    distractors = []
    palette = [c.color for c in CLASSES[:n_classes]]
    for k in range(int(rng.integers(0, 4))):
        f0 = int(rng.integers(0, n - fps // 2))
        dsize = float(rng.uniform(0.2, 0.5) * size)
        distractors.append(Distractor(
            shape=str(rng.choice(DISTRACTOR_SHAPES)), color=palette[int(rng.integers(len(palette)))],
            f0=f0, f1=min(n, f0 + int(rng.integers(fps // 2, n + 1))), x=float(rng.uniform(0, size)),
            y=float(rng.uniform(0, size)), size=dsize, angle=float(rng.uniform(0, np.pi))))
    bg = tuple(tuple(int(v) for v in rng.integers(20, 150, size=3)) for _ in range(2))
    return Clip(video_id=f"world_{index:05d}", label=label, n_frames=n, fps=fps, size=size, sr=sr,
                bg=bg, bg_angle=float(rng.uniform(0, 2 * np.pi)), noise_level=float(rng.uniform(0.002, 0.01)),
                seed=int(rng.integers(2**31)), events=tuple(sorted(events, key=lambda e: e.f0)),
                distractors=tuple(distractors))


def split_for(rank: int, n: int, val_frac: float, test_frac: float) -> str:
    """Split of the ``rank``-th of ``n`` shuffled clips of one class (stratified, by video)."""
    n_test = max(1, int(round(n * test_frac))) if test_frac > 0 else 0
    n_val = max(1, int(round(n * val_frac))) if val_frac > 0 else 0
    if rank < n_test:
        return "test"
    if rank < n_test + n_val:
        return "val"
    return "train"


def event_rows(clip: Clip) -> list[dict]:
    """``events.parquet`` rows of a clip (DESIGN section 3, plus the drawn centre x, y)."""
    rows = []
    for e in clip.events:
        nan_to_none = (lambda v: None if not e.on_screen else round(float(v), 4))
        rows.append(dict(video_id=clip.video_id, label=CLASSES[e.cls].name if e.cls >= 0 else AMBIENT,
                         t_start=e.f0 / clip.fps, t_end=e.f1 / clip.fps, loudness=e.loudness,
                         on_screen=e.on_screen, size=nan_to_none(e.size), x=nan_to_none(e.x),
                         y=nan_to_none(e.y)))
    return rows
