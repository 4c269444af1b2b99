"""Click commands ``netanomaly datasets asd|nab`` and ``netanomaly evaluate`` (registered by netanomaly.cli).

Heavy imports (pandas, torch, the model package) happen inside the commands, never at import.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from netanomaly.exceptions import EventFileError, NetAnomalyError

ASD_WINDOW_SECONDS = 1800
NAB_WINDOW_SECONDS = 1800
DATA_ROOT_HELP = "Folder holding asd/ and nab/ (default: $NETANOMALY_DATASETS, else shared/datasets beside the repo)."
RESERVED_COLUMNS = ("timestamp", "device_id", "label", "split", "event_time_ms")


def _split_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _fail(e: BaseException) -> None:
    from netanomaly.cli import _fail as cli_fail

    cli_fail(e)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------- datasets
@click.group("datasets")
def datasets() -> None:
    """Labelled public KPI data (ASD, NAB) written as labelled event files plus label JSONL."""


def _dataset_options(f):
    f = click.option("--data-root", type=click.Path(path_type=Path), default=None, help=DATA_ROOT_HELP)(f)
    f = click.option("--iso-timestamps", is_flag=True, help="Write timestamps as ISO-8601 UTC instead of epoch ms.")(f)
    f = click.option(
        "--format",
        "fmt",
        type=click.Choice(["jsonl", "csv", "parquet"]),
        default="parquet",
        show_default=True,
        help="Events file format.",
    )(f)
    f = click.option(
        "--out", required=True, type=click.Path(path_type=Path), help="Folder for <entity>.<format> and labels."
    )(f)
    return f


def _write_entities(entities, out: Path, fmt: str, iso: bool) -> None:
    from model.datasets import episodes_from_events, write_episodes, write_labelled_events

    out.mkdir(parents=True, exist_ok=True)
    for ent in entities:
        write_labelled_events(ent.events, out / f"{ent.name}.{fmt}", iso_timestamps=iso)
        eps = episodes_from_events(ent.events, ent.interval_ms, kind="labelled")
        write_episodes(eps, out / f"{ent.name}.labels.jsonl")
        extra = ""
        if ent.segments:
            with (out / f"{ent.name}.interpretation.jsonl").open("w", encoding="utf-8") as fh:
                for s in ent.segments:
                    rec = {"device_id": ent.name, "start_ms": s.start_ms, "end_ms": s.end_ms, "kpis": s.kpis}
                    fh.write(json.dumps(rec) + "\n")
            extra = f", {len(ent.segments)} interpretation segments"
        n_lab = int(ent.events["label"].sum())
        click.echo(
            f"{ent.name}: {len(ent.events)} events ({n_lab} labelled), {len(eps)} episodes{extra} -> {out}/{ent.name}.*"
        )


@datasets.command("asd")
@_dataset_options
@click.option("--entities", default=None, help="Comma-separated servers, e.g. omi-1,omi-2 (default: all 12).")
def datasets_asd(out, fmt, iso_timestamps, data_root, entities) -> None:
    """ASD (12 servers x 19 metrics m01..m19, 5-minute rows): train rows, then test rows with labels.

    Rows are placed 5 minutes apart from 2020-01-01T00:00Z (the files have no timestamps); the
    split column says train/test. Also writes <entity>.labels.jsonl (episodes) and
    <entity>.interpretation.jsonl (the KPIs that explain each labelled segment).
    """
    from model.datasets import load_asd

    try:
        ents = load_asd(_split_list(entities), data_root)
        _write_entities(ents, out, fmt, iso_timestamps)
    except (FileNotFoundError, ValueError, OSError) as e:
        _fail(e)


@datasets.command("nab")
@_dataset_options
@click.option("--series", default=None, help="Comma-separated series (CSV stems; default: all 22 present).")
@click.option(
    "--fit-fraction",
    default=0.15,
    show_default=True,
    type=click.FloatRange(0.01, 0.99),
    help="Leading share of each series marked split=train (NAB's probationary period; may hold anomalies).",
)
def datasets_nab(out, fmt, iso_timestamps, data_root, series, fit_fraction) -> None:
    """NAB series (timestamp, value) with label=1 inside labels/combined_windows.json windows."""
    from model.datasets import load_nab

    try:
        ents = load_nab(_split_list(series), data_root, fit_fraction)
        _write_entities(ents, out, fmt, iso_timestamps)
    except (FileNotFoundError, ValueError, OSError) as e:
        _fail(e)


# -------------------------------------------------------------------------------------- evaluate
def _timestamps_ms(col) -> Any:
    import numpy as np
    import pandas as pd

    from netanomaly.events import parse_timestamp_ms

    if pd.api.types.is_datetime64_any_dtype(col):  # e.g. Parquet timestamps; naive ones are taken as UTC
        return (pd.to_datetime(col, utc=True).astype("int64") // 1_000_000).to_numpy(np.int64)
    if pd.api.types.is_numeric_dtype(col):
        ms = col.to_numpy(np.float64)
        if not np.isfinite(ms).all():
            raise EventFileError("timestamp has missing or non-finite values")
        return ms.astype(np.int64)
    parsed = [parse_timestamp_ms(v) for v in col.tolist()]
    bad = [i for i, v in enumerate(parsed) if v is None]
    if bad:
        raise EventFileError(
            f"{len(bad)} timestamps are neither epoch ms nor ISO-8601 with a zone (first row {bad[0]})"
        )
    return np.asarray(parsed, dtype=np.int64)


def read_labelled_events(path: Path, kpis: list[str] | None, train_fraction: float):
    """A labelled events file as (events frame, KPI names); adds ``split`` by time when absent."""
    import numpy as np
    import pandas as pd

    suffix = path.suffix
    if suffix == ".jsonl":
        raw = pd.read_json(path, lines=True, dtype={"device_id": str}, convert_dates=False, keep_default_dates=False)
    elif suffix == ".csv":
        raw = pd.read_csv(path, dtype={"device_id": str})
    elif suffix == ".parquet":
        raw = pd.read_parquet(path)
    else:
        raise EventFileError("use a .jsonl, .csv or .parquet events file", path=str(path))
    missing = [c for c in ("timestamp", "device_id", "label") if c not in raw.columns]
    if missing:
        raise EventFileError(f"columns {missing} are missing (have {list(raw.columns)})", path=str(path))
    if kpis is None:
        kpis = [c for c in raw.columns if c not in RESERVED_COLUMNS and pd.api.types.is_numeric_dtype(raw[c])]
    absent = [k for k in kpis if k not in raw.columns]
    if absent or not kpis:
        raise EventFileError(f"KPI columns {absent or kpis} not found (have {list(raw.columns)})", path=str(path))
    ev = pd.DataFrame({"timestamp": _timestamps_ms(raw["timestamp"]), "device_id": raw["device_id"].astype(str)})
    for k in kpis:
        ev[k] = pd.to_numeric(raw[k], errors="coerce").astype(np.float64)
    ev["label"] = pd.to_numeric(raw["label"], errors="coerce").fillna(0).astype(np.int8)
    if "split" in raw.columns:
        ev["split"] = raw["split"].astype(str).to_numpy()
        unknown = sorted(set(ev["split"]) - {"train", "test"})
        if unknown:
            raise EventFileError(f"split must be train or test, found {unknown}", path=str(path))
    else:
        t = ev["timestamp"]
        g = t.groupby(ev["device_id"])
        t0, t1 = g.transform("min"), g.transform("max")
        ev["split"] = np.where(t < t0 + train_fraction * (t1 - t0), "train", "test")
    return ev.sort_values(["timestamp", "device_id"], kind="stable").reset_index(drop=True), kpis


def _read_segments(path: Path | None) -> dict[str, list]:
    from model.datasets import Segment

    out: dict[str, list] = {}
    if path is None:
        return out
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                d = json.loads(line)
                out.setdefault(str(d["device_id"]), []).append(
                    Segment(int(d["start_ms"]), int(d["end_ms"]), list(d["kpis"]))
                )
    return out


def _split_rule(dataset: str | None, events_path: Path | None, train_fraction: float) -> str:
    if dataset == "asd":
        return "ASD train file = fitting part, test file = test part"
    if dataset == "nab":
        return "first 15 % of each series' rows = fitting part (may contain anomalies), rest = test part"
    return f"split column of {events_path}, else the first {train_fraction:.0%} of each device's time"


@click.command("evaluate")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML config file (default: conf/job.yaml when present, else built-in defaults).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set training.epochs=400 (repeatable).",
)
@click.option("--dataset", type=click.Choice(["asd", "nab"]), default=None, help="Evaluate on a public dataset.")
@click.option("--entities", default=None, help="With --dataset: comma-separated entities (default: all).")
@click.option(
    "--events",
    "events_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Labelled events file (.jsonl/.csv/.parquet): timestamp, device_id, KPIs, label[, split].",
)
@click.option("--kpis", default=None, help="With --events: comma-separated KPI columns (default: all numeric ones).")
@click.option(
    "--interpretation",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --events: JSONL of {device_id, start_ms, end_ms, kpis} segments, for HitRate.",
)
@click.option(
    "--train-fraction",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.05, 0.95),
    help="With --events lacking a split column: leading share of each device's time used for training.",
)
@click.option(
    "--per-device/--fleet",
    default=False,
    show_default=True,
    help="With --events: one model per device, or one model for all devices of the file.",
)
@click.option(
    "--detectors",
    default="autoencoder,lstm_autoencoder,isolation_forest",
    show_default=True,
    help="Comma-separated detectors; the random and pca baselines are always added.",
)
@click.option(
    "--window-seconds",
    type=click.IntRange(1, 7 * 86400),
    default=None,
    help=f"Window length (default: {ASD_WINDOW_SECONDS} for asd, {NAB_WINDOW_SECONDS} for nab, "
    "features.window_seconds for --events).",
)
@click.option("--data-root", type=click.Path(path_type=Path), default=None, help=DATA_ROOT_HELP)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder for metrics and plots.")
@click.option(
    "--plots",
    "plot_spec",
    default="all",
    show_default=True,
    help="Entities that get per-entity plots: all, none, or a comma-separated list.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
@click.option(
    "--wandb-mode",
    type=click.Choice(["online", "offline", "disabled"]),
    default="disabled",
    show_default=True,
    help="Also log the metrics, the per-entity table and the ROC/PR plots to W&B.",
)
def evaluate(
    config_path,
    overrides,
    dataset,
    entities,
    events_path,
    kpis,
    interpretation,
    train_fraction,
    per_device,
    detectors,
    window_seconds,
    data_root,
    out,
    plot_spec,
    progress,
    wandb_mode,
) -> None:
    """Metrics and plots of detectors on labelled data, next to random and PCA baselines.

    Each detector is fitted on the training windows; its threshold is a quantile of its scores on
    held-out NORMAL training windows times a margin (training.threshold_quantile / _margin), so no
    test label is used. Reported on the test windows: AUROC, AUPRC, F1 at that threshold, event
    recall with time to detect, HitRate@100/150 % of the explanations (when interpretation labels
    exist) and, as secondary numbers, the optimistic best F1 and point-adjusted F1. Writes
    OUT/metrics.json (per entity and mean), OUT/<entity>/metrics.json and PNG plots.
    """
    from model.datasets import LabelledEntity, load_asd, load_nab
    from model.evaluate import (
        detector_factories,
        entity_table,
        evaluate_entities,
        log_evaluation_to_wandb,
        summary_table,
    )
    from model.features import FeatureSpec
    from netanomaly.cli import _config

    if (dataset is None) == (events_path is None):
        raise click.UsageError("give exactly one of --dataset asd|nab or --events FILE")
    names = _split_list(detectors) or []
    try:
        cfg = _config(config_path, overrides)
        if dataset == "asd":
            ents = load_asd(_split_list(entities), data_root)
            window = window_seconds or ASD_WINDOW_SECONDS
        elif dataset == "nab":
            ents = load_nab(_split_list(entities), data_root)
            window = window_seconds or NAB_WINDOW_SECONDS
        else:
            ev, kpi_names = read_labelled_events(events_path, _split_list(kpis), train_fraction)
            segs = _read_segments(interpretation)
            window = window_seconds or cfg.features.window_seconds
            if per_device:
                ents = [
                    LabelledEntity(str(d), g.reset_index(drop=True), tuple(kpi_names), tuple(segs.get(str(d), ())))
                    for d, g in ev.groupby("device_id", sort=True)
                ]
            else:
                all_segs = tuple(s for v in segs.values() for s in v)
                ents = [LabelledEntity(events_path.stem, ev, tuple(kpi_names), all_segs)]
        factories = detector_factories(names, cfg.training)
        if plot_spec == "all":
            plot_entities = None
        elif plot_spec == "none":
            plot_entities = []
        else:
            plot_entities = _split_list(plot_spec)

        def spec_for(ent: LabelledEntity) -> FeatureSpec:
            return FeatureSpec(ent.kpis, tuple(cfg.features.stats), cfg.features.include_count, window)

        settings = {
            "dataset": dataset or str(events_path),
            "window_seconds": window,
            "stats": list(cfg.features.stats),
            "include_count": cfg.features.include_count,
            "detectors": list(factories),
            "training": cfg.training.model_dump(mode="json"),
            "threshold_rule": "quantile(validation_scores, training.threshold_quantile) * training.threshold_margin",
            "split": _split_rule(dataset, events_path, train_fraction),
        }
        t0 = time.perf_counter()
        summary = evaluate_entities(
            ents,
            spec_for,
            factories,
            out_dir=out,
            threshold_quantile=cfg.training.threshold_quantile,
            threshold_margin=cfg.training.threshold_margin,
            plot_entities=plot_entities,
            main_detector=names[0] if names else None,
            progress=progress,
            seed=cfg.training.seed,
            settings=settings,
        )
    except (NetAnomalyError, FileNotFoundError, KeyError, ValueError, OSError) as e:
        _fail(e)
    click.echo(f"\nAUROC per entity (test windows, {window // 60}-min windows):")
    click.echo(entity_table(summary, "auroc"))
    click.echo("\nMean over entities:")
    click.echo(summary_table(summary))
    click.echo(f"\n{len(ents)} entities in {time.perf_counter() - t0:.0f} s; metrics in {out}/metrics.json")
    run_dir = log_evaluation_to_wandb(out, summary, settings, wandb_mode, cfg.wandb.project, cfg.wandb.entity)
    if run_dir:
        click.echo(f"W&B run ({wandb_mode}) in {run_dir}")


COMMANDS = (datasets, evaluate)


def register(main: click.Group) -> None:
    """Add the commands of this module to the ``netanomaly`` group."""
    for cmd in COMMANDS:
        main.add_command(cmd)
