"""A hot swap in a running job: a promotion in the registry changes the model with no window lost or repeated."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from model import registry
from model.feature_store import FeatureStoreError, read_feature_store
from model.features import FeatureSpec, compute_window_features
from model.train import train_autoencoder
from netanomaly.config import JobConfig
from netanomaly.kafka_io import consume, ensure_topics, json_producer, read_topic
from netanomaly.local_job import JobProcess
from tests.integration.conftest import job_config, simulated_frame, unique_topics

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, events: list[dict]) -> None:
    producer = json_producer(bootstrap)
    for ev in events:
        producer.send(topic, key=ev["device_id"], value=ev)
    producer.flush()
    producer.close()


def _wait_for(predicate, timeout_s: float, what: str, log=lambda: ""):
    """Poll ``predicate`` until it returns something other than None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}\n{log()}")


def test_hot_swap_mid_stream_loses_and_repeats_no_window(kafka_bootstrap, trained_model, tmp_path):
    from netanomaly import simulate as sim

    spec = FeatureSpec.from_config(JobConfig().features)
    reg = tmp_path / "registry"
    v_a = registry.register(reg, trained_model)
    registry.promote(reg, v_a)
    other = sim.SimulationSpec(devices=6, duration_s=2 * 86400, seed=99, window_seconds=spec.window_seconds)
    model_b = tmp_path / "model-b"
    train_autoencoder(
        compute_window_features(simulated_frame(other), spec),
        spec,
        JobConfig().training.model_copy(update={"seed": 3}),
        wandb_mode="disabled",
        progress=False,
        out_dir=model_b,
    )
    v_b = registry.register(reg, model_b)
    assert v_a != v_b

    store = tmp_path / "store"
    topics = unique_topics("swap")
    cfg = job_config(
        kafka_bootstrap,
        reg,
        topics,
        model__reload_check_seconds=1,
        stream__feature_store=str(store),
        stream__checkpoint_interval_seconds=2,
        stream__emit_features=True,
        stream__watermark_delay_seconds=0,
        stream__idle_timeout_seconds=0,
    )
    live = sim.SimulationSpec(devices=6, duration_s=12 * 3600, seed=8, window_seconds=spec.window_seconds)
    events = list(sim.generate_events(live, []))
    half = len(events) // 2
    t = cfg.kafka.topics
    ensure_topics(kafka_bootstrap, [t.events, t.features, t.metrics])

    with JobProcess(cfg, tmp_path / "job") as job:
        _produce(kafka_bootstrap, t.events, events[:half])
        first = consume(kafka_bootstrap, t.metrics, until=lambda r: len(r) >= 20, timeout_s=240)
        assert len(first) >= 20, "windows of the first half did not close:\n" + job.log_tail()
        registry.promote(reg, v_b)
        _produce(kafka_bootstrap, t.events, events[half:])
        swapped = consume(
            kafka_bootstrap, t.metrics, until=lambda r: any(x["model_version"] == v_b for x in r), timeout_s=120
        )
        assert any(x["model_version"] == v_b for x in swapped), "no window scored by the promoted model"
        emitted = _wait_for(lambda: _settled(kafka_bootstrap, t.features), 120, "all windows", job.log_tail)

        def store_complete():
            try:
                rows = read_feature_store(store, spec)
            except FeatureStoreError:  # files appear on checkpoints; keep polling until the deadline
                return None
            return rows if len(rows) >= len(emitted) else None

        stored = _wait_for(store_complete, 120, "the feature store to hold every window", job.log_tail)

    keys = stored[["device_id", "window_start"]].astype(str).apply(tuple, axis=1)
    assert not keys.duplicated().any(), "a window was scored twice"
    emitted_keys = {(r["device_id"], pd.Timestamp(r["window_start"]).isoformat()) for r in emitted}
    stored_keys = {
        (d, pd.Timestamp(w).isoformat()) for d, w in zip(stored["device_id"], stored["window_start"], strict=True)
    }
    assert stored_keys == emitted_keys, "a window was lost between the features and the scores"
    assert set(stored["model_version"]) == {v_a, v_b}
    by_time = stored.sort_values("window_start")
    last_a = by_time.loc[by_time["model_version"] == v_a, "window_start"].max()
    first_b = by_time.loc[by_time["model_version"] == v_b, "window_start"].min()
    assert last_a <= first_b, "the model version went back after the swap"


def _settled(bootstrap: str, topic: str) -> list | None:
    """The topic's records once two reads a few seconds apart agree."""
    first = read_topic(bootstrap, topic)
    time.sleep(3)
    second = read_topic(bootstrap, topic)
    return second if first and len(first) == len(second) else None
