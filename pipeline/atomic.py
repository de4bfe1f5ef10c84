"""Writing a file whole or not at all: a temporary sibling, then a rename (same folder, same filesystem).

A stage killed mid-write leaves its previous output or none, never half a report, and a reader never sees a
partial file. Parquet manifests, shards, checkpoints and images have their own writers (``pipeline.manifests``,
``pipeline.shards``, ``models.checkpoint``, ``pipeline.pictures``) through the same temporary names.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.manifests import tmp_name


def write_text(path: Path | str, text: str) -> Path:
    """``text`` at ``path`` (folders made), atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(obj: Any, path: Path | str, *, sort_keys: bool = False) -> Path:
    """``obj`` as JSON indented by 2, with a final newline, at ``path``, atomically; returns the path."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")
