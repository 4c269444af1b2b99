"""build_pipeline is pure: it describes named steps and settings that follow the config."""

from __future__ import annotations

import sys
from pathlib import Path

from flink_job.pipeline import build_pipeline
from flink_job.sql import interval
from netanomaly.config import load_config


def test_steps_and_settings_follow_config(tmp_path: Path):
    cfg = load_config(
        None,
        {
            "stream.parallelism": 2,
            "features.window_seconds": 300,
            "kafka.bounded": True,
            "model.dir": str(tmp_path / "m"),
            "stream.emit_features": True,
        },
    )
    jar = tmp_path / "connector.jar"
    p = build_pipeline(cfg, [jar])
    assert [n for n, _ in p.ddl] == [
        "kpi_events_raw",
        "kpi_events_routed_sql",
        "kpi_events_routed",
        "kpi_dlq",
        "kpi_events_valid",
        "window_features",
        "scored_windows_sql",
        "scored_windows",
        "scored_for_fleet",
        "kpi_anomalies",
        "kpi_metrics",
        "kpi_features",
    ]
    assert [n for n, _ in p.inserts] == ["kpi_dlq", "kpi_anomalies", "kpi_metrics", "kpi_features"]
    s = p.settings
    assert s["parallelism.default"] == "2"
    assert s["python.execution-mode"] == "process"
    assert s["python.executable"] == sys.executable
    assert s["table.local-time-zone"] == "UTC"
    assert s["pipeline.jars"] == jar.resolve().as_uri()
    src = dict(p.ddl)["kpi_events_raw"]
    assert "'scan.bounded.mode' = 'latest-offset'" in src
    assert interval(30) in src
    assert interval(300) in dict(p.ddl)["window_features"]
    assert p.model_dir == (tmp_path / "m").resolve()


def test_feature_columns_in_spec_order():
    cfg = load_config(None, {"features.kpis": ["a", "b"], "features.bounds": {}, "features.stats": ["max", "mean"]})
    p = build_pipeline(cfg, [])
    assert p.feature_names == ["event_count", "a__max", "a__mean", "b__max", "b__mean"]
    scored = dict(p.ddl)["scored_windows_sql"]
    assert "score_windows(event_count, a__max, a__mean, b__max, b__mean)" in scored


def test_interval_literal():
    assert interval(600) == "INTERVAL '0 00:10:00' DAY TO SECOND"
    assert interval(90061) == "INTERVAL '1 01:01:01' DAY TO SECOND"


def test_sequence_models_get_lagged_inputs_oldest_first():
    cfg = load_config(
        None,
        {"features.kpis": ["a"], "features.bounds": {}, "features.stats": ["mean"], "features.include_count": False},
    )
    p = build_pipeline(cfg, [], sequence_length=3)
    ddl = dict(p.ddl)
    assert "LAG(a__mean, 2) OVER w, LAG(a__mean, 1) OVER w, a__mean) AS a__mean__lag2" in ddl["window_sequences"]
    assert "score_windows(a__mean__lag2, a__mean__lag1, a__mean)" in ddl["scored_windows_sql"]
    assert p.sequence_length == 3
