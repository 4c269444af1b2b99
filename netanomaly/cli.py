"""The ``netanomaly`` command line (click). Every command takes ``--config`` and explains itself in --help."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from netanomaly.exceptions import NetAnomalyError

CONFIG_HELP = "YAML config file (default: conf/job.yaml when present, else built-in defaults)."


def _config(path: Path | None, overrides: list[str] | tuple[str, ...] = (), extra: dict[str, Any] | None = None):
    from netanomaly.config import load_config, parse_override

    merged = dict(parse_override(o) for o in overrides)
    merged.update({k: v for k, v in (extra or {}).items() if v is not None})
    return load_config(path, merged)


def _config_options(f):
    f = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a config value, e.g. --set features.window_seconds=300 (repeatable).",
    )(f)
    f = click.option("--config", "config_path", type=click.Path(path_type=Path), default=None, help=CONFIG_HELP)(f)
    return f


def _fail(e: Exception) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Real-time anomaly detection for network KPIs.

    \b
    Typical flow on a laptop:
      netanomaly kafka start                      # local Kafka broker on 127.0.0.1
      netanomaly simulate --out history.jsonl     # normal history
      netanomaly features --events history.jsonl --out feats.parquet
      netanomaly train --features feats.parquet --out models/current
      netanomaly run                              # the streaming job (local mini-cluster)
      netanomaly simulate --to-kafka --anomalies 10 --labels labels.jsonl
    Or all of it at once: netanomaly demo
    """


# ----------------------------------------------------------------------------------------- kafka
@main.group()
def kafka() -> None:
    """Local single-node Apache Kafka (KRaft) on 127.0.0.1 for development and tests."""


def _broker_cfg(config_path: Path | None, overrides: tuple[str, ...], port: int | None, data_dir: Path | None):
    extra = {"kafka.local.port": port, "kafka.local.data_dir": str(data_dir) if data_dir else None}
    return _config(config_path, overrides, extra).kafka.local


def _broker_options(f):
    f = click.option("--data-dir", type=click.Path(path_type=Path), help="Broker data folder (kafka.local.data_dir).")(
        f
    )
    f = click.option("--port", type=int, help="Client port on 127.0.0.1 (kafka.local.port).")(f)
    return _config_options(f)


@kafka.command("start")
@_broker_options
def kafka_start(config_path, overrides, port, data_dir) -> None:
    """Start the broker (fetching its jars with Maven on first use) and wait until it is ready."""
    from netanomaly.infra import kafka_local

    try:
        cfg = _broker_cfg(config_path, overrides, port, data_dir)
        t0 = time.monotonic()
        st = kafka_local.start(cfg)
    except NetAnomalyError as e:
        _fail(e)
    click.echo(f"{st} (ready in {time.monotonic() - t0:.1f} s)")


@kafka.command("stop")
@_broker_options
def kafka_stop(config_path, overrides, port, data_dir) -> None:
    """Stop the broker started from this data folder (SIGTERM, then SIGKILL after 30 s)."""
    from netanomaly.infra import kafka_local

    cfg = _broker_cfg(config_path, overrides, port, data_dir)
    click.echo("stopped" if kafka_local.stop(cfg) else "was not running")


@kafka.command("status")
@_broker_options
def kafka_status(config_path, overrides, port, data_dir) -> None:
    """Say whether the broker runs; exit code 1 when it does not."""
    from netanomaly.infra import kafka_local

    st = kafka_local.status(_broker_cfg(config_path, overrides, port, data_dir))
    click.echo(str(st))
    sys.exit(0 if st.running else 1)


@main.group()
def jars() -> None:
    """JVM jars (Kafka broker, Flink Kafka SQL connector) from Maven Central."""


@jars.command("fetch")
def jars_fetch() -> None:
    """Fetch (or find in the cache) every jar; prints where they are."""
    from netanomaly.infra.jars import flink_kafka_connector, flink_parquet_jars, kafka_libs

    try:
        click.echo(f"kafka broker: {kafka_libs()}")
        click.echo(f"flink kafka connector: {flink_kafka_connector()}")
        click.echo(f"flink parquet format: {flink_parquet_jars()[0].parent}")
    except NetAnomalyError as e:
        _fail(e)


# -------------------------------------------------------------------------------------- simulate
def parse_duration(text: str) -> int:
    """Seconds from '90', '90s', '15m', '6h', '7d'."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(float(t))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 6h or 7d") from None


@main.command()
@_config_options
@click.option("--devices", default=20, show_default=True, help="Number of devices.")
@click.option("--duration", default="1d", show_default=True, help="Simulated time span (e.g. 6h, 7d).")
@click.option("--interval", default=60.0, show_default=True, help="Seconds between events of one device.")
@click.option("--anomalies", default=0, show_default=True, help="Anomaly episodes to inject (0: normal history).")
@click.option("--kinds", default=None, help="Comma-separated anomaly kinds (default: all).")
@click.option("--seed", default=42, show_default=True, help="Random seed: same seed, same events and labels.")
@click.option("--start", "start_iso", default=None, help="Start time, ISO-8601 (default 2026-01-05T00:00:00Z).")
@click.option("--out", type=click.Path(path_type=Path), help="Write events to this file (.jsonl, .csv, .parquet).")
@click.option("--to-kafka", is_flag=True, help="Produce events to the events topic instead of a file.")
@click.option("--rate", default=0.0, show_default=True, help="Events per second to Kafka; 0 = as fast as possible.")
@click.option("--labels", type=click.Path(path_type=Path), help="Write anomaly labels (JSONL) here.")
@click.option("--iso-timestamps", is_flag=True, help="Write timestamps as ISO-8601 strings, not epoch ms.")
@click.option("--bootstrap-servers", default=None, help="Kafka bootstrap servers (kafka.bootstrap_servers).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def simulate(
    config_path,
    overrides,
    devices,
    duration,
    interval,
    anomalies,
    kinds,
    seed,
    start_iso,
    out,
    to_kafka,
    rate,
    labels,
    iso_timestamps,
    bootstrap_servers,
    progress,
) -> None:
    """Synthetic KPI events for N devices, with labelled injected anomalies.

    Daily traffic cycles, per-device baselines, correlated KPIs and noise; anomaly kinds:
    latency_spike, throughput_collapse, packet_loss_burst, slow_degradation, flapping.
    Deterministic for a seed. Write to a file (--out) or to Kafka (--to-kafka, optionally at --rate).
    """
    from netanomaly import simulate as sim
    from netanomaly.events import parse_timestamp_ms

    if bool(out) == bool(to_kafka):
        raise click.UsageError("give exactly one of --out FILE or --to-kafka")
    try:
        cfg = _config(config_path, overrides, {"kafka.bootstrap_servers": bootstrap_servers})
        kw: dict[str, Any] = {}
        if start_iso:
            ms = parse_timestamp_ms(start_iso)
            if ms is None:
                raise click.BadParameter(f"{start_iso!r} is not ISO-8601 with a zone, e.g. 2026-01-05T00:00:00Z")
            kw["start_ms"] = ms
        if kinds:
            kw["kinds"] = tuple(k.strip() for k in kinds.split(",") if k.strip())
        spec = sim.SimulationSpec(
            devices=devices,
            duration_s=parse_duration(duration),
            interval_s=interval,
            anomalies=anomalies,
            seed=seed,
            kpis=tuple(cfg.features.kpis),
            window_seconds=cfg.features.window_seconds,
            **kw,
        )
        plan = sim.plan_anomalies(spec)
    except ValueError as e:
        _fail(e)
    except NetAnomalyError as e:
        _fail(e)
    if labels:
        sim.write_labels(plan, labels)
    events = sim.generate_events(spec, plan)
    total = sim.event_count(spec)
    from tqdm import tqdm

    bar = tqdm(events, total=total, unit="ev", disable=not progress, desc="simulate")
    if out:
        n = sim.write_events_file(bar, out, iso_timestamps=iso_timestamps)
        click.echo(f"wrote {n} events to {out}" + (f", {len(plan)} labels to {labels}" if labels else ""))
        return
    n = produce_events(cfg.kafka.bootstrap_servers, cfg.kafka.topics.events, bar, rate, iso_timestamps)
    click.echo(f"produced {n} events to {cfg.kafka.topics.events}" + (f", labels in {labels}" if labels else ""))


def produce_events(bootstrap: str, topic: str, events, rate: float = 0.0, iso_timestamps: bool = False) -> int:
    """Send events (dicts) to Kafka keyed by device, optionally paced at ``rate`` per second."""
    from netanomaly.events import iso_utc
    from netanomaly.kafka_io import ensure_topics, json_producer

    ensure_topics(bootstrap, [topic])
    producer = json_producer(bootstrap)
    t0 = time.monotonic()
    n = 0
    try:
        for ev in events:
            if iso_timestamps:
                ev = {**ev, "timestamp": iso_utc(ev["timestamp"])}
            producer.send(topic, key=ev["device_id"], value=ev)
            n += 1
            if rate > 0:
                ahead = n / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    return n


# -------------------------------------------------------------------------------------- features
@main.command()
@_config_options
@click.option(
    "--events",
    "events_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Events file: .jsonl, .csv or .parquet.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Features file (.parquet or .csv).")
@click.option("--rejects", type=click.Path(path_type=Path), help="Write rejected records (JSONL) here.")
def features(config_path, overrides, events_path, out, rejects) -> None:
    """Offline window features with the same spec as the streaming job (features section of the config)."""
    from model.features import FeatureSpec, compute_window_features
    from netanomaly.events import load_events

    try:
        cfg = _config(config_path, overrides)
        valid, rejected = load_events(events_path, cfg.features)
    except NetAnomalyError as e:
        _fail(e)
    spec = FeatureSpec.from_config(cfg.features)
    feats = compute_window_features(valid, spec)
    write_table(feats, out)
    if rejects is not None:
        with open(rejects, "w", encoding="utf-8") as fh:
            for r in rejected.to_dict(orient="records"):
                fh.write(json.dumps(r, default=str) + "\n")
    click.echo(
        f"{len(feats)} windows from {len(valid)} events to {out}; {len(rejected)} rejected"
        + (f" (see {rejects})" if rejects else "")
    )
    if len(rejected):
        counts = rejected.groupby(["reason", "field"], dropna=False).size()
        for (reason, field), c in counts.items():
            click.echo(f"  rejected {c:>6}  {reason} {field if isinstance(field, str) else ''}")


def write_table(df, path: Path) -> None:
    """Write a frame as Parquet or CSV, by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True, date_format="iso")
    else:
        raise click.BadParameter(f"{path}: use .parquet, .csv or .jsonl")


def read_table(path: Path):
    """Read a features file (.parquet or .csv)."""
    import pandas as pd

    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, parse_dates=["window_start", "window_end"])
    raise click.BadParameter(f"{path}: use .parquet or .csv")


# ----------------------------------------------------------------------------------------- train
@main.command()
@_config_options
@click.option(
    "--features",
    "features_path",
    type=click.Path(exists=True, path_type=Path),
    help="Window features of normal history (from `netanomaly features`).",
)
@click.option(
    "--feature-store",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Train from the job's Parquet feature store instead (stream.feature_store).",
)
@click.option("--exclude-anomalies", is_flag=True, help="With --feature-store: skip the windows the job flagged.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Model folder to write.")
@click.option(
    "--wandb-mode",
    type=click.Choice(["online", "offline", "disabled"]),
    default=None,
    help="W&B logging (default: online with WANDB_API_KEY set, else offline).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def train(config_path, overrides, features_path, feature_store, exclude_anomalies, out, wandb_mode, progress) -> None:
    """Train the detector (training.detector) on normal windows, calibrate the threshold on normal
    validation windows only, and export TorchScript + ONNX + metadata.json to --out."""
    from model.exceptions import ModelError
    from model.feature_store import read_feature_store
    from model.features import FeatureSpec
    from model.train import train_autoencoder

    if bool(features_path) == bool(feature_store):
        raise click.UsageError("give exactly one of --features FILE or --feature-store DIR")
    try:
        cfg = _config(config_path, overrides, {"wandb.mode": wandb_mode})
        spec = FeatureSpec.from_config(cfg.features)
        if feature_store:
            feats = read_feature_store(feature_store, spec, exclude_anomalies=exclude_anomalies)
            click.echo(f"{len(feats)} windows from the feature store {feature_store}")
        else:
            feats = read_table(features_path)
        result = train_autoencoder(
            feats,
            spec,
            cfg.training,
            wandb_cfg=cfg.wandb,
            wandb_mode=wandb_mode,
            progress=progress,
            out_dir=out,
        )
    except (NetAnomalyError, ModelError) as e:
        _fail(e)
    click.echo(
        f"model in {result.model_dir}: threshold {result.threshold:.6g}, best epoch {result.best_epoch}, "
        f"{result.n_train} train / {result.n_val} validation windows"
        + (f"; W&B run in {result.wandb_run_dir}" if result.wandb_run_dir else "")
    )


# ----------------------------------------------------------------------------------------- score
@main.command()
@_config_options
@click.option(
    "--model", "model_dir", required=True, type=click.Path(exists=True, path_type=Path), help="Exported model folder."
)
@click.option(
    "--features",
    "features_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Window features file.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Scores file (.jsonl, .parquet).")
def score(config_path, overrides, model_dir, features_path, out) -> None:
    """Offline scores per window with an exported model (same scorer as the job)."""
    from model.exceptions import ModelError
    from model.scoring import score_features

    try:
        cfg = _config(config_path, overrides)
        scores = score_features(read_table(features_path), model_dir, top_k=cfg.model.top_k, backend=cfg.model.backend)
    except (NetAnomalyError, ModelError) as e:
        _fail(e)
    if out.suffix == ".jsonl":
        with open(out, "w", encoding="utf-8") as fh:
            for r in scores.to_dict(orient="records"):
                fh.write(json.dumps(r, default=_jsonable) + "\n")
    else:
        write_table(scores, out)
    click.echo(f"{len(scores)} windows scored, {int(scores['is_anomaly'].sum())} anomalous, to {out}")


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


# --------------------------------------------------------------------------------------- retrain
@main.command()
@_config_options
@click.option(
    "--feature-store",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The job's Parquet feature store (stream.feature_store).",
)
@click.option(
    "--registry",
    "registry_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model registry folder (created if missing); point the job's model.dir at it for hot swaps.",
)
@click.option(
    "--recent-fraction",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0.01, 0.9),
    help="Newest share of the store's windows kept out of training to compare the models on.",
)
@click.option("--min-gain", default=0.0, show_default=True, help="Quality margin the challenger must beat by.")
@click.option(
    "--wandb-mode",
    type=click.Choice(["online", "offline", "disabled"]),
    default=None,
    help="W&B for training and the production alias (default: online with WANDB_API_KEY, else offline).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def retrain(
    config_path, overrides, feature_store, registry_dir, recent_fraction, min_gain, wandb_mode, progress
) -> None:
    """Champion/challenger: train on the feature store, compare with production on recent windows,
    register the challenger and promote it only if it is better. A running job pointed at the
    registry (model.dir) switches to a promoted model without a restart."""
    from model.exceptions import ModelError
    from model.features import FeatureSpec
    from model.retrain import retrain as run_retrain

    try:
        cfg = _config(config_path, overrides, {"wandb.mode": wandb_mode})
        result = run_retrain(
            feature_store,
            registry_dir,
            FeatureSpec.from_config(cfg.features),
            cfg.training,
            recent_fraction=recent_fraction,
            min_gain=min_gain,
            wandb_cfg=cfg.wandb,
            wandb_mode=cfg.wandb.resolved_mode(),
            progress=progress,
        )
    except (NetAnomalyError, ModelError) as e:
        _fail(e)
    ch, cp = result.challenger, result.champion
    click.echo(f"trained on {result.n_train} windows, compared on {result.n_recent} recent windows")
    click.echo(
        f"  challenger {ch.version}: false alarms {ch.false_alarm_rate:.3%}, synthetic AUROC {ch.synthetic_auroc:.4f}"
    )
    if cp:
        click.echo(
            f"  champion   {cp.version}: false alarms {cp.false_alarm_rate:.3%}, synthetic AUROC "
            f"{cp.synthetic_auroc:.4f}"
        )
    click.echo(("PROMOTED: " if result.promoted else "kept the champion: ") + result.reason)
    click.echo(f"production is {result.production}")


@main.command()
@click.option(
    "--registry",
    "registry_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Model registry folder.",
)
@click.argument("version", required=False)
def promote(registry_dir, version) -> None:
    """List the registry's versions, or make VERSION the production model (a manual promotion or rollback)."""
    from model import registry
    from model.exceptions import ModelError

    try:
        if version:
            prod = registry.promote(registry_dir, version)
            click.echo(f"production is now {prod.version}")
            return
        current = registry.production(registry_dir)
        for v in registry.versions(registry_dir):
            click.echo(("* " if current and current.version == v else "  ") + v)
    except ModelError as e:
        _fail(e)


# ------------------------------------------------------------------------------------------- run
@main.command()
@_config_options
@click.option("--bootstrap-servers", default=None, help="Kafka bootstrap servers (kafka.bootstrap_servers).")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), help="Exported model folder (model.dir).")
@click.option("--bounded", is_flag=True, default=None, help="Stop at the latest offsets seen at start.")
def run(config_path, overrides, bootstrap_servers, model_dir, bounded) -> None:
    """Run the streaming job on a local Flink mini-cluster until it ends or Ctrl-C.

    The same job runs on a cluster with:  flink run -py flink_job/job.py --config conf/job.yaml
    """
    from flink_job import job

    argv = [*(["--config", str(config_path)] if config_path else []), *sum((["--set", o] for o in overrides), [])]
    if bootstrap_servers:
        argv += ["--bootstrap-servers", bootstrap_servers]
    if model_dir:
        argv += ["--model", str(model_dir)]
    if bounded:
        argv.append("--bounded")
    argv.append("--wait")
    sys.exit(job.main(argv))


# ------------------------------------------------------------------------------------------ demo
@main.command()
@_config_options
@click.option("--devices", default=12, show_default=True)
@click.option("--history", default="3d", show_default=True, help="Normal history to train on.")
@click.option("--live", default="12h", show_default=True, help="Simulated span streamed through the job.")
@click.option("--anomalies", default=10, show_default=True, help="Anomaly episodes in the live stream.")
@click.option("--rate", default=400.0, show_default=True, help="Live events per second.")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("out/demo"), show_default=True)
def demo(config_path, overrides, devices, history, live, anomalies, rate, workdir) -> None:
    """Kafka + training + the streaming job + live simulated events; prints anomalies as they arrive.

    Stops everything it started, also on Ctrl-C, and ends with event-level recall and precision
    against the injected labels.
    """
    from netanomaly.demo import DemoSpec, run_demo

    try:
        cfg = _config(config_path, overrides)
        spec = DemoSpec(
            devices=devices,
            history_s=parse_duration(history),
            live_s=parse_duration(live),
            anomalies=anomalies,
            rate=rate,
            workdir=workdir,
        )
        sys.exit(run_demo(cfg, spec))
    except NetAnomalyError as e:
        _fail(e)


def _add_commands() -> None:
    """Commands that live in their own modules (each imports its heavy dependencies lazily)."""
    from netanomaly.eval_commands import datasets, evaluate
    from netanomaly.monitor.cli import monitor
    from netanomaly.report import report

    for command in (datasets, evaluate, monitor, report):
        main.add_command(command)


_add_commands()

if __name__ == "__main__":
    main()
