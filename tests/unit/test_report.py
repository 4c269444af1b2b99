"""`netanomaly report`: plots from hand-made frames, a tiny feature store and stubbed Kafka topics."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from netanomaly import report as rp

T0 = pd.Timestamp("2026-01-05T00:00:00Z")
W = pd.Timedelta(minutes=10)
DEVICES = ["rtr-1", "rtr-2", "rtr-3"]
PERIODS = 12
THRESHOLD = 0.05
ANOMALOUS = {("rtr-2", 4), ("rtr-2", 5), ("rtr-3", 9)}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def iso(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its magic bytes and plausible file size."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert 5_000 < len(data) < 1_000_000, f"{path}: implausible size {len(data)}"
    width, height = struct.unpack(">II", data[16:24])
    assert 300 < width < 2000 and 200 < height < 2000, (path, width, height)
    return width, height


# --------------------------------------------------------------------------------- hand-made input
def store_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(PERIODS):
        for d in DEVICES:
            bad = (d, i) in ANOMALOUS
            score = float(rng.uniform(5, 40) * (THRESHOLD if bad else 1e-4))
            rows.append(
                {
                    "device_id": d,
                    "window_start": (T0 + i * W).tz_localize(None),  # the job writes naive UTC
                    "window_end": (T0 + (i + 1) * W).tz_localize(None),
                    "event_count": 10.0,
                    "latency_ms__mean": float(rng.normal(20, 2)),
                    "score": score,
                    "threshold": THRESHOLD,
                    "is_anomaly": bad,
                    "model_version": "ae-test",
                }
            )
    return pd.DataFrame(rows)


def write_store(root: Path) -> Path:
    part = root / "dt=2026-01-05"
    part.mkdir(parents=True)
    store_frame().to_parquet(part / "part-0", index=False)
    (part / ".part-1.inprogress").write_bytes(b"not yet committed")  # hidden: skipped by the reader
    return root


def metric_records() -> list[dict]:
    out = []
    for i in range(PERIODS):
        anomalies = sum((d, i) in ANOMALOUS for d in DEVICES)
        out.append(
            {
                "window_start": iso(T0 + i * W),
                "window_end": iso(T0 + (i + 1) * W),
                "devices": 3,
                "windows": 3,
                "events": 30,
                "anomalies": anomalies,
                "anomaly_rate": anomalies / 3,
                "mean_score": 0.002 + 0.03 * anomalies,
                "max_score": 0.004 + 0.4 * anomalies,
                "threshold": THRESHOLD,
                "model_version": "ae-test",
                "kpi_mean": {"latency_ms": 20.0},
                "kpi_max": {"latency_ms": 30.0},
            }
        )
    return out


def anomaly_records() -> list[dict]:
    return [
        {
            "device_id": d,
            "window_start": iso(T0 + i * W),
            "window_end": iso(T0 + (i + 1) * W),
            "score": 0.6 if i == 9 else 0.08,
            "threshold": THRESHOLD,
            "is_anomaly": True,
            "model_version": "ae-test",
            "top_features": [{"feature": "latency_ms__max", "contribution": 0.7}],
            "event_count": 10,
            "kpi_mean": {"latency_ms": 90.0},
        }
        for d, i in sorted(ANOMALOUS)
    ]


def alert_records() -> list[dict]:
    def alert(rule, rule_type, severity, i, device=None, kpi=None):
        who = device or kpi or "fleet"
        return {
            "alert_id": f"{abs(hash((rule, who, i))):024x}"[:24],
            "rule": rule,
            "rule_type": rule_type,
            "severity": severity,
            "key": f"{rule}:{who}",
            "device_id": device,
            "kpi": kpi,
            "window_start": iso(T0 + i * W),
            "window_end": iso(T0 + (i + 1) * W),
            "value": 1.0,
            "threshold": 0.5,
            "baseline": None,
            "message": "test",
            "model_version": "ae-test",
            "created_at": "2026-01-05T03:00:00.000Z",
            "details": {},
        }

    return [
        alert("device_score", "score_over_threshold", "warning", 4, device="rtr-2"),
        alert("device_score", "score_over_threshold", "warning", 9, device="rtr-3"),
        alert("fleet_anomaly_spike", "anomaly_spike", "critical", 9),
        alert("latency_trend", "kpi_trend", "info", 6, kpi="latency_ms"),
    ]


def drift_records() -> list[dict]:
    out = []
    for i in range(6, PERIODS):
        psi = {"event_count": 0.01, "latency_ms__mean": 0.05 * (i - 5), "jitter_ms__max": 0.02}
        out.append(
            {
                "window_start": iso(T0 + i * W),
                "window_end": iso(T0 + (i + 1) * W),
                "horizon_start": iso(T0 + (i - 5) * W),
                "horizon_windows": 6,
                "periods": 6,
                "samples": 18,
                "psi": psi,
                "max_psi": max(psi.values()),
                "max_feature": max(psi, key=psi.get),
                "threshold": 0.25,
                "drifted": [k for k, v in psi.items() if v > 0.25],
                "consecutive": {k: 1 for k, v in psi.items() if v > 0.25},
                "model_version": "ae-test",
                "created_at": "2026-01-05T03:00:00.000Z",
            }
        )
    return out


@pytest.fixture
def fake_kafka(monkeypatch):
    """Topics as {name: [raw message values]}; a name absent from the dict does not exist."""
    topics: dict[str, list] = {}
    monkeypatch.setattr(rp, "_list_topics", lambda bootstrap, timeout_s: set(topics))
    monkeypatch.setattr(
        rp, "read_topic", lambda bootstrap, topic, timeout_s=30.0, decode_json=True: list(topics[topic])
    )
    return topics


def encode(records: list) -> list[bytes]:
    return [json.dumps(r).encode() for r in records]


# ------------------------------------------------------------------------------------- functions
def test_plot_functions_write_valid_pngs(tmp_path):
    notes: list[str] = []
    metrics = rp.metrics_from_records(metric_records(), notes)
    anomalies = rp.anomalies_from_records(anomaly_records(), notes)
    alerts = rp.alerts_from_records(alert_records(), notes)
    drift = rp.drift_from_records(drift_records(), notes)
    scores = store_frame()
    scores["window_start"] = pd.to_datetime(scores["window_start"], utc=True)
    scores["window_end"] = pd.to_datetime(scores["window_end"], utc=True)
    assert notes == []
    counts = metrics[["window_start", "window_end", "anomalies"]]
    paths = [
        rp.plot_anomaly_rate(metrics, tmp_path / "rate.png"),
        rp.plot_score_distribution(scores, tmp_path / "scores.png"),
        rp.plot_score_distribution(metrics, tmp_path / "scores-period.png", per_period=True),
        rp.plot_drift(drift, tmp_path / "drift.png"),
        rp.plot_alerts(alerts, counts, tmp_path / "alerts.png", kind="alerts"),
        rp.plot_alerts(anomalies, counts, tmp_path / "anoms.png", kind="anomalies"),
        rp.plot_alerts(anomalies, counts.iloc[0:0], tmp_path / "anoms-alone.png", kind="anomalies"),
    ]
    for p in paths:
        png_size(p)
    with pytest.raises(rp.ReportError, match="no fleet metrics"):
        rp.plot_anomaly_rate(metrics.iloc[0:0], tmp_path / "empty.png")


def test_fleet_metrics_from_the_store_match_the_windows():
    scores = store_frame()
    scores["window_start"] = pd.to_datetime(scores["window_start"], utc=True)
    m = rp.metrics_from_scores(scores)
    assert len(m) == PERIODS
    assert m["windows"].tolist() == [len(DEVICES)] * PERIODS
    assert m["anomalies"].sum() == len(ANOMALOUS)
    assert m.loc[4, "anomaly_rate"] == pytest.approx(1 / 3)
    assert m["events"].sum() == 10 * len(scores)


def test_kafka_records_are_cleaned_with_notes():
    notes: list[str] = []
    recs = metric_records()
    recs = [*recs, recs[-1], {"window_start": "garbage"}, {**recs[0], "window_start": "not a time"}]
    m = rp.metrics_from_records(recs, notes)
    assert len(m) == PERIODS
    assert any("without" in n for n in notes)
    assert any("unreadable window_start" in n for n in notes)
    assert any("repeated window period" in n for n in notes)
    assert str(m["window_start"].dt.tz) == "UTC"


# ------------------------------------------------------------------------------------------ CLI
def test_report_from_feature_store(tmp_path):
    store = write_store(tmp_path / "store")
    out = tmp_path / "report"
    out.mkdir()
    (out / "drift.png").write_bytes(b"from an earlier Kafka report")
    result = CliRunner().invoke(rp.report, ["--feature-store", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "left from an earlier report" in result.output
    for name in ("anomaly_rate.png", "score_distribution.png", "alerts_timeline.png"):
        png_size(out / name)
        assert str(out / name) in result.output
    assert not (out / "drift.png").exists()
    assert "drift.png not drawn" in result.output
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["window_periods"] == PERIODS
    assert c["scored_windows"] == PERIODS * len(DEVICES)
    assert c["anomalous_windows"] == c["anomaly_records"] == len(ANOMALOUS)
    assert c["devices"] == len(DEVICES) and c["devices_with_anomalies"] == 2
    assert c["alerts"] == 0 and c["drift_evaluations"] == 0
    assert c["events"] == 10 * PERIODS * len(DEVICES)
    assert summary["time_range"] == {"start": "2026-01-05T00:00:00.000Z", "end": "2026-01-05T02:00:00.000Z"}
    assert sorted(Path(f).name for f in summary["files"]) == [
        "alerts_timeline.png",
        "anomaly_rate.png",
        "score_distribution.png",
        "summary.json",
    ]
    assert set(summary["skipped"]) == {"drift"}


def test_report_from_kafka_with_alerts_and_drift(tmp_path, fake_kafka):
    fake_kafka.update(
        {
            "m": encode(metric_records()),
            "a": encode(anomaly_records()),
            "al": encode(alert_records()),
            "d": encode(drift_records()),
        }
    )
    out = tmp_path / "report"
    args = ["--bootstrap-servers", "x:1", "--metrics-topic", "m", "--anomalies-topic", "a"]
    args += ["--alerts-topic", "al", "--drift-topic", "d", "--out", str(out)]
    result = CliRunner().invoke(rp.report, args)
    assert result.exit_code == 0, result.output
    for name in rp.FILES.values():
        png_size(out / name)
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["window_periods"] == PERIODS and c["scored_windows"] == 3 * PERIODS and c["events"] == 30 * PERIODS
    assert c["anomalous_windows"] == c["anomaly_records"] == len(ANOMALOUS)
    assert c["alerts"] == 4
    assert c["alerts_by_severity"] == {"info": 1, "warning": 2, "critical": 1}
    assert c["alerts_by_rule"] == {"device_score": 2, "fleet_anomaly_spike": 1, "latency_trend": 1}
    assert c["drift_evaluations"] == 6 and c["drift_evaluations_over_threshold"] == 1
    assert summary["skipped"] == {} and len(summary["files"]) == 5


def test_missing_and_empty_topics_are_skipped_with_a_note(tmp_path, fake_kafka):
    fake_kafka["kpi-metrics"] = [b"not json {", *encode(metric_records())]
    fake_kafka["kpi-anomalies"] = encode(anomaly_records())
    fake_kafka["kpi-drift"] = []  # exists, empty; kpi-alerts does not exist
    out = tmp_path / "r"
    result = CliRunner().invoke(rp.report, ["--bootstrap-servers", "x:1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "topic kpi-alerts does not exist" in result.output
    assert "topic kpi-drift is empty" in result.output
    assert "kpi-metrics: skipped 1 message(s) that are not JSON" in result.output
    assert "timeline shows anomalous windows per device" in result.output
    png_size(out / "alerts_timeline.png")
    png_size(out / "score_distribution.png")
    assert not (out / "drift.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["window_periods"] == PERIODS
    assert summary["counts"]["alerts"] == 0


# ------------------------------------------------------------------------- empty or missing input
def _clean_failure(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_missing_store_gives_a_clear_message(tmp_path):
    result = CliRunner().invoke(rp.report, ["--feature-store", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    _clean_failure(result, "does not exist")
    assert not (tmp_path / "o").exists()


def test_empty_store_gives_a_clear_message(tmp_path):
    (tmp_path / "store" / "dt=2026-01-05").mkdir(parents=True)
    result = CliRunner().invoke(rp.report, ["--feature-store", str(tmp_path / "store"), "--out", str(tmp_path / "o")])
    _clean_failure(result, "no committed Parquet files")


def test_no_records_in_any_topic_gives_a_clear_message(tmp_path, fake_kafka):
    fake_kafka["kpi-metrics"] = []
    result = CliRunner().invoke(rp.report, ["--bootstrap-servers", "x:1", "--out", str(tmp_path / "o")])
    _clean_failure(result, "nothing to plot")
    assert "topic kpi-metrics is empty" in result.output


def test_unreachable_broker_gives_a_clear_message(tmp_path):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(rp.report, ["--bootstrap-servers", f"127.0.0.1:{port}", "--out", str(tmp_path / "o")])
    _clean_failure(result, "cannot reach Kafka")


def test_exactly_one_source(tmp_path):
    runner = CliRunner()
    neither = runner.invoke(rp.report, ["--out", str(tmp_path)])
    both = runner.invoke(rp.report, ["--bootstrap-servers", "x:1", "--feature-store", str(tmp_path)])
    for r in (neither, both):
        assert r.exit_code == 2 and "exactly one of" in r.output


def test_help_describes_every_option():
    result = CliRunner().invoke(rp.report, ["--help"])
    assert result.exit_code == 0
    for opt in rp.report.params:
        assert opt.help, opt.name
    assert "summary.json" in result.output
