"""Event-time helpers: the job's ISO-8601 UTC strings <-> epoch milliseconds (no pandas)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from netanomaly.monitor.exceptions import InvalidRecord

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_ms(value: Any, field: str = "timestamp") -> int:
    """ISO-8601 with a zone (``...Z`` or an offset) or epoch milliseconds -> epoch milliseconds."""
    if isinstance(value, bool):
        raise InvalidRecord(f"{field} must be an ISO-8601 time, got {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if not isinstance(value, str):
        raise InvalidRecord(f"{field} must be an ISO-8601 time, got {type(value).__name__}")
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecord(f"{field} {value!r} is not ISO-8601") from None
    if t.tzinfo is None:
        raise InvalidRecord(f"{field} {value!r} has no time zone")
    return (t - _EPOCH) // dt.timedelta(milliseconds=1)


def iso_ms(ms: int) -> str:
    """Epoch milliseconds -> ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (the job's format)."""
    t = _EPOCH + dt.timedelta(milliseconds=int(ms))
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def utc_now_iso() -> str:
    """Wall-clock time (processing time) as ISO-8601 UTC; used only for ``created_at``."""
    return iso_ms(int(dt.datetime.now(dt.UTC).timestamp() * 1000))


def window_of(record: dict[str, Any]) -> tuple[int, int]:
    """``(window_start_ms, window_end_ms)`` of a job record; InvalidRecord when absent or reversed."""
    if not isinstance(record, dict):
        raise InvalidRecord(f"a record must be a JSON object, got {type(record).__name__}")
    if "window_start" not in record or "window_end" not in record:
        raise InvalidRecord("record lacks window_start / window_end")
    start = parse_ms(record["window_start"], "window_start")
    end = parse_ms(record["window_end"], "window_end")
    if end <= start:
        raise InvalidRecord(f"window_end {record['window_end']!r} is not after window_start")
    return start, end
