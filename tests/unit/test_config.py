"""Config validation: defaults load, conf/job.yaml equals the defaults, bad values fail with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from netanomaly.config import JobConfig, load_config, parse_override
from netanomaly.exceptions import ConfigError
from tests.conftest import repo_root


def test_conf_job_yaml_is_the_defaults():
    assert load_config(repo_root() / "conf" / "job.yaml") == JobConfig()


def test_overrides_apply_and_are_typed(tmp_path: Path):
    cfg = load_config(
        None,
        [
            "stream.parallelism=2",
            "kafka.bootstrap_servers=127.0.0.1:19092",
            "features.kpis=[a, b]",
            "features.bounds={}",
        ],
    )
    assert cfg.stream.parallelism == 2
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert cfg.features.kpis == ("a", "b")


def test_config_is_frozen():
    cfg = JobConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.stream.parallelism = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("yaml_text", "field", "words"),
    [
        ("kafka:\n  bootstrap_server: x:1\n", "kafka.bootstrap_server", "unknown key"),
        ("stream:\n  parallelism: 0\n", "stream.parallelism", "greater than or equal to 1"),
        ("kafka:\n  bootstrap_servers: localhost\n", "kafka.bootstrap_servers", "host:port"),
        ("kafka:\n  topics:\n    events: 'bad topic'\n", "kafka.topics.events", "legal Kafka topic"),
        ("features:\n  kpis: [latency_ms, latency_ms]\n  bounds: {}\n", "features.kpis", "unique"),
        ("features:\n  kpis: [a__b]\n  bounds: {}\n", "features.kpis", "without '__'"),
        ("features:\n  kpis: [latency_ms]\n", "features", "not in kpis"),
        ("features:\n  bounds:\n    packet_loss_pct: {min: 5, max: 1}\n", "features.bounds", "greater than max"),
        ("training:\n  threshold_quantile: 1.5\n", "training.threshold_quantile", "less than 1"),
        ("kafka:\n  startup_mode: newest\n", "kafka.startup_mode", "earliest-offset"),
        ("- just\n- a list\n", None, "mapping of sections"),
    ],
)
def test_bad_config_fails_with_field_and_hint(tmp_path: Path, yaml_text: str, field: str | None, words: str):
    p = tmp_path / "job.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert words in str(err.value)
    if field:
        assert field in str(err.value)


def test_missing_config_file_says_so(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("stream.parallelism")
    with pytest.raises(ConfigError, match="dotted name"):
        parse_override("stream..parallelism=2")


def test_wandb_mode_resolution(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert JobConfig().wandb.resolved_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert JobConfig().wandb.resolved_mode() == "online"
    assert load_config(None, {"wandb.mode": "disabled"}).wandb.resolved_mode() == "disabled"


def test_secret_is_not_printed():
    cfg = load_config(None, {"wandb.api_key": "supersecretvalue"})
    assert "supersecretvalue" not in repr(cfg)
    assert cfg.wandb.api_key.get_secret_value() == "supersecretvalue"
