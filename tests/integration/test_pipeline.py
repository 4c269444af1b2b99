"""End to end on a real Kafka broker and a real Flink mini-cluster with a real exported model."""

from __future__ import annotations

import json
import random

import jsonschema
import numpy as np
import pandas as pd
import pytest

from model.event_metrics import Episode, Flag, event_metrics
from model.features import FeatureSpec, compute_window_features
from model.scoring import score_features
from netanomaly.events import iso_utc, parse_timestamp_ms
from netanomaly.kafka_io import ensure_topics, json_producer, read_topic
from tests.conftest import repo_root
from tests.integration.conftest import job_config, run_bounded, simulated_frame, unique_topics
from tests.malformed import MALFORMED

pytestmark = pytest.mark.integration

SCHEMAS = repo_root() / "conf" / "schemas"


def _schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def _produce(bootstrap: str, topic: str, payloads: list) -> None:
    ensure_topics(bootstrap, [topic])
    producer = json_producer(bootstrap)
    for p in payloads:
        if isinstance(p, str):
            p = p.encode()
        key = None
        if isinstance(p, dict):
            key = p["device_id"]
        producer.send(topic, key=key, value=p)
    producer.flush()
    producer.close()


def _ms(iso: str) -> int:
    ms = parse_timestamp_ms(iso)
    assert ms is not None, iso
    return ms


# ------------------------------------------------------------------ detection on simulated anomalies
@pytest.mark.parametrize("parallelism", [1, 2])
def test_detects_injected_anomalies(kafka_bootstrap, trained_model, tmp_path, parallelism):
    from netanomaly import simulate as sim

    topics = unique_topics(f"detect-p{parallelism}")
    cfg = job_config(
        kafka_bootstrap,
        trained_model,
        topics,
        kafka__bounded=True,
        kafka__partitions=2,
        stream__parallelism=parallelism,
    )
    spec = sim.SimulationSpec(
        devices=10, duration_s=86400, anomalies=12, seed=100 + parallelism, window_seconds=cfg.features.window_seconds
    )
    labels = sim.plan_anomalies(spec)
    events = list(sim.generate_events(spec, labels))
    ensure_topics(kafka_bootstrap, [cfg.kafka.topics.events], partitions=2)
    _produce(kafka_bootstrap, cfg.kafka.topics.events, events)

    run_bounded(cfg, tmp_path)

    anomalies = read_topic(kafka_bootstrap, cfg.kafka.topics.anomalies)
    metrics = read_topic(kafka_bootstrap, cfg.kafka.topics.metrics)
    assert read_topic(kafka_bootstrap, cfg.kafka.topics.dlq) == []
    # every event was scored: the fleet records add up to all events, one record per window period
    assert sum(m["events"] for m in metrics) == len(events)
    assert len({m["window_start"] for m in metrics}) == len(metrics)
    feats = compute_window_features(simulated_frame(spec), FeatureSpec.from_config(cfg.features))
    assert sum(m["windows"] for m in metrics) == len(feats)

    flags = [Flag(a["device_id"], _ms(a["window_start"]), _ms(a["window_end"])) for a in anomalies]
    m = event_metrics([Episode(lab.device_id, lab.start_ms, lab.end_ms, lab.kind) for lab in labels], flags)
    assert m.recall >= 0.9, f"missed {m.missed}"
    assert m.precision >= 0.8, f"false alarms {m.false_alarms}"
    for a in anomalies:
        jsonschema.validate(a, _schema("kpi-anomalies"))
    for rec in metrics:
        jsonschema.validate(rec, _schema("kpi-metrics"))


# ------------------------------------------------------- one mixed run: parity, dead letters, scores
@pytest.fixture(scope="module")
def mixed_run(kafka_bootstrap, trained_model, tmp_path_factory):
    """Simulated events (timestamps as epoch ms and as ISO-8601 in several zones) plus malformed
    messages, through one bounded job that also emits every window's features."""
    from netanomaly import simulate as sim

    topics = unique_topics("mixed")
    cfg = job_config(kafka_bootstrap, trained_model, topics, kafka__bounded=True, stream__emit_features=True)
    spec = sim.SimulationSpec(
        devices=6, duration_s=8 * 3600, anomalies=3, seed=7, window_seconds=cfg.features.window_seconds
    )
    events = list(sim.generate_events(spec))
    rng = random.Random(3)
    zones = [("Z", 0), ("+02:00", 120), ("-0530", -330), ("+00:00", 0)]
    payloads: list = []
    for ev in events:
        if rng.random() < 0.5:
            zone, minutes = rng.choice(zones)
            local = iso_utc(ev["timestamp"] + minutes * 60_000)[:-1]  # wall clock in that zone
            ev = {**ev, "timestamp": local + zone, "site": "extra fields are ignored"}
        payloads.append(ev)
    bad = [m[0] for m in MALFORMED]
    # spread malformed messages through the stream
    for i, b in enumerate(bad):
        payloads.insert((i + 1) * len(payloads) // (len(bad) + 2), b)
    _produce(kafka_bootstrap, cfg.kafka.topics.events, payloads)
    run_bounded(cfg, tmp_path_factory.mktemp("mixed"))
    t = cfg.kafka.topics
    return {
        "cfg": cfg,
        "events": events,
        "spec": spec,
        "dlq": read_topic(kafka_bootstrap, t.dlq),
        "features": read_topic(kafka_bootstrap, t.features),
        "anomalies": read_topic(kafka_bootstrap, t.anomalies),
        "metrics": read_topic(kafka_bootstrap, t.metrics),
        "model": trained_model,
    }


def test_parity_offline_and_job_features(mixed_run):
    cfg = mixed_run["cfg"]
    spec = FeatureSpec.from_config(cfg.features)
    frame = pd.DataFrame(mixed_run["events"]).rename(columns={"timestamp": "event_time_ms"})
    offline = compute_window_features(frame, spec)
    online = pd.DataFrame(mixed_run["features"])
    online["window_start"] = pd.to_datetime(online["window_start"], utc=True)
    online["window_end"] = pd.to_datetime(online["window_end"], utc=True)
    key = ["device_id", "window_start"]
    merged = offline.merge(online, on=key, how="outer", suffixes=("_off", "_on"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"][key]
    assert len(merged) == len(offline) > 0
    for name in spec.feature_names:
        np.testing.assert_allclose(merged[f"{name}_on"], merged[f"{name}_off"], rtol=1e-6, atol=1e-6, err_msg=name)


def test_every_malformed_message_is_dead_lettered_with_its_reason(mixed_run):
    dlq = mixed_run["dlq"]
    got = sorted((d["payload"] or "", d["reason"], d["field"]) for d in dlq)
    want = sorted((p, r, f) for p, r, f in MALFORMED)
    assert got == want
    for d in dlq:
        jsonschema.validate(d, _schema("kpi-dlq"))
        assert d["source_topic"] == mixed_run["cfg"].kafka.topics.events
        assert d["source_offset"] >= 0


def test_valid_events_are_all_scored_beside_the_bad_ones(mixed_run):
    metrics = mixed_run["metrics"]
    assert sum(m["events"] for m in metrics) == len(mixed_run["events"])
    assert sum(m["windows"] for m in metrics) == len(mixed_run["features"])
    assert {m["model_version"] for m in metrics} == {
        json.loads((mixed_run["model"] / "metadata.json").read_text())["model_version"]
    }


def test_job_scores_equal_offline_scores(mixed_run):
    online = pd.DataFrame(mixed_run["features"])
    online["window_start"] = pd.to_datetime(online["window_start"], utc=True)
    online["window_end"] = pd.to_datetime(online["window_end"], utc=True)
    offline = score_features(online, mixed_run["model"], top_k=mixed_run["cfg"].model.top_k)
    by_key = {(r.device_id, r.window_start): r for r in offline.itertuples()}
    flagged = [r for r in offline.itertuples() if r.is_anomaly]
    assert len(mixed_run["anomalies"]) == len(flagged) > 0
    for a in mixed_run["anomalies"]:
        r = by_key[(a["device_id"], a["window_start"])]
        assert a["score"] == pytest.approx(r.score, rel=1e-5)
        assert [f["feature"] for f in a["top_features"]] == [f["feature"] for f in r.top_features]


# ----------------------------------------------------------------------------- late events, streaming
def test_late_event_goes_to_dead_letters(kafka_bootstrap, trained_model, tmp_path):
    from netanomaly.kafka_io import consume
    from netanomaly.local_job import JobProcess

    topics = unique_topics("late")
    cfg = job_config(
        kafka_bootstrap, trained_model, topics, stream__watermark_delay_seconds=0, stream__idle_timeout_seconds=0
    )
    base = 1_767_571_200_000
    ok = {"device_id": "rtr-9", "latency_ms": 10.0, "throughput_mbps": 300.0, "packet_loss_pct": 0.1, "jitter_ms": 1.0}
    first = [{**ok, "timestamp": base + i * 60_000} for i in range(10)]  # window [00:00, 00:10)
    ahead = [{**ok, "timestamp": base + 700_000}]  # watermark passes 00:10
    with JobProcess(cfg, tmp_path) as job:
        _produce(kafka_bootstrap, cfg.kafka.topics.events, first + ahead)
        closed = consume(kafka_bootstrap, cfg.kafka.topics.metrics, until=lambda r: len(r) >= 1, timeout_s=180)
        assert closed, "the first window never closed:\n" + job.log_tail()
        assert closed[0]["events"] == 10
        late = {**ok, "timestamp": base + 30_000, "latency_ms": 99.0}
        _produce(kafka_bootstrap, cfg.kafka.topics.events, [late])
        dlq = consume(kafka_bootstrap, cfg.kafka.topics.dlq, until=lambda r: len(r) >= 1, timeout_s=60)
    assert [(d["reason"], d["field"]) for d in dlq] == [("late", "timestamp")]
    assert json.loads(dlq[0]["payload"])["latency_ms"] == 99.0
