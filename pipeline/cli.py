"""The ``s2s`` command: thin typer commands over plain functions (stages, manifests, media).

Errors a user can cause (bad params, missing files) end with one sentence on stderr and exit code 2,
never a traceback.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pipeline.params import (DataParams, DecodeParams, GeneratorParams, ImageEncoderParams, ImagesParams, ParamsError,
                             scalar, section)

app = typer.Typer(help="Sound2Scene: from unlabeled videos to the scene a sound comes from.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
stage_app = typer.Typer(help="Run one dvc.yaml stage (dvc.yaml calls these).", no_args_is_help=True)
manifest_app = typer.Typer(help="Inspect Parquet manifests.", no_args_is_help=True)
app.add_typer(stage_app, name="stage")
app.add_typer(manifest_app, name="manifest")

ParamsOpt = Annotated[Path, typer.Option("--params", help="params file (YAML)")]


def fail(message: str) -> None:
    """Print one sentence to stderr and exit with code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logs")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@stage_app.command("videos")
def stage_videos(
    params: ParamsOpt = Path("params.yaml"),
    out_dir: Annotated[Path, typer.Option(help="folder for the mp4 clips")] = Path("data/videos"),
    manifest: Annotated[Path, typer.Option(help="videos.parquet to write")] = Path("data/videos.parquet"),
    events: Annotated[Path, typer.Option(help="events.parquet to write")] = Path("data/events.parquet"),
) -> None:
    """Make or fetch the videos and write videos.parquet (and events.parquet for the built-in world)."""
    from stages import videos

    try:
        seed = scalar(params, "seed", int, 0)
        data = section(params, "data", DataParams)
        summary = videos.run(seed, data, out_dir=out_dir, manifest=manifest, events=events)
    except (ParamsError, NotImplementedError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"videos: {summary['total']} clips, {summary['ok']} ok, {summary['failed']} failed")


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
    from models.biggan_io import CheckpointMismatchError as GanMismatch
    from models.checkpoint import CheckpointMismatchError
    from stages import train_generator

    try:
        summary = train_generator.run(section(params, "generator", GeneratorParams), encoder=encoder,
                                      images=images, out=out, reports=reports)
    except (ParamsError, ValueError, FileNotFoundError, CheckpointMismatchError, GanMismatch) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    typer.echo(f"generator: {summary.get('steps', 0)} steps, class accuracy {summary.get('class_acc')}")


@app.command("generate")
def generate(
    features: Annotated[Path, typer.Option(help="instance features, .npy [N, feat_dim]")],
    out: Annotated[Path, typer.Option(help="OUT.npy (raw images in [-1, 1], NCHW) or a folder for PNGs")],
    generator: Annotated[Path, typer.Option(help="our generator.pt or a published icgan folder")] = Path(
        "artifacts/generator.pt"),
    noise: Annotated[Path | None, typer.Option(help="noise .npy [N, dim_z] (default: drawn from --seed)")] = None,
    truncation: Annotated[float | None, typer.Option(help="redraw drawn noise outside [-t, t]")] = None,
    seed: Annotated[int, typer.Option(help="seed of the drawn noise")] = 0,
) -> None:
    """Draw one image per feature row with the IC-GAN generator (same inputs = same images)."""
    import pickle

    from models.biggan_io import CheckpointMismatchError
    from pipeline import generate as gen

    if not generator.exists():
        fail(f"no such generator: {generator}")
    try:
        paths = gen.run(generator, features, noise, out, truncation, seed)
    except (gen.InputError, CheckpointMismatchError, ValueError, FileNotFoundError) as exc:
        fail(str(exc).splitlines()[0])
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        fail(f"cannot read the generator {generator} (truncated or not a checkpoint: {type(exc).__name__})")
    typer.echo(f"generate: wrote {len(paths)} file(s) under {out}")


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
