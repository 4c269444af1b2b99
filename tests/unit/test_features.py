"""The feature spec: names, order and the offline computation against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.features import FeatureSpec, compute_window_features, feature_matrix
from netanomaly.config import load_config

BASE = 1_767_571_200_000  # 2026-01-05T00:00:00Z


def test_names_follow_kpis_then_stats():
    spec = FeatureSpec(("a", "b"), ("mean", "max"), include_count=True, window_seconds=60)
    assert spec.feature_names == ["event_count", "a__mean", "a__max", "b__mean", "b__max"]
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


def test_from_config_with_38_metrics():
    kpis = [f"m{i}" for i in range(38)]
    cfg = load_config(None, {"features.kpis": kpis, "features.bounds": {}})
    spec = FeatureSpec.from_config(cfg.features)
    assert len(spec.feature_names) == 1 + 38 * 4


def test_window_statistics_by_hand():
    spec = FeatureSpec(("x",), ("mean", "std", "min", "max"), True, 600)
    ev = pd.DataFrame(
        {
            "device_id": ["d", "d", "d", "e", "d"],
            "event_time_ms": [BASE + 1, BASE + 599_999, BASE + 300_000, BASE + 5, BASE + 600_000],
            "x": [1.0, 3.0, 5.0, 7.0, 9.0],
        }
    )
    f = compute_window_features(ev, spec)
    assert list(f.columns) == ["device_id", "window_start", "window_end", *spec.feature_names]
    first = f[(f.device_id == "d") & (f.window_start == pd.Timestamp(BASE, unit="ms", tz="UTC"))].iloc[0]
    assert first.event_count == 3
    assert first.x__mean == pytest.approx(3.0)
    assert first.x__std == pytest.approx(np.std([1.0, 3.0, 5.0]))  # population std
    assert (first.x__min, first.x__max) == (1.0, 5.0)
    assert first.window_end - first.window_start == pd.Timedelta(minutes=10)
    # the event at exactly the window end belongs to the next window; a single event has std 0
    nxt = f[(f.device_id == "d") & (f.window_start == pd.Timestamp(BASE + 600_000, unit="ms", tz="UTC"))].iloc[0]
    assert (nxt.event_count, nxt.x__std) == (1, 0.0)
    assert len(f) == 3


def test_feature_matrix_refuses_other_spec():
    spec = FeatureSpec(("x",), ("mean",), True, 60)
    f = compute_window_features(pd.DataFrame({"device_id": ["d"], "event_time_ms": [BASE], "x": [1.0]}), spec)
    assert feature_matrix(f, spec.feature_names).dtype == np.float32
    with pytest.raises(KeyError, match="another feature spec"):
        feature_matrix(f, ["event_count", "y__mean"])
