"""The end-to-end demo: Kafka, training, the streaming job, live events, detections, a score card."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click

from netanomaly.config import JobConfig
from netanomaly.exceptions import NetAnomalyError


@dataclass(frozen=True)
class DemoSpec:
    """Sizes of the demo run."""

    devices: int = 12
    history_s: int = 3 * 86400
    live_s: int = 12 * 3600
    anomalies: int = 10
    rate: float = 400.0
    workdir: Path = Path("out/demo")
    seed: int = 11
    drain_timeout_s: float = 180.0


def _with(cfg: JobConfig, **sections) -> JobConfig:
    """A copy of ``cfg`` with dotted overrides, validated again."""
    from netanomaly.config import load_config
    from netanomaly.local_job import write_config

    tmp = write_config(cfg, Path(sections.pop("_workdir")) / "base-config.yaml")
    return load_config(tmp, {k.replace("__", "."): v for k, v in sections.items()})


def run_demo(cfg: JobConfig, spec: DemoSpec) -> int:
    """Run the demo; returns the process exit code (0 when it ran to the end)."""
    import signal

    from model.event_metrics import Episode, event_metrics
    from model.features import FeatureSpec, compute_window_features
    from model.train import train_autoencoder
    from netanomaly import simulate as sim
    from netanomaly.cli import produce_events
    from netanomaly.infra import kafka_local
    from netanomaly.kafka_io import ensure_topics
    from netanomaly.local_job import JobProcess

    def _interrupt(signum, frame):  # SIGTERM behaves like Ctrl-C: clean up what the demo started
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    workdir = spec.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    started_kafka = False
    job: JobProcess | None = None
    stop_producer = threading.Event()
    try:
        # 1. Kafka
        bootstrap = cfg.kafka.bootstrap_servers
        if kafka_local.serves(bootstrap):
            click.echo(f"[1/5] using the Kafka broker already at {bootstrap}")
        else:
            click.echo("[1/5] starting Kafka ...")
            st = kafka_local.start(cfg.kafka.local)
            started_kafka = True
            bootstrap = st.bootstrap_servers
            click.echo(f"[1/5] {st}")
        suffix = time.strftime("%Y%m%d%H%M%S")
        cfg = _with(
            cfg,
            _workdir=workdir,
            kafka__bootstrap_servers=bootstrap,
            kafka__topics__events=f"demo-{suffix}-kpi-events",
            kafka__topics__anomalies=f"demo-{suffix}-kpi-anomalies",
            kafka__topics__metrics=f"demo-{suffix}-kpi-metrics",
            kafka__topics__dlq=f"demo-{suffix}-kpi-dlq",
            model__dir=str(workdir / "model"),
        )
        fspec = FeatureSpec.from_config(cfg.features)

        # 2. Train on simulated normal history
        click.echo(f"[2/5] simulating {spec.history_s / 86400:.1f} days of normal history for {spec.devices} devices")
        hist = sim.SimulationSpec(
            devices=spec.devices,
            duration_s=spec.history_s,
            anomalies=0,
            seed=spec.seed,
            kpis=tuple(cfg.features.kpis),
            window_seconds=cfg.features.window_seconds,
        )
        import pandas as pd

        events = pd.DataFrame(sim.generate_events(hist, []))
        events = events.rename(columns={"timestamp": "event_time_ms"})
        feats = compute_window_features(events, fspec)
        click.echo(f"[2/5] training the autoencoder on {len(feats)} windows")
        result = train_autoencoder(
            feats,
            fspec,
            cfg.training,
            wandb_cfg=cfg.wandb,
            wandb_mode="disabled",
            progress=True,
            out_dir=Path(cfg.model.dir),
        )
        click.echo(f"[2/5] model {result.model_dir} threshold {result.threshold:.5g}")

        # 3. The job
        t = cfg.kafka.topics
        ensure_topics(cfg.kafka.bootstrap_servers, [t.events, t.anomalies, t.metrics, t.dlq])
        click.echo("[3/5] starting the streaming job on a local Flink mini-cluster (~20 s) ...")
        job = JobProcess(cfg, workdir).start()

        # 4. Live events, with anomalies
        live = sim.SimulationSpec(
            devices=spec.devices,
            duration_s=spec.live_s,
            anomalies=spec.anomalies,
            seed=spec.seed + 1,
            start_ms=hist.start_ms + spec.history_s * 1000,
            kpis=tuple(cfg.features.kpis),
            window_seconds=cfg.features.window_seconds,
        )
        labels = sim.plan_anomalies(live)
        sim.write_labels(labels, workdir / "labels.jsonl")
        total = sim.event_count(live)
        click.echo(
            f"[4/5] streaming {total} events ({spec.live_s / 3600:.0f} h simulated, {len(labels)} injected "
            f"anomalies) at {spec.rate:.0f} events/s; detections as they arrive:"
        )

        def produce() -> None:
            def gen():
                for ev in sim.generate_events(live, labels):
                    if stop_producer.is_set():
                        return
                    yield ev

            produce_events(cfg.kafka.bootstrap_servers, t.events, gen(), rate=spec.rate)

        producer = threading.Thread(target=produce, name="demo-producer", daemon=True)
        producer.start()

        # The last windows that can close: the watermark trails the newest event.
        last_closable_ms = live.start_ms + spec.live_s * 1000 - (cfg.stream.watermark_delay_seconds * 1000)
        needed_end = max((lab.end_ms for lab in labels), default=live.start_ms)
        w_ms = cfg.features.window_seconds * 1000
        needed_end = min(((needed_end + w_ms - 1) // w_ms) * w_ms, last_closable_ms // w_ms * w_ms)
        flags = _follow(cfg, job, needed_end, producer, spec.drain_timeout_s + total / max(spec.rate, 1.0))

        # 5. Score card
        eps = [Episode(lab.device_id, lab.start_ms, lab.end_ms, lab.kind) for lab in labels]
        m = event_metrics(eps, flags)
        click.echo("[5/5] against the injected labels (event level):")
        click.echo(f"      recall    {m.recall:.2f}  ({m.found}/{m.episodes} anomalies found)")
        click.echo(f"      precision {m.precision:.2f}  ({m.true_alarms}/{m.alarms} alarms were real)")
        if m.median_time_to_detect_s is not None:
            click.echo(f"      median time to detect {m.median_time_to_detect_s / 60:.1f} min (event time)")
        for e in m.missed:
            click.echo(f"      missed: {e.device_id} {e.kind}")
        (workdir / "demo-result.json").write_text(json.dumps(m.as_dict(), indent=2))
        click.echo(f"done in {time.monotonic() - t_start:.0f} s; outputs in {workdir}")
        return 0
    except KeyboardInterrupt:
        click.echo("\ninterrupted; stopping what the demo started ...", err=True)
        return 130
    except NetAnomalyError as e:
        click.echo(f"error: {e}", err=True)
        if job is not None:
            click.echo(job.log_tail(), err=True)
        return 2
    finally:
        stop_producer.set()
        if job is not None:
            job.stop()
        if started_kafka:
            kafka_local.stop(cfg.kafka.local)
            click.echo("stopped Kafka")


def _follow(cfg: JobConfig, job, needed_end_ms: int, producer: threading.Thread, timeout_s: float) -> list:
    """Print anomalies as they arrive until the fleet metrics pass ``needed_end_ms``; return the flags."""
    from kafka import KafkaConsumer

    from model.event_metrics import Flag
    from netanomaly.events import parse_timestamp_ms

    t = cfg.kafka.topics
    consumer = KafkaConsumer(
        t.anomalies,
        t.metrics,
        bootstrap_servers=cfg.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    flags: list[Flag] = []
    newest_end = 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not job.running():
                raise NetAnomalyError("the streaming job stopped unexpectedly:\n" + job.log_tail())
            for tp, batch in consumer.poll(timeout_ms=500).items():
                for msg in batch:
                    rec = json.loads(msg.value)
                    if tp.topic == t.metrics:
                        newest_end = max(newest_end, parse_timestamp_ms(rec["window_end"]) or 0)
                        continue
                    flags.append(
                        Flag(
                            rec["device_id"],
                            parse_timestamp_ms(rec["window_start"]),
                            parse_timestamp_ms(rec["window_end"]),
                        )
                    )
                    tops = ", ".join(f"{f['feature']} {f['contribution']:.0%}" for f in rec["top_features"])
                    click.echo(
                        f"  ANOMALY {rec['device_id']:>8} {rec['window_start'][:16]}..{rec['window_end'][11:16]}"
                        f"  score {rec['score']:.4f} (threshold {rec['threshold']:.4f})  top: {tops}"
                    )
            if newest_end >= needed_end_ms and not producer.is_alive():
                break
        else:
            click.echo(
                f"  (stopped waiting after {timeout_s:.0f} s; windows up to "
                f"{time.strftime('%H:%M', time.gmtime(newest_end / 1000))} closed)"
            )
    finally:
        consumer.close()
    return flags
