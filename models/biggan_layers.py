"""Building blocks of the BigGAN backbone used by IC-GAN (generator and discriminator).

Every layer keeps the parameter and buffer names of the published BigGAN-PyTorch / IC-GAN code
(``weight``, ``bias``, ``u0``, ``sv0``, ``stored_mean``, ``stored_var``, ``gain``, ``gamma``, ...), so a
published state dict loads into these modules unchanged, and reproduces its forward pass:

- Spectral norm is BigGAN's own, not ``torch.nn.utils.spectral_norm``: each layer stores left singular
  vectors ``u{i}`` and singular values ``sv{i}``. Every forward pass runs the power iteration from the
  stored ``u``; in training mode it writes the new ``u`` and singular value back, in eval mode it leaves
  them alone. The weight is divided by the singular value just computed (the stored ``sv`` is a log of it,
  as in the published code, and is never read by the forward pass).
- Conditional batch norm takes its gain (``1 + Linear(y)``) and bias (``Linear(y)``) from the condition
  vector ``y`` (instance embedding, optional class embedding and a chunk of z).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _orthogonalize(x: torch.Tensor, basis: list[torch.Tensor]) -> torch.Tensor:
    """Remove from row vector ``x`` [1, n] its projection on each row vector of ``basis`` (Gram-Schmidt)."""
    for b in basis:
        x = x - torch.mm(b, x.t()) * b / torch.mm(b, b.t())
    return x


def power_iteration(
    w_mat: torch.Tensor, us: list[torch.Tensor], update: bool, eps: float
) -> list[torch.Tensor]:
    """One power-iteration step per tracked singular vector.

    Args:
        w_mat: weight as a matrix [out, in].
        us: stored left singular vectors, each [1, out]; overwritten in place when ``update``.
        update: write the new vectors into ``us``.
        eps: epsilon of the normalisation.
    Returns:
        One scalar singular-value estimate per vector (differentiable with respect to ``w_mat``).
    """
    done_u: list[torch.Tensor] = []
    done_v: list[torch.Tensor] = []
    svs: list[torch.Tensor] = []
    for u_buf in us:
        with torch.no_grad():
            v = F.normalize(_orthogonalize(torch.matmul(u_buf, w_mat), done_v), eps=eps)
            done_v.append(v)
            u = F.normalize(_orthogonalize(torch.matmul(v, w_mat.t()), done_u), eps=eps)
            done_u.append(u)
            if update:
                u_buf.copy_(u)
        svs.append(torch.squeeze(torch.matmul(torch.matmul(v, w_mat.t()), u.t())))
    return svs


class SpectralNormMixin:
    """BigGAN spectral norm for a module with a ``weight`` whose first dim is the output.

    Registers buffers ``u{i}`` [1, num_outputs] (random) and ``sv{i}`` [1] (ones), i < num_svs.
    """

    weight: torch.Tensor
    training: bool

    def _init_sn(self, num_svs: int, num_itrs: int, num_outputs: int, eps: float) -> None:
        self.num_svs, self.num_itrs, self.sn_eps = num_svs, num_itrs, eps
        for i in range(num_svs):
            self.register_buffer(f"u{i}", torch.randn(1, num_outputs))  # type: ignore[attr-defined]
            self.register_buffer(f"sv{i}", torch.ones(1))  # type: ignore[attr-defined]

    def _buffers_named(self, prefix: str) -> list[torch.Tensor]:
        return [getattr(self, f"{prefix}{i}") for i in range(self.num_svs)]

    def normalized_weight(self) -> torch.Tensor:
        """The weight divided by its top singular value estimate; same shape as ``weight``. The power
        iteration runs in float32 even under autocast (its ``u`` / ``sv`` buffers stay float32)."""
        w_mat = self.weight.view(self.weight.size(0), -1)
        svs: list[torch.Tensor] = []
        with torch.autocast(device_type=self.weight.device.type, enabled=False):
            for _ in range(self.num_itrs):
                svs = power_iteration(w_mat, self._buffers_named("u"), self.training, self.sn_eps)
        if self.training:
            with torch.no_grad():
                for buf, sv in zip(self._buffers_named("sv"), svs):
                    buf.copy_(sv)
        return self.weight / svs[0]


class SNConv2d(nn.Conv2d, SpectralNormMixin):
    """Conv2d with BigGAN spectral norm: [B, in, H, W] -> [B, out, H', W']."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        bias: bool = True,
        num_svs: int = 1,
        num_itrs: int = 1,
        eps: float = 1e-6,
    ) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self._init_sn(num_svs, num_itrs, out_channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, self.stride, self.padding)


class SNLinear(nn.Linear, SpectralNormMixin):
    """Linear with BigGAN spectral norm: [B, in] -> [B, out]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        num_svs: int = 1,
        num_itrs: int = 1,
        eps: float = 1e-6,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._init_sn(num_svs, num_itrs, out_features, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class SNEmbedding(nn.Embedding, SpectralNormMixin):
    """Embedding with BigGAN spectral norm (the vector count is the SN output): [B] long -> [B, dim]."""

    def __init__(
        self, num_embeddings: int, dim: int, num_svs: int = 1, num_itrs: int = 1, eps: float = 1e-6
    ) -> None:
        nn.Embedding.__init__(self, num_embeddings, dim)
        self._init_sn(num_svs, num_itrs, num_embeddings, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.embedding(x, self.normalized_weight())


class SNSettings:
    """Factory for spectral-normed layers sharing num_svs / num_itrs / eps."""

    def __init__(self, num_svs: int, num_itrs: int, eps: float) -> None:
        self.kw = {"num_svs": num_svs, "num_itrs": num_itrs, "eps": eps}

    def conv(self, c_in: int, c_out: int, kernel_size: int = 3, bias: bool = True) -> SNConv2d:
        """Same-padded conv, kernel 3 (or 1)."""
        return SNConv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=bias, **self.kw)

    def linear(self, n_in: int, n_out: int, bias: bool = True) -> SNLinear:
        return SNLinear(n_in, n_out, bias=bias, **self.kw)

    def embedding(self, n: int, dim: int) -> SNEmbedding:
        return SNEmbedding(n, dim, **self.kw)


class ConditionalBatchNorm(nn.Module):
    """Batch norm without affine, then per-sample gain ``1 + gain(y)`` and bias ``bias(y)``.

    x: [B, C, H, W], y: [B, input_size] -> [B, C, H, W]. ``norm_style``: "bn", "in" or "nonorm".
    """

    def __init__(
        self, channels: int, input_size: int, sn: SNSettings, eps: float = 1e-5, norm_style: str = "bn"
    ) -> None:
        super().__init__()
        if norm_style not in ("bn", "in", "nonorm"):
            raise ValueError(f"norm_style {norm_style!r} is not supported (bn, in, nonorm)")
        self.gain = sn.linear(input_size, channels, bias=False)
        self.bias = sn.linear(input_size, channels, bias=False)
        self.eps, self.norm_style = eps, norm_style
        if norm_style in ("bn", "in"):
            self.register_buffer("stored_mean", torch.zeros(channels))
            self.register_buffer("stored_var", torch.ones(channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gain = (1 + self.gain(y)).view(y.size(0), -1, 1, 1)
        bias = self.bias(y).view(y.size(0), -1, 1, 1)
        if self.norm_style == "bn":
            out = F.batch_norm(
                x, self.stored_mean, self.stored_var, None, None, self.training, 0.1, self.eps
            )
        elif self.norm_style == "in":
            out = F.instance_norm(
                x, self.stored_mean, self.stored_var, None, None, self.training, 0.1, self.eps
            )
        else:
            out = x
        return out * gain + bias


class OutputBatchNorm(nn.Module):
    """Plain batch norm with learnt ``gain``/``bias`` [C] and running ``stored_mean``/``stored_var``.

    [B, C, H, W] -> [B, C, H, W]. The published output layer uses eps 1e-5 whatever BN_eps says.
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))
        self.gain = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.stored_mean, self.stored_var, self.gain, self.bias,
            self.training, self.momentum, self.eps,
        )


class SelfAttention(nn.Module):
    """SA-GAN non-local block as released by BigGAN: [B, C, H, W] -> [B, C, H, W] (H, W even).

    Keys/values are 2x2 max-pooled; output is ``gamma * o(attention) + x`` with ``gamma`` starting at 0.
    """

    def __init__(self, ch: int, sn: SNSettings) -> None:
        super().__init__()
        self.ch = ch
        self.theta = sn.conv(ch, ch // 8, kernel_size=1, bias=False)
        self.phi = sn.conv(ch, ch // 8, kernel_size=1, bias=False)
        self.g = sn.conv(ch, ch // 2, kernel_size=1, bias=False)
        self.o = sn.conv(ch // 2, ch, kernel_size=1, bias=False)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        n_pix = x.shape[2] * x.shape[3]
        theta = self.theta(x).view(-1, self.ch // 8, n_pix)
        phi = F.max_pool2d(self.phi(x), [2, 2]).view(-1, self.ch // 8, n_pix // 4)
        g = F.max_pool2d(self.g(x), [2, 2]).view(-1, self.ch // 2, n_pix // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)  # [B, HW, HW/4]
        attended = torch.bmm(g, beta.transpose(1, 2)).view(-1, self.ch // 2, x.shape[2], x.shape[3])
        return self.gamma * self.o(attended) + x


class GBlock(nn.Module):
    """Generator residual block, 2x nearest upsampling: x [B, in, H, W], y [B, cond] -> [B, out, 2H, 2W]."""

    def __init__(
        self, c_in: int, c_out: int, sn: SNSettings, cond_size: int, bn_eps: float, norm_style: str
    ) -> None:
        super().__init__()
        self.conv1 = sn.conv(c_in, c_out)
        self.conv2 = sn.conv(c_out, c_out)
        self.conv_sc = sn.conv(c_in, c_out, kernel_size=1)
        self.bn1 = ConditionalBatchNorm(c_in, cond_size, sn, bn_eps, norm_style)
        self.bn2 = ConditionalBatchNorm(c_out, cond_size, sn, bn_eps, norm_style)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2)
        h = self.conv1(h)
        h = self.conv2(F.relu(self.bn2(h, y)))
        return h + self.conv_sc(F.interpolate(x, scale_factor=2))


class DBlock(nn.Module):
    """Discriminator residual block: [B, in, H, W] -> [B, out, H/2, W/2] (or same size without downsample).

    ``preactivation``: ReLU before the first conv (every block but the first); ``wide``: hidden width is
    ``c_out`` (BigGAN) rather than ``c_in`` (SN-GAN).
    """

    def __init__(
        self, c_in: int, c_out: int, sn: SNSettings, wide: bool, preactivation: bool, downsample: bool
    ) -> None:
        super().__init__()
        hidden = c_out if wide else c_in
        self.preactivation, self.downsample = preactivation, downsample
        self.conv1 = sn.conv(c_in, hidden)
        self.conv2 = sn.conv(hidden, c_out)
        self.learnable_sc = c_in != c_out or downsample
        if self.learnable_sc:
            self.conv_sc = sn.conv(c_in, c_out, kernel_size=1)

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.learnable_sc:
            return x
        if self.preactivation:
            return self._down(self.conv_sc(x))
        return self.conv_sc(self._down(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        return self._down(h) + self._shortcut(x)
