"""Per-clip status records of the `videos` stage: what a rerun needs to know about what finished (resume).

One SQLite file per shard in the raw folder (``status-{i}-of-{n}.sqlite``), written only by the stage's main
process, one committed transaction per clip (WAL journal, ``synchronous=NORMAL``: a killed process loses
no committed record; a power cut may lose the last few, whose clips are then simply done again). A record is
written after the clip's file was renamed into place, so ``ok`` always names a complete file.

Lookups read this shard's file first, then the other shards' files found in the same folder (read-only), so
clips that other machines finished count as finished once their folders are copied together.
The raw folder is not a DVC output: records are working state, never cached.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import astuple, dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class Record:
    """The outcome of one clip. ``key`` fingerprints its inputs (URL, cut, normalisation settings or the
    local file's size and mtime): a record whose key differs from the row's is stale."""

    video_id: str
    key: str
    name: str  # file stem in the output folder
    status: str  # ok | failed
    error: str = ""  # "kind: message", empty when ok
    duration_s: float = 0.0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    audio_sr: int = 0
    has_audio: bool = False
    attempts: int = 0

    @property
    def kind(self) -> str:
        """The error kind (text before the first colon), ``ok`` for a finished clip."""
        return self.error.split(":", 1)[0] if self.status != "ok" else "ok"


_COLUMNS = [f.name for f in fields(Record)]
_CREATE = (f"CREATE TABLE IF NOT EXISTS clips ({', '.join(_COLUMNS)}, updated REAL, "
           "PRIMARY KEY (video_id)) WITHOUT ROWID")


def _row_to_record(row: tuple | None) -> Record | None:
    if row is None:
        return None
    rec = Record(*row)
    return replace(rec, has_audio=bool(rec.has_audio))


class StatusStore:
    """The status records of one shard (read-write) plus those of other shards (read-only)."""

    def __init__(self, folder: str | Path, shard: tuple[int, int] = (0, 1)) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        own = folder / f"status-{shard[0]}-of-{shard[1]}.sqlite"
        self._db = sqlite3.connect(own, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_CREATE)
        self._others = [sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
                        for p in sorted(folder.glob("status-*-of-*.sqlite")) if p.name != own.name]
        self._select = f"SELECT {', '.join(_COLUMNS)} FROM clips WHERE video_id = ?"

    def get(self, video_id: str) -> Record | None:
        """The record of ``video_id`` (this shard's first), or None."""
        for db in (self._db, *self._others):
            try:
                found = _row_to_record(db.execute(self._select, (video_id,)).fetchone())
            except sqlite3.Error:  # another shard's file that is not a status file, or is locked
                continue
            if found is not None:
                return found
        return None

    def put(self, rec: Record) -> None:
        """Insert or replace the record of ``rec.video_id`` (committed when this returns)."""
        values = (*astuple(rec), time.time())
        marks = ", ".join("?" * len(values))
        self._db.execute(f"INSERT OR REPLACE INTO clips VALUES ({marks})", values)

    def close(self) -> None:
        """Close every connection (the WAL is checkpointed into the file)."""
        for db in (self._db, *self._others):
            db.close()

    def __enter__(self) -> "StatusStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
