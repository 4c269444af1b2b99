"""The monitor on a real Kafka broker: hand-made records (fast), then the real Flink job's output
with an injected incident (alerts once per cool-down, no retrain) and with shifted latency
(one retrain request naming the latency features)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from netanomaly.kafka_io import ensure_topics, json_producer, read_topic
from netanomaly.monitor.config import load_monitor_config
from netanomaly.monitor.service import run_monitor
from netanomaly.monitor.timeutil import iso_ms, parse_ms
from tests.conftest import repo_root
from tests.integration.conftest import job_config, run_bounded, unique_topics
from tests.unit.test_monitor_drift import CONSTANT, UNIFORM
from tests.unit.test_monitor_rules import anomaly, metrics
from tests.unit.test_monitor_webhook import free_port, http_server

pytestmark = pytest.mark.integration

SCHEMAS = repo_root() / "conf" / "schemas"
T0 = 1_767_571_200_000  # 2026-01-05T00:00:00Z
W = 600_000
HOUR = 3_600_000


def _schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def _produce(bootstrap: str, topic: str, payloads: list) -> None:
    ensure_topics(bootstrap, [topic])
    producer = json_producer(bootstrap)
    for p in payloads:
        producer.send(topic, value=p.encode() if isinstance(p, str) else p)
    producer.flush()
    producer.close()


def _monitor_cfg(bootstrap: str, topics: dict[str, str], **overrides):
    """Monitor config reading the job's topics (from unique_topics) and writing fresh ones."""
    tag = topics["kafka.topics.events"].removesuffix("-events")
    base = {
        "kafka.bootstrap_servers": bootstrap,
        "kafka.bounded": True,
        "kafka.group_id": f"{tag}-monitor",
        **{k: v for k, v in topics.items() if k.split(".")[-1] in ("anomalies", "metrics", "features")},
        "kafka.topics.alerts": f"{tag}-alerts",
        "kafka.topics.drift": f"{tag}-drift",
        "kafka.topics.retrain": f"{tag}-retrain",
        "wandb.mode": "disabled",
        "service.drain_timeout_s": 30,
    }
    base.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_monitor_config(None, base)


def _outputs(bootstrap: str, cfg) -> dict[str, list]:
    t = cfg.kafka.topics
    return {name: read_topic(bootstrap, getattr(t, name)) for name in ("alerts", "drift", "retrain")}


def _assert_once_per_cooldown(alerts: list[dict], cfg) -> None:
    cooldown = {r.name: r.cooldown_s * 1000 for r in cfg.rules}
    by_key = defaultdict(list)
    for a in alerts:
        jsonschema.validate(a, _schema("kpi-alerts"))
        by_key[a["key"]].append(parse_ms(a["window_start"]))
    for key, starts in by_key.items():
        gaps = np.diff(sorted(starts))
        assert (gaps >= cooldown[key.split(":")[0]]).all(), (key, starts)
    assert len({a["alert_id"] for a in alerts}) == len(alerts)


# ------------------------------------------------------------------------- hand-made records, fast
def _handmade_model(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir(parents=True)
    meta = {"model_version": "ae-handmade", "feature_names": ["x", "event_count"], "threshold": 0.1,
            "baseline": {"x": UNIFORM, "event_count": CONSTANT}}  # fmt: skip
    (d / "metadata.json").write_text(json.dumps(meta))
    return d


def test_service_routes_records_to_alerts_drift_and_webhook(kafka_bootstrap, tmp_path, monkeypatch):
    topics = unique_topics("mon-hand")
    t = {k.split(".")[-1]: v for k, v in topics.items()}
    lat = [20.0] * 8 + [60.0] * 3 + [20.0]
    spikes = [0, 0, 1, 0, 0, 0, 0, 0, 6, 5, 0, 0]
    metric_recs = [metrics(i, anomalies=spikes[i], latency=lat[i]) for i in range(12)]
    anomaly_recs = [anomaly("d1", i) for i in (2, 3, 4)] + [anomaly("d2", 8), anomaly("d2", 9), anomaly("d1", 9)]
    values = np.linspace(0.5, 99.5, 100)  # shares exactly as in the baseline
    feature_recs = [
        {"device_id": f"dev-{d:03d}", "window_start": iso_ms(T0 + i * W), "window_end": iso_ms(T0 + (i + 1) * W),
         "event_count": 10.0, "x": float(values[d] + (60 if i >= 6 else 0))}
        for i in range(12) for d in range(100)
    ]  # fmt: skip
    _produce(kafka_bootstrap, t["metrics"], metric_recs[:5] + ["not json {"] + metric_recs[5:])
    _produce(kafka_bootstrap, t["anomalies"], [{"window_start": "x", "device_id": "d9"}, *anomaly_recs])
    _produce(kafka_bootstrap, t["features"], [*feature_recs, [1, 2]])

    # W&B misconfigured: online against an address where nothing listens -> disabled, never fatal
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{free_port()}")
    with http_server() as (url, received):
        cfg = _monitor_cfg(
            kafka_bootstrap,
            topics,
            wandb__mode="online",
            wandb__api_key="x" * 40,
            wandb__init_timeout_s=2,
            webhook__url=url,
            webhook__min_severity="info",
            rules=[
                {"name": "score", "type": "score_over_threshold", "cooldown_s": 3600},
                {"name": "spike", "type": "anomaly_spike", "severity": "critical", "history_windows": 6},
                {"name": "lat", "type": "kpi_trend", "kpi": "latency_ms", "span_windows": 2, "baseline_windows": 6},
            ],
            drift__horizon_windows=2,
            drift__min_samples=10,
            drift__consecutive=2,
        )
        t0 = time.monotonic()
        stats = run_monitor(cfg, _handmade_model(tmp_path), max_seconds=120)
        elapsed = time.monotonic() - t0
        received_texts = [r["json"]["text"] for r in received]

    assert stats["stopped_by"] == "bounded_end", stats
    assert stats["records"] == {"anomalies": 7, "metrics": 13, "features": 1201}
    assert stats["decode_errors"] == {"metrics": 1} and stats["invalid_records"] == {"anomalies": 1, "features": 1}
    assert not stats["wandb"]["enabled"] and "online mode" in stats["wandb"]["disabled_reason"]
    assert stats["produce_errors"] == 0 and stats["commit_errors"] == 0

    out = _outputs(kafka_bootstrap, cfg)
    got = sorted((a["rule"], a["key"], parse_ms(a["window_start"]) - T0) for a in out["alerts"])
    assert got == sorted(
        [
            ("score", "score:d1", 2 * W),
            ("score", "score:d1", 9 * W),  # 70 min after the first: a new cool-down
            ("score", "score:d2", 8 * W),  # d2 at window 9: cooling down
            ("spike", "spike:fleet", 8 * W),
            ("lat", "lat:latency_ms", 8 * W),
        ]
    )
    _assert_once_per_cooldown(out["alerts"], cfg)
    assert stats["alerts"] == 5 and stats["webhook"]["sent"] == 5 and len(received_texts) == 5
    assert any("[CRITICAL] spike" in text for text in received_texts)

    # drift: windows 1..11 evaluated (window 11 at the end of the bounded stream), x shifted from window 6
    assert [parse_ms(d["window_start"]) - T0 for d in out["drift"]] == [i * W for i in range(1, 12)]
    for d in out["drift"]:
        jsonschema.validate(d, _schema("kpi-drift"))
        assert d["drifted"] == (["x"] if parse_ms(d["window_start"]) >= T0 + 6 * W else [])
    [req] = out["retrain"]
    jsonschema.validate(req, _schema("kpi-retrain-requests"))
    assert req["window_start"] == iso_ms(T0 + 7 * W) and [f["feature"] for f in req["features"]] == ["x"]
    assert req["model_version"] == "ae-handmade"
    assert elapsed < 60

    # offsets were committed: a second run of the same group reads nothing and alerts nothing
    again = run_monitor(cfg, _handmade_model(tmp_path / "again"), max_seconds=60)
    assert sum(again["records"].values()) == 0 and again["alerts"] == 0 and again["stopped_by"] == "bounded_end"
    assert len(read_topic(kafka_bootstrap, cfg.kafka.topics.alerts)) == 5


def test_service_stops_promptly_on_stop_event_deadline_and_sigterm(kafka_bootstrap):
    topics = unique_topics("mon-stop")
    cfg = _monitor_cfg(kafka_bootstrap, topics, kafka__bounded=False, drift__enabled=False)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    t0 = time.monotonic()
    stats = run_monitor(cfg, None, stop_event=stop)  # no topics yet: waits for them, then stops
    assert stats["stopped_by"] == "stop_event" and time.monotonic() - t0 < 1.0 + 3.0

    t0 = time.monotonic()
    assert run_monitor(cfg, None, max_seconds=1.0)["stopped_by"] == "max_seconds"
    assert time.monotonic() - t0 < 1.0 + 3.0

    def fallback(signum, frame):  # catches the signal should the monitor's handler not be there
        raise AssertionError("SIGTERM reached the test, not the monitor")

    before = signal.signal(signal.SIGTERM, fallback)
    try:
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        t0 = time.monotonic()
        stats = run_monitor(cfg, None, max_seconds=30)
        assert stats["stopped_by"] == "stop_event" and time.monotonic() - t0 < 1.0 + 3.0
        assert signal.getsignal(signal.SIGTERM) is fallback  # the monitor restored the previous handler
    finally:
        signal.signal(signal.SIGTERM, before)


# --------------------------------------------------------------------- the real job, then the monitor
HISTORY_DAYS = 4  # the trained_model fixture: 12 devices, seed 1, 4 days from DEFAULT_START_MS
LIVE_HOURS = 26  # > one daily cycle: the drift horizon (144 windows) fills, then 12 more evaluations


def _live_events(incidents: list | None = None, latency_scale: float = 1.0) -> tuple[list[dict], int]:
    """The trained fleet (same devices and seed), the 26 hours after its training history."""
    from netanomaly import simulate as sim

    start = sim.DEFAULT_START_MS + HISTORY_DAYS * 86_400_000
    spec = sim.SimulationSpec(devices=12, duration_s=LIVE_HOURS * 3600, seed=1, start_ms=start)
    events = list(sim.generate_events(spec, incidents or []))
    if latency_scale != 1.0:  # drift: every device's latency shifted
        events = [{**e, "latency_ms": e["latency_ms"] * latency_scale} for e in events]
    return events, start


def _run_job_and_monitor(bootstrap, model, tmp_path, prefix, events, **monitor_overrides):
    topics = unique_topics(prefix)
    cfg = job_config(bootstrap, model, topics, kafka__bounded=True, stream__emit_features=True)
    _produce_keyed = json_producer(bootstrap)
    ensure_topics(bootstrap, [cfg.kafka.topics.events])
    for e in events:
        _produce_keyed.send(cfg.kafka.topics.events, key=e["device_id"], value=e)
    _produce_keyed.flush()
    _produce_keyed.close()
    t0 = time.monotonic()
    run_bounded(cfg, tmp_path / "job")
    job_s = time.monotonic() - t0
    mcfg = _monitor_cfg(bootstrap, topics, **monitor_overrides)
    t0 = time.monotonic()
    stats = run_monitor(mcfg, model, max_seconds=180)
    monitor_s = time.monotonic() - t0
    assert stats["stopped_by"] == "bounded_end", stats
    out = _outputs(bootstrap, mcfg)
    out["anomalies"] = read_topic(bootstrap, cfg.kafka.topics.anomalies)
    print(f"{prefix}: job {job_s:.1f} s, monitor {monitor_s:.1f} s, stats {json.dumps(stats)[:600]}")
    return mcfg, stats, out


def test_incident_alerts_once_per_cooldown_and_no_retrain_on_an_undrifted_stream(
    kafka_bootstrap, trained_model, tmp_path
):
    from netanomaly.simulate import AnomalyLabel

    _, start = _live_events()
    at = lambda hours: start + int(hours * HOUR)  # noqa: E731
    incidents = [  # a fleet incident: 6 of 12 devices, 30 minutes
        *[AnomalyLabel(f"dev-{d:03d}", at(20), at(20.5), "latency_spike") for d in range(6)],
        # one device, two bursts 10 minutes apart, both inside one cool-down (1 h) of the first alert
        AnomalyLabel("dev-007", at(9), at(9.5), "packet_loss_burst"),
        AnomalyLabel("dev-007", at(9) + 40 * 60_000, at(10), "packet_loss_burst"),
    ]
    events, _ = _live_events(incidents)
    with http_server() as (url, received):
        cfg, stats, out = _run_job_and_monitor(
            kafka_bootstrap, trained_model, tmp_path, "mon-incident", events,
            wandb__mode="offline", webhook__url=url, webhook__min_severity="warning",
        )  # fmt: skip
        webhook_texts = [r["json"]["text"] for r in received]
    alerts = out["alerts"]
    _assert_once_per_cooldown(alerts, cfg)  # default rules: conf/monitor.yaml
    by_rule = defaultdict(list)
    for a in alerts:
        by_rule[a["rule"]].append(a)

    # device_score: exactly the cool-down-filtered anomalies of each device
    score_rule = next(r for r in cfg.rules if r.name == "device_score")
    expected, last = set(), {}
    for a in sorted(out["anomalies"], key=lambda a: parse_ms(a["window_start"])):
        t, dev = parse_ms(a["window_start"]), a["device_id"]
        if a["score"] > a["threshold"] and (dev not in last or t - last[dev] >= score_rule.cooldown_s * 1000):
            expected.add((dev, t))
            last[dev] = t
    assert {(a["device_id"], parse_ms(a["window_start"])) for a in by_rule["device_score"]} == expected

    def in_span(a, lo_h, hi_h):
        return at(lo_h) <= parse_ms(a["window_start"]) < at(hi_h)

    for d in range(6):  # each device of the fleet incident: one alert for its 3 anomalous windows
        assert len([a for a in by_rule["device_score"] if a["device_id"] == f"dev-{d:03d}" and in_span(a, 20, 21)]) == 1
    assert len([a for a in by_rule["device_score"] if a["device_id"] == "dev-007" and in_span(a, 9, 10.5)]) == 1
    [spike] = by_rule["fleet_anomaly_spike"]
    assert in_span(spike, 20, 20.5) and spike["severity"] == "critical" and spike["value"] >= 3
    [lat] = by_rule["latency_trend"]
    assert in_span(lat, 20, 20.75) and lat["kpi"] == "latency_ms"
    [loss] = by_rule["packet_loss_trend"]  # both bursts of dev-007 lift the fleet's mean loss: one alert
    assert in_span(loss, 9, 10.5) and loss["kpi"] == "packet_loss_pct"

    # no drift on the trained fleet's own distribution: reports, but no retrain request
    assert out["retrain"] == [] and stats["retrain_requests"] == 0
    assert len(out["drift"]) == LIVE_HOURS * 6 - 143  # one per window period once 144 have passed
    assert max(d["max_psi"] for d in out["drift"]) < 0.1

    # the webhook got every warning/critical alert; W&B wrote one offline run per UTC day
    assert len(webhook_texts) == len(alerts) == stats["webhook"]["sent"]
    assert stats["wandb"]["runs"] == 2 and stats["wandb"]["dropped"] == 0 and stats["wandb"]["alerts"] == len(alerts)
    assert [Path(p).is_dir() for p in stats["wandb"]["run_dirs"]] == [True, True]


def test_drifted_latency_gives_one_retrain_request_naming_the_latency_features(
    kafka_bootstrap, trained_model, tmp_path
):
    events, _ = _live_events(latency_scale=3.0)
    cfg, stats, out = _run_job_and_monitor(kafka_bootstrap, trained_model, tmp_path, "mon-drift", events)
    [req] = out["retrain"]
    jsonschema.validate(req, _schema("kpi-retrain-requests"))
    names = [f["feature"] for f in req["features"]]
    assert "latency_ms__mean" in names and all(n.startswith("latency_ms__") for n in names), names
    assert all(f["psi"] > cfg.drift.threshold and f["consecutive"] >= cfg.drift.consecutive for f in req["features"])
    assert req["model_version"] == json.loads((trained_model / "metadata.json").read_text())["model_version"]
    reports = out["drift"]
    # the request comes with the 3rd evaluation in a row over the threshold (the first three are)
    assert req["window_start"] == reports[cfg.drift.consecutive - 1]["window_start"]
    assert all("latency_ms__mean" in d["drifted"] for d in reports)
    assert all(f.startswith("latency_ms__") for d in reports for f in d["drifted"])  # the other KPIs did not move
    _assert_once_per_cooldown(out["alerts"], cfg)
