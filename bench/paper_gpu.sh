#!/usr/bin/env bash
# Paper-size training throughput of the visual half on a GPU (issue 5): SwAV (ResNet-50 width 64, 224 crops)
# and IC-GAN (BigGAN 128 px, ch 96, dim_z 120, 2048-d features) for a few steps each, on a synthetic image
# corpus, with bf16 autocast on and off; prints images/s and peak GPU memory per run (about 2-3 minutes on
# one H100). Needs torch, torchvision, torchmetrics, pyarrow, pyyaml; no ffmpeg, no network.
#   bench/paper_gpu.sh                         # batch 64 for both stages
#   bench/paper_gpu.sh --gan-batch 128         # any bench/paper_gpu.py option
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "torch sees no CUDA GPU")'
exec timeout 900 python3 bench/paper_gpu.py --device cuda --amp on,off "$@"
