"""Monitor config: conf/monitor.yaml is the defaults, overrides, errors that name the field; the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from netanomaly.exceptions import ConfigError
from netanomaly.monitor.cli import monitor
from netanomaly.monitor.config import KpiTrendRule, MonitorConfig, load_monitor_config
from netanomaly.monitor.exceptions import MonitorConfigError
from tests.conftest import repo_root


def test_conf_monitor_yaml_is_the_defaults():
    assert load_monitor_config(repo_root() / "conf" / "monitor.yaml") == MonitorConfig()


def test_overrides_are_typed_and_reach_list_items():
    cfg = load_monitor_config(
        None,
        [
            "kafka.bootstrap_servers=127.0.0.1:29092",
            "rules.0.cooldown_s=600",
            "rules.2.factor=2.5",
            "drift.features=[latency_ms__mean, event_count]",
            "wandb.rollover=6",
            "webhook.url=https://hooks.example.com/services/T/B/x",
        ],
    )
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:29092"
    assert cfg.rules[0].cooldown_s == 600.0 and isinstance(cfg.rules[2], KpiTrendRule) and cfg.rules[2].factor == 2.5
    assert cfg.drift.features == ("latency_ms__mean", "event_count") and cfg.wandb.rollover == 6
    assert str(cfg.webhook.url) == "https://hooks.example.com/services/T/B/x"
    with pytest.raises(Exception, match="frozen"):
        cfg.drift.threshold = 1.0  # type: ignore[misc]


def test_rules_can_be_replaced_from_yaml(tmp_path: Path):
    p = tmp_path / "m.yaml"
    p.write_text("rules:\n  - {name: big, type: score_over_threshold, factor: 3, severity: critical}\n")
    cfg = load_monitor_config(p)
    assert [(r.name, r.factor, r.severity) for r in cfg.rules] == [("big", 3.0, "critical")]


@pytest.mark.parametrize(
    ("yaml_text", "field", "words"),
    [
        ("kafka:\n  topicz: {}\n", "kafka.topicz", "unknown key"),
        ("drift:\n  horizon: 3\n", "drift.horizon", "unknown key"),
        ("rules:\n  - {name: a, type: kpi_trend, kpi: latency_ms, spam: 1}\n", "rules.0.spam", "unknown key"),
        (
            "rules:\n  - {name: a, type: score_over_threshold, cooldown_s: -5}\n",
            "rules.0.cooldown_s",
            "greater than or equal to 0",
        ),
        ("rules:\n  - {name: a, type: nope}\n", "rules.0", "unknown rule type"),
        ("rules:\n  - {name: a}\n", "rules.0", "needs a type"),
        ("rules:\n  - {name: a, type: anomaly_spike}\n  - {name: a, type: anomaly_spike}\n", "rules", "unique"),
        ("rules:\n  - {name: a, type: kpi_trend, kpi: latency_ms, factor: 0.5}\n", "rules.0.factor", "greater than 1"),
        ("webhook:\n  url: not a url\n", "webhook.url", "valid URL"),
        ("webhook:\n  url: ftp://example.com/x\n", "webhook.url", "scheme"),
        ("webhook:\n  timeout_s: 0\n", "webhook.timeout_s", "greater than 0"),
        ("drift:\n  retrain_cooldown_s: -1\n", "drift.retrain_cooldown_s", "greater than or equal to 0"),
        ("drift:\n  min_periods: 500\n", "drift", "exceeds horizon_windows"),
        ("wandb:\n  rollover: weekly\n", "wandb.rollover", "daily or a number of hours"),
        ("wandb:\n  mode: sometimes\n", "wandb.mode", "online"),
        ("kafka:\n  topics:\n    alerts: kpi-metrics\n", "kafka.topics", "must differ"),
        ("kafka:\n  bootstrap_servers: localhost\n", "kafka.bootstrap_servers", "host:port"),
        ("- a list\n", None, "mapping of sections"),
    ],
)
def test_bad_config_fails_naming_the_field(tmp_path: Path, yaml_text: str, field: str | None, words: str):
    p = tmp_path / "monitor.yaml"
    p.write_text(yaml_text)
    with pytest.raises(MonitorConfigError) as err:
        load_monitor_config(p)
    assert isinstance(err.value, ConfigError)  # the CLI's existing error handling applies
    assert err.value.field == field
    assert words in str(err.value)
    if field:
        assert field in str(err.value)


def test_bad_overrides_and_missing_file():
    with pytest.raises(MonitorConfigError, match="section.key=value"):
        load_monitor_config(None, ["drift.threshold"])
    with pytest.raises(MonitorConfigError, match="index"):
        load_monitor_config(None, ["rules.9.factor=2"])
    with pytest.raises(MonitorConfigError, match="not found"):
        load_monitor_config("/nonexistent/monitor.yaml")


def test_secrets_stay_hidden():
    cfg = load_monitor_config(None, {"wandb.api_key": "k" * 40, "webhook.headers": {"Authorization": "Bearer s3cret"}})
    text = repr(cfg) + str(cfg.model_dump(mode="json"))
    assert "s3cret" not in text and "kkkk" not in text
    assert cfg.webhook.headers["Authorization"].get_secret_value() == "Bearer s3cret"
    assert cfg.wandb.resolved_mode() == "online"


def test_cli_help_and_config_errors():
    runner = CliRunner()
    res = runner.invoke(monitor, ["--help"])
    assert res.exit_code == 0
    for words in ("kpi-alerts", "kpi-retrain-requests", "--model", "--webhook-url", "--wandb-mode", "--set"):
        assert words in res.output
    res = runner.invoke(monitor, ["--set", "drift.threshold=-1", "--wandb-mode", "disabled"])
    assert res.exit_code == 2 and "drift.threshold" in res.output


def test_runs_standalone_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "netanomaly.monitor", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and "Usage: netanomaly monitor" in proc.stdout
