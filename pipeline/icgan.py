"""IC-GAN training (Casanova et al. 2021) on the BigGAN backbone, from a corpus and frozen instance features.

Every instance i of the corpus has a unit-norm feature h_i (the frozen image encoder) and a neighbourhood:
its ``k`` nearest corpus images in feature space (itself included). A step draws a batch of instances; the
real images are random members of their neighbourhoods, the fakes are G(z, h_i); D scores both with
projection on h_i (hinge loss, DiffAugment on real and fake alike), then G is updated and the EMA copy of G
(used for sampling) follows it. :class:`Trainer` holds the nets, optimisers and step, and round-trips
through a plain dict for resuming.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.biggan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from models.gan_training import d_hinge_loss, ema_update, g_hinge_loss
from pipeline.augment import diff_augment
from pipeline.composites import apart, paste
from pipeline.devices import autocast, to_device


@dataclass(frozen=True)
class GanRecipe:
    """Optimisation knobs (``params.GeneratorParams`` holds the defaults)."""

    batch: int = 32
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    d_steps: int = 1
    betas: tuple[float, float] = (0.0, 0.999)
    augment: str = "translation,color"
    ema_decay: float = 0.999
    ema_start: int = 100
    amp: bool = False  # bf16 autocast of the G and D forward passes on CUDA and on CPUs with native bf16
    feature_weight: float = 0.0  # weight of 1 - cos(E(fake), h) in G's loss (needs ``encoder`` in Trainer)
    neighbour_mean: float = 0.0  # share of conditions replaced by unit(mean of the instance's neighbourhood features)
    composites: float = 0.0  # share of rows that are two-source composites (needs Trainer.set_composites)


@torch.no_grad()
def neighbourhoods(features: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Indices ``Tensor[N, k]`` of each row's ``k`` most cosine-similar rows of unit-norm ``features [N, D]``
    (the row itself first, as its own nearest neighbour), on the features' device."""
    k = min(k, features.shape[0])
    out = []
    for start in range(0, features.shape[0], chunk):
        sim = features[start:start + chunk] @ features.t()
        rows = torch.arange(start, start + sim.shape[0], device=sim.device)
        sim[torch.arange(sim.shape[0], device=sim.device), rows] = float("inf")
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


def to_gan_images(images: np.ndarray, resolution: int) -> Tensor:
    """uint8 ``[N, H, W, 3]`` -> uint8 ``Tensor[N, 3, R, R]`` (antialiased bilinear resize when H != R)."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2)
    if x.shape[-1] == resolution:
        return x.contiguous()
    out = [F.interpolate(x[s:s + 1024].float(), size=(resolution, resolution), mode="bilinear",
                         antialias=True, align_corners=False) for s in range(0, len(x), 1024)]
    return torch.cat(out).round().clamp(0, 255).to(torch.uint8)


def to_unit(x: Tensor) -> Tensor:
    """uint8 ``[B, 3, R, R]`` -> float in [-1, 1]."""
    return x.float() / 127.5 - 1.0


class Trainer:
    """G, D, EMA G and their optimisers on ``device``. ``step(real_u8, feats, nbrs, gen)`` does one IC-GAN
    update: the corpus and its features may stay on the CPU (each batch is moved), the random draws come
    from the CPU generator ``gen`` (the same batches, noise and augmentations on any device).

    ``encoder`` (with ``recipe.feature_weight > 0``): a frozen, differentiable map from G's images
    ``[B, 3, R, R]`` in [-1, 1] to features ``[B, D]`` (``pipeline.fid.FeatureConsistency``); G is then also
    pulled toward images whose feature points where its conditioning feature does."""

    def __init__(self, g_cfg: GeneratorConfig, d_cfg: DiscriminatorConfig, r: GanRecipe,
                 device: torch.device = torch.device("cpu"), encoder: nn.Module | None = None) -> None:
        if r.feature_weight > 0 and encoder is None:
            raise ValueError("feature_weight > 0 needs the image encoder")
        self.g_cfg, self.d_cfg, self.recipe, self.device = g_cfg, d_cfg, r, device
        self.encoder = encoder if r.feature_weight > 0 else None
        self.G, self.D = Generator(g_cfg).to(device), Discriminator(d_cfg).to(device)
        self.G_ema = copy.deepcopy(self.G).eval()
        for p in self.G_ema.parameters():
            p.requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=r.g_lr, betas=r.betas, eps=1e-6)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=r.d_lr, betas=r.betas, eps=1e-6)
        self.steps = 0
        self.alpha: Tensor | None = None  # uint8 [N, 1, R, R]: each corpus image's foreground (composites)

    def set_feature_centre(self, mean: Tensor, whiten: Tensor | None = None) -> None:
        """Store ``mean`` ``[D]`` (the corpus' mean unit feature) and, for networks built with
        ``whiten_features``, the ZCA matrix ``whiten`` ``[D, D]`` in G, D and EMA G, built with
        ``centre_features`` or ``whiten_features``; each then conditions on ``unit((unit(h) - mean) W)``."""
        for net in (self.G, self.D, self.G_ema):
            centre = net.feature_centre
            if centre is None:
                raise ValueError("the networks were built without centre_features")
            centre.mean.copy_(mean.to(centre.mean))
            if (whiten is None) != (centre.whiten is None):
                raise ValueError("a whitening matrix goes with whiten_features, and only with it")
            if whiten is not None:
                centre.whiten.copy_(whiten.to(centre.whiten))

    def set_composites(self, alpha_u8: Tensor) -> None:
        """Store each corpus image's foreground ``alpha_u8`` uint8 ``[N, 1, R, R]`` (255: foreground), which
        ``recipe.composites`` pastes from one image onto another."""
        self.alpha = alpha_u8

    def _batch(self, real_u8: Tensor, feats: Tensor, nbrs: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """(real images [B, 3, R, R] in [-1, 1], conditioning features [B, D]) for one D update. With
        ``recipe.neighbour_mean`` p > 0, a share p of the rows is conditioned on the unit mean of the instance's
        neighbourhood features instead of its own: the averaged features a sound's prediction looks like.
        With ``recipe.composites`` q > 0, a share q of the rows becomes a two-source scene: a second
        instance's neighbour's foreground pasted beside the row's own, conditioned on the unit sum of the two
        unit features (what a mixed sound's prediction looks like)."""
        n, k = nbrs.shape
        inst = torch.randint(0, n, (self.recipe.batch,), generator=gen)
        pick = nbrs[inst, torch.randint(0, k, (self.recipe.batch,), generator=gen)]
        h = feats[inst]
        if self.recipe.neighbour_mean > 0:  # drawn only then: the default's random stream is unchanged
            use = torch.rand(len(inst), generator=gen) < self.recipe.neighbour_mean
            h = torch.where(use[:, None], F.normalize(feats[nbrs[inst]].float().mean(1), dim=1).to(h.dtype), h)
        real = to_unit(real_u8[pick])
        if self.recipe.composites > 0:
            real, h = self._composites(real, h, pick, real_u8, feats, nbrs, gen)
        return to_device(real, self.device), to_device(h, self.device)

    def _composites(self, real: Tensor, h: Tensor, pick: Tensor, real_u8: Tensor, feats: Tensor, nbrs: Tensor,
                    gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """A share ``recipe.composites`` of the rows of ``real [B, 3, R, R]`` (the corpus images ``pick [B]``)
        / ``h [B, D]`` as two-source composites (see :meth:`_batch`); the second foreground is moved to the
        quadrant farthest from the first (``pipeline.composites.apart``)."""
        if self.alpha is None:
            raise ValueError("generator.composites needs each corpus image's foreground (Trainer.set_composites)")
        n, k = nbrs.shape
        b = len(real)
        other = torch.randint(0, n, (b,), generator=gen)
        top = nbrs[other, torch.randint(0, k, (b,), generator=gen)]
        use = torch.rand(b, generator=gen) < self.recipe.composites
        second, alpha = apart(to_unit(real_u8[top]), self.alpha[top].float().div(255),
                              self.alpha[pick].float().div(255))
        both = F.normalize(F.normalize(h.float(), dim=1) + feats[other].float(), dim=1).to(h.dtype)
        return paste(real, second, alpha * use.view(b, 1, 1, 1)), torch.where(use[:, None], both, h)

    def _z(self, gen: torch.Generator) -> Tensor:
        return to_device(torch.randn(self.recipe.batch, self.G.dim_z, generator=gen), self.device)

    def step(self, real_u8: Tensor, feats: Tensor, nbrs: Tensor, gen: torch.Generator) -> dict[str, float]:
        """One IC-GAN update (``d_steps`` D updates, one G update, EMA); returns the losses. With
        ``recipe.amp`` on CUDA or on a CPU with native bf16 (AMX, AVX512-BF16) the forward passes run under
        bf16 autocast (spectral-norm buffers and optimiser state stay float32); the hinge losses are
        computed on float32 scores."""
        r, aug = self.recipe, self.recipe.augment
        self.G.train()
        for _ in range(r.d_steps):
            real, h = self._batch(real_u8, feats, nbrs, gen)
            with autocast(self.device, r.amp, cpu=True):
                with torch.no_grad():
                    fake = self.G(self._z(gen), feature=h)
                d_real = self.D(diff_augment(real, aug, gen), feature=h)
                d_fake = self.D(diff_augment(fake, aug, gen), feature=h)
            d_loss = d_hinge_loss(d_real.float(), d_fake.float())
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        _, h = self._batch(real_u8, feats, nbrs, gen)
        with autocast(self.device, r.amp, cpu=True):
            seen = diff_augment(self.G(self._z(gen), feature=h), aug, gen)
            d_gen = self.D(seen, feature=h)
            own = self.encoder(seen) if self.encoder is not None else None
        g_loss = g_hinge_loss(d_gen.float())
        out = {}
        if own is not None:  # the augmented fake, as D sees it: no pixel pattern only the encoder reads
            feat_loss = 1 - F.cosine_similarity(own.float(), h.float(), dim=1).mean()
            g_loss = g_loss + r.feature_weight * feat_loss
            out["feat_loss"] = float(feat_loss.detach())
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.steps += 1
        ema_update(self.G_ema, self.G, r.ema_decay if self.steps > r.ema_start else 0.0)
        return {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach()), **out}

    def state(self) -> dict:
        """Everything needed to resume, as tensors / plain containers (``torch.load(weights_only=True)``)."""
        return {"model": self.G_ema.state_dict(), "config": dataclasses.asdict(self.g_cfg), "step": self.steps,
                "G": self.G.state_dict(), "D": self.D.state_dict(), "d_config": dataclasses.asdict(self.d_cfg),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load(self, blob: dict) -> None:
        """Restore :meth:`state` (strict key checks by ``load_state_dict``)."""
        self.G.load_state_dict(blob["G"])
        self.D.load_state_dict(blob["D"])
        self.G_ema.load_state_dict(blob["model"])
        self.opt_g.load_state_dict(blob["opt_g"])
        self.opt_d.load_state_dict(blob["opt_d"])
        self.steps = int(blob["step"])


@torch.no_grad()
def sample(G: Generator, feats: Tensor, z: Tensor, batch: int = 64) -> Tensor:
    """G(z, feats) in eval mode and float32 on G's device: ``[N, dim_z]``, ``[N, D]`` (any device) -> images
    ``Tensor[N, 3, R, R]`` in [-1, 1] on G's device."""
    G.eval()
    dev = next(G.parameters()).device
    return torch.cat([G(z[s:s + batch].to(dev), feature=feats[s:s + batch].to(dev))
                      for s in range(0, len(z), batch)])
