"""``netanomaly report``: PNG plots of what the job (and the monitor) wrote, for people to look at.

Two sources, one set of plots:

* Kafka topics (``--bootstrap-servers``): kpi-metrics (fleet record per window period),
  kpi-anomalies (anomalous device windows), kpi-alerts and kpi-drift (written by ``netanomaly
  monitor``). Topics that do not exist or are empty are skipped with a note.
* The job's Parquet feature store (``--feature-store DIR``): every scored device window.

Plots (each skipped with a note when its input is missing):

1. ``anomaly_rate.png``  fleet anomaly rate per window period, windows scored on a second axis
2. ``score_distribution.png``  histogram of scores (log x) with the threshold
3. ``drift.png``  PSI per feature over time (kpi-drift)
4. ``alerts_timeline.png``  alerts per rule/device coloured by severity (kpi-alerts), or anomalous
   windows per device (kpi-anomalies / the store), above the fleet anomaly count

Plus ``summary.json`` (counts, time range, files written, notes). The loaders and plot functions
are plain functions on pandas frames, so they are testable without Kafka or the CLI.
Registered in the main CLI with ``main.add_command(report)``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from netanomaly.exceptions import NetAnomalyError

DPI = 90
SEVERITY_COLORS = {"info": "tab:blue", "warning": "tab:orange", "critical": "tab:red"}
SEVERITY_ORDER = ("info", "warning", "critical")
MAX_TIMELINE_ROWS = 40
MAX_DRIFT_LINES = 6
FILES = {
    "anomaly_rate": "anomaly_rate.png",
    "score_distribution": "score_distribution.png",
    "drift": "drift.png",
    "alerts": "alerts_timeline.png",
}

METRICS_COLUMNS = ["window_start", "window_end", "windows", "anomalies", "anomaly_rate", "mean_score", "max_score"]
ANOMALY_COLUMNS = ["device_id", "window_start", "window_end", "score", "threshold"]
ALERT_COLUMNS = ["rule", "rule_type", "severity", "key", "device_id", "kpi", "window_start", "window_end"]
DRIFT_COLUMNS = ["window_start", "window_end", "psi", "threshold"]


class ReportError(NetAnomalyError):
    """The report cannot be made (no input, unreachable broker, unreadable store)."""


# ------------------------------------------------------------------------------------------ data
@dataclass
class ReportData:
    """What the plots are drawn from; every frame may be empty.

    ``metrics``: one row per window period (window_start, window_end, windows, anomalies,
    anomaly_rate, mean_score, max_score, threshold). ``scores``: one row per scored device window
    (store only; None from Kafka). ``anomalies``: anomalous device windows (device_id,
    window_start, window_end, score, threshold). ``alerts``: kpi-alerts records. ``drift``: one row
    per evaluation with a ``psi`` dict, ``threshold`` and ``drifted``. Times are tz-aware UTC.
    """

    source: str
    metrics: pd.DataFrame
    anomalies: pd.DataFrame
    alerts: pd.DataFrame
    drift: pd.DataFrame
    scores: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        """True when there is nothing at all to plot."""
        frames = [self.metrics, self.anomalies, self.alerts, self.drift]
        if self.scores is not None:
            frames.append(self.scores)
        return all(f.empty for f in frames)


def _utc(values: Any) -> pd.Series:
    """ISO-8601 strings, epoch ms or timestamps as tz-aware UTC; unreadable values become NaT."""
    s = pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(s):
        return pd.to_datetime(s, utc=True)
    if pd.api.types.is_numeric_dtype(s):
        return pd.to_datetime(s, unit="ms", utc=True, errors="coerce")
    return pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")


def _frame(records: Sequence[dict], required: Sequence[str], what: str, notes: list[str]) -> pd.DataFrame:
    """Records with the required fields and readable window times, as a frame sorted by window."""
    good = [r for r in records if isinstance(r, dict) and all(k in r for k in required)]
    if len(good) < len(records):
        notes.append(f"{what}: skipped {len(records) - len(good)} record(s) without {', '.join(required)}")
    df = pd.DataFrame(good, columns=None if good else list(required))
    for col in ("window_start", "window_end"):
        if col in df.columns:
            df[col] = _utc(df[col].to_numpy() if len(df) else [])
    if "window_start" in df.columns and len(df):
        bad = df["window_start"].isna()
        if bad.any():
            notes.append(f"{what}: skipped {int(bad.sum())} record(s) with an unreadable window_start")
            df = df[~bad]
        df = df.sort_values("window_start", kind="stable").reset_index(drop=True)
    return df


def metrics_from_records(records: Sequence[dict], notes: list[str] | None = None) -> pd.DataFrame:
    """kpi-metrics records as one row per window period (the last record wins if one repeats)."""
    notes = notes if notes is not None else []
    df = _frame(records, METRICS_COLUMNS, "kpi-metrics", notes)
    if df.empty:
        return pd.DataFrame(columns=[*METRICS_COLUMNS, "threshold"])
    n = len(df)
    df = df.drop_duplicates("window_start", keep="last").reset_index(drop=True)
    if len(df) < n:
        notes.append(f"kpi-metrics: {n - len(df)} repeated window period(s) (a replayed job?); kept the last")
    for col in ("windows", "anomalies"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    for col in ("anomaly_rate", "mean_score", "max_score", "threshold"):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
    return df


def anomalies_from_records(records: Sequence[dict], notes: list[str] | None = None) -> pd.DataFrame:
    """kpi-anomalies records as a frame of anomalous device windows."""
    notes = notes if notes is not None else []
    df = _frame(records, ANOMALY_COLUMNS, "kpi-anomalies", notes)
    if df.empty:
        return pd.DataFrame(columns=ANOMALY_COLUMNS)
    df["device_id"] = df["device_id"].astype(str)
    for col in ("score", "threshold"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def alerts_from_records(records: Sequence[dict], notes: list[str] | None = None) -> pd.DataFrame:
    """kpi-alerts records as a frame (one row per alert)."""
    notes = notes if notes is not None else []
    df = _frame(records, ALERT_COLUMNS, "kpi-alerts", notes)
    if df.empty:
        return pd.DataFrame(columns=ALERT_COLUMNS)
    df["severity"] = df["severity"].where(df["severity"].isin(SEVERITY_ORDER), "info")
    return df


def drift_from_records(records: Sequence[dict], notes: list[str] | None = None) -> pd.DataFrame:
    """kpi-drift records as one row per evaluation (``psi`` stays a dict of feature -> PSI)."""
    notes = notes if notes is not None else []
    good = [r for r in records if isinstance(r, dict) and isinstance(r.get("psi"), dict)]
    if len(good) < len(records):
        notes.append(f"kpi-drift: skipped {len(records) - len(good)} record(s) without a psi object")
    df = _frame(good, DRIFT_COLUMNS, "kpi-drift", notes)
    if df.empty:
        return pd.DataFrame(columns=DRIFT_COLUMNS)
    df["threshold"] = pd.to_numeric(df["threshold"], errors="coerce")
    return df


def metrics_from_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Fleet records per window period computed from scored device windows (the feature store)."""
    if scores.empty:
        return pd.DataFrame(columns=[*METRICS_COLUMNS, "threshold"])
    g = scores.groupby("window_start", sort=True)
    out = pd.DataFrame(
        {
            "window_end": g["window_end"].max(),
            "devices": g["device_id"].nunique(),
            "windows": g.size(),
            "anomalies": g["is_anomaly"].sum().astype("int64"),
            "mean_score": g["score"].mean(),
            "max_score": g["score"].max(),
            "threshold": g["threshold"].max(),
        }
    ).reset_index()
    if "event_count" in scores.columns:
        out["events"] = g["event_count"].sum().to_numpy()
    out["anomaly_rate"] = out["anomalies"] / out["windows"]
    return out


# --------------------------------------------------------------------------------------- loading
def _list_topics(bootstrap: str, timeout_s: float) -> set[str]:
    """Topics on the broker; a ReportError when it cannot be reached."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            request_timeout_ms=int(max(timeout_s, 5) * 1000) + 1000,
        )
    except KafkaError as e:
        raise ReportError(f"cannot reach Kafka at {bootstrap} ({e}); is the broker running?") from e
    try:
        return set(consumer.topics())
    except KafkaError as e:
        raise ReportError(f"cannot list the topics on {bootstrap}: {e}") from e
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0, decode_json: bool = True) -> list[Any]:
    """netanomaly.kafka_io.read_topic (a module attribute so tests can replace it)."""
    from netanomaly.kafka_io import read_topic as _read

    return _read(bootstrap, topic, timeout_s=timeout_s, decode_json=decode_json)


def _decode(raw: Iterable[Any], topic: str, notes: list[str]) -> list[Any]:
    out, bad = [], 0
    for value in raw:
        if isinstance(value, dict):
            out.append(value)
            continue
        try:
            out.append(json.loads(value))
        except (TypeError, ValueError):
            bad += 1
    if bad:
        notes.append(f"{topic}: skipped {bad} message(s) that are not JSON")
    return out


def load_from_kafka(
    bootstrap: str,
    metrics_topic: str = "kpi-metrics",
    anomalies_topic: str = "kpi-anomalies",
    alerts_topic: str | None = "kpi-alerts",
    drift_topic: str | None = "kpi-drift",
    timeout_s: float = 60.0,
) -> ReportData:
    """Every record now in the topics; a missing or empty topic gives an empty frame and a note."""
    from kafka.errors import KafkaError

    notes: list[str] = []
    existing = _list_topics(bootstrap, timeout_s)
    wanted = {"metrics": metrics_topic, "anomalies": anomalies_topic, "alerts": alerts_topic, "drift": drift_topic}
    records: dict[str, list[Any]] = {}
    for name, topic in wanted.items():
        records[name] = []
        if not topic:
            continue
        if topic not in existing:
            notes.append(f"topic {topic} does not exist on {bootstrap}: skipped")
            continue
        try:
            raw = read_topic(bootstrap, topic, timeout_s=timeout_s, decode_json=False)
        except (KafkaError, NetAnomalyError) as e:
            notes.append(f"topic {topic} could not be read ({e}): skipped")
            continue
        if not raw:
            notes.append(f"topic {topic} is empty: skipped")
            continue
        records[name] = _decode(raw, topic, notes)
    return ReportData(
        source=f"Kafka {bootstrap}: " + ", ".join(t for t in wanted.values() if t),
        metrics=metrics_from_records(records["metrics"], notes),
        anomalies=anomalies_from_records(records["anomalies"], notes),
        alerts=alerts_from_records(records["alerts"], notes),
        drift=drift_from_records(records["drift"], notes),
        notes=notes,
    )


def load_from_store(path: str | Path, since: str | None = None, until: str | None = None) -> ReportData:
    """Scored windows from the job's Parquet feature store (model.feature_store.read_feature_store)."""
    from model.exceptions import ModelError
    from model.feature_store import read_feature_store
    from model.features import FeatureSpec

    # The report needs the scores, not the features: an empty spec makes the reader check only the keys.
    try:
        df = read_feature_store(path, FeatureSpec(kpis=(), stats=(), include_count=False), since=since, until=until)
    except ModelError as e:
        raise ReportError(str(e)) from e
    except (OSError, ValueError) as e:
        raise ReportError(f"cannot read the feature store {path}: {e}") from e
    missing = [c for c in ("score", "threshold", "is_anomaly") if c not in df.columns]
    if missing:
        raise ReportError(f"the feature store {path} lacks the columns {missing}: was it written by the job?")
    df["is_anomaly"] = df["is_anomaly"].astype(bool)
    df["device_id"] = df["device_id"].astype(str)
    flagged = df.loc[df["is_anomaly"], ["device_id", "window_start", "window_end", "score", "threshold"]]
    notes = ["no drift or alerts in a feature store: read the monitor's topics (--bootstrap-servers) for those"]
    return ReportData(
        source=f"feature store {Path(path)}",
        metrics=metrics_from_scores(df),
        anomalies=flagged.reset_index(drop=True),
        alerts=pd.DataFrame(columns=ALERT_COLUMNS),
        drift=pd.DataFrame(columns=DRIFT_COLUMNS),
        scores=df,
        notes=notes,
    )


# ----------------------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _naive(times: Any) -> np.ndarray:
    """UTC timestamps as naive datetime64 (matplotlib then shows UTC wall-clock times)."""
    t = pd.to_datetime(pd.Series(times), utc=True)
    return t.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def _time_axis(ax: Any, label: str = "window start (UTC)") -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, show_offset=True))
    ax.set_xlabel(label)


def _window_width(starts: np.ndarray, ends: np.ndarray | None = None) -> np.timedelta64:
    if ends is not None and len(ends):
        w = np.median((ends - starts).astype("timedelta64[s]").astype(np.int64))
        if w > 0:
            return np.timedelta64(int(w), "s")
    if len(starts) > 1:
        d = np.diff(np.unique(starts)).astype("timedelta64[s]").astype(np.int64)
        if len(d) and d.min() > 0:
            return np.timedelta64(int(d.min()), "s")
    return np.timedelta64(600, "s")


def _span_text(starts: np.ndarray, ends: np.ndarray) -> str:
    a = pd.Timestamp(starts.min()).strftime("%Y-%m-%d %H:%M")
    b = pd.Timestamp(ends.max()).strftime("%Y-%m-%d %H:%M")
    return f"{a} to {b} UTC"


def _fmt_minutes(width: np.timedelta64) -> str:
    s = int(width.astype("timedelta64[s]").astype(np.int64))
    return f"{s // 60}-min" if s % 60 == 0 else f"{s}-s"


def plot_anomaly_rate(metrics: pd.DataFrame, path: Path, *, title: str | None = None, dpi: int = DPI) -> Path:
    """Fleet anomaly rate (%) per window period as a step line over bars of the device windows scored."""
    if metrics.empty:
        raise ReportError("no fleet metrics to plot")
    plt = _pyplot()
    m = metrics.sort_values("window_start")
    starts, ends = _naive(m["window_start"]), _naive(m["window_end"])
    width = _window_width(starts, ends)
    # a regular grid of periods, so periods without any scored window show as gaps, not as lines across
    grid = np.arange(starts.min(), starts.max() + width, width)
    idx = pd.Index(starts)
    pos = idx.get_indexer(grid)
    rate = np.full(len(grid), np.nan)
    windows = np.zeros(len(grid))
    anomalies = np.zeros(len(grid))
    ok = pos >= 0
    rate[ok] = 100.0 * m["anomaly_rate"].to_numpy(dtype=float)[pos[ok]]
    windows[ok] = m["windows"].to_numpy(dtype=float)[pos[ok]]
    anomalies[ok] = m["anomalies"].to_numpy(dtype=float)[pos[ok]]

    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax2 = ax.twinx()
    xs = np.append(grid, grid[-1] + width)
    ax2.fill_between(xs, np.append(windows, windows[-1]), step="post", color="0.5", alpha=0.12, lw=0)
    (bars,) = ax2.step(
        xs, np.append(windows, windows[-1]), where="post", color="0.45", lw=1.0, label="device windows scored (right)"
    )
    ax2.set_ylabel("device windows scored per period", color="0.35")
    ax2.tick_params(axis="y", colors="0.35")
    ax2.set_ylim(0, max(1.0, np.nanmax(windows)) * 1.15)
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)

    x = xs
    (line,) = ax.step(x, np.append(rate, rate[-1]), where="post", color="tab:red", lw=1.6, label="anomaly rate (left)")
    hit = anomalies > 0
    dots = ax.scatter(grid[hit] + width / 2, rate[hit], s=14, color="tab:red", zorder=3, label="periods with anomalies")
    total_w, total_a = windows.sum(), anomalies.sum()
    overall = 100.0 * total_a / total_w if total_w else 0.0
    mean_line = ax.axhline(overall, color="0.2", ls="--", lw=1, label=f"overall {overall:.2f} %")
    top = np.nanmax(rate) if np.isfinite(rate).any() else 0.0
    ax.set_ylim(0, max(1.0, top * 1.15))
    ax.set_ylabel("anomalous device windows (% of scored)", color="tab:red")
    ax.tick_params(axis="y", colors="tab:red")
    ax.set_xlim(x[0], x[-1])
    _time_axis(ax)
    ax.grid(alpha=0.3)
    ax.set_title(
        title
        or f"Fleet anomaly rate per {_fmt_minutes(width)} window: {int(total_a)} of {int(total_w)} device windows "
        f"anomalous\n{_span_text(starts, ends)}",
        fontsize=11,
    )
    ax.legend(handles=[line, dots, mean_line, bars], loc="upper left", fontsize=8, framealpha=0.9)
    return _save(fig, path, dpi)


def _log_bins(values: np.ndarray, extra: Sequence[float] = (), n: int = 60) -> np.ndarray:
    v = np.concatenate([values[np.isfinite(values) & (values > 0)], [e for e in extra if e and e > 0]])
    if not v.size:
        raise ReportError("no positive, finite scores to draw on a log axis")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        lo, hi = lo / 2, hi * 2
    return np.logspace(np.log10(lo) - 0.02, np.log10(hi) + 0.02, n + 1)


def _thresholds(frame: pd.DataFrame) -> list[tuple[float, str]]:
    """Distinct thresholds (with the model versions that used them), at most three."""
    if "threshold" not in frame.columns:
        return []
    t = frame.dropna(subset=["threshold"])
    if t.empty:
        return []
    if "model_version" in t.columns:
        pairs = t.groupby("threshold", sort=True)["model_version"].agg(lambda s: ", ".join(sorted(set(map(str, s)))))
        return [(float(k), v) for k, v in pairs.items()][-3:]
    return [(float(k), "") for k in sorted(t["threshold"].unique())][-3:]


def _log_counts_axis(ax: Any) -> None:
    """Log y-axis for counts: plain integer labels, and bars of one still visible."""
    import matplotlib.ticker as mticker

    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)
    ax.yaxis.set_major_locator(mticker.LogLocator(base=10))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else ""))
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())


def plot_score_distribution(
    data: pd.DataFrame, path: Path, *, per_period: bool = False, title: str | None = None, dpi: int = DPI
) -> Path:
    """Histogram of scores on a log x-axis with the threshold line(s).

    ``data`` is either scored device windows (``score``, ``threshold``, optionally ``is_anomaly``
    and ``model_version``) or, with ``per_period``, fleet records (``mean_score``, ``max_score``,
    ``threshold``) of which the per-period mean and max are drawn.
    """
    if data.empty:
        raise ReportError("no scores to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.4))
    thresholds = _thresholds(data)
    colors = ["black", "tab:purple", "tab:brown"]
    if per_period:
        mean_s = data["mean_score"].to_numpy(dtype=float)
        max_s = data["max_score"].to_numpy(dtype=float)
        bins = _log_bins(np.concatenate([mean_s, max_s]), [t for t, _ in thresholds])
        ax.hist(mean_s, bins=bins, color="tab:blue", alpha=0.55, label=f"mean score of the period ({len(mean_s)})")
        ax.hist(max_s, bins=bins, color="tab:orange", alpha=0.55, label="max score of the period")
        ax.set_ylabel("window periods")
        what = f"fleet mean and max of the device-window scores in each of {len(data)} window periods"
        above = int((max_s > thresholds[-1][0]).sum()) if thresholds else None
        tail = f"\n{above} periods have at least one device window over the threshold" if above is not None else ""
    else:
        s = data["score"].to_numpy(dtype=float)
        flagged = (
            data["is_anomaly"].to_numpy(dtype=bool)
            if "is_anomaly" in data.columns
            else s > data["threshold"].to_numpy(dtype=float)
        )
        bins = _log_bins(s, [t for t, _ in thresholds])
        ax.hist(s[~flagged], bins=bins, color="tab:blue", alpha=0.75, label=f"normal ({int((~flagged).sum())})")
        ax.hist(s[flagged], bins=bins, color="tab:red", alpha=0.85, label=f"anomalous ({int(flagged.sum())})")
        ax.set_ylabel("device windows (log scale)")
        _log_counts_axis(ax)
        what = f"{len(s)} scored device windows"
        tail = f"\n{int(flagged.sum())} ({flagged.mean():.2%}) flagged anomalous"
        zero = int((s <= 0).sum())
        if zero:
            tail += f" ({zero} zero scores not shown)"
    for (t, version), c in zip(thresholds, colors[: len(thresholds)], strict=True):
        label = f"threshold {t:.3g}" + (f" (model {version[:12]})" if version and len(thresholds) > 1 else "")
        ax.axvline(t, color=c, ls="--", lw=1.4, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("anomaly score (reconstruction error, log scale)")
    ax.set_title(title or f"Score distribution: {what}{tail}", fontsize=11)
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    return _save(fig, path, dpi)


def drift_table(drift: pd.DataFrame) -> pd.DataFrame:
    """PSI per evaluation (rows, indexed by window_start) and feature (columns)."""
    rows = pd.DataFrame(list(drift["psi"]), index=pd.DatetimeIndex(drift["window_start"]))
    return rows.apply(pd.to_numeric, errors="coerce")


def plot_drift(drift: pd.DataFrame, path: Path, *, title: str | None = None, dpi: int = DPI) -> Path:
    """PSI per feature over time: the most drifted features in colour, the others in grey, the threshold."""
    if drift.empty:
        raise ReportError("no drift evaluations to plot")
    plt = _pyplot()
    table = drift_table(drift)
    t = _naive(table.index)
    peak = table.max().sort_values(ascending=False)
    top = list(peak.index[:MAX_DRIFT_LINES])
    rest = [c for c in table.columns if c not in top]
    threshold = float(drift["threshold"].dropna().iloc[-1]) if drift["threshold"].notna().any() else None

    fig, ax = plt.subplots(figsize=(11, 4.4))
    for i, c in enumerate(rest):
        ax.plot(t, table[c], color="0.7", lw=0.8, label=f"other features ({len(rest)})" if i == 0 else None)
    for c in top:
        ax.plot(t, table[c], lw=1.6, label=f"{c} (max {peak[c]:.2f})")
    if threshold is not None:
        ax.axhline(threshold, color="black", ls="--", lw=1.2, label=f"drift threshold {threshold:.2f}")
        over = int((table.max(axis=1) > threshold).sum())
        tail = f"\n{over} of {len(table)} evaluations have a feature over the threshold"
    else:
        tail = ""
    ymax = float(np.nanmax(table.to_numpy())) if table.size else 1.0
    if threshold is not None and ymax > 20 * threshold:
        ax.set_yscale("symlog", linthresh=threshold)
        ax.set_ylabel("PSI (linear up to the threshold, log above)")
    else:
        ax.set_ylim(0, max(ymax, threshold or 0) * 1.1 or 1.0)
        ax.set_ylabel("PSI vs the training baseline")
    _time_axis(ax, "evaluated window period (UTC), each over the horizon before it")
    ax.grid(alpha=0.3)
    h = int(drift["horizon_windows"].iloc[-1]) if "horizon_windows" in drift.columns else None
    horizon = f" over the last {h} window periods" if h else ""
    ax.set_title(title or f"Feature drift: PSI of the window features{horizon} vs training{tail}", fontsize=11)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    return _save(fig, path, dpi)


def _alert_row(a: pd.Series) -> str:
    if isinstance(a.get("device_id"), str) and a["device_id"]:
        who = a["device_id"]
    elif isinstance(a.get("kpi"), str) and a["kpi"]:
        who = a["kpi"]
    else:
        who = "fleet"
    return f"{a['rule']}: {who}"


def fleet_counts(data: ReportData) -> pd.DataFrame:
    """Anomalous device windows per window period (window_start, window_end, anomalies)."""
    if not data.metrics.empty:
        return data.metrics[["window_start", "window_end", "anomalies"]]
    a = data.anomalies
    if a.empty:
        return pd.DataFrame(columns=["window_start", "window_end", "anomalies"])
    g = a.groupby("window_start", sort=True)
    return pd.DataFrame({"window_end": g["window_end"].max(), "anomalies": g.size()}).reset_index()


def plot_alerts(
    events: pd.DataFrame,
    counts: pd.DataFrame,
    path: Path,
    *,
    kind: str = "alerts",
    title: str | None = None,
    dpi: int = DPI,
) -> Path:
    """A timeline with one row per rule/device, above the fleet anomaly count per window period.

    ``kind="alerts"``: kpi-alerts records, markers coloured by severity. ``kind="anomalies"``:
    anomalous device windows, one row per device, coloured by how far the score is over the
    threshold. ``counts``: window_start, window_end, anomalies (may be empty).
    """
    if events.empty:
        raise ReportError(f"no {kind} to plot")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    ev = events.copy()
    if kind == "alerts":
        ev["row"] = ev.apply(_alert_row, axis=1)
        ev["level"] = ev["severity"]
        legend_title = "severity"
    else:
        ev["row"] = ev["device_id"].astype(str)
        ratio = ev["score"].to_numpy(dtype=float) / ev["threshold"].to_numpy(dtype=float)
        ev["level"] = np.select([ratio >= 10, ratio >= 2], ["critical", "warning"], "info")
        legend_title = "score / threshold"
    level_label = (
        {s: s for s in SEVERITY_ORDER}
        if kind == "alerts"
        else {"info": "1-2x", "warning": "2-10x", "critical": "10x or more"}
    )
    per_row = ev.groupby("row").size()
    rows = sorted(per_row.index, key=lambda r: (-per_row[r], r))
    hidden = rows[MAX_TIMELINE_ROWS:]
    rows = sorted(rows[:MAX_TIMELINE_ROWS])
    ev = ev[ev["row"].isin(rows)]
    ypos = {r: i for i, r in enumerate(rows)}

    n = len(rows)
    has_counts = not counts.empty
    height = 1.6 + 0.24 * n + (1.6 if has_counts else 0)
    ratios = [max(2.0, 0.24 * n), 1.6] if has_counts else [1]
    fig, axes = plt.subplots(
        2 if has_counts else 1,
        1,
        figsize=(11, height),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": ratios, "hspace": 0.08},
    )
    ax = axes[0, 0]
    starts = _naive(ev["window_start"])
    ends = _naive(ev["window_end"])
    width = _window_width(starts, ends)
    for level in SEVERITY_ORDER:
        sel = (ev["level"] == level).to_numpy()
        if not sel.any():
            continue
        ax.scatter(
            starts[sel] + width / 2,
            [ypos[r] for r in ev.loc[sel, "row"]],
            s=28,
            marker="s" if kind == "alerts" else "o",
            color=SEVERITY_COLORS[level],
            edgecolor="black",
            linewidth=0.4,
            zorder=3,
            label=f"{level_label[level]} ({int(sel.sum())})",
        )
    ax.set_yticks(range(n), rows, fontsize=8 if n < 25 else 7)
    ax.set_ylim(n - 0.5, -0.5)
    ax.grid(alpha=0.3)
    ax.legend(title=legend_title, fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    what = (
        f"{len(events)} alerts from {events['rule'].nunique()} rule(s)"
        if kind == "alerts"
        else f"{len(events)} anomalous windows on {events['device_id'].nunique()} device(s)"
    )
    more = f" ({len(hidden)} quieter rows not shown)" if hidden else ""
    ax.set_title(
        title
        or (
            f"Alerts by rule and device/KPI: {what}{more}"
            if kind == "alerts"
            else f"Anomalous windows per device: {what}{more}"
        ),
        fontsize=11,
    )
    lo, hi = starts.min(), ends.max()
    if has_counts:
        bx = axes[1, 0]
        cs, ce = _naive(counts["window_start"]), _naive(counts["window_end"])
        cw = _window_width(cs, ce)
        vals = counts["anomalies"].to_numpy(dtype=float)
        bx.bar(cs, vals, width=cw, align="edge", color="tab:red", alpha=0.7, label="anomalous device windows")
        bx.set_ylabel("fleet\nanomalies")
        bx.set_ylim(0, max(1.0, vals.max()) * 1.15)
        bx.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
        bx.grid(alpha=0.3)
        bx.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        lo, hi = min(lo, cs.min()), max(hi, ce.max())
        _time_axis(bx)
    else:
        _time_axis(ax)
    pad = (hi - lo) * 0.01
    ax.set_xlim(lo - pad, hi + pad)
    return _save(fig, path, dpi)


# ---------------------------------------------------------------------------------------- report
def _iso(t: Any) -> str | None:
    if t is None or pd.isna(t):
        return None
    return pd.Timestamp(t).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def summarize(data: ReportData) -> dict[str, Any]:
    """Counts and time range of the report's input."""
    frames = [data.metrics, data.anomalies, data.alerts, data.drift]
    if data.scores is not None:
        frames.append(data.scores)
    starts = [f["window_start"].min() for f in frames if not f.empty]
    ends = [f["window_end"].max() for f in frames if not f.empty and "window_end" in f.columns]
    m = data.metrics
    counts: dict[str, Any] = {
        "window_periods": len(m),
        "scored_windows": int(m["windows"].sum()) if not m.empty else 0,
        "anomalous_windows": int(m["anomalies"].sum()) if not m.empty else 0,
        "anomaly_records": len(data.anomalies),
        "devices_with_anomalies": int(data.anomalies["device_id"].nunique()) if not data.anomalies.empty else 0,
        "alerts": len(data.alerts),
        "alerts_by_severity": {
            s: int((data.alerts["severity"] == s).sum()) for s in SEVERITY_ORDER if not data.alerts.empty
        },
        "alerts_by_rule": (
            {str(k): int(v) for k, v in data.alerts.groupby("rule").size().items()} if not data.alerts.empty else {}
        ),
        "drift_evaluations": len(data.drift),
        "drift_evaluations_over_threshold": (
            int((drift_table(data.drift).max(axis=1) > data.drift["threshold"].to_numpy()).sum())
            if not data.drift.empty
            else 0
        ),
    }
    if data.scores is not None:
        counts["devices"] = int(data.scores["device_id"].nunique()) if not data.scores.empty else 0
    elif "devices" in m.columns and not m.empty:
        counts["max_devices_per_period"] = int(pd.to_numeric(m["devices"]).max())
    if "events" in m.columns and not m.empty:
        counts["events"] = int(pd.to_numeric(m["events"]).sum())
    return {
        "source": data.source,
        "counts": counts,
        "time_range": {"start": _iso(min(starts)) if starts else None, "end": _iso(max(ends)) if ends else None},
    }


def make_report(data: ReportData, out: Path, dpi: int = DPI) -> dict[str, Any]:
    """Draw every plot the data allows into ``out`` and write summary.json; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = list(data.notes)
    written: list[str] = []
    skipped: dict[str, str] = {}

    def draw(name: str, fn: Any, *args: Any, **kw: Any) -> None:
        path = fn(*args, out / FILES[name], dpi=dpi, **kw)
        written.append(str(path))

    # 1. anomaly rate
    if not data.metrics.empty:
        draw("anomaly_rate", plot_anomaly_rate, data.metrics)
    else:
        skipped["anomaly_rate"] = "no fleet metrics (kpi-metrics topic missing or empty)"
    # 2. score distribution
    if data.scores is not None and not data.scores.empty:
        draw("score_distribution", plot_score_distribution, data.scores)
    elif not data.metrics.empty:
        draw("score_distribution", plot_score_distribution, data.metrics, per_period=True)
    else:
        skipped["score_distribution"] = "no scores (neither a feature store nor kpi-metrics records)"
    # 3. drift
    if not data.drift.empty:
        draw("drift", plot_drift, data.drift)
    else:
        skipped["drift"] = (
            "no drift evaluations (kpi-drift topic missing or empty; `netanomaly monitor` writes it)"
            if data.scores is None
            else "no drift evaluations in a feature store (the monitor writes them to kpi-drift)"
        )
    # 4. alerts / anomalies timeline
    counts = fleet_counts(data)
    if not data.alerts.empty:
        draw("alerts", plot_alerts, data.alerts, counts, kind="alerts")
    elif not data.anomalies.empty:
        notes.append("no alerts: the timeline shows anomalous windows per device instead")
        draw("alerts", plot_alerts, data.anomalies, counts, kind="anomalies")
    else:
        skipped["alerts"] = "no alerts and no anomalous windows"

    for name in skipped:  # a plot left from an earlier run into the same folder would mislead
        stale = out / FILES[name]
        if stale.exists():
            stale.unlink()
            notes.append(f"removed {stale}, left from an earlier report: this input has nothing for it")
    summary = summarize(data)
    summary["files"] = [*written, str(out / "summary.json")]
    summary["skipped"] = skipped
    summary["notes"] = notes
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@click.command(
    "report",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--bootstrap-servers",
    default=None,
    metavar="HOST:PORT",
    help="Read the job's and the monitor's Kafka topics from this broker (e.g. 127.0.0.1:9092).",
)
@click.option(
    "--metrics-topic", default="kpi-metrics", show_default=True, help="Fleet metrics topic (one record per window)."
)
@click.option("--anomalies-topic", default="kpi-anomalies", show_default=True, help="Anomalous device windows topic.")
@click.option(
    "--alerts-topic",
    default="kpi-alerts",
    show_default=True,
    help="Alerts topic written by `netanomaly monitor`; skipped when missing or empty.",
)
@click.option(
    "--drift-topic",
    default="kpi-drift",
    show_default=True,
    help="Drift topic (PSI per feature) written by `netanomaly monitor`; skipped when missing or empty.",
)
@click.option(
    "--feature-store",
    type=click.Path(path_type=Path),
    default=None,
    help="Read scored windows from the job's Parquet feature store folder (stream.feature_store) instead of Kafka.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out/report"),
    show_default=True,
    help="Folder for the PNG plots and summary.json (created; existing plots are replaced).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds allowed for reading each topic to its end.",
)
@click.option("--dpi", type=int, default=DPI, show_default=True, help="Resolution of the PNG files.")
def report(
    bootstrap_servers, metrics_topic, anomalies_topic, alerts_topic, drift_topic, feature_store, out, timeout_s, dpi
) -> None:
    """Draw PNG plots of the job's output: anomaly rate, score distribution, drift and alerts.

    \b
    From Kafka (--bootstrap-servers): every record now in the topics; topics that do not exist
    or are empty are skipped with a note. From the feature store (--feature-store DIR): every
    scored device window; drift and alerts are not in the store.
    Writes to --out:
      anomaly_rate.png        fleet anomaly rate per window, windows scored on a second axis
      score_distribution.png  histogram of the scores (log x) with the threshold
      drift.png               PSI per feature over time (kpi-drift)
      alerts_timeline.png     alerts per rule/device by severity over the fleet anomaly count
                              (or anomalous windows per device when there are no alerts)
      summary.json            counts, time range, files written, notes
    All times are UTC.

    \b
    Examples:
      netanomaly report --bootstrap-servers 127.0.0.1:9092 --out out/report
      netanomaly report --feature-store out/store --out out/report-store
    """
    if bool(bootstrap_servers) == bool(feature_store):
        raise click.UsageError("give exactly one of --bootstrap-servers HOST:PORT or --feature-store DIR")
    try:
        if feature_store:
            data = load_from_store(feature_store)
        else:
            data = load_from_kafka(
                bootstrap_servers,
                metrics_topic=metrics_topic,
                anomalies_topic=anomalies_topic,
                alerts_topic=alerts_topic or None,
                drift_topic=drift_topic or None,
                timeout_s=timeout_s,
            )
        for note in data.notes:
            click.echo(f"note: {note}", err=True)
        if data.is_empty():
            raise ReportError(f"nothing to plot: no records in {data.source}")
        summary = make_report(data, out, dpi=dpi)
    except NetAnomalyError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    for note in summary["notes"][len(data.notes) :]:
        click.echo(f"note: {note}", err=True)
    for name, why in summary["skipped"].items():
        click.echo(f"note: {FILES[name]} not drawn: {why}", err=True)
    c = summary["counts"]
    tr = summary["time_range"]
    click.echo(
        f"{c['window_periods']} window periods, {c['scored_windows']} scored windows, "
        f"{c['anomalous_windows'] or c['anomaly_records']} anomalous, {c['alerts']} alerts, "
        f"{c['drift_evaluations']} drift evaluations; {tr['start']} to {tr['end']}"
    )
    click.echo("wrote:")
    for f in summary["files"]:
        click.echo(f"  {f}")


if __name__ == "__main__":
    report()
