"""The monitor's consume loop: job outputs in, alerts / drift / retrain requests out.

It reads kpi-anomalies, kpi-metrics and (for drift) kpi-features with kafka-python, every
partition assigned to itself (no group rebalancing; offsets are committed to ``group_id`` after
the outputs are flushed, so a restart resumes where it stopped: at-least-once). Each record goes
to the rules (alerts), the drift monitor and the W&B reporter; alerts go to kpi-alerts and the
webhook, drift reports to kpi-drift, retrain requests to kpi-retrain-requests. A record that is
not JSON or lacks a field is counted and skipped, never fatal. The W&B reporter and the webhook
run in their own threads behind bounded queues, and the Flink job is decoupled by Kafka: the
monitor can be slow or stopped without slowing the stream.

Stops on ``stop_event``, SIGINT/SIGTERM (main thread), ``max_seconds`` (a deadline checked
between polls of at most ``kafka.poll_timeout_ms``), or, with ``kafka.bounded``, once the end
offsets seen at start are consumed (then the last window period is also evaluated for drift).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from netanomaly.monitor.config import MonitorConfig
from netanomaly.monitor.drift import DriftMonitor, DriftReport, ModelBaseline, RetrainRequest, load_baseline
from netanomaly.monitor.exceptions import InvalidRecord, MonitorError
from netanomaly.monitor.rules import Alert, RuleEngine
from netanomaly.monitor.timeutil import utc_now_iso, window_of
from netanomaly.monitor.wandb_reporter import WandbReporter
from netanomaly.monitor.webhook import WebhookNotifier

log = logging.getLogger(__name__)

_REFRESH_S = 10.0  # re-read the input topics' partitions this often (new topics, added partitions)


def _copy(counter: Counter[str]) -> dict[str, Any]:
    """A snapshot of a counter another thread may be updating."""
    for _ in range(10):
        try:
            return dict(counter)
        except RuntimeError:  # changed size during the copy
            continue
    return {}


class MonitorService:
    """One monitor: build with a config and an optional model baseline, then :meth:`run`.

    ``stats()`` returns the counters at any time (also while running, from another thread).
    ``reporter`` / ``webhook`` replace the ones built from the config (tests).
    """

    def __init__(
        self,
        cfg: MonitorConfig,
        baseline: ModelBaseline | None,
        *,
        reporter: WandbReporter | None = None,
        webhook: WebhookNotifier | None = None,
        clock: Callable[[], str] = utc_now_iso,
    ) -> None:
        self.cfg = cfg
        self.baseline = baseline
        self.rules = RuleEngine(cfg.rules, model_version=baseline.model_version if baseline else None, clock=clock)
        self.drift: DriftMonitor | None = None
        if baseline is not None and cfg.drift.enabled:
            self.drift = DriftMonitor(cfg.drift, baseline, clock=clock)
        run_config = {
            "model_version": baseline.model_version if baseline else None,
            "topics": cfg.kafka.topics.model_dump(),
            "rules": [r.model_dump(mode="json") for r in cfg.rules],
            "drift": cfg.drift.model_dump(mode="json"),
        }
        self.reporter = reporter or WandbReporter(cfg.wandb, run_config=run_config)
        self.webhook = webhook or WebhookNotifier(cfg.webhook)
        self.counts: Counter[str] = Counter()
        self.decode_errors: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()
        self.stopped_by: str | None = None
        self._t0 = time.monotonic()
        t = cfg.kafka.topics
        self._kinds = {t.anomalies: "anomalies", t.metrics: "metrics"}
        if self.drift is not None:
            self._kinds[t.features] = "features"
        self._feature_wm: dict[Any, int] = {}
        self._consumer: Any = None
        self._producer: Any = None

    # ---------------------------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        """Counters: records, decode/invalid errors, alerts, drift, outputs, W&B and webhook."""
        counts = _copy(self.counts)
        fired = _copy(self.rules.fired)
        return {
            "records": {k: counts.get(k, 0) for k in self._kinds.values()},
            "decode_errors": _copy(self.decode_errors),
            "invalid_records": _copy(self.invalid),
            "alerts": sum(fired.values()),
            "alerts_by_rule": fired,
            "alerts_suppressed": _copy(self.rules.suppressed),
            "drift_reports": counts.get("out_drift", 0),
            "retrain_requests": counts.get("out_retrain", 0),
            "drift": _copy(self.drift.stats) if self.drift else {},
            "produce_errors": counts.get("produce_errors", 0),
            "commit_errors": counts.get("commit_errors", 0),
            "wandb": {
                **_copy(self.reporter.stats),
                "mode": self.reporter.mode,
                "enabled": self.reporter.enabled,
                "disabled_reason": self.reporter.disabled_reason,
                "run_dirs": [str(p) for p in self.reporter.run_dirs],
            },
            "webhook": {**_copy(self.webhook.stats), "enabled": self.webhook.enabled},
            "elapsed_s": round(time.monotonic() - self._t0, 3),
            "stopped_by": self.stopped_by,
        }

    # ------------------------------------------------------------------------------------ run
    def run(self, stop_event: threading.Event | None = None, max_seconds: float | None = None) -> dict[str, Any]:
        """Consume until stopped (see the module docstring); returns :meth:`stats`."""
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        from netanomaly.kafka_io import ensure_topics, json_producer

        cfg = self.cfg.kafka
        stop_event = stop_event or threading.Event()
        self._t0 = time.monotonic()
        deadline = None if max_seconds is None else self._t0 + max_seconds
        t = cfg.topics
        try:
            ensure_topics(cfg.bootstrap_servers, [t.alerts, t.drift, t.retrain], partitions=cfg.partitions)
        except Exception as e:
            raise MonitorError(f"cannot create the output topics on {cfg.bootstrap_servers}: {e}") from e
        try:
            self._producer = json_producer(cfg.bootstrap_servers, acks=1, max_block_ms=10_000)
            self._consumer = KafkaConsumer(
                bootstrap_servers=cfg.bootstrap_servers,
                group_id=cfg.group_id,
                client_id="netanomaly-monitor",
                enable_auto_commit=False,
                auto_offset_reset=cfg.auto_offset_reset,
                max_poll_records=cfg.max_poll_records,
            )
        except KafkaError as e:
            self._shutdown()
            raise MonitorError(f"cannot reach Kafka at {cfg.bootstrap_servers} ({e}); is it running?") from e
        self.reporter.start()
        self.webhook.start()
        missing_logged: set[str] = set()
        end_offsets: dict[Any, int] | None = None
        try:
            self._assign(missing_logged)
            if cfg.bounded:
                tps = list(self._consumer.assignment())
                end_offsets = self._consumer.end_offsets(tps) if tps else {}
                log.info(
                    "bounded: reading %d partition(s) up to %s", len(tps), {str(k): v for k, v in end_offsets.items()}
                )
            log.info(
                "monitor consuming %s from %s (group %s)", sorted(self._kinds), cfg.bootstrap_servers, cfg.group_id
            )
            next_refresh = time.monotonic() + _REFRESH_S
            next_commit = time.monotonic() + cfg.commit_interval_s
            next_stats = time.monotonic() + self.cfg.service.stats_interval_s
            while True:
                now = time.monotonic()
                if stop_event.is_set():
                    self.stopped_by = "stop_event"
                    break
                if deadline is not None and now >= deadline:
                    self.stopped_by = "max_seconds"
                    break
                if end_offsets is not None and self._reached(end_offsets):
                    self.stopped_by = "bounded_end"
                    break
                if end_offsets is None and now >= next_refresh:
                    self._assign(missing_logged)
                    next_refresh = now + _REFRESH_S
                timeout = cfg.poll_timeout_ms
                if deadline is not None:
                    timeout = max(0, min(timeout, int((deadline - now) * 1000)))
                batches = self._consumer.poll(timeout_ms=timeout, max_records=cfg.max_poll_records)
                for tp, messages in batches.items():
                    for m in messages:
                        self._on_message(tp, m)
                self._advance_drift()
                now = time.monotonic()
                if now >= next_commit:
                    self._commit()
                    next_commit = now + cfg.commit_interval_s
                if now >= next_stats:
                    log.info("monitor stats: %s", json.dumps(self._brief()))
                    next_stats = now + self.cfg.service.stats_interval_s
            if self.stopped_by == "bounded_end" and self.drift is not None:
                for out in self.drift.flush():
                    self._emit_drift(out)
        finally:
            self._shutdown()
        log.info("monitor stopped (%s): %s", self.stopped_by, json.dumps(self._brief()))
        return self.stats()

    def _brief(self) -> dict[str, Any]:
        s = self.stats()
        return {
            "records": s["records"],
            "alerts": s["alerts"],
            "drift_reports": s["drift_reports"],
            "retrain_requests": s["retrain_requests"],
            "decode_errors": sum(s["decode_errors"].values()),
            "invalid_records": sum(s["invalid_records"].values()),
            "wandb_dropped": s["wandb"].get("dropped", 0),
            "webhook_failed": s["webhook"].get("failed", 0),
        }

    def _assign(self, missing_logged: set[str]) -> None:
        from kafka import TopicPartition

        tps = []
        for topic in self._kinds:
            parts = self._consumer.partitions_for_topic(topic)
            if not parts:
                if topic not in missing_logged:
                    missing_logged.add(topic)
                    hint = (
                        " (the job writes it with stream.emit_features: true)"
                        if self._kinds[topic] == "features"
                        else ""
                    )
                    log.warning("topic %s does not exist yet%s; it is read once it appears", topic, hint)
                continue
            tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        if set(tps) != set(self._consumer.assignment() or ()):
            if tps:
                self._consumer.assign(tps)

    def _reached(self, end_offsets: dict[Any, int]) -> bool:
        for tp, end in end_offsets.items():
            pos = self._consumer.position(tp, timeout_ms=5000)
            if pos is None or pos < end:
                return False
        return True

    def _shutdown(self) -> None:
        drain = self.cfg.service.drain_timeout_s
        with contextlib.suppress(Exception):
            if self._producer is not None:
                self._producer.flush(timeout=max(drain, 1.0))
        self._commit()
        self.reporter.stop(drain)
        self.webhook.stop(drain)
        with contextlib.suppress(Exception):
            if self._consumer is not None:
                self._consumer.close(autocommit=False)
        with contextlib.suppress(Exception):
            if self._producer is not None:
                self._producer.close(timeout=5)

    def _commit(self) -> None:
        if self._consumer is None or not self._consumer.assignment():
            return
        try:
            if self._producer is not None:
                self._producer.flush(timeout=10)
            self._consumer.commit()
        except Exception as e:  # noqa: BLE001 - a failed commit means re-reading, not stopping
            self.counts["commit_errors"] += 1
            log.warning(
                "committing offsets failed (%s: %s); records may be re-read after a restart", type(e).__name__, e
            )

    # ------------------------------------------------------------------------------- records
    def _on_message(self, tp: Any, m: Any) -> None:
        kind = self._kinds.get(tp.topic)
        if kind is None:
            return
        self.counts[kind] += 1
        try:
            rec = json.loads(m.value)
        except (TypeError, ValueError) as e:  # not bytes, not UTF-8, not JSON
            self._bad(self.decode_errors, kind, tp, m, f"not JSON ({e})")
            return
        try:
            if not isinstance(rec, dict):
                raise InvalidRecord(f"a record must be a JSON object, got {type(rec).__name__}")
            if kind == "anomalies":
                alerts = self.rules.on_anomaly(rec)
                self.reporter.submit_anomaly(rec)
            elif kind == "metrics":
                alerts = self.rules.on_metrics(rec)
                self.reporter.submit_metrics(rec)
            else:
                assert self.drift is not None
                self.drift.add(rec)
                start = window_of(rec)[0]
                if start > self._feature_wm.get(tp, -1):
                    self._feature_wm[tp] = start
                alerts = []
        except InvalidRecord as e:
            self._bad(self.invalid, kind, tp, m, str(e))
            return
        except Exception as e:  # noqa: BLE001 - an unforeseen record shape must not stop the monitor
            self._bad(self.invalid, kind, tp, m, f"unexpected {type(e).__name__}: {e}")
            return
        for a in alerts:
            self._emit_alert(a)

    def _bad(self, counter: Counter[str], kind: str, tp: Any, m: Any, why: str) -> None:
        counter[kind] += 1
        if counter[kind] <= self.cfg.service.log_invalid:
            log.warning("skipping %s record at %s[%s]@%s: %s", kind, tp.topic, tp.partition, m.offset, why)

    def _advance_drift(self) -> None:
        """Evaluate the periods every partition of kpi-features has moved past (event time).

        The watermark is the lowest newest-window-start among the partitions that still have a
        backlog (or among all partitions once none has): a partition far behind in a catch-up
        never sees its periods evaluated before it delivered them.
        """
        if self.drift is None or not self._feature_wm:
            return
        behind = []
        for tp, wm in self._feature_wm.items():
            hw = self._consumer.highwater(tp)
            pos = self._consumer.position(tp, timeout_ms=0)
            if hw is not None and pos is not None and pos < hw:
                behind.append(wm)
        watermark = min(behind) if behind else min(self._feature_wm.values())
        for out in self.drift.advance(watermark):
            self._emit_drift(out)

    # ------------------------------------------------------------------------------- outputs
    def _send(self, topic: str, key: str | None, record: dict[str, Any]) -> None:
        try:
            fut = self._producer.send(topic, key=key, value=record)
            fut.add_errback(self._produce_failed, topic)
        except Exception as e:  # noqa: BLE001 - a full buffer or a dead broker must not kill the loop
            self._produce_failed(e, topic)

    def _produce_failed(self, e: BaseException, topic: str) -> None:
        self.counts["produce_errors"] += 1  # from the producer's I/O thread too: Counter += is GIL-atomic enough
        if self.counts["produce_errors"] <= 5:
            log.error("could not write to %s (%s: %s)", topic, type(e).__name__, e)

    def _emit_alert(self, alert: Alert) -> None:
        rec = alert.to_record()
        self._send(self.cfg.kafka.topics.alerts, alert.key, rec)
        self.counts["out_alerts"] += 1
        log.info("ALERT %s %s: %s", alert.severity.upper(), alert.rule, alert.message)
        self.reporter.submit_alert(rec)
        self.webhook.submit(rec)

    def _emit_drift(self, out: DriftReport | RetrainRequest) -> None:
        rec = out.to_record()
        if isinstance(out, RetrainRequest):
            self._send(self.cfg.kafka.topics.retrain, out.model_version, rec)
            self.counts["out_retrain"] += 1
            log.warning("RETRAIN REQUESTED: %s", out.message)
        else:
            self._send(self.cfg.kafka.topics.drift, None, rec)
            self.counts["out_drift"] += 1
            self.reporter.submit_drift(rec)


# ---------------------------------------------------------------------------------- entry point
@contextlib.contextmanager
def _stop_on_signals(stop_event: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop_event`` (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        log.info("signal %s: stopping the monitor", signal.Signals(signum).name)
        stop_event.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def resolve_baseline(cfg: MonitorConfig, model_dir: str | Path | None, *, required: bool) -> ModelBaseline | None:
    """The model baseline of ``model_dir`` (default ``cfg.model_dir``); None with a warning when
    the folder is missing and not ``required`` (then drift is off and alerts use the records'
    model_version)."""
    path = Path(model_dir if model_dir is not None else cfg.model_dir).expanduser()
    if not required and not (path / "metadata.json").is_file():
        log.warning("no model at %s: drift detection is off (pass --model DIR to enable it)", path)
        return None
    return load_baseline(path)


def run_monitor(
    cfg: MonitorConfig,
    model_dir: str | Path | None,
    stop_event: threading.Event | None = None,
    max_seconds: float | None = None,
    **service_kwargs: Any,
) -> dict[str, Any]:
    """Run the monitor until stopped; returns its stats (see :meth:`MonitorService.stats`).

    ``model_dir`` (None: ``cfg.model_dir`` if it exists) gives the drift baseline and the
    model_version; an explicit folder that is not a model raises BaselineError.
    """
    baseline = resolve_baseline(cfg, model_dir, required=model_dir is not None)
    service = MonitorService(cfg, baseline, **service_kwargs)
    stop_event = stop_event or threading.Event()
    with _stop_on_signals(stop_event):
        return service.run(stop_event=stop_event, max_seconds=max_seconds)
