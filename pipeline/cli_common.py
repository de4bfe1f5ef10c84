"""What every ``s2s`` command shares: the --params option and one-sentence failures."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ParamsOpt = Annotated[Path, typer.Option("--params", help="params file (YAML)")]
VideosIn = Annotated[Path, typer.Option(help="videos.parquet to read")]
RowsOut = Annotated[Path, typer.Option("--out", help=".npy to write: one float32 row per input, in input order")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda")]


def fail(message: str) -> None:
    """Print one sentence to stderr and exit with code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def require(*files: Path) -> None:
    """Fail with one sentence naming the first of ``files`` that does not exist."""
    for f in files:
        if not Path(f).is_file():
            fail(f"no such file: {f}")
