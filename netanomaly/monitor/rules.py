"""Alert rules over the job's output records: pure logic driven by event time.

Every decision depends only on the records given (their window times, scores and counts),
never on the wall clock, so the same records always give the same alerts. The only
processing-time value is the ``created_at`` of an alert, from an injectable clock.

Rules (configured in the ``rules`` list of the monitor config):

* ``score_over_threshold`` (kpi-anomalies): a device window's ``score`` > threshold x factor;
  key ``<rule>:<device_id>``.
* ``anomaly_spike`` (kpi-metrics): the fleet's ``anomalies`` in a window period over
  ``mean + k x std`` of the previous ``history_windows`` periods (population std) and at least
  ``min_count``; key ``<rule>:fleet``.
* ``kpi_trend`` (kpi-metrics): the mean of ``kpi_<stat>[kpi]`` over the last ``span_windows``
  periods against its mean over the ``baseline_windows`` periods before them, by ``factor``
  (above or below); key ``<rule>:<kpi>``.

De-duplication: an alert of key K at window start t is suppressed when K already alerted at a
window start t' with |t - t'| < cooldown_s (and a window never alerts twice for one key), so
within any cool-down span a key alerts at most once, even when records arrive out of order.
``alert_id`` is a hash of key and window: a replay of the same records gives the same ids.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from netanomaly.monitor.config import AnomalySpikeRule, KpiTrendRule, ScoreOverThresholdRule
from netanomaly.monitor.exceptions import InvalidRecord
from netanomaly.monitor.timeutil import iso_ms, parse_ms, utc_now_iso, window_of

log = logging.getLogger(__name__)

FLEET = "fleet"
_KEEP_FIRED = 8  # alert times remembered per key (enough for any realistic reordering)


@dataclass(frozen=True)
class Alert:
    """One rule hit; :meth:`to_record` is the kpi-alerts JSON (conf/schemas/kpi-alerts.schema.json)."""

    alert_id: str
    rule: str
    rule_type: str
    severity: str
    key: str
    device_id: str | None
    kpi: str | None
    window_start: str
    window_end: str
    value: float
    threshold: float | None
    baseline: float | None
    message: str
    model_version: str | None
    created_at: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The JSON object written to kpi-alerts."""
        return asdict(self)

    @property
    def window_start_ms(self) -> int:
        """Event time of the alert (its window's start) in epoch milliseconds."""
        return parse_ms(self.window_start)


def alert_id(key: str, window_start_ms: int) -> str:
    """Deterministic id of the alert of ``key`` for the window starting at ``window_start_ms``."""
    return hashlib.sha256(f"{key}|{window_start_ms}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class _Hit:
    key: str
    device_id: str | None
    kpi: str | None
    value: float
    threshold: float | None
    baseline: float | None
    message: str
    details: dict[str, Any]


def _num(rec: dict[str, Any], name: str) -> float:
    v = rec.get(name)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise InvalidRecord(f"{name} must be a finite number, got {v!r}")
    return float(v)


def top_features_text(tops: Any) -> str:
    """``latency_ms__max 61%, jitter_ms__std 20%`` from a record's top_features (bad entries skipped)."""
    if not isinstance(tops, list):
        return ""
    parts = []
    for t in tops:
        c = t.get("contribution") if isinstance(t, dict) else None
        if isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c):
            parts.append(f"{t.get('feature')} {100 * c:.0f}%")
    return ", ".join(parts)


def _short(ms: int) -> str:
    return iso_ms(ms)[:16].replace("T", " ") + "Z"


def _span(start_ms: int, end_ms: int) -> str:
    a, b = _short(start_ms), _short(end_ms)
    return f"{a}-{b[11:]}" if a[:10] == b[:10] else f"{a} - {b}"


class CoolDown:
    """Per-key event-time cool-down: at most one alert per key within ``cooldown_ms`` of another."""

    def __init__(self) -> None:
        self._fired: dict[str, list[int]] = {}

    def allow(self, key: str, t_ms: int, cooldown_ms: int) -> bool:
        """True (and remembered) when ``key`` may alert at ``t_ms``; False inside a cool-down."""
        times = self._fired.setdefault(key, [])
        i = bisect.bisect_left(times, t_ms)
        for j in (i - 1, i):
            if 0 <= j < len(times) and (times[j] == t_ms or abs(times[j] - t_ms) < cooldown_ms):
                return False
        times.insert(i, t_ms)
        if len(times) > _KEEP_FIRED:
            del times[0]
        return True


class _Series:
    """Values per window period (by window start), in event-time order whatever the arrival order."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.starts: list[int] = []
        self.values: dict[int, float] = {}

    def put(self, t: int, v: float) -> None:
        if t not in self.values:
            bisect.insort(self.starts, t)
        self.values[t] = v
        while len(self.starts) > self.keep:
            del self.values[self.starts.pop(0)]

    def before(self, t: int, n: int) -> list[float]:
        """Values of the (at most) ``n`` periods starting before ``t``, oldest first."""
        i = bisect.bisect_left(self.starts, t)
        return [self.values[s] for s in self.starts[max(0, i - n) : i]]


class _ScoreRule:
    def __init__(self, cfg: ScoreOverThresholdRule) -> None:
        self.cfg = cfg

    def on_anomaly(self, rec: dict[str, Any], start: int, end: int) -> list[_Hit]:
        device = rec.get("device_id")
        if not isinstance(device, str) or not device:
            raise InvalidRecord(f"device_id must be a non-empty string, got {device!r}")
        score = _num(rec, "score")
        base = self.cfg.threshold if self.cfg.threshold is not None else _num(rec, "threshold")
        limit = base * self.cfg.factor
        if not score > limit:
            return []
        tops = rec.get("top_features") or []
        top_text = top_features_text(tops)
        factor = "" if self.cfg.factor == 1.0 else f" x {self.cfg.factor:g}"
        msg = f"{device}: score {score:.4g} over {limit:.4g} (threshold {base:.4g}{factor}) in {_span(start, end)}"
        if top_text:
            msg += f"; top features: {top_text}"
        details = {"top_features": tops, "event_count": rec.get("event_count"), "kpi_mean": rec.get("kpi_mean")}
        return [_Hit(f"{self.cfg.name}:{device}", device, None, score, limit, None, msg, details)]

    def on_metrics(self, rec: dict[str, Any], start: int, end: int) -> list[_Hit]:
        return []


class _SpikeRule:
    def __init__(self, cfg: AnomalySpikeRule) -> None:
        self.cfg = cfg
        self.history = _Series(keep=4 * cfg.history_windows)

    def on_anomaly(self, rec: dict[str, Any], start: int, end: int) -> list[_Hit]:
        return []

    def on_metrics(self, rec: dict[str, Any], start: int, end: int) -> list[_Hit]:
        c = self.cfg
        count = _num(rec, "anomalies")
        prev = self.history.before(start, c.history_windows)
        self.history.put(start, count)
        if len(prev) < c.min_history:
            return []
        mean = sum(prev) / len(prev)
        std = math.sqrt(sum((x - mean) ** 2 for x in prev) / len(prev))
        limit = mean + c.k * std
        if not (count > limit and count >= c.min_count):
            return []
        windows = rec.get("windows")
        of = f" of {windows}" if isinstance(windows, int) else ""
        msg = (
            f"fleet: {count:.0f} anomalous windows{of} in {_span(start, end)}, over the baseline "
            f"{mean:.2f} + {c.k:g} x {std:.2f} = {limit:.2f} of the last {len(prev)} windows"
        )
        details = {
            "windows": windows,
            "anomaly_rate": rec.get("anomaly_rate"),
            "history_mean": mean,
            "history_std": std,
            "history_windows": len(prev),
        }
        return [_Hit(f"{c.name}:{FLEET}", None, None, count, limit, mean, msg, details)]


class _TrendRule:
    def __init__(self, cfg: KpiTrendRule) -> None:
        self.cfg = cfg
        self.history = _Series(keep=cfg.span_windows + cfg.baseline_windows + 8)
        self.missing = 0

    def on_anomaly(self, rec: dict[str, Any], start: int, end: int) -> list[_Hit]:
        return []

    def on_metrics(self, rec: dict[str, Any], start: int, end: int) -> list[_Hit]:
        c = self.cfg
        values = rec.get(f"kpi_{c.stat}")
        if not isinstance(values, dict):
            raise InvalidRecord(f"kpi_{c.stat} must be an object of KPI values, got {type(values).__name__}")
        v = values.get(c.kpi)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            if self.missing == 0:
                log.warning("rule %s: kpi_%s has no finite %r; the rule skips such windows", c.name, c.stat, c.kpi)
            self.missing += 1
            return []
        self.history.put(start, float(v))
        # the span ends with this window; the baseline is the periods before the span
        span = [*self.history.before(start, c.span_windows - 1), float(v)]
        if len(span) < c.span_windows:
            return []
        first_of_span = self.history.starts[bisect.bisect_left(self.history.starts, start) - (c.span_windows - 1)]
        base = self.history.before(first_of_span, c.baseline_windows)
        if len(base) < c.min_baseline_windows:
            return []
        value = sum(span) / len(span)
        baseline = sum(base) / len(base)
        if c.direction == "above":
            limit = baseline * c.factor
            hit = value > limit and value - baseline >= c.min_delta
            word = "over"
        else:
            limit = baseline / c.factor
            hit = value < limit and baseline - value >= c.min_delta
            word = "under"
        if not hit:
            return []
        ratio = value / baseline if baseline else math.inf
        msg = (
            f"{c.kpi} ({c.stat}) over the last {len(span)} windows up to {_short(end)} is {value:.4g}, "
            f"{ratio:.2f}x its baseline {baseline:.4g} ({len(base)} windows before); {word} {limit:.4g}"
        )
        details = {"stat": c.stat, "span_windows": len(span), "baseline_windows": len(base), "ratio": ratio}
        return [_Hit(f"{c.name}:{c.kpi}", None, c.kpi, value, limit, baseline, msg, details)]


_RULE_CLASSES: dict[str, Callable[[Any], Any]] = {
    "score_over_threshold": _ScoreRule,
    "anomaly_spike": _SpikeRule,
    "kpi_trend": _TrendRule,
}


class RuleEngine:
    """Runs the configured rules over kpi-anomalies and kpi-metrics records; returns new alerts.

    ``model_version`` is used when a record carries none; ``clock`` gives ``created_at``
    (processing time, default: UTC now). Disabled rules are skipped.
    """

    def __init__(
        self,
        rules: Iterable[Any],
        *,
        model_version: str | None = None,
        clock: Callable[[], str] = utc_now_iso,
    ) -> None:
        self.rules = [(r, _RULE_CLASSES[r.type](r)) for r in rules if r.enabled]
        self.model_version = model_version
        self.clock = clock
        self.cooldown = CoolDown()
        self.fired: Counter[str] = Counter()
        self.suppressed: Counter[str] = Counter()

    def on_anomaly(self, record: dict[str, Any]) -> list[Alert]:
        """Alerts for one kpi-anomalies record (InvalidRecord when it is malformed)."""
        start, end = window_of(record)
        return self._run(record, start, end, "on_anomaly")

    def on_metrics(self, record: dict[str, Any]) -> list[Alert]:
        """Alerts for one kpi-metrics record (InvalidRecord when it is malformed)."""
        start, end = window_of(record)
        return self._run(record, start, end, "on_metrics")

    def _run(self, record: dict[str, Any], start: int, end: int, method: str) -> list[Alert]:
        hits = [(cfg, hit) for cfg, rule in self.rules for hit in getattr(rule, method)(record, start, end)]
        alerts = []
        version = record.get("model_version") or self.model_version
        for cfg, hit in hits:
            if not self.cooldown.allow(hit.key, start, int(cfg.cooldown_s * 1000)):
                self.suppressed[cfg.name] += 1
                continue
            self.fired[cfg.name] += 1
            alerts.append(
                Alert(
                    alert_id=alert_id(hit.key, start),
                    rule=cfg.name,
                    rule_type=cfg.type,
                    severity=cfg.severity,
                    key=hit.key,
                    device_id=hit.device_id,
                    kpi=hit.kpi,
                    window_start=iso_ms(start),
                    window_end=iso_ms(end),
                    value=hit.value,
                    threshold=hit.threshold,
                    baseline=hit.baseline,
                    message=hit.message,
                    model_version=version if isinstance(version, str) else None,
                    created_at=self.clock(),
                    details=hit.details,
                )
            )
        return alerts
