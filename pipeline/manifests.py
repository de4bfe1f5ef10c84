"""Parquet manifests: explicit pyarrow schemas (DESIGN section 3), atomic writes, a pretty printer.

Paths inside manifests are relative to the manifest's own folder (`resolve`), so a data folder can move.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

VIDEOS = pa.schema([
    ("video_id", pa.string()), ("path", pa.string()), ("source", pa.string()), ("label", pa.string()),
    ("split", pa.string()), ("duration_s", pa.float64()), ("fps", pa.float64()), ("width", pa.int32()),
    ("height", pa.int32()), ("audio_sr", pa.int32()), ("has_audio", pa.bool_()), ("status", pa.string()),
    ("error", pa.string()),
])

# One row per sound of the built-in world. x, y: the drawn source's centre in pixels (null off screen).
EVENTS = pa.schema([
    ("video_id", pa.string()), ("label", pa.string()), ("t_start", pa.float64()), ("t_end", pa.float64()),
    ("loudness", pa.float64()), ("on_screen", pa.bool_()), ("size", pa.float64()), ("x", pa.float64()),
    ("y", pa.float64()),
])

MOMENTS = pa.schema([
    ("video_id", pa.string()), ("rank", pa.int32()), ("t_s", pa.float64()), ("frame_index", pa.int32()),
    ("score", pa.float64()),
])

PAIRS = pa.schema([
    ("key", pa.string()), ("video_id", pa.string()), ("split", pa.string()), ("label", pa.string()),
    ("t_s", pa.float64()), ("score", pa.float64()), ("selection", pa.string()), ("shard", pa.string()),
])

# One row per stored image of the `images` stage, in array order. video_id: the clip, or the image's path
# relative to the corpus folder; t_s: frame time (0 for still images); label: null for the unlabeled corpus.
IMAGES = pa.schema([
    ("video_id", pa.string()), ("split", pa.string()), ("t_s", pa.float64()), ("label", pa.string()),
])

SCHEMAS = {"videos": VIDEOS, "events": EVENTS, "moments": MOMENTS, "pairs": PAIRS, "images": IMAGES}


def tmp_name(path: Path) -> Path:
    """The temporary sibling an output is written to before the rename (same folder, same filesystem)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write(rows: Iterable[Mapping], schema: pa.Schema, path: str | Path) -> Path:
    """Write ``rows`` (dicts with exactly the schema's keys) to ``path`` atomically; returns the path."""
    path = Path(path)
    rows = list(rows)
    for row in rows:
        if set(row) != set(schema.names):
            extra, missing = set(row) - set(schema.names), set(schema.names) - set(row)
            raise ValueError(f"row does not fit the schema: extra {sorted(extra)}, missing {sorted(missing)}")
    table = pa.Table.from_pylist(rows, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read(path: str | Path, schema: pa.Schema | None = None) -> pa.Table:
    """Read a manifest; with ``schema``, check that its columns are there with the right types."""
    table = pq.read_table(path)
    if schema is not None:
        for fld in schema:
            if fld.name not in table.schema.names:
                raise ValueError(f"{path}: column {fld.name!r} is missing")
            if not table.schema.field(fld.name).type.equals(fld.type):
                raise ValueError(f"{path}: column {fld.name!r} is {table.schema.field(fld.name).type}, not {fld.type}")
    return table


def resolve(manifest: str | Path, rel: str) -> Path:
    """The absolute path of a file named relative to ``manifest``'s folder."""
    return (Path(manifest).parent / rel).resolve()


def describe(path: str | Path, *, head: int = 5) -> str:
    """Schema, row count, status counts (when there is a status column) and the first rows, as text."""
    import pandas as pd

    table = pq.read_table(path)
    lines = [f"{path}: {table.num_rows} rows", "schema:"]
    lines += [f"  {f.name}: {f.type}" for f in table.schema]
    if "status" in table.schema.names:
        counts = table.column("status").value_counts().to_pylist()
        lines.append("status: " + ", ".join(f"{c['values']}={c['counts']}" for c in counts))
    if "split" in table.schema.names:
        counts = table.column("split").value_counts().to_pylist()
        lines.append("split: " + ", ".join(f"{c['values']}={c['counts']}" for c in counts))
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        lines += ["first rows:", table.slice(0, head).to_pandas().to_string()]
    return "\n".join(lines)
