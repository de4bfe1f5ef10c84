"""Input rows of the real-world sources (`pipeline.sources`), status records and the worker pool; no network."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from pipeline import sources
from pipeline.ingest import parse_shard
from pipeline.params import DataParams, ParamsError, from_dict
from pipeline.pool import run_pool
from pipeline.status import Record, StatusStore


def vgg(tmp_path: Path, text: str, **data: object) -> list[sources.Row]:
    csv = tmp_path / "vgg.csv"
    csv.write_text(text, encoding="utf-8")
    params = from_dict(DataParams, {"source": "vggsound", "vggsound": {"csv": str(csv)}, **data}, where="data")
    return list(sources.rows_for(params))


def test_vggsound_rows_ids_urls_and_unicode_labels(tmp_path: Path) -> None:
    rows = vgg(tmp_path, "---g-f_I2yQ,1,people marching,test\n\nabc,30,\"chien, qui aboie\",train\n"
                         "k,2.5,鳥のさえずり ünï,\n")
    assert [r.video_id for r in rows] == ["---g-f_I2yQ_1000_11000", "abc_30000_40000", "k_2500_12500"]
    assert rows[0].url == "https://www.youtube.com/watch?v=---g-f_I2yQ"
    assert [r.label for r in rows] == ["people marching", "chien, qui aboie", "鳥のさえずり ünï"]
    assert [r.split for r in rows] == ["test", "train", None]
    assert (rows[2].start_s, rows[2].seconds) == (2.5, 10.0)


def test_malformed_lines_become_rows_with_a_reason(tmp_path: Path) -> None:
    text = "a,1,x\nb,notanumber,x,train\nc,-3,x,train\nd,nan,x,train\n,1,x,train\ne,1,x,dev\n\"f,1,x,train\n"
    rows = vgg(tmp_path, text + "g\x00,1,x,train\nok,0,x,train\n")
    bad = [r for r in rows if r.error]
    assert len(rows) == 9 and len(bad) == 8 and rows[-1].error == ""
    assert all(r.error.startswith("malformed_row: line ") and "\n" not in r.error for r in bad)
    assert [r.video_id for r in bad] == [f"line:{i}" for i in range(1, 9)]
    assert "expected 4 fields" in bad[0].error and "not a number" in bad[1].error
    assert ">= 0" in bad[2].error and ">= 0" in bad[3].error and "empty youtube id" in bad[4].error
    assert "not one of train, val, test" in bad[5].error


def test_full_urls_and_templates_quote_the_id(tmp_path: Path) -> None:
    rows = vgg(tmp_path, "http://127.0.0.1:9/a.mp4,0,x,train\n../../x,0,x,train\na;touch pwned,0,x,train\n",
               vggsound={"csv": str(tmp_path / "vgg.csv"), "url_template": "http://h/f/{id}.mp4"})
    assert rows[0].url == "http://127.0.0.1:9/a.mp4"
    assert rows[1].url == "http://h/f/..%2F..%2Fx.mp4" and rows[2].url == "http://h/f/a%3Btouch%20pwned.mp4"


@pytest.mark.parametrize("video_id", ["../../x_0_10000", "a;touch pwned_0_10000", "$(id)_0_10000", "/etc/passwd",
                                      "-rf", "..", "", "鳥 ünï", "a" * 500, "x\\y\x00z"])
def test_safe_name_stays_in_the_folder(video_id: str) -> None:
    name = sources.safe_name(video_id)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*-[0-9a-f]{16}", name) and len(name) <= 70
    assert (Path("/out") / f"{name}.mp4").parent == Path("/out")


def test_safe_names_differ_for_ids_that_sanitise_alike() -> None:
    assert sources.safe_name("a;b") != sources.safe_name("a_b") != sources.safe_name("a b")


def test_select_filters_limits_dedups_and_shards() -> None:
    rows = [sources.Row(video_id=f"v{i % 4}", source="vggsound", label=["Dog", "cat"][i % 2], url="u")
            for i in range(10)] + [sources.Row(video_id="line:99", source="vggsound", error="malformed_row: x")]
    dogs = list(sources.select(rows, classes=["dog"]))
    assert [r.video_id for r in dogs] == ["v0", "v2", "v0#dup2", "v2#dup2", "v0#dup3", "line:99"]
    assert dogs[2].error.startswith("duplicate:") and dogs[2].url is None and not dogs[1].error
    assert [r.video_id for r in sources.select(rows, limit=3)] == ["v0", "v1", "v2"]
    whole = [r.video_id for r in sources.select(rows)]
    assert len(whole) == len(set(whole)) == 11
    parts = [[r.video_id for r in sources.select(rows, shard=(i, 3))] for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(whole) and all(parts)
    assert {r.split for r in sources.select(rows) if not r.error} <= {"train", "val", "test"}


def test_hash_split_is_stable_and_near_the_fractions() -> None:
    splits = [sources.hash_split(f"clip{i}", 0.1, 0.2) for i in range(5000)]
    assert splits == [sources.hash_split(f"clip{i}", 0.1, 0.2) for i in range(5000)]
    assert abs(splits.count("test") / 5000 - 0.2) < 0.03 and abs(splits.count("val") / 5000 - 0.1) < 0.03


def test_folder_rows_labels_csv_by_path_or_id(tmp_path: Path) -> None:
    (tmp_path / "v" / "sub dir").mkdir(parents=True)
    for name in ("a.mp4", "sub dir/b ü.MKV", "notes.txt", ".hidden.mp4", "sub dir/c.webm"):
        (tmp_path / "v" / name).write_bytes(b"x")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,split\nsub dir/b ü.MKV,bird,val\nvideo_id,label\n", encoding="utf-8")
    labels.write_text("Path,Video_ID,label,split\n,a,dog,\nsub dir/b ü.MKV,,bird,val\n", encoding="utf-8")
    rows = list(sources.folder_rows(tmp_path / "v", source="local", labels=labels))
    assert [(r.video_id, r.label, r.split) for r in rows] == [
        ("a", "dog", None), ("sub dir/b ü", "bird", "val"), ("sub dir/c", None, None)]
    assert all(Path(r.path).is_absolute() and r.stamp for r in rows)


def test_vegas_label_is_the_class_folder(tmp_path: Path) -> None:
    for name in ("dog/videos/1.mp4", "baby_cry/2.mp4", "loose.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    rows = list(sources.folder_rows(tmp_path, source="vegas", label_from_folder=True))
    assert {r.video_id: r.label for r in rows} == {"baby_cry/2": "baby_cry", "dog/videos/1": "dog", "loose": None}
    picked = list(sources.select(rows, classes=["Baby cry"]))
    assert [r.video_id for r in picked] == ["baby_cry/2"]


@pytest.mark.parametrize("data, message", [
    ({"source": "vggsound"}, "data.vggsound.csv is not set"),
    ({"source": "vggsound", "vggsound": {"csv": "/nope.csv"}}, "no such file"),
    ({"source": "local"}, "data.local.dir is not set"),
    ({"source": "vegas", "vegas": {"dir": "/nope"}}, "no such folder"),
])
def test_bad_settings_are_one_sentence(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sources.rows_for(from_dict(DataParams, data, where="data"))


def test_params_reject_unknown_keys() -> None:
    with pytest.raises(ParamsError, match="data.vggsound.url"):
        from_dict(DataParams, {"vggsound": {"url": "x"}}, where="data")


@pytest.mark.parametrize("text, ok", [("0/1", (0, 1)), ("3/8", (3, 8)), ("8/8", None), ("-1/2", None),
                                      ("1", None), ("a/b", None), ("0/0", None)])
def test_parse_shard(text: str, ok: tuple | None) -> None:
    if ok:
        assert parse_shard(text) == ok
    else:
        with pytest.raises(ValueError, match="--shard must be i/n"):
            parse_shard(text)


def test_status_store_own_and_other_shards(tmp_path: Path) -> None:
    rec = Record(video_id="a", key="k", name="a-1", status="ok", duration_s=10.0, has_audio=True, attempts=1)
    with StatusStore(tmp_path, (1, 2)) as other:
        other.put(rec)
    with StatusStore(tmp_path, (0, 1)) as store:
        assert store.get("a") == rec and store.get("b") is None
        store.put(Record(video_id="b", key="k", name="b-1", status="failed", error="timeout: slow"))
        assert store.get("b").kind == "timeout" and rec.kind == "ok"


def test_pool_kills_overruns_and_reports_errors() -> None:
    t0 = time.monotonic()
    jobs = [0.0, 30.0, -1.0, 0.1]  # time.sleep: the workers import only real modules
    got = {job: (ok, value) for job, ok, value in run_pool(time.sleep, jobs, workers=2, timeout_s=1.5)}
    assert time.monotonic() - t0 < 10
    assert got[0.0] == (True, None) and got[0.1] == (True, None)
    assert got[30.0][0] is False and got[30.0][1].startswith("timeout: ")
    assert got[-1.0][0] is False and got[-1.0][1].startswith("ValueError: sleep length")


def test_pool_reports_a_job_that_does_not_pickle() -> None:
    got = list(run_pool(time.sleep, [lambda: 0, 0.0], workers=1, timeout_s=5))
    assert [ok for _, ok, _ in got] == [False, True] and "pickle" in got[0][2].lower()
