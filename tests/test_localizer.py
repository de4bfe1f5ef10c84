"""The localizer model: shapes, unit norms, the loss, learning a toy correspondence, checkpoints."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.checkpoint import CheckpointMismatchError
from models.localizer import (Localizer, LocalizerConfig, LocalizerEnsemble, infonce_loss, load, members_of,
                              save)

CFG = LocalizerConfig(dim=16, width=8, n_mels=16, n_frames=24)


def toy_batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frames with one of 4 coloured squares at a random place, and a mel with that colour's band lit.

    Returns frames ``(n, 3, 64, 64)``, mels ``(n, 1, 16, 24)``, classes ``(n,)``."""
    cls = torch.randint(0, 4, (n,), generator=gen)
    frames = 0.1 * torch.rand(n, 3, 64, 64, generator=gen)
    mels = 0.3 * torch.randn(n, 1, 16, 24, generator=gen)
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    for i, c in enumerate(cls.tolist()):
        x, y = torch.randint(0, 48, (2,), generator=gen).tolist()
        frames[i, :, y:y + 16, x:x + 16] = colours[c].view(3, 1, 1)
        mels[i, 0, 4 * c:4 * c + 4] += 2.0
    return frames, mels, cls


def test_shapes_and_unit_norms() -> None:
    model = Localizer(CFG).eval()
    frames, mels, _ = toy_batch(5, torch.Generator().manual_seed(0))
    vmap, aemb = model.embed_frames(frames), model.embed_audio(mels)
    assert vmap.shape == (5, 16, 8, 8) and aemb.shape == (5, 16)
    torch.testing.assert_close(vmap.norm(dim=1), torch.ones(5, 8, 8))
    torch.testing.assert_close(aemb.norm(dim=1), torch.ones(5))
    scores = model(frames, mels)
    assert scores.shape == (5,) and bool((scores.abs() <= 1 + 1e-5).all())
    uint8 = (frames.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    torch.testing.assert_close(model.embed_frames(uint8), vmap, atol=0.05, rtol=0)


def test_group_mask_drops_same_group_negatives() -> None:
    vmap = torch.nn.functional.normalize(torch.randn(4, 8, 2, 2), dim=1)
    aemb = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    full = infonce_loss(vmap, aemb, 0.1)
    alone = infonce_loss(vmap, aemb, 0.1, groups=torch.zeros(4, dtype=torch.long))
    assert full > 0 and alone == pytest.approx(0.0, abs=1e-6)  # every negative masked: nothing to learn


def test_loss_decreases_and_matching_pairs_score_higher() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = Localizer(CFG)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        frames, mels, _ = toy_batch(32, gen)
        loss = infonce_loss(model.embed_frames(frames), model.embed_audio(mels), CFG.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # 4 classes in 32 pairs: same-class pairs are false negatives, so the floor is about log(8) = 2.1
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.8
    model.eval()
    frames, mels, cls = toy_batch(32, gen)
    with torch.no_grad():
        sim = Localizer.similarity_maps(model.embed_frames(frames), model.embed_audio(mels)).flatten(2).amax(2)
    same = cls[:, None] == cls[None, :]
    assert sim[same].mean() > sim[~same].mean() + 0.2


def test_checkpoint_round_trip_and_strictness(tmp_path: Path) -> None:
    model = Localizer(CFG).eval()
    save(model, tmp_path / "loc.pt", step=7)
    ckpt = torch.load(tmp_path / "loc.pt", weights_only=True)
    assert ckpt["step"] == 7 and ckpt["config"]["dim"] == 16 and set(ckpt) >= {"model", "config", "step"}
    back = load(tmp_path / "loc.pt")
    assert not back.training and back.cfg == CFG
    frames, mels, _ = toy_batch(3, torch.Generator().manual_seed(2))
    torch.testing.assert_close(back(frames, mels), model(frames, mels))
    ckpt["model"].pop("visual.head.bias")
    with pytest.raises(CheckpointMismatchError, match="visual.head.bias"):
        load(ckpt)


def test_ensemble_round_trip_and_strictness(tmp_path: Path) -> None:
    a, b = Localizer(CFG).eval(), Localizer(CFG).eval()
    ens = LocalizerEnsemble.of([a, b])
    assert ens.cfg.members == 2 and members_of(a) == [a]
    save(ens, tmp_path / "ens.pt", step=3)
    ckpt = torch.load(tmp_path / "ens.pt", weights_only=True)
    assert ckpt["config"]["members"] == 2 and "members.1.visual.head.bias" in ckpt["model"]
    back = load(tmp_path / "ens.pt")
    assert isinstance(back, LocalizerEnsemble) and not back.training
    frames, mels, _ = toy_batch(3, torch.Generator().manual_seed(2))
    for got, want in zip(members_of(back), (a, b)):
        torch.testing.assert_close(got(frames, mels), want(frames, mels), atol=0, rtol=0)
    ckpt["model"].pop("members.1.audio.head.0.weight")
    with pytest.raises(CheckpointMismatchError, match=r"members\.1\.audio\.head\.0\.weight"):
        load(ckpt)
    with pytest.raises(ValueError, match="one config"):
        LocalizerEnsemble.of([a, Localizer(LocalizerConfig(dim=8, width=8, n_mels=16, n_frames=24))])
