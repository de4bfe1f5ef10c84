"""Which transform of the image features separates look-alike classes and still suits the audio features?

The generator conditions on a unit image feature h (or, with `generator.centre_features` / `whiten_features`,
on a transform of it); the audio encoder aims at h. For each transform T this prints, on the built-in world:

- image: the nearest-class-centroid accuracy of T(labelled test frames' features), centroids from the val
  frames (overall and engine);
- audio: the same accuracy of T(the test clips' audio features) against those image centroids (overall,
  engine, horn): what the generator would be told by a sound;
- the centroid cosines of the same-colour pairs drum / engine and bell / horn (lower: further apart).

Transforms: raw, centred on the corpus mean, the top-k principal directions kept (centred) or whitened
(`models.biggan.zca(rank=k)`, eps relative to the mean eigenvalue), for k = 8, 16, 32 and all. The corpus is
filtered by `generator.min_foreground` of params.yaml, as the generator's is.

    python bench/feature_transforms.py [--audio-encoder A] [--image-encoder I] [--data data]
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chain_args  # noqa: E402  (bench/, beside this script)

from models.biggan import zca  # noqa: E402
from models.image_encoder import load_encoder  # noqa: E402
from pipeline import evaluation, swav  # noqa: E402
from pipeline.foreground import keep_foreground  # noqa: E402
from pipeline.image_store import clip_groups, read_images  # noqa: E402
from pipeline.strict import read_yaml  # noqa: E402


def corpus_features(encoder: Path, images: Path, min_foreground: float) -> tuple[Tensor, Tensor, np.ndarray,
                                                                                   np.ndarray]:
    """(train corpus unit features ``[N, D]`` as the generator sees them, eval frames' ``[M, D]``, their labels,
    their splits)."""
    model = load_encoder(encoder)[0].eval()
    train, table = read_images(images, "train")
    keep = keep_foreground(train, clip_groups(table.column("video_id").to_pylist()), min_foreground, param="x")
    ev, etab = read_images(images, "eval")
    h = F.normalize(swav.embed(model, train[keep]).float(), dim=1)
    e = F.normalize(swav.embed(model, ev).float(), dim=1)
    return (h, e, np.array(etab.column("label").to_pylist(), dtype=object),
            np.array(etab.column("split").to_pylist(), dtype=object))


def scores(t: Callable[[Tensor], Tensor], e: Tensor, labels: np.ndarray, split: np.ndarray, audio: Tensor,
           audio_labels: np.ndarray) -> dict[str, float]:
    """Centroid accuracies and same-colour cosines after transform ``t`` (module docstring)."""
    names = sorted(set(labels))
    f, a = F.normalize(t(e), dim=1), F.normalize(t(audio), dim=1)
    val, test = split == "val", split == "test"
    cents = torch.stack([F.normalize(f[(labels == n) & val].mean(0), dim=0) for n in names])
    idx = {n: i for i, n in enumerate(names)}
    pi, ti = (f[test] @ cents.T).argmax(1).numpy(), np.array([idx[x] for x in labels[test]])
    pa, ta = (a @ cents.T).argmax(1).numpy(), np.array([idx[x] for x in audio_labels])
    cc = cents @ cents.T

    def acc(p: np.ndarray, y: np.ndarray, cls: str | None = None) -> float:
        sel = np.ones(len(y), bool) if cls is None else y == idx[cls]
        return float((p[sel] == y[sel]).mean()) if sel.any() else float("nan")

    return {"image": acc(pi, ti), "image engine": acc(pi, ti, "engine"), "audio": acc(pa, ta),
            "audio engine": acc(pa, ta, "engine"), "audio horn": acc(pa, ta, "horn"),
            "drum/engine cos": float(cc[idx["drum"], idx["engine"]]),
            "bell/horn cos": float(cc[idx["bell"], idx["horn"]])}


def main() -> None:
    args = chain_args.parse(__doc__)
    ranks = (8, 16, 32, 0)
    min_fg = read_yaml(args.params)["generator"]["min_foreground"]
    h, e, labels, split = corpus_features(args.image_encoder, args.data / "images", min_fg)
    if not {"drum", "engine", "bell", "horn"} <= set(labels):
        raise SystemExit("the eval frames lack drum, engine, bell or horn: this bench needs the built-in world")
    s2i = evaluation.SoundToImage(args.audio_encoder, args.generator, 64)
    test = evaluation.read_test(args.data / "shards", 64)
    audio = F.normalize(s2i.features(s2i.fit(test.waves)).float(), dim=1)  # G sees unit features
    audio_labels = np.array(test.labels, dtype=object)
    mean = h.mean(0)
    u = torch.linalg.eigh(torch.cov((h - mean).T)).eigenvectors  # ascending eigenvalues
    rows: list[tuple[str, Callable[[Tensor], Tensor]]] = [("raw", lambda x: x), ("centred", lambda x: x - mean)]
    for k in ranks:
        keep = u[:, -k:] if k else u
        rows.append((f"top {k or 'all'} kept, centred", lambda x, keep=keep: (x - mean) @ keep @ keep.T))
        for eps in (1.0, 0.1):
            m, w = zca(h, eps, rank=k)
            rows.append((f"top {k or 'all'} whitened, eps {eps}", lambda x, m=m, w=w: (x - m) @ w))
    for i, (name, t) in enumerate(rows):
        r = scores(t, e, labels, split, audio, audio_labels)
        if i == 0:
            print("| transform | " + " | ".join(r) + " |\n|---|" + "---|" * len(r))
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in r.values()) + " |")


if __name__ == "__main__":
    main()
