"""The two decoder backends behind `pipeline.media`: torchcodec and decord.

Each backend answers two questions, raising on any failure (the caller turns exceptions into one-line
errors and guards the time):

- ``frames(backend, path, pts, rotation)``: the frames whose presentation times are ``pts`` (exact pts
  of existing frames, chosen by `media.nearest_pts`), uint8 (N, H, W, 3), upright.
- ``audio(backend, path, stream_index, sr, start_s, duration_s)``: that audio stream, mono float32 (N,).
"""
from __future__ import annotations

import numpy as np


def _torchcodec_frames(path: str, pts: np.ndarray) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    dec = VideoDecoder(path, seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=1)
    # A frame is "played at" its own pts, so asking at an exact pts returns exactly that frame;
    # torchcodec applies the display rotation itself.
    order = np.argsort(pts, kind="stable")
    batch = dec.get_frames_played_at([float(t) for t in pts[order]])
    out = np.empty((len(pts), *batch.data.shape[1:]), np.uint8)
    out[order] = batch.data.numpy()
    return out


def _decord_frames(path: str, pts: np.ndarray, rotation: int) -> np.ndarray:
    import decord

    if rotation:
        raise ValueError(f"decord mis-decodes rotated videos (rotation {rotation}); use backend torchcodec")
    reader = decord.VideoReader(path, num_threads=1)
    starts = reader.get_frame_timestamp(list(range(len(reader))))[:, 0]
    idx = [int(i) for i in np.abs(starts[None, :] - pts[:, None]).argmin(axis=1)]
    try:
        return reader.get_batch(idx).asnumpy()
    except decord.DECORDError:
        if reader[idx[0]].shape[-1] == 3:
            raise
    return np.stack([_unfold_row_padding(reader[i].asnumpy()) for i in idx])


def _unfold_row_padding(frame: np.ndarray) -> np.ndarray:
    """Repair a decord frame of a narrow video (e.g. widths 1, 2, 24, 48).

    decord pads each RGB row to a multiple of 32 pixels; when the padded row length divides evenly by the
    width it mislabels the padding as channels, returning (H, W, C) with C != 3 (and get_batch fails).
    The bytes are the padded rows: reshape to (H, padded W, 3) and drop the padding.
    """
    h, w, c = frame.shape
    return np.ascontiguousarray(frame.reshape(h, w * c // 3, 3)[:, :w])


def frames(backend: str, path: str, pts: np.ndarray, rotation: int) -> np.ndarray:
    """Frames at exact presentation times ``pts`` (N,) -> uint8 (N, H, W, 3)."""
    if backend == "torchcodec":
        return _torchcodec_frames(path, pts)
    if backend == "decord":
        return _decord_frames(path, pts, rotation)
    raise ValueError(f"unknown backend {backend!r}")


def _torchcodec_audio(path: str, stream_index: int, sr: int, start_s: float, duration_s: float | None) -> np.ndarray:
    from torchcodec.decoders import AudioDecoder

    dec = AudioDecoder(path, stream_index=stream_index, sample_rate=sr, num_channels=1)
    stop = None if duration_s is None else start_s + duration_s
    samples = dec.get_samples_played_in_range(start_seconds=start_s, stop_seconds=stop)
    return samples.data[0].numpy().astype(np.float32, copy=False)


def _decord_audio(path: str, stream_index: int, sr: int, start_s: float, duration_s: float | None) -> np.ndarray:
    import decord

    reader = decord.AudioReader(path, sample_rate=sr, mono=True)
    wave = reader[:].asnumpy()[0].astype(np.float32)
    if reader.shape[0] != 1:
        raise ValueError("decord returned more than one channel")
    begin = int(round(start_s * sr))
    end = None if duration_s is None else begin + int(round(duration_s * sr))
    return wave[begin:end]


def audio_header(path: str) -> dict:
    """What audio decoding needs from ``path``'s header (torchcodec, nothing decoded): the `media.Probe`
    fields ``duration_s``, ``has_video``, ``has_audio``, ``audio_streams``, ``audio_index`` (first audio stream)."""
    from torchcodec.decoders import get_container_metadata

    meta = get_container_metadata(path)
    audio = [s for s in meta.streams if s.media_type == "audio"]
    duration = meta.duration_seconds_from_header or max(
        (s.duration_seconds_from_header or 0.0 for s in meta.streams), default=0.0)
    return {"duration_s": float(duration), "has_video": any(s.media_type == "video" for s in meta.streams),
            "has_audio": bool(audio), "audio_streams": len(audio),
            "audio_index": int(audio[0].stream_index) if audio else -1}


def audio(backend: str, path: str, stream_index: int, sr: int, start_s: float,
          duration_s: float | None) -> np.ndarray:
    """Mono float32 (N,) at ``sr`` of stream ``stream_index``, window [start_s, start_s + duration_s)."""
    if start_s < 0 or (duration_s is not None and duration_s < 0):
        raise ValueError("start and duration must not be negative")
    if backend == "torchcodec":
        return _torchcodec_audio(path, stream_index, sr, start_s, duration_s)
    if backend == "decord":
        return _decord_audio(path, stream_index, sr, start_s, duration_s)
    raise ValueError(f"unknown backend {backend!r}")
