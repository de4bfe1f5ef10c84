"""The volume and mixing controls through the command line (issue 8): `s2s generate --gain` and `--mix` on the
test clips, scored as the `evaluate` stage scores its own controls (built-in world only).

The test pairs' audio windows are written as 16 kHz float wav files; `s2s generate` draws ``--noises`` images
per file (seed 0) at each of the evaluation's gains, and for each mixing pair of the evaluation one file mixed
50/50 with its partner (``--mix B --mix-ratio 0.5``). The evaluator's drawn-size head and top-2 give
`volume_spearman` and `mix_top2`, printed beside `reports/metrics.json`'s (equal with the same models, noises
and clips: the CLI plays gains and mixes as the stage does).

    python bench/cli_controls.py [--audio-encoder A] [--generator G] [--evaluator E] [--noises 8] [--pairs 48]
"""
from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from pipeline import eval_metrics
from pipeline.evaluation import Judge, mix_partners, read_test
from pipeline.evaluator_data import NONE

import chain_args  # noqa: E402  (bench/, beside this script)

GAINS = (0.25, 0.5, 1.0, 2.0, 4.0)


def generate(args: list[str], dest: Path, models: list[str], noises: int) -> torch.Tensor:
    """Images ``[files * noises, 3, R, R]`` of one `s2s generate` call (raw ``.npy`` output)."""
    cmd = ["s2s", "generate", *args, *models, "--out", str(dest), "--n", str(noises), "--seed", "0", "--batch", "64"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"s2s generate failed: {res.stderr.strip()[-300:]}")
    return torch.from_numpy(np.load(dest))


def main() -> None:
    args = chain_args.parse(__doc__, {"noises": 8, "pairs": 48})
    judge, test = Judge(args.evaluator), read_test(args.data / "shards", 64)
    models = ["--audio-encoder", str(args.audio_encoder), "--generator", str(args.generator),
              "--threads", str(args.threads)]
    k, t0 = args.noises, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        wavs = []
        for key, wave in zip(test.keys, test.waves):
            wavs.append(str(Path(tmp) / f"{key}.wav"))
            sf.write(wavs[-1], wave, 16000, subtype="FLOAT")
        sizes = [judge(generate([*wavs, "--gain", str(g)], Path(tmp) / "g.npy", models, k))[1].view(len(wavs), k)
                 for g in GAINS]
        per_gain = torch.stack(sizes, -1).flatten(0, 1).numpy()
        pairs = mix_partners(test.labels, args.pairs)
        logits = torch.cat([judge(generate([wavs[i], "--mix", wavs[j], "--mix-ratio", "0.5"], Path(tmp) / "m.npy",
                                           models, k))[0] for i, j in pairs])
    y = judge.index(test.labels)
    none = judge.classes.index(NONE) if NONE in judge.classes else None
    mix = eval_metrics.mix_top2(logits, y[[i for i, _ in pairs]].repeat_interleave(k),
                                y[[j for _, j in pairs]].repeat_interleave(k), exclude=none)
    stage = Path("reports/metrics.json")
    ref = json.loads(stage.read_text()) if stage.is_file() else {}
    print(f"{len(wavs)} clips x {k} noises, {len(pairs)} mixed pairs, {time.perf_counter() - t0:.0f} s")
    print("| control | `s2s generate` | `evaluate` stage (reports/metrics.json) |\n|---|---|---|")
    print(f"| volume_spearman | {eval_metrics.volume_spearman(per_gain, np.array(GAINS)):.4f} | "
          f"{ref.get('volume_spearman')} |")
    print(f"| mean drawn size at gains {', '.join(map(str, GAINS))} | "
          f"{' / '.join(f'{v:.3f}' for v in per_gain.mean(0))} | |")
    print(f"| mix_top2 | {mix:.4f} | {ref.get('mix_top2')} |")


if __name__ == "__main__":
    main()
