"""The same job file submitted with `flink run -py` to a standalone cluster from the pyflink distribution."""

from __future__ import annotations

import time

import pytest

from netanomaly.infra.flink_cluster import StandaloneCluster
from netanomaly.infra.jars import flink_kafka_connector
from netanomaly.kafka_io import consume, ensure_topics, json_producer
from netanomaly.local_job import write_config
from tests.conftest import repo_root
from tests.integration.conftest import job_config, unique_topics

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def test_flink_run_on_standalone_cluster(kafka_bootstrap, trained_model, tmp_path):
    from netanomaly import simulate as sim

    topics = unique_topics("cluster")
    cfg = job_config(kafka_bootstrap, trained_model, topics, stream__parallelism=2)
    spec = sim.SimulationSpec(
        devices=4, duration_s=3 * 3600, anomalies=2, seed=5, window_seconds=cfg.features.window_seconds
    )
    events = list(sim.generate_events(spec))
    ensure_topics(kafka_bootstrap, [cfg.kafka.topics.events])
    producer = json_producer(kafka_bootstrap)
    for ev in events:
        producer.send(cfg.kafka.topics.events, key=ev["device_id"], value=ev)
    producer.flush()
    producer.close()
    conf = write_config(cfg, tmp_path / "job.yaml")

    cluster = StandaloneCluster(tmp_path / "flink").start()
    try:
        job_id = cluster.run_python_job(
            repo_root() / "flink_job" / "job.py", ["--config", str(conf)], jars=[flink_kafka_connector()]
        )
        # windows close as the watermark advances through the stream: fleet records arrive while it runs
        metrics = consume(kafka_bootstrap, cfg.kafka.topics.metrics, until=lambda r: len(r) >= 10, timeout_s=240)
        state = cluster.job_state(job_id)
        cluster.cancel(job_id)
        deadline = time.monotonic() + 60
        while cluster.job_state(job_id) not in ("CANCELED", "FAILED", "FINISHED") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(metrics) >= 10, f"job state {state}; cluster logs:\n{cluster.logs()}"
        assert state == "RUNNING"
        assert all(m["windows"] >= 1 and m["devices"] <= spec.devices for m in metrics)
        assert cluster.job_state(job_id) == "CANCELED"
    finally:
        cluster.stop()
