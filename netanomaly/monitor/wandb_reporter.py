"""The W&B production run of the monitor: fleet metrics, drift, recent anomalies and alerts.

The consume loop only calls the ``submit_*`` methods, which put the record on a BOUNDED queue
and return at once; a worker thread owns the W&B run. When W&B is slow, unreachable or
misconfigured the loop never waits: records that do not fit in the queue are dropped and
counted (``stats["dropped"]``, also logged as ``monitor/dropped_records`` with the next row
that reaches W&B). If the run cannot start, the reporter disables itself with one log line and
the monitor carries on without it.

What is logged (fleet level only: metric names never contain a device id):

* one history row per kpi-metrics record: ``fleet/*`` (devices, windows scored, events,
  anomalies, anomaly rate, mean/max score, threshold, max latency, mean packet loss),
  ``kpi_mean/<kpi>``, ``kpi_max/<kpi>``;
* one row per drift evaluation: ``drift/max_psi``, ``drift/drifted_features``,
  ``drift/psi/<feature>``;
* every ``table_every_windows`` window periods (and before a run ends) the tables
  ``anomalies/recent`` (device, window, score, top features) and ``alerts/recent``;
* each alert: ``run.alert(title, text, level)`` plus a history row ``alerts/total``,
  ``alerts/<severity>``. In offline mode ``run.alert`` only writes the alert into the run's
  local log: nobody is notified (W&B sees it only if the run is synced later), which is why
  alerts are also kept in the ``alerts/recent`` table and the history.

Every row carries ``event_time`` (the window start, epoch seconds), defined as the step metric
of the charts, so out-of-order or replayed records still plot at their event time. The run
rolls over by event time: a new run per UTC day (``monitor-YYYY-MM-DD``) or every N hours
(``monitor-YYYY-MM-DDTHH``). ``wandb`` is imported lazily, in the worker thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from netanomaly.monitor.config import MonitorWandb
from netanomaly.monitor.rules import top_features_text
from netanomaly.monitor.timeutil import iso_ms, parse_ms

log = logging.getLogger(__name__)

_STOP = object()
_LEVELS = {"info": "INFO", "warning": "WARN", "critical": "ERROR"}
_MAX_ERRORS = 5  # consecutive logging errors before the reporter gives up
ANOMALY_COLUMNS = ["device_id", "window_start", "window_end", "score", "threshold", "top_features", "model_version"]
ALERT_COLUMNS = ["window_start", "severity", "rule", "key", "value", "threshold", "message", "alert_id"]


class WandbReporter:
    """Feeds the W&B production run from a worker thread; see the module docstring.

    ``mode`` overrides ``cfg.resolved_mode()``. ``run_config`` goes to ``wandb.init(config=)``.
    ``wandb_module`` replaces the ``wandb`` package (tests). ``stats`` counts: submitted,
    dropped (queue full), skipped (disabled), rows, tables, alerts, runs, errors.
    """

    def __init__(
        self,
        cfg: MonitorWandb,
        *,
        mode: str | None = None,
        run_config: dict[str, Any] | None = None,
        wandb_module: Any = None,
    ) -> None:
        self.cfg = cfg
        self.mode = mode or cfg.resolved_mode()
        self.run_config = run_config or {}
        self._module = wandb_module
        self.stats: Counter[str] = Counter(
            dict.fromkeys(("submitted", "dropped", "skipped", "rows", "tables", "alerts", "runs", "errors"), 0)
        )
        self.run_dirs: list[Path] = []
        self.disabled_reason: str | None = "wandb.mode is disabled" if self.mode == "disabled" else None
        self._q: queue.Queue[Any] = queue.Queue(maxsize=cfg.queue_size)
        self._thread: threading.Thread | None = None
        self._abort = threading.Event()
        self._run: Any = None
        self._period: tuple[int, str] | None = None
        self._anomalies: deque[list[Any]] = deque(maxlen=cfg.table_rows)
        self._alerts: deque[list[Any]] = deque(maxlen=cfg.table_rows)
        self._tables_dirty = False
        self._windows_since_tables = 0
        self._alert_counts: Counter[str] = Counter()
        self._errors_in_row = 0

    # ------------------------------------------------------------------------------ lifecycle
    @property
    def enabled(self) -> bool:
        """False when disabled by configuration or after a failure."""
        return self.disabled_reason is None

    def start(self) -> WandbReporter:
        """Start the worker thread (no-op when disabled)."""
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="monitor-wandb", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Log what is queued and finish the run, for up to ``timeout_s``; then give up."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout_s
        try:
            self._q.put(_STOP, timeout=max(timeout_s, 0.01))
        except queue.Full:
            pass
        self._thread.join(max(deadline - time.monotonic(), 0.01))
        if self._thread.is_alive():
            self._abort.set()
            log.warning(
                "W&B reporter did not finish within %.0f s; leaving it (records still queued are lost)", timeout_s
            )
        self._thread = None

    # --------------------------------------------------------------------------------- submit
    def submit_metrics(self, record: dict[str, Any]) -> bool:
        """A kpi-metrics record (fleet row)."""
        return self._submit("metrics", record)

    def submit_anomaly(self, record: dict[str, Any]) -> bool:
        """A kpi-anomalies record (for the recent-anomalies table)."""
        return self._submit("anomaly", record)

    def submit_alert(self, record: dict[str, Any]) -> bool:
        """A kpi-alerts record (run.alert + table + history)."""
        return self._submit("alert", record)

    def submit_drift(self, record: dict[str, Any]) -> bool:
        """A kpi-drift record (PSI per feature)."""
        return self._submit("drift", record)

    def _submit(self, kind: str, record: dict[str, Any]) -> bool:
        if not self.enabled or self._thread is None:
            self.stats["skipped"] += 1
            return False
        try:
            self._q.put_nowait((kind, record))
        except queue.Full:
            self.stats["dropped"] += 1
            return False
        self.stats["submitted"] += 1
        return True

    # --------------------------------------------------------------------------------- worker
    def _loop(self) -> None:
        try:
            while not self._abort.is_set():
                item = self._q.get()
                if item is _STOP:
                    break
                if not self.enabled:
                    self.stats["skipped"] += 1
                    continue
                try:
                    self._handle(*item)
                    self._errors_in_row = 0
                except Exception as e:  # noqa: BLE001 - W&B trouble must never reach the monitor
                    self.stats["errors"] += 1
                    self._errors_in_row += 1
                    log.warning("W&B reporter: could not log a %s record (%s: %s)", item[0], type(e).__name__, e)
                    if self._errors_in_row >= _MAX_ERRORS:
                        self._disable(f"{_MAX_ERRORS} logging errors in a row, the last: {e}")
        finally:
            self._close_run()

    def _disable(self, reason: str) -> None:
        self.disabled_reason = reason
        log.error("W&B reporter disabled: %s. The monitor carries on without W&B.", reason)

    def _wandb(self) -> Any:
        if self._module is None:
            import wandb  # lazily: disabled runs never import it

            self._module = wandb
        return self._module

    def _period_of(self, t_ms: int) -> tuple[int, str]:
        iso = iso_ms(t_ms)
        if self.cfg.rollover == "daily":
            return t_ms // 86_400_000, iso[:10]
        hours = int(self.cfg.rollover)
        k = t_ms // (hours * 3_600_000)
        return k, iso_ms(k * hours * 3_600_000)[:13]

    def _ensure_run(self, t_ms: int) -> bool:
        period = self._period_of(t_ms)
        if self._run is not None and self._period is not None and period[0] <= self._period[0]:
            return True  # older records go to the current run
        if self._run is not None:
            self._close_run()
        wandb = self._wandb()
        name = f"{self.cfg.run_prefix}-{period[1]}"
        kwargs: dict[str, Any] = {}
        try:
            settings: dict[str, Any] = {"init_timeout": self.cfg.init_timeout_s, "console": "off"}
            if self.mode == "online" and self.cfg.api_key is not None:
                settings["api_key"] = self.cfg.api_key.get_secret_value()
            kwargs["settings"] = wandb.Settings(**settings)
            run = wandb.init(
                project=self.cfg.project,
                entity=self.cfg.entity,
                mode=self.mode,
                name=name,
                group=self.cfg.run_prefix,
                job_type="monitor",
                config=self.run_config,
                reinit="create_new",
                **kwargs,
            )
            run.define_metric("event_time")
            for prefix in ("fleet", "kpi_mean", "kpi_max", "drift", "alerts", "monitor"):
                run.define_metric(f"{prefix}/*", step_metric="event_time")
        except Exception as e:  # noqa: BLE001 - any init failure disables the reporter, never the monitor
            self._disable(
                f"the run could not start in {self.mode} mode ({type(e).__name__}: {e}); check "
                "WANDB_API_KEY / network, or set wandb.mode to offline or disabled"
            )
            return False
        self._run, self._period = run, period
        self.stats["runs"] += 1
        run_dir = getattr(run, "dir", None)
        if run_dir:
            self.run_dirs.append(Path(run_dir).parent)
        log.info("W&B run %s started (%s mode)%s", name, self.mode, f" in {self.run_dirs[-1]}" if run_dir else "")
        return True

    def _close_run(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        try:
            self._log_tables(run)
            run.finish()
        except Exception as e:  # noqa: BLE001
            self.stats["errors"] += 1
            log.warning("W&B run did not finish cleanly (%s: %s)", type(e).__name__, e)
        self._anomalies.clear()  # each run's tables hold its own period's records
        self._alerts.clear()
        self._alert_counts.clear()

    def _log(self, run: Any, row: dict[str, Any]) -> None:
        row["monitor/dropped_records"] = self.stats["dropped"]
        run.log(row)
        self.stats["rows"] += 1

    def _handle(self, kind: str, rec: dict[str, Any]) -> None:
        t_ms = parse_ms(rec.get("window_start"), "window_start")
        if not self._ensure_run(t_ms):
            self.stats["skipped"] += 1
            return
        run = self._run
        event_time = t_ms / 1000.0
        if kind == "metrics":
            self._on_metrics(run, rec, event_time)
        elif kind == "anomaly":
            self._anomalies.append(
                [
                    rec.get("device_id"),
                    rec.get("window_start"),
                    rec.get("window_end"),
                    rec.get("score"),
                    rec.get("threshold"),
                    top_features_text(rec.get("top_features")),
                    rec.get("model_version"),
                ]
            )
            self._tables_dirty = True
        elif kind == "alert":
            self._on_alert(run, rec, event_time)
        elif kind == "drift":
            psi = rec.get("psi") or {}
            row: dict[str, Any] = {
                "event_time": event_time,
                "drift/max_psi": rec.get("max_psi"),
                "drift/drifted_features": len(rec.get("drifted") or []),
            }
            row.update({f"drift/psi/{k}": v for k, v in psi.items()})
            self._log(run, row)

    def _on_metrics(self, run: Any, rec: dict[str, Any], event_time: float) -> None:
        kpi_mean = rec.get("kpi_mean") or {}
        kpi_max = rec.get("kpi_max") or {}
        row: dict[str, Any] = {
            "event_time": event_time,
            "fleet/devices": rec.get("devices"),
            "fleet/windows_scored": rec.get("windows"),
            "fleet/events": rec.get("events"),
            "fleet/anomalies": rec.get("anomalies"),
            "fleet/anomaly_rate": rec.get("anomaly_rate"),
            "fleet/mean_score": rec.get("mean_score"),
            "fleet/max_score": rec.get("max_score"),
            "fleet/threshold": rec.get("threshold"),
        }
        if "latency_ms" in kpi_max:
            row["fleet/max_latency_ms"] = kpi_max["latency_ms"]
        if "packet_loss_pct" in kpi_mean:
            row["fleet/mean_packet_loss_pct"] = kpi_mean["packet_loss_pct"]
        row.update({f"kpi_mean/{k}": v for k, v in kpi_mean.items()})
        row.update({f"kpi_max/{k}": v for k, v in kpi_max.items()})
        self._log(run, {k: v for k, v in row.items() if v is not None})
        self._windows_since_tables += 1
        if self._windows_since_tables >= self.cfg.table_every_windows:
            self._log_tables(run, event_time=event_time)

    def _on_alert(self, run: Any, rec: dict[str, Any], event_time: float) -> None:
        sev = str(rec.get("severity", "info"))
        title = f"[{sev.upper()}] {rec.get('rule')}: {rec.get('key')}"[:63]
        run.alert(title=title, text=str(rec.get("message")), level=_LEVELS.get(sev, "INFO"), wait_duration=1)
        self.stats["alerts"] += 1
        self._alert_counts["total"] += 1
        self._alert_counts[sev] += 1
        self._alerts.append([rec.get(c) for c in ALERT_COLUMNS])
        self._tables_dirty = True
        self._log(
            run,
            {
                "event_time": event_time,
                "alerts/total": self._alert_counts["total"],
                f"alerts/{sev}": self._alert_counts[sev],
            },
        )

    def _log_tables(self, run: Any, *, event_time: float | None = None) -> None:
        self._windows_since_tables = 0
        if not self._tables_dirty:
            return
        wandb = self._wandb()
        row: dict[str, Any] = {}
        if self._anomalies:
            row["anomalies/recent"] = wandb.Table(columns=ANOMALY_COLUMNS, data=[list(r) for r in self._anomalies])
        if self._alerts:
            row["alerts/recent"] = wandb.Table(columns=ALERT_COLUMNS, data=[list(r) for r in self._alerts])
        if row:
            if event_time is not None:
                row["event_time"] = event_time
            self._log(run, row)
            self.stats["tables"] += 1
        self._tables_dirty = False


def make_reporter(cfg: MonitorWandb, mode: str | None = None, **kwargs: Any) -> WandbReporter:
    """A started reporter (a no-op one when the mode is disabled)."""
    return WandbReporter(cfg, mode=mode, **kwargs).start()
