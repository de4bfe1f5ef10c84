"""The mixing control link by link (built-in world only): where do two sounds stop giving two sources?

`mix_top2` (stage `evaluate`) is the share of images drawn from a 50/50 mix of two test clips of different
classes whose evaluator top-2 (``none`` left out) holds both classes. This script measures, on the
pipeline's artifacts, the same statistic further up the chain:

1. real frames that show two sources of different classes (train clips, from events.parquet), through the
   same resize as generated images: what the evaluator gives a real two-source scene (a ceiling for any
   generator judged by it); in brackets, only the frames of the clips the evaluator held out of its training
   (``evaluator.two_source`` trains on the others);
2. the generator fed the image feature of those frames: can it draw two sources when its feature holds them?
3. the generator fed ``normalise(f_a + f_b)`` of two single-source test frames' features;
4. the audio side: the share of mixed test clips whose audio feature has both classes among its two nearest
   class centroids (image features of the train pairs), beside the same share for the clips alone (the
   second class of a single clip there is chance);
5. `mix_top2` itself: the generator fed the mix's audio feature.

    python bench/mix_chain.py [--audio-encoder A] [--generator G] [--evaluator E] [--image-encoder I]
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from models.image_encoder import load_encoder
from pipeline import eval_metrics, features, generate, swav
from pipeline import events as gt
from pipeline.evaluation import Judge, SoundToImage, frames_like, mix_partners, read_test
from pipeline.evaluator_data import NONE, held_out_two_source_clips
from pipeline.image_store import read_images

import chain_args  # noqa: E402  (bench/, beside this script)


def two_source_frames(table: list[dict], ev: dict[str, list[dict]], limit: int
                      ) -> tuple[list[int], list[tuple[str, str]], list[bool]]:
    """(rows of ``table`` where exactly two classes are drawn (``ev``: events by clip), those two classes,
    whether the row's clip is one the evaluator holds out of its training: ``pipeline.evaluator_data``), at
    most ``limit``."""
    rows, pairs = [], []
    for i, r in enumerate(table):
        drawn = sorted(gt.drawn_at(ev.get(r["video_id"], []), r["t_s"]))
        if len(drawn) == 2:
            rows.append(i)
            pairs.append((drawn[0], drawn[1]))
    held = held_out_two_source_clips(table[i]["video_id"] for i in rows)
    return rows[:limit], pairs[:limit], [table[i]["video_id"] in held for i in rows[:limit]]


def top2_share(judge: Judge, images: torch.Tensor, a: list[str], b: list[str]) -> float:
    """``mix_top2`` of ``images [N, 3, R, R]`` against class pairs ``a[i], b[i]``."""
    none = judge.classes.index(NONE) if NONE in judge.classes else None
    logits, _ = judge(images)
    return eval_metrics.mix_top2(logits, judge.index(a), judge.index(b), exclude=none)


def drawn(s2i: SoundToImage, feats: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """G(every feature row x every noise row): ``[N * K, 3, R, R]``."""
    k = len(z)
    return generate.generate(s2i.G, feats.repeat_interleave(k, 0).numpy(), z.repeat(len(feats), 1).numpy())


def centroid_top2(feats: torch.Tensor, cents: torch.Tensor, names: list[str], a: list[str], b: list[str]) -> float:
    """Share of rows of ``feats [N, D]`` whose two nearest (cosine) class centroids are ``a[i]`` and ``b[i]``."""
    top = (F.normalize(feats, dim=1) @ F.normalize(cents, dim=1).T).topk(2, dim=1).indices.tolist()
    return float(np.mean([{names[i] for i in t} == {x, y} for t, x, y in zip(top, a, b)]))


def main() -> None:
    args = chain_args.parse(__doc__, {"noises": 4})
    s2i, judge = SoundToImage(args.audio_encoder, args.generator), Judge(args.evaluator)
    enc, size = load_encoder(args.image_encoder)
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((args.noises, s2i.dim_z)).astype(np.float32))
    k = args.noises
    rep = lambda xs: [x for x in xs for _ in range(k)]  # noqa: E731

    frames, table = read_images(args.data / "images", "train")
    rows, two, held = two_source_frames(table.to_pylist(), gt.by_clip(args.data / "events.parquet"), 300)
    unseen = [i for i, h in enumerate(held) if h]
    a2, b2 = [p[0] for p in two], [p[1] for p in two]
    real = frames_like(np.asarray(frames[rows]), s2i.G.cfg.resolution)
    f2 = swav.embed(enc, frames[rows], size=size).float()

    ev_frames, ev_table = read_images(args.data / "images", "eval")
    test = np.flatnonzero(ev_table.to_pandas().split.to_numpy() == "test")
    labels = ev_table.to_pandas().label.to_numpy()[test]
    ft = F.normalize(swav.embed(enc, ev_frames[test], size=size).float(), dim=1)
    pairs = mix_partners(list(labels), 200)
    fa, fb = [i for i, _ in pairs], [j for _, j in pairs]

    tset = read_test(args.data / "shards", 64)
    mixes = mix_partners(tset.labels, 48)
    ma, mb = [tset.labels[i] for i, _ in mixes], [tset.labels[j] for _, j in mixes]
    wa, wb = s2i.fit([tset.waves[i] for i, _ in mixes]), s2i.fit([tset.waves[j] for _, j in mixes])
    feat_mix = s2i.features(0.5 * (wa + wb))
    table_tr = features.read(args.data / "embeddings", "train")
    names = sorted({x for x in table_tr.labels if x is not None})
    lab_tr = np.array(table_tr.labels, dtype=object)
    cents = torch.stack([torch.from_numpy(np.asarray(table_tr.features[np.flatnonzero(lab_tr == n)], np.float32))
                         .flatten(1).mean(0) for n in names])

    print(f"| link ({len(rows)} two-source frames, {len(pairs)} frame pairs, {len(mixes)} mixed clips) | top-2 holds both |")
    print("|---|---|")
    held_share = top2_share(judge, real[unseen], [a2[i] for i in unseen], [b2[i] for i in unseen])
    print(f"| evaluator on real two-source frames (of them, the {len(unseen)} of clips held out of its training) | "
          f"{top2_share(judge, real, a2, b2):.3f} ({held_share:.3f}) |")
    print(f"| G(image feature of those frames), {k} noises | {top2_share(judge, drawn(s2i, f2, z), rep(a2), rep(b2)):.3f} |")
    mixed = F.normalize(ft[fa] + ft[fb], dim=1)
    print(f"| G(normalise(f_a + f_b)) of single-source test frames | "
          f"{top2_share(judge, drawn(s2i, mixed, z), rep(list(labels[fa])), rep(list(labels[fb]))):.3f} |")
    print(f"| audio feature of the mix: two nearest class centroids = both classes | "
          f"{centroid_top2(feat_mix, cents, names, ma, mb):.3f} (clip a alone: "
          f"{centroid_top2(s2i.features(wa), cents, names, ma, mb):.3f}) |")
    print(f"| G(audio feature of the mix) = `mix_top2` | {top2_share(judge, drawn(s2i, feat_mix, z), rep(ma), rep(mb)):.3f} |")


if __name__ == "__main__":
    main()
