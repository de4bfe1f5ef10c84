"""How long a stage ran, kept out of its DVC outputs.

``dvc.lock`` records a hash of every output a stage declares, and the git-tracked reports are committed beside it.
A wall-clock figure inside one of them makes it differ on every run: a fresh clone's ``dvc repro`` then leaves
``dvc.lock`` and the reports modified although every model and table is byte-equal, and after a ``git pull`` a
``dvc repro`` re-runs the stage (its output no longer matches the lock). So a stage writes what it measured about
itself (seconds, throughput, where it resumed) to a sidecar no stage declares and git ignores:

- a report file ``reports/metrics.json`` -> ``reports/metrics.timings.json``;
- a report folder ``reports/generator`` -> ``reports/generator.timings.json`` (beside it, not in it).

The stage functions still return the timings in their summaries (logs, ``bench/``); only the files differ.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.atomic import write_json


def sidecar(path: Path | str) -> Path:
    """The timings file of a report file or folder: ``x.json`` -> ``x.timings.json``, ``dir`` -> ``dir.timings.json``."""
    path = Path(path)
    stem = path.name[:-len(".json")] if path.name.endswith(".json") else path.name
    return path.with_name(stem + ".timings.json")


def split(obj: dict[str, Any], keys: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``obj`` without ``keys``, and those of ``keys`` it has (a key it lacks is skipped)."""
    keys = set(keys)
    return {k: v for k, v in obj.items() if k not in keys}, {k: v for k, v in obj.items() if k in keys}


def write_report(obj: dict[str, Any], path: Path | str, keys: Iterable[str], *, sort_keys: bool = False) -> Path:
    """``obj`` but ``keys`` as JSON at ``path``, and ``keys`` in its sidecar; returns the sidecar's path."""
    kept, took = split(obj, keys)
    write_json(kept, path, sort_keys=sort_keys)
    return write(path, took)


def write(report: Path | str, timings: dict[str, Any]) -> Path:
    """Write ``timings`` to the sidecar of ``report``; returns its path."""
    return write_json(timings, sidecar(report))


def read(report: Path | str) -> dict[str, Any]:
    """The timings written beside ``report``; {} when there are none (an older run, or a run elsewhere)."""
    try:
        return json.loads(sidecar(report).read_text())
    except (OSError, ValueError):
        return {}
