"""IC-GAN generator and discriminator on the BigGAN backbone (Casanova et al. 2021; Brock et al. 2019).

The modules reproduce the published ``BigGAN_PyTorch/BigGAN.py`` of facebookresearch/ic_gan: same
state-dict key names, shapes and order, and the same forward pass, so a published ``G_ema_best0.pth``
loads strictly and draws the same images. Loading lives in :mod:`models.biggan_io`, saving in
:mod:`models.checkpoint`.

Generator: z [B, dim_z] is split into ``len(blocks) + 1`` chunks (hierarchical z); the first feeds the
linear layer, each other one is concatenated to the condition of one residual block. The condition is the
instance feature [B, feat_dim] through a spectral-normed Linear(feat_dim -> shared_dim_feat) (and, with
``class_cond``, a class embedding [B, shared_dim] before it); it drives every conditional batch norm.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.biggan_layers import DBlock, GBlock, OutputBatchNorm, SelfAttention, SNSettings

# Channel multipliers per resolution (published G_arch / D_arch); D's first input is RGB.
_G_IN = {32: [4, 4, 4], 64: [16, 16, 8, 4], 128: [16, 16, 8, 4, 2], 256: [16, 16, 8, 8, 4, 2],
         512: [16, 16, 8, 8, 4, 2, 1]}
_G_OUT = {32: [4, 4, 4], 64: [16, 8, 4, 2], 128: [16, 8, 4, 2, 1], 256: [16, 8, 8, 4, 2, 1],
          512: [16, 8, 8, 4, 2, 1, 1]}
_D_OUT = {32: [4, 4, 4, 4], 64: [1, 2, 4, 8, 16], 128: [1, 2, 4, 8, 16, 16], 256: [1, 2, 4, 8, 8, 16, 16]}
# Blocks that halve the resolution (published D_arch): all but the last, except at 32 px (two of four).
_D_DOWN = {32: [True, True, False, False]}


def _attn_resolutions(attn: str) -> set[int]:
    """'32_64' -> {32, 64}; '' or '0' -> no attention."""
    return {int(item) for item in attn.split("_") if item and int(item) > 0}


def _pick(config: Mapping[str, Any], key: str, default: Any) -> Any:
    value = config.get(key, default)
    return default if value is None else value


@dataclasses.dataclass
class _CommonConfig:
    """Settings both networks have: conditioning, instance-feature size, spectral norm and init.

    n_classes [n_classes], class_cond [class_cond], instance_cond [instance_cond], feat_dim (2048:
    ResNet-50 features; hard-wired in the published code), sn_eps [SN_eps], num_svs [num_G_SVs /
    num_D_SVs], num_itrs [num_G_SV_itrs / num_D_SV_itrs], init [G_init / D_init]. centre_features (ours,
    not in the published code): the instance feature becomes ``unit(unit(h) - m)`` before its linear layer,
    ``m`` a stored buffer (``feature_centre.mean``), set to the training corpus' mean unit feature.
    whiten_features (ours): also multiplied by a stored ZCA matrix ``W`` (``feature_centre.whiten``) before
    the second normalisation, ``unit((unit(h) - m) W)``; implies the centring.
    """

    n_classes: int = 1000
    class_cond: bool = False
    instance_cond: bool = True
    feat_dim: int = 2048
    sn_eps: float = 1e-6
    num_svs: int = 1
    num_itrs: int = 1
    init: str = "ortho"
    centre_features: bool = False
    whiten_features: bool = False


def _common_from_icgan(config: Mapping[str, Any], net: str) -> dict[str, Any]:
    """The :class:`_CommonConfig` fields from a published config; ``net`` is "G" or "D"."""
    return {
        "n_classes": int(_pick(config, "n_classes", 1000)),
        "class_cond": bool(_pick(config, "class_cond", False)),
        "instance_cond": bool(_pick(config, "instance_cond", False)),
        "sn_eps": float(_pick(config, "SN_eps", 1e-6)),
        "num_svs": int(_pick(config, f"num_{net}_SVs", 1)),
        "num_itrs": int(_pick(config, f"num_{net}_SV_itrs", 1)),
        "init": str(_pick(config, f"{net}_init", "ortho")),
    }


@dataclasses.dataclass
class GeneratorConfig(_CommonConfig):
    """Generator hyper-parameters (and :class:`_CommonConfig`'s); published config key in brackets.

    ch [G_ch], dim_z [dim_z], bottom_width [bottom_width], resolution [resolution], attn [G_attn],
    hier [hier], shared_dim [shared_dim; 0 -> dim_z], shared_dim_feat [shared_dim_feat],
    shared_feat [G_shared_feat], norm_style [norm_style], bn_eps [BN_eps]. feature_first (ours, not in the
    published code, which feeds the condition only to the conditional BNs): the condition vector is also
    concatenated to the first z chunk before the first Linear, so that it reaches the ``bottom_width``
    layout (where things are drawn), not only a per-channel gain and bias for the whole image.
    """

    ch: int = 96
    dim_z: int = 120
    bottom_width: int = 4
    resolution: int = 128
    attn: str = "64"
    hier: bool = True
    shared_dim: int = 128
    shared_dim_feat: int = 512
    shared_feat: bool = True
    norm_style: str = "bn"
    bn_eps: float = 1e-5
    feature_first: bool = False

    @classmethod
    def from_icgan_config(cls, config: Mapping[str, Any]) -> "GeneratorConfig":
        """Build from the published ``state_dict_best0.pth['config']`` dict (argparse defaults if absent).

        Raises ValueError for published options these modules do not implement (non-SN G, unshared
        class embedding, cross-replica / "my" batch norm).
        """
        if _pick(config, "G_param", "SN") != "SN":
            raise ValueError(f"G_param {config['G_param']!r} is not supported (only 'SN')")
        if not _pick(config, "G_shared", True):
            raise ValueError("G_shared=False (per-class BN embeddings) is not supported")
        if _pick(config, "cross_replica", False) or _pick(config, "mybn", False):
            raise ValueError("cross_replica / mybn batch norm is not supported")
        dim_z = int(_pick(config, "dim_z", 120))
        return cls(
            ch=int(_pick(config, "G_ch", 64)), dim_z=dim_z,
            bottom_width=int(_pick(config, "bottom_width", 4)),
            resolution=int(_pick(config, "resolution", 64)), attn=str(_pick(config, "G_attn", "64")),
            hier=bool(_pick(config, "hier", False)),
            shared_dim=int(_pick(config, "shared_dim", 0)) or dim_z,
            shared_dim_feat=int(_pick(config, "shared_dim_feat", 2048)),
            shared_feat=bool(_pick(config, "G_shared_feat", True)),
            norm_style=str(_pick(config, "norm_style", "bn")), bn_eps=float(_pick(config, "BN_eps", 1e-5)),
            **_common_from_icgan(config, "G"),
        )


@dataclasses.dataclass
class DiscriminatorConfig(_CommonConfig):
    """Discriminator hyper-parameters (and :class:`_CommonConfig`'s); published config key in brackets.

    ch [D_ch], resolution [resolution], attn [D_attn], wide [D_wide], output_dim (1). feat_dim is the
    published ``instance_sz``.
    """

    ch: int = 96
    resolution: int = 128
    attn: str = "64"
    wide: bool = True
    output_dim: int = 1

    @classmethod
    def from_icgan_config(cls, config: Mapping[str, Any]) -> "DiscriminatorConfig":
        """Build from the published ``config`` dict (argparse defaults if a key is absent)."""
        if _pick(config, "D_param", "SN") != "SN":
            raise ValueError(f"D_param {config['D_param']!r} is not supported (only 'SN')")
        return cls(
            ch=int(_pick(config, "D_ch", 64)), resolution=int(_pick(config, "resolution", 64)),
            attn=str(_pick(config, "D_attn", "64")), wide=bool(_pick(config, "D_wide", True)),
            **_common_from_icgan(config, "D"),
        )


class FeatureCentre(nn.Module):
    """``h [B, D] -> unit(unit(h) - mean)``: the instance feature measured from the corpus' mean direction.

    The features of one encoder share most of their direction (the world's: mean unit feature of norm 0.84),
    so what tells two classes apart is a small part of each; centring makes it the whole of the input the
    spectrally normalised linear layer sees. A zero ``mean`` is the identity on unit features. With
    ``whiten``, ``unit((unit(h) - mean) @ whiten)``, ``whiten`` a ``[D, D]`` buffer (identity until set, see
    :func:`zca`): directions of small variance across the corpus, where look-alike classes differ, count as
    much as the large ones (a spectrally normalised layer cannot learn to amplify them)."""

    def __init__(self, feat_dim: int, whiten: bool = False) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(feat_dim))
        if whiten:
            self.register_buffer("whiten", torch.eye(feat_dim))
        else:
            self.whiten = None

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = F.normalize(feature.float(), dim=1) - self.mean.float()
        if self.whiten is not None:
            x = x @ self.whiten.float()
        return F.normalize(x, dim=1).to(feature.dtype)


def zca(features: torch.Tensor, eps: float, *, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean ``[D]``, ZCA matrix ``[D, D]``) of the unit rows of ``features`` ``[N, D]``: ``W = U diag((l +
    eps x mean(l))^-1/2) U^T`` over the eigenpairs ``(l, U)`` of their covariance; ``eps`` (relative to
    the mean eigenvalue, > 0) keeps the near-empty directions from being blown up into noise. ``rank`` > 0
    keeps only the top ``rank`` principal directions (``U``'s columns of the largest ``l``): the rest are
    dropped (``W`` has that rank), so directions too small for a sound to predict do not reach G."""
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if rank < 0:
        raise ValueError(f"rank must be >= 0 (0: every direction), got {rank}")
    h = F.normalize(features.double(), dim=1)
    mean = h.mean(0)
    lam, u = torch.linalg.eigh(torch.cov((h - mean).T))  # ascending
    lam = lam.clamp(min=0)
    scale = (lam + eps * lam.mean()).rsqrt()
    if rank:
        scale[:max(0, len(lam) - rank)] = 0
    w = u @ torch.diag(scale) @ u.T
    return mean.float(), w.float()


def _feature_centre(cfg: _CommonConfig) -> FeatureCentre | None:
    if not (cfg.centre_features or cfg.whiten_features):
        return None
    return FeatureCentre(cfg.feat_dim, whiten=cfg.whiten_features)


def init_weights(module: nn.Module, style: str) -> None:
    """Published init of every Conv2d / Linear / Embedding weight: 'ortho', 'N02' or 'xavier'/'glorot'."""
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            continue
        if style == "ortho":
            nn.init.orthogonal_(m.weight)
        elif style == "N02":
            nn.init.normal_(m.weight, 0, 0.02)
        elif style in ("glorot", "xavier"):
            nn.init.xavier_uniform_(m.weight)
        else:
            raise ValueError(f"unknown init style {style!r}")


class Generator(nn.Module):
    """IC-GAN generator: G(z [B, dim_z], label [B] | None, feature [B, feat_dim] | None) -> [B, 3, R, R].

    Output in [-1, 1] (tanh). Use it in eval mode for sampling (stored BN statistics, frozen SN vectors).
    """

    def __init__(self, cfg: GeneratorConfig, skip_init: bool = False) -> None:
        super().__init__()
        if not (cfg.class_cond or cfg.instance_cond):
            raise ValueError("the generator needs class_cond and/or instance_cond")
        if cfg.resolution not in _G_OUT:
            raise ValueError(f"resolution {cfg.resolution} not in {sorted(_G_OUT)}")
        self.cfg = cfg
        n_blocks = len(_G_OUT[cfg.resolution])
        self.num_slots = n_blocks + 1 if cfg.hier else 1
        self.z_chunk_size = cfg.dim_z // self.num_slots if cfg.hier else 0
        self.dim_z = self.z_chunk_size * self.num_slots if cfg.hier else cfg.dim_z
        sn = SNSettings(cfg.num_svs, cfg.num_itrs, cfg.sn_eps)
        cond_size = self.z_chunk_size + cfg.shared_dim * cfg.class_cond
        cond_size += cfg.shared_dim_feat * cfg.instance_cond
        # The published G always owns the class embedding (G_shared), even when it does not use it.
        self.shared = nn.Embedding(cfg.n_classes, cfg.shared_dim)
        self.shared_feat: nn.Module = (
            sn.linear(cfg.feat_dim, cfg.shared_dim_feat) if cfg.shared_feat else nn.Identity()
        )
        self.feature_centre = _feature_centre(cfg)
        width = [cfg.ch * m for m in _G_IN[cfg.resolution]]
        out = [cfg.ch * m for m in _G_OUT[cfg.resolution]]
        first_in = self.dim_z // self.num_slots + (cond_size - self.z_chunk_size) * cfg.feature_first
        self.linear = sn.linear(first_in, width[0] * cfg.bottom_width**2)
        self.blocks = nn.ModuleList()
        attn_at = _attn_resolutions(cfg.attn)
        for i in range(n_blocks):
            stage = [GBlock(width[i], out[i], sn, cond_size, cfg.bn_eps, cfg.norm_style)]
            if 8 * 2**i in attn_at:  # published block resolutions: 8, 16, 32, ...
                stage.append(SelfAttention(out[i], sn))
            self.blocks.append(nn.ModuleList(stage))
        self.output_layer = nn.Sequential(OutputBatchNorm(out[-1]), nn.ReLU(), sn.conv(out[-1], 3))
        if not skip_init:
            init_weights(self, cfg.init)

    def condition(self, label: torch.Tensor | None, feature: torch.Tensor | None) -> torch.Tensor:
        """Condition vector [B, shared_dim*(label given) + shared_dim_feat*(feature given)]."""
        parts = []
        if label is not None:
            parts.append(self.shared(label))
        if feature is not None:
            if self.feature_centre is not None:
                feature = self.feature_centre(feature)
            parts.append(self.shared_feat(feature))
        if not parts:
            raise ValueError("give a label and/or an instance feature")
        return torch.cat(parts, dim=-1)

    def forward(
        self, z: torch.Tensor, label: torch.Tensor | None = None, feature: torch.Tensor | None = None
    ) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.dim_z:
            raise ValueError(f"z must be [B, {self.dim_z}], got {list(z.shape)}")
        y = self.condition(label, feature)
        if self.cfg.hier:
            zs = torch.split(z, self.z_chunk_size, 1)
            z, ys = zs[0], [torch.cat([y, chunk], 1) for chunk in zs[1:]]
        else:
            ys = [y] * len(self.blocks)
        if self.cfg.feature_first:
            z = torch.cat([z, y], 1)
        h = self.linear(z).view(z.size(0), -1, self.cfg.bottom_width, self.cfg.bottom_width)
        for stage, y_i in zip(self.blocks, ys):
            for layer in stage:
                h = layer(h, y_i)
        return torch.tanh(self.output_layer(h))


class Discriminator(nn.Module):
    """IC-GAN discriminator with projection: D(x [B, 3, R, R], label [B] | None, feature | None) -> [B, 1].

    Score = linear(h) + <embed(label), h> and/or <linear_feat(feature), h>, h = sum-pooled ReLU features.
    """

    def __init__(self, cfg: DiscriminatorConfig, skip_init: bool = False) -> None:
        super().__init__()
        if cfg.resolution not in _D_OUT:
            raise ValueError(f"resolution {cfg.resolution} not in {sorted(_D_OUT)}")
        self.cfg = cfg
        sn = SNSettings(cfg.num_svs, cfg.num_itrs, cfg.sn_eps)
        out = [cfg.ch * m for m in _D_OUT[cfg.resolution]]
        width = [3] + out[:-1]
        attn_at = _attn_resolutions(cfg.attn)
        self.blocks = nn.ModuleList()
        downs = _D_DOWN.get(cfg.resolution, [i < len(out) - 1 for i in range(len(out))])
        for i in range(len(out)):
            stage: list[nn.Module] = [DBlock(width[i], out[i], sn, cfg.wide, i > 0, downs[i])]
            if cfg.resolution // 2 ** sum(downs[: i + 1]) in attn_at:
                stage.append(SelfAttention(out[i], sn))
            self.blocks.append(nn.ModuleList(stage))
        self.linear = sn.linear(out[-1], cfg.output_dim)
        proj_dim = out[-1] // 2 if cfg.class_cond and cfg.instance_cond else out[-1]
        if cfg.instance_cond:
            self.linear_feat = sn.linear(cfg.feat_dim, proj_dim)
        self.feature_centre = _feature_centre(cfg)
        if cfg.class_cond:
            self.embed = sn.embedding(cfg.n_classes, proj_dim)
        if not skip_init:
            init_weights(self, cfg.init)

    def forward(
        self, x: torch.Tensor, label: torch.Tensor | None = None, feature: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = x
        for stage in self.blocks:
            for layer in stage:
                h = layer(h)
        h = torch.sum(F.relu(h), [2, 3])
        out = self.linear(h)
        parts = []
        if label is not None:
            parts.append(self.embed(label))
        if feature is not None:
            if self.feature_centre is not None:
                feature = self.feature_centre(feature)
            parts.append(self.linear_feat(feature))
        if parts:
            out = out + torch.sum(torch.cat(parts, dim=-1) * h, 1, keepdim=True)
        return out
