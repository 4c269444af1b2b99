"""A varied set of malformed KPI messages with the reason and field the job must give each."""

from __future__ import annotations

import json

VALID_EVENT = {
    "timestamp": 1767571200000,
    "device_id": "rtr-1",
    "latency_ms": 12.5,
    "throughput_mbps": 420.0,
    "packet_loss_pct": 0.1,
    "jitter_ms": 1.5,
}


def _with(**kw) -> str:
    return json.dumps({**VALID_EVENT, **kw})


def _without(field: str) -> str:
    return json.dumps({k: v for k, v in VALID_EVENT.items() if k != field})


# (raw payload, reason, field)
MALFORMED: list[tuple[str, str, str | None]] = [
    ("", "empty_payload", None),
    ("this is not json", "invalid_json", None),
    ('{"timestamp": 1767571200000, "device_id": "rtr-1",', "invalid_json", None),
    ("[1, 2, 3]", "invalid_json", None),
    (_without("timestamp"), "missing_field", "timestamp"),
    (_with(timestamp="2026-01-05T00:00:00"), "invalid_timestamp", "timestamp"),
    (_with(timestamp="soon"), "invalid_timestamp", "timestamp"),
    (_without("device_id"), "missing_field", "device_id"),
    (_with(device_id=""), "invalid_device_id", "device_id"),
    (_with(device_id=17), "invalid_device_id", "device_id"),
    (_without("jitter_ms"), "missing_field", "jitter_ms"),
    (_with(latency_ms=None), "missing_field", "latency_ms"),
    (_with(latency_ms="12.5"), "non_numeric_kpi", "latency_ms"),
    (_with(throughput_mbps="fast"), "non_numeric_kpi", "throughput_mbps"),
    (_with(packet_loss_pct=True), "non_numeric_kpi", "packet_loss_pct"),
    (_with(latency_ms=float("nan")), "non_finite_kpi", "latency_ms"),
    (_with(jitter_ms=float("inf")), "non_finite_kpi", "jitter_ms"),
    (_with(latency_ms=-3.0), "out_of_range", "latency_ms"),
    (_with(packet_loss_pct=100.5), "out_of_range", "packet_loss_pct"),
]
