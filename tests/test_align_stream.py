"""AlignStream: bad shards, skipped pairs, the same global batches for any world size and workers, and with
or without the audio cache."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch
import webdataset as wds

from pipeline.align_stream import AlignStream, loader
from pipeline.features import FeatureTable
from pipeline.synthetic_pairs import pair_sample, write_shards


def float_wav(wave: np.ndarray) -> bytes:
    """Float32 WAV bytes (FLAC stores integers, so NaN samples need another container)."""
    buf = io.BytesIO()
    scipy.io.wavfile.write(buf, 16000, wave.astype(np.float32))
    return buf.getvalue()


def table_for(keys: list[str], dim: int = 4) -> FeatureTable:
    feats = np.arange(len(keys) * dim, dtype=np.float32).reshape(len(keys), dim)
    return FeatureTable(feats, keys, [None] * len(keys), {k: i for i, k in enumerate(keys)})


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[list[str], FeatureTable]:
    root = tmp_path_factory.mktemp("stream")
    keys = write_shards(root, "train", 21, per_shard=5, drop_flac=(3,))
    with tarfile.open(root / "train-000010.tar", "w"):
        pass  # a valid tar with no members
    (root / "train-000011.tar").write_bytes(b"")  # zero bytes: unreadable, logged and skipped
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(root / "train-000012.tar")) as sink:  # decodes badly / has no feature
        sink.write(pair_sample("broken_0", "train", 0, rng, shard="x", audio=b"fLaC but broken"))
        sink.write(pair_sample("nan_0", "train", 0, rng, shard="x", audio=float_wav(np.full(800, np.nan))))
        sink.write(pair_sample("unknown_0", "train", 0, rng, shard="x"))
    return sorted(str(p) for p in root.glob("*.tar")), table_for(keys + ["broken_0", "nan_0"])


def batches(urls, table, *, world=1, workers=0, **kw) -> list[list[dict]]:
    out = []
    for rank in range(world):
        st = AlignStream(urls, table, n_samples=1000, batch=4, rank=rank, world=world, **kw)
        out.append(list(loader(st, workers)))
    return out


def test_bad_shards_and_pairs_have_clear_outcomes(shards, caplog) -> None:
    urls, table = shards
    (got,) = batches(urls, table, drop_last=False)
    keys = [k for b in got for k in b["keys"]]
    assert len(keys) == 22 and "train0003_0" not in keys and "unknown_0" not in keys
    assert sum(b["skipped"] for b in got) == 2  # no .flac, no image feature
    invalid = {k for b in got for k, ok in zip(b["keys"], b["valid"].tolist()) if not ok}
    assert invalid == {"broken_0", "nan_0"}  # kept in place, left out of the loss
    for b in got:
        assert b["wave"].shape == (len(b["keys"]), 1000) and b["feature"].shape == (len(b["keys"]), 4)
        np.testing.assert_array_equal(b["feature"][:, 0].numpy(), [table.rows[k] * 4 for k in b["keys"]])
    assert "train-000011.tar" in caplog.text or "skipping unreadable" in caplog.text


@pytest.mark.parametrize("world,workers", [(2, 0), (2, 2), (4, 1)])
def test_global_batches_do_not_depend_on_world_or_workers(shards, world, workers) -> None:
    urls, table = shards
    (one,) = batches(urls, table, seed=5, shuffle_buffer=6)
    many = batches(urls, table, world=world, workers=workers, seed=5, shuffle_buffer=6)
    one = [b["keys"] for b in one if b["keys"]]
    per_rank = [[b["keys"] for b in r if b["keys"]] for r in many]
    assert len({len(r) for r in per_rank}) == 1  # every rank takes the same number of steps
    merged = [sum(parts, []) for parts in zip(*per_rank)]
    assert merged == one and len(one) == 22 // 4


def test_epochs_reshuffle_reproducibly(shards) -> None:
    urls, table = shards
    st = AlignStream(urls, table, n_samples=100, batch=4, seed=1, shuffle_buffer=8)
    first = [b["keys"] for b in st]
    st.epoch = 1
    second = [b["keys"] for b in st]
    st.epoch = 0
    assert [b["keys"] for b in st] == first != second


def test_empty_split_gives_no_batches(tmp_path: Path) -> None:
    assert batches([], table_for(["a"])) == [[]]


def test_spectrograms_made_in_the_workers_equal_the_device_ones(shards) -> None:
    from pipeline import audio_input
    from pipeline.params import SpectrogramParams

    urls, table = shards
    sp = SpectrogramParams(n_mels=16, n_frames=8, n_fft=256, hop_length=128)
    n = audio_input.n_samples(sp)
    fn = audio_input.spectrogram_fn(sp)
    waves = AlignStream(urls, table, n_samples=n, batch=4)
    specs = AlignStream(urls, table, n_samples=n, batch=4, spec_fn=fn)
    for w, b in zip(loader(waves, 2), loader(specs, 2), strict=True):
        assert "wave" not in b and b["keys"] == w["keys"]
        if b["keys"]:
            assert b["spec"].shape == (len(b["keys"]), 1, 16, 8)
            torch.testing.assert_close(b["spec"], fn(w["wave"]), rtol=0, atol=1e-5)  # batched on the device
    assert audio_input.in_workers(sp, torch.device("cpu")) and not audio_input.in_workers(sp, torch.device("cuda"))


def test_audio_bytes_decode_the_same_through_libsndfile_and_torchcodec(tmp_path: Path) -> None:
    import subprocess

    import soundfile
    from torchcodec.decoders import AudioDecoder

    from pipeline import shard_io

    rng = np.random.default_rng(0)
    mono = (0.3 * rng.standard_normal(16000)).astype(np.float32)
    buf = io.BytesIO()
    soundfile.write(buf, mono, 16000, format="FLAC")
    fast = shard_io.decode_audio_bytes(buf.getvalue())
    slow = AudioDecoder(buf.getvalue(), sample_rate=16000, num_channels=1).get_all_samples().data.numpy()[0]
    assert isinstance(fast, np.ndarray) and np.array_equal(fast, slow)
    # stereo 44.1 kHz is not libsndfile's case here: torchcodec downmixes and resamples it
    stereo = tmp_path / "s.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1:sample_rate=44100",
                    "-ac", "2", str(stereo)], check=True)
    wave = shard_io.decode_audio_bytes(stereo.read_bytes())
    assert isinstance(wave, np.ndarray) and abs(len(wave) - 16000) <= 32
    assert "cannot decode audio" in shard_io.decode_audio_bytes(b"not audio at all")


def epochs_of(st: AlignStream, workers: int | None, n: int = 3) -> list[list[dict]]:
    """``n`` epochs of batches through one loader (its workers persist) or, with ``workers=None``, in process."""
    batches = st if workers is None else loader(st, workers)
    out = []
    for epoch in range(n):
        st.epoch = epoch
        out.append(list(batches))
    return out


def assert_same_batches(a: list[list[dict]], b: list[list[dict]]) -> None:
    """Equal batches, epoch by epoch (the count of skipped pairs may ride on other batches with workers)."""
    assert len(a) == len(b)
    for ea, eb in zip(a, b):
        assert sum(x["skipped"] for x in ea) == sum(y["skipped"] for y in eb)
        ea, eb = [x for x in ea if x["keys"]], [y for y in eb if y["keys"]]
        assert [x["keys"] for x in ea] == [y["keys"] for y in eb]
        for x, y in zip(ea, eb):
            item = "spec" if "spec" in x else "wave"
            assert torch.equal(x[item], y[item]) and torch.equal(x["valid"], y["valid"])
            assert torch.equal(x["feature"], y["feature"])


@pytest.mark.parametrize("world,workers,split_by,spec", [(1, 2, "sample", True), (1, 0, "sample", False),
                                                         (2, 2, "sample", True), (2, 1, "shard", True)])
def test_the_cache_changes_no_batch_in_any_epoch(shards, world, workers, split_by, spec) -> None:
    """Three reshuffled epochs through one loader with the cache, and in process without: bit-identical
    batches on every rank (the persistent workers follow the epoch); the cache (shared by the workers of a
    rank) serves every pair it has seen once, broken ones included."""
    from pipeline import audio_input
    from pipeline.params import SpectrogramParams

    urls, table = shards
    sp = SpectrogramParams(n_mels=16, n_frames=8, n_fft=256, hop_length=128)
    kw = dict(n_samples=audio_input.n_samples(sp), batch=4, world=world, seed=5, shuffle_buffer=6,
              split_by=split_by, drop_last=False, spec_fn=audio_input.spectrogram_fn(sp) if spec else None)
    for rank in range(world):
        plain = epochs_of(AlignStream(urls, table, rank=rank, **kw), None)
        st = AlignStream(urls, table, rank=rank, cache_bytes=1 << 20, **kw)
        cached = epochs_of(st, workers)
        assert_same_batches(plain, cached)
        assert st.cache.slots == len(table.keys)
        hits = [sum(b["cached"] for b in e) for e in cached]
        seen = [{k for b in e for k in b["keys"]} for e in cached]
        assert hits[0] == 0 and hits[1] == len(seen[0] & seen[1]) and hits[2] == len(seen[2] & (seen[0] | seen[1]))
        if world == 1:
            assert hits[1:] == [22, 22]  # every usable pair, broken_0 and nan_0 with them


def test_a_budget_smaller_than_the_data_caches_what_fits(shards) -> None:
    urls, table = shards
    kw = dict(n_samples=1000, batch=4, seed=5, shuffle_buffer=6, drop_last=False)
    small = AlignStream(urls, table, cache_bytes=10 * 4001, **kw)  # 10 waves of 1000 float32 + a state byte
    cached = epochs_of(small, 2)
    assert small.cache.slots == 10 and small.cache_nbytes == 10 * 4001
    assert_same_batches(epochs_of(AlignStream(urls, table, **kw), None), cached)
    fits = sum(table.rows[k] < 10 for b in cached[0] for k in b["keys"])  # rows 0-9 have slots
    assert [sum(b["cached"] for b in e) for e in cached] == [0, fits, fits] and fits == 9  # row 3 has no audio
    none = AlignStream(urls, table, cache_bytes=4000, **kw)  # not one wave fits: streamed as without a cache
    assert none.cache is None and none.cache_nbytes == 0 and sum(b["cached"] for b in list(loader(none, 0))) == 0


@pytest.mark.parametrize("workers", [None, 2])
def test_shards_whose_pairs_are_all_cached_are_not_read_again(shards, tmp_path, workers) -> None:
    """After the first epoch every pair is cached: the shards are moved away and the next epochs, replayed
    from the remembered key order, still give the batches a cache-less stream gives."""
    import shutil
    urls, table = shards
    kw = dict(n_samples=1000, batch=4, seed=5, shuffle_buffer=6, drop_last=False)
    copies = [str(shutil.copy(u, tmp_path / Path(u).name)) for u in urls]
    plain = epochs_of(AlignStream(copies, table, **kw), None)
    st = AlignStream(copies, table, cache_bytes=1 << 20, **kw)
    batches = st if workers is None else loader(st, workers)
    st.epoch = 0
    first = [list(batches)]
    for c in copies:
        Path(c).unlink()
    for epoch in (1, 2):
        st.epoch = epoch
        first.append(list(batches))
    assert_same_batches(plain, first)
    assert [sum(b["cached"] for b in e) for e in first] == [0, 22, 22]
