"""Bad input for `pipeline.media` (issue 2, DESIGN §8), on small files made with the real ffmpeg.

Every case either decodes with its documented behaviour or gives a one-line error string, within a
bounded time, on both backends. Frames are flat grey levels, one per source frame, so each decoded frame
says which source frame it is; audio is a sine tone, so its frequency can be checked after decoding.

Documented per-backend behaviour pinned here:
- truncated mp4 without +faststart (no moov): every call gives the ffprobe error.
- truncated mp4 with +faststart: torchcodec gives the surviving frames (later times clamp to the last
  surviving frame) and a one-line error for audio; decord gives a one-line error for frames and the
  audio that survives.
- rotated video: torchcodec gives upright frames; decord gives a one-line error naming torchcodec.
- two audio streams: torchcodec gives the first stream; decord gives a one-line error naming torchcodec.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from media_files import frame_ids, grey_frames, make, packet_pts, peak_hz, silence, tone, truncate
from pipeline import media

BACKENDS = media.BACKENDS
SR = 16000
LIMIT_S = 30.0  # no media call may take longer than this
BASE_S, BASE_FPS, BASE_HZ = 2.0, 10, 440.0


# ---------------------------------------------------------------------------------------------- helpers

def timed(fn, *args, **kwargs):
    """Call ``fn`` and check that it returned within ``LIMIT_S``."""
    start = time.monotonic()
    out = fn(*args, **kwargs)
    assert time.monotonic() - start < LIMIT_S, f"{fn.__name__} took longer than {LIMIT_S} s"
    return out


def frames(path: Path, times, backend: str, **kw) -> np.ndarray | str:
    return timed(media.decode_frames, path, times, backend=backend, **kw)


def audio(path: Path, backend: str, **kw) -> np.ndarray | str:
    return timed(media.decode_audio, path, backend=backend, **kw)


def assert_error(value: object, *needles: str) -> str:
    """A non-empty one-line error string that contains every needle."""
    assert isinstance(value, str), f"expected an error, got {type(value).__name__}"
    assert value.strip() and "\n" not in value and "\r" not in value, repr(value)
    for needle in needles:
        assert needle in value, f"{needle!r} not in {value!r}"
    return value


def assert_frames(value: object, shape: tuple[int, ...]) -> np.ndarray:
    assert isinstance(value, np.ndarray), f"expected frames, got {value!r}"
    assert value.dtype == np.uint8 and value.shape == shape, (value.dtype, value.shape)
    return value


def assert_tone(value: object, freq: float, seconds: float) -> np.ndarray:
    """Mono float32 at 16 kHz, ``seconds`` long within 2 %, strongest component at ``freq``."""
    assert isinstance(value, np.ndarray), f"expected audio, got {value!r}"
    assert value.dtype == np.float32 and value.ndim == 1, (value.dtype, value.shape)
    assert abs(len(value) - seconds * SR) <= 0.02 * seconds * SR, len(value)
    assert abs(peak_hz(value, SR) - freq) < 5.0, peak_hz(value, SR)
    assert 0.01 < float(np.sqrt(np.mean(value**2))) <= 1.0
    return value


def nearest(pts: list[float], t: float) -> int:
    """Index of the frame whose pts is nearest to ``t``; ties go to the earlier frame."""
    return min(range(len(pts)), key=lambda i: (abs(pts[i] - t), i))


def grid(seconds: float, fps: int = 10) -> list[float]:
    return [k / fps for k in range(int(round(seconds * fps)))]


# --------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def mdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session", params=["plain", "faststart"])
def base(request: pytest.FixtureRequest, mdir: Path) -> Path:
    """2 s, 10 fps, 24x16 grey frames 0..19, H.264 + AAC 440 Hz mono 48 kHz; moov at the end or start."""
    extra = ["-movflags", "+faststart"] if request.param == "faststart" else []
    return make(mdir / f"base_{request.param}.mp4", frames=grey_frames(20), fps=BASE_FPS,
                audio=[tone(BASE_HZ, 48000, BASE_S)], extra=extra)


@pytest.fixture(scope="session")
def plain(mdir: Path) -> Path:
    return make(mdir / "plain.mp4", frames=grey_frames(20), fps=BASE_FPS, audio=[tone(BASE_HZ, 48000, BASE_S)])


@pytest.fixture(scope="session")
def upright(mdir: Path) -> Path:
    """32x16, top-left quarter red, top-right green: orientation is visible."""
    f = grey_frames(10, 16, 32)
    f[:, :8, :16] = (255, 0, 0)
    f[:, :8, 16:] = (0, 255, 0)
    return make(mdir / "upright.mp4", frames=f, fps=10, audio=[tone(BASE_HZ, 48000, 1)])


# ------------------------------------------------------------------------------------------- good files

@pytest.mark.parametrize("backend", BACKENDS)
def test_normal_mp4_decodes(base: Path, backend: str) -> None:
    """The reference the bad cases are cut from: every frame by its pts, and the tone."""
    times = grid(BASE_S) + [-1.0, 5.0]
    got = assert_frames(frames(base, times, backend), (len(times), 16, 24, 3))
    assert frame_ids(got) == list(range(20)) + [0, 19]
    assert_tone(audio(base, backend), BASE_HZ, BASE_S)


# ------------------------------------------------------------------------------------------ broken files

@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_mp4_without_faststart(plain: Path, mdir: Path, backend: str) -> None:
    cut = truncate(plain, mdir / f"cut_plain_{backend}.mp4")
    assert_error(media.probe(cut), "ffprobe failed", "Invalid data")
    assert_error(frames(cut, [0.0, 1.0], backend), "ffprobe failed")
    assert_error(audio(cut, backend), "ffprobe failed")


@pytest.fixture(scope="session")
def cut_faststart(mdir: Path) -> Path:
    full = make(mdir / "full_faststart.mp4", frames=grey_frames(20), fps=BASE_FPS,
                audio=[tone(BASE_HZ, 48000, BASE_S)], extra=["-movflags", "+faststart"])
    return truncate(full, mdir / "cut_faststart.mp4")


def test_truncated_mp4_with_faststart_probe(cut_faststart: Path) -> None:
    info = media.probe(cut_faststart)
    assert not isinstance(info, str), info
    survived = packet_pts(cut_faststart)
    assert 1 < len(survived) < 20 and survived == pytest.approx(grid(BASE_S)[: len(survived)])
    assert list(info.frame_pts) == pytest.approx(survived)


def test_truncated_mp4_with_faststart_torchcodec(cut_faststart: Path) -> None:
    survived = packet_pts(cut_faststart)
    times = grid(BASE_S)
    got = assert_frames(frames(cut_faststart, times, "torchcodec"), (len(times), 16, 24, 3))
    assert frame_ids(got) == [nearest(survived, t) for t in times]  # later times: the last survivor
    assert_error(audio(cut_faststart, "torchcodec"))


def test_truncated_mp4_with_faststart_decord(cut_faststart: Path) -> None:
    assert_error(frames(cut_faststart, grid(BASE_S), "decord"), "DECORDError")
    wave = audio(cut_faststart, "decord")
    assert isinstance(wave, np.ndarray) and wave.dtype == np.float32
    assert 0.25 * SR < len(wave) < 0.9 * BASE_S * SR  # the part that survived
    assert abs(peak_hz(wave, SR) - BASE_HZ) < 5.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_byte_file(mdir: Path, backend: str) -> None:
    empty = mdir / "empty.mp4"
    empty.write_bytes(b"")
    assert_error(media.probe(empty), "empty file")
    assert_error(frames(empty, [0.0], backend), "empty file")
    assert_error(audio(empty, backend), "empty file")


@pytest.mark.parametrize("backend", BACKENDS)
def test_text_file_named_mp4(mdir: Path, backend: str) -> None:
    text = mdir / "text.mp4"
    text.write_text("this is not a video\nsecond line\n")
    assert_error(media.probe(text), "ffprobe failed", "Invalid data")
    assert_error(frames(text, [0.0], backend), "ffprobe failed")
    assert_error(audio(text, backend), "ffprobe failed")


@pytest.mark.parametrize("name", ["missing.mp4", "line\nbreak.mp4"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nonexistent_path(mdir: Path, backend: str, name: str) -> None:
    path = mdir / name
    assert_error(media.probe(path), "file not found")
    assert_error(frames(path, [0.0], backend), "file not found")
    assert_error(audio(path, backend), "file not found")


@pytest.mark.parametrize("backend", BACKENDS)
def test_directory(mdir: Path, backend: str) -> None:
    folder = mdir / "folder.mp4"
    folder.mkdir(exist_ok=True)
    assert_error(media.probe(folder), "not a regular file")
    assert_error(frames(folder, [0.0], backend), "not a regular file")
    assert_error(audio(folder, backend), "not a regular file")


# ------------------------------------------------------------------------------------ streams missing

@pytest.mark.parametrize("backend", BACKENDS)
def test_video_without_audio(mdir: Path, backend: str) -> None:
    path = mdir / "silent_film.mp4"
    if not path.exists():
        make(path, frames=grey_frames(10), fps=10)
    info = media.probe(path)
    assert not isinstance(info, str) and info.has_video and not info.has_audio
    got = assert_frames(frames(path, [0.0, 0.5, 0.9], backend), (3, 16, 24, 3))
    assert frame_ids(got) == [0, 5, 9]
    assert_error(audio(path, backend), "no audio stream")


@pytest.mark.parametrize("backend", BACKENDS)
def test_audio_without_video(mdir: Path, backend: str) -> None:
    path = mdir / "radio.m4a"
    if not path.exists():
        make(path, audio=[tone(BASE_HZ, 48000, BASE_S)])
    info = media.probe(path)
    assert not isinstance(info, str) and info.has_audio and not info.has_video
    assert_tone(audio(path, backend), BASE_HZ, BASE_S)
    assert_error(frames(path, [0.0], backend), "no video stream")


# --------------------------------------------------------------------------------------- odd geometry

@pytest.mark.parametrize("backend", BACKENDS)
def test_one_by_one_video(mdir: Path, backend: str) -> None:
    path = mdir / "dot.mp4"
    if not path.exists():  # libx264 needs even sizes in 4:2:0; 4:4:4 takes 1x1
        rgb = np.full((10, 1, 1, 3), (200, 100, 50), np.uint8)
        make(path, frames=rgb, fps=10, video_args=("-c:v", "libx264", "-crf", "0", "-pix_fmt", "yuv444p"))
    info = media.probe(path)
    assert not isinstance(info, str) and (info.width, info.height) == (1, 1)
    got = assert_frames(frames(path, [0.0, 0.5, 0.9], backend), (3, 1, 1, 3))
    assert np.abs(got.reshape(3, 3).astype(int) - (200, 100, 50)).max() <= 3


@pytest.mark.parametrize("degrees,k", [(90, 1), (180, 2), (270, 3)])
def test_rotated_video(upright: Path, mdir: Path, degrees: int, k: int) -> None:
    rotated = mdir / f"rotated_{degrees}.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(upright), "-map", "0",
                    "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(rotated)], check=True, timeout=60)
    info = media.probe(rotated)
    assert not isinstance(info, str) and info.rotation == degrees
    assert (info.width, info.height) == ((16, 32) if degrees % 180 else (32, 16))
    times = [0.0, 0.45, 0.9]
    src = assert_frames(frames(upright, times, "torchcodec"), (3, 16, 32, 3))
    want = np.rot90(src, k, axes=(1, 2))
    got = assert_frames(frames(rotated, times, "torchcodec"), want.shape)
    assert np.array_equal(got, want)
    # ffmpeg's own display orientation (it autorotates) agrees
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(rotated), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True, timeout=60).stdout
    assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(want.shape[1:]), got[0])
    assert_error(frames(rotated, times, "decord"), "rotat", "torchcodec")
    assert frame_ids(assert_frames(frames(upright, times, "decord"), (3, 16, 32, 3)))  # upright is fine


# ---------------------------------------------------------------------------------------- frame timing

@pytest.mark.parametrize("backend", BACKENDS)
def test_four_fps_video_nearest_frames(mdir: Path, backend: str) -> None:
    path = mdir / "slow.mp4"
    if not path.exists():
        make(path, frames=grey_frames(12), fps=4)
    pts = [i / 4 for i in range(12)]
    assert packet_pts(path) == pytest.approx(pts)
    times = grid(3.0) + [0.125, 0.375, 1.625, -1.0, 9.0]  # exact ties go to the earlier frame
    got = assert_frames(frames(path, times, backend), (len(times), 16, 24, 3))
    want = [nearest(pts, t) for t in times]
    assert want[-5:] == [0, 1, 6, 0, 11]
    assert frame_ids(got) == want


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_nearest_frames(mdir: Path, backend: str) -> None:
    path = mdir / "vfr.mp4"
    if not path.exists():  # gaps alternate 3/8 s and 1/8 s
        make(path, frames=grey_frames(10), fps=8,
             extra=["-vf", r"settb=1/8,setpts=2*N+mod(N\,2)", "-fps_mode", "vfr"])
    pts = [(2 * n + n % 2) / 8 for n in range(10)]
    got_pts = packet_pts(path)
    assert got_pts == pytest.approx(pts)
    assert len(set(np.round(np.diff(got_pts), 6))) > 1  # irregular
    times = grid(2.5) + [0.1875, 0.4375, -1.0]  # ties between 0 and 3/8, and 3/8 and 4/8
    got = assert_frames(frames(path, times, backend), (len(times), 16, 24, 3))
    want = [nearest(pts, t) for t in times]
    assert want[-3:] == [0, 1, 0]
    assert frame_ids(got) == want


# ------------------------------------------------------------------------------------------------ audio

@pytest.mark.parametrize("layout", ["stereo", "5.1"])
@pytest.mark.parametrize("rate", [44100, 48000])
@pytest.mark.parametrize("backend", BACKENDS)
def test_audio_layouts_and_rates(mdir: Path, backend: str, rate: int, layout: str) -> None:
    path = mdir / f"tone_{layout}_{rate}.m4a"
    if not path.exists():
        make(path, audio=[tone(1000, rate, BASE_S, layout)])
    info = media.probe(path)
    assert not isinstance(info, str)
    assert (info.audio_sr, info.audio_channels) == (rate, {"stereo": 2, "5.1": 6}[layout])
    assert_tone(audio(path, backend), 1000.0, BASE_S)


@pytest.mark.parametrize("backend", BACKENDS)
def test_digitally_silent_track(mdir: Path, backend: str) -> None:
    path = mdir / "hush.mp4"
    if not path.exists():
        make(path, frames=grey_frames(20), fps=10, audio=[silence(48000, BASE_S)])
    wave = audio(path, backend)
    assert isinstance(wave, np.ndarray) and wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - BASE_S * SR) <= 0.02 * BASE_S * SR
    assert not wave.any()


def test_two_audio_streams(mdir: Path) -> None:
    path = make(mdir / "bilingual.mp4", frames=grey_frames(10), fps=10,
                audio=[tone(BASE_HZ, 48000, 1), tone(1500, 44100, 1)])
    info = media.probe(path)
    assert not isinstance(info, str) and info.audio_streams == 2 and info.audio_sr == 48000
    assert_tone(audio(path, "torchcodec"), BASE_HZ, 1.0)  # the first stream, not 1500 Hz
    assert_error(audio(path, "decord"), "torchcodec")
    for backend in BACKENDS:  # the video is unaffected
        assert frame_ids(assert_frames(frames(path, [0.3], backend), (1, 16, 24, 3))) == [3]


# ------------------------------------------------------------------------------------------ file names

ODD_NAMES = ["a b 'c' \"d\" é ü 日本.mp4", "$HOME;*?[x] `id` -i.mp4", "line\nbreak\ttab.mp4"]


@pytest.mark.parametrize("name", ODD_NAMES, ids=["spaces-quotes-unicode", "shell-chars", "control-chars"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_odd_file_names(plain: Path, mdir: Path, backend: str, name: str) -> None:
    path = mdir / name
    if not path.exists():
        shutil.copy(plain, path)
    info = media.probe(path)
    assert not isinstance(info, str) and info.has_video and info.has_audio
    assert frame_ids(assert_frames(frames(path, [0.1, 1.5], backend), (2, 16, 24, 3))) == [1, 15]
    assert_tone(audio(path, backend), BASE_HZ, BASE_S)
    text = mdir / f"text {name}"
    text.write_text("not a video")
    assert_error(frames(text, [0.0], backend), "ffprobe failed")


# ------------------------------------------------------------------------------------ timeouts, crashes

LONG_S = 300


@pytest.fixture(scope="session")
def long_clip(mdir: Path) -> Path:
    """300 s at 10 fps with a tone: decoding it takes far longer than the 1 ms timeout, so a result is not
    already waiting when the parent, descheduled on a loaded machine, first polls for it (30 s raced)."""
    return make(mdir / "long.mp4", frames=np.tile(grey_frames(20), (LONG_S // 2, 1, 1, 1)), fps=10,
                audio=[tone(BASE_HZ, 48000, LONG_S)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout_then_recovers(long_clip: Path, plain: Path, backend: str) -> None:
    info = media.probe(long_clip)
    assert not isinstance(info, str)
    start = time.monotonic()
    outs = [media.decode_frames(long_clip, grid(float(LONG_S)), backend=backend, info=info, timeout_s=1e-3),
            media.decode_audio(long_clip, backend=backend, info=info, timeout_s=1e-3)]
    assert all(assert_error(out).startswith("timeout") for out in outs), outs
    assert time.monotonic() - start < 5.0
    # the worker was restarted: the next call gets its own answer, not the abandoned one
    assert frame_ids(assert_frames(frames(plain, [1.2], backend), (1, 16, 24, 3))) == [12]
    assert_tone(audio(plain, backend), BASE_HZ, BASE_S)


def test_hung_worker_is_killed() -> None:
    start = time.monotonic()
    ok, err = media._WORKER.call(time.sleep, 60, timeout_s=0.5)
    assert not ok and assert_error(err).startswith("timeout")
    assert time.monotonic() - start < 5.0
    assert media._WORKER.call(sum, [1, 2, 3], timeout_s=LIMIT_S) == (True, 6)


def test_crashed_worker_is_replaced() -> None:
    ok, err = media._WORKER.call(os._exit, 3, timeout_s=LIMIT_S)
    assert not ok and assert_error(err, "decoder process died")
    assert media._WORKER.call(sum, [1, 2, 3], timeout_s=LIMIT_S) == (True, 6)

