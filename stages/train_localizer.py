"""Stage `train_localizer`: the sound-source localizer, trained without labels on the train split.

Every ``localizer.frame_every``-th frame (at ``decode.fps``) of each ok train video is decoded (resized to
``localizer.image_size`` square), with the
log-mel of the audio window centred on it, into one compact in-memory set (uint8 frames, float16 mels;
at most ``localizer.max_videos`` videos). A step takes ``batch_videos`` videos and two times of each, at
least ``min_gap_s`` apart, so a frame's negatives are the other videos' audio and its own video's audio at
the other time (models/localizer.py). ``localizer.checkpoint`` names an external checkpoint instead: it is
loaded strictly and copied to the output. The training state is saved every ``localizer.save_every``
steps to ``OUT.resume``; a rerun with the same params continues from it (and removes it when done).

``localizer.members: N`` > 1 trains N localizers alone, from seeds ``seed + 10000 i`` (member 0 is the
single localizer of ``seed``), up to ``localizer.workers`` at a time in forked processes of one thread each
(the decoded set is shared, not copied), and writes them as one :class:`LocalizerEnsemble`; member i resumes
from ``OUT.resume`` (i = 0) or ``OUT.resume<i>``.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.checkpoint import read_resume, save_checkpoint
from models.localizer import AnyLocalizer, Localizer, LocalizerConfig, LocalizerEnsemble, infonce_loss, load, save
from pipeline import manifests, moments
from pipeline.params import DecodeParams, LocalizerParams

log = logging.getLogger(__name__)


@dataclass
class TrainSet:
    """Frames ``(M, S, S, 3)`` uint8, mels ``(M, 1, n_mels, F)`` float16, ``video`` and ``time`` ``(M,)``."""

    frames: torch.Tensor
    mels: torch.Tensor
    video: torch.Tensor
    time: torch.Tensor


def _decode_one(args: tuple[str, LocalizerParams, DecodeParams]) -> tuple[np.ndarray, torch.Tensor, np.ndarray] | str:
    path, p, d = args
    clip = moments.decode_clip(path, fps=d.fps, window_s=p.window_s, backend=d.backend, timeout_s=d.timeout_s,
                               every=p.frame_every)
    if isinstance(clip, str):
        return clip
    mels = moments.window_logmels(clip.audio, clip.times, n_mels=p.n_mels, window_s=p.window_s)
    return moments.resize_frames(clip.frames, p.image_size), mels.half(), clip.times


def train_videos(manifest: Path, limit: int) -> list[dict]:
    """The ok rows of the train split (at most ``limit``, in manifest order)."""
    rows = manifests.read(manifest, manifests.VIDEOS).to_pylist()
    return [r for r in rows if r["split"] == "train" and r["status"] == "ok"][:limit]


def build_set(manifest: Path, p: LocalizerParams, d: DecodeParams) -> tuple[TrainSet, dict]:
    """Decode the train videos with a pool of ``p.workers``; returns the set and {videos, ok, failed}."""
    rows = train_videos(manifest, p.max_videos)
    tasks = [(str(manifests.resolve(manifest, r["path"])), p, d) for r in rows]
    frames, mels, video, times, failed = [], [], [], [], 0
    with get_context("fork").Pool(max(1, p.workers), initializer=moments.worker_init) as pool:
        for i, out in enumerate(tqdm(pool.imap(_decode_one, tasks), total=len(tasks), desc="decode", unit="video")):
            if isinstance(out, str):
                failed += 1
                log.warning("skipping %s: %s", rows[i]["video_id"], out)
                continue
            frames.append(torch.from_numpy(out[0]))
            mels.append(out[1])
            video += [len(frames) - 1] * len(out[2])
            times.append(torch.from_numpy(out[2]))
    if not frames:
        raise ValueError(f"no usable train videos in {manifest} ({failed} failed)")
    data = TrainSet(torch.cat(frames), torch.cat(mels), torch.tensor(video), torch.cat(times))
    return data, dict(videos=len(rows), ok=len(rows) - failed, failed=failed)


def sample_pairs(data: TrainSet, n_videos: int, min_gap_s: float, gen: torch.Generator) -> torch.Tensor:
    """Indices ``(2 * n,)`` into the set: two times of each of ``n`` random videos, at least ``min_gap_s``
    apart where the video allows (else any two distinct frames)."""
    n_total = int(data.video.max()) + 1
    chosen = torch.randperm(n_total, generator=gen)[:n_videos]
    starts = torch.searchsorted(data.video, torch.arange(n_total + 1))
    first, second = [], []
    for v in chosen.tolist():
        lo, hi = int(starts[v]), int(starts[v + 1])
        i = lo + int(torch.randint(hi - lo, (1,), generator=gen))
        far = (data.time[lo:hi] - data.time[i]).abs() >= min_gap_s
        pool = far.nonzero().flatten() + lo
        if len(pool) == 0:
            pool = torch.tensor([j for j in range(lo, hi) if j != i] or [i])
        first.append(i)
        second.append(int(pool[torch.randint(len(pool), (1,), generator=gen)]))
    return torch.tensor(first + second)


def model_config(p: LocalizerParams, image_size: int) -> LocalizerConfig:
    """The architecture of one localizer (``members`` = 1) for frames of ``image_size`` pixels."""
    return LocalizerConfig(dim=p.dim, width=p.width, image_size=image_size, n_mels=p.n_mels,
                           n_frames=moments.n_mel_frames(p.window_s), temperature=p.temperature)


def _resume_state(path: Path | None, key: dict) -> dict | None:
    """The saved training state at ``path`` when it exists and was made with the same params and seed."""
    state = read_resume(path)
    if state is None:
        return None
    if state.get("key") != key:
        log.warning("ignoring %s: it was written with other params", path)
        return None
    return state


def train(data: TrainSet, p: LocalizerParams, seed: int, *, resume: Path | None = None,
          stop_at: int | None = None, member: int | None = None) -> tuple[Localizer, list[float]]:
    """Adam with a cosine schedule for ``p.steps`` steps; returns the model (eval) and the loss curve.

    With ``resume``, the full training state (model, optimizer, schedule, random generators, losses) is
    saved there every ``p.save_every`` steps and training continues from it when it exists (same params and
    seed), giving the same model as an uninterrupted run. ``stop_at`` ends the run early (tests)."""
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, p.threads))
    gen = torch.Generator().manual_seed(seed)
    cfg = model_config(p, int(data.frames.shape[1]))
    model = Localizer(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, p.steps))
    losses: list[float] = []
    key = dict(params=dataclasses.asdict(p), seed=seed, frames=int(len(data.video)))
    if state := _resume_state(resume, key):
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        losses = state["losses"].tolist()
        log.info("resuming from step %d (%s)", state["step"], resume)
    desc, line = ("train localizer", None) if member is None else (f"train localizer {member}", member)
    for step in tqdm(range(len(losses), p.steps), desc=desc, unit="step", initial=len(losses), total=p.steps,
                     position=line):
        if stop_at is not None and step >= stop_at:
            break
        losses.append(_step(model, opt, data, p, gen))
        sched.step()
        if resume is not None and (step + 1) % max(1, p.save_every) == 0:
            save_checkpoint(resume, model, cfg, step=step + 1, key=key, optimizer=opt.state_dict(),
                            scheduler=sched.state_dict(), gen=gen.get_state(), torch_rng=torch.get_rng_state(),
                            losses=torch.tensor(losses, dtype=torch.float64))
        if step % 50 == 0:
            log.info("step %d loss %.3f", step, losses[-1])
    return model.eval(), losses


def _step(model: Localizer, opt: torch.optim.Optimizer, data: TrainSet, p: LocalizerParams,
          gen: torch.Generator) -> float:
    """One InfoNCE step on two times of ``p.batch_videos`` videos (frames randomly flipped); the loss."""
    idx = sample_pairs(data, p.batch_videos, p.min_gap_s, gen)
    frames = data.frames[idx].permute(0, 3, 1, 2).float() / 255.0
    flip = torch.rand(len(idx), generator=gen) < 0.5
    frames = torch.where(flip.view(-1, 1, 1, 1), frames.flip(-1), frames)
    loss = infonce_loss(model.embed_frames(frames), model.embed_audio(data.mels[idx].float()), model.cfg.temperature)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


MEMBER_SEED_STRIDE = 10_000  # member i of an ensemble trains from seed + 10000 i


def member_resume(out: Path, i: int) -> Path:
    """Where member ``i``'s training state is kept: ``OUT.resume`` for member 0, ``OUT.resume<i>`` after."""
    return out.with_name(out.name + ".resume" + (str(i) if i else ""))


_SHARED: TrainSet | None = None  # the decoded set, inherited (not pickled) by the forked member processes


def _train_member(job: tuple[int, LocalizerParams, int, Path]) -> tuple[dict, list[float]]:
    """Train member ``i`` in a pool process on the shared set -> (its state dict, its loss curve)."""
    i, p, seed, out = job
    assert _SHARED is not None
    model, losses = train(_SHARED, p, seed + MEMBER_SEED_STRIDE * i, resume=member_resume(out, i),
                          member=i)
    return model.state_dict(), losses


def train_members(data: TrainSet, p: LocalizerParams, seed: int, out: Path) -> tuple[AnyLocalizer, list[list[float]]]:
    """The ``p.members`` localizers (one: the plain model), and each one's loss curve.

    One member trains in this process; several train in up to ``p.workers`` forked processes (each with
    ``p.threads`` threads, the set shared copy-on-write). Each gives the same weights as a lone run of its
    seed. Resume files stay until the caller has saved the result."""
    if p.members == 1:
        model, losses = train(data, p, seed, resume=member_resume(out, 0))
        return model, [losses]
    global _SHARED
    _SHARED = data
    jobs = [(i, p, seed, out) for i in range(p.members)]
    try:
        with get_context("fork").Pool(min(p.members, max(1, p.workers))) as pool:
            results = pool.map(_train_member, jobs, chunksize=1)
    finally:
        _SHARED = None
    cfg = model_config(p, int(data.frames.shape[1]))
    singles = [Localizer(cfg) for _ in results]
    for single, (state, _) in zip(singles, results):
        single.load_state_dict(state)
    return LocalizerEnsemble.of(singles).eval(), [losses for _, losses in results]


def run(seed: int, p: LocalizerParams, d: DecodeParams, *, videos: Path, out: Path) -> dict:
    """Train (or copy ``p.checkpoint``) into ``out``; returns a summary."""
    if p.checkpoint:
        model = load(p.checkpoint)  # strict: a wrong file fails here, not in `score`
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p.checkpoint, out.with_name(out.name + ".tmp"))
        out.with_name(out.name + ".tmp").replace(out)
        return dict(source=str(p.checkpoint), config=model.cfg.__dict__)
    t0 = time.perf_counter()
    data, counts = build_set(Path(videos), p, d)
    t1 = time.perf_counter()
    model, curves = train_members(data, p, seed, Path(out))
    t2 = time.perf_counter()
    tails = [float(np.mean(c[-20:])) if c else float("nan") for c in curves]
    tail = float(np.mean(tails))
    save(model, out, step=p.steps, window_s=p.window_s, loss=tail, member_loss=tails)
    for i in range(p.members):
        member_resume(Path(out), i).unlink(missing_ok=True)
    first = [c[0] for c in curves if c]
    summary = dict(**counts, frames=int(len(data.video)), steps=p.steps, members=p.members,
                   loss_first=float(np.mean(first)) if first else None, loss_last=tail,
                   decode_s=round(t1 - t0, 1), train_s=round(t2 - t1, 1))
    log.info("train_localizer: %s", summary)
    return summary
