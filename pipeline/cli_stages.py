"""``s2s stage NAME``: one thin command per dvc.yaml stage, calling ``stages/NAME.py``'s ``run``.

Each command reads its params sections (strict: an unknown key is an error naming it), checks its inputs
exist, and turns user-caused errors into one sentence (exit code 2).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli_common import ParamsOpt, VideosIn, fail, require
from pipeline.params import (AudioEncoderParams, DataParams, DecodeParams, EmbedParams, EvaluateParams,
                             EvaluatorParams, GeneratorParams, ImageEncoderParams, ImagesParams, LocalizerParams,
                             PairsParams, ParamsError, ScoreParams, scalar, section)

stage_app = typer.Typer(help="Run one dvc.yaml stage (dvc.yaml calls these).", no_args_is_help=True)


@stage_app.command("videos")
def stage_videos(
    params: ParamsOpt = Path("params.yaml"),
    out_dir: Annotated[Path, typer.Option(help="folder for the mp4 clips")] = Path("data/videos"),
    manifest: Annotated[Path, typer.Option(help="videos.parquet to write")] = Path("data/videos.parquet"),
    events: Annotated[Path, typer.Option(help="events.parquet to write")] = Path("data/events.parquet"),
    raw_dir: Annotated[Path, typer.Option(help="downloads and per-clip status records (not a DVC output)")]
    = Path("data/raw"),
    stats: Annotated[Path, typer.Option(help="stats summary (JSON) to write")] = Path("data/videos_stats.json"),
    shard: Annotated[str, typer.Option(help="do part i of n of the rows (0-based), e.g. 2/8")] = "0/1",
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Make or fetch the videos and write videos.parquet (and events.parquet for the built-in world)."""
    from pipeline.ingest import parse_shard
    from stages import videos

    try:
        seed = scalar(params, "seed", int, 0)
        data = section(params, "data", DataParams)
        summary = videos.run(seed, data, out_dir=out_dir, manifest=manifest, events=events, raw_dir=raw_dir,
                             stats=stats, shard=parse_shard(shard), progress=progress)
    except (ParamsError, NotImplementedError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"videos: {summary['total']} clips, {summary['ok']} ok, {summary['failed']} failed")


@stage_app.command("train_localizer")
def stage_train_localizer(
    params: ParamsOpt = Path("params.yaml"),
    videos: VideosIn = Path("data/videos.parquet"),
    out: Annotated[Path, typer.Option(help="checkpoint to write")] = Path("artifacts/localizer.pt"),
) -> None:
    """Train the sound-source localizer on the train split (or copy localizer.checkpoint)."""
    from stages import train_localizer

    try:
        seed = scalar(params, "seed", int, 0)
        p, d = section(params, "localizer", LocalizerParams), section(params, "decode", DecodeParams)
        require(Path(p.checkpoint) if p.checkpoint else videos)
        summary = train_localizer.run(seed, p, d, videos=videos, out=out)
    except (ParamsError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"train_localizer: {summary}")


@stage_app.command("score")
def stage_score(
    params: ParamsOpt = Path("params.yaml"),
    videos: VideosIn = Path("data/videos.parquet"),
    checkpoint: Annotated[Path, typer.Option(help="localizer checkpoint")] = Path("artifacts/localizer.pt"),
    out: Annotated[Path, typer.Option(help="moments.parquet to write")] = Path("data/moments.parquet"),
    summary: Annotated[Path, typer.Option(help="JSON summary (counts, failures, timings)")] =
        Path("data/moments.summary.json"),
    shard: Annotated[str, typer.Option(help="i/n: score every n-th video from the i-th")] = "0/1",
    sheets: Annotated[Path | None, typer.Option(help="folder for score.sheets contact sheets (PNG)")] = None,
) -> None:
    """Score every frame against its audio window and write the top-k moments per video."""
    from stages import score

    try:
        p, d = section(params, "score", ScoreParams), section(params, "decode", DecodeParams)
        shard_in = score.parse_shard(shard)
        require(videos, checkpoint)
        result = score.run(p, d, videos=videos, checkpoint=checkpoint, out=out, summary=summary, shard=shard_in,
                           sheets=sheets)
    except (ParamsError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"score: {result['total']} videos, {result['ok']} ok, {result['failed']} failed, "
               f"{result['skipped']} skipped ({result['videos_per_s']} videos/s)")


@stage_app.command("pairs")
def stage_pairs(
    params: ParamsOpt = Path("params.yaml"),
    videos: VideosIn = Path("data/videos.parquet"),
    moments: Annotated[Path, typer.Option(help="moments.parquet to read")] = Path("data/moments.parquet"),
    out: Annotated[Path, typer.Option(help="pairs.parquet to write")] = Path("data/pairs.parquet"),
    shard_dir: Annotated[Path, typer.Option(help="folder for {split}-%06d.tar shards")] = Path("data/shards"),
) -> None:
    """Pick each video's frame (params: selection) and write pairs.parquet and WebDataset shards."""
    from stages import pairs

    try:
        seed, selection = scalar(params, "seed", int, 0), scalar(params, "selection", str, "top1")
        p, d = section(params, "pairs", PairsParams), section(params, "decode", DecodeParams)
        require(videos, moments)
        summary = pairs.run(selection, seed, p, d, videos=videos, moments_path=moments, out=out, shard_dir=shard_dir)
    except (ParamsError, ValueError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"pairs ({selection}): {summary['total']} videos, {summary['ok']} ok, {summary['failed']} failed, "
               f"{len(summary['shards'])} shards")


@stage_app.command("images")
def stage_images(
    params: ParamsOpt = Path("params.yaml"),
    videos: Annotated[Path, typer.Option(help="videos.parquet to sample")] = Path("data/videos.parquet"),
    events: Annotated[Path, typer.Option(help="events.parquet (labels of eval frames)")] = Path("data/events.parquet"),
    out: Annotated[Path, typer.Option(help="folder for train/eval .npy + .parquet")] = Path("data/images"),
) -> None:
    """Sample the unlabeled image corpus (and labelled eval frames) from the train clips or a folder."""
    from stages import images

    try:
        summary = images.run(section(params, "images", ImagesParams), section(params, "decode", DecodeParams),
                             videos=videos, events=events, out=out)
    except (ParamsError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo("images: {clips} inputs, {failed} failed, {train} train images, {eval} eval images".format(**summary))


@stage_app.command("train_image_encoder")
def stage_train_image_encoder(
    params: ParamsOpt = Path("params.yaml"),
    images: Annotated[Path, typer.Option(help="the images stage's folder")] = Path("data/images"),
    out: Annotated[Path, typer.Option(help="checkpoint to write")] = Path("artifacts/image_encoder.pt"),
    report: Annotated[Path, typer.Option(help="health report (JSON)")] = Path("reports/image_encoder.json"),
) -> None:
    """Train the SwAV image encoder (or load image_encoder.checkpoint) and report k-NN accuracy."""
    from models.checkpoint import CheckpointMismatchError
    from stages import train_image_encoder

    try:
        summary = train_image_encoder.run(section(params, "image_encoder", ImageEncoderParams), images=images,
                                          out=out, report=report)
    except (ParamsError, ValueError, FileNotFoundError, CheckpointMismatchError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    typer.echo(f"image encoder: k-NN accuracy {summary['knn_acc']}, nearest-centroid {summary['centroid_acc']}"
               f" (random init: {summary['random_init']['knn_acc']})")


@stage_app.command("train_generator")
def stage_train_generator(
    params: ParamsOpt = Path("params.yaml"),
    encoder: Annotated[Path, typer.Option(help="the image encoder checkpoint")] = Path("artifacts/image_encoder.pt"),
    images: Annotated[Path, typer.Option(help="the images stage's folder")] = Path("data/images"),
    out: Annotated[Path, typer.Option(help="generator checkpoint to write")] = Path("artifacts/generator.pt"),
    reports: Annotated[Path, typer.Option(help="folder for metrics.json and sample grids")] = Path("reports/generator"),
) -> None:
    """Train the IC-GAN generator on the corpus (or load generator.checkpoint); report class accuracy."""
    from models.checkpoint import CheckpointMismatchError
    from stages import train_generator

    try:
        summary = train_generator.run(section(params, "generator", GeneratorParams), encoder=encoder,
                                      images=images, out=out, reports=reports)
    except (ParamsError, ValueError, FileNotFoundError, CheckpointMismatchError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    typer.echo(f"generator: {summary.get('steps', 0)} steps, class accuracy {summary.get('class_acc')}")


@stage_app.command("embed")
def stage_embed(
    params: ParamsOpt = Path("params.yaml"),
    shards: Annotated[Path, typer.Option(help="folder of {split}-%06d.tar pair shards")] = Path("data/shards"),
    encoder: Annotated[Path, typer.Option(help="image encoder checkpoint")] = Path("artifacts/image_encoder.pt"),
    out_dir: Annotated[Path, typer.Option(help="folder for {split}.npy + {split}.parquet")] = Path("data/embeddings"),
) -> None:
    """Image-encoder feature of every pair's frame, computed once (the encoder is frozen)."""
    from stages import embed

    if not encoder.is_file():
        fail(f"no image encoder checkpoint at {encoder}")
    try:
        summary = embed.run(section(params, "embed", EmbedParams), shards=shards, encoder=encoder,
                            out_dir=out_dir)
    except (ParamsError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    for split, s in summary.items():
        typer.echo(f"embed {split}: {s['total']} pairs, {s['ok']} embedded, {s['skipped']} skipped")


@stage_app.command("train_audio_encoder")
def stage_train_audio_encoder(
    params: ParamsOpt = Path("params.yaml"),
    shards: Annotated[Path, typer.Option(help="folder of {split}-%06d.tar pair shards")] = Path("data/shards"),
    embeddings: Annotated[Path, typer.Option(help="the embed stage's folder")] = Path("data/embeddings"),
    out: Annotated[Path, typer.Option(help="best checkpoint (val R@1)")] = Path("artifacts/audio_encoder.pt"),
    last: Annotated[Path, typer.Option(help="resume state")] = Path("artifacts/audio_encoder.last.pt"),
    reports: Annotated[Path, typer.Option(help="metrics.json, epochs.csv, steps.csv")] = Path("reports/align"),
    generator: Annotated[Path, typer.Option(help="read with align_space: generator (its input map)")] = Path(
        "artifacts/generator.pt"),
) -> None:
    """Align the audio encoder to the image features (plain or under torchrun)."""
    from stages import train_audio_encoder

    try:
        loss, seed = scalar(params, "loss", str, "infonce"), scalar(params, "seed", int, 0)
        p = section(params, "audio_encoder", AudioEncoderParams)
        summary = train_audio_encoder.run(p, loss=loss, seed=seed, shards=shards, embeddings=embeddings, out=out,
                                          last=last, reports=reports, generator=generator)
    except (ParamsError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    best = summary["best"]
    if summary["rank"] == 0:
        typer.echo(f"train_audio_encoder: {summary['epochs']} epochs, {summary['steps']} steps, "
                   f"best val R@1 {best.get('val_r1', float('nan')):.3f} (epoch {best.get('epoch', '-')})")


def require_artifact(path: Path, stage: str) -> None:
    """Fail with one sentence naming the stage that makes ``path`` when it does not exist."""
    if not Path(path).exists():
        fail(f"{path} is missing: run `dvc repro {stage}`")


@stage_app.command("train_evaluator")
def stage_train_evaluator(
    params: ParamsOpt = Path("params.yaml"),
    images: Annotated[Path, typer.Option(help="the images stage's folder")] = Path("data/images"),
    videos: VideosIn = Path("data/videos.parquet"),
    events: Annotated[Path, typer.Option(help="events.parquet (frame labels and sizes of the world)")]
    = Path("data/events.parquet"),
    out: Annotated[Path, typer.Option(help="checkpoint to write")] = Path("artifacts/evaluator.pt"),
    report: Annotated[Path, typer.Option(help="accuracy report (JSON)")] = Path("reports/evaluator.json"),
    curve: Annotated[Path, typer.Option(help="per-epoch training curve (CSV)")] = Path("reports/evaluator_curve.csv"),
) -> None:
    """Train the evaluator (classifier + drawn-size head) on labelled train frames; report test accuracy."""
    for path, stage in ((images / "train.npy", "images"), (videos, "videos")):
        require_artifact(path, stage)
    from stages import train_evaluator

    try:
        summary = train_evaluator.run(section(params, "evaluator", EvaluatorParams), images=images, videos=videos,
                                      events=events, out=out, report=report, curve_csv=curve)
    except (ParamsError, ValueError, FileNotFoundError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    typer.echo(f"train_evaluator: test accuracy {summary['evaluator_acc']} on {summary['test_frames']} real frames, "
               f"{summary['train_frames']} train frames, two-source top-2 {summary['two_source_top2']} on "
               f"{summary['two_source_frames']} held-out frames, {summary['seconds']} s")


@stage_app.command("evaluate")
def stage_evaluate(
    params: ParamsOpt = Path("params.yaml"),
    shards: Annotated[Path, typer.Option(help="folder of the pair shards (test-*.tar)")] = Path("data/shards"),
    audio_encoder: Annotated[Path, typer.Option(help="audio encoder")] = Path("artifacts/audio_encoder.pt"),
    generator: Annotated[Path, typer.Option(help="generator")] = Path("artifacts/generator.pt"),
    evaluator: Annotated[Path, typer.Option(help="evaluator")] = Path("artifacts/evaluator.pt"),
    image_encoder: Annotated[Path, typer.Option(help="image encoder (features of the labelled test frames)")] = Path(
        "artifacts/image_encoder.pt"),
    embeddings: Annotated[Path, typer.Option(help="the embed stage's folder")] = Path("data/embeddings"),
    images: Annotated[Path, typer.Option(help="the images stage's folder")] = Path("data/images"),
    pairs: Annotated[Path, typer.Option(help="pairs.parquet")] = Path("data/pairs.parquet"),
    videos: VideosIn = Path("data/videos.parquet"),
    events: Annotated[Path, typer.Option(help="events.parquet")] = Path("data/events.parquet"),
    metrics: Annotated[Path, typer.Option(help="metrics to write (JSON)")] = Path("reports/metrics.json"),
    plots: Annotated[Path, typer.Option(help="folder for per_class.csv and volume.csv")] = Path("reports/evaluate"),
    samples: Annotated[Path, typer.Option(help="folder for the sample grids")] = Path("reports/samples"),
) -> None:
    """Generate from every test clip's sound; write R@k, FID, IS, references and controls."""
    makers = ((shards, "pairs"), (pairs, "pairs"), (videos, "videos"), (events, "videos"),
              (images / "eval.npy", "images"), (embeddings / "test.npy", "embed"), (audio_encoder, "train_audio_encoder"),
              (generator, "train_generator"), (evaluator, "train_evaluator"), (image_encoder, "train_image_encoder"))
    for path, stage in makers:
        require_artifact(path, stage)
    from models.checkpoint import CheckpointMismatchError
    from stages import evaluate

    try:
        m = evaluate.run(section(params, "evaluate", EvaluateParams), shards=shards, audio_encoder=audio_encoder,
                         generator=generator, evaluator=evaluator, image_encoder=image_encoder,
                         embeddings=embeddings, images=images, pairs=pairs,
                         videos=videos, events=events, metrics=metrics, plots=plots, samples=samples)
    except (ParamsError, ValueError, FileNotFoundError, CheckpointMismatchError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    typer.echo("evaluate: " + ", ".join(f"{k} {m.get(k)}" for k in ("r1", "r5", "fid", "is", "r1_upper",
                                                                     "r1_upper_frames", "r1_real_pairs", "r1_lower",
                                                                     "volume_spearman", "mix_top2", "moment_hit")))
