"""Monitor configuration: frozen, validated pydantic models (unknown keys are rejected).

Values come from, in order: the model defaults (which ``conf/monitor.yaml`` documents), the YAML
file (``--config``, default ``conf/monitor.yaml`` when present), then overrides
(``--set section.key=value``, list items by index: ``--set rules.0.cooldown_s=600``, and the
dedicated flags of ``netanomaly monitor``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from netanomaly.config import Frozen, WandbConfig, check_bootstrap_servers, check_topic_name, read_yaml_mapping
from netanomaly.monitor.exceptions import MonitorConfigError

DEFAULT_MONITOR_CONFIG_PATH = Path("conf/monitor.yaml")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RULE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}


_Frozen = Frozen


# ------------------------------------------------------------------------------------------ kafka
class MonitorTopics(_Frozen):
    """Topics read (the job's outputs) and written (alerts, drift, retrain requests)."""

    anomalies: str = Field("kpi-anomalies", description="input: anomalous windows")
    metrics: str = Field("kpi-metrics", description="input: one fleet record per window period")
    features: str = Field("kpi-features", description="input: every window's features (drift)")
    alerts: str = Field("kpi-alerts", description="output: rule hits")
    drift: str = Field("kpi-drift", description="output: PSI per feature per window period")
    retrain: str = Field("kpi-retrain-requests", description="output: retrain requests")

    @field_validator("*")
    @classmethod
    def _topic_name(cls, v: str) -> str:
        return check_topic_name(v)

    @model_validator(mode="after")
    def _distinct(self) -> MonitorTopics:
        names = list(self.model_dump().values())
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"topics must differ (the monitor must not read its own output): {dup} repeated")
        return self


class MonitorKafka(_Frozen):
    """Where the monitor reads and writes. It reads every partition itself (no group rebalancing):
    the rules and drift are fleet-wide, so one monitor must see all records."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topics: MonitorTopics = MonitorTopics()
    group_id: str = Field("netanomaly-monitor", min_length=1, description="consumer group of the committed offsets")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where to start when the group has no committed offset"
    )
    bounded: bool = Field(False, description="stop once the end offsets seen at start are consumed (backfills, tests)")
    partitions: int = Field(1, ge=1, description="partitions of the topics the monitor creates")
    poll_timeout_ms: int = Field(500, ge=10, le=60_000)
    max_poll_records: int = Field(2000, ge=1)
    commit_interval_s: float = Field(5.0, gt=0, description="offsets are committed after the outputs are flushed")

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str) -> str:
        return check_bootstrap_servers(v)


# ------------------------------------------------------------------------------------------ rules
class _RuleBase(_Frozen):
    name: str = Field(description="unique rule name; part of the alert's de-duplication key")
    severity: Severity = "warning"
    cooldown_s: float = Field(3600.0, ge=0, description="event-time seconds: one alert per key within this span")
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _RULE_NAME.match(v):
            raise ValueError(f"rule name {v!r} must be 1-64 letters, digits, '_', '.' or '-'")
        return v


class ScoreOverThresholdRule(_RuleBase):
    """A device window whose score is over threshold x factor (key: rule + device)."""

    type: Literal["score_over_threshold"]
    factor: float = Field(1.0, gt=0, description="multiplies the threshold")
    threshold: float | None = Field(None, gt=0, description="absolute threshold; null: each record's model threshold")


class AnomalySpikeRule(_RuleBase):
    """The fleet's anomalies per window over mean + k x std of the previous windows (key: rule)."""

    type: Literal["anomaly_spike"]
    history_windows: int = Field(36, ge=2, description="N: window periods of the rolling baseline")
    k: float = Field(3.0, ge=0, description="standard deviations over the baseline mean")
    min_count: int = Field(3, ge=1, description="never alert below this many anomalous windows")
    min_history: int = Field(6, ge=1, description="window periods of history needed before the rule can fire")

    @model_validator(mode="after")
    def _history(self) -> AnomalySpikeRule:
        if self.min_history > self.history_windows:
            raise ValueError(f"min_history ({self.min_history}) exceeds history_windows ({self.history_windows})")
        return self


class KpiTrendRule(_RuleBase):
    """A KPI's fleet value averaged over the last span windows vs its average over the baseline
    windows before them (key: rule + KPI)."""

    type: Literal["kpi_trend"]
    kpi: str = Field(description="a KPI of the job's features.kpis, e.g. latency_ms")
    stat: Literal["mean", "max"] = Field("mean", description="kpi_mean or kpi_max of the kpi-metrics records")
    span_windows: int = Field(3, ge=1)
    baseline_windows: int = Field(18, ge=1, description="window periods before the span")
    min_baseline_windows: int = Field(6, ge=1)
    factor: float = Field(1.5, gt=1.0, description="above: span > baseline x factor; below: span < baseline / factor")
    direction: Literal["above", "below"] = "above"
    min_delta: float = Field(0.0, ge=0, description="also require |span - baseline| >= this (KPI units)")

    @field_validator("kpi")
    @classmethod
    def _kpi(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError(f"KPI name {v!r} must be an identifier (letters, digits, _)")
        return v

    @model_validator(mode="after")
    def _baseline(self) -> KpiTrendRule:
        if self.min_baseline_windows > self.baseline_windows:
            raise ValueError(
                f"min_baseline_windows ({self.min_baseline_windows}) exceeds baseline_windows ({self.baseline_windows})"
            )
        return self


RuleConfig = Annotated[ScoreOverThresholdRule | AnomalySpikeRule | KpiTrendRule, Field(discriminator="type")]
RULE_TYPES = ("score_over_threshold", "anomaly_spike", "kpi_trend")


def _default_rules() -> tuple[Any, ...]:
    return (
        ScoreOverThresholdRule(type="score_over_threshold", name="device_score", severity="warning"),
        AnomalySpikeRule(type="anomaly_spike", name="fleet_anomaly_spike", severity="critical"),
        KpiTrendRule(type="kpi_trend", name="latency_trend", kpi="latency_ms", factor=1.5),
        KpiTrendRule(type="kpi_trend", name="packet_loss_trend", kpi="packet_loss_pct", factor=2.0, min_delta=0.1),
    )


# ------------------------------------------------------------------------------------------ drift
class DriftConfig(_Frozen):
    """PSI of the live window features against the model's training baseline."""

    enabled: bool = True
    features: tuple[str, ...] | None = Field(None, description="features to watch; null: all in the baseline")
    horizon_windows: int = Field(144, ge=1, description="H: window periods in the sliding horizon")
    min_periods: int | None = Field(
        None, ge=1, description="window periods elapsed before the first evaluation; null: horizon_windows"
    )
    min_samples: int = Field(50, ge=1, description="device windows in the horizon needed to evaluate")
    threshold: float = Field(0.25, gt=0, description="PSI over this counts as drift")
    consecutive: int = Field(3, ge=1, description="M: evaluations in a row over the threshold before a retrain request")
    retrain_cooldown_s: float = Field(86400.0, ge=0, description="event-time seconds between retrain requests")
    smoothing: float = Field(1e-4, gt=0, lt=0.1, description="added to every bin's share (empty bins)")

    @model_validator(mode="after")
    def _periods(self) -> DriftConfig:
        if self.min_periods is not None and self.min_periods > self.horizon_windows:
            raise ValueError(f"min_periods ({self.min_periods}) exceeds horizon_windows ({self.horizon_windows})")
        return self

    @property
    def periods_needed(self) -> int:
        """Window periods that must have elapsed before the first evaluation."""
        return self.min_periods if self.min_periods is not None else self.horizon_windows


# ------------------------------------------------------------------------------------------ wandb
class MonitorWandb(WandbConfig):
    """The W&B production run: the job's W&B settings (mode, project, entity, api_key; ``mode=None``
    means online with an API key, else offline) plus the reporter's own."""

    run_prefix: str = Field("monitor", min_length=1, description="runs are named <prefix>-<YYYY-MM-DD>")
    rollover: Literal["daily"] | Annotated[int, Field(ge=1, le=24 * 31)] = Field(
        "daily", description="new run per UTC day of event time, or every N hours of event time"
    )
    queue_size: int = Field(1000, ge=1, description="records waiting for W&B; more are dropped and counted")
    table_rows: int = Field(100, ge=1, description="recent anomalies (and alerts) kept for the tables")
    table_every_windows: int = Field(6, ge=1, description="log the tables every N window periods")
    init_timeout_s: float = Field(60.0, gt=0)

    @field_validator("rollover", mode="before")
    @classmethod
    def _rollover(cls, v: Any) -> Any:
        if v == "daily" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 24 * 31):
            return v
        raise ValueError(f"{v!r} is not a rollover: use daily or a number of hours (1..744)")


# ---------------------------------------------------------------------------------------- webhook
class WebhookConfig(_Frozen):
    """Optional Slack-compatible incoming webhook for alerts; ``url: null`` turns it off."""

    url: HttpUrl | None = Field(None, description="e.g. https://hooks.slack.com/services/...; treat it as a secret")
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(3, ge=0, description="extra attempts after a failure")
    backoff_s: float = Field(1.0, ge=0, description="wait before retry n: backoff_s x 2^(n-1)")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra HTTP headers (e.g. Authorization)")
    queue_size: int = Field(100, ge=1, description="alerts waiting for the webhook; more are dropped and counted")
    min_severity: Severity = "warning"
    blocks: bool = Field(True, description="send Slack blocks beside the plain text")


# ---------------------------------------------------------------------------------------- service
class ServiceConfig(_Frozen):
    """Runtime knobs of the consume loop."""

    stats_interval_s: float = Field(60.0, gt=0, description="log the counters this often (wall clock)")
    drain_timeout_s: float = Field(10.0, ge=0, description="on stop: wait this long for W&B and the webhook")
    log_invalid: int = Field(5, ge=0, description="bad records logged per topic (all are counted)")


class MonitorConfig(_Frozen):
    """Everything ``netanomaly monitor`` needs; built once at start and passed down."""

    kafka: MonitorKafka = MonitorKafka()
    model_dir: Path = Field(Path("models/current"), description="model folder: training baseline and model_version")
    rules: tuple[RuleConfig, ...] = Field(default_factory=_default_rules)
    drift: DriftConfig = DriftConfig()
    wandb: MonitorWandb = MonitorWandb()
    webhook: WebhookConfig = WebhookConfig()
    service: ServiceConfig = ServiceConfig()

    @field_validator("rules")
    @classmethod
    def _unique_rule_names(cls, rules: tuple[Any, ...]) -> tuple[Any, ...]:
        names = [r.name for r in rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rule names must be unique; repeated: {dup}")
        return rules


# ----------------------------------------------------------------------------------------- loader
def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = tree
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise MonitorConfigError(
                    f"cannot set {dotted!r}: {p!r} is not an index of the {len(node)} items", field=dotted
                )
            if last:
                node[int(p)] = value
                return
            node = node[int(p)]
        elif isinstance(node, dict):
            if last:
                node[p] = value
                return
            if p not in node:
                if p == "rules":
                    node[p] = [r.model_dump(mode="json") for r in _default_rules()]
                else:
                    node[p] = {}
            node = node[p]
        else:
            raise MonitorConfigError(f"cannot set {dotted!r}: {'.'.join(parts[:i])!r} is not a section", field=dotted)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value``; the value is read as YAML (numbers, lists, booleans, null)."""
    if "=" not in text:
        raise MonitorConfigError(f"override {text!r} must look like section.key=value, e.g. drift.threshold=0.2")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or not all(_IDENT.match(p) or p.isdigit() for p in key.split(".")):
        raise MonitorConfigError(f"override key {key!r} is not a dotted name like drift.threshold or rules.0.factor")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise MonitorConfigError(f"value of {key} is not valid YAML: {e}", field=key) from e
    return key, value


def _loc(loc: tuple[Any, ...]) -> str:
    # discriminated unions add the tag to the location (rules.0.kpi_trend.factor): drop it
    parts = [str(x) for i, x in enumerate(loc) if not (x in RULE_TYPES and i > 0 and isinstance(loc[i - 1], int))]
    return ".".join(parts)


def load_monitor_config(
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | list[str] | tuple[str, ...] | None = None,
) -> MonitorConfig:
    """Build the validated monitor config from defaults, a YAML file and overrides.

    ``path=None`` reads ``conf/monitor.yaml`` when it exists in the working directory, else uses
    the defaults; an explicit path that does not exist is an error. Overrides are a dict of
    dotted keys or ``key=value`` strings; ``None`` values are skipped. Errors raise
    :class:`MonitorConfigError` naming the dotted key (``field``).
    """
    tree = read_yaml_mapping(path, DEFAULT_MONITOR_CONFIG_PATH, MonitorConfigError, "kafka:, rules:, drift:, ...")
    if overrides is None:
        items: list[tuple[str, Any]] = []
    elif isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = [parse_override(o) for o in overrides]
    for key, value in items:
        if value is not None:
            _set_dotted(tree, key, value)
    try:
        return MonitorConfig.model_validate(tree)
    except ValidationError as e:
        errors = e.errors()
        field = _loc(errors[0]["loc"]) or None
        lines = []
        for err in errors:
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (typo?); remove it or check the spelling against conf/monitor.yaml"
            elif err["type"] == "union_tag_invalid":
                msg = f"unknown rule type; use one of {list(RULE_TYPES)}"
            elif err["type"] == "union_tag_not_found":
                msg = f"a rule needs a type: one of {list(RULE_TYPES)}"
            lines.append(f"  {_loc(err['loc']) or '(top level)'}: {msg}")
        raise MonitorConfigError("invalid monitor configuration:\n" + "\n".join(lines), field=field) from None
