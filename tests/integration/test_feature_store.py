"""The job's Parquet feature store: training from it gives a model that scores the same windows the
same way offline and in the job."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.feature_store import read_feature_store
from model.features import FeatureSpec
from model.scoring import score_features
from model.train import train_autoencoder
from netanomaly.kafka_io import ensure_topics, json_producer
from tests.integration.conftest import job_config, run_bounded, unique_topics

pytestmark = pytest.mark.integration


def read_model_version(model_dir) -> str:
    import json

    return json.loads((model_dir / "metadata.json").read_text())["model_version"]


def test_train_from_feature_store_and_rescore(kafka_bootstrap, trained_model, tmp_path):
    from netanomaly import simulate as sim

    topics = unique_topics("store")
    store_a, store_b = tmp_path / "store-a", tmp_path / "store-b"
    cfg_a = job_config(kafka_bootstrap, trained_model, topics, kafka__bounded=True, stream__feature_store=str(store_a))
    spec = FeatureSpec.from_config(cfg_a.features)
    sim_spec = sim.SimulationSpec(
        devices=8, duration_s=2 * 86400, anomalies=4, seed=21, window_seconds=cfg_a.features.window_seconds
    )
    events = list(sim.generate_events(sim_spec))
    ensure_topics(kafka_bootstrap, [cfg_a.kafka.topics.events])
    producer = json_producer(kafka_bootstrap)
    for ev in events:
        producer.send(cfg_a.kafka.topics.events, key=ev["device_id"], value=ev)
    producer.flush()
    producer.close()

    # 1. the job fills the store: every window, partitioned by date, with the model's verdict
    run_bounded(cfg_a, tmp_path / "job-a")
    store = read_feature_store(store_a, spec)
    n_days = len({pd.Timestamp(e["timestamp"], unit="ms", tz="UTC").date() for e in events})
    assert len(list(store_a.glob("dt=*"))) == n_days
    assert store["event_count"].sum() == len(events)
    flagged = int(store["is_anomaly"].sum())
    assert flagged > 0
    normal = read_feature_store(store_a, spec, exclude_anomalies=True)
    assert len(normal) == len(store) - flagged

    # 2. a model trained from the store's normal windows
    model_b = tmp_path / "model-b"
    train_autoencoder(normal, spec, cfg_a.training, wandb_mode="disabled", progress=False, out_dir=model_b)

    # 3. the job scores the same events with it; its scores equal offline scores of the same windows
    cfg_b = job_config(
        kafka_bootstrap,
        model_b,
        {**unique_topics("store-b"), "kafka.topics.events": topics["kafka.topics.events"]},
        kafka__bounded=True,
        stream__feature_store=str(store_b),
    )
    run_bounded(cfg_b, tmp_path / "job-b")
    online = read_feature_store(store_b, spec)
    assert len(online) == len(store)
    offline = score_features(online, model_b, top_k=3)
    offline["window_start"] = pd.to_datetime(offline["window_start"], utc=True)
    both = online.merge(offline, on=["device_id", "window_start"], suffixes=("_job", "_offline"), validate="1:1")
    assert len(both) == len(online)
    np.testing.assert_allclose(both["score_job"], both["score_offline"], rtol=1e-5, atol=1e-9)
    assert (both["is_anomaly_job"] == both["is_anomaly_offline"]).all()
    assert set(both["model_version_job"]) == set(both["model_version_offline"]) == {read_model_version(model_b)}


def test_sequence_model_on_onnxruntime_scores_like_offline(kafka_bootstrap, tmp_path):
    """An LSTM autoencoder over the last windows (LAG in Flink SQL) on ONNX Runtime in the job equals the
    offline TorchScript scores of the same windows, built into sequences by model.detectors.build_sequences."""
    from model.features import compute_window_features
    from netanomaly import simulate as sim
    from netanomaly.config import JobConfig
    from tests.integration.conftest import simulated_frame

    base = JobConfig()
    spec = FeatureSpec.from_config(base.features)
    hist = sim.SimulationSpec(devices=6, duration_s=2 * 86400, seed=31, window_seconds=spec.window_seconds)
    model = tmp_path / "lstm"
    cfg_train = base.training.model_copy(update={"detector": "lstm_autoencoder", "sequence_length": 4, "epochs": 15})
    train_autoencoder(
        compute_window_features(simulated_frame(hist), spec),
        spec,
        cfg_train,
        wandb_mode="disabled",
        progress=False,
        out_dir=model,
    )

    topics = unique_topics("lstm")
    store = tmp_path / "store"
    cfg = job_config(
        kafka_bootstrap,
        model,
        topics,
        kafka__bounded=True,
        stream__feature_store=str(store),
        model__backend="onnxruntime",
    )
    live = sim.SimulationSpec(devices=5, duration_s=10 * 3600, anomalies=2, seed=32, window_seconds=spec.window_seconds)
    ensure_topics(kafka_bootstrap, [cfg.kafka.topics.events])
    producer = json_producer(kafka_bootstrap)
    for ev in sim.generate_events(live):
        producer.send(cfg.kafka.topics.events, key=ev["device_id"], value=ev)
    producer.flush()
    producer.close()
    run_bounded(cfg, tmp_path / "job")

    online = read_feature_store(store, spec)
    assert len(online) == len(compute_window_features(simulated_frame(live), spec))
    offline = score_features(online, model, top_k=3, backend="torchscript")
    offline["window_start"] = pd.to_datetime(offline["window_start"], utc=True)
    both = online.merge(offline, on=["device_id", "window_start"], suffixes=("_job", "_offline"), validate="1:1")
    assert len(both) == len(online)
    np.testing.assert_allclose(both["score_job"], both["score_offline"], rtol=1e-4, atol=1e-7)
    assert set(both["model_version_job"]) == {read_model_version(model)}
    assert read_model_version(model).startswith("lstm-")
