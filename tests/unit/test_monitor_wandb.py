"""W&B reporter: an offline run read back with `wandb leet inspect`; a slow or broken W&B never blocks."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from netanomaly.monitor.config import MonitorWandb
from netanomaly.monitor.wandb_reporter import WandbReporter
from tests.unit.test_monitor_rules import anomaly, metrics
from tests.unit.test_monitor_webhook import alert, wait_for

SUBMIT_BUDGET_S = 0.05


def _wandb_cli() -> str:
    exe = Path(sys.executable).parent / "wandb"
    found = str(exe) if exe.exists() else shutil.which("wandb")
    if found is None:
        pytest.skip("the wandb command-line tool is not installed next to this interpreter")
    return found


def leet(run_dir: Path) -> list[dict]:
    proc = subprocess.run(
        [_wandb_cli(), "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def drift_record(i: int) -> dict:
    m = metrics(i)
    return {
        "window_start": m["window_start"],
        "window_end": m["window_end"],
        "psi": {"latency_ms__mean": 0.4, "event_count": 0.0},
        "max_psi": 0.4,
        "max_feature": "latency_ms__mean",
        "drifted": ["latency_ms__mean"],
    }


def test_offline_run_has_fleet_metrics_anomaly_table_drift_and_alerts(monkeypatch):
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    cfg = MonitorWandb(mode="offline", table_every_windows=3)
    r = WandbReporter(cfg, run_config={"model_version": "ae-test"}).start()
    r.submit_anomaly(anomaly("dev-007", 1, score=0.9))
    r.submit_alert(alert(7, "critical"))
    for i in range(4):
        m = metrics(i, anomalies=i, latency=20.0 + i)
        m["kpi_mean"]["packet_loss_pct"] = 0.25
        r.submit_metrics(m)
    r.submit_drift(drift_record(3))
    r.stop(60)
    assert r.enabled and r.stats["dropped"] == 0 and r.stats["errors"] == 0 and r.stats["runs"] == 1
    [run_dir] = r.run_dirs
    records = leet(run_dir)

    run = next(x["run"] for x in records if x["type"] == "run")
    assert run["display_name"] == "monitor-2026-01-05" and run["job_type"] == "monitor"
    assert run["config"]["update"]["model_version"] == "ae-test"
    history = [x["history"]["item"] for x in records if x["type"] == "history"]
    fleet = [h for h in history if "fleet/windows_scored" in h]
    assert [h["fleet/anomalies"] for h in fleet] == [0, 1, 2, 3]
    assert [h["event_time"] for h in fleet] == [1_767_571_200 + 600 * i for i in range(4)]
    assert fleet[2]["fleet/max_latency_ms"] == 44.0 and fleet[2]["kpi_mean/latency_ms"] == 22.0
    assert fleet[0]["fleet/mean_packet_loss_pct"] == 0.25 and fleet[0]["fleet/mean_score"] == 0.01
    assert all(h["monitor/dropped_records"] == 0 for h in fleet)
    assert [h["drift/psi/latency_ms__mean"] for h in history if "drift/max_psi" in h] == [0.4]
    # fleet level only: no metric is named after a device
    assert not [k for h in history for k in h if "dev-" in k]

    tables = [h for h in history if h.get("anomalies/recent._type") == "table-file"]
    assert tables, history
    anomalies = json.loads((run_dir / "files" / tables[0]["anomalies/recent.path"]).read_text())
    assert anomalies["columns"][:2] == ["device_id", "window_start"]
    assert anomalies["data"][0][0] == "dev-007" and "latency_ms__max 70%" in anomalies["data"][0][5]
    alerts_table = json.loads((run_dir / "files" / tables[0]["alerts/recent.path"]).read_text())
    assert alerts_table["data"][0][1] == "critical" and "dev-007" in alerts_table["data"][0][6]

    # run.alert is recorded in the run's log (offline: nobody is notified) and in the history
    [a] = [x["alert"] for x in records if x["type"] == "alert"]
    assert a["level"] == "ERROR" and a["title"].startswith("[CRITICAL] device_score") and "dev-007" in a["text"]
    assert [h["alerts/total"] for h in history if "alerts/total" in h] == [1]
    assert any(x["type"] == "exit" for x in records)


def test_rolls_over_to_a_new_run_per_day_of_event_time(monkeypatch):
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    r = WandbReporter(MonitorWandb(mode="offline")).start()
    late = metrics(143)  # 2026-01-05T23:50
    next_day = metrics(144)
    r.submit_metrics(late)
    r.submit_metrics(next_day)
    r.submit_metrics(metrics(140))  # out of order: goes to the current run
    r.stop(60)
    assert r.stats["runs"] == 2 and len(r.run_dirs) == 2
    logs = [leet(d) for d in r.run_dirs]
    names = [next(x["run"]["display_name"] for x in records if x["type"] == "run") for records in logs]
    assert names == ["monitor-2026-01-05", "monitor-2026-01-06"]
    rows = [[x["history"]["item"]["event_time"] for x in records if x["type"] == "history"] for records in logs]
    assert rows == [[late_t := 1_767_571_200 + 143 * 600], [late_t + 600, late_t - 3 * 600]]


def test_hourly_rollover_names():
    r = WandbReporter(MonitorWandb(mode="offline", rollover=6))
    assert r._period_of(1_767_571_200_000 + 7 * 3_600_000) == (1_767_571_200 // 21_600 + 1, "2026-01-05T06")


# ------------------------------------------------------------------------------ fakes: slow, broken
class FakeRun:
    def __init__(self, gate: threading.Event | None) -> None:
        self.gate = gate
        self.entered = threading.Event()
        self.rows: list[dict] = []
        self.alerts: list[dict] = []
        self.finished = False
        self.dir = None

    def define_metric(self, *args, **kwargs) -> None:
        pass

    def log(self, row: dict) -> None:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.rows.append(dict(row))

    def alert(self, **kwargs) -> None:
        self.alerts.append(kwargs)

    def finish(self) -> None:
        self.finished = True


class FakeWandb:
    """Stands in for the wandb package: init can hang (gate) or fail; log can hang."""

    def __init__(self, *, block_init=None, block_log=None, fail: Exception | None = None) -> None:
        self.block_init = block_init
        self.block_log = block_log
        self.fail = fail
        self.entered_init = threading.Event()
        self.runs: list[FakeRun] = []

    def Settings(self, **kwargs):  # noqa: N802 - wandb's name
        return kwargs

    def Table(self, columns, data):  # noqa: N802 - wandb's name
        return {"columns": columns, "data": data}

    def init(self, **kwargs) -> FakeRun:
        self.entered_init.set()
        if self.block_init is not None:
            self.block_init.wait(10)
        if self.fail is not None:
            raise self.fail
        run = FakeRun(self.block_log)
        self.runs.append(run)
        return run


@pytest.mark.parametrize("where", ["init", "log"])
def test_slow_wandb_drops_and_counts_instead_of_blocking(where):
    gate = threading.Event()
    fake = FakeWandb(block_init=gate if where == "init" else None, block_log=gate if where == "log" else None)
    r = WandbReporter(MonitorWandb(mode="online", queue_size=2), wandb_module=fake).start()
    assert r.submit_metrics(metrics(0))
    assert wait_for(lambda: fake.entered_init.is_set() and (where == "init" or fake.runs[0].entered.is_set()))
    durations = []
    for i in range(1, 10):
        t0 = time.perf_counter()
        r.submit_metrics(metrics(i))
        durations.append(time.perf_counter() - t0)
    assert max(durations) < SUBMIT_BUDGET_S, durations
    assert r.stats["dropped"] == 7 and r.stats["submitted"] == 3  # one in the worker, two queued
    gate.set()
    r.stop(5)
    rows = fake.runs[0].rows
    assert [row["fleet/windows_scored"] for row in rows] == [12, 12, 12]
    # the counter goes out with the next row that reaches W&B
    assert rows[-1]["monitor/dropped_records"] == 7 and fake.runs[0].finished


def test_init_failure_disables_the_reporter_with_one_log_line(caplog):
    fake = FakeWandb(fail=RuntimeError("api key rejected (401)"))
    r = WandbReporter(MonitorWandb(mode="online"), wandb_module=fake).start()
    with caplog.at_level(logging.ERROR, logger="netanomaly.monitor.wandb_reporter"):
        for i in range(5):
            r.submit_metrics(metrics(i))
        assert wait_for(lambda: not r.enabled)
        t0 = time.perf_counter()
        assert not r.submit_alert(alert())
        assert time.perf_counter() - t0 < SUBMIT_BUDGET_S
        r.stop(5)
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and "W&B reporter disabled" in errors[0] and "401" in errors[0]
    assert "online mode" in r.disabled_reason and r.stats["runs"] == 0 and r.stats["skipped"] >= 1


def test_disabled_mode_never_imports_or_calls_wandb():
    class Exploding:
        def __getattr__(self, name):
            raise AssertionError(f"wandb.{name} used in disabled mode")

    r = WandbReporter(MonitorWandb(mode="disabled"), wandb_module=Exploding()).start()
    assert not r.enabled and not r.submit_metrics(metrics(0)) and r.stats["skipped"] == 1
    r.stop(1)
