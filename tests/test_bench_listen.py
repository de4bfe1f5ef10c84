"""bench/listen.py runs, reads each file to the decoder's samples, and reports both timings."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench_module import load
from pipeline import inputs


def test_listen_bench_times_both_paths_of_the_same_samples(tmp_path: Path, capsys) -> None:
    bench = load("listen")
    rows = bench.main(["--repeats", "1"])
    assert [r["file"] for r in rows] == ["10 s wav", "10 s flac", "10 s mp3"]
    assert all(r["listen_ms"] > 0 and r["decoder_ms"] > 0 for r in rows)
    assert capsys.readouterr().out.count("decoder / listen") == 3
    for ext in ("wav", "flac"):  # the two paths it compares hear the same samples
        path = bench.make(tmp_path, ext)
        assert inputs.plain_pcm(path, 0.0, 10.0) is not None
        np.testing.assert_array_equal(inputs.listen(path, inputs.SoundOptions()), bench.through_decoder(path))
