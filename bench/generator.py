"""Generator benchmark: sampling images/s at batch 1 and 8, and the cost of one IC-GAN training step against a
plain DCGAN step of similar size (same resolution, batch, parameter count within a factor ~1.5), both in
float32 and, where the CPU has native bf16 (AMX / AVX512-BF16; what ``generator.amp`` then uses), under bf16
autocast.

    python bench/generator.py [--params params.yaml] [--threads 1] [--paper]

``--paper`` adds the published 128 px generator (random weights; sampling only). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn as nn

from models.biggan import Generator, GeneratorConfig
from models.gan_training import d_hinge_loss, g_hinge_loss
from models.image_encoder import ImageEncoder, ImageEncoderConfig
from pipeline import icgan
from pipeline.devices import cpu_bf16
from pipeline.fid import FeatureConsistency
from pipeline.params import GeneratorParams, section
from stages.train_generator import configs, recipe


def timed(fn, repeat: int) -> float:
    """Seconds per call of ``fn`` (after one warm-up call)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def sampling(G: Generator, feat_dim: int, batch: int, repeat: int) -> float:
    """Images per second of ``G`` in eval mode at ``batch``."""
    z, h = torch.randn(batch, G.dim_z), nn.functional.normalize(torch.randn(batch, feat_dim), dim=1)
    G.eval()
    with torch.no_grad():
        return batch / timed(lambda: G(z, feature=h), repeat)


def dcgan(res: int, ch: int, z_dim: int) -> tuple[nn.Module, nn.Module]:
    """A plain DCGAN pair for ``res`` px: transposed-conv G from a 4x4 map, strided-conv D."""
    n = {32: 3, 64: 4}[res]
    g: list[nn.Module] = [nn.ConvTranspose2d(z_dim, ch * 2 ** (n - 1), 4, 1, 0), nn.BatchNorm2d(ch * 2 ** (n - 1)),
                          nn.ReLU()]
    for i in range(n - 1, 0, -1):
        g += [nn.ConvTranspose2d(ch * 2**i, ch * 2 ** (i - 1), 4, 2, 1), nn.BatchNorm2d(ch * 2 ** (i - 1)), nn.ReLU()]
    g += [nn.ConvTranspose2d(ch, 3, 4, 2, 1), nn.Tanh()]
    d: list[nn.Module] = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
    for i in range(n - 1):
        d += [nn.Conv2d(ch * 2**i, ch * 2 ** (i + 1), 4, 2, 1), nn.LeakyReLU(0.2)]
    d += [nn.Conv2d(ch * 2 ** (n - 1), 1, 4, 1, 0), nn.Flatten()]
    return nn.Sequential(*g), nn.Sequential(*d)


def dcgan_step(G: nn.Module, D: nn.Module, opt_g, opt_d, real: torch.Tensor, z_dim: int, bf16: bool) -> None:
    """One hinge-loss D update and one G update; forward passes under CPU bf16 autocast when ``bf16``."""
    b = real.shape[0]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        fake = G(torch.randn(b, z_dim, 1, 1))
        scores = D(real).float(), D(fake.detach()).float()
    loss_d = d_hinge_loss(*scores)
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        score = D(G(torch.randn(b, z_dim, 1, 1))).float()
    loss_g = g_hinge_loss(score)
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()


def n_params(*mods: nn.Module) -> int:
    return sum(p.numel() for m in mods for p in m.parameters())


def consistency(p: GeneratorParams, feat_dim: int, size: int) -> FeatureConsistency | None:
    """With ``feature_weight``: a random-weight image encoder of the world's shape (``feat_dim = 32 x width``)
    at input ``size``, as the stage's feature-consistency term runs it (its cost does not depend on weights)."""
    if p.feature_weight <= 0:
        return None
    if feat_dim % 32:
        raise SystemExit(f"--feat-dim {feat_dim}: the image encoder's feature size is 32 x its width")
    enc = ImageEncoder(ImageEncoderConfig(width=feat_dim // 32, hidden_dim=256, proj_dim=32, n_prototypes=128))
    return FeatureConsistency(enc, size)


def step_rows(p: GeneratorParams, feat_dim: int, repeat: int, bf16: bool, size: int = 64) -> list[tuple[str, str]]:
    """Seconds per IC-GAN step (with the feature-consistency encoder pass when ``p.feature_weight > 0``) and per
    DCGAN step of similar size, float32 or bf16 autocast, and their ratio."""
    g_cfg, d_cfg = configs(p, feat_dim)
    encoder = consistency(p, feat_dim, size)
    trainer = icgan.Trainer(g_cfg, d_cfg, dataclasses.replace(recipe(p), amp=bf16), encoder=encoder)
    real = torch.randint(0, 255, (256, 3, p.resolution, p.resolution), dtype=torch.uint8)
    feats = nn.functional.normalize(torch.randn(256, feat_dim), dim=1)
    nbrs, gen = icgan.neighbourhoods(feats, p.k_neighbours), torch.Generator().manual_seed(0)
    t_ic = timed(lambda: trainer.step(real, feats, nbrs, gen), repeat)
    G, D = dcgan(p.resolution, p.g_ch * 2, p.dim_z)
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), 2e-4, betas=(0.0, 0.999)) for m in (G, D))
    batch = icgan.to_unit(real[: p.batch])
    t_dc = timed(lambda: dcgan_step(G, D, opt_g, opt_d, batch, p.dim_z, bf16), repeat)
    kind = "bf16 autocast" if bf16 else "float32"
    return [(f"IC-GAN step, {kind} ({n_params(trainer.G, trainer.D) / 1e6:.2f} M params, batch {p.batch}, "
             f"{p.resolution} px, d_steps {p.d_steps}, augment '{p.augment}', feature_weight {p.feature_weight:g})",
             f"{t_ic:.3f} s"),
            (f"DCGAN step, {kind} ({n_params(G, D) / 1e6:.2f} M params, batch {p.batch}, {p.resolution} px)",
             f"{t_dc:.3f} s"),
            (f"IC-GAN / DCGAN step cost, {kind}", f"{t_ic / t_dc:.1f}x")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--feat-dim", type=int, default=256, help="instance feature size (world encoder: 32 x width)")
    ap.add_argument("--encoder-size", type=int, default=64, help="image encoder input side (world: 64)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--paper", action="store_true", help="also time the published 128 px generator")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = section(args.params, "generator", GeneratorParams)
    G = Generator(configs(p, args.feat_dim)[0])
    rows = [("world G sampling, batch 1", f"{sampling(G, args.feat_dim, 1, args.repeat):.1f} images/s"),
            ("world G sampling, batch 8", f"{sampling(G, args.feat_dim, 8, args.repeat):.1f} images/s")]
    if args.paper:
        big = Generator(GeneratorConfig(), skip_init=True)
        rows += [(f"published 128 px G sampling, batch {b}", f"{sampling(big, 2048, b, 2):.2f} images/s")
                 for b in (1, 8)]
    for bf16 in (False, True) if cpu_bf16() else (False,):
        rows += step_rows(p, args.feat_dim, args.repeat, bf16, args.encoder_size)
    print(f"threads {args.threads}, native CPU bf16: {cpu_bf16()}\n\n| measurement | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
