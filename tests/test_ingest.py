"""The `videos` stage on real-world sources, against a real HTTP server on 127.0.0.1 (`pipeline.loopback`):
bad input of every kind gives one failed row with a reason, good clips are cut and normalised, a SIGKILLed
run resumes without fetching finished clips again, shards add up, and nothing lands outside the output."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import media
from pipeline.loopback import MediaServer, refused_url
from pipeline.params import DataParams, from_dict
from stages import videos

REPO = Path(__file__).resolve().parents[1]
S2S = [sys.executable, "-c", "from pipeline.cli import app; app()"]


def make_mp4(path: Path, seconds: float, *, audio: bool = True) -> Path:
    """A small H.264 (+ AAC) test clip made with ffmpeg (argument list)."""
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
           f"testsrc=size=64x48:rate=10:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}", "-c:a", "aac"]
    subprocess.run(cmd + ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-threads", "1", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    return {"clip": make_mp4(d / "c12.mp4", 12), "short": make_mp4(d / "c6.mp4", 6),
            "noaudio": make_mp4(d / "na.mp4", 12, audio=False)}


@pytest.fixture
def server(clips: dict[str, Path]) -> MediaServer:
    with MediaServer(slow_s=0.5, stall_s=40) as srv:
        for name in ("clip", "a;touch pwned", "../../x", "$(id)"):
            srv.add(name, clips["clip"])
        srv.add("short", clips["short"])
        srv.add("noaudio", clips["noaudio"])
        yield srv


def params(srv: MediaServer, csv: Path, **over: object) -> dict:
    data = dict(source="vggsound", vggsound=dict(csv=str(csv), url_template=srv.base("files") + "{id}"),
                workers=2, retries=1, backoff_s=0.1, timeout_s=8.0, socket_timeout_s=1.5,
                clip=dict(short_side=32))
    return {**data, **over}


def run(work: Path, data: dict, shard: tuple[int, int] = (0, 1), manifest: str = "videos.parquet") -> dict:
    d = work / "data"
    return videos.run(0, from_dict(DataParams, data, where="data"), out_dir=d / "videos", manifest=d / manifest,
                      events=d / "events.parquet", raw_dir=d / "raw", stats=d / "stats.json", shard=shard,
                      progress=False)


def rows(work: Path, manifest: str = "videos.parquet") -> dict[str, dict]:
    return {r["video_id"]: r for r in pq.read_table(work / "data" / manifest).to_pylist()}


def kind(row: dict) -> str:
    return "ok" if row["status"] == "ok" else row["error"].split(":", 1)[0]


def assert_contained(tmp: Path, work: Path, allowed: set[str]) -> None:
    """Every file below ``tmp`` is an input the test wrote or lies in ``work/data``; no ``pwned``."""
    for p in tmp.rglob("*"):
        assert p.name != "pwned"
        if p.is_file():
            assert (work / "data") in p.parents or p.name in allowed, f"written outside the output: {p}"


def assert_complete_clip(work: Path, row: dict, seconds: float = 10.0) -> None:
    info = media.probe(work / "data" / row["path"])
    assert not isinstance(info, str), info
    assert (info.video_codec, info.audio_codec, info.audio_channels, info.audio_sr) == ("h264", "aac", 1, 16000)
    assert info.fps == pytest.approx(10.0) and min(info.width, info.height) == 32
    assert abs(info.duration_s - seconds) < 0.2 and len(info.frame_pts) == round(seconds * 10)
    assert row["duration_s"] == pytest.approx(info.duration_s, abs=1e-3) and row["has_audio"]


def test_bad_inputs_give_one_failed_row_each_good_clips_are_normalised(tmp_path: Path, server: MediaServer) -> None:
    work = tmp_path / "work"
    work.mkdir()
    u = server.url
    lines = {
        "clip_0_10000": "clip,0,dog,train", "clip_1000_11000": "clip,1,cat,test",
        f"{u('files', 'clip')}_2000_12000": f"{u('files', 'clip')},2,chien ünï 鳥,",
        f"{u('files', 'missing')}_0_10000": f"{u('files', 'missing')},0,dog,train",
        "refused": f"{refused_url()},0,dog,train", f"{u('stall', 'clip')}_0_10000": f"{u('stall', 'clip')},0,x,train",
        f"{u('cut', 'clip')}_0_10000": f"{u('cut', 'clip')},0,x,train",
        f"{u('html', 'clip')}_0_10000": f"{u('html', 'clip')},0,x,train",
        f"{u('garbage', 'clip')}_0_10000": f"{u('garbage', 'clip')},0,x,train",
        "short_0_10000": "short,0,dog,train", "noaudio_0_10000": "noaudio,0,dog,train",
        "clip_5000_15000": "clip,5,dog,train", "clip_0_10000#dup2": "clip,0,dog,train",
        "line:14": "clip,zero,dog,train", "line:15": "only,two",
        "a;touch pwned_0_10000": "a;touch pwned,0,x,train", "../../x_0_10000": "../../x,0,x,val",
        "$(id)_0_10000": "$(id),0,x,test",
    }
    csv = work / "in.csv"
    csv.write_text("\n".join(lines.values()) + "\n", encoding="utf-8")
    stats = run(work, params(server, csv))
    first = rows(work)
    got = dict(first)
    got["refused"] = got.pop(next(v for v in got if v.startswith("http://127.0.0.1:") and "/x.mp4" in v))
    expected = {"clip_0_10000": "ok", "clip_1000_11000": "ok", f"{u('files', 'clip')}_2000_12000": "ok",
                f"{u('files', 'missing')}_0_10000": "not_found", "refused": "refused",
                f"{u('stall', 'clip')}_0_10000": "timeout", f"{u('cut', 'clip')}_0_10000": "incomplete",
                f"{u('html', 'clip')}_0_10000": "not_media", f"{u('garbage', 'clip')}_0_10000": "not_media",
                "short_0_10000": "too_short", "noaudio_0_10000": "no_audio", "clip_5000_15000": "too_short",
                "clip_0_10000#dup2": "duplicate", "line:14": "malformed_row", "line:15": "malformed_row",
                "a;touch pwned_0_10000": "ok", "../../x_0_10000": "ok", "$(id)_0_10000": "ok"}
    assert {v: kind(r) for v, r in got.items()} == expected
    assert stats["total"] == len(lines) == stats["ok"] + stats["failed"] and stats["ok"] == 6
    assert all("\n" not in r["error"] and (r["status"] == "ok") == (r["error"] == "") for r in got.values())
    assert got[f"{u('files', 'clip')}_2000_12000"]["label"] == "chien ünï 鳥"
    assert {r["split"] for r in got.values() if r["status"] == "ok"} <= {"train", "val", "test"}
    for row in got.values():
        if row["status"] == "ok":
            assert_complete_clip(work, row)
    names = {p.name for p in (work / "data" / "videos").iterdir()}
    assert names == {Path(r["path"]).name for r in got.values() if r["status"] == "ok"}
    assert_contained(tmp_path, work, {"in.csv"})

    hits = dict(server.hits)
    again = run(work, params(server, csv))  # resume: nothing is fetched again
    assert (again["fetched"], again["resumed"]) == (0, 15) and dict(server.hits) == hits
    assert rows(work) == first
    retried = run(work, params(server, csv, retry_failed=True, retries=0))
    assert retried["fetched"] == 9 and server.hits_for(u("files", "missing")) > hits["/files/missing"]
    assert server.hits_for(u("files", "a;touch pwned")) == hits["/files/a%3Btouch%20pwned"]  # ok: not again


def test_a_clip_over_its_time_budget_is_killed(tmp_path: Path, server: MediaServer) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text(f"{server.url('stall', 'clip')},0,x,train\n")
    t0 = time.monotonic()
    stats = run(tmp_path, params(server, csv, timeout_s=1.0, socket_timeout_s=30.0, retries=0, workers=1))
    assert time.monotonic() - t0 < 15
    (row,) = rows(tmp_path).values()
    assert stats["failed_by_kind"] == {"timeout": 1} and "worker killed" in row["error"]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _records(raw: Path) -> dict[str, str]:
    db = raw / "status-0-of-1.sqlite"
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as con:
            return dict(con.execute("SELECT video_id, status FROM clips").fetchall())
    except sqlite3.Error:
        return {}


def test_sigkill_mid_run_then_rerun_completes_without_refetching(tmp_path: Path, server: MediaServer) -> None:
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    urls = [server.url("slow", "clip", query=f"n={i}") for i in range(10)]
    urls += [server.url("files", "missing"), server.url("cut", "clip")]
    csv = work / "in.csv"
    csv.write_text("".join(f"{x},0,x,train\n" for x in urls) + "broken line\n")
    (work / "params.yaml").write_text(yaml.safe_dump({"data": params(server, csv, retries=0)}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([*S2S, "stage", "videos", "--no-progress", "--out-dir", "data/videos",
                             "--raw-dir", "data/raw", "--manifest", "data/videos.parquet"], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(_records(work / "data" / "raw")) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = _records(work / "data" / "raw")
    assert 3 <= len(finished) < len(urls), "the kill should land mid-run"
    for pid in workers:  # the workers die with the stage (no download keeps running)
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.05)
        assert not _alive(pid), f"worker {pid} outlived the killed stage"
    hits = {x: server.hits_for(x) for x in urls}

    out = subprocess.run([*S2S, "stage", "videos", "--no-progress", "--out-dir", "data/videos", "--raw-dir",
                          "data/raw", "--manifest", "data/videos.parquet"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = rows(work)
    assert len(got) == len(urls) + 1
    assert {kind(r) for r in got.values()} == {"ok", "not_found", "incomplete", "malformed_row"}
    for x in urls:
        if f"{x}_0_10000" in finished:
            assert server.hits_for(x) == hits[x], f"{x} was finished before the kill but fetched again"
    for row in got.values():
        if row["status"] == "ok":
            assert_complete_clip(work, row)
    assert not list((work / "data" / "videos").glob(".*")) and not list((work / "data" / "raw").glob(".work-*"))
    assert_contained(tmp_path, work, {"in.csv", "params.yaml"})


def test_shards_split_the_rows_and_the_whole_run_reuses_them(tmp_path: Path, server: MediaServer) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text("".join(f"{server.url('files', 'clip', query=f'n={i}')},0,x,train\n" for i in range(4))
                   + f"{refused_url()},0,x,train\nbad\n")
    data = params(server, csv, retries=0, backoff_s=30.0)  # no retry: no backoff wait either
    t0 = time.monotonic()
    parts = [run(tmp_path, data, shard=(i, 2), manifest=f"part{i}.parquet") for i in range(2)]
    assert time.monotonic() - t0 < 25
    ids = [set(rows(tmp_path, f"part{i}.parquet")) for i in range(2)]
    assert not ids[0] & ids[1] and sum(p["total"] for p in parts) == 6
    whole = run(tmp_path, data)
    assert whole["fetched"] == 0 and whole["total"] == 6 and set(rows(tmp_path)) == ids[0] | ids[1]


def test_keep_raw_reuses_downloads_when_the_clip_settings_change(tmp_path: Path, server: MediaServer) -> None:
    url = server.url("files", "clip", query="raw")
    csv = tmp_path / "in.csv"
    csv.write_text(f"{url},1,x,train\n{server.url('garbage', 'clip')},0,x,train\n")
    first = run(tmp_path, params(server, csv, keep_raw=True, retries=0))
    hits = server.hits_for(url)
    assert first["ok"] == 1 and len(list((tmp_path / "data" / "raw" / "files").iterdir())) == 1  # not the garbage
    second = run(tmp_path, params(server, csv, keep_raw=True, retries=0, clip=dict(short_side=32, fps=5)))
    assert second["ok"] == 1 and second["fetched"] == 2 and server.hits_for(url) == hits  # new key: redone
    (row,) = [r for r in rows(tmp_path).values() if r["status"] == "ok"]
    assert row["fps"] == 5.0


def test_local_folder_with_labels_csv(tmp_path: Path, clips: dict[str, Path]) -> None:
    src = tmp_path / "my videos"
    (src / "sub ü").mkdir(parents=True)
    (src / "a.mp4").write_bytes(clips["clip"].read_bytes())
    (src / "sub ü" / "b c 'ü'.mp4").write_bytes(clips["short"].read_bytes())
    (src / "fake.mp4").write_text("not a video")
    (src / "zero.mp4").write_bytes(b"")
    (src / "mute.mkv").write_bytes(clips["noaudio"].read_bytes())
    (src / "readme.txt").write_text("ignored")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,video_id,label,split\na.mp4,,dog,test\n,sub ü/b c 'ü',oiseau ü,\n", encoding="utf-8")
    data = dict(source="local", local=dict(dir=str(src), labels=str(labels)), workers=2, clip=dict(short_side=32))
    stats = run(tmp_path, data)
    got = rows(tmp_path)
    assert {v: kind(r) for v, r in got.items()} == {"a": "ok", "sub ü/b c 'ü'": "ok", "fake": "not_media",
                                                   "zero": "not_media", "mute": "no_audio"}
    assert (got["a"]["label"], got["a"]["split"]) == ("dog", "test")
    assert got["sub ü/b c 'ü'"]["label"] == "oiseau ü" and got["sub ü/b c 'ü'"]["split"] in ("train", "val", "test")
    assert_complete_clip(tmp_path, got["a"], seconds=12.0)  # local clips keep their whole length
    assert_complete_clip(tmp_path, got["sub ü/b c 'ü'"], seconds=6.0)
    assert stats["source"] == "local" and stats["ok"] == 2


def test_cli_errors_are_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "vggsound"}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for args, message in ((["--shard", "2/2"], "--shard must be i/n"), ([], "data.vggsound.csv is not set")):
        out = subprocess.run([*S2S, "stage", "videos", *args], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
