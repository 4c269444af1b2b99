"""The scoring operator's drift gauges agree with the monitor's PSI on the same windows."""

from __future__ import annotations

import numpy as np

from flink_job.drift import WindowDrift
from netanomaly.monitor.drift import baseline_from_metadata, psi


def _metadata(rng: np.random.Generator) -> dict:
    train = rng.normal(10.0, 2.0, size=(5000, 2))
    train[:, 1] = np.round(train[:, 1])  # a feature with repeated values (point bins)
    qs = {"p01": 1, "p05": 5, "p25": 25, "p50": 50, "p75": 75, "p95": 95, "p99": 99}
    base = {}
    for j, name in enumerate(["a__mean", "b__max"]):
        col = train[:, j]
        base[name] = {
            "min": float(col.min()),
            "max": float(col.max()),
            "mean": float(col.mean()),
            "std": float(col.std()),
            **{k: float(np.percentile(col, q)) for k, q in qs.items()},
        }
    return {"model_version": "ae-test", "feature_names": ["a__mean", "b__max"], "baseline": base}


def test_vectorised_bins_and_psi_match_the_monitor():
    rng = np.random.default_rng(0)
    meta = _metadata(rng)
    base = baseline_from_metadata(meta)
    drift = WindowDrift(meta, horizon=300, min_samples=50)
    live = np.column_stack([rng.normal(10.0, 2.0, 1000), np.round(rng.normal(13.0, 2.0, 1000))])
    live[5, 0] = np.nan
    for chunk in np.array_split(live, 7):  # batches of any size, more than the horizon in total
        drift.add(chunk)
    window = live[-300:]
    for j, name in enumerate(base.feature_names):
        expected_counts = base.bins[name].counts(window[:, j])
        assert drift.psi(j) == psi(base.bins[name].expected, expected_counts)
    assert drift.psi(0) < 0.1 < 0.25 < drift.psi(1)  # b was shifted by 1.5 std
    assert drift.seen == 1000


def test_too_few_windows_give_no_psi():
    drift = WindowDrift(_metadata(np.random.default_rng(1)), horizon=100, min_samples=50)
    drift.add(np.ones((10, 2)))
    assert drift.psi(0) is None
