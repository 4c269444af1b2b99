"""Event validation (offline path): every malformed kind gets its reason; files of every format load."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from netanomaly.config import FeaturesConfig
from netanomaly.events import iso_utc, load_events, parse_timestamp_ms, validate_payload
from tests.malformed import MALFORMED, VALID_EVENT

CFG = FeaturesConfig()


@pytest.mark.parametrize(("payload", "reason", "field"), MALFORMED)
def test_malformed_payloads_get_their_reason(payload, reason, field):
    why = validate_payload(payload, CFG)
    assert why is not None, payload
    assert (why.reason, why.field) == (reason, field)


def test_valid_payload_passes_and_extra_fields_are_ignored():
    assert validate_payload(json.dumps({**VALID_EVENT, "site": "ams-1", "vendor": {"x": 1}}), CFG) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1767571200000, 1767571200000),
        ("2026-01-05T00:00:00Z", 1767571200000),
        ("2026-01-05T02:00:00.250+02:00", 1767571200250),
        ("2026-01-04T19:00:00-0500", 1767571200000),
        ("2026-01-05 00:00:00.5Z", 1767571200500),
        ("2026-01-05T00:00:00", None),  # no zone
        ("yesterday", None),
        (True, None),
        (-5, None),
    ],
)
def test_timestamps(value, expected):
    assert parse_timestamp_ms(value) == expected


def test_iso_round_trip():
    assert iso_utc(1767571200123) == "2026-01-05T00:00:00.123Z"
    assert parse_timestamp_ms(iso_utc(1767571200123)) == 1767571200123


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_load_events_formats(tmp_path: Path, suffix: str):
    rows = [{**VALID_EVENT, "timestamp": 1767571200000 + i * 1000, "latency_ms": float(i)} for i in range(5)]
    rows.append({**VALID_EVENT, "timestamp": 1767571200000, "packet_loss_pct": 140.0})
    p = tmp_path / f"ev{suffix}"
    df = pd.DataFrame(rows)
    if suffix == ".jsonl":
        p.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    elif suffix == ".csv":
        df.to_csv(p, index=False)
    else:
        df.to_parquet(p)
    valid, rejected = load_events(p, CFG)
    assert len(valid) == 5
    assert valid["latency_ms"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert valid["event_time_ms"].dtype == "int64"
    reasons = sorted(rejected["reason"])
    assert reasons == (["invalid_json", "out_of_range"] if suffix == ".jsonl" else ["out_of_range"])


def test_csv_without_a_kpi_column_says_which(tmp_path: Path):
    p = tmp_path / "ev.csv"
    pd.DataFrame([{k: v for k, v in VALID_EVENT.items() if k != "jitter_ms"}]).to_csv(p, index=False)
    with pytest.raises(Exception, match="jitter_ms"):
        load_events(p, CFG)
