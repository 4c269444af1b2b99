"""The same job file submitted with `flink run -py` to a standalone cluster from the pyflink distribution,
scraped by a real Prometheus server; the Grafana dashboard is checked against what the scrape holds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from netanomaly.infra.flink_cluster import StandaloneCluster
from netanomaly.infra.jars import flink_kafka_connector
from netanomaly.kafka_io import consume, ensure_topics, json_producer
from netanomaly.local_job import write_config
from tests.conftest import repo_root
from tests.integration.conftest import job_config, unique_topics
from tests.malformed import MALFORMED

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

PROM_PORT = 19090
REPORTER_PORTS = range(19250, 19256)
DASHBOARD = repo_root() / "docker" / "grafana" / "dashboards" / "netanomaly.json"
OUR_METRICS = (
    "windows_scored",
    "anomalies_detected",
    "reason_dead_letters",
    "model_version_model_active",
    "scoring_batch_ms",
    "feature_drift_psi_milli",
)


def _prom_get(path: str, **params) -> dict:
    url = f"http://127.0.0.1:{PROM_PORT}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _start_prometheus(workdir: Path) -> subprocess.Popen:
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is not installed (scripts/test.sh installs Debian's prometheus package)"
    targets = ", ".join(f'"127.0.0.1:{p}"' for p in REPORTER_PORTS)
    conf = workdir / "prometheus.yml"
    conf.write_text(
        "global:\n  scrape_interval: 2s\nscrape_configs:\n"
        f"  - job_name: flink\n    static_configs:\n      - targets: [{targets}]\n"
    )
    log = open(workdir / "prometheus.log", "wb")
    return subprocess.Popen(
        [
            binary,
            f"--config.file={conf}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{PROM_PORT}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _dashboard_metric_names() -> set[str]:
    dash = json.loads(DASHBOARD.read_text())
    names = set()
    for panel in dash["panels"]:
        exprs = [t["expr"] for t in panel["targets"]]
        assert exprs, f"panel {panel['title']!r} has no query"
        for expr in exprs:
            found = set(re.findall(r"\bflink_[A-Za-z0-9_]+", expr))
            assert found, f"panel {panel['title']!r} names no Flink metric: {expr}"
            names |= found
    return names


def test_flink_run_on_standalone_cluster_scraped_by_prometheus(kafka_bootstrap, trained_model, tmp_path):
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
    for payload, _, _ in MALFORMED:
        producer.send(cfg.kafka.topics.events, value=payload.encode())
    producer.flush()
    producer.close()
    conf = write_config(cfg, tmp_path / "job.yaml")

    prometheus = _start_prometheus(tmp_path)
    cluster = StandaloneCluster(tmp_path / "flink", prometheus_ports=f"{REPORTER_PORTS[0]}-{REPORTER_PORTS[-1]}")
    try:
        cluster.start()
        job_id = cluster.run_python_job(
            repo_root() / "flink_job" / "job.py", ["--config", str(conf)], jars=[flink_kafka_connector()]
        )
        # windows close as the watermark advances through the stream: fleet records arrive while it runs
        metrics = consume(kafka_bootstrap, cfg.kafka.topics.metrics, until=lambda r: len(r) >= 10, timeout_s=240)
        assert len(metrics) >= 10, f"cluster logs:\n{cluster.logs()}"
        assert cluster.job_state(job_id) == "RUNNING"
        assert all(m["windows"] >= 1 and m["devices"] <= spec.devices for m in metrics)

        # Prometheus scrapes the job's own metrics from Flink's reporter
        wanted = {f"flink_taskmanager_job_task_operator_{m}" for m in OUR_METRICS}
        deadline = time.monotonic() + 120
        names: set[str] = set()
        while time.monotonic() < deadline:
            names = set(_prom_get("/api/v1/label/__name__/values")["data"])
            dead = _prom_get(
                "/api/v1/query", query="sum by (reason) (flink_taskmanager_job_task_operator_reason_dead_letters)"
            )
            by_reason = {r["metric"]["reason"]: float(r["value"][1]) for r in dead["data"]["result"]}
            if wanted <= names and sum(by_reason.values()) >= len(MALFORMED):
                break
            time.sleep(2)
        assert wanted <= names, f"missing {wanted - names}"
        expected = {}
        for _, reason, _ in MALFORMED:
            expected[reason] = expected.get(reason, 0) + 1
        assert {r: int(v) for r, v in by_reason.items() if v} == expected
        # the counter reaches Prometheus a report + scrape interval after the records reach Kafka
        in_kafka = sum(m["windows"] for m in metrics)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            scored = _prom_get("/api/v1/query", query="sum(flink_taskmanager_job_task_operator_windows_scored)")
            if float(scored["data"]["result"][0]["value"][1]) >= in_kafka:
                break
            time.sleep(2)
        assert float(scored["data"]["result"][0]["value"][1]) >= in_kafka
        active = _prom_get("/api/v1/query", query="flink_taskmanager_job_task_operator_model_version_model_active == 1")
        meta = json.loads((trained_model / "metadata.json").read_text())
        assert {r["metric"]["model_version"] for r in active["data"]["result"]} == {
            meta["model_version"].replace("-", "_")
        }

        # Grafana cannot run here: every panel's query must name a metric the real scrape exposes
        missing = _dashboard_metric_names() - names
        assert not missing, f"dashboard panels query metrics the job does not expose: {missing}"

        cluster.cancel(job_id)
        deadline = time.monotonic() + 60
        while cluster.job_state(job_id) not in ("CANCELED", "FAILED", "FINISHED") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert cluster.job_state(job_id) == "CANCELED"
    finally:
        cluster.stop()
        prometheus.terminate()
        prometheus.wait(timeout=30)
