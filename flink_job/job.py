"""Entry point of the streaming job: ``python flink_job/job.py`` or ``flink run -py flink_job/job.py``.

Thin on purpose: parse arguments, build the validated config, check the model and the connector
jar before anything is submitted, then submit ``build_pipeline(config)``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("netanomaly.job")


def arg_parser() -> argparse.ArgumentParser:
    """Arguments shared by ``netanomaly run`` and ``flink run -py``."""
    p = argparse.ArgumentParser(
        prog="flink_job/job.py",
        description="network-anomaly streaming job: Kafka KPI events -> window features -> model -> Kafka.",
    )
    p.add_argument("--config", type=Path, default=None, help="YAML config (default conf/job.yaml if present)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set stream.parallelism=2 (repeatable)",
    )
    p.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (kafka.bootstrap_servers)")
    p.add_argument("--model", type=Path, help="exported model folder (model.dir)")
    p.add_argument(
        "--bounded",
        action="store_true",
        default=None,
        help="stop at the latest offsets seen at start; every window then closes (kafka.bounded)",
    )
    p.add_argument("--wait", action="store_true", help="block until the job ends")
    return p


def config_from_args(args: argparse.Namespace):
    """The validated JobConfig for parsed arguments."""
    from netanomaly.config import load_config, parse_override

    overrides = dict(parse_override(o) for o in args.overrides)
    overrides.update(
        {
            "kafka.bootstrap_servers": args.bootstrap_servers,
            "model.dir": str(args.model) if args.model else None,
            "kafka.bounded": args.bounded,
        }
    )
    return load_config(args.config, overrides)


def prepare(cfg):
    """Fail fast on a bad model or missing jar, create topics; returns the described pipeline."""
    from flink_job.pipeline import build_pipeline
    from model.export import load_model
    from model.features import FeatureSpec
    from model.registry import resolve
    from netanomaly.infra.jars import flink_kafka_connector, flink_parquet_jars
    from netanomaly.kafka_io import ensure_topics

    spec = FeatureSpec.from_config(cfg.features)
    loaded = load_model(resolve(Path(cfg.model.dir).expanduser()), expected_feature_names=spec.feature_names)
    if cfg.model.backend == "onnxruntime":
        from model.scoring import Scorer

        Scorer(loaded, torch_threads=1, backend="onnxruntime")  # fails now, not in a worker, if model.onnx is bad
    t = cfg.kafka.topics
    topics = [t.events, t.anomalies, t.metrics, t.dlq] + ([t.features] if cfg.stream.emit_features else [])
    ensure_topics(cfg.kafka.bootstrap_servers, topics, cfg.kafka.partitions)
    jars = [flink_kafka_connector()]
    if cfg.stream.feature_store is not None:
        jars += flink_parquet_jars()
    return build_pipeline(cfg, jars, sequence_length=int(loaded.metadata.get("sequence_length", 1)))


def main(argv: list[str] | None = None) -> int:
    """Parse, validate, submit. Exit code 2 on a configuration or model error."""
    from flink_job.pipeline import submit
    from model.exceptions import ModelError
    from netanomaly.exceptions import NetAnomalyError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = arg_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        pipeline = prepare(cfg)
    except (NetAnomalyError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    client = submit(pipeline)
    log.info("submitted job %s (%s)", client.get_job_id(), pipeline.job_name)
    if args.wait:
        client.get_job_execution_result().result()
    return 0


if __name__ == "__main__":
    # `flink run -py flink_job/job.py` executes this file directly: make the repo importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
