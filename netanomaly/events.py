"""Offline events: read JSONL/CSV/Parquet files and validate them by the event contract.

The rules and reasons are those of the Flink job (flink_job/sql.py): a record is rejected with
the first reason that applies, and rejected records are returned, never dropped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from netanomaly.config import FeaturesConfig
from netanomaly.exceptions import EventFileError

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})$")


@dataclass(frozen=True)
class Rejection:
    """Why one record was rejected."""

    reason: str
    field: str | None


def iso_utc(ms: int) -> str:
    """ISO-8601 UTC with milliseconds and Z, e.g. 2026-01-05T00:10:00.000Z."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_timestamp_ms(value: Any) -> int | None:
    """Epoch milliseconds from epoch-ms numbers or ISO-8601 strings with a zone; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        return int(v) if math.isfinite(v) and v > 0 else None
    if isinstance(value, str) and _ISO.match(value.strip()):
        text = value.strip().replace(" ", "T", 1)
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        m = re.match(r"^(.*T\d{2}:\d{2}:\d{2})(\.\d+)?(.*)$", text)
        assert m is not None
        base, frac, zone = m.group(1), (m.group(2) or ""), m.group(3)
        if len(zone) == 5:  # +hhmm
            zone = zone[:3] + ":" + zone[3:]
        try:
            dt = datetime.fromisoformat(base + zone)
        except ValueError:
            return None
        ms = int((frac[1:] + "000")[:3]) if frac else 0
        result = int(dt.timestamp()) * 1000 + ms
        return result if result > 0 else None
    return None


def validate_record(rec: Any, cfg: FeaturesConfig) -> Rejection | None:
    """The first rule ``rec`` (a decoded JSON value) breaks, or None when it is valid."""
    if not isinstance(rec, dict):
        return Rejection("invalid_json", None)
    for k in cfg.kpis:
        v = rec.get(k)
        if isinstance(v, float) and not math.isfinite(v):
            return Rejection("non_finite_kpi", k)
    if rec.get("timestamp") is None:
        return Rejection("missing_field", "timestamp")
    if parse_timestamp_ms(rec["timestamp"]) is None:
        return Rejection("invalid_timestamp", "timestamp")
    dev = rec.get("device_id")
    if dev is None:
        return Rejection("missing_field", "device_id")
    if not isinstance(dev, str) or not dev.strip():
        return Rejection("invalid_device_id", "device_id")
    for k in cfg.kpis:
        v = rec.get(k)
        if v is None:
            return Rejection("missing_field", k)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return Rejection("non_numeric_kpi", k)
        b = cfg.bounds.get(k)
        if b is not None and ((b.min is not None and v < b.min) or (b.max is not None and v > b.max)):
            return Rejection("out_of_range", k)
    return None


def validate_payload(payload: bytes | str | None, cfg: FeaturesConfig) -> Rejection | None:
    """Validate a raw Kafka payload (bytes or text) like the job does."""
    if payload is None:
        return Rejection("empty_payload", None)
    text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else payload
    if not text.strip():
        return Rejection("empty_payload", None)
    try:
        rec = json.loads(text)
    except json.JSONDecodeError:
        return Rejection("invalid_json", None)
    return validate_record(rec, cfg)


def _records_from_file(path: Path) -> list[dict] | pd.DataFrame:
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffix in (".jsonl", ".json", ".jsonl.gz", ".ndjson"):
        out: list[Any] = []
        opener = __import__("gzip").open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    out.append(line)
        return out
    if suffix in (".csv", ".csv.gz"):
        return pd.read_csv(path)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise EventFileError(f"unknown events format {suffix!r}; use .jsonl, .csv or .parquet", path=str(path))


def load_events(path: str | Path, cfg: FeaturesConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and validate an events file.

    Returns ``(valid, rejected)``: ``valid`` has device_id, event_time_ms (int64) and one float
    column per KPI (plus any ``label`` column); ``rejected`` has row, reason, field, record.
    """
    p = Path(path)
    if not p.is_file():
        raise EventFileError("file not found", path=str(p))
    raw = _records_from_file(p)
    if isinstance(raw, pd.DataFrame):
        missing = [c for c in ("timestamp", "device_id", *cfg.kpis) if c not in raw.columns]
        if missing:
            raise EventFileError(
                f"columns {missing} are missing (have {list(raw.columns)}); check features.kpis in the config",
                path=str(p),
            )
        records = [
            {k: (None if isinstance(v, float) and math.isnan(v) and k not in cfg.kpis else v) for k, v in r.items()}
            for r in raw.to_dict(orient="records")
        ]
    else:
        records = raw
    valid_rows: list[dict] = []
    rejected: list[dict] = []
    for i, rec in enumerate(records):
        why = validate_record(rec, cfg)
        if why is not None:
            rejected.append({"row": i, "reason": why.reason, "field": why.field, "record": rec})
            continue
        row = {"device_id": rec["device_id"], "event_time_ms": parse_timestamp_ms(rec["timestamp"])}
        row.update({k: float(rec[k]) for k in cfg.kpis})
        if "label" in rec:
            row["label"] = int(rec["label"])
        valid_rows.append(row)
    valid = pd.DataFrame(valid_rows, columns=["device_id", "event_time_ms", *cfg.kpis])
    if valid_rows and "label" in valid_rows[0]:
        valid["label"] = [r.get("label", 0) for r in valid_rows]
    valid["event_time_ms"] = valid["event_time_ms"].astype("int64")
    return valid, pd.DataFrame(rejected, columns=["row", "reason", "field", "record"])
