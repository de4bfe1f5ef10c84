"""Alignment losses: hand-computed values, symmetry, the published formula, finite gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from models.losses import LOSSES, make_loss

EYE = torch.eye(2)


def published_infonce_l2(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The published InfoNCE_with_L2.loss_fn (logit_scale 1), written out."""
    v, a = v / v.norm(dim=-1, keepdim=True), a / a.norm(dim=-1, keepdim=True)
    d = torch.cdist(v, a, p=2)
    gt = torch.arange(a.shape[0])
    return (F.cross_entropy(-d, gt) + F.cross_entropy(-d.t(), gt)) / 2


@pytest.mark.parametrize("name,temperature,expected", [
    ("infonce", 1.0, math.log(1 + math.exp(-math.sqrt(2)))),
    ("infonce", 0.5, math.log(1 + math.exp(-2 * math.sqrt(2)))),
    ("infonce_cos", 1.0, math.log(1 + math.exp(-1))),
    ("infonce_cos", 0.1, math.log(1 + math.exp(-10))),
])
def test_contrastive_values_by_hand(name, temperature, expected):
    """Two orthogonal pairs: the diagonal is at distance 0 (cos 1), the rest at sqrt 2 (cos 0)."""
    loss = make_loss(name, temperature)
    assert loss(EYE, EYE).item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # scale does not matter: features are normalised first
    assert loss(EYE * torch.tensor([[3.0], [0.2]]), EYE * 5).item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_regression_values_by_hand():
    a, v = torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert make_loss("l2")(a, v).item() == pytest.approx((1 + 4 + 1 + 4) / 4)
    assert make_loss("l1")(a, v).item() == pytest.approx((1 + 2 + 1 + 2) / 4)


def test_infonce_is_the_published_formula():
    g = torch.Generator().manual_seed(0)
    a, v = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    assert make_loss("infonce")(a, v).item() == pytest.approx(published_infonce_l2(a, v).item(), abs=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_symmetric_in_audio_and_image(name):
    g = torch.Generator().manual_seed(1)
    a, v = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    loss = make_loss(name)
    assert loss(a, v).item() == pytest.approx(loss(v, a).item(), rel=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_are_finite_and_correct(name):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, 3, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: make_loss(name)(x, v).double(), (a,))
    # identical features (distance 0) still give a finite gradient
    same = v.clone().float().requires_grad_(True)
    make_loss(name)(same, v.float()).backward()
    assert torch.isfinite(same.grad).all()


def test_loss_decreases_toward_the_pairing():
    """Moving audio rows onto their own image rows lowers every loss."""
    g = torch.Generator().manual_seed(3)
    v, noise = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    for name in LOSSES:
        loss = make_loss(name)
        assert loss(v + 0.1 * noise, v) < loss(v + 2.0 * noise, v), name


@pytest.mark.parametrize("name", ["infonce", "infonce_cos"])
def test_false_negatives_leave_the_softmax(name):
    """Rows 0 and 1 show the same image: above ``false_negative_cos`` each is left out of the other's softmax,
    so the loss is the cross-entropy over the remaining columns; at 1 nothing is left out."""
    g = torch.Generator().manual_seed(4)
    v = torch.randn(4, 6, generator=g)
    v[1] = 2 * v[0]  # cosine 1 with row 0
    a = v + 0.3 * torch.randn(4, 6, generator=g)
    logits = (-torch.cdist(F.normalize(a, dim=1), F.normalize(v, dim=1)) if name == "infonce"
              else F.normalize(a, dim=1) @ F.normalize(v, dim=1).t())
    masked = logits.clone()
    masked[0, 1] = masked[1, 0] = float("-inf")
    gt = torch.arange(4)
    want = 0.5 * (F.cross_entropy(masked, gt) + F.cross_entropy(masked.t(), gt))
    assert make_loss(name, false_negative_cos=0.9)(a, v).item() == pytest.approx(want.item(), rel=1e-5)
    plain = 0.5 * (F.cross_entropy(logits, gt) + F.cross_entropy(logits.t(), gt))  # nothing left out
    assert make_loss(name, false_negative_cos=1.0)(a, v).item() == pytest.approx(plain.item(), rel=1e-5)
    assert make_loss(name, false_negative_cos=0.9)(a, v) < make_loss(name)(a, v)  # a confusable negative gone
    with pytest.raises(ValueError, match="false_negative_cos"):
        make_loss(name, false_negative_cos=1.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown loss 'cos'"):
        make_loss("cos")
    with pytest.raises(ValueError, match="temperature"):
        make_loss("infonce", 0.0)
    with pytest.raises(ValueError, match="one shape"):
        make_loss("infonce")(torch.zeros(2, 3), torch.zeros(3, 3))


def _space(dim: int, seed: int = 0) -> torch.nn.Module:
    """The generator's input map with a random mean and a rank-deficient whitening matrix."""
    from models.biggan import FeatureCentre
    g = torch.Generator().manual_seed(seed)
    space = FeatureCentre(dim, whiten=True)
    space.mean.copy_(F.normalize(torch.randn(dim, generator=g), dim=0) * 0.8)
    w = torch.randn(dim, dim // 2, generator=g)
    space.whiten.copy_(w @ w.t())
    return space


@pytest.mark.parametrize("name", LOSSES)
def test_a_space_maps_both_sides_before_the_loss(name: str) -> None:
    torch.manual_seed(0)
    a, v, space = torch.randn(6, 8), torch.randn(6, 8), _space(8)
    mapped = make_loss(name, 0.5, space=space)(a, v)
    torch.testing.assert_close(mapped, make_loss(name, 0.5)(space(a), space(v)))
    assert not torch.allclose(mapped, make_loss(name, 0.5)(a, v))
    a.requires_grad_(True)
    make_loss(name, space=space)(a, v).backward()  # the gradient reaches the audio side; the map stays fixed
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert all(not b.requires_grad for b in space.buffers())


def test_the_unit_map_leaves_infonce_as_it_is() -> None:
    """A generator without centring reads unit features, which InfoNCE normalises anyway."""
    from models.biggan import FeatureCentre
    torch.manual_seed(1)
    a, v = torch.randn(5, 8) * 3, torch.randn(5, 8)
    torch.testing.assert_close(make_loss("infonce", space=FeatureCentre(8))(a, v), make_loss("infonce")(a, v))


def test_a_space_checks_the_pair_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[3, 8\] and \[4, 8\]"):
        make_loss("infonce", space=_space(8))(torch.randn(3, 8), torch.randn(4, 8))
