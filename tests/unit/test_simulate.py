"""Synthetic KPI events: determinism, contract, realism, anomaly visibility and file round trips."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.features import FeatureSpec, compute_window_features
from netanomaly.simulate import (
    ANOMALY_KINDS,
    DEFAULT_KPIS,
    DEFAULT_START_MS,
    AnomalyLabel,
    SimulationSpec,
    device_ids,
    event_count,
    generate_events,
    generate_frame,
    plan_anomalies,
    read_labels,
    write_events_file,
    write_labels,
)

DAY = 86400
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SMALL = SimulationSpec(devices=3, duration_s=6 * 3600, anomalies=3, seed=11)


def _frame(events: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(events).rename(columns={"timestamp": "event_time_ms"})


def _windows(spec: SimulationSpec, labels: list[AnomalyLabel] | None = None) -> pd.DataFrame:
    """Window features of the generated events, with ``ws_ms`` (window start, epoch ms)."""
    df = _frame(list(generate_events(spec, labels)))
    feats = compute_window_features(df, FeatureSpec(kpis=spec.kpis, window_seconds=spec.window_seconds))
    feats["ws_ms"] = (feats["window_start"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    return feats


def _split(feats: pd.DataFrame, labels: list[AnomalyLabel], label: AnomalyLabel):
    """(episode windows of ``label``, windows of the same device outside every episode)."""
    dev = feats[feats.device_id == label.device_id]
    in_any = np.zeros(len(dev), dtype=bool)
    for lb in labels:
        if lb.device_id == label.device_id:
            in_any |= ((dev.ws_ms >= lb.start_ms) & (dev.ws_ms < lb.end_ms)).to_numpy()
    episode = dev[(dev.ws_ms >= label.start_ms) & (dev.ws_ms < label.end_ms)]
    return episode, dev[~in_any]


def test_same_seed_gives_identical_events_and_labels_other_seed_differs():
    a_events, a_labels = list(generate_events(SMALL)), plan_anomalies(SMALL)
    assert a_events == list(generate_events(SMALL))
    assert a_labels == plan_anomalies(SMALL)
    other = replace(SMALL, seed=12)
    assert plan_anomalies(other) != a_labels
    b_events = list(generate_events(other))
    assert len(b_events) == len(a_events)
    assert [e["latency_ms"] for e in b_events] != [e["latency_ms"] for e in a_events]


def test_frame_equals_events_and_normal_values_do_not_depend_on_injected_anomalies():
    events = list(generate_events(SMALL))
    frame = generate_frame(SMALL)
    pd.testing.assert_frame_equal(frame, pd.DataFrame(events), check_dtype=False)
    normal = pd.DataFrame(list(generate_events(replace(SMALL, anomalies=0))))
    assert normal[["timestamp", "device_id"]].equals(frame[["timestamp", "device_id"]])
    inside = np.zeros(len(frame), dtype=bool)
    for lb in plan_anomalies(SMALL):
        inside |= ((frame.device_id == lb.device_id) & frame.timestamp.between(lb.start_ms, lb.end_ms - 1)).to_numpy()
    assert inside.sum() > 0
    kpis = list(SMALL.kpis)
    assert np.array_equal(frame.loc[~inside, kpis].to_numpy(), normal.loc[~inside, kpis].to_numpy())
    assert not np.allclose(frame.loc[inside, kpis].to_numpy(), normal.loc[inside, kpis].to_numpy())


@pytest.mark.parametrize(
    ("duration_s", "interval_s", "per_device"),
    [(6 * 3600, 60.0, 360), (100, 7.0, 14), (3600, 0.5, 7200), (601, 600.0, 1)],
)
def test_event_count_order_range_and_shape(duration_s, interval_s, per_device):
    spec = SimulationSpec(devices=4, duration_s=duration_s, interval_s=interval_s, seed=3)
    events = list(generate_events(spec))
    assert event_count(spec) == len(events) == 4 * per_device
    ts = np.array([e["timestamp"] for e in events])
    assert all(isinstance(e["timestamp"], int) for e in events)
    assert np.all(np.diff(ts) >= 0), "events must come in timestamp order"
    assert ts.min() >= spec.start_ms
    assert ts.max() < spec.start_ms + duration_s * 1000
    assert all(list(e) == ["timestamp", "device_id", *DEFAULT_KPIS] for e in events)
    by_dev = defaultdict(list)
    for e in events:
        by_dev[e["device_id"]].append(e["timestamp"])
    assert sorted(by_dev) == device_ids(spec) == ["dev-000", "dev-001", "dev-002", "dev-003"]
    for dev_ts in by_dev.values():
        assert len(dev_ts) == per_device
        assert np.all(np.diff(dev_ts) > 0), "a device's events are strictly increasing in time"
        if per_device > 1 and interval_s >= 1:
            gaps = np.diff(dev_ts)
            assert gaps.min() >= 0.5 * interval_s * 1000
            assert gaps.max() <= 1.5 * interval_s * 1000
            assert gaps.std() > 0, "timestamps carry a small deterministic jitter"


def test_values_physically_valid_with_every_kind_injected():
    spec = SimulationSpec(devices=6, duration_s=DAY, anomalies=30, seed=5)
    df = generate_frame(spec)
    vals = df[list(DEFAULT_KPIS)].to_numpy()
    assert np.isfinite(vals).all()
    assert (vals >= 0).all()
    assert (df.packet_loss_pct <= 100).all()
    assert df.packet_loss_pct.max() > 25, "flapping / bursts must be present"


def test_labels_placement_rules():
    spec = SimulationSpec(devices=10, duration_s=2 * DAY, anomalies=60, seed=9)
    labels = plan_anomalies(spec)
    assert len(labels) == 60
    assert {lb.kind for lb in labels} == set(ANOMALY_KINDS)
    counts = pd.Series([lb.kind for lb in labels]).value_counts()
    assert counts.max() - counts.min() <= 1, "kinds are spread evenly"
    assert [(lb.start_ms, lb.device_id) for lb in labels] == sorted((lb.start_ms, lb.device_id) for lb in labels)
    w = spec.window_seconds * 1000
    by_dev = defaultdict(list)
    for lb in labels:
        assert lb.device_id in device_ids(spec)
        assert lb.start_ms % w == 0
        assert lb.end_ms % w == 0
        assert lb.end_ms - lb.start_ms >= 2 * w
        assert lb.start_ms >= spec.start_ms + 2 * w
        assert lb.end_ms <= spec.end_ms - 4 * w
        minutes = (lb.end_ms - lb.start_ms) / 60000
        assert (60 <= minutes <= 120) if lb.kind == "slow_degradation" else (20 <= minutes <= 60)
        by_dev[lb.device_id].append(lb)
    for dev_labels in by_dev.values():
        dev_labels.sort(key=lambda lb: lb.start_ms)
        for a, b in itertools.pairwise(dev_labels):
            assert b.start_ms >= a.end_ms + 2 * w, "episodes of one device neither overlap nor touch"


def test_short_run_scales_episodes_down_to_fit():
    spec = SimulationSpec(devices=1, duration_s=3 * 3600, anomalies=3, kinds=("slow_degradation",), seed=1)
    labels = plan_anomalies(spec)
    w = spec.window_seconds * 1000
    assert len(labels) == 3
    assert all(lb.end_ms - lb.start_ms >= 2 * w for lb in labels)
    assert labels[0].start_ms >= spec.start_ms + 2 * w
    assert labels[-1].end_ms <= spec.end_ms - 4 * w
    assert sum(lb.end_ms - lb.start_ms for lb in labels) < 3 * 60 * 60000, "shortened below 60 min each"


def test_no_anomalies_means_no_labels_and_quiet_history():
    spec = SimulationSpec(devices=5, duration_s=DAY, seed=21)
    assert plan_anomalies(spec) == []
    feats = _windows(spec)
    assert feats["packet_loss_pct__max"].max() < 5
    for _, dev in feats.groupby("device_id"):
        assert dev["latency_ms__mean"].max() < 2.5 * dev["latency_ms__mean"].median()
        assert dev["throughput_mbps__std"].max() < 0.2 * dev["throughput_mbps__mean"].median()


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_each_kind_shifts_window_statistics(kind):
    spec = SimulationSpec(devices=4, duration_s=DAY, anomalies=4, kinds=(kind,), seed=17)
    labels = plan_anomalies(spec)
    assert len(labels) == 4
    assert {lb.device_id for lb in labels} == set(device_ids(spec))
    feats = _windows(spec, labels)
    for lb in labels:
        ep, normal = _split(feats, labels, lb)
        assert len(ep) == (lb.end_ms - lb.start_ms) // (spec.window_seconds * 1000)
        lat_med = normal["latency_ms__mean"].median()
        if kind == "latency_spike":
            jit_med = normal["jitter_ms__mean"].median()
            assert ep["latency_ms__mean"].mean() > 3 * lat_med
            assert ep["latency_ms__mean"].min() > 2 * lat_med
            assert ep["jitter_ms__mean"].mean() > 3 * jit_med
            assert ep["jitter_ms__mean"].min() > 2 * jit_med
            assert ep["latency_ms__std"].min() > 3 * normal["latency_ms__std"].max()
        elif kind == "throughput_collapse":
            assert ep["throughput_mbps__mean"].max() < 0.5 * normal["throughput_mbps__mean"].min()
            assert ep["packet_loss_pct__mean"].min() > normal["packet_loss_pct__max"].max()
        elif kind == "packet_loss_burst":
            assert ep["packet_loss_pct__mean"].min() > 4
            assert ep["packet_loss_pct__mean"].min() > 3 * normal["packet_loss_pct__max"].max()
            assert ep["latency_ms__mean"].mean() > 1.3 * lat_med
        elif kind == "slow_degradation":
            means = ep["latency_ms__mean"].to_numpy()
            assert means[-1] > 3 * lat_med
            assert np.corrcoef(np.arange(len(means)), means)[0, 1] > 0.9, "latency rises through the episode"
            assert ep["packet_loss_pct__mean"].iloc[-1] > 1.5
        else:  # flapping
            cv = ep["throughput_mbps__std"] / ep["throughput_mbps__mean"]
            normal_cv = normal["throughput_mbps__std"] / normal["throughput_mbps__mean"]
            assert cv.min() > 3 * normal_cv.max(), "flapping windows vary far more than normal ones"
            assert ep["throughput_mbps__min"].max() < 0.06 * normal["throughput_mbps__max"].max()
            assert ep["packet_loss_pct__max"].min() > 25


def test_daily_cycle_and_correlated_kpis():
    spec = SimulationSpec(devices=5, duration_s=2 * DAY, seed=4)
    df = generate_frame(spec)
    hour = pd.to_datetime(df.timestamp, unit="ms", utc=True).dt.hour
    evening, night = hour.between(18, 21), hour.between(2, 4)
    for dev, g in df.groupby("device_id"):
        ev, ni = g[evening[g.index]], g[night[g.index]]
        assert ev.throughput_mbps.mean() > 2 * ni.throughput_mbps.mean(), dev
        assert ev.latency_ms.mean() > 1.1 * ni.latency_ms.mean(), dev
        assert ev.jitter_ms.mean() > ni.jitter_ms.mean(), dev
        assert ev.packet_loss_pct.mean() > ni.packet_loss_pct.mean(), dev
    feats = _windows(spec)
    for dev, g in feats.groupby("device_id"):
        assert g["throughput_mbps__mean"].corr(g["latency_ms__mean"]) > 0.5, dev
    for kpi in ("latency_ms__mean", "throughput_mbps__mean"):
        baselines = feats.groupby("device_id")[kpi].median()
        assert baselines.max() > 1.2 * baselines.min(), f"devices get their own {kpi} baselines"


def _read_back(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "jsonl":
        return pd.read_json(path, lines=True, convert_dates=False, dtype=False, precise_float=True)
    if fmt == "csv":
        return pd.read_csv(path, float_precision="round_trip")
    return pd.read_parquet(path)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("iso", [False, True])
def test_events_file_round_trip(tmp_path, fmt, iso):
    events = list(generate_events(SMALL))
    path = tmp_path / "sub" / f"events.{fmt}"
    assert write_events_file(iter(events), path, iso_timestamps=iso) == len(events)
    back = _read_back(path, fmt)
    expected = pd.DataFrame(events)
    assert list(back.columns) == list(expected.columns)
    if iso and fmt != "parquet":
        assert back.timestamp.map(lambda s: bool(ISO_MS.match(s))).all()
        assert (
            back.timestamp.iloc[0]
            == pd.Timestamp(events[0]["timestamp"], unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        )
    if iso:
        ts = pd.to_datetime(back.timestamp, utc=True)
        back["timestamp"] = (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    assert back.timestamp.tolist() == expected.timestamp.tolist()
    assert back.device_id.tolist() == expected.device_id.tolist()
    assert np.array_equal(back[list(DEFAULT_KPIS)].to_numpy(), expected[list(DEFAULT_KPIS)].to_numpy())
    assert not list(path.parent.glob(".*tmp*")), "no temporary file left behind"


def test_events_file_format_choice_and_errors(tmp_path):
    events = list(generate_events(SMALL))[:10]
    assert write_events_file(events, tmp_path / "e.txt", fmt="jsonl") == 10
    assert json.loads((tmp_path / "e.txt").read_text().splitlines()[0]) == events[0]
    with pytest.raises(ValueError, match="suffix"):
        write_events_file(events, tmp_path / "e.txt")
    with pytest.raises(ValueError, match="unknown events format"):
        write_events_file(events, tmp_path / "e.csv", fmt="xml")
    bad = [*events, {"timestamp": 1, "device_id": "x"}]
    with pytest.raises(ValueError, match="fields"):
        write_events_file(bad, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()
    assert write_events_file([], tmp_path / "empty.parquet") == 0
    assert len(pd.read_parquet(tmp_path / "empty.parquet")) == 0


def test_labels_json_and_file_round_trip(tmp_path):
    labels = plan_anomalies(SimulationSpec(devices=5, duration_s=DAY, anomalies=10, seed=8))
    d = labels[0].to_json()
    assert set(d) == {"device_id", "start", "end", "start_ms", "end_ms", "kind"}
    assert ISO_MS.match(d["start"])
    assert ISO_MS.match(d["end"])
    assert pd.Timestamp(d["start"]).value // 10**6 == d["start_ms"]
    path = tmp_path / "labels.jsonl"
    write_labels(labels, path)
    assert len(path.read_text().splitlines()) == 10
    assert read_labels(path) == labels
    iso_only = {k: d[k] for k in ("device_id", "start", "end", "kind")}
    assert AnomalyLabel.from_json(iso_only) == labels[0]
    path.write_text(path.read_text() + '{"device_id": "dev-000", "kind": "nope", "start_ms": 0, "end_ms": 1}\n')
    with pytest.raises(ValueError, match=r"labels.jsonl:11: .*unknown anomaly kind"):
        read_labels(path)


def test_default_spec_start_and_generate_with_explicit_labels():
    assert pd.Timestamp(DEFAULT_START_MS, unit="ms", tz="UTC") == pd.Timestamp("2026-01-05T00:00:00Z")
    spec = SimulationSpec(devices=2, duration_s=4 * 3600, seed=2)
    lb = AnomalyLabel("dev-001", spec.start_ms + 3600_000, spec.start_ms + 5400_000, "packet_loss_burst")
    df = generate_frame(spec, [lb])
    inside = (df.device_id == "dev-001") & df.timestamp.between(lb.start_ms, lb.end_ms - 1)
    assert df.loc[inside, "packet_loss_pct"].min() > 2
    assert df.loc[~inside, "packet_loss_pct"].max() < 3
    with pytest.raises(ValueError, match="dev-007"):
        generate_frame(spec, [replace(lb, device_id="dev-007")])


def test_unknown_extra_kpis_are_generic_positive_load_correlated_series():
    kpis = ("latency_ms", "cpu_util_pct", "sessions")
    spec = SimulationSpec(devices=4, duration_s=2 * DAY, kpis=kpis, anomalies=4, kinds=("latency_spike",), seed=6)
    events = list(generate_events(spec))
    assert list(events[0]) == ["timestamp", "device_id", *kpis]
    labels = plan_anomalies(spec)
    feats = _windows(spec, labels)
    assert (feats[["cpu_util_pct__min", "sessions__min"]] > 0).all().all()
    df = pd.DataFrame(events)
    hour = pd.to_datetime(df.timestamp, unit="ms", utc=True).dt.hour
    assert df[hour.between(18, 21)].sessions.mean() > df[hour.between(2, 4)].sessions.mean()
    for lb in labels:
        ep, normal = _split(feats, labels, lb)
        assert ep["cpu_util_pct__mean"].min() > 2.5 * normal["cpu_util_pct__mean"].median()
    only_generic = SimulationSpec(devices=2, duration_s=DAY, kpis=("a", "b"), anomalies=5, seed=1)
    frame = generate_frame(only_generic)
    assert list(frame.columns) == ["timestamp", "device_id", "a", "b"]
    assert len(frame) == event_count(only_generic)
    assert (frame[["a", "b"]] >= 0).all().all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"devices": 0}, "devices must be >= 1"),
        ({"kinds": ("latency_spike", "earthquake")}, "unknown anomaly kind.*earthquake"),
        ({"kinds": ()}, "at least one anomaly kind"),
        ({"interval_s": 900.0}, "longer than window_seconds"),
        ({"interval_s": 0.0}, "at least 0.001"),
        ({"kpis": ("latency_ms", "latency_ms")}, "unique"),
        ({"kpis": ("timestamp",)}, "reserved"),
        ({"duration_s": 0}, "duration_s must be >= 1"),
    ],
)
def test_invalid_spec_raises_helpful_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulationSpec(**kwargs)


def test_plan_rejects_what_cannot_be_injected():
    with pytest.raises(ValueError, match=r"cannot fit 50 anomaly episodes.*at most \d+ for 2 device"):
        plan_anomalies(SimulationSpec(devices=2, duration_s=6 * 3600, anomalies=50))
    with pytest.raises(ValueError, match="cannot fit"):
        plan_anomalies(SimulationSpec(devices=3, duration_s=3600, anomalies=1))
    with pytest.raises(ValueError, match=r"latency_spike.*none of which is in kpis"):
        plan_anomalies(SimulationSpec(kpis=("throughput_mbps",), kinds=("latency_spike",), anomalies=1))
    with pytest.raises(TypeError, match="devices must be an integer"):
        SimulationSpec(devices=2.5)  # type: ignore[arg-type]


def test_label_validation():
    with pytest.raises(ValueError, match="after start_ms"):
        AnomalyLabel("dev-000", 10, 10, "flapping")
    assert math.isclose(AnomalyLabel("dev-000", 0, 600_000, "flapping").end_ms, 600_000)
