"""Input rows of the `videos` stage for the real-world sources: VGGSound's CSV, VEGAS's folders, a local folder.

Every source is a generator of `Row` (streamed: a 200k-line CSV is never held in memory). A row either names
a clip to fetch (``url``) or read (``path``), or carries the one-line ``error`` of a bad input line, so that
every input becomes exactly one manifest row (DESIGN section 8). `select` applies ``data.classes``,
``data.limit``, de-duplication and ``--shard i/n``, in that order.

File names never come from data unchecked: `safe_name` maps any ``video_id`` (``../../x``, ``a;touch pwned``,
``$(id)``, unicode) to ``[A-Za-z0-9_-]`` plus a hash of the original id, so a clip can only land in its output
folder and two ids never share a file. The original id stays in the ``video_id`` column.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import quote

from pipeline.params import DataParams

SPLITS = ("train", "val", "test")
# What a folder source picks up (lower-case suffixes); other files (CSV, text, images) are not inputs.
VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mkv .webm .mov .avi .flv .mpg .mpeg .ts .mts .m2ts .3gp .ogv .wmv .vob .mxf .dv".split())


@dataclass(frozen=True)
class Row:
    """One input of the `videos` stage: a clip to fetch or read, or a bad input with its error."""

    video_id: str
    source: str
    label: str | None = None
    split: str | None = None  # None: assigned by `hash_split` in `select`
    url: str | None = None  # remote clips: what yt-dlp fetches
    path: str | None = None  # local clips: absolute path of the file
    start_s: float = 0.0
    seconds: float | None = None  # length of the cut; None: the whole file
    stamp: str = ""  # local clips: size and mtime, so that a changed file is normalised again
    error: str = ""  # non-empty: a bad input ("kind: message"), never fetched

    @property
    def name(self) -> str:
        """The clip's file stem in the output folder (see `safe_name`)."""
        return safe_name(self.video_id)


def safe_name(video_id: str, *, keep: int = 48) -> str:
    """A file stem for ``video_id`` that is safe on every filesystem and shell: at most ``keep`` characters
    of the id with everything but ``[A-Za-z0-9_-]`` replaced by ``_`` (no leading ``-``), then ``-`` and 16
    hex digits of its SHA-1, so that distinct ids never collide."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", video_id)[:keep].lstrip("-_") or "clip"
    return f"{readable}-{hashlib.sha1(video_id.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def _hash_unit(video_id: str) -> float:
    """A uniform number in [0, 1) from ``video_id`` (stable across runs, machines and Python versions)."""
    return int(hashlib.sha1(video_id.encode("utf-8", "surrogatepass")).hexdigest()[:13], 16) / 16 ** 13


def hash_split(video_id: str, val_frac: float, test_frac: float) -> str:
    """Deterministic split of a video without one: test, val or train by a hash of its id."""
    u = _hash_unit(video_id)
    return "test" if u < test_frac else "val" if u < test_frac + val_frac else "train"


def shard_of(video_id: str, n: int) -> int:
    """Which of ``n`` shards a video belongs to (by a hash of its id, so any row order gives the same)."""
    return int(hashlib.sha1(b"shard:" + video_id.encode("utf-8", "surrogatepass")).hexdigest()[:12], 16) % n


def norm_label(label: str) -> str:
    """Label as compared by ``data.classes``: lower case, ``_``/``-`` as spaces, single spaces."""
    return " ".join(label.lower().replace("_", " ").replace("-", " ").split())


def _bad(video_id: str, source: str, kind: str, message: str) -> Row:
    return Row(video_id=video_id, source=source, error=f"{kind}: {message}"[:300])


def _split_or_error(text: str) -> tuple[str | None, str]:
    split = text.strip().lower()
    if split and split not in SPLITS:
        return None, f"split {text.strip()!r} is not one of {', '.join(SPLITS)}"
    return split or None, ""


def _vggsound_row(lineno: int, line: str, data: DataParams) -> Row:
    """One CSV line -> a `Row` (a malformed line gives a row with the reason and id ``line:N``)."""
    def bad(message: str) -> Row:
        return _bad(f"line:{lineno}", data.source, "malformed_row", f"line {lineno}: {message}")

    try:
        fields = next(csv.reader([line]))
    except csv.Error as exc:
        return bad(f"not CSV ({exc})")
    if len(fields) != 4:
        return bad(f"expected 4 fields (youtube id, start seconds, label, split), got {len(fields)}")
    ytid, start_text, label, split_text = (f.strip() for f in fields)
    if not ytid:
        return bad("empty youtube id")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in ytid + label):
        return bad("control characters in the youtube id or label")
    try:
        start = float(start_text)
    except ValueError:
        return bad(f"start {start_text[:40]!r} is not a number")
    if not math.isfinite(start) or start < 0:
        return bad(f"start {start_text[:40]!r} must be a finite number >= 0")
    split, err = _split_or_error(split_text)
    if err:
        return bad(err)
    is_url = ytid.lower().startswith(("http://", "https://"))
    url = ytid if is_url else data.vggsound.url_template.replace("{id}", quote(ytid, safe=""))
    start_ms = int(round(start * 1000))
    end_ms = start_ms + int(round(data.clip.seconds * 1000))
    return Row(video_id=f"{ytid}_{start_ms}_{end_ms}", source=data.source, label=label or None, split=split,
               url=url, start_s=start_ms / 1000, seconds=data.clip.seconds)


def vggsound_rows(data: DataParams) -> Iterator[Row]:
    """Rows of the official VGGSound CSV (no header; blank lines skipped), read line by line so that a bad
    quote spoils one line only."""
    with open(str(data.vggsound.csv), encoding="utf-8-sig", errors="replace", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield _vggsound_row(lineno, line, data)


def _walk(root: Path) -> Iterator[Path]:
    """Video files below ``root``, sorted, depth first; hidden entries and linked folders are skipped."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif entry.is_file() and Path(entry.name).suffix.lower() in VIDEO_SUFFIXES:
            yield Path(entry.path)


def read_labels(path: str | Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """A labels CSV (header: ``path`` or ``video_id``, ``label``, ``split``) -> (by path, by video_id)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"labels CSV not found: {path}")
    by_path: dict[str, dict] = {}
    by_id: dict[str, dict] = {}
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh)
        cols = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
        if not ({"path", "video_id"} & set(cols)) or not ({"label", "split"} & set(cols)):
            raise ValueError(f"{path}: the header must name 'path' or 'video_id', and 'label' and/or 'split'")
        for rec in reader:
            get = {k: (rec.get(c) or "").strip() for k, c in cols.items()}
            info = {"label": get.get("label") or None, "split": get.get("split", "")}
            if get.get("path"):
                by_path[Path(get["path"]).as_posix()] = info
            if get.get("video_id"):
                by_id[get["video_id"]] = info
    return by_path, by_id


def folder_rows(root: str | Path, *, source: str, labels: str | Path | None = None,
                label_from_folder: bool = False) -> Iterator[Row]:
    """Rows for every video file below ``root``. ``video_id`` is the path relative to ``root`` without its
    suffix (``dog/abc_1000_11000``); the label comes from the labels CSV or, with ``label_from_folder``,
    from the first folder below ``root`` (VEGAS)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data.{source}.dir: no such folder: {root}")
    by_path, by_id = read_labels(labels) if labels else ({}, {})
    return _folder_rows(root, source, by_path, by_id, label_from_folder)


def _folder_rows(root: Path, source: str, by_path: dict[str, dict], by_id: dict[str, dict],
                 label_from_folder: bool) -> Iterator[Row]:
    for file in _walk(root):
        rel = file.relative_to(root).as_posix()
        video_id = rel[: -len(file.suffix)] if file.suffix else rel
        info = by_path.get(rel) or by_id.get(video_id) or {}
        label = info.get("label")
        if label_from_folder and "/" in rel:
            label = rel.split("/", 1)[0]
        split, err = _split_or_error(info.get("split", ""))
        if err:
            yield _bad(video_id, source, "bad_label_row", f"labels CSV: {err}")
            continue
        try:
            st = file.stat()
        except OSError as exc:
            yield _bad(video_id, source, "not_found", f"{type(exc).__name__}: {exc}")
            continue
        yield Row(video_id=video_id, source=source, label=label, split=split, path=str(file.resolve()),
                  stamp=f"{st.st_size}:{st.st_mtime_ns}")


def rows_for(data: DataParams) -> Iterator[Row]:
    """The input rows of ``data.source`` (not world). Raises ValueError (one sentence) on bad settings."""
    if data.source == "vggsound":
        if not data.vggsound.csv:
            raise ValueError("data.source is vggsound but data.vggsound.csv is not set")
        if not Path(data.vggsound.csv).is_file():
            raise ValueError(f"data.vggsound.csv: no such file: {data.vggsound.csv}")
        return vggsound_rows(data)
    if data.source == "vegas":
        if not data.vegas.dir:
            raise ValueError("data.source is vegas but data.vegas.dir is not set")
        return folder_rows(data.vegas.dir, source="vegas", label_from_folder=True)
    if data.source == "local":
        if not data.local.dir:
            raise ValueError("data.source is local but data.local.dir is not set")
        return folder_rows(data.local.dir, source="local", labels=data.local.labels)
    raise ValueError(f"data.source {data.source!r} has no row listing")


def _unique(video_id: str, seen: set[str]) -> str:
    """``video_id`` itself, or ``video_id#dupK`` with the first K that is not taken."""
    k, candidate = 2, video_id
    while candidate in seen:
        candidate, k = f"{video_id}#dup{k}", k + 1
    return candidate


def select(rows: Iterable[Row], *, classes: Iterable[str] = (), limit: int = 0, shard: tuple[int, int] = (0, 1),
           val_frac: float = 0.1, test_frac: float = 0.1) -> Iterator[Row]:
    """Filter and complete rows: keep ``classes`` (by `norm_label`; bad rows are kept, their class is
    unknown), stop after ``limit`` rows (0: no limit), turn repeated ids into failed ``#dupK`` rows, keep
    shard ``i`` of ``n`` and fill missing splits by `hash_split`. Memory: one set of the ids seen."""
    wanted = {norm_label(c) for c in classes}
    index, n = shard
    seen: set[str] = set()
    taken = 0
    for row in rows:
        if wanted and not row.error and norm_label(row.label or "") not in wanted:
            continue
        if limit and taken >= limit:
            return
        taken += 1
        if row.video_id in seen:
            row = replace(row, video_id=_unique(row.video_id, seen), url=None, path=None,
                          error=f"duplicate: same video_id as an earlier row ({row.video_id[:200]})")
        seen.add(row.video_id)
        if n > 1 and shard_of(row.video_id, n) != index:
            continue
        if row.split is None and not row.error:
            row = replace(row, split=hash_split(row.video_id, val_frac, test_frac))
        yield row
