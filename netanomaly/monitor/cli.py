"""``netanomaly monitor``: the operations service beside the streaming job (click command).

Registered in the main CLI with ``main.add_command(monitor)``; also runs standalone as
``python -m netanomaly.monitor``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from netanomaly.exceptions import NetAnomalyError


@click.command(
    "monitor",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Monitor YAML config (default: conf/monitor.yaml when present, else built-in defaults).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set drift.threshold=0.2 or --set rules.0.cooldown_s=600 (repeatable).",
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Exported model folder: training baseline (drift) and model_version. Default: model_dir of the "
    "config (models/current); without a model there, drift is off.",
)
@click.option("--bootstrap-servers", default=None, help="Kafka bootstrap servers (kafka.bootstrap_servers).")
@click.option(
    "--wandb-mode",
    type=click.Choice(["online", "offline", "disabled"]),
    default=None,
    help="W&B production run (wandb.mode; default: online with WANDB_API_KEY set, else offline).",
)
@click.option(
    "--webhook-url",
    default=None,
    envvar="NETANOMALY_WEBHOOK_URL",
    show_envvar=True,
    help="Slack-compatible incoming webhook for alerts (webhook.url). Prefer the environment variable: "
    "the URL is a secret.",
)
@click.option("--bounded", is_flag=True, default=None, help="Stop once the records present at start are consumed.")
@click.option("--max-seconds", type=float, default=None, help="Stop after this many seconds (wall clock).")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option("--stats-json", type=click.Path(path_type=Path), default=None, help="Write the final counters here.")
def monitor(
    config_path,
    overrides,
    model_dir,
    bootstrap_servers,
    wandb_mode,
    webhook_url,
    bounded,
    max_seconds,
    log_level,
    stats_json,
) -> None:
    """Watch the job's output topics and close the operations loop.

    \b
    Reads   kpi-anomalies, kpi-metrics, kpi-features (window features, for drift)
    Writes  kpi-alerts            rule hits (score over threshold, fleet anomaly spike, KPI trend),
                                  at most once per cool-down per device / KPI
            kpi-drift             PSI per feature vs the model's training baseline, per window period
            kpi-retrain-requests  when features stay drifted for M evaluations (own cool-down)
    Also    a W&B production run (fleet metrics, drift, anomaly table, alerts; one run per day)
            and an optional Slack-compatible webhook for alerts.

    All rules run on event time (the windows' times), so a replay gives the same alerts.
    Schemas: conf/schemas/kpi-{alerts,drift,retrain-requests}.schema.json. Stops on Ctrl-C or
    SIGTERM after flushing its outputs and committing its offsets.

    \b
    Example:
      netanomaly monitor --model models/current --webhook-url https://hooks.slack.com/services/...
    """
    from netanomaly.monitor.config import load_monitor_config, parse_override
    from netanomaly.monitor.service import run_monitor

    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("kafka", "wandb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        merged = dict(parse_override(o) for o in overrides)
        extra = {
            "kafka.bootstrap_servers": bootstrap_servers,
            "wandb.mode": wandb_mode,
            "webhook.url": webhook_url,
            "kafka.bounded": bounded,
        }
        merged.update({k: v for k, v in extra.items() if v is not None})
        cfg = load_monitor_config(config_path, merged)
        stats = run_monitor(cfg, model_dir, max_seconds=max_seconds)
    except NetAnomalyError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if stats_json is not None:
        stats_json.parent.mkdir(parents=True, exist_ok=True)
        stats_json.write_text(json.dumps(stats, indent=2, default=str) + "\n")
    click.echo(
        f"monitor stopped ({stats['stopped_by']}): {sum(stats['records'].values())} records, "
        f"{stats['alerts']} alerts, {stats['drift_reports']} drift reports, "
        f"{stats['retrain_requests']} retrain requests"
    )


if __name__ == "__main__":
    monitor()
