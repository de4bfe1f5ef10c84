"""The audio-encoder training loop (paper Eq. 1-2): z_A of a sound onto z_V of its frame.

One global batch per step, whatever the number of DDP ranks: each rank encodes its slice, the audio
features are all-gathered with their gradients (``torch.distributed.nn.all_gather``) and every rank
computes the loss of the whole batch, so the negatives of the contrastive losses are the global
batch's; BatchNorm statistics are global too (``models.sync_bn``). DDP averages the W identical
per-rank objectives' gradients, which is the gradient of the one-process loss.

Per step: optional sound mix and gain (``pipeline.mix_augment``, ``pipeline.gain_augment``) -> spectrogram
(``pipeline.audio_input``; made in the DataLoader workers or here on the device) -> optional masks -> audio
encoder (bfloat16 autocast on CUDA) -> loss -> optimizer step. Pairs whose audio is broken keep their
slot but are left out of the loss (``valid``).
"""
from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.distributed.nn import all_gather
from torch.nn.parallel import DistributedDataParallel

from models.audio_encoder import AudioEncoder, AudioEncoderConfig
from models.sync_bn import convert_global_bn
from pipeline import audio_input
from pipeline.distributed import Dist, all_true
from pipeline.gain_augment import GainShift
from pipeline.mix_augment import SoundMix
from pipeline.params import AudioEncoderParams
from pipeline.retrieval import centroid_accuracy, recall_at

log = logging.getLogger(__name__)
# the autograd-aware collectives are public and work on gloo; their replacements are private
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_", category=FutureWarning)


def build_model(p: AudioEncoderParams, embed_dim: int, d: Dist) -> tuple[AudioEncoder, nn.Module]:
    """(the bare encoder, the module to train: DDP-wrapped under torchrun)."""
    model = AudioEncoder(AudioEncoderConfig(width=p.width, embed_dim=embed_dim))
    if d.world > 1 and p.sync_bn:
        convert_global_bn(model)
    model = model.to(d.device)
    if d.world == 1:
        return model, model
    ids = [d.device.index] if d.device.type == "cuda" else None
    return model, DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def make_optimizer(p: AudioEncoderParams, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (paper: lr 1e-3, weight decay 1e-5) or AdamW."""
    cls = torch.optim.Adam if p.optimizer == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)


def gather_rows(x: Tensor, d: Dist, *, grad: bool) -> Tensor:
    """Concatenate every rank's ``Tensor[L, ...]`` in rank order (with gradients when ``grad``)."""
    if d.world == 1:
        return x
    if grad:
        return torch.cat(all_gather(x))
    parts = [torch.empty_like(x) for _ in range(d.world)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class Ema:
    """An exponential moving average of a module's weights (float parameters and buffers; integer buffers
    such as BatchNorm's batch count are copied). The decay warms up as ``min(decay, (1 + t) / (10 + t))``
    after ``t`` updates, so early averages are not dominated by the random initial weights."""

    def __init__(self, model: nn.Module, decay: float):
        self.module, self.decay, self.updates = copy.deepcopy(model).eval(), decay, 0
        for q in self.module.parameters():
            q.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average toward ``model``'s current weights (same architecture)."""
        self.updates += 1
        w = 1.0 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, cur in zip(self.module.state_dict().values(), model.state_dict().values()):
            if avg.is_floating_point():
                avg.lerp_(cur.detach().to(avg.device), w)
            else:
                avg.copy_(cur)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])


@dataclass
class Step:
    """What one training step needs besides the batch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    spec_fn: audio_input.SpecFn
    mask_fn: Callable[[Tensor], Tensor] | None
    d: Dist
    amp: bool
    gain: GainShift | None = None  # played on ready spectrograms, or on the waveforms when the batch has no "spec"
    ema: tuple[Ema, nn.Module] | None = None  # (the average, the bare model it follows), updated every step
    mix: SoundMix | None = None  # waveform mixes of two rows (the batch then carries waves), before the gain

    def autocast(self) -> Any:
        on = self.amp and self.d.device.type == "cuda"
        return torch.autocast(device_type=self.d.device.type, dtype=torch.bfloat16, enabled=on)

    def spectrogram(self, batch: dict[str, Any]) -> Tensor:
        """The batch's spectrograms on the device: from the workers when they made them, else made here."""
        if "spec" in batch:
            return batch["spec"].to(self.d.device, non_blocking=True)
        return self.spec_fn(batch["wave"].to(self.d.device, non_blocking=True))

    def valid_rows(self, batch: dict[str, Any]) -> Tensor | None:
        """Indices ``[V]`` (on the device) of the global batch's valid pairs, or None when all are valid.
        With one process the mask is read on the CPU, so the step never waits for the device."""
        if self.d.world == 1:
            valid = batch["valid"].bool()
        else:
            valid = gather_rows(batch["valid"].to(self.d.device), self.d, grad=False).cpu()
        return None if bool(valid.all()) else valid.nonzero().flatten().to(self.d.device, non_blocking=True)

    def __call__(self, batch: dict[str, Any]) -> Tensor:
        """One optimizer step on a batch ``wave [L, n], feature [L, D], valid [L]``; the global loss as a
        0-d tensor on the device, read by the caller when it needs it (NaN when fewer than two pairs of the
        global batch are valid: the step is then a zero update). One process never waits for the device
        here, so the next batch's copy and kernels queue while this step runs."""
        dev = self.d.device
        with torch.no_grad():
            z_v = batch["feature"].to(dev, non_blocking=True)
            if (self.gain is not None or self.mix is not None) and "spec" not in batch:
                wave = batch["wave"].to(dev, non_blocking=True)
                if self.mix is not None:
                    wave, z_v = self.mix(wave, z_v, batch["valid"])
                if self.gain is not None:  # played on the waveform, clipped as at test time
                    spec, z_v = self.gain.waveform(wave, z_v, self.spec_fn)
                else:
                    spec = self.spec_fn(wave)
            elif self.mix is not None:
                raise ValueError("audio_encoder.mix_p mixes waveforms: the batches must carry waves, not spectrograms")
            elif self.gain is not None:
                spec, z_v = self.gain(self.spectrogram(batch), z_v)
            else:
                spec = self.spectrogram(batch)
            if self.mask_fn is not None:
                spec = self.mask_fn(spec)
        rows = self.valid_rows(batch)
        with self.autocast():
            z_a = self.model(spec)
        z_a = gather_rows(z_a.float(), self.d, grad=True)
        z_v = gather_rows(z_v, self.d, grad=False)
        few = rows is not None and len(rows) < 2
        if few:  # nothing to contrast: a zero step keeps every rank in the collectives
            loss = z_a.sum() * 0.0
        else:
            loss = self.loss_fn(z_a, z_v) if rows is None else self.loss_fn(z_a[rows], z_v[rows])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema[0].update(self.ema[1])
        return torch.full((), float("nan"), device=dev) if few else loss.detach()


def on_device(batches: Iterable[dict[str, Any]], device: torch.device) -> Iterator[dict[str, Any]]:
    """The batches with their feature and audio tensors on ``device``. On CUDA each batch is copied (from
    the loader's pinned memory) on a side stream: the step loop never waits for the device, so the copy
    overlaps the previous step's kernels instead of queueing behind them. ``valid`` stays on the CPU
    (``Step.valid_rows`` reads it there). Elsewhere the batches pass unchanged."""
    if device.type != "cuda":
        yield from batches
        return
    side, main = torch.cuda.Stream(device), torch.cuda.current_stream(device)
    moved = ("wave", "spec", "feature")
    for batch in batches:
        with torch.cuda.stream(side):
            batch = {k: v.to(device, non_blocking=True) if k in moved else v for k, v in batch.items()}
        main.wait_stream(side)  # the copy is done before the step's kernels use it
        for k in moved:
            if k in batch:
                batch[k].record_stream(main)  # its memory is freed in the main stream's order
        yield batch


@dataclass
class EpochResult:
    losses: list[float] = field(default_factory=list)
    samples: int = 0
    skipped: int = 0
    seconds: float = 0.0


def train_epoch(step: Step, batches: Iterable[dict[str, Any]], *, shard_mode: bool,
                max_steps: int | None) -> EpochResult:
    """Run ``step`` over one epoch of batches (at most ``max_steps`` steps); losses are global."""
    res, t0, losses = EpochResult(), time.perf_counter(), []
    step.model.train()
    it = on_device(batches, step.d.device)
    while max_steps is None or len(losses) < max_steps:
        batch = next(it, None)
        while batch is not None and len(batch["keys"]) == 0:  # a count of skipped pairs only
            res.skipped += batch["skipped"]
            batch = next(it, None)
        if shard_mode and not all_true(batch is not None, step.d):
            break  # another rank ran out of shards: everyone stops together
        if batch is None:
            break
        res.skipped += batch["skipped"]
        losses.append(step(batch))
        res.samples += len(batch["keys"]) * step.d.world
    res.losses = torch.stack(losses).cpu().tolist() if losses else []  # the epoch's one wait for the device
    res.seconds = time.perf_counter() - t0
    return res


@torch.no_grad()
def encode(model: nn.Module, batches: Iterable[dict[str, Any]], step: Step) -> tuple[Tensor, Tensor, list[str], Tensor]:
    """Audio features of a split, in eval mode: (z_a ``[N, D]``, z_v ``[N, D]``, keys, valid ``[N]``), CPU."""
    model.eval()
    za, zv, keys, valid = [], [], [], []
    for batch in batches:
        if not batch["keys"]:
            continue
        with step.autocast():
            za.append(model(step.spectrogram(batch)).float().cpu())
        zv.append(batch["feature"])
        keys += batch["keys"]
        valid.append(batch["valid"])
    if not keys:
        return torch.zeros(0, 1), torch.zeros(0, 1), [], torch.zeros(0, dtype=torch.bool)
    return torch.cat(za), torch.cat(zv), keys, torch.cat(valid)


def validate(model: nn.Module, batches: Iterable[dict[str, Any]], step: Step, *, batch: int,
             labels: dict[str, str | None], centroids: tuple[Tensor, list[str]] | None) -> dict[str, float]:
    """Val metrics: R@1/R@5 audio->frame feature over the whole split, loss (in batches of ``batch``),
    nearest-class-centroid accuracy (when labels and train centroids exist), and the pair count."""
    z_a, z_v, keys, valid = encode(model, batches, step)
    z_a, z_v, keys = z_a[valid], z_v[valid], [k for k, ok in zip(keys, valid.tolist()) if ok]
    recall = recall_at(z_a, z_v)
    losses = [float(step.loss_fn(z_a[s:s + batch], z_v[s:s + batch])) for s in range(0, len(keys), batch)
              if len(keys[s:s + batch]) > 1]
    out = {"val_r1": recall[1], "val_r5": recall[5], "val_pairs": len(keys),
           "val_loss": sum(losses) / len(losses) if losses else float("nan")}
    if centroids is not None:
        known = [i for i, k in enumerate(keys) if labels.get(k) in centroids[1]]
        out["val_class_acc"] = centroid_accuracy(z_a[known], [labels[keys[i]] for i in known], *centroids)
    return out
