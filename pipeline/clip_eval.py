"""CLIP R@k, the paper's retrieval measure: does CLIP, given the class names, name a generated image's class?

Needs local open_clip weights (``evaluate.clip_checkpoint``; nothing is downloaded) and their model:
``evaluate.clip_model`` is an open_clip model name (``ViT-B-32`` for the paper's CLIP ViT-B/32) or the
path of a model-config JSON file (open_clip's format, e.g. a small model of one's own). Prompts:
``"a photo of a {class}"``. Images are resized (bicubic) to the model's input and normalised with its
mean and std.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.eval_metrics import recall_at_k

PROMPT = "a photo of a {}"


class ClipError(ValueError):
    """CLIP weights or model that cannot be used; the message says which."""


def require(checkpoint: Path, model: str) -> None:
    """Raise :class:`ClipError` unless open_clip is installed and the weights (and a config JSON) exist."""
    try:
        import open_clip  # noqa: F401
    except ImportError:
        raise ClipError("evaluate.clip_checkpoint is set but open_clip is not installed "
                        "(pip install open_clip_torch==3.3.0, or `pip install -e .[clip]`)") from None
    if not Path(checkpoint).is_file():
        raise ClipError(f"evaluate.clip_checkpoint {checkpoint} is missing: give the path of local open_clip "
                        f"weights for {model} (nothing is downloaded), or set it to null")
    if model.endswith(".json") and not Path(model).is_file():
        raise ClipError(f"evaluate.clip_model {model} is missing")


def load(checkpoint: Path, model: str) -> tuple[torch.nn.Module, object, tuple, tuple, int]:
    """(model in eval mode, tokenizer, mean, std, input size) of local open_clip weights."""
    require(checkpoint, model)
    import open_clip

    name = model
    if model.endswith(".json"):
        open_clip.add_model_config(model)
        name = Path(model).stem
    try:
        net, _, _ = open_clip.create_model_and_transforms(name, pretrained=str(checkpoint), weights_only=True)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ClipError(f"cannot load {checkpoint} as open_clip {model}: {str(exc).splitlines()[0]}") from None
    size = net.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = getattr(net.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(net.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return net.eval(), open_clip.get_tokenizer(name), tuple(mean), tuple(std), int(size)


@torch.no_grad()
def clip_recall(images: Tensor, labels: list[int], names: list[str], checkpoint: Path, model: str,
                batch: int = 64) -> dict[str, float]:
    """``{clip_r1, clip_r5}`` of images ``[N, 3, H, W]`` in [-1, 1] whose classes are ``labels`` (indices
    into ``names``), ranking the class prompts by cosine similarity."""
    net, tokenizer, mean, std, size = load(checkpoint, model)
    text = F.normalize(net.encode_text(tokenizer([PROMPT.format(n) for n in names])).float(), dim=1)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    sims = []
    for start in range(0, len(images), batch):
        x = F.interpolate((images[start:start + batch].float() + 1) / 2, size=(size, size), mode="bicubic",
                          align_corners=False).clamp(0, 1)
        sims.append(F.normalize(net.encode_image((x - m) / s).float(), dim=1) @ text.t())
    r = recall_at_k(torch.cat(sims), torch.tensor(labels, dtype=torch.long), (1, 5))
    return {"clip_r1": r[1], "clip_r5": r[5]}
