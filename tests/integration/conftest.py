"""Integration fixtures: a model trained on simulated normal history, unique topics, job runs."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from model.features import FeatureSpec, compute_window_features
from netanomaly.config import JobConfig, load_config

HISTORY_DEVICES = 12
_counter = itertools.count()


def simulated_frame(spec) -> pd.DataFrame:
    """Simulated events as a validated-events frame (event_time_ms + KPIs)."""
    from netanomaly import simulate as sim

    df = pd.DataFrame(sim.generate_events(spec, sim.plan_anomalies(spec)))
    return df.rename(columns={"timestamp": "event_time_ms"})


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """An exported model trained on 4 days of normal simulated history (W&B disabled)."""
    from model.train import train_autoencoder
    from netanomaly import simulate as sim

    cfg = JobConfig()
    spec = FeatureSpec.from_config(cfg.features)
    hist = sim.SimulationSpec(
        devices=HISTORY_DEVICES, duration_s=4 * 86400, anomalies=0, seed=1, window_seconds=cfg.features.window_seconds
    )
    feats = compute_window_features(simulated_frame(hist), spec)
    out = tmp_path_factory.mktemp("model") / "current"
    train_autoencoder(feats, spec, cfg.training, wandb_mode="disabled", progress=False, out_dir=out)
    return out


def unique_topics(prefix: str) -> dict[str, str]:
    """Fresh topic names per test run, so tests never see each other's records."""
    tag = f"{prefix}-{os.getpid()}-{int(time.time() * 1000) % 10**9}-{next(_counter)}"
    return {f"kafka.topics.{k}": f"{tag}-{k}" for k in ("events", "anomalies", "metrics", "dlq", "features")}


def job_config(bootstrap: str, model_dir: Path, topics: dict[str, str], **overrides) -> JobConfig:
    """The job config for a test: real broker, given model and topics, short checkpoints."""
    base = {
        "kafka.bootstrap_servers": bootstrap,
        "model.dir": str(model_dir),
        "stream.checkpoint_interval_seconds": 5,
        **topics,
    }
    base.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(None, base)


def run_bounded(cfg: JobConfig, workdir: Path, timeout_s: float = 300.0) -> None:
    """Run the job with kafka.bounded until it ends by itself; fail with its log otherwise."""
    from netanomaly.local_job import JobProcess

    assert cfg.kafka.bounded
    job = JobProcess(cfg, workdir)
    job.start()
    try:
        rc = job.wait(timeout_s)
    finally:
        job.stop()
    assert rc == 0, f"job exited with {rc}:\n{job.log_tail(80)}"
