"""Flink SQL text of the job, generated from the config and the feature spec.

Everything per event stays in the JVM: JSON parsing, validation with a machine-readable reason,
event time, lateness, and the window statistics. Python is entered once per batch of windows
(the scoring UDF). Identifiers are generated from validated config names only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model.features import FeatureSpec
from netanomaly.config import JobConfig

# ISO-8601 with a zone: date, time, optional fraction, Z or +hh:mm / +hhmm.
ISO_RE = r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})$"
UTC_FORMAT = "yyyy-MM-dd''T''HH:mm:ss.SSS''Z''"

# Dead-letter reasons (stable, documented in conf/schemas/kpi-dlq.schema.json).
REASONS = (
    "empty_payload",
    "invalid_json",
    "missing_field",
    "invalid_timestamp",
    "invalid_device_id",
    "non_numeric_kpi",
    "non_finite_kpi",
    "out_of_range",
    "late",
)

MAX_DOUBLE = "1.7976931348623157E308"


def lit(s: str) -> str:
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def interval(seconds: int) -> str:
    """A SQL day-time interval of ``seconds`` (any size; plain SECOND allows only 2 digits)."""
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    return f"INTERVAL '{d} {h:02d}:{m:02d}:{sec:02d}' DAY TO SECOND"


def _json_path(field: str) -> str:
    return lit(f"$.{field}")


def _wrapped(field: str) -> str:
    """The field as JSON text wrapped in an array: '[12.5]', '["x"]', NULL when absent."""
    return f"JSON_QUERY(payload, {_json_path(field)} WITH CONDITIONAL ARRAY WRAPPER)"


_NUMBER_RE = lit(r"^\[-?[0-9]")
_STRING_RE = lit(r'^\["')


def _is_number(field: str) -> str:
    return f"REGEXP({_wrapped(field)}, {_NUMBER_RE})"


def _is_string(field: str) -> str:
    return f"REGEXP({_wrapped(field)}, {_STRING_RE})"


def _exists(field: str) -> str:
    return f"JSON_EXISTS(payload, {_json_path(field)})"


def _value(field: str) -> str:
    return f"JSON_VALUE(payload, {_json_path(field)})"


def event_ms_expr() -> str:
    """BIGINT epoch milliseconds of the event's ``timestamp`` or NULL when it cannot be read.

    Accepts epoch milliseconds (a JSON number) or an ISO-8601 string with a zone; the session
    time zone must be UTC (the pipeline sets it).
    """
    s = _value("timestamp")
    g = [f"REGEXP_EXTRACT({s}, {lit(ISO_RE)}, {i})" for i in range(1, 5)]
    secs = f"UNIX_TIMESTAMP(CONCAT({g[0]}, ' ', {g[1]}), 'yyyy-MM-dd HH:mm:ss')"
    frac = f"CAST(SUBSTRING(CONCAT(SUBSTRING(COALESCE(NULLIF({g[2]}, ''), '.'), 2), '000'), 1, 3) AS BIGINT)"
    zone = g[3]
    offset_min = (
        f"(CASE WHEN {zone} = 'Z' THEN 0 ELSE "
        f"(CASE WHEN SUBSTRING({zone}, 1, 1) = '-' THEN -1 ELSE 1 END) * "
        f"(CAST(SUBSTRING({zone}, 2, 2) AS BIGINT) * 60 "
        f"+ CAST(SUBSTRING({zone}, CHAR_LENGTH({zone}) - 1, 2) AS BIGINT)) END)"
    )
    iso_ms = f"({secs} * 1000 + {frac} - {offset_min} * 60000)"
    num_ms = f"TRY_CAST(TRY_CAST({s} AS DOUBLE) AS BIGINT)"
    return (
        f"(CASE WHEN {_is_number('timestamp')} THEN {num_ms} "
        f"WHEN {_is_string('timestamp')} AND REGEXP({s}, {lit(ISO_RE)}) THEN {iso_ms} ELSE CAST(NULL AS BIGINT) END)"
    )


@dataclass(frozen=True)
class Check:
    """One validation rule: when ``condition`` holds, the event is dead-lettered."""

    condition: str
    reason: str
    field: str | None


def validation_checks(cfg: JobConfig) -> list[Check]:
    """The ordered rules; the first that holds gives the reason."""
    f = cfg.features
    checks = [
        Check("payload IS NULL OR CHAR_LENGTH(TRIM(payload)) = 0", "empty_payload", None),
    ]
    # NaN / Infinity are not JSON, so name the KPI before the generic JSON check.
    for k in f.kpis:
        pattern = rf'"{k}"\s*:\s*[-+]?(NaN|Infinity)'
        checks.append(Check(f"REGEXP(payload, {lit(pattern)})", "non_finite_kpi", k))
    checks += [
        Check("NOT (payload IS JSON OBJECT)", "invalid_json", None),
        Check(f"NOT {_exists('timestamp')} OR {_wrapped('timestamp')} = '[null]'", "missing_field", "timestamp"),
        Check("event_ms IS NULL OR event_ms <= 0", "invalid_timestamp", "timestamp"),
        Check(f"NOT {_exists('device_id')} OR {_wrapped('device_id')} = '[null]'", "missing_field", "device_id"),
        Check(
            f"NOT {_is_string('device_id')} OR CHAR_LENGTH(TRIM({_value('device_id')})) = 0",
            "invalid_device_id",
            "device_id",
        ),
    ]
    for k in f.kpis:
        v = f"TRY_CAST({_value(k)} AS DOUBLE)"
        checks.append(Check(f"NOT {_exists(k)} OR {_wrapped(k)} = '[null]'", "missing_field", k))
        checks.append(Check(f"NOT {_is_number(k)} OR {v} IS NULL", "non_numeric_kpi", k))
        checks.append(Check(f"ABS({v}) > {MAX_DOUBLE}", "non_finite_kpi", k))
        b = f.bounds.get(k)
        if b is not None:
            parts = []
            if b.min is not None:
                parts.append(f"{v} < {b.min!r}")
            if b.max is not None:
                parts.append(f"{v} > {b.max!r}")
            if parts:
                checks.append(Check(" OR ".join(parts), "out_of_range", k))
    return checks


def _case(checks: list[Check], attr: str) -> str:
    whens = []
    for c in checks:
        val = getattr(c, attr)
        whens.append(f"WHEN {c.condition} THEN {lit(val) if val is not None else 'CAST(NULL AS STRING)'}")
    return "CASE " + " ".join(whens) + " ELSE CAST(NULL AS STRING) END"


def source_ddl(cfg: JobConfig) -> str:
    """The raw Kafka source: payload as text, Kafka metadata, event time and watermark."""
    k = cfg.kafka
    opts = {
        "connector": "kafka",
        "topic": k.topics.events,
        "properties.bootstrap.servers": k.bootstrap_servers,
        "properties.group.id": k.group_id,
        "scan.startup.mode": k.startup_mode,
        "format": "raw",
        "raw.charset": "UTF-8",
    }
    if k.bounded:
        opts["scan.bounded.mode"] = "latest-offset"
    if cfg.stream.idle_timeout_seconds > 0:
        opts["scan.watermark.idle-timeout"] = f"{cfg.stream.idle_timeout_seconds}s"
    with_ = ",\n  ".join(f"{lit(a)} = {lit(b)}" for a, b in opts.items())
    return f"""CREATE TEMPORARY TABLE kpi_events_raw (
  payload STRING,
  kafka_topic STRING METADATA FROM 'topic' VIRTUAL,
  kafka_partition INT METADATA FROM 'partition' VIRTUAL,
  kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL,
  kafka_timestamp TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
  event_ms AS {event_ms_expr()},
  event_time AS TO_TIMESTAMP_LTZ(GREATEST(COALESCE({event_ms_expr()}, 0), 0), 3),
  WATERMARK FOR event_time AS event_time - {interval(cfg.stream.watermark_delay_seconds)}
) WITH (
  {with_}
)"""


def routed_view(cfg: JobConfig) -> str:
    """Every event with its parsed fields and ``reason`` (NULL when valid and on time)."""
    checks = validation_checks(cfg)
    w_ms = cfg.features.window_seconds * 1000
    kpi_cols = ",\n  ".join(f"TRY_CAST({_value(k)} AS DOUBLE) AS {k}" for k in cfg.features.kpis)
    window_end_ms = f"(event_ms - MOD(event_ms, {w_ms}) + {w_ms})"
    late = (
        f"CURRENT_WATERMARK(event_time) IS NOT NULL AND "
        f"TO_TIMESTAMP_LTZ({window_end_ms} - 1, 3) <= CURRENT_WATERMARK(event_time)"
    )
    return f"""CREATE TEMPORARY VIEW kpi_events_routed_sql AS
SELECT
  payload, kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, event_time, event_ms,
  {_value("device_id")} AS device_id,
  {kpi_cols},
  COALESCE({_case(checks, "reason")}, CASE WHEN {late} THEN 'late' END) AS reason,
  COALESCE({_case(checks, "field")}, CASE WHEN {late} THEN 'timestamp' END) AS field
FROM kpi_events_raw"""


def dlq_ddl(cfg: JobConfig) -> str:
    """Dead-letter sink: the raw payload with the reason and where it came from."""
    return f"""CREATE TEMPORARY TABLE kpi_dlq (
  reason STRING,
  field STRING,
  payload STRING,
  source_topic STRING,
  source_partition INT,
  source_offset BIGINT,
  kafka_timestamp STRING,
  event_time STRING
) WITH ({_sink_options(cfg, cfg.kafka.topics.dlq)})"""


def _sink_options(cfg: JobConfig, topic: str, key: str | None = None) -> str:
    opts = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": cfg.kafka.bootstrap_servers,
        "format": "json",
        "json.encode.decimal-as-plain-number": "true",
        "sink.delivery-guarantee": "at-least-once",
    }
    if key:
        opts.update({"key.format": "raw", "key.fields": key, "value.fields-include": "ALL"})
    return ",\n  ".join(f"{lit(a)} = {lit(b)}" for a, b in opts.items())


def _utc(col: str) -> str:
    return f"DATE_FORMAT({col}, '{UTC_FORMAT}')"


def dlq_insert() -> str:
    """Route every rejected event to the dead-letter topic."""
    return f"""INSERT INTO kpi_dlq
SELECT count_dead_letter(reason), field, payload, kafka_topic, kafka_partition, kafka_offset,
  {_utc("CAST(kafka_timestamp AS TIMESTAMP(3))")},
  CASE WHEN event_ms IS NULL OR event_ms <= 0 THEN CAST(NULL AS STRING)
    ELSE {_utc("CAST(event_time AS TIMESTAMP(3))")} END
FROM kpi_events_routed
WHERE reason IS NOT NULL"""


def _std(k: str) -> str:
    return f"SQRT(GREATEST(AVG({k} * {k}) - AVG({k}) * AVG({k}), 0.0))"


def features_view(cfg: JobConfig, spec: FeatureSpec) -> str:
    """Per-device tumbling-window statistics in the order of ``spec.feature_names``."""
    agg = {"mean": "AVG({k})", "min": "MIN({k})", "max": "MAX({k})"}
    cols = []
    if spec.include_count:
        cols.append("CAST(COUNT(*) AS DOUBLE) AS event_count")
    for k in spec.kpis:
        for s in spec.stats:
            expr = _std(k) if s == "std" else agg[s].format(k=k)
            cols.append(f"{expr} AS {k}__{s}")
    if not spec.include_count:
        cols.append("CAST(COUNT(*) AS DOUBLE) AS event_count")
    select = ",\n  ".join(cols)
    return f"""CREATE TEMPORARY VIEW window_features AS
SELECT device_id, window_start, window_end, window_time,
  {select}
FROM TABLE(TUMBLE(TABLE kpi_events_valid, DESCRIPTOR(event_time), {interval(spec.window_seconds)}))
GROUP BY device_id, window_start, window_end, window_time"""


def valid_view(cfg: JobConfig) -> str:
    """Events that passed validation and are on time."""
    return f"""CREATE TEMPORARY VIEW kpi_events_valid AS
SELECT device_id, rowtime AS event_time, {", ".join(cfg.features.kpis)}
FROM kpi_events_routed
WHERE reason IS NULL"""


def lagged_name(feature: str, lag: int) -> str:
    """Column of ``feature`` ``lag`` windows back (sequence models)."""
    return f"{feature}__lag{lag}"


def sequence_view(spec: FeatureSpec, length: int) -> str:
    """The last ``length`` windows of each device side by side (keyed state in Flink, via LAG).

    A device's first windows are padded with its first window, as model.detectors.build_sequences does.
    """
    cols = []
    for lag in range(length - 1, 0, -1):
        for f in spec.feature_names:
            chain = ", ".join(f"LAG({f}, {k}) OVER w" for k in range(lag, 0, -1))
            cols.append(f"COALESCE({chain}, {f}) AS {lagged_name(f, lag)}")
    select = ",\n  ".join(cols)
    return f"""CREATE TEMPORARY VIEW window_sequences AS
SELECT *,
  {select}
FROM window_features
WINDOW w AS (PARTITION BY device_id ORDER BY window_time)"""


def model_inputs(spec: FeatureSpec, length: int) -> list[str]:
    """UDF arguments: oldest window first, each in feature-spec order."""
    cols = [lagged_name(f, lag) for lag in range(length - 1, 0, -1) for f in spec.feature_names]
    return cols + list(spec.feature_names)


def scored_view(spec: FeatureSpec, top_k: int, sequence_length: int = 1, udf_name: str = "score_windows") -> str:
    """Window features with the model's verdict (one UDF call per window, batched by Arrow)."""
    args = ", ".join(model_inputs(spec, sequence_length))
    source = "window_sequences" if sequence_length > 1 else "window_features"
    others = ", ".join(n for n in spec.feature_names if n != "event_count")
    tops = ", ".join(f"s.top{i}_feature, s.top{i}_contribution" for i in range(1, top_k + 1))
    return f"""CREATE TEMPORARY VIEW scored_windows_sql AS
SELECT device_id, window_start, window_end, window_time, event_count, {others},
  s.score, s.threshold, s.is_anomaly, s.model_version, {tops}
FROM (SELECT *, {udf_name}({args}) AS s FROM {source})"""


def feature_store_ddl(cfg: JobConfig, spec: FeatureSpec) -> str:
    """The feature store: every scored window as Parquet, partitioned by the window's UTC date."""
    assert cfg.stream.feature_store is not None
    cols = ",\n  ".join(f"{n} DOUBLE" for n in spec.feature_names)
    path = Path(cfg.stream.feature_store).expanduser().resolve().as_uri()
    return f"""CREATE TEMPORARY TABLE feature_store (
  device_id STRING,
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  {cols},
  score DOUBLE,
  threshold DOUBLE,
  is_anomaly BOOLEAN,
  model_version STRING,
  dt STRING
) PARTITIONED BY (dt) WITH (
  'connector' = 'filesystem',
  'path' = {lit(path)},
  'format' = 'parquet',
  'sink.partition-commit.policy.kind' = 'success-file'
)"""


def feature_store_insert(spec: FeatureSpec) -> str:
    """Every scored window into the feature store."""
    return f"""INSERT INTO feature_store
SELECT device_id, window_start, window_end, {", ".join(spec.feature_names)},
  score, threshold, is_anomaly, model_version, DATE_FORMAT(window_start, 'yyyy-MM-dd')
FROM scored_windows"""


def anomalies_ddl(cfg: JobConfig) -> str:
    """kpi-anomalies sink (schema: conf/schemas/kpi-anomalies.schema.json)."""
    kpi_map = "MAP<STRING, DOUBLE>"
    return f"""CREATE TEMPORARY TABLE kpi_anomalies (
  device_id STRING,
  window_start STRING,
  window_end STRING,
  score DOUBLE,
  threshold DOUBLE,
  is_anomaly BOOLEAN,
  model_version STRING,
  top_features ARRAY<ROW<feature STRING, contribution DOUBLE>>,
  event_count BIGINT,
  kpi_mean {kpi_map}
) WITH ({_sink_options(cfg, cfg.kafka.topics.anomalies, key="device_id")})"""


def _kpi_map(spec: FeatureSpec, stat: str, agg: str | None = None) -> str:
    entries = []
    for k in spec.kpis:
        col = f"{k}__{stat}" if stat in spec.stats else f"{k}__{spec.stats[0]}"
        entries.append(f"{lit(k)}, {agg}({col})" if agg else f"{lit(k)}, {col}")
    return "MAP[" + ", ".join(entries) + "]"


def anomalies_insert(spec: FeatureSpec, top_k: int) -> str:
    """Anomalous windows with their top contributing features."""
    tops = ", ".join(
        f"CAST(ROW(top{i}_feature, top{i}_contribution) AS ROW<feature STRING, contribution DOUBLE>)"
        for i in range(1, top_k + 1)
    )
    return f"""INSERT INTO kpi_anomalies
SELECT device_id, {_utc("window_start")}, {_utc("window_end")}, score, threshold, is_anomaly, model_version,
  ARRAY[{tops}], CAST(event_count AS BIGINT), {_kpi_map(spec, "mean")}
FROM scored_windows
WHERE is_anomaly"""


def metrics_ddl(cfg: JobConfig) -> str:
    """kpi-metrics sink: one fleet record per window."""
    return f"""CREATE TEMPORARY TABLE kpi_metrics (
  window_start STRING,
  window_end STRING,
  devices BIGINT,
  windows BIGINT,
  events BIGINT,
  anomalies BIGINT,
  anomaly_rate DOUBLE,
  mean_score DOUBLE,
  max_score DOUBLE,
  threshold DOUBLE,
  model_version STRING,
  kpi_mean MAP<STRING, DOUBLE>,
  kpi_max MAP<STRING, DOUBLE>
) WITH ({_sink_options(cfg, cfg.kafka.topics.metrics)})"""


def fleet_view(spec: FeatureSpec) -> str:
    """Scored windows re-timed by their window time, for the fleet aggregate."""
    cols = ", ".join(n for n in spec.feature_names if n != "event_count")
    return f"""CREATE TEMPORARY VIEW scored_for_fleet AS
SELECT rowtime, device_id, event_count, score, threshold, is_anomaly, model_version, {cols}
FROM scored_windows"""


def metrics_insert(spec: FeatureSpec) -> str:
    """Fleet aggregate of the scored windows of each window period."""
    return f"""INSERT INTO kpi_metrics
SELECT {_utc("window_start")}, {_utc("window_end")},
  COUNT(DISTINCT device_id), COUNT(*), CAST(SUM(event_count) AS BIGINT),
  SUM(CASE WHEN is_anomaly THEN 1 ELSE 0 END),
  CAST(SUM(CASE WHEN is_anomaly THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*),
  AVG(score), MAX(score), MAX(threshold), MAX(model_version),
  {_kpi_map(spec, "mean", "AVG")},
  {_kpi_map(spec, "max", "MAX")}
FROM TABLE(TUMBLE(TABLE scored_for_fleet, DESCRIPTOR(rowtime), {interval(spec.window_seconds)}))
GROUP BY window_start, window_end"""


def features_ddl(cfg: JobConfig, spec: FeatureSpec) -> str:
    """Optional sink of every window's features (for parity checks and downstream stores)."""
    cols = ",\n  ".join(f"{n} DOUBLE" for n in spec.feature_names)
    return f"""CREATE TEMPORARY TABLE kpi_features (
  device_id STRING,
  window_start STRING,
  window_end STRING,
  {cols}
) WITH ({_sink_options(cfg, cfg.kafka.topics.features, key="device_id")})"""


def features_insert(spec: FeatureSpec) -> str:
    """Every window's feature vector."""
    return f"""INSERT INTO kpi_features
SELECT device_id, {_utc("window_start")}, {_utc("window_end")}, {", ".join(spec.feature_names)}
FROM window_features"""
