"""Shared fixtures: W&B kept offline under tmp dirs, a real Kafka broker, a trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _wandb_sandbox(tmp_path_factory, monkeypatch):
    """W&B never reaches a server and writes only under a temp folder."""
    root = tmp_path_factory.mktemp("wandb")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        (root / var.lower()).mkdir(exist_ok=True)
        monkeypatch.setenv(var, str(root / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def repo_root() -> Path:
    """The checkout being tested."""
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    """A real broker: the one scripts/test.sh started (NETANOMALY_TEST_BOOTSTRAP), else one of our own."""
    given = os.environ.get("NETANOMALY_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    from netanomaly.config import LocalBroker
    from netanomaly.infra import kafka_local

    cfg = LocalBroker(port=19192, controller_port=19193, data_dir=tmp_path_factory.mktemp("kafka"))
    st = kafka_local.start(cfg)
    try:
        yield st.bootstrap_servers
    finally:
        kafka_local.stop(cfg)
