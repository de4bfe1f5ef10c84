"""Stage `score`: C[t] for every frame of every ok video, and its top-k moments (DESIGN section 3).

Each video is decoded at ``decode.fps`` (a pool of ``score.workers`` processes); for frame k at
``t = k / fps`` the audio window of ``score.window_s`` seconds centred on t is encoded, and
C[t] = max over space of cos(q_V(t, x, y), q_A(t)) (models/localizer.py). The ``score.k`` best frames
of each video go to ``moments.parquet`` (rank 0 = best, ties to the earlier frame). With
``score.normalize: video`` (default) C[t] is contrasted with the video's other frames (`score_clip`). An
ensemble localizer (``localizer.members`` > 1) gives the mean of its members' C[t].

Failures: ``moments.parquet`` holds moments only (its schema has no status column); a video that cannot be
scored (no audio stream, a silent track, shorter than one window, a decode error) gets no rows and is
listed with its one-line reason in the summary JSON written beside it (``--summary``), which also counts
the ``failed`` rows of ``videos.parquet`` as ``skipped``. total = ok + failed + skipped, always. Its timings
(``wall_s``, ``videos_per_s``, ``decode_s``, ``model_s``) go to ``<summary>.timings.json`` (``pipeline.timings``).
``--shard i/n`` scores every n-th video from the i-th (in manifest order) for a run across machines; under
``torchrun`` each process takes its rank's shard and rank 0 merges (`run`). Rows are in (video_id, rank) order.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import time
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from models.localizer import AnyLocalizer, Localizer, load, members_of
from pipeline import manifests, moments, timings
from pipeline.params import DecodeParams, ScoreParams

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; a ValueError names the bad value."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


@torch.inference_mode()
def score_clip(model: AnyLocalizer, clip: moments.Clip, mels: torch.Tensor, normalize: str = "video",
               batch: int = 256) -> np.ndarray:
    """C[t] of every frame: frames ``(N, H, W, 3)`` uint8 and mels ``(N, 1, n_mels, F)`` -> ``(N,)`` float64.

    ``normalize="none"``: C[t] = S[t, t] with S[i, j] = max_xy cos(q_V(i, x, y), q_A(j)).
    ``normalize="video"``: C[t] = S[t, t] - mean_i S[i, t], how much better frame t matches its sound than
    the video's frames do on average; a window of silence or of an off-screen sound matches every frame
    about equally and scores near 0, whatever its raw similarity to backgrounds.
    An ensemble's C[t] is the mean of its members' (each computed as above)."""
    members = members_of(model)
    dev = next(model.parameters()).device
    frames, mels = torch.from_numpy(clip.frames).to(dev), mels.to(dev, memory_format=torch.channels_last)
    return sum(_member_scores(m, frames, mels, normalize, batch) for m in members) / len(members)


def _member_scores(model: Localizer, frames: torch.Tensor, mels: torch.Tensor, normalize: str,
                   batch: int) -> np.ndarray:
    """One localizer's C[t] (`score_clip`), frames and mels already on its device."""
    vmaps = torch.cat([model.embed_frames(frames[i:i + batch]) for i in range(0, len(frames), batch)])
    aembs = torch.cat([model.embed_audio(mels[i:i + batch]) for i in range(0, len(mels), batch)])
    if normalize == "none":
        return Localizer.paired_scores(vmaps, aembs).double().cpu().numpy()
    sim = Localizer.similarity_maps(vmaps, aembs).flatten(2).amax(dim=2).double()  # (N frames, N audios)
    return (sim.diagonal() - sim.mean(dim=0)).cpu().numpy()


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first; ties go to the earlier frame. ``(N,) -> (min(k, N),)``."""
    return np.lexsort((np.arange(len(scores)), -scores))[:k]


def moment_rows(video_id: str, scores: np.ndarray, times: np.ndarray, k: int) -> list[dict]:
    """The MOMENTS rows of one video (frame_index at decode.fps, as ``times``)."""
    return [dict(video_id=video_id, rank=r, t_s=float(times[i]), frame_index=int(i), score=float(scores[i]))
            for r, i in enumerate(top_k(scores, k))]


def _decode(args: tuple[str, str, ScoreParams, DecodeParams, int]) -> tuple[str, object, float]:
    """Decode one video and its window log-mels in a pool worker -> (video_id, (clip, mels) or error, s)."""
    vid, path, p, d, n_mels = args
    t0 = time.perf_counter()
    clip = moments.decode_clip(path, fps=d.fps, window_s=p.window_s, backend=d.backend, timeout_s=d.timeout_s)
    if isinstance(clip, str):
        return vid, clip, time.perf_counter() - t0
    mels = moments.window_logmels(clip.audio, clip.times, n_mels=n_mels, window_s=p.window_s)
    return vid, (clip, mels), time.perf_counter() - t0


def score_videos(model: AnyLocalizer, rows: list[dict], manifest: Path, p: ScoreParams, d: DecodeParams,
                 sheets: Path | None = None) -> tuple[list[dict], dict[str, str], dict]:
    """Score ``rows`` (ok videos); returns (moment rows, {video_id: error}, timings). With ``sheets``, the
    first ``p.sheets`` videos scored also get a contact sheet ``sheets/VIDEO_ID.png``."""
    tasks = [(r["video_id"], str(manifests.resolve(manifest, r["path"])), p, d, model.cfg.n_mels) for r in rows]
    out, errors, decode_s, model_s, n_sheets = [], {}, 0.0, 0.0, 0
    with get_context("fork").Pool(max(1, p.workers), initializer=moments.worker_init) as pool:
        for vid, res, dt in tqdm(pool.imap(_decode, tasks), total=len(tasks), desc="score", unit="video"):
            decode_s += dt
            if isinstance(res, str):
                errors[vid] = res
                log.warning("video %s failed: %s", vid, res)
                continue
            clip, mels = res
            t0 = time.perf_counter()
            scores = score_clip(model, clip, mels, p.normalize)
            out += moment_rows(vid, scores, clip.times, p.k)
            model_s += time.perf_counter() - t0
            if sheets is not None and n_sheets < p.sheets:
                _save_sheet(clip, scores, Path(sheets) / f"{vid}.png")
                n_sheets += 1
    return out, errors, dict(decode_s=decode_s, model_s=model_s)


def _save_sheet(clip: moments.Clip, scores: np.ndarray, path: Path) -> None:
    """A contact sheet PNG (frames, C[t], the top-1 marked), written via a temporary name."""
    from pipeline.sheet import contact_sheet as draw

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = manifests.tmp_name(path)
    draw(clip.frames, clip.times, scores, chosen=int(top_k(scores, 1)[0])).save(tmp, format="PNG")
    os.replace(tmp, path)


def contact_sheet(model: AnyLocalizer, row: dict, manifest: Path, p: ScoreParams, d: DecodeParams,
                  spans: list[tuple[float, float]] = ()) -> "Image.Image | str":
    """The contact sheet of one videos.parquet row (frames, C[t], the top-1 marked), or why not."""
    from pipeline.sheet import contact_sheet as draw

    vid, res, _ = _decode((row["video_id"], str(manifests.resolve(manifest, row["path"])), p, d, model.cfg.n_mels))
    if isinstance(res, str):
        return res
    clip, mels = res
    scores = score_clip(model, clip, mels, p.normalize)
    return draw(clip.frames, clip.times, scores, chosen=int(top_k(scores, 1)[0]), spans=spans)


def load_model(checkpoint: Path, device: torch.device | str = "cpu") -> AnyLocalizer:
    """The localizer for scoring: eval mode on ``device``, channels-last (about 30% faster convs on CPU)."""
    return load(checkpoint).to(device, memory_format=torch.channels_last)


def run(p: ScoreParams, d: DecodeParams, *, videos: Path, checkpoint: Path, out: Path, summary: Path,
        shard: tuple[int, int] = (0, 1), sheets: Path | None = None) -> dict:
    """Write ``out`` (moments.parquet) and ``summary`` (JSON); returns the summary.

    Under ``torchrun`` (WORLD_SIZE > 1) rank r of n scores shard r/n on its own device (cuda:LOCAL_RANK when
    there is a GPU), writes ``out``/``summary`` parts, and rank 0 merges them after a barrier."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return _run_shard(p, d, videos, checkpoint, out, summary, shard, device, sheets)
    if shard != (0, 1):
        raise ValueError("use either --shard or torchrun, not both")
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if cuda else "cpu")
    part = lambda f, r: f.with_name(f".{f.name}.part{r}")  # noqa: E731
    # score before joining the group: the decode pool forks, and a fork should not copy its threads
    result = _run_shard(p, d, videos, checkpoint, part(out, rank), part(summary, rank), (rank, world), device,
                        sheets)
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=2))
    try:
        dist.barrier()
        if rank == 0:
            result = _merge([part(out, r) for r in range(world)], [part(summary, r) for r in range(world)],
                            out, summary)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return result


def _run_shard(p: ScoreParams, d: DecodeParams, videos: Path, checkpoint: Path, out: Path, summary: Path,
               shard: tuple[int, int], device: torch.device, sheets: Path | None = None) -> dict:
    """Score shard ``i/n`` of the manifest's rows; write ``out`` and ``summary``."""
    torch.set_num_threads(max(1, p.threads))
    model = load_model(checkpoint, device)
    if model.cfg.n_frames != moments.n_mel_frames(p.window_s):
        log.warning("score.window_s=%g differs from the window the localizer was trained on (%d mel frames)",
                    p.window_s, model.cfg.n_frames)
    i, n = shard
    rows = manifests.read(videos, manifests.VIDEOS).to_pylist()[i::n]
    ok = [r for r in rows if r["status"] == "ok"]
    t0 = time.perf_counter()
    moment_list, errors, timing = score_videos(model, ok, Path(videos), p, d, sheets)
    wall = time.perf_counter() - t0
    manifests.write(sorted(moment_list, key=lambda m: (m["video_id"], m["rank"])), manifests.MOMENTS, out)
    result = dict(total=len(rows), ok=len(ok) - len(errors), failed=len(errors), skipped=len(rows) - len(ok),
                  shard=f"{i}/{n}", errors=errors,
                  skipped_ids=[r["video_id"] for r in rows if r["status"] != "ok"],
                  wall_s=round(wall, 2), videos_per_s=round(len(ok) / wall, 2) if wall > 0 else None,
                  decode_s=round(timing["decode_s"], 2), model_s=round(timing["model_s"], 2))
    _write_summary(result, summary)
    log.info("score: %(total)d videos, %(ok)d ok, %(failed)d failed, %(skipped)d skipped", result)
    return result


def _merge(parts: list[Path], summaries: list[Path], out: Path, summary: Path) -> dict:
    """Join the ranks' moments and summaries into ``out`` and ``summary``; remove the parts."""
    rows = [r for f in parts for r in manifests.read(f, manifests.MOMENTS).to_pylist()]
    manifests.write(sorted(rows, key=lambda m: (m["video_id"], m["rank"])), manifests.MOMENTS, out)
    got = [{**json.loads(f.read_text()), **timings.read(f)} for f in summaries]
    result = {k: sum(g[k] for g in got) for k in ("total", "ok", "failed", "skipped")}
    wall = max(g["wall_s"] for g in got)
    result.update(shard=f"torchrun x{len(got)}", errors={k: v for g in got for k, v in g["errors"].items()},
                  skipped_ids=[v for g in got for v in g["skipped_ids"]], wall_s=wall,
                  videos_per_s=round((result["ok"] + result["failed"]) / wall, 2) if wall > 0 else None,
                  decode_s=round(sum(g["decode_s"] for g in got), 2), model_s=round(sum(g["model_s"] for g in got), 2))
    _write_summary(result, summary)
    for f in parts + summaries:
        f.unlink()
    for f in summaries:
        timings.sidecar(f).unlink(missing_ok=True)
    return result


TIMING_KEYS = ("wall_s", "videos_per_s", "decode_s", "model_s")


def _write_summary(result: dict, path: Path) -> None:
    """``result`` into ``path`` but for its timings, which go to the sidecar (``pipeline.timings``)."""
    timings.write_report(result, path, TIMING_KEYS, sort_keys=True)
