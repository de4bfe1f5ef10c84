"""The ``s2s`` command: thin typer commands over plain functions (stages, manifests, media).

Errors a user can cause (bad params, missing files) end with one sentence on stderr and exit code 2,
never a traceback.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pipeline.params import DataParams, ParamsError, scalar, section

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
