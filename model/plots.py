"""Evaluation plots (matplotlib, Agg backend chosen when a plot is drawn, never at import)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.metrics import auprc, auroc, label_runs, pr_points, roc_points

DPI = 90


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def plot_roc(
    labels: np.ndarray, scores: Mapping[str, np.ndarray], path: Path, title: str, dpi: int = DPI
) -> Path | None:
    """ROC curves of several detectors on the same labelled windows (None without both classes)."""
    if len(roc_points(labels, next(iter(scores.values())))[0]) == 0:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, s in scores.items():
        fpr, tpr = roc_points(labels, s)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc(labels, s):.3f})", lw=1.4)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    ax.set(xlabel="false positive rate (windows)", ylabel="true positive rate (windows)", title=title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path, dpi)


def plot_pr(
    labels: np.ndarray, scores: Mapping[str, np.ndarray], path: Path, title: str, dpi: int = DPI
) -> Path | None:
    """Precision-recall curves of several detectors, with the chance level (None without positives)."""
    y = np.asarray(labels)
    if not y.any():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, s in scores.items():
        r, p = pr_points(y, s)
        ax.plot(r, p, label=f"{name} (AUPRC {auprc(y, s):.3f})", lw=1.4, drawstyle="steps-post")
    ax.axhline(float(y.mean()), color="grey", ls=":", lw=1, label=f"chance ({y.mean():.3f})")
    ax.set(xlabel="recall (windows)", ylabel="precision (windows)", title=title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path, dpi)


def _shade_runs(ax: Any, times: np.ndarray, labels: np.ndarray, width: np.timedelta64, label: str) -> None:
    first = True
    for a, b in label_runs(labels):
        ax.axvspan(times[a], times[b - 1] + width, color="tab:red", alpha=0.18, lw=0, label=label if first else None)
        first = False


def plot_timeline(
    times: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    path: Path,
    title: str,
    window_seconds: int,
    dpi: int = DPI,
) -> Path:
    """Scores of the test windows over time, labelled windows shaded, the threshold as a line."""
    plt = _pyplot()
    t = np.asarray(times, dtype="datetime64[ms]")
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(np.int8)
    fig, ax = plt.subplots(figsize=(11, 3.6))
    _shade_runs(ax, t, y, np.timedelta64(window_seconds, "s"), "labelled anomaly")
    ax.plot(t, s, lw=0.8, color="tab:blue", label="score")
    flagged = s > threshold
    ax.scatter(t[flagged], s[flagged], s=8, color="tab:orange", zorder=3, label="flagged")
    ax.axhline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3g}")
    positive = s[np.isfinite(s) & (s > 0)]
    if positive.size and positive.max() / max(positive.min(), 1e-300) > 100:
        ax.set_yscale("log")
    ax.set(xlabel="window start (UTC)", ylabel="anomaly score", title=title)
    ax.legend(loc="best", fontsize=8, ncol=2, framealpha=0.9)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _save(fig, path, dpi)


def plot_error_heatmap(
    times: np.ndarray,
    errors: np.ndarray,
    kpis: Sequence[str],
    labels: np.ndarray,
    path: Path,
    title: str,
    dpi: int = DPI,
) -> Path:
    """Per-KPI error (KPIs x test windows, log colour scale) above a strip of the labels."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    e = np.asarray(errors, dtype=np.float64).T
    pos = e[np.isfinite(e) & (e > 0)]
    vmin = float(np.quantile(pos, 0.05)) if pos.size else 1e-6
    vmax = float(pos.max()) if pos.size else 1.0
    t = np.asarray(times, dtype="datetime64[ms]")
    fig, (ax, ax_l) = plt.subplots(
        2, 1, figsize=(11, 1.2 + 0.22 * len(kpis)), sharex=True, gridspec_kw={"height_ratios": [len(kpis), 1]}
    )
    x0, x1 = t[0].astype("int64"), t[-1].astype("int64")
    im = ax.imshow(
        np.clip(e, vmin, None),
        aspect="auto",
        interpolation="nearest",
        norm=LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10)),
        cmap="magma",
        extent=(x0, x1, len(kpis) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(kpis)), list(kpis), fontsize=7)
    ax.set(ylabel="KPI", title=title)
    ax_l.imshow(
        np.asarray(labels, dtype=np.float64)[None, :],
        aspect="auto",
        interpolation="nearest",
        cmap="Reds",
        vmin=0,
        vmax=1,
        extent=(x0, x1, 0.5, -0.5),
    )
    ax_l.set_yticks([0], ["label"], fontsize=7)
    ticks = np.linspace(x0, x1, 6)
    ax_l.set_xticks(ticks, [str(np.datetime64(int(v), "ms").astype("datetime64[h]")) for v in ticks], fontsize=7)
    ax_l.set_xlabel("window start (UTC)")
    fig.colorbar(im, ax=[ax, ax_l], label="error (sum over the KPI's features)", pad=0.01)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_metric_bars(
    values: Mapping[str, Mapping[str, float]], metric: str, path: Path, title: str, dpi: int = DPI
) -> Path:
    """Grouped bars of one metric: entities on the x axis, one bar per detector, plus the mean."""
    plt = _pyplot()
    entities = list(values)
    detectors = list(dict.fromkeys(d for ent in values.values() for d in ent))
    rows = [*entities, "mean"]
    mat = np.array([[values[e].get(d, np.nan) for d in detectors] for e in entities], dtype=np.float64)
    mat = np.vstack([mat, np.nanmean(np.where(np.isfinite(mat), mat, np.nan), axis=0)])
    fig, ax = plt.subplots(figsize=(max(7.0, 0.55 * len(rows) * max(1, len(detectors)) / 2.5), 4.2))
    width = 0.8 / max(1, len(detectors))
    x = np.arange(len(rows))
    for j, d in enumerate(detectors):
        ax.bar(x + (j - (len(detectors) - 1) / 2) * width, mat[:, j], width, label=d)
    if metric.upper() == "AUROC":
        ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_xticks(x, rows, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel=metric, title=title)
    ax.set_ylim(0, 1.0)
    ax.legend(fontsize=8, ncol=min(5, len(detectors)), loc="upper center", bbox_to_anchor=(0.5, -0.35))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, dpi)
