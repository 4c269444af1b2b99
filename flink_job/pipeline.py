"""``build_pipeline(config)`` describes the job; ``submit`` turns the description into a Flink job.

The description is plain data (Flink settings, SQL statements, the UDF to register), so it can be
inspected and tested without a cluster. Steps, by name:

  kpi_events_raw      Kafka source: raw payload, Kafka metadata, event time, watermark
  kpi_events_routed   parse + validate (JVM): reason/field per event, NULL when valid and on time
  kpi_dlq             rejected and late events with their reason (dead-letter topic)
  kpi_events_valid    the valid, on-time events
  window_features     per-device TUMBLE window statistics (the feature spec)
  scored_windows      the pandas UDF running the exported model on Arrow batches
  kpi_anomalies       anomalous windows with top contributing features
  kpi_metrics         one fleet record per window
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from flink_job import sql
from model.features import FeatureSpec
from netanomaly.config import JobConfig


@dataclass(frozen=True)
class Pipeline:
    """A described job: settings, named SQL steps and the scoring UDF's parameters."""

    settings: dict[str, str]
    ddl: list[tuple[str, str]]
    inserts: list[tuple[str, str]]
    model_dir: Path
    feature_names: list[str]
    sequence_length: int
    top_k: int
    torch_threads: int
    backend: str
    reload_check_s: float
    drift_horizon: int
    job_name: str
    jars: list[Path] = field(default_factory=list)


def flink_settings(cfg: JobConfig, jars: list[Path]) -> dict[str, str]:
    """Flink configuration of the job (also valid for `flink run`)."""
    s = cfg.stream
    py = str(s.python_executable or sys.executable)
    settings = {
        "table.local-time-zone": "UTC",
        "parallelism.default": str(s.parallelism),
        "pipeline.name": s.job_name,
        "python.executable": py,
        "python.client.executable": py,
        "python.execution-mode": "process",
        "python.fn-execution.arrow.batch.size": str(s.arrow_batch_size),
        "python.fn-execution.bundle.size": str(s.arrow_batch_size),
        "python.fn-execution.bundle.time": str(s.bundle_time_ms),
        "table.exec.source.idle-timeout": f"{s.idle_timeout_seconds} s" if s.idle_timeout_seconds else "0 ms",
        "pipeline.jars": ";".join(p.resolve().as_uri() for p in jars),
    }
    if s.checkpoint_interval_seconds > 0:
        settings["execution.checkpointing.interval"] = f"{s.checkpoint_interval_seconds} s"
    return settings


def build_pipeline(cfg: JobConfig, jars: list[Path], sequence_length: int = 1) -> Pipeline:
    """Describe the whole job for ``cfg``.

    ``jars`` must include the Kafka SQL connector (and the Parquet format with a feature store);
    ``sequence_length`` is the exported model's (from its metadata): above 1, the model sees the
    device's last windows side by side.
    """
    spec = FeatureSpec.from_config(cfg.features)
    top_k = min(cfg.model.top_k, len(spec.feature_names))
    ddl = [
        ("kpi_events_raw", sql.source_ddl(cfg)),
        ("kpi_events_routed_sql", sql.routed_view(cfg)),
        ("kpi_events_routed", BARRIER),
        ("kpi_dlq", sql.dlq_ddl(cfg)),
        ("kpi_events_valid", sql.valid_view(cfg)),
        ("window_features", sql.features_view(cfg, spec)),
        *([("window_sequences", sql.sequence_view(spec, sequence_length))] if sequence_length > 1 else []),
        ("scored_windows_sql", sql.scored_view(spec, top_k, sequence_length)),
        ("scored_windows", BARRIER),
        ("scored_for_fleet", sql.fleet_view(spec)),
        ("kpi_anomalies", sql.anomalies_ddl(cfg)),
        ("kpi_metrics", sql.metrics_ddl(cfg)),
    ]
    inserts = [
        ("kpi_dlq", sql.dlq_insert()),
        ("kpi_anomalies", sql.anomalies_insert(spec, top_k)),
        ("kpi_metrics", sql.metrics_insert(spec)),
    ]
    if cfg.stream.emit_features:
        ddl.append(("kpi_features", sql.features_ddl(cfg, spec)))
        inserts.append(("kpi_features", sql.features_insert(spec)))
    if cfg.stream.feature_store is not None:
        ddl.append(("feature_store", sql.feature_store_ddl(cfg, spec)))
        inserts.append(("feature_store", sql.feature_store_insert(spec)))
    all_jars = [*jars, *cfg.stream.jars]
    return Pipeline(
        settings=flink_settings(cfg, all_jars),
        ddl=ddl,
        inserts=inserts,
        model_dir=Path(cfg.model.dir).expanduser().resolve(),
        feature_names=spec.feature_names,
        sequence_length=sequence_length,
        top_k=top_k,
        torch_threads=cfg.model.torch_threads,
        backend=cfg.model.backend,
        reload_check_s=cfg.model.reload_check_seconds,
        drift_horizon=cfg.model.drift_horizon_windows,
        job_name=cfg.stream.job_name,
        jars=all_jars,
    )


BARRIER = "-- materialize: Table -> DataStream -> Table"


def create_statement_set(pipeline: Pipeline):
    """A StreamTableEnvironment with every step declared; returns ``(env, t_env, statement_set)``.

    Two steps cross a Table -> DataStream -> Table boundary (JVM only, no Python), so that each is
    computed once for all the branches that consume it:
    * the routed events: otherwise the dead-letter branch and the window branch each get their own
      Kafka source, with their own watermarks, so an event near the lateness edge could be judged
      late in one and on time in the other (lost or counted twice);
    * the scored windows: otherwise the optimizer pushes each branch's projection into the Python
      calc and runs the model once per consuming branch (EXPLAIN showed two score_windows operators),
      doubling the work and letting the branches score a window with different models in a hot swap.
    """
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import Schema, StreamTableEnvironment

    from flink_job.scoring import make_dead_letter_udf, make_udf

    config = Configuration()
    for key, value in pipeline.settings.items():
        config.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    t_env = StreamTableEnvironment.create(env)
    for key, value in pipeline.settings.items():
        t_env.get_config().set(key, value)
    t_env.create_temporary_function(
        "score_windows",
        make_udf(
            pipeline.model_dir,
            pipeline.feature_names,
            pipeline.sequence_length,
            pipeline.top_k,
            pipeline.torch_threads,
            pipeline.backend,
            pipeline.reload_check_s,
            pipeline.drift_horizon,
        ),
    )
    t_env.create_temporary_function("count_dead_letter", make_dead_letter_udf())
    for name, statement in pipeline.ddl:
        if statement == BARRIER:
            stream = t_env.to_data_stream(t_env.from_path(f"{name}_sql"))
            schema = (
                Schema.new_builder()
                .column_by_metadata("rowtime", "TIMESTAMP_LTZ(3)")
                .watermark("rowtime", "SOURCE_WATERMARK()")
                .build()
            )
            t_env.create_temporary_view(name, t_env.from_data_stream(stream, schema))  # + column rowtime
        else:
            t_env.execute_sql(statement)
    stmt_set = t_env.create_statement_set()
    for _, statement in pipeline.inserts:
        stmt_set.add_insert_sql(statement)
    stmt_set.attach_as_datastream()
    return env, t_env, stmt_set


def submit(pipeline: Pipeline):
    """Submit the job (returns at once); the JobClient of the running job."""
    env, _, _ = create_statement_set(pipeline)
    return env.execute_async(pipeline.job_name)
