"""bench/size_probe.py: the ridge probe finds a size that the features carry, and not one they do not."""
from __future__ import annotations


import numpy as np
import pandas as pd

import bench_module

size_probe = bench_module.load("size_probe")


def test_probe_scores_carried_and_missing_size() -> None:
    rng = np.random.default_rng(0)
    size = rng.uniform(10, 40, 200)
    fit, score = np.arange(200) < 100, np.arange(200) >= 100
    carried = np.c_[size / 40 + rng.normal(0, 0.01, 200), rng.normal(0, 1, (200, 7))]
    rho, r2 = size_probe.probe(carried, size, fit, score)
    assert rho > 0.95 and r2 > 0.9
    rho, r2 = size_probe.probe(rng.normal(0, 1, (200, 8)), size, fit, score)
    assert abs(rho) < 0.3 and r2 < 0.1


def test_frame_sizes_take_the_covering_on_screen_event_of_the_label() -> None:
    events = pd.DataFrame(dict(video_id=["a", "a", "a"], label=["bell", "drum", "bell"], t_start=[0.0, 0.0, 2.0],
                               t_end=[1.0, 3.0, 3.0], on_screen=[True, False, True], size=[20.0, 30.0, 35.0]))
    table = pd.DataFrame(dict(video_id=["a", "a", "a"], label=["bell", "bell", "drum"], t_s=[0.5, 2.0, 0.5]))
    np.testing.assert_array_equal(size_probe.frame_sizes(table, events), [20.0, 35.0, np.nan])
