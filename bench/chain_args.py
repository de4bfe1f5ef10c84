"""The command line shared by the control-chain benches (volume_chain.py, mix_chain.py): the pipeline's
artifacts, with a one-sentence stop when one is missing."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def parse(doc: str, extra: dict[str, int] | None = None) -> argparse.Namespace:
    """Parse ``--audio-encoder --generator --evaluator --image-encoder --data --params --threads`` (plus integer
    options ``extra``: name -> default); set torch's threads; stop if an artifact or events.parquet is missing."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name in ("audio_encoder", "generator", "evaluator", "image_encoder"):
        ap.add_argument("--" + name.replace("_", "-"), type=Path, default=Path(f"artifacts/{name}.pt"))
    ap.add_argument("--data", type=Path, default=Path("data"),
                    help="holds shards/, images/, embeddings/, pairs.parquet, events.parquet")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"),
                    help="the evaluate stage's noise draws and gains (its defaults when the file is missing)")
    ap.add_argument("--threads", type=int, default=1)
    for name, default in (extra or {}).items():
        ap.add_argument("--" + name, type=int, default=default)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for path in (args.audio_encoder, args.generator, args.evaluator, args.image_encoder, args.data / "events.parquet"):
        if not path.exists():
            raise SystemExit(f"{path} does not exist: run `dvc repro` first")
    return args
