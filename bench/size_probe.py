"""Does an image encoder's feature carry the drawn size of the sound source? (built-in world only)

A ridge regression from the encoder's features to the source's drawn size (events.parquet ``size``) is fit on
the labelled val eval frames and scored on the test ones; prints Spearman and R^2 per encoder. The volume
control (`volume_spearman`) needs the size in the feature space the generator is conditioned on.

    python bench/size_probe.py artifacts/image_encoder.pt [OTHER.pt ...] [--images data/images]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from models.image_encoder import load_encoder
from pipeline import swav
from pipeline.image_store import read_images


def frame_sizes(table: pd.DataFrame, events: pd.DataFrame) -> np.ndarray:
    """float ``[N]``: the drawn size of each eval frame's labelled source (NaN where no on-screen event of its
    label covers ``t_s``)."""
    on = events[events.on_screen]
    out = np.full(len(table), np.nan)
    for i, r in enumerate(table.itertuples()):
        ev = on[(on.video_id == r.video_id) & (on.label == r.label) & (on.t_start <= r.t_s + 1e-6) & (r.t_s < on.t_end)]
        if len(ev):
            out[i] = float(ev["size"].iloc[0])
    return out


def ridge_weights(features: np.ndarray, size: np.ndarray, ridge: float = 0.1) -> np.ndarray:
    """``[D + 1]``: a ridge regression of ``size [N]`` on ``features [N, D]``, the intercept last."""
    a = np.c_[features, np.ones(len(features))]
    return np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ size)


def fit_probe(features: np.ndarray, size: np.ndarray, ridge: float = 0.1) -> Callable[[np.ndarray], np.ndarray]:
    """A ridge regression (with intercept) of ``size [N]`` on ``features [N, D]``: features ``[M, D]`` -> ``[M]``."""
    w = ridge_weights(features, size, ridge)
    return lambda x: np.c_[x, np.ones(len(x))] @ w


def probe(features: np.ndarray, size: np.ndarray, fit: np.ndarray, score: np.ndarray,
          ridge: float = 0.1) -> tuple[float, float]:
    """(Spearman, R^2) on rows ``score`` of a ridge fit on rows ``fit``; features ``[N, D]``, size ``[N]``."""
    pred, truth = fit_probe(features[fit], size[fit], ridge)(features[score]), size[score]
    r2 = 1 - np.sum((pred - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)
    return float(spearmanr(pred, truth)[0]), float(r2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("encoders", nargs="+", type=Path, help="image encoder checkpoints (ours or published SwAV)")
    ap.add_argument("--images", type=Path, default=Path("data/images"), help="the images stage's folder")
    ap.add_argument("--events", type=Path, default=Path("data/events.parquet"))
    args = ap.parse_args()
    frames, table = read_images(args.images, "eval")
    table = table.to_pandas()
    size = frame_sizes(table, pd.read_parquet(args.events))
    ok = ~np.isnan(size)
    fit, score = (table.split == "val").to_numpy() & ok, (table.split == "test").to_numpy() & ok
    print(f"| encoder | Spearman | R^2 |  ({int(fit.sum())} val frames fit, {int(score.sum())} test frames scored)")
    print("|---|---|---|")
    for path in args.encoders:
        model, input_size = load_encoder(path)
        feats = swav.embed(model, frames, size=input_size).numpy().astype(np.float64)
        rho, r2 = probe(feats, size, fit, score)
        print(f"| {path} | {rho:.3f} | {r2:.3f} |")


if __name__ == "__main__":
    main()
