"""Benchmark of the `videos` stage's real-world path (docs/ingest.md, "Performance"), on loopback only.

1. Throughput: the same CSV of clips served by a local HTTP server (`pipeline.loopback`), fetched, cut and
   normalised with 1 worker and with N workers, in one run: clips/s and the speed-up.
2. Memory: a CSV of ``--rows`` unreachable URLs (connection refused on 127.0.0.1) through the real
   ``s2s stage videos`` command in a child process: rows/s, and peak RSS of the stage (its largest process,
   from wait4, and the sum over its process tree, sampled every 0.2 s).

    python bench/ingest.py                      # 16 clips, 2 workers, 200000 unreachable rows
    python bench/ingest.py --rows 20000 --workers 4
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from pipeline.ingest import ingest
from pipeline.loopback import MediaServer, refused_url
from pipeline.params import DataParams, from_dict

S2S = [sys.executable, "-c", "from pipeline.cli import app; app()"]


def make_source(path: Path, seconds: float = 12.0) -> Path:
    """A 12 s, 320x240, 25 fps H.264 + 44.1 kHz stereo AAC clip (a small stand-in for a YouTube download)."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=320x240:rate=25:duration={seconds}", "-f", "lavfi", "-i",
                    f"sine=frequency=440:sample_rate=44100:duration={seconds}", "-ac", "2", "-c:v", "libx264",
                    "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)], check=True)
    return path


def throughput(tmp: Path, clips: int, workers: int) -> list[tuple[int, float]]:
    """clips/s with 1 worker and with ``workers`` workers, on the same rows."""
    src = make_source(tmp / "source.mp4")
    results = []
    with MediaServer() as srv:
        srv.add("clip", src)
        csv = tmp / "clips.csv"
        csv.write_text("".join(f"{srv.url('files', 'clip', query=f'n={i}')},1,bench,train\n" for i in range(clips)))
        for n in (1, workers):
            data = from_dict(DataParams, dict(source="vggsound", vggsound=dict(csv=str(csv)), workers=n,
                                              retries=0, timeout_s=120.0), where="data")
            out = tmp / f"w{n}"
            t0 = time.perf_counter()
            stats = ingest(data, out_dir=out / "videos", raw_dir=out / "raw", manifest=out / "videos.parquet",
                           progress=False)
            dt = time.perf_counter() - t0
            assert stats["ok"] == clips, stats
            results.append((n, clips / dt))
    return results


def _tree_rss(pid: int) -> int:
    """Sum of the resident memory (bytes) of ``pid`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p = int(stat.parent.name)
        parents[p], rss[p] = int(fields[1]), int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    tree, frontier = {pid}, [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier and p not in tree]
        tree.update(kids)
        frontier = kids
    return sum(rss.get(p, 0) for p in tree)


def memory(tmp: Path, rows: int, workers: int) -> dict:
    """Run the stage on ``rows`` unreachable URLs; rows/s and peak memory."""
    csv = tmp / "unreachable.csv"
    base = refused_url("/")
    with open(csv, "w") as fh:
        for i in range(rows):
            fh.write(f"{base}clip{i}.mp4,{i % 300},class {i % 309},{'train' if i % 10 else 'test'}\n")
    params = {"data": dict(source="vggsound", vggsound=dict(csv=str(csv)), workers=workers, retries=0)}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    t0 = time.perf_counter()
    proc = subprocess.Popen([*S2S, "stage", "videos", "--no-progress", "--out-dir", "data/videos", "--raw-dir",
                             "data/raw", "--manifest", "data/videos.parquet"], cwd=tmp)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    dt = time.perf_counter() - t0
    assert os.waitstatus_to_exitcode(status) == 0, "the stage failed"
    return dict(rows=rows, seconds=dt, rows_per_s=rows / dt, max_process_mb=usage.ru_maxrss / 1024,
                tree_mb=peak[0] / 2**20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=16, help="clips for the throughput run")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="N workers (against 1)")
    ap.add_argument("--rows", type=int, default=200_000, help="unreachable rows for the memory run (0: skip)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="s2s-bench-") as tmp:
        (Path(tmp) / "tp").mkdir()
        (one, r1), (n, rn) = throughput(Path(tmp) / "tp", args.clips, args.workers)
        print(f"throughput ({args.clips} clips of 10 s cut from a 12 s 320x240 25 fps source, loopback):")
        print(f"  {one} worker : {r1:.2f} clips/s")
        print(f"  {n} workers: {rn:.2f} clips/s  (x{rn / r1:.2f})")
        if args.rows:
            (Path(tmp) / "mem").mkdir()
            m = memory(Path(tmp) / "mem", args.rows, args.workers)
            print(f"memory ({m['rows']} rows of unreachable URLs, {args.workers} workers, retries 0):")
            print(f"  {m['seconds']:.0f} s, {m['rows_per_s']:.0f} rows/s; peak RSS: largest process "
                  f"{m['max_process_mb']:.0f} MB, whole process tree {m['tree_mb']:.0f} MB")


if __name__ == "__main__":
    main()
