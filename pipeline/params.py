"""Typed, strict params: each stage reads only its own section of params.yaml.

A section is a (nested) dataclass. Loading rejects unknown keys with a message that names the key's full
path (``data.world.clases``), and wrong types with the expected type, so a typo in ``params.yaml`` or in
``dvc exp run -S`` fails before any work is done.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.params_data import ClipParams, DataParams, LocalParams, VegasParams, VggsoundParams, WorldParams
from pipeline.strict import ParamsError, check, from_dict, read_yaml, scalar, section

__all__ = ["ParamsError", "from_dict", "read_yaml", "scalar", "section", "load_all", "SCALARS", "SECTIONS",
           "WorldParams", "LocalParams", "VggsoundParams", "VegasParams", "ClipParams", "DataParams",
           "DecodeParams", "LocalizerParams", "ScoreParams", "PairsParams", "ImagesParams",
           "ImageEncoderParams", "GeneratorParams", "EmbedParams", "SpectrogramParams", "AudioEncoderParams",
           "EvaluatorParams", "EvaluateParams"]


@dataclass(frozen=True)
class DecodeParams:
    """How stages decode media (DESIGN section 2: pipeline/media.py)."""

    fps: int = 10
    backend: Literal["torchcodec", "decord"] = "torchcodec"
    timeout_s: float = 60.0
    audio_sr: int = 16000


@dataclass(frozen=True)
class LocalizerParams:
    """The `train_localizer` stage: the sound-source localizer (models/localizer.py) and its training."""

    checkpoint: str | None = None  # an external localizer.pt to use instead of training one
    dim: int = 64
    width: int = 16
    n_mels: int = 40
    image_size: int = 64  # frames are resized to this square before training and scoring
    window_s: float = 1.0  # audio window around each frame
    frame_every: int = 2  # train on every n-th frame at decode.fps
    max_videos: int = 2000  # at most this many train videos are held in memory
    steps: int = 800
    batch_videos: int = 64  # two times of each video per step
    min_gap_s: float = 1.0  # the two times of a video are at least this far apart
    lr: float = 0.004
    temperature: float = 0.07
    workers: int = 2  # decode processes
    threads: int = 1  # torch threads for training (more than the free cores slows it down)
    save_every: int = 100  # steps between saves of the training state (a rerun resumes from it)
    members: int = 1  # localizers trained from seeds seed + 10000 i, i < members; `score` averages their C[t]

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ParamsError(f"localizer.members must be at least 1, got {self.members}")


@dataclass(frozen=True)
class ScoreParams:
    """The `score` stage: C[t] for every frame at decode.fps, top-k moments per video."""

    window_s: float = 1.0  # audio window centred on each frame
    k: int = 10
    normalize: Literal["video", "none"] = "video"  # video: C[t] minus the mean over the video's frames
    workers: int = 2  # decode processes (the model runs in the main process)
    threads: int = 1  # torch threads for the model
    sheets: int = 4  # contact sheets of the first videos scored (s2s stage score --sheets DIR)


@dataclass(frozen=True)
class PairsParams:
    """The `pairs` stage: the chosen frame and audio window of each video, as WebDataset shards."""

    shard_size: int = 1000  # samples per shard
    window_s: float = 1.0  # audio window stored beside the frame (centred on it)
    jpeg_quality: int = 95
    annotations: str | None = None  # CSV (video_id, t_s) for selection=annotations
    workers: int = 2  # decode processes


@dataclass(frozen=True)
class ImagesParams:
    """The unlabeled image corpus (the `images` stage).

    ``source: videos`` samples every ``every``-th frame (at ``decode.fps``) of the train-split clips of
    videos.parquet; ``folder`` reads every image under ``folder`` (ImageNet-style class folders; the folder
    names are ignored); ``webdataset`` the image member of every sample of the shards ``webdataset`` names.
    Labelled evaluation frames of val/test clips come from events.parquet (the world) or, for real videos,
    from the clip labels.
    """

    source: Literal["videos", "folder", "webdataset"] = "videos"
    folder: str | None = None
    webdataset: str | None = None  # shard URLs: "path/{000..009}.tar" or "pipe:CMD" (image member per sample)
    every: int = 2  # keep every k-th frame of a train clip
    size: int = 64  # stored images are size x size uint8 RGB
    eval_every: int = 3  # labelled frames: every k-th frame of each on-screen event (world) or labelled clip


@dataclass(frozen=True)
class ImageEncoderParams:
    """SwAV training of the image encoder (the `train_image_encoder` stage); ``checkpoint`` skips it."""

    checkpoint: str | None = None  # published swav.pth.tar or our {"model","config","step"} file
    width: int = 8  # ResNet-50 planes of the first stage (64 = paper); feature dim 32 * width
    stem: Literal["imagenet", "small"] = "imagenet"  # small: 3x3 stride-2 conv, no max pool (fine textures of small frames)
    hidden_dim: int = 256
    proj_dim: int = 32
    n_prototypes: int = 128  # well above proj_dim (SwAV: 3000 vs 128); 32 or 64 collapsed on the world
    steps: int = 400
    batch: int = 64
    lr: float = 0.015  # SGD with momentum 0.9, cosine schedule with warm-up
    weight_decay: float = 1e-6
    temperature: float = 0.1
    epsilon: float = 0.05  # Sinkhorn-Knopp entropy weight
    sinkhorn_iters: int = 3
    crop_size: int = 64
    small_crops: int = 2  # multi-crop: extra low-resolution views per image
    small_size: int = 32
    freeze_prototypes_steps: int = 400  # prototypes fixed (random unit vectors) for this many steps
    queue: int = 512  # earlier embeddings added to each Sinkhorn problem (0: none)
    jitter: float = 0.8  # brightness / contrast / saturation strength
    hue_p: float = 0.8  # chance of an RGB channel permutation per view
    grey_p: float = 0.2  # chance of grey scale per view
    group_size: int = 0  # frames of one clip per batch (0: independent images); needs video_id rows
    objective: Literal["swav", "nt_xent"] = "swav"  # nt_xent: SimCLR's loss on the two global views
    nce_temperature: float = 0.2  # NT-Xent temperature
    hard_negatives: float = 0.0  # NT-Xent: weight of a negative ~ exp(beta x its logit) (0: plain NT-Xent)
    bg_swap: float = 0.0  # chance per view of pasting its foreground onto another clip's scene; needs video_id
    min_foreground: float = 0.0  # train only on frames with at least this foreground share; needs video_id
    crop_scale: tuple[float, float] = (0.35, 1.0)  # area range of the two global crops (share of the image)
    rotate: float = 0.0  # each view turned by a uniform angle up to this many degrees (0: none)
    fg_zoom: float = 0.0  # chance that a frame's second view zooms onto its foreground's box; needs video_id
    texture_negatives: bool = False  # nt_xent: each textured frame, its foreground shuffled, as a negative; needs video_id
    knn_k: int = 10
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available
    amp: bool = True  # bfloat16 autocast of the forward passes on CUDA (ignored on CPU)
    threads: int = 1  # torch intra-op threads (1: no spin-waiting when the cores are shared)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.bg_swap <= 1.0:
            raise ParamsError(f"image_encoder.bg_swap: expected a probability in [0, 1], got {self.bg_swap}")
        if not 0.0 <= self.min_foreground < 1.0:
            raise ParamsError(f"image_encoder.min_foreground: expected a share in [0, 1), got {self.min_foreground}")
        if not self.nce_temperature > 0:
            raise ParamsError(f"image_encoder.nce_temperature: expected > 0, got {self.nce_temperature}")
        if not self.hard_negatives >= 0:
            raise ParamsError(f"image_encoder.hard_negatives: expected >= 0, got {self.hard_negatives}")
        if not 0.0 <= self.fg_zoom <= 1.0:
            raise ParamsError(f"image_encoder.fg_zoom: expected a probability in [0, 1], got {self.fg_zoom}")
        if self.texture_negatives and self.objective != "nt_xent":
            raise ParamsError("image_encoder.texture_negatives: needs objective nt_xent (SwAV has no negatives), "
                              f"got objective {self.objective}")
        if not 0.0 <= self.rotate <= 180.0:
            raise ParamsError(f"image_encoder.rotate: expected degrees in [0, 180], got {self.rotate}")
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ParamsError(f"image_encoder.crop_scale: expected [min, max] with 0 < min <= max <= 1, "
                              f"got {list(self.crop_scale)}")


@dataclass(frozen=True)
class GeneratorParams:
    """IC-GAN training on the BigGAN backbone (the `train_generator` stage); ``checkpoint`` skips it."""

    checkpoint: str | None = None  # our checkpoint file, or a published icgan_biggan_... folder
    resolution: int = 32
    g_ch: int = 8
    d_ch: int = 8
    dim_z: int = 64
    shared_dim_feat: int = 128
    attn: str = "0"
    min_foreground: float = 0.0  # train on frames whose foreground (vs the clip's median scene) covers this share
    k_neighbours: int = 10
    feature_weight: float = 0.0  # G also minimises this x (1 - cos(encoder(fake), h)) (0: off, plain IC-GAN)
    neighbour_mean: float = 0.0  # share of conditions replaced by the unit mean of the instance's k-neighbourhood
    composites: float = 0.0  # share of rows made two-source: another image's foreground pasted on, h = unit(h_a + h_b)
    feature_first: bool = False  # the condition also enters G's first Linear (the layout), not only its BNs
    centre_features: bool = False  # G and D see unit(h - corpus mean) (README "The visual half")
    whiten_features: bool = False  # G and D see unit((unit(h) - corpus mean) W), W the corpus' ZCA matrix
    whiten_eps: float = 1.0  # ZCA regulariser, relative to the mean eigenvalue of the features' covariance
    whiten_rank: int = 0  # whiten only the top this many principal directions and drop the rest (0: all)
    batch: int = 32
    g_lr: float = 4e-4
    d_lr: float = 4e-4
    d_steps: int = 1
    betas: tuple[float, float] = (0.0, 0.999)
    augment: str = "translation,color"  # DiffAugment policies applied to real and fake ("" = none)
    ema_decay: float = 0.99  # short runs: 0.999 would still be averaging the first, noisy steps
    ema_start: int = 50
    steps: int = 2000
    minutes: float = 12.0  # stop early when training has run this long (0: no limit)
    sample_every: int = 100
    checkpoint_every: int = 100
    eval_frames: int = 256  # test frames used for the class-accuracy check
    fid_every: int = 200  # FID of G_ema on the encoder's features every this many steps (0: only at the end)
    fid_images: int = 256  # train images (and as many generated) per FID
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available
    amp: bool = True  # bf16 autocast of the G and D forward passes on CUDA and on CPUs with native bf16
    threads: int = 1  # torch intra-op threads (1: no spin-waiting when the cores are shared)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.whiten_eps > 0:
            raise ParamsError(f"generator.whiten_eps: expected > 0, got {self.whiten_eps}")
        if self.whiten_rank < 0:
            raise ParamsError(f"generator.whiten_rank: expected >= 0 (0: every direction), got {self.whiten_rank}")
        if not 0.0 <= self.neighbour_mean <= 1.0:
            raise ParamsError(f"generator.neighbour_mean: expected a share in [0, 1], got {self.neighbour_mean}")
        if not 0.0 <= self.composites <= 1.0:
            raise ParamsError(f"generator.composites: expected a share in [0, 1], got {self.composites}")


@dataclass(frozen=True)
class EmbedParams:
    """Image features of every pair, computed once by the frozen image encoder (the `embed` stage)."""

    image_size: int | None = None  # None: the published input (256 then bicubic 224); else S x S
    batch: int = 64
    workers: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class SpectrogramParams:
    """The audio encoder's input, computed on the training device (pipeline/spectrogram.py)."""

    kind: Literal["logmel", "paper"] = "logmel"  # paper: 257 x 1004 log-PSD of 10 s
    n_mels: int = 64
    n_frames: int = 128
    n_fft: int = 512
    hop_length: int = 320
    time_mask: int = 0  # SpecAugment: widest time mask in frames (0: none), training only
    freq_mask: int = 0  # widest frequency mask in bins (0: none)
    float64: bool = False  # paper kind: compute in float64 (scipy-exact) instead of float32
    norm: Literal["clip", "none"] = "clip"  # clip: per-clip z-score (paper); none: log only (keeps loudness)
    log_eps: float = 1e-7  # log(power + log_eps) (paper: 1e-7); smaller keeps quiet bins and gains off the floor
    on: Literal["auto", "device", "workers"] = "auto"  # auto: the GPU when training on one, else workers

    def __post_init__(self) -> None:
        if not self.log_eps > 0:
            raise ParamsError(f"audio_encoder.spectrogram.log_eps: expected a positive number, got {self.log_eps}")


@dataclass(frozen=True)
class AudioEncoderParams:
    """Audio encoder and its training (the `train_audio_encoder` stage); ``checkpoint`` skips training."""

    checkpoint: str | None = None  # published sound2scene.pth or our {"model","config","step"} file
    width: int = 16  # ResNet-18 planes of the first stage (64 = paper); output dim = image feature dim
    spectrogram: SpectrogramParams = field(default_factory=SpectrogramParams)
    epochs: int = 20
    max_steps: int | None = None  # stop after this many optimizer steps in total (tests, benchmarks)
    batch: int = 64  # global batch (split over DDP ranks)
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    temperature: float = 1.0
    # InfoNCE leaves out of row i's softmax the rows whose image features have a cosine above this with i's
    # (same-class frames are false negatives; 1: none, the paper). In align_space's coordinates.
    false_negative_cos: float = 1.0
    split_by: Literal["sample", "shard"] = "sample"  # how ranks/workers share the shards (README)
    shuffle_buffer: int = 1000
    workers: int = 2
    cache_mb: int = 512  # decoded clips kept in memory across epochs, per training process (0: off; docs/align.md)
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    sync_bn: bool = True  # BatchNorm statistics over the global batch under DDP
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # torch CPU threads per process (0: torch's default)
    gain_p: float = 0.0  # share of training rows played at a random gain, their target moved (pipeline/gain_augment.py)
    gain_range: tuple[float, float] = (0.25, 4.0)  # gains drawn log-uniformly from this range
    gain_clusters: int = 16  # k-means clusters of image features within which the level direction is fit
    gain_scale: float = 1.0  # the target's move per unit of level, as a multiple of the fitted slope
    gain_on: Literal["spectrogram", "waveform"] = "spectrogram"  # waveform: clipped at full scale as at test time
    gain_saturate: bool = False  # a target moves no further than the quietest / loudest training pair's level
    mix_p: float = 0.0  # share of rows mixed 50/50 with another row's waveform, target unit(h_a + h_b) (mix_augment)
    ema_decay: float = 0.0  # validate and keep an exponential moving average of the weights (0: the weights)
    # unit: the loss compares the encoders' unit features (the paper) | generator: it compares them after the
    # generator's own input map (its centring and whitening, read from the generator checkpoint; docs/align.md)
    align_space: Literal["unit", "generator"] = "unit"

    def __post_init__(self) -> None:
        if self.cache_mb < 0:
            raise ParamsError(f"audio_encoder.cache_mb: expected 0 (off) or a size in MiB, got {self.cache_mb}")
        if not 0.0 <= self.gain_p <= 1.0:
            raise ParamsError(f"audio_encoder.gain_p: expected a share in [0, 1], got {self.gain_p}")
        low, high = self.gain_range
        if not 0 < low <= high:
            raise ParamsError(f"audio_encoder.gain_range: expected 0 < low <= high, got {list(self.gain_range)}")
        if not self.gain_scale > 0:
            raise ParamsError(f"audio_encoder.gain_scale: expected a positive multiple, got {self.gain_scale}")
        if not 0.0 <= self.mix_p <= 1.0:
            raise ParamsError(f"audio_encoder.mix_p: expected a share in [0, 1], got {self.mix_p}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ParamsError(f"audio_encoder.ema_decay: expected 0 (off) or a decay in (0, 1), got {self.ema_decay}")
        if not -1.0 <= self.false_negative_cos <= 1.0:
            raise ParamsError(f"audio_encoder.false_negative_cos: expected a cosine in [-1, 1], got "
                              f"{self.false_negative_cos}")
        if self.gain_clusters < 1:
            raise ParamsError(f"audio_encoder.gain_clusters: expected at least 1, got {self.gain_clusters}")
        if self.gain_p > 0 and self.spectrogram.norm != "none":
            raise ParamsError("audio_encoder.gain_p needs spectrogram.norm: none (the per-clip z-score removes "
                              "any gain)")


@dataclass(frozen=True)
class EvaluatorParams:
    """The evaluator classifier and its training (the `train_evaluator` stage; models/evaluator.py)."""

    width: int = 16  # ResNet planes of the first stage; pool feature (FID) = 16 * width with avgmax
    layers: tuple[int, int, int, int] = (1, 1, 1, 1)  # BasicBlocks per stage ((2, 2, 2, 2) = ResNet-18)
    image_size: int = 64  # input side; frames and generated images are resized to it
    stem: Literal["imagenet", "small"] = "small"  # small: 3x3 stride-2 conv, no max pool (fine shapes)
    pool: Literal["avg", "avgmax"] = "avgmax"  # avgmax: average and max pool concatenated (small sources)
    none_class: bool = True  # world: frames with no source drawn form a class `none` (else left out)
    two_source: bool = True  # world: frames with two classes drawn train with target 0.5 / 0.5 (else left out)
    composites: float = 0.5  # world: chance a one-source train frame gets another class's foreground beside its own
    max_frames: int = 0  # at most this many labelled train frames (0: all)
    epochs: int = 14
    batch: int = 128
    lr: float = 0.002  # AdamW, cosine schedule with a one-epoch linear warm-up
    weight_decay: float = 0.0005
    size_weight: float = 4.0  # weight of the size head's squared error beside the class cross-entropy
    crop: float = 0.85  # random square windows of side crop .. zoom_out x the frame (zoom in and out)
    zoom_out: float = 1.2
    rotate: float = 180.0  # random rotations by up to this many degrees (the world's sources turn freely)
    lowres: int = 32  # with p = 0.5 a frame is shrunk to lowres .. image_size pixels and back (0: never)
    threads: int = 1  # torch intra-op threads (1: no spin-waiting when the cores are shared)
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.layers) != 4:
            raise ParamsError(f"evaluator.layers: expected 4 block counts (one per stage), got {list(self.layers)}")
        if not 0.0 <= self.composites <= 1.0:
            raise ParamsError(f"evaluator.composites: expected a share in [0, 1], got {self.composites}")


@dataclass(frozen=True)
class EvaluateParams:
    """The `evaluate` stage: images from test audio, metrics against the evaluator, controls, samples."""

    n_noise: int = 8  # noise samples (images) per test clip; the same draws for every variant
    truncation: float | None = None  # BigGAN truncation of the noise (None: plain normal)
    gains: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # volume control: waveform gains
    volume_noise: int = 8  # noise samples per clip and gain for the volume control
    mix_pairs: int = 48  # mixing control: at most this many pairs of test clips of different classes
    samples: int = 16  # grids written to reports/samples/ (test clips taken class by class)
    is_splits: int = 10  # Inception Score splits (fewer when there are under 20 images per split)
    batch: int = 64
    clip_checkpoint: str | None = None  # local open_clip weights: adds CLIP R@1/R@5 against class names
    clip_model: str = "ViT-B-32"  # open_clip model name of those weights
    threads: int = 1  # torch intra-op threads
    seed: int = 0


SCALARS: dict[str, Any] = {"seed": int, "loss": Literal["infonce", "infonce_cos", "l2", "l1"],
                           "selection": Literal["top1", "mid", "random", "annotations"]}
SECTIONS: dict[str, type] = {"data": DataParams, "decode": DecodeParams, "localizer": LocalizerParams,
                             "score": ScoreParams, "pairs": PairsParams, "images": ImagesParams,
                             "image_encoder": ImageEncoderParams, "generator": GeneratorParams,
                             "embed": EmbedParams, "audio_encoder": AudioEncoderParams,
                             "evaluator": EvaluatorParams, "evaluate": EvaluateParams}


def load_all(path: str | Path) -> dict[str, Any]:
    """Every top-level scalar and section of a whole params file, each strictly: {name: value or dataclass}.

    An unknown top-level key is an error too (a stage only ever reads its own sections, so a misspelt
    section would otherwise be silently ignored). A new stage registers its section in ``SECTIONS``.
    """
    data = read_yaml(path)
    known = {**SCALARS, **SECTIONS}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ParamsError(f"unknown top-level key '{unknown[0]}' in {path} (known: {', '.join(sorted(known))})")
    out: dict[str, Any] = {k: check(data[k], tp, k) for k, tp in SCALARS.items() if k in data}
    out.update({name: from_dict(cls, data.get(name), where=name) for name, cls in SECTIONS.items()})
    return out
