"""Monitor alert rules on hand-made record sequences: when they fire, once per cool-down, keys."""

from __future__ import annotations

import json

import jsonschema
import pytest

from netanomaly.monitor.config import AnomalySpikeRule, KpiTrendRule, ScoreOverThresholdRule
from netanomaly.monitor.exceptions import InvalidRecord
from netanomaly.monitor.rules import CoolDown, RuleEngine, alert_id
from netanomaly.monitor.timeutil import iso_ms, parse_ms
from tests.conftest import repo_root

T0 = 1_767_571_200_000  # 2026-01-05T00:00:00Z
W = 600_000  # 10-minute windows
NOW = "2026-02-01T00:00:00.000Z"
SCHEMA = json.loads((repo_root() / "conf" / "schemas" / "kpi-alerts.schema.json").read_text())


def anomaly(device: str, i: int, score: float = 1.0, threshold: float = 0.1) -> dict:
    return {
        "device_id": device,
        "window_start": iso_ms(T0 + i * W),
        "window_end": iso_ms(T0 + (i + 1) * W),
        "score": score,
        "threshold": threshold,
        "is_anomaly": True,
        "model_version": "ae-test",
        "top_features": [{"feature": "latency_ms__max", "contribution": 0.7}],
        "event_count": 10,
        "kpi_mean": {"latency_ms": 80.0},
    }


def metrics(i: int, anomalies: int = 0, latency: float = 20.0, throughput: float = 500.0) -> dict:
    return {
        "window_start": iso_ms(T0 + i * W),
        "window_end": iso_ms(T0 + (i + 1) * W),
        "devices": 12,
        "windows": 12,
        "events": 120,
        "anomalies": anomalies,
        "anomaly_rate": anomalies / 12,
        "mean_score": 0.01,
        "max_score": 0.2,
        "threshold": 0.1,
        "model_version": "ae-test",
        "kpi_mean": {"latency_ms": latency, "throughput_mbps": throughput},
        "kpi_max": {"latency_ms": 2 * latency, "throughput_mbps": 2 * throughput},
    }


def score_rule(**kw) -> ScoreOverThresholdRule:
    return ScoreOverThresholdRule(type="score_over_threshold", **{"name": "score", **kw})


def spike_rule(**kw) -> AnomalySpikeRule:
    return AnomalySpikeRule(type="anomaly_spike", **{"name": "spike", "history_windows": 6, "min_history": 6, **kw})


def trend_rule(**kw) -> KpiTrendRule:
    base = {"name": "lat", "kpi": "latency_ms", "span_windows": 3, "baseline_windows": 6, "min_baseline_windows": 6}
    return KpiTrendRule(type="kpi_trend", **{**base, **kw})


def engine(*rules) -> RuleEngine:
    return RuleEngine(rules, model_version="ae-default", clock=lambda: NOW)


# ------------------------------------------------------------------------------ score_over_threshold
def test_score_rule_fires_over_threshold_times_factor_only():
    e = engine(score_rule(factor=2.0))
    assert e.on_anomaly(anomaly("d1", 0, score=0.2, threshold=0.1)) == []  # equal: not over
    assert e.on_anomaly(anomaly("d2", 0, score=0.15, threshold=0.1)) == []
    [a] = e.on_anomaly(anomaly("d3", 0, score=0.25, threshold=0.1))
    assert (a.rule, a.rule_type, a.key, a.device_id, a.kpi) == ("score", "score_over_threshold", "score:d3", "d3", None)
    assert a.value == 0.25 and a.threshold == pytest.approx(0.2) and a.baseline is None
    assert a.severity == "warning" and a.model_version == "ae-test" and a.created_at == NOW
    assert "d3" in a.message and "latency_ms__max 70%" in a.message
    jsonschema.validate(a.to_record(), SCHEMA)


def test_score_rule_absolute_threshold_overrides_the_models():
    e = engine(score_rule(threshold=5.0, severity="critical"))
    assert e.on_anomaly(anomaly("d1", 0, score=4.0)) == []
    [a] = e.on_anomaly(anomaly("d1", 1, score=6.0))
    assert a.threshold == 5.0 and a.severity == "critical"


def test_score_rule_alerts_once_per_cooldown_per_device():
    e = engine(score_rule(cooldown_s=3600))  # 6 windows
    fired = []
    for i in range(14):  # a long incident on d1, a short one on d2
        for dev in ("d1", "d2") if i < 2 else ("d1",):
            fired += [(a.device_id, parse_ms(a.window_start)) for a in e.on_anomaly(anomaly(dev, i))]
    assert fired == [("d1", T0), ("d2", T0), ("d1", T0 + 6 * W), ("d1", T0 + 12 * W)]
    assert e.fired["score"] == 4 and e.suppressed["score"] == 14 + 2 - 4


def test_cooldown_holds_out_of_order_and_redelivered_records():
    e = engine(score_rule(cooldown_s=3600))
    assert len(e.on_anomaly(anomaly("d1", 10))) == 1
    assert e.on_anomaly(anomaly("d1", 10)) == []  # redelivery
    assert e.on_anomaly(anomaly("d1", 6)) == []  # older, but within the cool-down
    assert len(e.on_anomaly(anomaly("d1", 4))) == 1  # 6 windows before: outside
    assert len(e.on_anomaly(anomaly("d1", 16))) == 1


def test_zero_cooldown_still_alerts_a_window_only_once():
    e = engine(score_rule(cooldown_s=0))
    assert [len(e.on_anomaly(anomaly("d1", i))) for i in (0, 1, 1, 2)] == [1, 1, 0, 1]


def test_two_rules_on_the_same_records_have_their_own_keys_and_severity():
    e = engine(score_rule(name="warn"), score_rule(name="crit", factor=5.0, severity="critical"))
    got = e.on_anomaly(anomaly("d1", 0, score=0.3, threshold=0.1))
    assert [(a.key, a.severity) for a in got] == [("warn:d1", "warning")]
    got = e.on_anomaly(anomaly("d1", 1, score=0.9, threshold=0.1))
    assert [(a.key, a.severity) for a in got] == [("crit:d1", "critical")]  # warn:d1 is cooling down


def test_alert_ids_are_deterministic_and_disabled_rules_are_skipped():
    recs = [anomaly("d1", i) for i in range(3)] + [anomaly("d2", 1)]
    ids1 = [a.alert_id for r in recs for a in engine(score_rule(cooldown_s=0)).on_anomaly(r)]
    ids2 = [a.alert_id for r in recs for a in engine(score_rule(cooldown_s=0)).on_anomaly(r)]
    assert ids1 == ids2 and len(set(ids1)) == 4
    assert ids1[0] == alert_id("score:d1", T0)
    assert engine(score_rule(enabled=False)).on_anomaly(anomaly("d1", 0)) == []


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"window_start": None}, "window_start"),
        ({"window_end": "2026-01-05T00:00:00Z"}, "not after"),
        ({"window_start": "yesterday"}, "ISO-8601"),
        ({"score": "high"}, "score"),
        ({"device_id": ""}, "device_id"),
    ],
)
def test_malformed_records_raise_invalid_record(change, words):
    rec = {**anomaly("d1", 0), **change}
    if change.get("window_start", 1) is None:
        del rec["window_start"]
    with pytest.raises(InvalidRecord, match=words):
        engine(score_rule()).on_anomaly(rec)


# ------------------------------------------------------------------------------------ anomaly_spike
def test_spike_fires_over_mean_plus_k_std_once_per_cooldown():
    e = engine(spike_rule(k=3.0, min_count=3, cooldown_s=1800, severity="critical"))
    history = [0, 1, 0, 1, 0, 1]  # mean 0.5, population std 0.5 -> limit 2.0
    for i, c in enumerate(history):
        assert e.on_metrics(metrics(i, c)) == []
    [a] = e.on_metrics(metrics(6, 3))
    assert (a.key, a.severity, a.device_id, a.kpi) == ("spike:fleet", "critical", None, None)
    assert a.value == 3 and a.threshold == pytest.approx(2.0) and a.baseline == pytest.approx(0.5)
    assert a.details["history_windows"] == 6 and a.details["history_std"] == pytest.approx(0.5)
    assert "3 anomalous windows of 12" in a.message
    jsonschema.validate(a.to_record(), SCHEMA)
    assert e.on_metrics(metrics(7, 8)) == []  # 10 min later: cooling down (30 min)
    assert e.on_metrics(metrics(8, 9)) == []
    # 30 min after the first alert: the baseline now holds the spike (mean 3.7, std 3.4), 30 is over it
    [b] = e.on_metrics(metrics(9, 30))
    assert parse_ms(b.window_start) - parse_ms(a.window_start) == 3 * W


def test_spike_needs_min_count_and_min_history():
    e = engine(spike_rule(k=3.0, min_count=3))
    for i in range(6):
        e.on_metrics(metrics(i, 0))
    assert e.on_metrics(metrics(6, 2)) == []  # over mean + k*std (= 0) but under min_count
    e2 = engine(spike_rule(min_count=1))
    assert [e2.on_metrics(metrics(i, 9 if i == 3 else 0)) for i in range(4)] == [[], [], [], []]  # 3 < min_history


def test_spike_does_not_fire_within_normal_noise():
    e = engine(spike_rule(k=3.0, min_count=1))
    noisy = [0, 4, 1, 5, 0, 3, 2, 4]  # a fleet that always has a few anomalies
    assert [a for i, c in enumerate(noisy) for a in e.on_metrics(metrics(i, c))] == []


# ---------------------------------------------------------------------------------------- kpi_trend
def test_trend_fires_when_the_span_mean_exceeds_baseline_times_factor():
    e = engine(trend_rule(factor=1.5, cooldown_s=3600))
    for i in range(6):
        assert e.on_metrics(metrics(i, latency=20.0)) == []  # no baseline before the span yet
    assert e.on_metrics(metrics(6, latency=20.0)) == []
    assert e.on_metrics(metrics(7, latency=20.0)) == []
    assert e.on_metrics(metrics(8, latency=40.0)) == []  # span 20, 20, 40 -> 26.7 < 30
    [a] = e.on_metrics(metrics(9, latency=40.0))  # span 20, 40, 40 -> 33.3 > 20 x 1.5
    assert (a.key, a.kpi, a.device_id) == ("lat:latency_ms", "latency_ms", None)
    assert a.value == pytest.approx(100 / 3) and a.baseline == pytest.approx(20.0) and a.threshold == pytest.approx(30)
    assert a.details["ratio"] == pytest.approx(5 / 3)
    jsonschema.validate(a.to_record(), SCHEMA)
    assert e.on_metrics(metrics(10, latency=40.0)) == []  # same incident: cooling down


def test_trend_below_for_a_throughput_drop_and_max_stat():
    e = engine(trend_rule(name="tp", kpi="throughput_mbps", direction="below", factor=2.0, span_windows=1))
    for i in range(6):
        e.on_metrics(metrics(i, throughput=500.0))
    assert e.on_metrics(metrics(6, throughput=300.0)) == []  # 300 > 500 / 2
    [a] = e.on_metrics(metrics(7, throughput=200.0))
    assert a.baseline == pytest.approx((5 * 500 + 300) / 6)  # the 6 windows before the span
    assert a.threshold == pytest.approx(a.baseline / 2) and "under" in a.message
    e2 = engine(trend_rule(stat="max", span_windows=1, factor=2.0))
    for i in range(6):
        e2.on_metrics(metrics(i, latency=10.0))  # kpi_max = 20
    [b] = e2.on_metrics(metrics(6, latency=25.0))  # kpi_max = 50 > 40
    assert b.value == 50.0


def test_trend_min_delta_missing_kpi_and_short_baseline():
    e = engine(trend_rule(span_windows=1, factor=1.5, min_delta=1.0))
    for i in range(6):
        e.on_metrics(metrics(i, latency=0.1))
    assert e.on_metrics(metrics(6, latency=0.9)) == []  # 9x, but only 0.8 ms more
    e2 = engine(trend_rule(kpi="jitter_ms"))
    assert [a for i in range(12) for a in e2.on_metrics(metrics(i, latency=100.0 * i))] == []
    e3 = engine(trend_rule(span_windows=1, baseline_windows=6, min_baseline_windows=6))
    got = [a for i in range(6) for a in e3.on_metrics(metrics(i, latency=10.0 if i < 5 else 100.0))]
    assert got == []  # 5 baseline windows < 6


def test_trend_and_spike_handle_out_of_order_metrics_by_event_time():
    records = [metrics(i, anomalies=0, latency=20.0) for i in range(8)] + [metrics(8, anomalies=6, latency=80.0)]
    in_order = engine(spike_rule(), trend_rule(span_windows=1))
    shuffled = engine(spike_rule(), trend_rule(span_windows=1))
    a = [x.alert_id for r in records for x in in_order.on_metrics(r)]
    order = [3, 0, 1, 2, 5, 4, 6, 7, 8]
    b = [x.alert_id for i in order for x in shuffled.on_metrics(records[i])]
    assert a == b and len(a) == 2


def test_cooldown_class_directly():
    c = CoolDown()
    assert c.allow("k", 0, 1000) and not c.allow("k", 999, 1000) and c.allow("k", 1000, 1000)
    assert c.allow("other", 500, 1000)
