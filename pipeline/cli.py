"""The ``s2s`` command: thin typer commands over plain functions (stages, manifests, media).

Errors a user can cause (bad params, missing files) end with one sentence on stderr and exit code 2,
never a traceback.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pipeline.params import (AudioEncoderParams, DataParams, DecodeParams, EmbedParams, LocalizerParams,
                             PairsParams, ParamsError, ScoreParams, scalar, section)

app = typer.Typer(help="Sound2Scene: from unlabeled videos to the scene a sound comes from.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
stage_app = typer.Typer(help="Run one dvc.yaml stage (dvc.yaml calls these).", no_args_is_help=True)
manifest_app = typer.Typer(help="Inspect Parquet manifests.", no_args_is_help=True)
app.add_typer(stage_app, name="stage")
app.add_typer(manifest_app, name="manifest")

ParamsOpt = Annotated[Path, typer.Option("--params", help="params file (YAML)")]
VideosIn = Annotated[Path, typer.Option(help="videos.parquet to read")]


def fail(message: str) -> None:
    """Print one sentence to stderr and exit with code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def require(*files: Path) -> None:
    """Fail with one sentence naming the first of ``files`` that does not exist."""
    for f in files:
        if not Path(f).is_file():
            fail(f"no such file: {f}")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logs")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


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


annotations_app = typer.Typer(help="Published frame annotations.", no_args_is_help=True)
app.add_typer(annotations_app, name="annotations")


@annotations_app.command("import")
def annotations_import(
    file: Annotated[Path, typer.Argument(help="top1_boxes_top10_moments.json (clip id -> 10 frames at 10 fps)")],
    out: Annotated[Path, typer.Option(help="moments.parquet to write")] = Path("data/moments_annotations.parquet"),
    videos: Annotated[Path | None, typer.Option(help="videos.parquet: keep its ok clips, clamp to their length")]
    = None,
    base: Annotated[int, typer.Option(help="number of the first frame in the file (0 or 1)")] = 0,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Import the official frame annotations into the moments.parquet schema (docs/ingest.md)."""
    from pipeline.annotations import import_annotations
    from pipeline.params import DecodeParams

    if not file.is_file():
        fail(f"no such file: {file}")
    if videos is not None and not videos.is_file():
        fail(f"no such file: {videos}")
    if base not in (0, 1):
        fail(f"--base must be 0 or 1, got {base}")
    try:
        fps = section(params, "decode", DecodeParams).fps if params.is_file() else DecodeParams().fps
        counts = import_annotations(file, out, decode_fps=fps, base=base, videos=videos)
    except (ParamsError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"annotations: {counts['clips']} clips written to {out}; dropped {counts['malformed']} malformed, "
               f"{counts['not_in_videos']} not ok in videos; {counts['clamped']} frames clamped")


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
) -> None:
    """Score every frame against its audio window and write the top-k moments per video."""
    from stages import score

    try:
        p, d = section(params, "score", ScoreParams), section(params, "decode", DecodeParams)
        shard_in = score.parse_shard(shard)
        require(videos, checkpoint)
        result = score.run(p, d, videos=videos, checkpoint=checkpoint, out=out, summary=summary, shard=shard_in)
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
) -> None:
    """Align the audio encoder to the image features (plain or under torchrun)."""
    from stages import train_audio_encoder

    try:
        loss, seed = scalar(params, "loss", str, "infonce"), scalar(params, "seed", int, 0)
        p = section(params, "audio_encoder", AudioEncoderParams)
        summary = train_audio_encoder.run(p, loss=loss, seed=seed, shards=shards, embeddings=embeddings, out=out,
                                          last=last, reports=reports)
    except (ParamsError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    best = summary["best"]
    if summary["rank"] == 0:
        typer.echo(f"train_audio_encoder: {summary['epochs']} epochs, {summary['steps']} steps, "
                   f"best val R@1 {best.get('val_r1', float('nan')):.3f} (epoch {best.get('epoch', '-')})")


@app.command("embed-audio")
def embed_audio(
    audio: Annotated[list[Path], typer.Argument(help="audio (or video) files, any rate, mono or not")],
    checkpoint: Annotated[Path, typer.Option(help="sound2scene.pth or our audio encoder checkpoint")],
    out: Annotated[Path, typer.Option(help=".npy to write: one float32 row per input, in input order")],
    batch: Annotated[int, typer.Option(help="clips per forward pass")] = 16,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Audio-encoder feature of each file, as the published test.py computes it (before normalising).

    A file that cannot be used gets a row of NaN and a line on stderr; the exit code is then 1.
    """
    from pipeline.devices import pick_device
    from pipeline.embed_audio import embed_files
    from pipeline.features import save_npy

    if not checkpoint.is_file():
        fail(f"no audio encoder checkpoint at {checkpoint}")
    try:
        feats, errors = embed_files(audio, checkpoint, batch=max(1, batch), device=pick_device(device))
    except ValueError as exc:  # a checkpoint that does not fit, a bad device name
        fail(str(exc))
    save_npy(out, feats)
    for path, err in zip(audio, errors):
        if err:
            typer.echo(f"warning: {path}: {err}", err=True)
    failed = sum(bool(e) for e in errors)
    typer.echo(f"embed-audio: {len(audio)} files, {len(audio) - failed} embedded, {failed} failed -> {out}")
    if failed:
        raise typer.Exit(1)


@manifest_app.command("show")
def manifest_show(
    file: Annotated[Path, typer.Argument(help="a Parquet manifest")],
    head: Annotated[int, typer.Option(help="rows to print")] = 5,
) -> None:
    """Print a manifest's schema, row count, status counts and first rows."""
    from pipeline import manifests

    if not file.is_file():
        fail(f"no such file: {file}")
    try:
        typer.echo(manifests.describe(file, head=head))
    except Exception as exc:  # pyarrow's errors on non-Parquet files are long
        fail(f"cannot read {file} as Parquet ({type(exc).__name__})")


if __name__ == "__main__":
    app()
