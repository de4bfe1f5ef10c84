"""The ``s2s`` command: thin typer commands over plain functions (stages, manifests, media).

Errors a user can cause (bad params, missing files) end with one sentence on stderr and exit code 2,
never a traceback.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli_common import DeviceOpt, ParamsOpt, RowsOut, VideosIn, fail, require
from pipeline.cli_generate import register as register_generation
from pipeline.cli_stages import stage_app
from pipeline.params import DecodeParams, ParamsError, ScoreParams, section

app = typer.Typer(help="Sound2Scene: from unlabeled videos to the scene a sound comes from.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
manifest_app = typer.Typer(help="Inspect Parquet manifests.", no_args_is_help=True)
moments_app = typer.Typer(help="Look at the moments the localizer finds.", no_args_is_help=True)
app.add_typer(stage_app, name="stage")
app.add_typer(manifest_app, name="manifest")
app.add_typer(moments_app, name="moments")
register_generation(app)  # generate, interpolate, edit


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logs")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


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


@moments_app.command("show")
def moments_show(
    video_id: Annotated[str, typer.Argument(help="a video_id of videos.parquet")],
    out: Annotated[Path, typer.Option(help="PNG to write")],
    params: ParamsOpt = Path("params.yaml"),
    videos: VideosIn = Path("data/videos.parquet"),
    checkpoint: Annotated[Path, typer.Option(help="localizer checkpoint")] = Path("artifacts/localizer.pt"),
    events: Annotated[Path, typer.Option(help="events.parquet: main events are shaded when it exists")] =
        Path("data/events.parquet"),
) -> None:
    """Render a contact sheet of a video's frames with C[t] beneath and the chosen frame marked."""
    from models.localizer import load
    from pipeline import manifests
    from stages import score

    require(videos, checkpoint)
    try:
        p, d = section(params, "score", ScoreParams), section(params, "decode", DecodeParams)
    except ParamsError as exc:
        fail(str(exc))
    row = next((r for r in manifests.read(videos).to_pylist() if r["video_id"] == video_id), None)
    if row is None:
        fail(f"no video {video_id!r} in {videos}")
    spans = [(e["t_start"], e["t_end"]) for e in (manifests.read(events).to_pylist() if events.is_file() else [])
             if e["video_id"] == video_id and e["on_screen"] and e["label"] == row["label"]]
    img = score.contact_sheet(load(checkpoint), row, videos, p, d, spans)
    if isinstance(img, str):
        fail(f"cannot score {video_id}: {img}")
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    typer.echo(f"wrote {out}")


@app.command("embed-audio")
def embed_audio(
    audio: Annotated[list[Path], typer.Argument(help="audio (or video) files, any rate, mono or not")],
    checkpoint: Annotated[Path, typer.Option(help="sound2scene.pth or our audio encoder checkpoint")],
    out: RowsOut,
    batch: Annotated[int, typer.Option(help="clips per forward pass")] = 16,
    device: DeviceOpt = "auto",
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


@app.command("embed-image")
def embed_image(
    images: Annotated[list[Path], typer.Argument(help="image files (anything PIL reads)")],
    checkpoint: Annotated[Path, typer.Option(help="published swav.pth.tar or our image_encoder.pt")],
    out: RowsOut,
    batch: Annotated[int, typer.Option(help="images per forward pass")] = 32,
    device: DeviceOpt = "auto",
) -> None:
    """Image-encoder feature of each image, with the published preprocessing for published weights."""
    if not checkpoint.is_file():  # before torch is imported: these answers come at once
        fail(f"no image encoder checkpoint at {checkpoint}")
    for path in images:
        if not path.is_file():
            fail(f"no such image: {path}")
    from pipeline.devices import pick_device
    from pipeline.embed_image import EmbedImageError, embed_files
    from pipeline.features import save_npy

    try:
        feats = embed_files(images, checkpoint, batch=max(1, batch), device=pick_device(device))
    except (EmbedImageError, ValueError) as exc:
        fail(str(exc))
    save_npy(out, feats)
    typer.echo(f"embed-image: {len(images)} images, features {feats.shape[1]}-d -> {out}")


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
